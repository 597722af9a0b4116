"""virtio-scsi: realize values per release and machine type, and its in-flight requests in the scsi-hd section of
the package's 7.2 sample (pc-i440fx-7.2-virtio-scsi-inflight-werror: two WRITE(10)s parked by werror=stop). Each
edited stream's verdict below is what the 7.2.22 binary did with the same bytes (tests/qemu/test_scsi.py runs
them against it where it is installed)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import construct as c
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.known import known_for
from harness.qemu.scsi_requests import truth_state
from harness.rules import Violation
from harness.samples import FOLDER
from harness.verdict import StreamRam, verdict
from harness.wire import scsi as wire_scsi
from harness.wire.stream import decode_stream
from models import features as F
from models.config import Config, realize
from models.devices import scsi
from models.load_checks import Rejected
from models.registry import BASE
from models.releases import MachineType, V
from models.rings import guest_rings, map_requests
from models.state import Crashed, DeviceState, QueueState, Undefined

SAMPLE = FOLDER / "pc-i440fx-7.2-virtio-scsi-inflight-werror.bin"
DISK = "0000:00:03.0/0:0:0/scsi-disk"
FIRST_REQUEST = 4 + 96 + 4 + 1 + 16 + 4 + 4  # the first request's queue index in the body: SCSIDevice, sbyte, cdb..
ELEMENT = FIRST_REQUEST + 4


@pytest.mark.parametrize(("release", "machine", "transport", "smp", "props", "sizes", "vectors"), [
    # 5.2: virtio-scsi-pci takes one request queue per vCPU; hw_compat_5_1 keeps 1 on older machine types
    ("7.2", "pc-i440fx-7.2", "pci", 4, {}, (256,) * 6, 7),
    ("7.2", "pc-i440fx-5.1", "pci", 4, {}, (256,) * 3, 4),
    # hw_compat_4_2: virtqueue_size 128
    ("7.2", "pc-i440fx-4.2", "pci", 1, {}, (128,) * 3, 4),
    ("4.2", "pc-i440fx-4.2", "pci", 2, {}, (128,) * 3, 4),
    ("2.0", "pc-i440fx-2.0", "pci", 1, {}, (128,) * 3, 4),
    # elsewhere "auto" is 1 whatever -smp says
    ("7.2", "virt-7.2", "mmio", 4, {}, (256,) * 3, 0),
    ("11.1", "s390-ccw-virtio-11.1", "ccw", 4, {}, (256,) * 3, 0),
    ("7.2", "pc-q35-7.2", "pci", 1, {"num_queues": 2, "virtqueue_size": 64}, (64,) * 4, 5),
])
def test_realize(release: str, machine: str, transport: str, smp: int, props: dict[str, int],
                 sizes: tuple[int, ...], vectors: int) -> None:
    r = realize(Config(V(release), MachineType.parse(machine), "virtio-scsi", transport, smp=smp, props=props))
    assert r.queue_sizes == sizes
    assert r.vectors == vectors
    assert r.config_len == 36  # sizeof(VirtIOSCSIConfig)
    assert r.host_features & 0xF == F.bits(F.SCSI_HOTPLUG, F.SCSI_CHANGE)


def test_hotplug_and_param_change_properties() -> None:
    off = realize(Config(V("7.2"), MachineType.parse("pc-i440fx-7.2"), "virtio-scsi",
                         props={"hotplug": False, "param_change": False}))
    assert off.host_features & 0xF == 0


def _disk_body(data: bytes) -> tuple[bytes, int]:
    s = decode_stream(data, extras=BASE.wire)
    sec = next(r for r in s.records if getattr(r, "idstr", "") == DISK)
    return sec.body, data.find(sec.body, sec.offset)


def test_sample_requests_are_the_driven_ones() -> None:
    data = SAMPLE.read_bytes()
    truth = json.loads(SAMPLE.with_suffix(".json").read_text())["devices"][0]
    body, _ = _disk_body(data)
    got = scsi.parse_disk(body, emulated=False)
    assert [(r.queue + 2, r.head, r.tag, r.cmd[0], r.sector, r.retry) for r in got.requests] == [
        (t["queue"], t["head"], t["tag"], t["opcode"], t["lba"], True) for t in truth["inflight_requests"]]
    assert scsi.save_disk(got, emulated=False) == body
    # the model's save of what the driver made is QEMU's section, byte for byte
    assert scsi.save_disk(truth_state(got, [truth]), emulated=False) == body
    # `decode` without a model finds the same
    v, emulated, packed = wire_scsi.read_disk(body, "pc-i440fx-7.2")
    assert (emulated, packed, len(wire_scsi.requests(v))) == (False, False, 2)


def test_packed_save_writes_ndescs_first() -> None:
    got = scsi.parse_disk(_disk_body(SAMPLE.read_bytes())[0], emulated=False)
    packed = scsi.save_disk(got, emulated=False, packed=True)
    assert len(packed) == len(scsi.save_disk(got, emulated=False)) + 4 * len(got.requests)
    assert scsi.parse_disk(packed, emulated=False).requests[0].ndescs == 0
    assert wire_scsi.parse_disk_body(packed, False)[1] is True  # decode tells the two apart by the body's length


def _edited(tmp_path: Path, at: int, raw: bytes) -> bytes:
    data = bytearray(SAMPLE.read_bytes())
    _, start = _disk_body(bytes(data))
    data[start + at : start + at + len(raw)] = raw
    return bytes(data)


@pytest.mark.parametrize(("at", "raw", "dest", "outcome", "error"), [
    # 3c3ce98142 (CVE-2013-4542): the queue index is an assertion
    (FIRST_REQUEST, (1).to_bytes(4, "big"), None, "crashed",
     "virtio_scsi_load_request: Assertion `n < vs->conf.num_queues' failed."),
    # the WRITE's data at the last byte of the BIOS ROM below 4 GiB: a DMA read maps one byte of it
    (ELEMENT + 16 + 8192 + 8, (0xFFFFFFFF).to_bytes(8, "little"), None, "rejected", "virtio: unexpected memory split"),
    # a 50-byte response buffer: virtio_scsi_parse_req fails and QEMU exits
    (ELEMENT + 16400 + 8, (50).to_bytes(8, "little"), None, "rejected", scsi.INVALID_REQUEST),
    # the WRITE's data buffer gone: the CDB transfers to the device, the element nothing
    (ELEMENT + 4, (1).to_bytes(4, "little"), None, "crashed",
     "virtio_scsi_load_request: Assertion `req->sreq->cmd.mode == req->mode' failed."),
    (ELEMENT + 8, (1025).to_bytes(4, "little"), None, "crashed",
     "qemu_get_virtqueue_element: Assertion `ARRAY_SIZE(data.in_addr) >= data.in_num' failed."),
    # a unit attention pending (loaded before the requests) or another LUN: scsi_req_new gives the request the
    # bus's ops, which read no disk part, and the reading stops short of the section
    (0, bytes([6, 0x29, 0]), None, "rejected", f"Missing section footer for {DISK}"),
    (FIRST_REQUEST - 4, (1).to_bytes(4, "big"), None, "rejected", f"Missing section footer for {DISK}"),
    # TEST UNIT READY (nothing to transfer: no direction check; emulated: no disk part), an opcode of a group
    # scsi_cdb_length refuses (invalid-opcode ops): the reading stops short too
    (FIRST_REQUEST - 24, b"\x00", None, "rejected", f"Missing section footer for {DISK}"),
    (FIRST_REQUEST - 24, b"\xff", None, "rejected", f"Missing section footer for {DISK}"),
    # unedited, onto a packed=on destination: it reads 4 bytes of ndescs after each element and stops short
    (0, b"", "-machine pc-i440fx-7.2 -device virtio-scsi-pci,addr=0x3,packed=on", "rejected",
     f"Missing section footer for {DISK}"),
    (0, b"", "-machine pc-i440fx-7.2 -device virtio-scsi-pci,addr=0x3,num_queues=1", "accepted", None),
])
def test_disk_load_checks(tmp_path: Path, at: int, raw: bytes, dest: str | None, outcome: str,
                          error: str | None) -> None:
    data = _edited(tmp_path, at, raw)
    v = verdict(decode_stream(data, strict=False, extras=BASE.wire), V("7.2"), dest, data)
    entry = next(d for d in v.devices if d["section"] == DISK)
    assert (entry["outcome"], entry["error"]) == (outcome, error)
    assert v.overall() == (outcome, error)


def test_no_virtio_scsi_at_the_destination() -> None:
    data = SAMPLE.read_bytes()
    v = verdict(decode_stream(data, extras=BASE.wire), V("7.2"), "-machine pc-i440fx-7.2", data)
    assert v.overall()[0] == "rejected" and "Unknown savevm section" in str(v.overall()[1])


def test_packed_misread_element_does_not_map() -> None:
    """Source and destination both packed=on: the destination reads every element field 4 bytes early and the
    first response buffer's length lands in the address's upper half (the 7.2 binary: `virtio: unexpected
    memory split`)."""
    data = SAMPLE.read_bytes()
    s = decode_stream(data, extras=BASE.wire)
    body, _ = _disk_body(data)
    got = scsi.parse_disk(body, emulated=False)
    packed_body = scsi.save_disk(got, emulated=False, packed=True)
    r = realize(Config(V("7.2"), MachineType.parse("pc-i440fx-7.2"), "virtio-scsi", props={"packed": True}))
    assert s.memory is not None
    memory = StreamRam(s.memory, s.machine, False)
    with pytest.raises(Rejected) as e:
        scsi.load_body(packed_body, r, False, DISK, lambda req: map_requests(memory, (req,)))
    assert e.value.lines == ["virtio: unexpected memory split"]


def test_known_incompatibility_names_packed_inflight() -> None:
    cfg = Config(V("7.2"), MachineType.parse("pc-i440fx-7.2"), "virtio-scsi", props={"packed": True})
    inflight = DeviceState(queues=(QueueState(256, 0x100000), QueueState(256, 0x110000),
                                   QueueState(256, 0x120000, last_avail_idx=5, used_idx=3)))
    k = known_for(Violation("R1", "accepted", "rejected"), cfg, cfg, inflight)
    assert k is not None and k.name == "inflight-element-packed"
    idle = DeviceState(queues=(QueueState(256, 0x100000, last_avail_idx=3, used_idx=3),))
    assert known_for(Violation("R1", "accepted", "rejected"), cfg, cfg, idle) is None


def test_packed_queue_used_idx_is_the_devices() -> None:
    """A packed ring's device area holds event suppression flags, not a used idx: guest_rings takes the device's
    used idx from virtio/packed_virtqueues (virtio-scsi writes the flags when its queues are kicked at DRIVER_OK;
    the 7.2 binary reports the subsection's value after the load)."""

    class Ram:
        def read_phys(self, machine: str | None, gpa: int, size: int) -> bytes:
            return (2).to_bytes(size, "little")  # what the device wrote there (VRING_PACKED_EVENT_FLAG_DESC)

    st = DeviceState(guest_features=F.bit(F.RING_PACKED) | F.bit(F.VERSION_1), queues=(QueueState(16, 0x100000),),
                     packed=((0, 1, 7, 1, 0),))
    assert guest_rings(Ram(), "pc-i440fx-7.2", st) == [(0, 7)]
    split = DeviceState(guest_features=F.bit(F.VERSION_1), queues=(QueueState(16, 0x100000),))
    assert guest_rings(Ram(), "pc-i440fx-7.2", split) == [(2, 2)]


# --- the disk section's model under Hypothesis: round trip (R1 of the section) and hostile bodies (R11) -----------

_SG = st.lists(st.tuples(st.integers(0, (1 << 40) - 1), st.integers(0, 1 << 20)), max_size=3)
_CDB = st.sampled_from([0x28, 0x2A, 0x08, 0x0A, 0x88, 0x8A, 0x2E, 0x00, 0x12, 0x35, 0x42]).flatmap(
    lambda op: st.binary(min_size=15, max_size=15).map(lambda rest: bytes([op]) + rest))


@st.composite
def disk_requests(draw: st.DrawFn, emulated: bool) -> scsi.ScsiRequest:
    cmd = draw(_CDB)
    retry = draw(st.booleans())
    xfer = wire_scsi.cdb_xfer(cmd)  # a CDB scsi_req_new cannot parse gets ops with no disk part
    disk = xfer is not None and xfer <= 0x7FFFFFFF and (cmd[0] in wire_scsi.DMA_OPCODES or emulated)
    sector_count, buflen = draw(st.integers(0, 8)), draw(st.sampled_from([0, 512, 4096]))
    data = None
    if disk and buflen:
        if wire_scsi.to_dev(cmd):
            data = draw(st.binary(min_size=min(sector_count * 512, buflen), max_size=min(sector_count * 512, buflen)))
        elif not retry:
            data = draw(st.binary(max_size=64))
    return scsi.ScsiRequest(draw(st.integers(0, 7)), draw(st.integers(0, 1023)), tuple(draw(_SG)), tuple(draw(_SG)),
                            cmd, draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1)), retry,
                            draw(st.integers(0, 2**64 - 1)) if disk else None, sector_count if disk else 0,
                            buflen if disk else 0, data)


