"""11.2 bumps virtio-net-device (and with it VIRTIO_NET_VM_VERSION, the section's version) to 12 for a new field,
VMSTATE_UINT32_V(foo, VirtIONet, 12): the way a non-virtio device adds state. Both directions break: 11.1 refuses
section version 12, and 11.2 reads foo from a 11.1 stream because virtio_load passes the local version."""

from models.releases import V
from models.schema import DeviceVersion, Field, Release

DECLARATIONS = (
    Release(V("11.2"), after=V("11.1")),
    DeviceVersion("virtio-net-device", V("11.2"), version=12, fields=(Field("foo", "uint32", version=12),)),
)
