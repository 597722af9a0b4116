"""A schema field that names the device state's own (of=, shift=): models/core.py's binding, not a schema's."""

from models.conditions import StateField
from models.releases import V
from models.schema import Field, Release, Subsection

DECLARATIONS = (
    Release(V("11.2"), after=V("11.1")),
    Subsection("virtio/qux", V("11.2"), fields=(Field("qux", "uint32", of="guest_features", shift=0),),
               needed=StateField("qux") != 0),
)
