"""virtio-rng (hw/virtio/virtio-rng.c): one queue of 8, no config, no device data (§5.4)."""

from __future__ import annotations

from typing import Any

from models.configuration import RealizeContext
from models.vmsd import Versions, Vmsd

VERSIONS = Versions(Vmsd("virtio-rng", 1, 1), None)  # no device data at all


def host_features(ctx: RealizeContext) -> int:
    return 0


def get_features(ctx: RealizeContext, features: int) -> int:
    return features


def queue_sizes(ctx: RealizeContext) -> list[int]:
    return [8]


def config_len(ctx: RealizeContext, host_features: int) -> int:
    return 0


def default_vectors(ctx: RealizeContext, nqueues: int) -> int:
    return 2  # virtio-rng-pci realize (7.2+)


def reset_state(realized: Any) -> None:
    return None


def to_wire(dev: Any, realized: Any, s: Any) -> dict[str, Any]:
    return {}


def from_wire(value: Any) -> None:
    return None


def load_device(dev: Any, realized: Any, features_lo: int, lines: list[str]) -> Any:
    return None
