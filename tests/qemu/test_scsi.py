"""virtio-scsi with in-flight requests on a real QEMU: a guest driver's READ(10)s complete and its WRITE(10)s stay
in flight on a scsi-hd whose writes fail with werror=stop; the model holds to the scsi-hd section QEMU writes,
to QEMU's verdict on it and to the destination's own save. Skips, saying why, without qemu-system-x86_64."""

from __future__ import annotations

import pytest

from harness.qemu import crosscheck
from harness.qemu.backend import DeviceConfig, QemuConfig
from harness.qemu.drive import DriveSpec, QueueSpec
from harness.qemu.oracle import load_and_save, predict
from harness.samples import FOLDER
from harness.wire.stream import decode_stream

pytestmark = pytest.mark.qemu
SAMPLE = FOLDER / "pc-i440fx-7.2-virtio-scsi-inflight-werror.bin"
DISK = "0000:00:03.0/0:0:0/scsi-disk"


def _spec(writes: int, props: tuple[tuple[str, str], ...] = (), modern: bool = False) -> DriveSpec:
    queues = (QueueSpec(0, 0x100), QueueSpec(1, 0x110), QueueSpec(2, 0x120, 2, writes=writes))
    return DriveSpec("virtio-scsi", 3, 0xFFFFFFFF, queues, 0xF if modern else 7, props=props, firmware=modern,
                     modern=modern)


@pytest.mark.parametrize("modern", [False, True], ids=["legacy", "modern"])
def test_inflight_writes_migrate(qemu_binary: str, modern: bool) -> None:
    side = crosscheck.side(qemu_binary)
    ex = crosscheck.run_specs(0, side, side, "pc-i440fx-7.2", ["virtio-scsi"], [_spec(2, modern=modern)])
    assert (ex.outcome, ex.disagreements, ex.violations) == ("accepted", [], [])
    assert (ex.scsi_disks_checked, ex.scsi_inflight) == (1, 2)


def test_packed_host_cannot_load_its_own_inflight_requests(qemu_binary: str) -> None:
    """packed=on: ndescs is saved before each element and loaded after it; the model predicts the line QEMU exits
    with, and the violation is the declared known incompatibility."""
    side = crosscheck.side(qemu_binary)
    ex = crosscheck.run_specs(0, side, side, "pc-i440fx-7.2", ["virtio-scsi"], [_spec(1, (("packed", "on"),))])
    assert (ex.outcome, ex.error) == ("rejected", "virtio: unexpected memory split")
    assert ex.disagreements == []
    assert set(crosscheck.known_incompatibilities(ex, side.release, side.release)) == {"inflight-element-packed"}


@pytest.mark.parametrize(("at", "raw", "props"), [
    (129, (1).to_bytes(4, "big"), ()),  # queue index past num_queues: an assertion
    (133 + 16408, (50).to_bytes(8, "little"), ()),  # the response buffer too short: exit(1)
    (133 + 4, (1).to_bytes(4, "little"), ()),  # the WRITE's data gone: cmd.mode != req->mode
    (133 + 8208, (0xFFFFFFFF).to_bytes(8, "little"), ()),  # the data at the BIOS ROM's last byte: a memory split
    (0, b"", (("packed", "on"),)),  # a packed=on destination reads ndescs after each element
    (0, bytes([6, 0x29, 0]), ()),  # a pending unit attention: the requests get the bus's ops (no disk part)
    (125, (1).to_bytes(4, "big"), ()),  # another LUN: the target's ops
    (105, b"\x00", ()),  # TEST UNIT READY: nothing to transfer, emulated: no disk part
    (105, b"\xff", ()),  # an opcode scsi_cdb_length refuses: invalid-opcode ops
])
def test_edited_sample_verdicts(qemu_binary: str, at: int, raw: bytes, props: tuple[tuple[str, str], ...]) -> None:
    data = bytearray(SAMPLE.read_bytes())
    s = decode_stream(bytes(data))
    sec = next(r for r in s.records if getattr(r, "idstr", "") == DISK)
    start = bytes(data).find(sec.body, sec.offset)
    data[start + at : start + at + len(raw)] = raw
    config = QemuConfig("pc-i440fx-7.2", (DeviceConfig("virtio-scsi", 3, props),), binary=qemu_binary)
    real = load_and_save(config, bytes(data), resave=False).verdict
    side = crosscheck.side(qemu_binary)
    model = predict(bytes(data), side.release, ["qemu-system-x86_64", "-machine", "pc-i440fx-7.2", *config.args()])
    outcome, error = model.overall()
    assert outcome == real.outcome
    assert error is not None and real.error is not None and real.error.endswith(error)
