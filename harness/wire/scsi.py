"""A SCSI disk's section on a virtio-scsi bus ("scsi-disk" v1, hw/scsi/scsi-disk.c): the SCSIDevice struct
(hw/scsi/scsi-bus.c vmstate_scsi_device) with its request list, then the disk's own fields.

Each in-flight request (put_scsi_requests): an sbyte (1: to retry, 2: running; 0 ends the list), the 16-byte CDB
buffer, tag and lun; then what the bus's save_request writes (virtio-scsi: the request queue's index less the two
fixed queues, and the VirtQueueElement, virtio_scsi_save_request); then the request's own save_request: the DMA
commands' (READ/WRITE 6..16, WRITE AND VERIFY) sector, sector_count, buflen and, with a bounce buffer, its data
(scsi_disk_save_request); the emulated commands' nothing, or the same from 9.1 on machine types whose scsi-hd has
migrate-emulated-scsi-request (hw_compat_9_0 turns it off).
"""

from __future__ import annotations

import functools
from typing import Any

import construct as c
from construct import this

from harness.wire.primitives import Subsections, be32, be64, u8, vbool
from harness.wire.virtio import VirtQueueElement

SCSI_CMD_BUF_SIZE = 16
SCSI_SENSE_BUF_SIZE_OLD = 96
SCSI_SENSE_BUF_SIZE = 252
SECTOR = 512
# scsi_disk_reqops_dispatch's scsi_disk_dma_reqops: the commands whose requests carry their position
DMA_OPCODES = frozenset({0x08, 0x28, 0xA8, 0x88, 0x0A, 0x2A, 0xAA, 0x8A, 0x2E, 0xAE, 0x8E})
# scsi_cmd_xfer_mode: SCSI_XFER_TO_DEV (data from the guest); the rest transfer from the device
TO_DEV_OPCODES = frozenset({
    0x0A, 0x2A, 0x2E, 0xAA, 0xAE, 0x8A, 0x8E, 0x2F, 0xAF, 0x8F, 0x18, 0x3A, 0x39, 0x40, 0x4C, 0x15, 0x55, 0x1D,
    0x3B, 0x04, 0x07, 0x31, 0x30, 0x32, 0x3D, 0x3F, 0x41, 0x93, 0x42, 0xB1, 0xB0, 0xB2, 0x38, 0xB6, 0x5D, 0xBF,
    0x5F, 0xA4, 0x24, 0x1B,
})
ATA_PASSTHROUGH = frozenset({0xA1, 0x85})


def to_dev(cdb: bytes) -> bool:
    """Whether the request's cmd.mode is SCSI_XFER_TO_DEV."""
    return cmd_mode(cdb) == "to_dev"


UNIT_ATTENTION = 6
# scsi_req_new: the commands a pending unit attention does not take over (INQUIRY, REPORT_LUNS,
# GET_CONFIGURATION, GET_EVENT_STATUS_NOTIFICATION)
UA_EXEMPT = frozenset({0x12, 0xA0, 0x46, 0x4A})
REQUEST_SENSE = 0x03


def disk_ops(cmd: bytes, lun: int, dev: Any, dev_lun: int) -> bool:
    """Whether scsi_req_new gives a request the disk's own ops (whose save/load_request carry the disk's part),
    not the bus's: a pending unit attention (loaded just before the requests) takes every command but a few;
    another LUN, or REQUEST SENSE with sense data, goes to the target's."""
    op = cmd[0]
    if dev.unit_attention_key == UNIT_ATTENTION and op not in UA_EXEMPT and not (
            op == REQUEST_SENSE and dev.sense_is_ua):
        return False
    return not (lun != dev_lun or (op == REQUEST_SENSE and dev.sense_len))


# scsi_req_xfer: the commands that transfer nothing whatever their CDB says
NO_XFER = frozenset({0x00, 0x01, 0x1B, 0x0B, 0x10, 0x80, 0x11, 0x16, 0x17, 0x19, 0x1E, 0x2B, 0x35, 0x91, 0x92, 0x36,
                     0xBB, 0x33, 0x3F, 0x3D, 0x53, 0xA7, 0x34, 0x90, 0x82})
READS_WRITES = frozenset({0x08, 0x0A, 0x28, 0x2A, 0xA8, 0xAA, 0x88, 0x8A, 0x2E, 0xAE, 0x8E, 0x0F})


