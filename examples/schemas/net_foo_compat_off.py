"""QEMU 11.2 adds virtio-net-device/foo behind the property `x-foo`, as net_foo_gated.py does, but the mistake:
the compat entry went into hw_compat_11_0, the array of the release before, instead of the new hw_compat_11_1.
Machine types up to 11.0 keep x-foo off; pc-*-11.1, virt-11.1 and s390-ccw-virtio-11.1 do not, so an 11.2 source
on exactly those machine types sends the subsection 11.1 does not know. net_foo_gated.py is the fix.
"""

from models.conditions import Property, StateField
from models.releases import V
from models.schema import Compat, Field, Prop, Release, Subsection

DECLARATIONS = (
    Release(V("11.2"), after=V("11.1")),
    Prop("virtio-net-device", "x-foo", True, V("11.2")),
    Compat(V("11.0"), "virtio-net-device", "x-foo", False, V("11.2"), source="hw_compat_11_0 (one release off)"),
    Subsection("virtio-net-device/foo", V("11.2"), fields=(Field("foo", "uint32"),),
               needed=Property("x-foo") & (StateField("foo") != 0), source="virtio-net: migrate foo"),
)
