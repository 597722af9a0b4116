"""A vmsd's versions, by QEMU's name for it (the devices declare theirs with these; schema modules change them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Vmsd:
    """A vmsd's (version_id, minimum_version_id), by QEMU's name for it."""

    name: str
    version: int
    minimum: int


@dataclass(frozen=True)
class Versions:
    """A device's outer vmsd ("virtio-net": its version_id is the section header's) and its device vmsd
    (vdc->vmsd, "virtio-net-device"; None where save_device/load_device write the device data). virtio_load
    reads the device vmsd with the *local* outer version_id (virtio_device_get), not the stream's."""

    section: Vmsd
    device: Vmsd | None
