"""11.0 bumps only the device vmsd's version_id (the outer vmsd, in the section header, stays 11): the new field
is written by 11.0's save and never read by its own load, so 11.0 cannot even migrate to itself."""

from models.releases import V
from models.schema import DeviceVersion, Field, Release

DECLARATIONS = (
    Release(V("11.0"), after=V("10.2")),
    DeviceVersion("virtio-net-device", V("11.0"), version=12, section_version=11,
                  fields=(Field("foo", "uint32", version=12),)),
)
