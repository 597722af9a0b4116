"""Drive virtio-mmio devices of a paused aarch64 `virt` QEMU through their registers, over qtest.

The legacy (version 1) register layout of hw/virtio/virtio-mmio.c, as a legacy guest driver uses it:
features through the selector registers, GUEST_PAGE_SIZE, then per queue QUEUE_NUM, QUEUE_ALIGN and
QUEUE_PFN. virt gives the first -device the top transport (0x0a003e00) and each next one the slot
below. With force-legacy=off (version 2, DriveSpec.modern) a virtio 1.0 driver's steps instead: both
feature words, FEATURES_OK, the queues' sizes and ring addresses, QueueReady. The first status 0 may be
the guest's own (DriveSpec.reset_endian, guest.py): a big-endian aarch64 guest's reset makes the device
big-endian. As drive.py, the ground truth is what was written and read back, never a decoded stream.
virtio-ccw has no such path: its channel programs are started by CPU instructions a qtest client
cannot issue, so ccw devices are saved in their reset state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.errors import QemuError
from harness.qemu.drive import (
    MMIO_STRIDE,
    MMIO_TOP,
    VIRTIO_F_BAD_FEATURE,
    DriveSpec,
    make_requests,
    queue_count,
    read_u16,
    vring_layout,
)
from harness.qemu.guest import GuestCpu
from harness.qemu.qtest import QtestClient
from models.registry import BASE

MAGIC_VALUE = 0x000
VERSION = 0x004
DEVICE_ID = 0x008
HOST_FEATURES = 0x010
HOST_FEATURES_SEL = 0x014
GUEST_FEATURES = 0x020
GUEST_FEATURES_SEL = 0x024
GUEST_PAGE_SIZE = 0x028
QUEUE_SEL = 0x030
QUEUE_NUM_MAX = 0x034
QUEUE_NUM = 0x038
QUEUE_ALIGN = 0x03C
QUEUE_PFN = 0x040
QUEUE_NOTIFY = 0x050
STATUS = 0x070
# the virtio 1.0 layout (version 2) besides: the selectors above name device and driver features there
QUEUE_READY = 0x044
QUEUE_DESC_LOW = 0x080
QUEUE_AVAIL_LOW = 0x090
QUEUE_USED_LOW = 0x0A0
FEATURES_OK = 8
VIRTIO_F_VERSION_1 = 32
MMIO_MAGIC = 0x74726976  # "virt"
PAGE_SIZE = 4096
# virt's RAM starts at 1 GiB; rings go 1 MiB in.
RAM_BASE = 0x40000000
RING_BASE_PFN = (RAM_BASE + 0x100000) // PAGE_SIZE
VIRTIO_QUEUE_MAX = 1024


def base_of(slot: int) -> int:
    return MMIO_TOP - MMIO_STRIDE * slot


def drive_mmio_device(qt: QtestClient, spec: DriveSpec, guest: GuestCpu | None = None, reset: bool = True
                      ) -> dict[str, Any]:
    """Drive one legacy virtio-mmio device into `spec`'s state and return its ground truth, keyed as
    drive.drive_device's. With spec.reset_endian, the guest's vCPU 0 (`guest`) writes the first status 0 with that
    data endianness: the device takes it (aarch64 is bi-endian), and its rings are then in that byte order."""
    base = base_of(spec.slot)
    magic, version, device_id = (qt.readl(base + r) for r in (MAGIC_VALUE, VERSION, DEVICE_ID))
    want = BASE.device(spec.kind).virtio_id
    if magic != MMIO_MAGIC or device_id != want:
        raise QemuError(f"virtio-mmio at {base:#x}: magic {magic:#x}, device id {device_id}; expected "
                        f"{spec.kind} (id {want})")
    if version != (2 if spec.modern else 1):
        raise QemuError(f"virtio-mmio at {base:#x} is version {version}, the drive is for a "
                        f"{'modern (2' if spec.modern else 'legacy (1'}) one: force-legacy=off makes every "
                        "transport of the VM modern")
    big = spec.reset_endian == "big"
    if not reset:  # the guest CPU reset it already (drive_mmio_devices)
        pass
    elif spec.reset_endian is not None:
        if guest is None:
            raise QemuError(f"{spec.kind} at {base:#x}: a reset by the guest CPU needs QEMU started with its program "
                            "(backend.save does it for a spec with reset_endian)")
        qt.sync()
        guest.store32(base + STATUS, 0, big)
    else:
        qt.writel(base + STATUS, 0)
    for status in (1, 3):
        qt.writel(base + STATUS, status)
    if spec.modern:
        return _drive_modern(qt, spec, base)
    qt.writel(base + HOST_FEATURES_SEL, 0)
    host_features = qt.readl(base + HOST_FEATURES)
    qt.writel(base + GUEST_FEATURES_SEL, 0)
    qt.writel(base + GUEST_FEATURES, host_features & spec.guest_features & ~(1 << VIRTIO_F_BAD_FEATURE) & 0xFFFFFFFF)
    qt.writel(base + GUEST_PAGE_SIZE, PAGE_SIZE)
    count = queue_count(lambda i: qt.writel(base + QUEUE_SEL, i), lambda: qt.readl(base + QUEUE_NUM_MAX))
    nums = {}
    for q in spec.queues:
        if q.index >= count:
            raise QemuError(f"{spec.kind} at {base:#x} has {count} queues, no queue {q.index}")
        qt.writel(base + QUEUE_SEL, q.index)
        nums[q.index] = q.num or qt.readl(base + QUEUE_NUM_MAX)
        qt.writel(base + QUEUE_NUM, nums[q.index])
        qt.writel(base + QUEUE_ALIGN, PAGE_SIZE)
        qt.writel(base + QUEUE_PFN, q.pfn)
        if (pfn := qt.readl(base + QUEUE_PFN)) != q.pfn:
            raise QemuError(f"virtio-mmio at {base:#x} queue {q.index}: PFN reads {pfn:#x} after writing {q.pfn:#x}")
    qt.writel(base + STATUS, spec.status)
    queues = []
    inflight: list[dict[str, Any]] = []
    for q in spec.queues:
        desc = q.pfn * PAGE_SIZE
        avail, used, _ = vring_layout(desc, nums[q.index])
        if (q.requests or q.writes) and spec.status & 4:
            avail_idx, used_idx = make_requests(qt, lambda i: qt.writel(base + QUEUE_NOTIFY, i), spec.kind, q, desc,
                                                nums[q.index], inflight, big)
        else:
            avail_idx, used_idx = read_u16(qt, avail + 2, big), read_u16(qt, used + 2, big)
        queues.append({"index": q.index, "num": nums[q.index], "desc": desc, "last_avail_idx": avail_idx,
                       "avail_idx": avail_idx, "used_idx": used_idx})
    # the selectors last, to the values the save carries
    qt.writel(base + QUEUE_SEL, spec.queue_sel)
    qt.writel(base + HOST_FEATURES_SEL, spec.host_features_sel)
    qt.writel(base + GUEST_FEATURES_SEL, spec.guest_features_sel)
    return {"section": spec.section, "device": spec.kind, "transport": "mmio", "status": qt.readl(base + STATUS),
            "queue_sel": spec.queue_sel, "host_features_lo": host_features, "num_queues": count, "queues": queues,
            "device_endian": {None: None, "little": 1, "big": 2}[spec.reset_endian],
            "notes": f"driven over the legacy virtio-mmio registers at {base:#x}; status written as [0, 1, 3] then "
                     f"{spec.status}"
                     + (f" (the 0 by vCPU 0 with {spec.reset_endian}-endian data)" if spec.reset_endian else "")
                     + f"; guest_features written = host & {spec.guest_features:#x}",
            **({"inflight_requests": inflight} if spec.kind == "virtio-scsi" else {})}


def _drive_modern(qt: QtestClient, spec: DriveSpec, base: int) -> dict[str, Any]:
    """A virtio 1.0 driver on a version 2 transport (force-legacy=off): both feature words with VERSION_1,
    FEATURES_OK, per queue a size and the three ring addresses then QueueReady, then the final status. VERSION_1
    makes the rings little-endian whatever the device's endianness (virtio_access_is_big_endian)."""
    host = 0
    for sel in (0, 1):
        qt.writel(base + HOST_FEATURES_SEL, sel)
        host |= qt.readl(base + HOST_FEATURES) << 32 * sel
    features = host & (spec.guest_features | 1 << VIRTIO_F_VERSION_1) & ~(1 << VIRTIO_F_BAD_FEATURE)
    for sel in (0, 1):
        qt.writel(base + GUEST_FEATURES_SEL, sel)
        qt.writel(base + GUEST_FEATURES, features >> 32 * sel & 0xFFFFFFFF)
    queues = []
    if spec.status & FEATURES_OK:
        qt.writel(base + STATUS, 3 | FEATURES_OK)  # the device takes the features here (virtio_set_features)
    # counted after the features: virtio-net's MQ adds its queue pairs when it takes them
    count = queue_count(lambda i: qt.writel(base + QUEUE_SEL, i), lambda: qt.readl(base + QUEUE_NUM_MAX))
    if spec.status & FEATURES_OK:
        for q in spec.queues:
            if q.index >= count:
                raise QemuError(f"{spec.kind} at {base:#x} has {count} queues, no queue {q.index}")
            qt.writel(base + QUEUE_SEL, q.index)
            num = q.num or qt.readl(base + QUEUE_NUM_MAX)
            desc = q.pfn * PAGE_SIZE
            avail, used, _ = vring_layout(desc, num)
            qt.writel(base + QUEUE_NUM, num)
            for reg, addr in ((QUEUE_DESC_LOW, desc), (QUEUE_AVAIL_LOW, avail), (QUEUE_USED_LOW, used)):
                qt.writel(base + reg, addr & 0xFFFFFFFF)
                qt.writel(base + reg + 4, addr >> 32)
            qt.writel(base + QUEUE_READY, 1)
            queues.append((q, num, desc, avail, used))
    qt.writel(base + STATUS, spec.status)
    truths = []
    inflight: list[dict[str, Any]] = []
    for q, num, desc, avail, used in queues:
        if (q.requests or q.writes) and spec.status & 4:
            avail_idx, used_idx = make_requests(qt, lambda i: qt.writel(base + QUEUE_NOTIFY, i), spec.kind, q, desc,
                                                num, inflight)
        else:
            avail_idx, used_idx = read_u16(qt, avail + 2), read_u16(qt, used + 2)
        truths.append({"index": q.index, "num": num, "desc": desc, "last_avail_idx": avail_idx,
                       "avail_idx": avail_idx, "used_idx": used_idx})
    qt.writel(base + QUEUE_SEL, spec.queue_sel)
    qt.writel(base + HOST_FEATURES_SEL, spec.host_features_sel)
    qt.writel(base + GUEST_FEATURES_SEL, spec.guest_features_sel)
    return {"section": spec.section, "device": spec.kind, "transport": "mmio", "status": qt.readl(base + STATUS),
            "queue_sel": spec.queue_sel, "host_features_lo": host & 0xFFFFFFFF, "num_queues": count,
            "queues": truths, "device_endian": {None: None, "little": 1, "big": 2}[spec.reset_endian],
            "notes": f"driven over the virtio 1.0 virtio-mmio registers at {base:#x} (force-legacy=off); status "
                     f"[0, 1, 3, 0xb] then {spec.status}; guest_features written = {features:#x}",
            **({"inflight_requests": inflight} if spec.kind == "virtio-scsi" else {})}


def drive_mmio_devices(qt: QtestClient, specs: Sequence[DriveSpec], guest: GuestCpu | None = None
                       ) -> list[dict[str, Any]]:
    """Drive several virtio-mmio devices, in order."""
    if len({spec.slot for spec in specs}) != len(specs):
        raise QemuError("each driven device needs its own slot")
    # a virtio-scsi write parked by werror=stop stops the VM, and the guest CPU with it: it resets every device first
    for spec in specs:
        if spec.reset_endian is not None:
            if guest is None:
                raise QemuError(f"{spec.kind} at {base_of(spec.slot):#x}: a reset by the guest CPU needs QEMU started "
                                "with its program (backend.save does it for a spec with reset_endian)")
            qt.sync()
            guest.store32(base_of(spec.slot) + STATUS, 0, spec.reset_endian == "big")
    truths = [drive_mmio_device(qt, spec, guest, reset=spec.reset_endian is None) for spec in specs]
    qt.sync()
    return truths
