"""net_foo_machine_gated.py with the mistake: the machine type gate one release off, MachineAtLeast(11.1) where
it must be 11.2. The 11.1 machine types are the only ones both 11.1 and 11.2 have on which 11.2 sends the
subsection, so only they break (11.2 -> 11.1 with foo non-zero); net_foo_machine_gated.py is the fix.
"""

from models.conditions import MachineAtLeast, StateField
from models.releases import V
from models.schema import Field, Release, Subsection

DECLARATIONS = (
    Release(V("11.2"), after=V("11.1")),
    Subsection("virtio-net-device/foo", V("11.2"), fields=(Field("foo", "uint32"),),
               needed=MachineAtLeast(V("11.1")) & (StateField("foo") != 0), source="virtio-net: migrate foo"),
)
