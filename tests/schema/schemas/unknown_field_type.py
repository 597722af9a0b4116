from models.conditions import StateField
from models.releases import V
from models.schema import Field, Release, Subsection

DECLARATIONS = (
    Release(V("11.0"), after=V("10.2")),
    Subsection("virtio-net-device/foo", V("11.0"),
               fields=(Field("foo", "u32"),),
               needed=StateField("foo") != 0),
)
