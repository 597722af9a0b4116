"""virtio-scsi (hw/scsi/virtio-scsi.c, hw/virtio/virtio-scsi-pci.c, §5.6): control, event and num_queues request
queues, a 36-byte config, no device data in its own section. Its in-flight requests travel in each SCSI device's
section (scsi-hd's "scsi-disk" vmsd, hw/scsi/scsi-bus.c put_scsi_requests), through the bus's save_request hook:
that section's model is the second half of this module."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import construct as c

from harness.wire import scsi as wire_scsi
from models import features as F
from models.configuration import RealizeContext
from models.declarations import Device, offered
from models.props import UNSPECIFIED, Prop
from models.releases import Compat, MachineType, Version
from models.state import Crashed, Undefined
from models.vmsd import Versions, Vmsd

VERSIONS = Versions(Vmsd("virtio-scsi", 1, 1), None)  # VMSTATE_VIRTIO_DEVICE only: no device data at all
VIRTIO_SCSI_VQ_NUM_FIXED = 2  # control and event queues, before the request queues
VIRTIO_QUEUE_MAX = 1024
CONFIG_SIZE = 36  # sizeof(VirtIOSCSIConfig): virtio_init(vdev, VIRTIO_ID_SCSI, sizeof(VirtIOSCSIConfig))
VQ_SIZE_BEFORE_PROPERTY = 128  # VIRTIO_SCSI_VQ_SIZE, before the virtqueue_size property (2.11)


def num_queues(ctx: RealizeContext) -> int:
    """The request queues: num_queues, whose "auto" default virtio-scsi-pci resolves to one per vCPU (5.2,
    virtio_pci_optimal_num_queues) and virtio_scsi_common_realize to 1 elsewhere."""
    n = ctx.props.get("num_queues", 1)
    if n == UNSPECIFIED:
        if ctx.config.transport == "pci":
            return min(ctx.config.smp, VIRTIO_QUEUE_MAX - VIRTIO_SCSI_VQ_NUM_FIXED)
        return 1
    return int(n)


def host_features(ctx: RealizeContext) -> int:
    # HOTPLUG and CHANGE by their properties; INOUT and T10_PI are never offered (no property sets them)
    out = 0
    if ctx.on("hotplug", True):
        out |= F.bit(F.SCSI_HOTPLUG)
    if ctx.on("param_change", True):
        out |= F.bit(F.SCSI_CHANGE)
    return out


def get_features(ctx: RealizeContext, features: int) -> int:
    return features  # virtio_scsi_get_features: requested | s->host_features, which host_features() gave


def queue_sizes(ctx: RealizeContext) -> list[int]:
    size = int(ctx.props.get("virtqueue_size", VQ_SIZE_BEFORE_PROPERTY))
    return [size] * (VIRTIO_SCSI_VQ_NUM_FIXED + num_queues(ctx))


def config_len(ctx: RealizeContext, host_features: int) -> int:
    return CONFIG_SIZE


def default_vectors(ctx: RealizeContext, nqueues: int) -> int:
    # virtio_scsi_pci_realize: num_queues + VIRTIO_SCSI_VQ_NUM_FIXED + 1 (one for the config)
    return nqueues + 1


def reset_state(realized: Any) -> None:
    return None


def to_wire(dev: Any, realized: Any, s: Any) -> dict[str, Any]:
    return {}


def from_wire(value: Any) -> None:
    return None


def load_device(dev: Any, realized: Any, features_lo: int, lines: list[str]) -> Any:
    return None


# --- the SCSI disk's section: in-flight requests (hw/scsi/scsi-bus.c, hw/scsi/scsi-disk.c) -------------------

CMD_REQ_SIZE = 19 + 32  # sizeof(VirtIOSCSICmdReq) + VIRTIO_SCSI_CDB_DEFAULT_SIZE: the destination's cdb_size
CMD_RESP_SIZE = 12 + 96  # sizeof(VirtIOSCSICmdResp) + VIRTIO_SCSI_SENSE_DEFAULT_SIZE (neither is migrated)
EMULATED_REQUESTS_SINCE = Version(9, 1)  # scsi-hd migrate-emulated-scsi-request (hw_compat_9_0 turns it off)
INVALID_REQUEST = "invalid SCSI request migration data"  # virtio_scsi_load_request, then exit(1)


@dataclass(frozen=True)
class ScsiRequest:
    """One in-flight request as put_scsi_requests writes it: the SCSI part, virtio-scsi's (request queue, the
    element) and the disk's (sector, sector_count, buflen, data; None: the request's ops save nothing)."""

    queue: int  # the request queue: virtqueue index - VIRTIO_SCSI_VQ_NUM_FIXED
    head: int
    out_sg: tuple[tuple[int, int], ...]  # (guest address, length), device-readable
    in_sg: tuple[tuple[int, int], ...]  # device-writable
    cmd: bytes  # the 16-byte CDB buffer
    tag: int
    lun: int
    retry: bool = True  # sbyte 1 (to retry, as werror=stop leaves it), else 2
    sector: int | None = 0
    sector_count: int = 0
    buflen: int = 0
    data: bytes | None = None  # the bounce buffer's bytes, when buflen and the direction say so
    counts: tuple[int, int] | None = None  # (out_num, in_num) as sent, when they differ from the lists
    ndescs: int | None = None  # written before the element when the saving host offers RING_PACKED


@dataclass(frozen=True)
class ScsiDiskState:
    """The "scsi-disk" section: the SCSIDevice's sense and unit attention, its requests, the disk's own fields."""

    requests: tuple[ScsiRequest, ...] = ()
    unit_attention: tuple[int, int, int] = (0, 0, 0)  # key, asc, ascq
    sense_is_ua: bool = False
    sense: bytes = bytes(wire_scsi.SCSI_SENSE_BUF_SIZE_OLD)  # up to SCSI_SENSE_BUF_SIZE (252) bytes
    sense_len: int = 0
    media: tuple[bool, bool, bool, bool, bool] = (False,) * 5  # media_changed, media_event, eject_request, tray_*
    pr: tuple[int, int] | None = None  # scsi-disk/pr (11.1): reservation key and type


def emulated_requests(release: Version, machine: MachineType) -> bool:
    """Whether scsi-hd's migrate-emulated-scsi-request is on: the emulated commands' requests then carry the
    disk's part too."""
    return release >= EMULATED_REQUESTS_SINCE and machine.version >= EMULATED_REQUESTS_SINCE


