"""A deliberately broken model for the fault tests, loaded into a pytest subprocess with PYTEST_PLUGINS: the
load of a virtio-net device on a machine type from 2.7 on (a modern device) inverts the MAC bytes, so R1
fails in the 7.2 -> 7.2 cell. Its minimal failing state is a modern device with the 1024-entry subsections,
so the failure file (about 100 KB) is much larger than the reports: a file-size limit between the two fails
the failure file alone. Never imported by a test module."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from models import load
from models.releases import V

_state_from_wire = load.state_from_wire


def _forgetful(r: Any, v: Any, rings: Any = None) -> Any:
    s = _state_from_wire(r, v, rings)
    if r.config.device == "virtio-net" and r.config.machine.version >= V("2.7") and s.device is not None:
        s = replace(s, device=replace(s.device, mac=bytes(b ^ 0xFF for b in s.device.mac)))
    return s


load.state_from_wire = _forgetful  # what virtio_load reads the payload into
