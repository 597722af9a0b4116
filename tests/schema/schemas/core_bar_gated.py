"""A core subsection virtio/bar (11.0) after virtio/started, gated by a virtio-device property."""

from models.conditions import Property, StateField
from models.releases import V
from models.schema import Compat, Field, Prop, Release, Subsection

DECLARATIONS = (
    Release(V("11.0"), after=V("10.2")),
    Prop("virtio-device", "x-bar", True, V("11.0")),
    Compat(V("10.2"), "virtio-device", "x-bar", False, V("11.0"), source="hw_compat_10_2"),
    Subsection("virtio/bar", V("11.0"), fields=(Field("bar", "uint16"), Field("bar_on", "bool")),
               needed=Property("x-bar") & StateField("bar_on"), after="virtio/started"),
)