def disk_to_wire(d: ScsiDiskState) -> dict[str, Any]:
    reqs: list[dict[str, Any]] = []
    for r in d.requests:
        out_num, in_num = r.counts or (len(r.out_sg), len(r.in_sg))
        elem = {"index": r.head, "out_num": out_num, "in_num": in_num, "padding": 0,
                "in_addr": [a for a, _ in r.in_sg], "out_addr": [a for a, _ in r.out_sg],
                "in_sg": [(0, n) for _, n in r.in_sg], "out_sg": [(0, n) for _, n in r.out_sg]}
        disk = None if r.sector is None else {"sector": r.sector, "sector_count": r.sector_count,
                                              "buflen": r.buflen, "data": r.data}
        reqs.append({"sbyte": 1 if r.retry else 2, "request": {
            "cmd": r.cmd, "tag": r.tag, "lun": r.lun, "vq_index": r.queue, "ndescs": r.ndescs, "elem": elem,
            "ndescs_after": None, "disk": disk}})
    reqs.append({"sbyte": 0, "request": None})
    old_size, size = wire_scsi.SCSI_SENSE_BUF_SIZE_OLD, wire_scsi.SCSI_SENSE_BUF_SIZE
    # scsi_sense_state_needed: the rest of the sense buffer only when sense_len is past the old size
    subs = [] if d.sense_len <= old_size else [
        {"name": "SCSIDevice/sense", "version_id": 1,
         "body": {"sense": d.sense[old_size:].ljust(size - old_size, b"\0")}}]
    key, asc, ascq = d.unit_attention
    old = d.sense[:old_size].ljust(old_size, b"\0")
    return {"qdev": {"unit_attention_key": key, "unit_attention_asc": asc, "unit_attention_ascq": ascq,
                     "sense_is_ua": d.sense_is_ua, "sense": old,
                     "sense_len": d.sense_len, "requests": reqs, "subsections": subs},
            **dict(zip(("media_changed", "media_event", "eject_request", "tray_open", "tray_locked"), d.media,
                       strict=True)),
            "subsections": [] if d.pr is None else [{"name": "scsi-disk/pr", "version_id": 1,
                                                     "body": {"key": d.pr[0], "resv_type": d.pr[1]}}]}


def save_disk(d: ScsiDiskState, emulated: bool, packed: bool = False) -> bytes:
    """The scsi-disk section body QEMU writes for `d` (`packed`: the virtio-scsi offers RING_PACKED)."""
    if packed:
        d = replace(d, requests=tuple(r if r.ndescs is not None else replace(r, ndescs=0) for r in d.requests))
    else:
        d = replace(d, requests=tuple(replace(r, ndescs=None) for r in d.requests))
    out: bytes = wire_scsi.scsi_disk_layout().build(disk_to_wire(d), emulated_requests=emulated,
                                                    ndescs="before" if packed else "")
    return out


