"""A core subsection virtio/bar (11.2) after virtio/started, gated by a virtio-device property."""

from models.conditions import Property, StateField
from models.releases import V
from models.schema import Compat, Field, Prop, Release, Subsection

DECLARATIONS = (
    Release(V("11.2"), after=V("11.1")),
    Prop("virtio-device", "x-bar", True, V("11.2")),
    Compat(V("11.1"), "virtio-device", "x-bar", False, V("11.2"), source="hw_compat_11_1"),
    Subsection("virtio/bar", V("11.2"), fields=(Field("bar", "uint16"), Field("bar_on", "bool")),
               needed=Property("x-bar") & StateField("bar_on"), after="virtio/started"),
)
