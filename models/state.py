"""Device state: immutable data, everything QEMU migrates for a virtio device plus the guest-RAM
ring indices (avail idx, used idx) that the load checks read."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

NO_VECTOR = 0xFFFF
ENDIAN_UNKNOWN, ENDIAN_LITTLE, ENDIAN_BIG = 0, 1, 2


@dataclass(frozen=True)
class QueueState:
    num: int  # vring.num, the current size (0: the queue is not saved, nor any after it)
    desc: int = 0
    avail: int = 0
    used: int = 0
    align: int = 4096  # vring.align (sent by virtio-mmio)
    last_avail_idx: int = 0
    vector: int = NO_VECTOR
    avail_idx: int = 0  # guest RAM: avail ring idx
    used_idx: int = 0  # guest RAM: used ring idx


@dataclass(frozen=True)
class PciState:
    config: bytes  # the whole config space as the guest left it (256 or 4096 bytes)
    irq_state: tuple[int, int, int, int] = (0, 0, 0, 0)
    msix_table: bytes = b""
    msix_pba: bytes = b""
    version_id: int = 2
    # virtio_pci/modern_state: register values of the modern interface
    dfselect: int = 0
    gfselect: int = 0
    modern_guest_features: tuple[int, int] = (0, 0)
    modern_queues: tuple[tuple[int, int, int, int, int, int, int, int, int], ...] = ()  # 1024 entries or ()


@dataclass(frozen=True)
class MmioState:
    host_features_sel: int = 0
    guest_features_sel: int = 0
    guest_page_shift: int = 0
    modern_guest_features: tuple[int, int] = (0, 0)
    modern_queues: tuple[tuple[int, ...], ...] = ()  # virtio_mmio/queue_state, 1024 entries or ()


@dataclass(frozen=True)
class CcwState:
    """The s390_virtio_ccw_dev vmsd (subchannel and adapter state), kept as its decoded tree."""

    tree: Any
    config_vector: int = NO_VECTOR


@dataclass(frozen=True)
class DeviceState:
    status: int = 0
    isr: int = 0
    queue_sel: int = 0
    guest_features: int = 0  # all bits (up to 128)
    config: bytes = b""
    queues: tuple[QueueState, ...] = ()
    num_default: tuple[int, ...] = ()  # vring.num_default per queue, as the ringsize subsection carries it
    config_vector: int = NO_VECTOR
    device_endian: int = ENDIAN_LITTLE
    broken: bool = False
    started: bool = False
    disabled: bool = False
    pci: PciState | None = None
    mmio: MmioState | None = None
    ccw: CcwState | None = None
    device: Any = None  # NetState, BlkState, BalloonState or None (rng)
    packed: tuple[tuple[int, int, int, int, int], ...] = ()  # virtio/packed_virtqueues (1024 entries or ())
    guest_features_lo_field: int | None = None  # the 32-bit field when it differs from guest_features (hostile)
    extra: tuple[tuple[str, Any], ...] = ()  # fields that schema modules declare (models/schema.py): sorted pairs

    def with_(self, **changes: Any) -> DeviceState:
        return replace(self, **changes)


@dataclass(frozen=True)
class NetState:
    mac: bytes = bytes.fromhex("525400123456")
    tx_waiting: tuple[int, ...] = (0,)  # per queue pair
    mergeable_rx_bufs: int = 0
    status: int = 1  # VIRTIO_NET_S_LINK_UP
    promisc: int = 1
    allmulti: int = 0
    mac_table: bytes = b""  # in_use x 6 bytes
    mac_table_in_use: int | None = None  # None: len(mac_table) // 6
    vlans: bytes = bytes(512)
    has_vnet_hdr: int = 0
    multi_overflow: int = 0
    uni_overflow: int = 0
    alluni: int = 0
    nomulti: int = 0
    nouni: int = 0
    nobcast: int = 0
    has_ufo: int = 0
    max_queue_pairs: int = 1
    curr_queue_pairs: int = 1
    curr_guest_offloads: int = 0
    rss: Any = None  # the virtio-net-device/rss subsection body, when rss is enabled

    @property
    def in_use(self) -> int:
        return len(self.mac_table) // 6 if self.mac_table_in_use is None else self.mac_table_in_use


@dataclass(frozen=True)
class BlkRequest:
    queue: int
    head: int
    out_sg: tuple[tuple[int, int], ...]  # (guest address, length), device-readable
    in_sg: tuple[tuple[int, int], ...]  # device-writable
    counts: tuple[int, int] | None = None  # (out_num, in_num) as sent, when they differ from the lists


@dataclass(frozen=True)
class BlkState:
    requests: tuple[BlkRequest, ...] = ()


@dataclass(frozen=True)
class BalloonState:
    num_pages: int = 0
    actual: int = 0
    free_page_hint_cmd_id: int = 0
    free_page_hint_status: int = 0
    poison_val: int = 0


@dataclass(frozen=True)
class Trace:
    """What one load did, step by step, and the reads of values a later step still provides."""

    steps: list[str] = field(default_factory=list)
    early_reads: list[str] = field(default_factory=list)


class Crashed(Exception):
    """The release aborts (an assertion) on this input instead of failing the load."""


class Undefined(Exception):
    """The release corrupts its own memory on this input (a heap overflow, a double free): what follows depends on
    its heap, not on the stream. It may crash, reject or go on; a finding against the release, never a prediction."""
