"""virtio-scsi's in-flight requests through a real QEMU pair: they travel in the SCSI disk's section ("scsi-disk",
after the virtio-scsi one), so the virtio payload checks do not see them. For each disk section of the source:

- R12 save: the model's save of the requests the driver left in flight (drive_scsi.py: queue, head, the chain,
  the CDB and tag; the sense and unit attention as the stream has them) is the section QEMU wrote, byte for byte;
- R12 load: the model's verdict on the section at the destination's virtio-scsi agrees with QEMU's;
- R1/R3/R4: the destination's own save after the load carries the same requests (none lost, none restarted),
  and it is the model's save of what it loaded.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from harness.errors import StreamError
from harness.qemu import tap
from harness.verdict import StreamRam
from harness.wire import scsi as wire_scsi
from harness.wire.stream import Section, Stream, decode_stream
from models import features as F
from models.config import Realized, realize
from models.devices import scsi
from models.load_checks import Rejected
from models.releases import MachineType, Version
from models.rings import map_requests
from models.state import Crashed, Undefined


def disk_sections(s: Stream) -> list[Section]:
    return [rec for rec in s.records if isinstance(rec, Section) and wire_scsi.is_disk_section(rec.idstr)]


def hba(disk: str, lines: dict[str, Any]) -> Realized | None:
    """The destination's virtio-scsi the disk section `disk` sits on, realized for the release of `lines`."""
    prefix = wire_scsi.hba_prefix(disk)
    for section, line in lines.items():
        if line.config.device == "virtio-scsi" and section.rsplit("/", 1)[0] == prefix:
            return realize(line.config)
    return None


def mapper(memory: StreamRam | None) -> Callable[[scsi.ScsiRequest], None] | None:
    """virtqueue_map of one element over the stream's RAM (None: no RAM in the stream, every element maps)."""
    if memory is None:
        return None
    ram = memory
    return lambda req: map_requests(ram, (req,))


def truth_state(decoded: scsi.ScsiDiskState, truths: Sequence[dict[str, Any]]) -> scsi.ScsiDiskState:
    """The disk state the driver made: its in-flight requests as it wrote them (a one-sector WRITE(10) parked
    for retry by werror=stop: sector, one sector, no bounce buffer), the rest as the stream has it (and ndescs:
    with RING_PACKED offered and a split ring, whatever the element's heap memory held)."""
    reqs = []
    for t in truths:
        for r in t.get("inflight_requests", []):
            cmd = bytes([r["opcode"], 0]) + r["lba"].to_bytes(4, "big") + bytes([0]) + (1).to_bytes(2, "big") + \
                bytes(7)
            reqs.append(scsi.ScsiRequest(r["queue"] - scsi.VIRTIO_SCSI_VQ_NUM_FIXED, r["head"],
                                         tuple(map(tuple, r["out"])), tuple(map(tuple, r["in"])),
                                         cmd, r["tag"], 0, True, r["lba"], 1, 0, None))
    ndescs = [r.ndescs for r in decoded.requests]
    reqs = [replace(r, ndescs=ndescs[i] if i < len(ndescs) else None) for i, r in enumerate(reqs)]
    return replace(decoded, requests=tuple(reqs))


def check(s: Stream, truth: dict[str, Any], argv: Sequence[str], src: Version, dst: Version,
          outcome: str, resaved: bytes | None, rule: str) -> tuple[int, list[str], list[str]]:
    """(disk sections checked, disagreements with the model (R12), violations of `rule`)."""
    sections = disk_sections(s)
    if not sections:
        return 0, [], []
    machine = MachineType.parse(s.machine or "")
    src_emulated, dst_emulated = scsi.emulated_requests(src, machine), scsi.emulated_requests(dst, machine)
    dst_lines = {line.section: line for line in tap.lines(shlex.join(argv), dst)}
    src_lines = {line.section: line for line in tap.lines(shlex.join(argv), src)}
    again: dict[str, Section] = {}
    if resaved is not None:
        try:
            again = {sec.idstr: sec for sec in disk_sections(decode_stream(resaved, strict=False))}
        except StreamError as exc:
            return len(sections), [f"the destination's save cannot be decoded: {exc}"], []
    disagreements: list[str] = []
    violations: list[str] = []
    by_hba = {t["section"].rsplit("/", 1)[0]: t for t in truth.get("devices", []) if t.get("device") == "virtio-scsi"}
    for sec in sections:
        name = sec.idstr
        body = sec.body if isinstance(sec.body, bytes) else b""
        try:
            got = scsi.parse_disk(body, src_emulated)
        except Exception as exc:  # construct's errors: the model's reader fails where QEMU's wrote
            disagreements.append(f"{name}: the model cannot read QEMU's section: {exc}")
            continue
        t = by_hba.get(wire_scsi.hba_prefix(name))
        src_hba = hba(name, src_lines)
        src_packed = src_hba is not None and F.has(src_hba.host_features, F.RING_PACKED)
        if t is not None:
            made = scsi.save_disk(truth_state(got, [t]), src_emulated, src_packed)
            if made != body:
                disagreements.append(f"{name}: the model's save of the driven requests differs from QEMU's "
                                     f"({len(made)} B, QEMU {len(body)} B; {len(got.requests)} requests in QEMU's, "
                                     f"{len(t.get('inflight_requests', []))} driven)")
        dst_hba = hba(name, dst_lines)
        if dst_hba is None:
            disagreements.append(f"{name}: no virtio-scsi for it on the destination's command line")
            continue
        memory = StreamRam(s.memory, s.machine, dst_hba.big_endian_target) if s.memory is not None else None
        try:
            _, lines = scsi.load_body(body, dst_hba, dst_emulated, name, mapper(memory))
            model = "rejected" if lines else "accepted"
        except Crashed:
            model = "crashed"
        except Undefined:
            model = "undefined"
        except Rejected:
            model = "rejected"
        if model != "accepted" and outcome in ("accepted", "accepted-broken"):
            disagreements.append(f"{name}: the model predicts {model}, QEMU {outcome}")
        if resaved is None or outcome not in ("accepted", "accepted-broken"):
            continue
        back = again.get(name)
        if back is None:
            violations.append(f"{rule}: {name}: not in the destination's save")
            continue
        back_body = back.body if isinstance(back.body, bytes) else b""
        dst_packed = F.has(dst_hba.host_features, F.RING_PACKED)
        loaded = scsi.parse_disk(back_body, dst_emulated, dst_packed)
        if [replace(r, ndescs=None) for r in loaded.requests] != [replace(r, ndescs=None) for r in got.requests]:
            violations.append(f"{rule}: {name}: in-flight requests not preserved: {len(got.requests)} saved, "
                              f"{len(loaded.requests)} in the destination's save")
        if scsi.save_disk(got, dst_emulated, dst_packed) != back_body:
            disagreements.append(f"{name}: save(load(...)) differs from the destination's save")
    return len(sections), disagreements, violations
