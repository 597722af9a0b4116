"""One load check in two ranges: the in-use check as 2.9 made it, gone in 11.2 and back in 11.3."""

from models.releases import V
from models.schema import LoadCheck, Release

MESSAGE = "VQ {i} size 0x{num:x} < last_avail_idx 0x{last:x} - used_idx 0x{used:x}"
DECLARATIONS = (
    Release(V("11.2"), after=V("11.1")),
    Release(V("11.3"), after=V("11.2")),
    LoadCheck("inuse_modular", V("2.9"), V("11.2"), MESSAGE),
    LoadCheck("inuse_modular", V("11.3"), None, MESSAGE, source="back"),
)
