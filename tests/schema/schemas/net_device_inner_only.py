"""11.2 bumps only the device vmsd's version_id (the outer vmsd, in the section header, stays 11): the new field
is written by 11.2's save and never read by its own load, so 11.2 cannot even migrate to itself."""

from models.releases import V
from models.schema import DeviceVersion, Field, Release

DECLARATIONS = (
    Release(V("11.2"), after=V("11.1")),
    DeviceVersion("virtio-net-device", V("11.2"), version=12, section_version=11,
                  fields=(Field("foo", "uint32", version=12),)),
)
