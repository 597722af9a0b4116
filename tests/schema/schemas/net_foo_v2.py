"""virtio-net-device/foo is version 1 in 11.2 (gated) and version 2 in 11.3, which adds foo_hi: a version bump
that 11.2 cannot load (incoming version 2 is too new), whatever the machine type."""

from models.conditions import Property, StateField
from models.releases import V
from models.schema import Compat, Field, Prop, Release, Subsection

DECLARATIONS = (
    Release(V("11.3"), after=V("11.2")),  # declared before the release it builds on: releases apply in order
    Release(V("11.2"), after=V("11.1")),
    Prop("virtio-net-device", "x-foo", True, V("11.2")),
    Compat(V("11.1"), "virtio-net-device", "x-foo", False, V("11.2"), source="hw_compat_11_1"),
    Subsection("virtio-net-device/foo", V("11.2"),
               fields=(Field("foo", "uint32"), Field("foo_hi", "uint32", version=2)),
               needed=Property("x-foo") & (StateField("foo") != 0),
               versions=((V("11.2"), 1), (V("11.3"), 2))),
)
