"""Drive virtio-pci devices of a paused QEMU over the legacy I/O BAR, through qtest.

This plays the part of a legacy guest driver (as the fixtures in shared/fixtures/qemu-7.2 were
made): PCI config mechanism #1 at 0xcf8/0xcfc, BAR0 as the legacy virtio I/O window, then the
VIRTIO_PCI_* registers. The ground truth it returns holds only what was configured, written, or
read back through registers; nothing comes from decoding a migration stream.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import QemuError
from harness.qemu import drive_modern, drive_scsi
from harness.qemu.qtest import QtestClient
from models.registry import BASE

# PCI configuration mechanism #1.
PCI_CONFIG_ADDRESS = 0xCF8
PCI_CONFIG_DATA = 0xCFC
PCI_VENDOR_ID = 0x00
PCI_DEVICE_ID = 0x02
PCI_COMMAND = 0x04
PCI_STATUS = 0x06
PCI_STATUS_CAP_LIST = 0x10
PCI_BASE_ADDRESS_0 = 0x10
PCI_CAPABILITY_LIST = 0x34
PCI_CAP_ID_MSIX = 0x11
PCI_MSIX_FLAGS = 2
PCI_MSIX_FLAGS_QSIZE = 0x07FF
PCI_MSIX_FLAGS_ENABLE = 0x8000
PCI_COMMAND_IO = 0x1
PCI_COMMAND_MASTER = 0x4

PCI_VENDOR_ID_REDHAT_QUMRANET = 0x1AF4
# The devices the models declare (models/devices), with their PCI ids.
DEVICE_KINDS = BASE.device_names

# Legacy virtio-pci I/O registers (offsets into BAR0).
VIRTIO_PCI_HOST_FEATURES = 0
VIRTIO_PCI_GUEST_FEATURES = 4
VIRTIO_PCI_QUEUE_PFN = 8
VIRTIO_PCI_QUEUE_NUM = 12
VIRTIO_PCI_QUEUE_SEL = 14
VIRTIO_PCI_QUEUE_NOTIFY = 16
VIRTIO_PCI_STATUS = 18
VIRTIO_PCI_QUEUE_ADDR_SHIFT = 12
VIRTIO_PCI_VRING_ALIGN = 4096
VIRTIO_QUEUE_MAX = 1024

VIRTIO_CONFIG_S_ACKNOWLEDGE = 1
VIRTIO_CONFIG_S_DRIVER = 2
VIRTIO_CONFIG_S_DRIVER_OK = 4
VIRTIO_F_BAD_FEATURE = 30

VRING_DESC_F_NEXT = 1
VRING_DESC_F_WRITE = 2
VIRTIO_BLK_T_IN = 0
VIRTIO_BLK_SECTOR = 512
# Each blk request gets 1 KiB after the ring: header (16) and status (1) at +0, data at +512.
BLK_REQUEST_STRIDE = 1024

REQUEST_TIMEOUT = 5.0
# virt: the first virtio-mmio device on the command line takes the top transport, the next one below.
MMIO_TOP = 0x0A003E00
MMIO_STRIDE = 0x200


def legacy_config_offset(msix_enabled: bool) -> int:
    """VIRTIO_PCI_CONFIG_OFF: device config follows the MSI-X vector registers when MSI-X is on."""
    return 24 if msix_enabled else 20


def queue_count(select: Callable[[int], None], size: Callable[[], int]) -> int:
    """How many queues a device has: selecting one past the last reads a size of 0 (pci and mmio alike)."""
    count = 0
    while count < VIRTIO_QUEUE_MAX:
        select(count)
        if size() == 0:
            break
        count += 1
    return count


def align_up(value: int, align: int) -> int:
    return (value + align - 1) & ~(align - 1)


def vring_layout(desc: int, num: int, align: int = VIRTIO_PCI_VRING_ALIGN) -> tuple[int, int, int]:
    """(avail, used, end) of a legacy split ring at `desc` with `num` entries."""
    avail = desc + 16 * num
    used = align_up(avail + 4 + 2 * num, align)
    return avail, used, used + 6 + 8 * num


def queue_pages(num: int, blk_requests: int = 0) -> int:
    """Guest pages a queue set up by drive_device occupies (ring, then blk request buffers)."""
    _, _, end = vring_layout(0, num)
    return align_up(end, 4096) // 4096 + (blk_requests * BLK_REQUEST_STRIDE + 4095) // 4096


@dataclass(frozen=True)
class QueueSpec:
    """One virtqueue to set up: its index, the page frame number of its ring (never 0: writing
    PFN 0 resets the device), and how many virtio-blk read requests to complete on it."""

    index: int
    pfn: int
    requests: int = 0
    num: int = 0  # the ring size the driver writes (0: the queue's maximum): virtio-mmio, and modern virtio-pci
    vector: int = 0xFFFF  # the MSI-X vector the driver assigns (DriveSpec.msix; VIRTIO_NO_VECTOR: none)
    # virtio-scsi (a request queue, index 2 and up): `requests` READ(10)s, then this many WRITE(10)s, which stay
    # in flight on a disk whose writes fail with werror=stop (drive_scsi.py)
    writes: int = 0


@dataclass(frozen=True)
class DriveSpec:
    """The state to drive one virtio-pci device into.

    kind: virtio-net, virtio-blk, virtio-balloon, virtio-rng or virtio-scsi, on bus 0 at `slot`.
    guest_features: a mask; the driver writes host_features & mask (never bit 30, BAD_FEATURE).
    status: the final device status (after 0, ACKNOWLEDGE, ACKNOWLEDGE|DRIVER).
    io_base: the legacy I/O BAR address; None gives 0xc000 + 0x100 * slot.
    """

    kind: str
    slot: int
    guest_features: int = 0
    queues: tuple[QueueSpec, ...] = ()
    status: int = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_DRIVER_OK
    queue_sel: int = 0
    io_base: int | None = None
    clear_bus_master: bool = False
    # virtio-mmio (drive_mmio.py): slot is the device's place on the command line; the selectors the save carries
    transport: str = "pci"
    host_features_sel: int = 0
    guest_features_sel: int = 0
    # virtio-pci as a guest with firmware leaves it (drive_modern.py): every BAR sized and mapped, then MSI-X
    # enabled with the config and queue vectors assigned, and the modern common configuration instead of the
    # legacy BAR (a ring size of its own per queue, RING_PACKED where offered)
    firmware: bool = False
    msix: bool = False
    config_vector: int = 0xFFFF
    modern: bool = False
    props: tuple[tuple[str, str], ...] = ()  # the -device properties it was started with (packed=on, ...)
    netdev: str = "hubport"  # virtio-net's backend (backend.DeviceConfig.netdev)
    # who writes the first status 0 (the reset): None, qtest (no CPU: the device keeps the target's endianness);
    # "little" or "big", the guest's vCPU 0 with that data endianness (guest.py), which the device then takes on a
    # bi-endian target (aarch64 virt), its legacy rings with it
    reset_endian: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in DEVICE_KINDS:
            raise QemuError(f"unknown virtio device kind {self.kind!r} (known: {', '.join(DEVICE_KINDS)})")
        if self.transport not in ("pci", "mmio"):
            raise QemuError(f"{self.transport} devices cannot be driven over qtest (pci and mmio can)")
        low = 1 if self.transport == "pci" else 0
        if not low <= self.slot < 32:
            raise QemuError(f"{self.transport} slot {self.slot} out of range {low}..31")
        if not 0 <= self.status <= 0xFF or not 0 <= self.queue_sel <= 0xFFFF:
            raise QemuError("status must fit in u8 and queue_sel in u16")
        seen = set()
        for q in self.queues:
            if q.index in seen:
                raise QemuError(f"queue {q.index} listed twice")
            seen.add(q.index)
            if not 0 < q.pfn < 1 << 32:
                raise QemuError(f"queue {q.index}: PFN {q.pfn:#x} must be non-zero (0 resets the device)")
            if (q.requests or q.writes) and self.kind not in ("virtio-blk", "virtio-scsi"):
                raise QemuError("requests can only be made on virtio-blk and virtio-scsi queues")
            if self.kind == "virtio-scsi" and (q.requests or q.writes) and q.index < 2:
                raise QemuError(f"queue {q.index}: virtio-scsi takes SCSI commands on its request queues (2 and up)")
            if q.writes and self.kind != "virtio-scsi":
                raise QemuError("writes left in flight are virtio-scsi's (virtio-blk's requests are reads)")
            if not 0 <= q.requests < 0x10000:
                raise QemuError(f"queue {q.index}: {q.requests} requests do not fit a u16 index")
            if not 0 <= q.num <= VIRTIO_QUEUE_MAX or not 0 <= q.vector <= 0xFFFF:
                raise QemuError(f"queue {q.index}: size {q.num} or vector {q.vector} out of range")
        if self.reset_endian not in (None, "little", "big"):
            raise QemuError(f"reset_endian {self.reset_endian!r}: little, big or None (a qtest reset)")
        if self.reset_endian is not None and self.transport != "mmio":
            raise QemuError("a reset by the guest CPU is driven on aarch64 virt (virtio-mmio) only")
        if (self.msix or (self.modern and self.transport == "pci")) and (self.transport != "pci"
                                                                        or not self.firmware):
            raise QemuError("MSI-X and the modern interface need virtio-pci with its BARs mapped (firmware)")

    @property
    def port(self) -> int:
        return self.io_base if self.io_base is not None else 0xC000 + 0x100 * self.slot

    @property
    def section(self) -> str:
        """The migration section idstr: `<pci address>/<vmsd name>` (the vmsd is named like the kind);
        virtio-mmio: `virtio-mmio@<transport base>/<vmsd name>`."""
        if self.transport == "mmio":
            return f"virtio-mmio@{MMIO_TOP - MMIO_STRIDE * self.slot:016x}/{self.kind}"
        return f"0000:00:{self.slot:02x}.0/{self.kind}"


class PciConfig:
    """Configuration space of one function on bus 0, through mechanism #1."""

    def __init__(self, qt: QtestClient, slot: int, bus: int = 0, function: int = 0) -> None:
        self.qt = qt
        self._address = 0x80000000 | bus << 16 | slot << 11 | function << 8

    def _select(self, reg: int) -> int:
        self.qt.outl(PCI_CONFIG_ADDRESS, self._address | (reg & 0xFC))
        return PCI_CONFIG_DATA + (reg & 3)

    def readb(self, reg: int) -> int:
        return self.qt.inb(self._select(reg))

    def readw(self, reg: int) -> int:
        return self.qt.inw(self._select(reg))

    def readl(self, reg: int) -> int:
        return self.qt.inl(self._select(reg))

    def writew(self, reg: int, value: int) -> None:
        self.qt.outw(self._select(reg), value)

    def writel(self, reg: int, value: int) -> None:
        self.qt.outl(self._select(reg), value)

    def find_capability(self, cap_id: int) -> int | None:
        """Offset of the first capability with `cap_id`, walking the list from PCI_CAPABILITY_LIST."""
        if not self.readw(PCI_STATUS) & PCI_STATUS_CAP_LIST:
            return None
        pos = self.readb(PCI_CAPABILITY_LIST) & 0xFC
        for _ in range(48):  # a corrupt list must not loop forever
            if pos < 0x40:
                return None
            if self.readb(pos) == cap_id:
                return pos
            pos = self.readb(pos + 1) & 0xFC
        return None


