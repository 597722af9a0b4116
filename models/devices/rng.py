"""virtio-rng (hw/virtio/virtio-rng.c): one queue of 8, no config, no device data (§5.4)."""

from __future__ import annotations

import sys
from typing import Any

from models.configuration import RealizeContext
from models.declarations import Device, offered
from models.releases import Compat, Version
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


# hw/virtio/virtio-rng-pci.c: vectors default 2 since 7.2 (hw_compat_7_1 sets 0)
DEVICE = Device("virtio-rng", VERSIONS, 4, sys.modules[__name__], pci_device_id=0x1005, pci_class=0x00FF, pci_vectors=2,
                transports=offered(Version(2, 0), "pci", "mmio", "ccw"),
                compat=(Compat(Version(2, 4), "virtio-rng-ccw", "max_revision", 0, Version(2, 5),
                               source="ccw_machine_2_4_class_options"),),
                drawn=(("packed", (False, True)),), qdev_id="vrng", order=40)
