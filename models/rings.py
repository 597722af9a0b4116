"""The virtqueue rings in guest RAM: where the destination finds them, and the indices it reads there."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal, Protocol

from models import features as F
from models import load_errors as le
from models.config import Realized
from models.configuration import bi_endian
from models.load_checks import Rejected
from models.state import (
    ENDIAN_BIG,
    DeviceState,
    QueueState,
)


class GuestRam(Protocol):
    """Guest memory as the destination's virtio_load reaches it (address_space_memory)."""

    def read_u16(self, gpa: int) -> int: ...

    def mappable(self, gpa: int, size: int) -> bool:
        """address_space_cache_init maps all of [gpa, gpa + size): it lies inside one section of the memory map."""
        ...

    bounce: bool  # address_space_map's one bounce buffer is lent out

    def direct(self, gpa: int, size: int, write: bool) -> int:
        """How many bytes from gpa (at most size) address_space_map reaches directly in RAM (0: not RAM)."""
        ...


TARGET_PAGE_SIZE = 4096


def ring_indices(memory: GuestRam, num: int, desc: int, avail: int, used: int, features: int, device: str | None
                  ) -> tuple[int, int, list[str]]:
    """virtio_init_region_cache, then vring_avail_idx / vring_used_idx: (avail idx, used idx, virtio_error lines).
    A ring that does not map leaves no caches, and both indices read as 0. `device`: how 10.2 on names the device
    (None: the release says "Cannot map <ring>")."""
    event = 2 if F.has(features, F.RING_EVENT_IDX) else 0
    for name, addr, size in (("desc", desc, 16 * num), ("used", used, 4 + 8 * num + event),
                             ("avail", avail, 4 + 2 * num + event)):
        if not memory.mappable(addr, size):
            return 0, 0, [f"Cannot map {name}" if device is None else _MAP_FAILED[name].format(device=device)]
    return memory.read_u16(avail + 2), memory.read_u16(used + 2), []


# virtio_init_region_cache from 10.2 (virtio: improve virtqueue mapping error messages; "avalaible" sic)
_MAP_FAILED = {
    "desc": "Failed to map descriptor ring for device {device}: invalid guest physical address or corrupted queue "
            "setup",
    "used": "Failed to map used ring for device {device}: possible guest misconfiguration or insufficient memory",
    "avail": "Failed to map avalaible ring for device {device}: possible queue misconfiguration or overlapping memory "
             "region",
}


_BUS_TYPE = {"pci": "virtio-pci-bus", "mmio": "virtio-mmio-bus", "ccw": "virtio-ccw-bus"}


def printable_name(r: Realized, idstr: str, vdev_id: str | None) -> str | None:
    """qdev_get_printable_name of the virtio device: its id= if it has one (mmio), else its proxy's dev path, the
    path part of the section's idstr; from 11.0 after its bus type (the 11.1 binary on pci and mmio; ccw and
    11.0 UNVERIFIED)."""
    if r.release < le.CHAIN_FROM:
        return None
    if vdev_id:
        return vdev_id
    path = idstr.rpartition("/")[0] or "<unknown device>"
    return f"{_BUS_TYPE[r.config.transport]} device {path}" if r.release >= le.BOOL_FROM else path


def ring_addresses(q: QueueState, features: int) -> tuple[int, int]:
    """Where the destination reads a queue's rings: the migrated addresses with VERSION_1, else
    virtio_queue_update_rings' legacy layout from desc, num and align."""
    if F.has(features, F.VERSION_1):
        return q.avail, q.used
    avail = q.desc + 16 * q.num
    return avail, vring_align(avail + 4 + 2 * q.num, q.align)


def vring_align(addr: int, align: int) -> int:
    """QEMU_ALIGN_UP, by division: an align migrated on virtio-mmio need not be a power of two."""
    return (addr + align - 1) // align * align if align else addr


def rings_big_endian(machine: Any, big_target: bool, device_endian: int, features: int) -> bool:
    """virtio_access_is_big_endian(): VERSION_1 rings are little-endian; a legacy device's follow device_endian on a
    bi-endian target (arm, ppc64: LEGACY_VIRTIO_IS_BIENDIAN) and the target's own endianness elsewhere."""
    if F.has(features, F.VERSION_1):
        return False
    return device_endian == ENDIAN_BIG if bi_endian(machine) else big_target


def guest_rings(memory: Any, machine: str | None, state: DeviceState) -> list[tuple[int, int]]:
    """(avail idx, used idx) of each queue, read from the guest RAM a stream carries, in the byte order the
    destination reads them (rings_big_endian: the loaded device_endian and features). A packed ring has no such
    indices in RAM (its device area holds the event suppression flags): its used idx is the device's own, from
    virtio/packed_virtqueues, as the destination keeps it."""
    big = rings_big_endian(machine, (machine or "").startswith("s390"), state.device_endian, state.guest_features)
    order: Literal["big", "little"] = "big" if big else "little"
    out = []
    packed = F.has(state.guest_features, F.RING_PACKED)
    for i, q in enumerate(state.queues):
        if not q.desc:
            out.append((0, 0))
            continue
        if packed:
            out.append((0, state.packed[i][2] if i < len(state.packed) else 0))
            continue
        avail, used = ring_addresses(q, state.guest_features)
        try:
            out.append((int.from_bytes(memory.read_phys(machine, avail + 2, 2), order),
                        int.from_bytes(memory.read_phys(machine, used + 2, 2), order)))
        except KeyError:
            out.append((0, 0))  # not in RAM this tool maps: reads as zero
    return out


def with_rings(state: DeviceState, rings: Sequence[tuple[int, int]]) -> DeviceState:
    padded = list(rings) + [(0, 0)] * len(state.queues)
    qs = tuple(replace(q, avail_idx=a, used_idx=u) for q, (a, u) in zip(state.queues, padded, strict=False))
    return replace(state, queues=qs)


def map_requests(memory: GuestRam, requests: Sequence[Any]) -> None:
    """qemu_get_virtqueue_element maps each in-flight request (virtqueue_map: in_sg, then out_sg) with
    dma_memory_map; a buffer it cannot map whole makes QEMU exit(1). Outside RAM address_space_map lends its one
    bounce buffer (a page at most), which a load never gives back (`memory.bounce`)."""
    for req in requests:
        for sg, write in ((req.in_sg, True), (req.out_sg, False)):
            for addr, length in sg:
                direct = memory.direct(addr, length, write) if length else 0
                if length and not direct and not memory.bounce:
                    memory.bounce, direct = True, min(length, TARGET_PAGE_SIZE)
                if not direct:
                    raise Rejected(["virtio: error trying to map MMIO memory"], 0)
                if direct < length:
                    raise Rejected(["virtio: unexpected memory split"], 0)
