"""11.2 appends a field to virtio-net-device with neither a version nor a test (VMSTATE_UINT32(foo, VirtIONet)):
11.2 -> 11.2 works, every migration between 11.1 and 11.2 desynchronizes."""

from models.releases import V
from models.schema import DeviceVersion, Field, Release

DECLARATIONS = (
    Release(V("11.2"), after=V("11.1")),
    DeviceVersion("virtio-net-device", V("11.2"), fields=(Field("foo", "uint32"),)),
)
