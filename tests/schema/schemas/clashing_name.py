from models.conditions import StateField
from models.releases import V
from models.schema import Field, Release, Subsection

DECLARATIONS = (
    Release(V("11.2"), after=V("11.1")),
    Subsection("virtio-net-device/foo", V("11.2"), fields=(Field("foo", "uint32"),),
               needed=StateField("foo") != 0),
    Subsection("virtio-net-device/rss", V("11.2"), fields=(Field("rss_foo", "uint32"),),
               needed=StateField("rss_foo") != 0),
)
