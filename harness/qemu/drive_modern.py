"""Drive virtio-pci devices of a paused QEMU as firmware and a virtio 1.0 driver do, over qtest.

Firmware first: every BAR is sized (all-ones written, the mask read back) and given an address aligned to its
size, I/O from the device's I/O window, memory (the MSI-X BAR 1 and the modern BAR 4, 64-bit) from its memory
window, then the command register enables I/O, memory and bus mastering. A driver then enables MSI-X and writes
the table entries of the vectors it uses, and either talks to the legacy I/O BAR (drive.py, with the MSI-X
vector registers at 20 and 22) or to the modern common configuration found through the virtio vendor
capabilities: both feature windows, FEATURES_OK, per queue a size (smaller than the device's: the guest resizes
the ring, virtio/ringsize), the ring addresses, a vector and queue_enable, then DRIVER_OK. The ground truth is
what was written and read back through registers, never a decoded stream.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from harness.errors import QemuError
from harness.qemu.qtest import QtestClient


class PciConfig(Protocol):
    """Configuration space access (drive.PciConfig)."""

    def readb(self, reg: int) -> int: ...
    def readw(self, reg: int) -> int: ...
    def readl(self, reg: int) -> int: ...
    def writew(self, reg: int, value: int) -> None: ...
    def writel(self, reg: int, value: int) -> None: ...
    def find_capability(self, cap_id: int) -> int | None: ...


# blk_requests(qt, notify, index, desc, num, count) -> (avail idx, used idx); vring_layout(desc, num) -> (avail,
# used, end): drive.py's, passed in (drive.py imports this module)
Requests = Callable[[QtestClient, Callable[[int], None], int, int, int, int], tuple[int, int]]
Layout = Callable[[int, int], tuple[int, int, int]]

PCI_COMMAND_IO, PCI_COMMAND_MEMORY, PCI_COMMAND_MASTER = 0x1, 0x2, 0x4
PCI_BASE_ADDRESS_0 = 0x10
PCI_BASE_ADDRESS_SPACE_IO = 0x1
PCI_BASE_ADDRESS_MEM_TYPE_64 = 0x4
PCI_CAP_ID_VNDR = 0x09
PCI_CAP_ID_MSIX = 0x11
PCI_MSIX_FLAGS = 2
PCI_MSIX_TABLE = 4
PCI_MSIX_FLAGS_ENABLE = 0x8000
PCI_MSIX_ENTRY_SIZE = 16
MSI_ADDRESS = 0xFEE00000  # the local APIC's MSI window: what an x86 guest writes into each entry
VIRTIO_NO_VECTOR = 0xFFFF
# Legacy I/O registers that exist while MSI-X is enabled (VIRTIO_PCI_CONFIG_OFF(true) = 24)
VIRTIO_MSI_CONFIG_VECTOR = 20
VIRTIO_MSI_QUEUE_VECTOR = 22

# struct virtio_pci_cap: cfg_type at +3, bar at +4, offset at +8, length at +12; the notify cap adds the multiplier
VIRTIO_PCI_CAP_COMMON_CFG, VIRTIO_PCI_CAP_NOTIFY_CFG = 1, 2
# struct virtio_pci_common_cfg
COMMON_DFSELECT, COMMON_DF, COMMON_GFSELECT, COMMON_GF = 0x00, 0x04, 0x08, 0x0C
COMMON_MSIX, COMMON_NUMQ, COMMON_STATUS = 0x10, 0x12, 0x14
COMMON_Q_SELECT, COMMON_Q_SIZE, COMMON_Q_MSIX, COMMON_Q_ENABLE, COMMON_Q_NOFF = 0x16, 0x18, 0x1A, 0x1C, 0x1E
COMMON_Q_DESCLO, COMMON_Q_DESCHI, COMMON_Q_AVAILLO, COMMON_Q_AVAILHI = 0x20, 0x24, 0x28, 0x2C
COMMON_Q_USEDLO, COMMON_Q_USEDHI = 0x30, 0x34
VIRTIO_CONFIG_S_FEATURES_OK = 8
VIRTIO_F_VERSION_1 = 32
VIRTIO_F_RING_PACKED = 34

# Each slot gets its own windows, so that the devices of one VM never overlap: I/O as drive.py's legacy default,
# memory above q35's MMCONFIG (0xb0000000, 256 MiB) and below the pc and q35 4 GiB hole's chipset devices. 16 MiB
# a slot: with page-per-vq (hw_compat_2_7: the machine types up to 2.7) the modern BAR takes 8 MiB.
MEM_WINDOW_BASE = 0xC0000000
MEM_WINDOW = 0x1000000


@dataclass(frozen=True)
class Bar:
    index: int
    address: int
    size: int
    io: bool
    is64: bool


def io_window(slot: int) -> int:
    return 0xC000 + 0x100 * slot


def program_bars(cfg: PciConfig, slot: int) -> dict[int, Bar]:
    """What firmware does: size each BAR, give it an address aligned to its size in the slot's window, read it
    back; then enable I/O, memory and bus mastering. The BARs that exist, by index."""
    bars: dict[int, Bar] = {}
    io_next, mem_next = io_window(slot), MEM_WINDOW_BASE + MEM_WINDOW * slot
    index = 0
    while index < 6:
        reg = PCI_BASE_ADDRESS_0 + 4 * index
        old = cfg.readl(reg)
        cfg.writel(reg, 0xFFFFFFFF)
        mask = cfg.readl(reg)
        cfg.writel(reg, old)
        io = bool(old & PCI_BASE_ADDRESS_SPACE_IO)
        is64 = not io and bool(old & PCI_BASE_ADDRESS_MEM_TYPE_64)
        if is64:
            cfg.writel(reg + 4, 0xFFFFFFFF)
            high = cfg.readl(reg + 4)
            cfg.writel(reg + 4, 0)
            full = (high << 32 | (mask & ~0xF)) & ((1 << 64) - 1)
            size = (~full + 1) & ((1 << 64) - 1) if full else 0
        else:
            low = mask & (~0x3 if io else ~0xF) & 0xFFFFFFFF
            size = ((~low + 1) & (0xFFFF if io else 0xFFFFFFFF)) if low else 0
        if size:
            if io:
                addr = (io_next + size - 1) & ~(size - 1)
                io_next = addr + size
            else:
                addr = (mem_next + size - 1) & ~(size - 1)
                mem_next = addr + size
            if addr + size > (io_window(slot) + 0x100 if io else MEM_WINDOW_BASE + MEM_WINDOW * (slot + 1)):
                raise QemuError(f"slot {slot:#x}: BAR{index} of {size:#x} bytes does not fit the slot's window")
            cfg.writel(reg, addr)
            if is64:
                cfg.writel(reg + 4, 0)
            got = cfg.readl(reg) & (~0x3 if io else ~0xF) & 0xFFFFFFFF
            if got != addr:
                raise QemuError(f"slot {slot:#x}: BAR{index} reads {got:#x} after writing {addr:#x}")
            bars[index] = Bar(index, addr, size, io, is64)
        index += 2 if is64 else 1
    cfg.writew(0x04, PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER)
    return bars


def enable_msix(qt: QtestClient, cfg: PciConfig, bars: dict[int, Bar], vectors: set[int]) -> int:
    """Enable MSI-X and write the table entry of each vector in `vectors` (address, data = the vector, unmasked).
    Returns the table size."""
    cap = cfg.find_capability(PCI_CAP_ID_MSIX)
    if cap is None:
        raise QemuError("MSI-X asked for, but the device has no MSI-X capability")
    flags = cfg.readw(cap + PCI_MSIX_FLAGS)
    size = (flags & 0x7FF) + 1
    cfg.writew(cap + PCI_MSIX_FLAGS, flags | PCI_MSIX_FLAGS_ENABLE)
    table = cfg.readl(cap + PCI_MSIX_TABLE)
    bar = bars.get(table & 7)
    if bar is None:
        raise QemuError(f"the MSI-X table is in BAR{table & 7}, which firmware did not map")
    base = bar.address + (table & ~7)
    for v in sorted(vectors):
        if v < size:
            qt.memwrite(base + v * PCI_MSIX_ENTRY_SIZE, struct.pack("<IIII", MSI_ADDRESS, 0, 0x20 + v, 0))
    return size


def virtio_caps(cfg: PciConfig) -> dict[int, tuple[int, int, int, int]]:
    """The virtio vendor capabilities by cfg_type: (bar, offset, length, notify_off_multiplier)."""
    out: dict[int, tuple[int, int, int, int]] = {}
    pos = cfg.readb(0x34) & 0xFC
    for _ in range(48):
        if pos < 0x40:
            break
        if cfg.readb(pos) == PCI_CAP_ID_VNDR:
            kind = cfg.readb(pos + 3)
            mult = cfg.readl(pos + 16) if kind == VIRTIO_PCI_CAP_NOTIFY_CFG else 0
            out.setdefault(kind, (cfg.readb(pos + 4), cfg.readl(pos + 8), cfg.readl(pos + 12), mult))
        pos = cfg.readb(pos + 1) & 0xFC
    return out


def drive_modern(qt: QtestClient, cfg: PciConfig, bars: dict[int, Bar], spec: Any, blk_requests: Requests,
                 vring_layout: Layout) -> dict[str, Any]:
    """The modern driver's steps on the common configuration for `spec` (a drive.DriveSpec); the truth keyed as
    drive.py's."""
    caps = virtio_caps(cfg)
    if VIRTIO_PCI_CAP_COMMON_CFG not in caps or VIRTIO_PCI_CAP_NOTIFY_CFG not in caps:
        raise QemuError(f"{spec.kind} at slot {spec.slot:#x} has no modern interface (disable-modern?)")
    bar, off, _, _ = caps[VIRTIO_PCI_CAP_COMMON_CFG]
    common = bars[bar].address + off
    nbar, noff, _, mult = caps[VIRTIO_PCI_CAP_NOTIFY_CFG]
    notify_base = bars[nbar].address + noff

    def status(value: int) -> int:
        qt.writeb(common + COMMON_STATUS, value)
        return qt.readb(common + COMMON_STATUS)

    status(0)
    status(1)
    status(3)
    host = 0
    for sel in range(2):
        qt.writel(common + COMMON_DFSELECT, sel)
        host |= qt.readl(common + COMMON_DF) << (32 * sel)
    written = host & spec.guest_features & ~(1 << 30) | (host & 1 << VIRTIO_F_VERSION_1)
    for sel in range(2):
        qt.writel(common + COMMON_GFSELECT, sel)
        qt.writel(common + COMMON_GF, written >> (32 * sel) & 0xFFFFFFFF)
    guest = 0
    for sel in range(2):
        qt.writel(common + COMMON_GFSELECT, sel)
        guest |= qt.readl(common + COMMON_GF) << (32 * sel)
    if spec.status & VIRTIO_CONFIG_S_FEATURES_OK or spec.status & 4:
        status(0xB)  # FEATURES_OK before any queue is set up, as the spec asks
    if spec.msix:
        qt.writew(common + COMMON_MSIX, spec.config_vector)
    count = qt.readw(common + COMMON_NUMQ)
    packed = bool(guest >> VIRTIO_F_RING_PACKED & 1)
    for q in spec.queues:
        if q.index >= count:
            raise QemuError(f"{spec.kind} at slot {spec.slot:#x} has {count} queues, no queue {q.index}")
        qt.writew(common + COMMON_Q_SELECT, q.index)
        if q.num:
            qt.writew(common + COMMON_Q_SIZE, q.num)
        num = qt.readw(common + COMMON_Q_SIZE)
        desc = q.pfn << 12
        avail, used, _ = vring_layout(desc, num)
        if packed:  # the packed ring: descriptors, then the driver and device event suppression areas
            avail = desc + 16 * num
            used = (avail + 4 + 3) & ~3
        for reg, value in ((COMMON_Q_DESCLO, desc), (COMMON_Q_AVAILLO, avail), (COMMON_Q_USEDLO, used)):
            qt.writel(common + reg, value & 0xFFFFFFFF)
            qt.writel(common + reg + 4, value >> 32)
        if spec.msix:
            qt.writew(common + COMMON_Q_MSIX, q.vector)
        qt.writew(common + COMMON_Q_ENABLE, 1)
    final = status(spec.status)

    queues: list[dict[str, Any]] = []
    for index in range(count):
        qt.writew(common + COMMON_Q_SELECT, index)
        num = qt.readw(common + COMMON_Q_SIZE)
        enabled = qt.readw(common + COMMON_Q_ENABLE)
        desc = qt.readl(common + COMMON_Q_DESCLO) | qt.readl(common + COMMON_Q_DESCHI) << 32
        entry: dict[str, Any] = {"index": index, "num": num, "desc": desc if enabled else 0, "last_avail_idx": 0,
                                 "vector": qt.readw(common + COMMON_Q_MSIX)}
        spec_q = next((q for q in spec.queues if q.index == index), None)
        if enabled and not packed:
            avail, used, _ = vring_layout(desc, num)
            if spec_q is not None and (spec_q.requests or spec_q.writes):
                doorbell = notify_base + qt.readw(common + COMMON_Q_NOFF) * mult
                avail_idx, used_idx = blk_requests(
                    qt, lambda i: qt.writew(doorbell, i), index, desc, num, spec_q.requests)  # noqa: B023
            else:
                avail_idx, used_idx = qt.readw(avail + 2), qt.readw(used + 2)
            entry.update(last_avail_idx=avail_idx, avail_idx=avail_idx, used_idx=used_idx)  # popped: used or in flight
        queues.append(entry)
    qt.writew(common + COMMON_Q_SELECT, spec.queue_sel)
    queue_sel = qt.readw(common + COMMON_Q_SELECT)
    return {"status": final, "queue_sel": queue_sel, "guest_features": guest, "guest_features_lo": guest & 0xFFFFFFFF,
            "host_features": host, "host_features_lo": host & 0xFFFFFFFF, "num_queues": count, "queues": queues,
            "config_vector": qt.readw(common + COMMON_MSIX), "packed": packed,
            "device_config": caps.get(4), "common": common}
