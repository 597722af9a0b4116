"""11.2 without the desc check: virtio_load always makes it, so ending its only range is a mistake."""

from models.releases import V
from models.schema import LoadCheck, Release

DECLARATIONS = (
    Release(V("11.2"), after=V("11.1")),
    LoadCheck("desc_zero", V("2.0"), V("11.2"), "VQ {i} address 0x0 inconsistent with Host index 0x{last:x}"),
)