def cdb_xfer(cmd: bytes) -> int | None:
    """cmd.xfer as scsi_req_xfer derives it for a disk of 512-byte blocks (the commands a driver sends a disk;
    others by their group's length field); None: scsi_cdb_length refuses the group (invalid opcode)."""
    op, group = cmd[0], cmd[0] >> 5
    if group == 0:
        xfer = cmd[4]
    elif group in (1, 2):
        xfer = int.from_bytes(cmd[7:9], "big")
    elif group == 4:
        xfer = int.from_bytes(cmd[10:14], "big")
    elif group == 5:
        xfer = int.from_bytes(cmd[6:10], "big")
    else:
        return None
    if op in NO_XFER:
        return 0
    if op in (0x2F, 0xAF, 0x8F):  # VERIFY: BYTCHK decides
        return 0 if not cmd[1] & 2 else SECTOR if cmd[1] & 4 else xfer * SECTOR
    if op in (0x41, 0x93):  # WRITE SAME
        return 0 if cmd[1] & 1 else SECTOR
    if op == 0x25:  # READ CAPACITY(10)
        return 8
    if op in (0x12, 0x1C, 0x1D):  # INQUIRY, RECEIVE/SEND DIAGNOSTIC
        return cmd[4] | cmd[3] << 8
    if op in READS_WRITES:
        return (xfer or 256 if op in (0x08, 0x0A, 0x0F) else xfer) * SECTOR
    return xfer


def cmd_mode(cmd: bytes) -> str:
    """cmd.mode: "none" (nothing to transfer, or a CDB scsi_req_new cannot parse), "to_dev" or "from_dev"."""
    xfer = cdb_xfer(cmd)
    if not xfer:
        return "none"
    if cmd[0] in ATA_PASSTHROUGH:
        return "from_dev" if cmd[2] & 0x8 else "to_dev"
    return "to_dev" if cmd[0] in TO_DEV_OPCODES else "from_dev"


def _has_disk_data(ctx: Any) -> bool:
    """Whether the request's own ops have a save/load_request: the disk's DMA ops, or its emulated ones with
    migrate-emulated-scsi-request; a CDB scsi_req_new cannot parse, or with a transfer past INT32_MAX, gets the
    bus's invalid-opcode or invalid-field ops, which have none."""
    params = ctx._params
    xfer = cdb_xfer(ctx.cmd)
    if xfer is None or xfer > 0x7FFFFFFF:
        return False
    if params.get("destination", False) and not disk_ops(ctx.cmd, ctx.lun, ctx._._, params.get("dev_lun", 0)):
        return False
    return ctx.cmd[0] in DMA_OPCODES or bool(params.get("emulated_requests", False))


DiskRequest = c.Struct(  # scsi_disk_save_request
    "sector" / be64,
    "sector_count" / be32,
    "buflen" / be32,
    "to_dev" / c.Computed(lambda ctx: cmd_mode(ctx._.cmd) == "to_dev"),
    "data" / c.If(this.buflen > 0, c.IfThenElse(
        this.to_dev,
        # the bounce buffer as scsi_init_iovec sizes it on load
        c.Bytes(lambda ctx: min(ctx.sector_count * SECTOR, ctx.buflen)),
        c.If(lambda ctx: not ctx._.retry, c.Prefixed(be32, c.GreedyBytes)))),
)

ScsiRequest = c.Struct(
    "retry" / c.Computed(lambda ctx: ctx._.sbyte == 1),
    "cmd" / c.Bytes(SCSI_CMD_BUF_SIZE),
    "tag" / be32,
    "lun" / be32,
    "vq_index" / be32,  # virtio_scsi_save_request: queue index - VIRTIO_SCSI_VQ_NUM_FIXED
    # qemu_put_virtqueue_element writes ndescs before the element when the host offers RING_PACKED (4.2,
    # 86044b24e8), and qemu_get_virtqueue_element reads it after: parse with ndescs="before" for what the saving
    # side wrote, "after" for what a destination reads
    "ndescs" / c.If(lambda ctx: ctx._params.get("ndescs", "") == "before", be32),
    "elem" / VirtQueueElement,
    "ndescs_after" / c.If(lambda ctx: ctx._params.get("ndescs", "") == "after", be32),
    "disk" / c.If(_has_disk_data, DiskRequest),
)

ScsiRequests = c.RepeatUntil(
    lambda obj, lst, ctx: obj["sbyte"] <= 0,
    c.Struct("sbyte" / c.Int8sb, "request" / c.If(this.sbyte > 0, ScsiRequest)),
)

ScsiDevice = c.Struct(  # vmstate_scsi_device
    "unit_attention_key" / u8,
    "unit_attention_asc" / u8,
    "unit_attention_ascq" / u8,
    "sense_is_ua" / vbool,
    "sense" / c.Bytes(SCSI_SENSE_BUF_SIZE_OLD),
    "sense_len" / be32,
    "requests" / ScsiRequests,
    "subsections" / Subsections("SCSIDevice", {
        "SCSIDevice/sense": c.Struct("sense" / c.Bytes(SCSI_SENSE_BUF_SIZE - SCSI_SENSE_BUF_SIZE_OLD)),
    }),
)


