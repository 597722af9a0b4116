"""net_foo_ungated.py with its needed() in arbitrary Python: no tool can read it, so the matrix's boundary phase sets
no field for it and only the random draws find the break (a state with foo non-zero, 11.2 -> 11.1). What the shared
example database is tested with: a failure that drawing has to find, which a database replays first."""

from models.releases import V
from models.schema import Field, Release, Subsection

DECLARATIONS = (
    Release(V("11.2"), after=V("11.1")),
    Subsection("virtio-net-device/foo", V("11.2"), fields=(Field("foo", "uint32"),),
               needed=lambda r, s: dict(s.extra).get("foo", 0) != 0),
)