@st.composite
def disk_states(draw: st.DrawFn, emulated: bool) -> scsi.ScsiDiskState:
    sense_len = draw(st.integers(0, 252))
    return scsi.ScsiDiskState(
        tuple(draw(st.lists(disk_requests(emulated), max_size=3))),
        (draw(st.integers(0, 255)), draw(st.integers(0, 255)), draw(st.integers(0, 255))), draw(st.booleans()),
        draw(st.binary(min_size=252, max_size=252)) if sense_len > 96 else draw(st.binary(min_size=96, max_size=96)),
        sense_len, tuple(draw(st.booleans()) for _ in range(5)),  # type: ignore[arg-type]
        draw(st.none() | st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 255))))


@settings(max_examples=60, deadline=None)
@given(st.booleans().flatmap(lambda e: st.tuples(st.just(e), disk_states(e))), st.booleans())
def test_disk_section_round_trip(case: tuple[bool, scsi.ScsiDiskState], packed: bool) -> None:
    """save then parse (the saving side's reading) gives the state back, with ndescs written under RING_PACKED."""
    emulated, d = case
    body = scsi.save_disk(d, emulated, packed)
    back = scsi.parse_disk(body, emulated, packed)
    assert [(r.ndescs is not None) for r in back.requests] == [packed] * len(d.requests)
    assert replace(back, requests=tuple(replace(r, ndescs=None) for r in back.requests)) == d


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.booleans())
def test_hostile_disk_bodies_fail_cleanly(body: bytes, packed: bool) -> None:
    """Any bytes: the decoder says it cannot read them (construct's error) or reads them; the destination's model
    says accepted, rejected, crashed or undefined; nothing else escapes."""
    try:
        wire_scsi.read_disk(body, "pc-i440fx-7.2")
    except c.ConstructError:
        pass
    r = realize(Config(V("7.2"), MachineType.parse("pc-i440fx-7.2"), "virtio-scsi", props={"packed": packed}))
    try:
        scsi.load_body(body, r, False, DISK)
    except (Crashed, Undefined, Rejected):
        pass
