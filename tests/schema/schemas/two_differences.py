"""Two differences in 11.2: an ungated device subsection whose needed() is Python (it breaks 11.2 -> 11.1), and the
in-use check's message reworded (harmless). Both are decided by the cells of 11.2 -> 11.1; only the subsection may
be blamed for their failures."""

from models.releases import V
from models.schema import Field, LoadCheck, Release, Subsection

DECLARATIONS = (
    Release(V("11.2"), after=V("11.1")),
    Subsection("virtio-net-device/foo", V("11.2"), fields=(Field("foo", "uint8", values=(0, 1)),),
               needed=lambda r, s: dict(s.extra).get("foo") == 1),
    LoadCheck("inuse_modular", V("2.9"), V("11.2"), "VQ {i} size 0x{num:x} < last_avail_idx 0x{last:x} - used_idx "
              "0x{used:x}"),
    LoadCheck("inuse_modular", V("11.2"), None, "VQ {i} size 0x{num:x} < last_avail_idx 0x{last:x} - used idx "
              "0x{used:x}"),
)
