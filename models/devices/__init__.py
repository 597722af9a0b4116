"""The virtio devices: what each derives at realize, its device data on the wire, its load checks."""

from __future__ import annotations

from types import ModuleType

from models.devices import balloon, blk, net, rng
from models.vmsd import Versions, Vmsd

__all__ = ["DEVICES", "Versions", "Vmsd"]

DEVICES: dict[str, ModuleType] = {"virtio-net": net, "virtio-blk": blk, "virtio-balloon": balloon, "virtio-rng": rng}
