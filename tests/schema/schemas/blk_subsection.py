from models.conditions import StateField
from models.releases import V
from models.schema import Field, Subsection

DECLARATIONS = (
    Subsection("virtio-blk-device/foo", V("10.2"), fields=(Field("foo", "uint32"),),
               needed=StateField("foo") != 0),
)
