"""virtio-blk (hw/block/virtio-blk.c, §5.2): features, queues, config size, the request list."""

from __future__ import annotations

import sys
from typing import Any

from harness.wire.virtio import VIRTQUEUE_MAX_SIZE
from models import features as F
from models.configuration import RealizeContext
from models.declarations import Device, offered
from models.props import UNSPECIFIED
from models.releases import Compat, Version
from models.state import BlkRequest, BlkState, Crashed, Undefined
from models.vmsd import Versions, Vmsd

VERSIONS = Versions(Vmsd("virtio-blk", 2, 2), None)  # save_device/load_device, no device vmsd
VIRTIO_BLK_CFG_SIZE = 36  # offsetof(struct virtio_blk_config, max_discard_sectors)
QUEUE_INDEX_SINCE = Version(2, 7)  # the request list names each request's queue (30d8bf6d17)


def num_queues(ctx: RealizeContext) -> int:
    n = ctx.props.get("num-queues", 1)
    if n == UNSPECIFIED:
        # 5.2: virtio-blk-pci takes one queue per vCPU (virtio_pci_optimal_num_queues); others take 1
        return min(ctx.config.smp, 1024) if ctx.config.transport == "pci" else 1
    return int(n)


def host_features(ctx: RealizeContext) -> int:
    out = 0
    if ctx.on("discard"):
        out |= F.bit(F.BLK_DISCARD)
    if ctx.on("write-zeroes"):
        out |= F.bit(F.BLK_WRITE_ZEROES)
    return out


def get_features(ctx: RealizeContext, features: int) -> int:
    features |= F.bits(F.BLK_SEG_MAX, F.BLK_GEOMETRY, F.BLK_TOPOLOGY, F.BLK_BLK_SIZE)
    if not F.has(features, F.VERSION_1):
        # legacy-only: SCSI passthrough offered, ANY_LAYOUT withdrawn (§10.2, 2.6 -> 2.7 row)
        features = (features & ~F.bit(F.ANY_LAYOUT)) | F.bit(F.BLK_SCSI)
    if ctx.on("config-wce", True):
        features |= F.bit(F.BLK_CONFIG_WCE)
    features |= F.bit(F.BLK_FLUSH)  # the block backend has a write cache (null-co, writeback)
    if num_queues(ctx) > 1:
        features |= F.bit(F.BLK_MQ)
    return features


def queue_sizes(ctx: RealizeContext) -> list[int]:
    return [int(ctx.props.get("queue-size", 128))] * num_queues(ctx)


def config_len(ctx: RealizeContext, host_features: int) -> int:
    # virtio_get_config_size over s->host_features: DISCARD ends at 48, WRITE_ZEROES at 57
    size = VIRTIO_BLK_CFG_SIZE
    if F.has(host_features, F.BLK_DISCARD):
        size = max(size, 48)
    if F.has(host_features, F.BLK_WRITE_ZEROES):
        size = max(size, 57)
    return size


def default_vectors(ctx: RealizeContext, nqueues: int) -> int:
    return nqueues + 1


def reset_state(realized: Any) -> BlkState:
    return BlkState()


def _element(r: BlkRequest) -> dict[str, Any]:
    # the arrays hold 1024 entries on the wire; the layout writes the unused ones as zeros
    out_num, in_num = r.counts or (len(r.out_sg), len(r.in_sg))
    return {
        "index": r.head, "out_num": out_num, "in_num": in_num, "padding": 0,
        "in_addr": [a for a, _ in r.in_sg], "out_addr": [a for a, _ in r.out_sg],
        "in_sg": [(0, n) for _, n in r.in_sg], "out_sg": [(0, n) for _, n in r.out_sg],
    }


def queue_index(realized: Any) -> bool:
    """Whether each request in the list names its queue: when the device has more than one (30d8bf6d17)."""
    return bool(realized.release >= QUEUE_INDEX_SINCE and realized.num_queues > 1)


def to_wire(dev: BlkState, realized: Any, s: Any) -> dict[str, Any]:
    with_index = queue_index(realized)
    return {"requests": [{"vq_index": r.queue if with_index else None, "elem": _element(r)} for r in dev.requests]}


def from_wire(value: Any) -> BlkState:
    reqs = []
    for r in value.requests:
        e = r.elem
        out_n, in_n = min(e.out_num, 1024), min(e.in_num, 1024)
        counts = None if (out_n, in_n) == (e.out_num, e.in_num) else (e.out_num, e.in_num)
        reqs.append(BlkRequest(r.vq_index or 0, e.index, tuple((e.out_addr[i], e.out_sg[i][1]) for i in range(out_n)),
                               tuple((e.in_addr[i], e.in_sg[i][1]) for i in range(in_n)), counts))
    return BlkState(tuple(reqs))


def load_device(dev: BlkState, realized: Any, features_lo: int, lines: list[str]) -> BlkState | None:
    for r in dev.requests:
        # virtio_blk_load_device checks the queue index before it reads the element
        if r.queue >= realized.num_queues:
            lines.append(f"Invalid virtqueue index in request list: {r.queue:#x}")
            return None
        out_num, in_num = r.counts or (len(r.out_sg), len(r.in_sg))
        if in_num > 1024 or out_num > 1024:
            # qemu_get_virtqueue_element asserts the counts fit its arrays (CVE-2013-4535/4536 class):
            # QEMU aborts instead of failing the load
            which = "in" if in_num > 1024 else "out"
            raise Crashed(f"qemu_get_virtqueue_element: Assertion `ARRAY_SIZE(data.{which}_addr) >= data.{which}_num' "
                          "failed.")
    return dev


# sizeof(VirtQueueElementOld) on an x86_64 host: index, out_num, in_num, padding, the four 1024-entry arrays
ELEMENT_SIZE = 16 + 2 * 8 * VIRTQUEUE_MAX_SIZE + 2 * 16 * VIRTQUEUE_MAX_SIZE


def element_cut(left: int) -> None:
    """A request element cut by the end of the file: qemu_get_virtqueue_element's VirtQueueElementOld on the stack
    does not get the bytes the stream still has (on the 7.2.22 binary a cut element asserts on in_num whatever
    its count bytes say, and the same element whole with counts 0 loads; another cut element rejected): its counts
    and addresses are whatever the stack held."""
    raise Undefined(f"qemu_get_virtqueue_element reads a request element cut by the end of the file ({max(left, 0)} "
                    f"of its {ELEMENT_SIZE} bytes there): its counts are uninitialized stack memory")


# hw/virtio/virtio-blk-pci.c: vectors default num-queues + 1 (num-queues follows -smp from 5.2)
DEVICE = Device("virtio-blk", VERSIONS, 2, sys.modules[__name__], pci_device_id=0x1001, pci_class=0x0100,
                transports=offered(Version(2, 0), "pci", "mmio", "ccw"),
                compat=(Compat(Version(2, 4), "virtio-blk-ccw", "max_revision", 0, Version(2, 5),
                               source="ccw_machine_2_4_class_options"),),
                drawn=(("num-queues", (1, 2, 4)), ("queue-size", (128, 256)), ("packed", (False, True))),
                qdev_id="vblk", backend=("-blockdev", "driver=null-co,node-name=bd_{id},size=1048576", "drive=bd_{id}"),
                order=20)
