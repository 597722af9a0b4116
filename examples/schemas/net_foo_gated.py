"""QEMU 11.0 adds virtio-net-device/foo, gated the way QEMU gates new state: a property `x-foo` (on by
default) that hw_compat_10_2 turns off, so machine types 10.2 and older never send the subsection and
migrate to and from 10.2 as before; 11.0 machine types send it when `foo` is non-zero.
"""

from models.conditions import Property, StateField
from models.releases import V
from models.schema import Compat, Field, Prop, Release, Subsection

DECLARATIONS = (
    Release(V("11.0"), after=V("10.2")),
    Prop("virtio-net-device", "x-foo", True, V("11.0")),
    Compat(V("10.2"), "virtio-net-device", "x-foo", False, V("11.0"), source="hw_compat_10_2"),
    Subsection("virtio-net-device/foo", V("11.0"), fields=(Field("foo", "uint32"),),
               needed=Property("x-foo") & (StateField("foo") != 0), source="virtio-net: migrate foo"),
)