def disk_from_wire(v: Any) -> ScsiDiskState:
    reqs = []
    for r in wire_scsi.requests(v):
        e = r.elem
        out_n, in_n = min(e.out_num, 1024), min(e.in_num, 1024)
        counts = None if (out_n, in_n) == (e.out_num, e.in_num) else (e.out_num, e.in_num)
        disk = r.disk
        reqs.append(ScsiRequest(
            r.vq_index, e.index, tuple((e.out_addr[i], e.out_sg[i][1]) for i in range(out_n)),
            tuple((e.in_addr[i], e.in_sg[i][1]) for i in range(in_n)), bytes(r.cmd), r.tag, r.lun, bool(r.retry),
            None if disk is None else disk.sector, 0 if disk is None else disk.sector_count,
            0 if disk is None else disk.buflen, None if disk is None or disk.data is None else bytes(disk.data),
            counts, r.ndescs))
    q = v.qdev
    sense = bytes(q.sense) + b"".join(bytes(s.body.sense) for s in q.subsections if s.name == "SCSIDevice/sense")
    pr = next(((s.body.key, s.body.resv_type) for s in v.subsections if s.name == "scsi-disk/pr"), None)
    return ScsiDiskState(tuple(reqs), (q.unit_attention_key, q.unit_attention_asc, q.unit_attention_ascq),
                         bool(q.sense_is_ua), sense, q.sense_len,
                         (bool(v.media_changed), bool(v.media_event), bool(v.eject_request), bool(v.tray_open),
                          bool(v.tray_locked)), pr)


def parse_disk(body: bytes, emulated: bool, packed: bool | None = None) -> ScsiDiskState:
    """A scsi-disk body as the saving side wrote it (`packed` None: whichever reading fits the body)."""
    return disk_from_wire(wire_scsi.parse_disk_body(body, emulated, packed)[0])


def _parse_req_fails(r: ScsiRequest, any_layout: bool) -> bool:
    """virtio_scsi_parse_req at the destination's default cdb and sense sizes: the request header and the
    response must fit the element, and the data go one way only."""
    out_total, in_total = sum(n for _, n in r.out_sg), sum(n for _, n in r.in_sg)
    if out_total < CMD_REQ_SIZE or in_total < CMD_RESP_SIZE:
        return True
    req_size, resp_size = CMD_REQ_SIZE, CMD_RESP_SIZE
    if not any_layout:  # old BIOSes' padding: the first buffer is the header whatever its size
        req_size, resp_size = r.out_sg[0][1], r.in_sg[0][1]
    return out_total > req_size and in_total > resp_size


def request_mode(r: ScsiRequest, any_layout: bool) -> str:
    """The element's direction as virtio_scsi_parse_req sets req->mode."""
    req_size, resp_size = CMD_REQ_SIZE, CMD_RESP_SIZE
    if not any_layout:
        req_size, resp_size = (r.out_sg[0][1] if r.out_sg else 0), (r.in_sg[0][1] if r.in_sg else 0)
    if sum(n for _, n in r.out_sg) > req_size:
        return "to_dev"
    if sum(n for _, n in r.in_sg) > resp_size:
        return "from_dev"
    return "none"


def load_body(body: bytes, hba: Any, emulated: bool, idstr: str,
              map_element: Callable[[ScsiRequest], None] | None = None) -> tuple[ScsiDiskState, list[str]]:
    """The scsi-disk section `idstr` loaded by the destination whose virtio-scsi is `hba` (Realized), reading it
    its own way: with RING_PACKED offered, ndescs after each element (a source that also offered it wrote ndescs
    first: every element field then comes 4 bytes early, 86044b24e8). Returns what it loaded and the lines QEMU
    prints when it gives up (load_disk), then `Missing section footer` where its reading stops short of the
    section; raises Undefined where the reading runs past it (into the next section's bytes)."""
    packed = F.has(hba.host_features, F.RING_PACKED)
    try:
        value, consumed = wire_scsi.read_as_destination(body, emulated, packed, wire_scsi.device_lun(idstr))
    except c.ConstructError:
        raise Undefined(f"{idstr}: the destination's reading of the in-flight requests runs past the section "
                        f"({len(body)} bytes): what follows is the next section's bytes") from None
    d = disk_from_wire(value)
    lines = load_disk(d, hba, map_element)
    if not lines and consumed != len(body):
        lines = [f"Missing section footer for {idstr}"]
    return d, lines


