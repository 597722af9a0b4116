"""needed() in arbitrary Python: tools cannot read it, so `diff` runs the matrix cells that decide it."""

from models.releases import V
from models.schema import Field, Release, Subsection

DECLARATIONS = (
    Release(V("11.2"), after=V("11.1")),
    Subsection("virtio-balloon-device/baz", V("11.2"), fields=(Field("baz", "uint8", values=(0, 7)),),
               needed=lambda r, s: dict(s.extra).get("baz") == 7),
)
