"""A core subsection virtio/baz that two releases know (11.2 and 11.3), gated by a virtio-device property that
hw_compat_11_1 turns off: declared here and nowhere else, it is drawn by the matrix and compared by R1/R3/R4."""

from models.conditions import Property, StateField
from models.releases import V
from models.schema import Compat, Field, Prop, Release, Subsection

DECLARATIONS = (
    Release(V("11.2"), after=V("11.1")),
    Release(V("11.3"), after=V("11.2")),
    Prop("virtio-device", "x-baz", True, V("11.2")),
    Compat(V("11.1"), "virtio-device", "x-baz", False, V("11.2"), source="hw_compat_11_1"),
    Subsection("virtio/baz", V("11.2"), fields=(Field("baz", "uint32"), Field("baz_regs", "uint16", count=3)),
               needed=Property("x-baz") & (StateField("baz") != 0), after="virtio/started"),
)