def load_disk(d: ScsiDiskState, hba: Any, map_element: Callable[[ScsiRequest], None] | None = None) -> list[str]:
    """get_scsi_requests's checks on the requests as the destination whose virtio-scsi is `hba` (Realized) read
    them: the lines QEMU prints when it gives up (rejected: it exits); raises Crashed where it asserts.
    `map_element`: virtqueue_map over the stream's RAM (models/rings.py map_requests: raises Rejected with the
    line QEMU exits with); None: every element maps."""
    nq = hba.num_queues - VIRTIO_SCSI_VQ_NUM_FIXED
    any_layout = F.has(hba.host_features, F.ANY_LAYOUT)
    for r in d.requests:
        if r.queue >= nq:  # 3c3ce98142 (CVE-2013-4542) made the queue index an assertion
            raise Crashed("virtio_scsi_load_request: Assertion `n < vs->conf.num_queues' failed.")
        out_num, in_num = r.counts or (len(r.out_sg), len(r.in_sg))
        if in_num > 1024 or out_num > 1024:
            which = "in" if in_num > 1024 else "out"
            raise Crashed(f"qemu_get_virtqueue_element: Assertion `ARRAY_SIZE(data.{which}_addr) >= "
                          f"data.{which}_num' failed.")
        if map_element is not None:
            map_element(r)
        if _parse_req_fails(r, any_layout):
            return [INVALID_REQUEST]
        mode = wire_scsi.cmd_mode(r.cmd)
        if mode != "none" and mode != request_mode(r, any_layout):
            raise Crashed("virtio_scsi_load_request: Assertion `req->sreq->cmd.mode == req->mode' failed.")
        if r.sector is not None and r.buflen and mode != "to_dev" and not r.retry and r.data is not None \
                and len(r.data) > r.buflen:
            raise Crashed("scsi_disk_load_request: Assertion `r->iov.iov_len <= r->buflen' failed.")
    return []


# --- the declaration ------------------------------------------------------------------------------------------

V = Version.parse
PROPS = (
    # not in hw_compat_2_3's any_layout list: it offered the bit before 2.4 (UNVERIFIED below 5.2)
    Prop("virtio-scsi-device", "any_layout", True),
    Prop("virtio-scsi-device", "num_queues", 1, V("2.0"), V("5.2")),
    Prop("virtio-scsi-device", "num_queues", UNSPECIFIED, V("5.2"), source="hw_compat_5_1: one per vCPU on pci"),
    # virtqueue_size came in 2.11 (UNVERIFIED: 128 fixed before it)
    Prop("virtio-scsi-device", "virtqueue_size", 128, V("2.11"), V("5.0")),
    Prop("virtio-scsi-device", "virtqueue_size", 256, V("5.0"), source="hw_compat_4_2"),
    Prop("virtio-scsi-device", "seg_max_adjust", True, V("5.0"), source="hw_compat_4_2"),
    Prop("virtio-scsi-device", "max_sectors", 0xFFFF),
    Prop("virtio-scsi-device", "cmd_per_lun", 128),
    Prop("virtio-scsi-device", "hotplug", True),
    Prop("virtio-scsi-device", "param_change", True),
    Prop("virtio-scsi-pci", "vectors", UNSPECIFIED, source="virtio_scsi_pci_realize: num_queues + 3"),
)
COMPAT = (
    Compat(V("2.4"), "virtio-scsi-ccw", "max_revision", 0, V("2.5"), source="ccw_machine_2_4_class_options"),
    Compat(V("4.2"), "virtio-scsi-device", "virtqueue_size", 128, V("5.0"), source="hw_compat_4_2"),
    Compat(V("4.2"), "virtio-scsi-device", "seg_max_adjust", False, V("5.0"), source="hw_compat_4_2"),
    Compat(V("5.1"), "virtio-scsi-device", "num_queues", 1, V("5.2"), source="hw_compat_5_1"),
)
# the real backend's disk: a scsi-hd on a blkdebug over null-co whose writes fail with werror=stop, so that a
# driver's WRITE(10)s stay in flight (harness/qemu/drive_scsi.py)
DISK = (("-blockdev", "driver=blkdebug,node-name=bd_{id},inject-error.0.event=pwritev,inject-error.0.iotype=write,"
                      "inject-error.0.errno=5,image.driver=null-co,image.size=1048576"),
        ("-device", "scsi-hd,id={id}d0,bus={id}.0,channel=0,scsi-id=0,lun=0,drive=bd_{id},werror=stop,rerror=stop"))
DEVICE = Device("virtio-scsi", VERSIONS, 8, sys.modules[__name__], pci_device_id=0x1004, pci_class=0x0100,
                transports=offered(Version(2, 0), "pci", "mmio", "ccw"), props=PROPS, compat=COMPAT,
                drawn=(("num_queues", (1, 2, 4)), ("virtqueue_size", (128, 256)), ("hotplug", (True, False)),
                       ("param_change", (True, False)), ("packed", (False, True))),
                qdev_id="vscsi", attached=DISK, order=50,
                source="hw/scsi/virtio-scsi.c, hw/virtio/virtio-scsi-pci.c")
