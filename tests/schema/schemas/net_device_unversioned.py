"""11.0 appends a field to virtio-net-device with neither a version nor a test (VMSTATE_UINT32(foo, VirtIONet)):
11.0 -> 11.0 works, every migration between 10.2 and 11.0 desynchronizes."""

from models.releases import V
from models.schema import DeviceVersion, Field, Release

DECLARATIONS = (
    Release(V("11.0"), after=V("10.2")),
    DeviceVersion("virtio-net-device", V("11.0"), fields=(Field("foo", "uint32"),)),
)
