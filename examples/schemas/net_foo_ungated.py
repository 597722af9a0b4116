"""QEMU 11.2 adds virtio-net-device/foo: the device's `foo` register, sent when it is non-zero.

The mistake: nothing gates it by machine type, so an 11.2 source on a machine type that 11.1 also has
(pc-q35-11.1, say) sends a subsection 11.1 does not know, and the migration fails on the destination.
`virtio-compat check` and `virtio-compat diff` both catch it; net_foo_gated.py is the fix.
"""

from models.conditions import StateField
from models.releases import V
from models.schema import Field, Release, Subsection

DECLARATIONS = (
    Release(V("11.2"), after=V("11.1")),
    Subsection("virtio-net-device/foo", V("11.2"), fields=(Field("foo", "uint32"),),
               needed=StateField("foo") != 0, source="virtio-net: migrate foo"),
)
