"""11.2 appends a MAC-sized buffer and an array to virtio-net-device as VMSTATE_*_TEST fields whose test is a
property that hw_compat_11_1 turns off: machine types 11.1 and older neither write nor read them. TESTED_BY_STATE
True tests a state field instead, which each side evaluates on its own state: that breaks."""

from models.conditions import Property, StateField
from models.releases import V
from models.schema import Compat, DeviceVersion, Field, Prop, Release

TESTED_BY_STATE = False
TEST = StateField("promisc") != 0 if TESTED_BY_STATE else Property("x-foo")

DECLARATIONS = (
    Release(V("11.2"), after=V("11.1")),
    Prop("virtio-net-device", "x-foo", True, V("11.2")),
    Compat(V("11.1"), "virtio-net-device", "x-foo", False, V("11.2"), source="hw_compat_11_1"),
    DeviceVersion("virtio-net-device", V("11.2"),
                  fields=(Field("peer_mac", "buffer", size=6, present=TEST),
                          Field("coalesce", "uint16", count=3, present=TEST))),
)
