"""virtio-net-device/foo is version 1 in 11.0 (gated) and version 2 in 11.1, which adds foo_hi: a version bump
that 11.0 cannot load (incoming version 2 is too new), whatever the machine type."""

from models.conditions import Property, StateField
from models.releases import V
from models.schema import Compat, Field, Prop, Release, Subsection

DECLARATIONS = (
    Release(V("11.1"), after=V("11.0")),  # declared before the release it builds on: releases apply in order
    Release(V("11.0"), after=V("10.2")),
    Prop("virtio-net-device", "x-foo", True, V("11.0")),
    Compat(V("10.2"), "virtio-net-device", "x-foo", False, V("11.0"), source="hw_compat_10_2"),
    Subsection("virtio-net-device/foo", V("11.0"),
               fields=(Field("foo", "uint32"), Field("foo_hi", "uint32", version=2)),
               needed=Property("x-foo") & (StateField("foo") != 0),
               versions=((V("11.0"), 1), (V("11.1"), 2))),
)
