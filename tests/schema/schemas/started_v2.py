"""11.2 gives virtio/started (models/'s own core subsection) a version 2 with a new field, `kick_count`: a device
that is started sends version 2, which 11.1 refuses (incoming version_id 2 is too new for local version_id 1) on
every machine type where it is started; 11.1 -> 11.2 is safe (version 1 loads)."""

from models.releases import V
from models.schema import Field, Release, SubsectionVersion

DECLARATIONS = (
    Release(V("11.2"), after=V("11.1")),
    SubsectionVersion("virtio/started", V("11.2"), 2, fields=(Field("kick_count", "uint16", version=2),)),
)
