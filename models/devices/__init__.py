"""The virtio devices: what each derives at realize, its device data on the wire, its load checks. Each module
here declares its device(s) (models/declarations.Device: DEVICE, or DEVICES for several); adding a device is adding
a module. The registry (models/registry.py) holds them; nothing else lists them."""

from __future__ import annotations

import importlib
import pkgutil

from models.declarations import Device
from models.vmsd import Versions, Vmsd

__all__ = ["DECLARED", "Versions", "Vmsd", "declared"]


def declared() -> tuple[Device, ...]:
    """The Device declarations of this package's modules, in their declared order."""
    out: list[Device] = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        out += [*getattr(module, "DEVICES", ()), *([module.DEVICE] if hasattr(module, "DEVICE") else [])]
    return tuple(sorted(out, key=lambda d: (d.order, d.name)))


DECLARED = declared()
