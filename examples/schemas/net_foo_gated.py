"""QEMU 11.2 adds virtio-net-device/foo, gated the way QEMU gates new state: a property `x-foo` (on by
default) that hw_compat_11_1 turns off, so machine types 11.1 and older never send the subsection and
migrate to and from 11.1 as before; 11.2 machine types send it when `foo` is non-zero.
"""

from models.conditions import Property, StateField
from models.releases import V
from models.schema import Compat, Field, Prop, Release, Subsection

DECLARATIONS = (
    Release(V("11.2"), after=V("11.1")),
    Prop("virtio-net-device", "x-foo", True, V("11.2")),
    Compat(V("11.1"), "virtio-net-device", "x-foo", False, V("11.2"), source="hw_compat_11_1"),
    Subsection("virtio-net-device/foo", V("11.2"), fields=(Field("foo", "uint32"),),
               needed=Property("x-foo") & (StateField("foo") != 0), source="virtio-net: migrate foo"),
)