def _mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def read_u16(qt: QtestClient, addr: int, big: bool = False) -> int:
    """A ring's u16 in guest RAM, in the device's byte order (a legacy device of a big-endian guest: big)."""
    return int.from_bytes(qt.memread(addr, 2), "big" if big else "little")


def blk_requests(qt: QtestClient, notify: Callable[[int], None], index: int, desc: int, num: int, count: int,
                 big: bool = False) -> tuple[int, int]:
    """Make `count` VIRTIO_BLK_T_IN requests available on one queue, notify(index), and wait until the
    device has used them all. Returns (avail idx, used idx) read back from guest memory. `big`: the ring and the
    request header in big-endian byte order, as a big-endian guest writes them for a legacy device that took its
    endianness (virtio_access_is_big_endian)."""
    e = ">" if big else "<"
    if 3 * count > num:
        raise QemuError(f"queue {index}: {count} requests need {3 * count} descriptors, the ring has {num}")
    avail, used, end = vring_layout(desc, num)
    buffers = align_up(end, 4096)
    table = bytearray()
    for k in range(count):
        base = buffers + k * BLK_REQUEST_STRIDE
        header, status, data = base, base + 16, base + 512
        # Descriptor chain: header (device reads), data (device writes), status (device writes).
        table += struct.pack(f"{e}QIHH", header, 16, VRING_DESC_F_NEXT, 3 * k + 1)
        table += struct.pack(
            f"{e}QIHH", data, VIRTIO_BLK_SECTOR, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 3 * k + 2
        )
        table += struct.pack(f"{e}QIHH", status, 1, VRING_DESC_F_WRITE, 0)
        # virtio_blk_outhdr {type, ioprio, sector}, then 0xff in the status byte until the device writes it.
        qt.memwrite(header, struct.pack(f"{e}IIQ", VIRTIO_BLK_T_IN, 0, k) + b"\xff")
    qt.memwrite(desc, bytes(table))
    ring = b"".join(struct.pack(f"{e}H", 3 * k) for k in range(count))
    qt.memwrite(avail + 4, ring)
    qt.memwrite(avail + 2, struct.pack(f"{e}H", count))
    notify(index)
    deadline = time.monotonic() + REQUEST_TIMEOUT
    # The paused VM still runs virtio-blk's handlers in the main loop: poll the used index.
    while (used_idx := read_u16(qt, used + 2, big)) != count:
        if time.monotonic() > deadline:
            raise QemuError(
                f"virtio-blk queue {index}: used idx {used_idx} after {REQUEST_TIMEOUT} s, expected {count}"
            )
        time.sleep(0.0005)
    return read_u16(qt, avail + 2, big), used_idx


