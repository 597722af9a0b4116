"""QEMU 11.0 adds virtio-net-device/foo: the device's `foo` register, sent when it is non-zero.

The mistake: nothing gates it by machine type, so an 11.0 source on a machine type that 10.2 also has
(pc-q35-10.2, say) sends a subsection 10.2 does not know, and the migration fails on the destination.
`virtio-compat check` and `virtio-compat diff` both catch it; net_foo_gated.py is the fix.
"""

from models.conditions import StateField
from models.releases import V
from models.schema import Field, Release, Subsection

DECLARATIONS = (
    Release(V("11.0"), after=V("10.2")),
    Subsection("virtio-net-device/foo", V("11.0"), fields=(Field("foo", "uint32"),),
               needed=StateField("foo") != 0, source="virtio-net: migrate foo"),
)
