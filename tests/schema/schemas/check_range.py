"""11.2 drops the in-use check (models/core.py's inuse_modular holds until 11.2): a load check removed, which
`diff` decides by running the cells of 11.2 -> 11.1 (11.1 still checks what 11.2 sends)."""

from models.releases import V
from models.schema import LoadCheck, Release

DECLARATIONS = (
    Release(V("11.2"), after=V("11.1")),
    LoadCheck("inuse_modular", V("2.9"), V("11.2"), "VQ {i} size 0x{num:x} < last_avail_idx 0x{last:x} - used_idx "
              "0x{used:x}", source="an experiment"),
)