def make_requests(qt: QtestClient, notify: Callable[[int], None], kind: str, q: QueueSpec, desc: int, num: int,
                  inflight: list[dict[str, Any]], big: bool = False) -> tuple[int, int]:
    """The requests `q` asks for on a queue of `kind`: virtio-blk's reads, or virtio-scsi's reads and writes (those
    left in flight go to `inflight`). Returns (avail idx, used idx) read back from guest memory. `big`: the ring in
    big-endian byte order (blk_requests)."""
    if kind == "virtio-scsi":
        avail_idx, used_idx, reqs = drive_scsi.scsi_requests(qt, notify, q.index, desc, num, q.requests, q.writes,
                                                             big)
        inflight += [r for r in reqs if r["response"] == drive_scsi.NOT_WRITTEN]
        return avail_idx, used_idx
    return blk_requests(qt, notify, q.index, desc, num, q.requests, big)


def drive_device(qt: QtestClient, spec: DriveSpec) -> dict[str, Any]:
    """Drive one device into `spec`'s state and return its ground truth, keyed like the fixture JSON:
    section, device, transport, msix_vectors, status, queue_sel, guest_features_lo, host_features_lo,
    num_queues, queues [{index, num, desc, last_avail_idx[, avail_idx, used_idx]}], pci_command,
    mac (virtio-net), notes; plus bar0 (BAR0 as read back, 0xc001 for I/O at 0xc000).
    avail_idx/used_idx are read from guest memory for every configured queue (desc != 0)."""
    cfg = PciConfig(qt, spec.slot)
    ids = cfg.readl(PCI_VENDOR_ID)
    vendor, device_id = ids & 0xFFFF, ids >> 16
    decl = BASE.device(spec.kind)
    want, modern_only = decl.pci_device_id, decl.force_virtio_1
    if vendor != PCI_VENDOR_ID_REDHAT_QUMRANET or device_id != want:
        raise QemuError(
            f"slot {spec.slot:#x}: found PCI {vendor:04x}:{device_id:04x}, expected {spec.kind} "
            f"({PCI_VENDOR_ID_REDHAT_QUMRANET:04x}:{want:04x}, "
            f"{'a modern-only device' if modern_only else 'a transitional device with a legacy BAR'})"
        )
    if modern_only and not spec.modern:
        raise QemuError(f"{spec.kind} is modern-only (no legacy I/O BAR): drive it as firmware and a virtio 1.0 "
                        "driver do (firmware and modern)")
    msix_cap = cfg.find_capability(PCI_CAP_ID_MSIX)
    msix_flags = cfg.readw(msix_cap + PCI_MSIX_FLAGS) if msix_cap is not None else 0
    msix_vectors = (msix_flags & PCI_MSIX_FLAGS_QSIZE) + 1 if msix_cap is not None else 0

    io = spec.port
    if spec.firmware:  # every BAR sized and mapped, memory decoding on (drive_modern.py)
        bars = drive_modern.program_bars(cfg, spec.slot)
        if modern_only:
            io = 0  # no legacy I/O window: the common configuration alone
        elif 0 not in bars or not bars[0].io:
            raise QemuError(f"slot {spec.slot:#x}: no legacy I/O BAR0 (a transitional device has one)")
        else:
            io = bars[0].address
    else:
        bars = {}
        cfg.writel(PCI_BASE_ADDRESS_0, io)
        cfg.writew(PCI_COMMAND, PCI_COMMAND_IO | PCI_COMMAND_MASTER)
    pci_command = cfg.readw(PCI_COMMAND)
    bar0 = cfg.readl(PCI_BASE_ADDRESS_0)
    if not modern_only and bar0 & ~0x3 != io:
        raise QemuError(
            f"slot {spec.slot:#x}: BAR0 reads {bar0:#x} after writing {io:#x} (no legacy I/O BAR?)"
        )
    if spec.msix:
        wanted = {spec.config_vector, *(q.vector for q in spec.queues)}
        drive_modern.enable_msix(qt, cfg, bars, wanted)
        msix_flags = cfg.readw(msix_cap + PCI_MSIX_FLAGS) if msix_cap is not None else 0

    inflight: list[dict[str, Any]] = []
    if spec.modern:
        by_index = {q.index: q for q in spec.queues}
        got = drive_modern.drive_modern(
            qt, cfg, bars, spec, lambda qt, notify, index, desc, num, count: make_requests(
                qt, notify, spec.kind, by_index[index], desc, num, inflight), vring_layout)
        status, queue_sel, queues, count = got["status"], got["queue_sel"], got["queues"], got["num_queues"]
        guest_features, host_features = got["guest_features_lo"], got["host_features_lo"]
        config_vector = got["config_vector"]
    else:
        status, queue_sel, queues, count, guest_features, host_features, config_vector = _drive_legacy(
            qt, io, spec, inflight)
    if spec.clear_bus_master:
        cfg.writew(PCI_COMMAND, pci_command & ~PCI_COMMAND_MASTER)
        pci_command = cfg.readw(PCI_COMMAND)
        status = qt.inb(io + VIRTIO_PCI_STATUS)

    truth: dict[str, Any] = {
        "section": spec.section,
        "device": spec.kind,
        "transport": "pci",
        "msix_vectors": msix_vectors,
        "status": status,
        "queue_sel": queue_sel,
        "guest_features_lo": guest_features,
        "host_features_lo": host_features,
        "num_queues": count,
        "queues": queues,
        "pci_command": pci_command,
        "bar0": bar0,
    }
    if spec.kind == "virtio-net":
        config = io + legacy_config_offset(bool(msix_flags & PCI_MSIX_FLAGS_ENABLE))
        truth["mac"] = _mac_text(bytes(qt.inb(config + i) for i in range(6)))
    if spec.kind == "virtio-scsi":
        truth["inflight_requests"] = inflight
    requested = {q.index: q.requests for q in spec.queues if q.requests}
    truth["notes"] = "; ".join(
        [
            "driven through the modern common configuration" if modern_only else
            f"driven over the legacy I/O BAR at {io:#x}",
            f"status written as [0, 1, 3] then {spec.status}",
            f"guest_features written = host & {spec.guest_features:#x}",
            *(["then bus mastering cleared (PCI command = I/O)"] if spec.clear_bus_master else []),
            "value recorded is the register read-back",
            *(f"{spec.kind} queue {i}: {n} read requests completed" for i, n in requested.items()),
            *(f"virtio-scsi queue {q.index}: {q.writes} WRITE(10) requests made" for q in spec.queues if q.writes),
        ]
    )
    return truth