@functools.cache
def scsi_disk_layout(whole: bool = True) -> Any:
    """The "scsi-disk" section body (scsi-hd and scsi-cd); parse with emulated_requests=True where the saving
    scsi-hd had migrate-emulated-scsi-request, ndescs="before" where its virtio-scsi offered RING_PACKED.
    `whole`: the body must end there (a destination's reading may stop short of it, or run past it)."""
    return c.Struct(
        "qdev" / ScsiDevice,
        "media_changed" / vbool,
        "media_event" / vbool,
        "eject_request" / vbool,
        "tray_open" / vbool,
        "tray_locked" / vbool,
        "subsections" / Subsections("scsi-disk", {
            "scsi-disk/pr": c.Struct("key" / be64, "resv_type" / u8),  # 11.1: persistent reservation
        }),
        *([c.Terminated] if whole else []),
    )


def parse_disk_body(body: bytes, emulated_requests: bool, packed: bool | None = None) -> tuple[Any, bool]:
    """The scsi-disk body and whether its requests carry ndescs: `packed` None tries without, then with (the
    saving virtio-scsi's host features are not in the stream; only one reading consumes the body exactly)."""
    tries = (False, True) if packed is None else (packed,)
    err: Exception | None = None
    for p in tries:
        try:
            return scsi_disk_layout().parse(body, emulated_requests=emulated_requests,
                                            ndescs="before" if p else ""), p
        except c.ConstructError as e:
            err = e
    assert err is not None
    raise err


def requests(body: Any) -> list[Any]:
    """The in-flight requests of a parsed scsi-disk body (the list's terminator left out)."""
    return [r.request for r in body.qdev.requests if r.sbyte > 0]


def is_disk_section(idstr: str) -> bool:
    """A SCSI disk's section: `<HBA path>/<channel>:<id>:<lun>/scsi-disk` (scsi-hd and scsi-cd)."""
    return idstr.endswith("/scsi-disk")


def device_lun(idstr: str) -> int:
    """The disk's LUN, from its section's `<channel>:<id>:<lun>`."""
    try:
        return int(idstr.rsplit("/", 2)[1].split(":")[2])
    except (IndexError, ValueError):
        return 0


def hba_prefix(idstr: str) -> str:
    """The path of the HBA a disk section sits on: its section is `<that>/virtio-scsi`."""
    return idstr.rsplit("/", 2)[0]


def read_as_destination(body: bytes, emulated_requests: bool, packed: bool, dev_lun: int = 0) -> tuple[Any, int]:
    """The body as a destination reads it (its own migrate-emulated-scsi-request and RING_PACKED: ndescs after
    each element; each request's ops as scsi_req_new picks them from what was loaded before it), and how many
    bytes that reading takes; raises ConstructError where it runs past the body."""
    layout = c.Struct("body" / scsi_disk_layout(False), "consumed" / c.Tell)
    v = layout.parse(body, emulated_requests=emulated_requests, ndescs="after" if packed else "", destination=True,
                     dev_lun=dev_lun)
    return v.body, v.consumed


def emulated_by_machine(machine: str | None) -> bool:
    """migrate-emulated-scsi-request as a machine type leaves scsi-hd: on from 9.1 (hw_compat_9_0 turns it off)."""
    tail = (machine or "").rsplit("-", 1)[-1].split(".")
    try:
        return (int(tail[0]), int(tail[1])) >= (9, 1)
    except (ValueError, IndexError):
        return False


def read_disk(body: bytes, machine: str | None) -> tuple[Any, bool, bool]:
    """A scsi-disk body of a stream decoded without a model: (parsed, emulated_requests, packed), by the machine
    type first, then otherwise (a downstream machine type name says nothing)."""
    first = emulated_by_machine(machine)
    err: Exception | None = None
    for emulated in (first, not first):
        try:
            value, packed = parse_disk_body(body, emulated)
            return value, emulated, packed
        except c.ConstructError as e:
            err = e
    assert err is not None
    raise err


def request_summary(r: Any) -> dict[str, Any]:
    """One in-flight request as `decode --json` shows it."""
    e = r.elem
    out_n, in_n = min(e.out_num, 1024), min(e.in_num, 1024)
    disk = r.disk
    return {"queue": r.vq_index, "retry": bool(r.retry), "cdb": bytes(r.cmd).hex(), "tag": r.tag, "lun": r.lun,
            "head": e.index, "out_num": e.out_num, "in_num": e.in_num, "out_addr": list(e.out_addr[:out_n]),
            "out_len": [sg[1] for sg in e.out_sg[:out_n]], "in_addr": list(e.in_addr[:in_n]),
            "in_len": [sg[1] for sg in e.in_sg[:in_n]], "ndescs": r.ndescs,
            "sector": disk.sector if disk is not None else None,
            "sector_count": disk.sector_count if disk is not None else None,
            "buflen": disk.buflen if disk is not None else None}
