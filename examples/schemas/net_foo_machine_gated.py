"""QEMU 11.2 adds virtio-net-device/foo, gated by the machine type itself: sent from the 11.2 machine types on,
where foo is non-zero (what a device without a compat property of its own does with the machine class's version).
Machine types 11.1 and older never send it, so they migrate to and from 11.1 as before.
net_foo_machine_off.py is the mistake one release off.
"""

from models.conditions import MachineAtLeast, StateField
from models.releases import V
from models.schema import Field, Release, Subsection

DECLARATIONS = (
    Release(V("11.2"), after=V("11.1")),
    Subsection("virtio-net-device/foo", V("11.2"), fields=(Field("foo", "uint32"),),
               needed=MachineAtLeast(V("11.2")) & (StateField("foo") != 0), source="virtio-net: migrate foo"),
)
