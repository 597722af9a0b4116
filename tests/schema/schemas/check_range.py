"""11.0 drops the in-use check (models/core.py's inuse_modular holds until 11.0): a load check removed, which
`diff` decides by running the cells of 11.0 -> 10.2 (10.2 still checks what 11.0 sends)."""

from models.releases import V
from models.schema import LoadCheck, Release

DECLARATIONS = (
    Release(V("11.0"), after=V("10.2")),
    LoadCheck("inuse_modular", V("2.9"), V("11.0"), "VQ {i} size 0x{num:x} < last_avail_idx 0x{last:x} - used_idx "
              "0x{used:x}", source="an experiment"),
)
