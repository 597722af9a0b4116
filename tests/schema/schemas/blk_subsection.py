from models.conditions import StateField
from models.releases import V
from models.schema import Field, Subsection

DECLARATIONS = (
    Subsection("virtio-blk-device/foo", V("11.1"), fields=(Field("foo", "uint32"),),
               needed=StateField("foo") != 0),
)