Driven = tuple[int, int, list[dict[str, Any]], int, int, int, int]


def _drive_legacy(qt: QtestClient, io: int, spec: DriveSpec, inflight: list[dict[str, Any]]) -> Driven:
    """A legacy driver's steps on the I/O BAR: (status, queue_sel, queues, count, guest and host features,
    config vector)."""
    for status in (0, VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER):
        qt.outb(io + VIRTIO_PCI_STATUS, status)
    host_features = qt.inl(io + VIRTIO_PCI_HOST_FEATURES)
    written_features = host_features & spec.guest_features & ~(1 << VIRTIO_F_BAD_FEATURE) & 0xFFFFFFFF
    qt.outl(io + VIRTIO_PCI_GUEST_FEATURES, written_features)
    guest_features = qt.inl(io + VIRTIO_PCI_GUEST_FEATURES)
    config_vector = 0xFFFF
    if spec.msix:  # the vector registers exist while MSI-X is enabled (VIRTIO_PCI_CONFIG_OFF)
        qt.outw(io + drive_modern.VIRTIO_MSI_CONFIG_VECTOR, spec.config_vector)
        config_vector = qt.inw(io + drive_modern.VIRTIO_MSI_CONFIG_VECTOR)

    # Enumerate the queues: the legacy QUEUE_NUM reads 0 past the last one.
    count = queue_count(lambda i: qt.outw(io + VIRTIO_PCI_QUEUE_SEL, i), lambda: qt.inw(io + VIRTIO_PCI_QUEUE_NUM))
    for q in spec.queues:
        if q.index >= count:
            raise QemuError(f"{spec.kind} at slot {spec.slot:#x} has {count} queues, no queue {q.index}")
        qt.outw(io + VIRTIO_PCI_QUEUE_SEL, q.index)
        qt.outl(io + VIRTIO_PCI_QUEUE_PFN, q.pfn)
        pfn = qt.inl(io + VIRTIO_PCI_QUEUE_PFN)
        if pfn != q.pfn:
            raise QemuError(f"queue {q.index}: PFN reads {pfn:#x} after writing {q.pfn:#x}")
        if spec.msix:
            qt.outw(io + drive_modern.VIRTIO_MSI_QUEUE_VECTOR, q.vector)

    qt.outb(io + VIRTIO_PCI_STATUS, spec.status)
    status = qt.inb(io + VIRTIO_PCI_STATUS)

    # Read every queue back after the final status: writing status 0 resets the rings.
    queues: list[dict[str, Any]] = []
    for index in range(count):
        qt.outw(io + VIRTIO_PCI_QUEUE_SEL, index)
        num = qt.inw(io + VIRTIO_PCI_QUEUE_NUM)
        desc = qt.inl(io + VIRTIO_PCI_QUEUE_PFN) << VIRTIO_PCI_QUEUE_ADDR_SHIFT
        entry: dict[str, Any] = {"index": index, "num": num, "desc": desc, "last_avail_idx": 0}
        if spec.msix:
            entry["vector"] = qt.inw(io + drive_modern.VIRTIO_MSI_QUEUE_VECTOR)
        spec_q = next((q for q in spec.queues if q.index == index and (q.requests or q.writes)), None)
        if spec_q is not None and not desc:
            raise QemuError(f"queue {index}: no ring after writing status {spec.status:#x}, no requests made")
        if desc:
            avail, used, _ = vring_layout(desc, num)
            if spec_q is not None:
                avail_idx, used_idx = make_requests(qt, lambda i: qt.outw(io + VIRTIO_PCI_QUEUE_NOTIFY, i),
                                                    spec.kind, spec_q, desc, num, inflight)
            else:
                avail_idx, used_idx = qt.readw(avail + 2), qt.readw(used + 2)
            # The device popped every request made available (used, or in flight)
            entry.update(last_avail_idx=avail_idx, avail_idx=avail_idx, used_idx=used_idx)
        queues.append(entry)

    qt.outw(io + VIRTIO_PCI_QUEUE_SEL, spec.queue_sel)
    queue_sel = qt.inw(io + VIRTIO_PCI_QUEUE_SEL)
    return status, queue_sel, queues, count, guest_features, host_features, config_vector


def drive_devices(qt: QtestClient, specs: Sequence[DriveSpec]) -> list[dict[str, Any]]:
    """Drive several devices, in order; their I/O windows must not overlap."""
    ports = [spec.port for spec in specs]
    if len(set(ports)) != len(ports) or len({spec.slot for spec in specs}) != len(specs):
        raise QemuError("each driven device needs its own slot and I/O base")
    truths = [drive_device(qt, spec) for spec in specs]
    qt.sync()
    return truths
