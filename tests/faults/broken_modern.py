"""A deliberately broken model for the fault tests, loaded into a pytest subprocess with PYTEST_PLUGINS: the
load of a virtio-net device on a machine type from 7.0 on forgets `promisc` (R1 fails in 7.2 -> 7.2 cells).
The minimal failing state is then a modern device with its 1024-entry subsections, so its failure file
(about 100 KB) is much larger than the reports: a file-size limit between the two fails the failure file
alone. Never imported by a test module."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from models import model
from models.releases import V

_state_from_wire = model.state_from_wire


def _forgetful(r: Any, v: Any, rings: Any = None) -> Any:
    s = _state_from_wire(r, v, rings)
    if r.config.device == "virtio-net" and r.config.machine.version >= V("7.0") and s.device is not None:
        s = replace(s, device=replace(s.device, promisc=0))
    return s


model.state_from_wire = _forgetful
