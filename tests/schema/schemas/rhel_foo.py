"""A distribution's machine types that do not take upstream compat entries: the line carries its own, so a
new subsection needs an entry in the line's array too. `RHEL_ENTRY` False leaves it out (diff flags the
pc-q35-rhel machine types)."""

from models.conditions import Property, StateField
from models.releases import V
from models.schema import Compat, Downstream, Field, Prop, Release, Subsection

RHEL_ENTRY = True

DECLARATIONS = (
    Release(V("11.2"), after=V("11.1")),
    Downstream("pc-q35", "rhel", ((V("9.4"), V("8.2")), (V("10.0"), V("10.0")), (V("11.1"), V("11.2"))),
               upstream_compat=False),
    Prop("virtio-net-device", "x-foo", True, V("11.2")),
    Compat(V("11.1"), "virtio-net-device", "x-foo", False, V("11.2"), source="hw_compat_11_1"),
    *([Compat(V("10.0"), "virtio-net-device", "x-foo", False, V("11.2"), line="rhel",
              source="hw_compat_rhel_10_0")] if RHEL_ENTRY else []),
    Subsection("virtio-net-device/foo", V("11.2"), fields=(Field("foo", "uint32"),),
               needed=Property("x-foo") & (StateField("foo") != 0)),
)
