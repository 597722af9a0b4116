"""`virtio-compat mutate`: the model against real QEMU on mutations of real streams (issue 11).

A source QEMU saves driven device states (reset states on ccw); every virtio payload field of the stream gets its
boundary mutations (harness/mutate.py); each mutant is loaded by a destination QEMU started from the source's own
command line, and by the model (`verdict` with `--dest` that command line). Outcome, first error line and, when both
accept, the loaded state must agree. The next destination is always starting while one loads (a warm pair), so
QEMU's start-up overlaps the model and the previous load. A QEMU that crashes is a finding against that release,
counted apart from the model's disagreements.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import lzma
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.errors import QemuError, StreamError, UsageError
from harness.failures import write_atomic
from harness.mutate import Mutation, mutations, select
from harness.qemu import oracle, release, tap
from harness.qemu.backend import QemuConfig, Verdict, save
from harness.qemu.crosscheck import Side, default_machine, kinds_for, qemu_config, side
from harness.qemu.drawn import random_drives
from harness.qemu.loaded import qom_path
from harness.qemu.process import QemuProcess
from harness.verdict import Verdict as ModelVerdict
from harness.verdict import verdict
from harness.wire.primitives import _DECODE_ERRORS
from harness.wire.stream import Stream, decode_stream
from harness.wire.virtio import compiled_payload_layout
from models.config import realize
from models.model import CRASHED, UNDEFINED
from models.registry import BASE
from models.releases import FAMILIES

DEFAULT_OUT = Path("reports") / "mutate"
HANG_TIMEOUT = 3.0  # a load takes ~30 ms: a QEMU silent this long is busy for good (config_len 4 G, ...)
HUNG = "hung"  # QEMU stopped answering QMP during the load (not an outcome the model predicts)


@dataclass
class Result:
    mutation: Mutation
    qemu: str
    qemu_error: str | None
    model: str
    model_error: str | None
    disagreements: list[str]
    qemu_stderr: tuple[str, ...] = ()

    @property
    def crash(self) -> bool:
        return self.qemu == CRASHED


@dataclass
class Tally:
    release: str
    transport: str
    machine: str
    mutants: int = 0
    streams: int = 0
    seconds: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    disagreements: int = 0
    crashes: int = 0  # QEMU died: a finding against the release, whether the model predicted it or not
    unpredicted: int = 0  # ... and the model said otherwise (counted in disagreements too)
    hangs: int = 0  # QEMU stopped answering: a finding, not an outcome the model predicts
    undefined: int = 0  # the model says QEMU corrupts its memory here: a finding too, whatever QEMU then did
    examples: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"release": self.release, "transport": self.transport, "machine": self.machine,
                "mutants": self.mutants, "streams": self.streams, "seconds": round(self.seconds, 1),
                "per_second": round(self.mutants / self.seconds, 2) if self.seconds else 0.0,
                "outcomes": dict(self.outcomes), "disagreements": self.disagreements, "qemu_crashes": self.crashes,
                "unpredicted_crashes": self.unpredicted, "qemu_hangs": self.hangs, "qemu_undefined": self.undefined,
                "examples": self.examples[:20]}


def compare(model: ModelVerdict, qemu: Verdict, paths: dict[str, str]) -> list[str]:
    """Outcome and first error line; when both loaded, each device's loaded state against what QEMU holds
    (`paths`: the QOM path of each section's device)."""
    out = oracle.compare(model, qemu)
    if not out and qemu.outcome in ("accepted", "accepted-broken"):
        for section, path in paths.items():
            state = model.states.get(section)
            if state is None:
                out.append(f"{section}: the model has no loaded state, QEMU reports one")
                continue
            out += oracle.state_differences(section, state, path, qemu)
    return out


def mutant_stream(base: Stream, m: Mutation, mutant: bytes) -> Stream:
    """The base stream's decode with the payload the mutation touches decoded again from the mutant (all other
    bytes are the base's): a whole decode per mutant would cost more than QEMU's load."""
    s = copy.copy(base)
    s.devices = []
    delta = 0
    for p in base.devices:
        if p.section != m.section:
            s.devices.append(replace(p, offset=p.offset + delta) if delta else p)
            continue
        size = m.resize[1] if m.resize else p.size
        delta = size - p.size
        chunk = mutant[p.offset : p.offset + size]
        try:
            io_ = io.BytesIO(chunk)
            value = compiled_payload_layout(p.transport, p.device, BASE.wire).parse_stream(io_, schema_fields=p.fields)
            if io_.tell() != size:
                raise ValueError("bytes left")
            s.devices.append(replace(p, size=size, value=value, raw=None, error=None))
        except (*_DECODE_ERRORS, StreamError) as exc:
            error = StreamError(f"the payload does not decode: {exc}", p.offset, "virtio")
            s.devices.append(replace(p, size=size, value=None, raw=chunk, error=error))
    return s


def load_mutant(argv: Sequence[str], data: bytes, release_: Any, started: QemuProcess, stream: Stream | None = None
                ) -> tuple[Verdict, ModelVerdict]:
    """QEMU's verdict (from `started`, a destination already launched) and the model's, on one mutant (`stream`:
    its decode, when it is known)."""
    model = predict(stream, data, release_, argv)
    qemu = oracle.load_and_save(argv, data, resave=False, started=started).verdict
    return qemu, model


def predict(stream: Stream | None, data: bytes, release_: Any, argv: Sequence[str]) -> ModelVerdict:
    if stream is None:
        return oracle.predict(data, release_, argv)
    try:
        return verdict(stream, release_, oracle.dest_line(argv), data)
    except Exception:  # oracle.predict says what went wrong, from the whole decode
        return oracle.predict(data, release_, argv)


def source_streams(rng: random.Random, src: Side, machine: str) -> Iterator[tuple[bytes, list[str]]]:
    """Streams of driven device states (every kind the release offers on one command line), with the command
    line."""
    while True:
        kinds = list(kinds_for(src, src, machine))
        rng.shuffle(kinds)
        config = qemu_config(machine, kinds)
        specs = random_drives(rng, config, src.release)
        data, truth = save(QemuConfig(config.machine, config.devices, config.smp, config.mem_mb, src.binary), specs)
        yield data, list(truth["qemu_cmdline"])


def _destination(argv: Sequence[str], binary: str) -> QemuProcess:
    qemu = oracle.destination(argv, binary)
    qemu.command_timeout = HANG_TIMEOUT
    qemu.start()
    return qemu


def keep_base(data: bytes, folder: Path) -> str:
    """The source stream, xz-compressed once by its hash (mutants are edits of it): its file name."""
    name = hashlib.sha1(data).hexdigest()[:12] + ".bin.xz"
    path = folder / name
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        path.write_bytes(lzma.compress(data, preset=9))
    return name


def campaign(binary: str, machine: str | None, count: int, seed: int = 0, per_stream: int = 400,
             out: Path = DEFAULT_OUT, progress: Callable[[str], None] | None = None,
             started: Callable[[Tally], None] | None = None) -> Tally:
    """`count` mutants of streams of `binary` (a path or a fleet release), each loaded by the same binary and by
    the model of its release, `per_stream` mutants of each source stream. `started` gets the tally as soon as it
    exists (what an interrupted run still reports)."""
    aliases = {"pc": "pc-i440fx", "q35": "pc-q35"}
    family = aliases.get(machine or "pc", machine or "")
    try:
        target = release.target_of(family)
    except QemuError as exc:
        raise UsageError(f"--machine {machine}: {exc}") from None
    src = side(binary, target)
    if family in FAMILIES:  # a family alone: its newest machine type
        family = default_machine(src, src, family)
    transport = release.transport_of(family)
    tally = Tally(str(src.release), transport, family)
    if started is not None:
        started(tally)
    rng = random.Random(seed)
    bases = out / "bases"
    say = progress or (lambda line: None)
    begin = time.monotonic()
    streams = source_streams(rng, src, family)
    pending: QemuProcess | None = None
    try:
        while tally.mutants < count:
            data, argv = next(streams)
            tally.streams += 1
            lines = tap.lines(oracle.dest_line(argv), src.release)
            realized = {line.section: realize(line.config) for line in lines}
            paths = {line.section: qom_path(line) for line in lines}
            base = decode_stream(data, strict=False, extras=BASE.wire)
            picked = select(mutations(data, realized), min(per_stream, count - tally.mutants), seed + tally.streams)
            if pending is not None:  # started for the previous stream's command line
                pending.close()
                pending = None
            for i, m in enumerate(picked):
                current = pending or _destination(argv, src.binary)
                # warm: the next destination starts while this one loads
                pending = _destination(argv, src.binary) if i + 1 < len(picked) else None
                mutant = m.apply(data)
                try:
                    qemu, model = load_mutant(argv, mutant, src.release, current, mutant_stream(base, m, mutant))
                except QemuError as exc:  # QEMU stopped answering: a finding against it, like a crash
                    tally.mutants += 1
                    tally.outcomes[HUNG] += 1
                    tally.hangs += 1
                    record(Result(m, HUNG, str(exc), "", None, []), data, argv, tally, bases, out, "qemu-hang")
                    continue
                outcome, error = model.overall()
                diffs = compare(model, qemu, paths)
                if diffs:  # as `verdict` sees it: the whole mutant decoded
                    model = oracle.predict(mutant, src.release, argv)
                    outcome, error = model.overall()
                    diffs = compare(model, qemu, paths)
                res = Result(m, qemu.outcome, qemu.error, outcome, error, diffs, qemu.stderr)
                tally.mutants += 1
                tally.outcomes[qemu.outcome] += 1
                if res.crash:
                    tally.crashes += 1
                if outcome == UNDEFINED:
                    tally.undefined += 1
                    record(res, data, argv, tally, bases, out, "qemu-undefined")
                elif diffs:  # a crash the model did not predict is the model's miss too
                    tally.disagreements += 1
                    tally.unpredicted += res.crash
                    record(res, data, argv, tally, bases, out, "disagreement")
                elif res.crash:
                    record(res, data, argv, tally, bases, out, "qemu-crash")
                if tally.mutants % 100 == 0:
                    tally.seconds = time.monotonic() - begin
                    say(f"{tally.mutants} mutants, {tally.streams} streams, {tally.mutants / tally.seconds:.1f}/s, "
                        f"{tally.disagreements} disagreements, {tally.crashes} QEMU crashes, {tally.hangs} hangs, "
                        f"{dict(tally.outcomes)}")
    finally:
        if pending is not None:
            pending.close()
        tally.seconds = time.monotonic() - begin
    return tally


def record(res: Result, data: bytes, argv: Sequence[str], tally: Tally, bases: Path, out: Path, kind: str) -> None:
    """A disagreement (or a QEMU crash) as a regression candidate: the base stream, the edit, both verdicts."""
    base = keep_base(data, bases)
    case: dict[str, Any] = {"kind": kind, "release": tally.release, "transport": tally.transport, "base": base,
            "argv": list(argv), "mutation": res.mutation.as_json(), "name": res.mutation.name,
            "qemu": {"outcome": res.qemu, "error": res.qemu_error, "stderr": list(res.qemu_stderr)},
            "model": {"outcome": res.model, "error": res.model_error}, "disagreements": res.disagreements}
    if len(tally.examples) < 200:
        tally.examples.append({"name": res.mutation.name, "qemu": case["qemu"], "model": case["model"]})
    digest = hashlib.sha1(json.dumps(case["mutation"]).encode() + base.encode()).hexdigest()[:10]
    write_atomic(out / tally.release / tally.transport, f"{kind}-{digest}", case)


# -- regression cases: a recorded mutant against the model alone -----------------------------------------------


def case_mutant(case: dict[str, Any], bases: Path) -> bytes:
    """The mutant of a recorded case: its base stream (xz) with the mutation's edits."""
    base = lzma.decompress((bases / case["base"]).read_bytes())
    return Mutation.from_json(case["mutation"]).apply(base)


def recheck(case: dict[str, Any], bases: Path) -> list[str]:
    """The model's verdict on a recorded case against QEMU's recorded outcome and first error line."""
    data = case_mutant(case, bases)
    model = oracle.predict(data, BASE.release_of(case["release"]), case["argv"])
    qemu = Verdict(case["qemu"]["outcome"], case["qemu"]["error"], (), None)
    return oracle.compare(model, qemu)
