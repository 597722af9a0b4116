"""A needed() that raises on some states (a schema author's bug): an exception inside the model, which `check`
must count, report with its traceback and write a failure file for."""

from models.releases import V
from models.schema import Field, Release, Subsection


def _needed(r, s):  # type: ignore[no-untyped-def]
    if s.status & 4:  # DRIVER_OK: a driven device
        raise KeyError("bar")
    return False


DECLARATIONS = (
    Release(V("11.2"), after=V("11.1")),
    Subsection("virtio/bar", V("11.2"), fields=(Field("bar", "uint8"),), needed=_needed),
)
