"""Real QEMU as the oracle of the models (R12): QEMU's verdict on a stream, the destination's own save
after a load, and the comparisons with what the model predicts for the same stream and command line.

load_and_save()   load a stream into a destination QEMU (-incoming defer), read its verdict and the
                  x-query-virtio-status of every device, then (when it loaded) migrate it to a file again
model_loads()     the model's load of every virtio device of a decoded stream, for a destination argv
compare()         the model's verdict against QEMU's: outcome and first error line
compare_state()   the model's loaded state against x-query-virtio-status / -queue-status
compare_resave()  the model's save(load(...)) against the destination's own save, byte for byte
write_disagreement()  a failure file (R12-<hash>.json) saying which side said what
"""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.annotate import tree_diff
from harness.errors import QemuError, StreamError
from harness.failures import FAILURES, write_atomic
from harness.qemu import release, tap
from harness.qemu.backend import Channel, QemuConfig, Verdict, load_into, read_verdict
from harness.qemu.loaded import QUERY, LoadedDevice, qom_path
from harness.qemu.process import QemuProcess, find_qemu
from harness.verdict import Verdict as ModelVerdict
from harness.verdict import verdict
from harness.wire.stream import Stream, VirtioPayload, decode_stream
from models.cmdline import DeviceLine
from models.config import Realized, realize
from models.model import (
    CRASHED,
    REJECTED,
    UNDEFINED,
    LoadResult,
    guest_rings,
    load,
    save,
    saved_queue_count,
    state_from_wire,
)
from models.registry import BASE
from models.releases import Version
from models.state import DeviceState

RULE = "R12"
VERSION_TIMEOUT = 10.0


# -- QEMU's side ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QemuResult:
    """QEMU's verdict on a stream and, when the load completed, the destination's own save of it."""

    verdict: Verdict
    resaved: bytes | None = None


def load_and_save(
    config: QemuConfig | Sequence[str],
    data: bytes,
    *,
    binary: str | None = None,
    resave: bool = True,
    channel: Channel = "fd",
    started: QemuProcess | None = None,
) -> QemuResult:
    """load_stream(), then (if the load completed and `resave`) migrate the destination out again.
    `started`: a destination already launched with destination() (it starts while the source works)."""
    with started or destination(config, binary) as qemu:
        loaded = load_into(qemu, data, channel, resave=resave)
    return QemuResult(read_verdict(qemu, loaded), loaded.resaved)


def destination(config: QemuConfig | Sequence[str], binary: str | None = None, *, launch: bool = False
                ) -> QemuProcess:
    """A destination QEMU for `config` (-incoming defer); with `launch`, already starting (use it in a
    `with` block or hand it to load_and_save, which ends it)."""
    if not isinstance(config, QemuConfig):
        config = QemuConfig.from_argv(config)
    qemu = QemuProcess(config.machine, config.args(), binary=binary or config.binary, arch=config.target, incoming=True,
                       name="oracle")
    if launch:
        try:
            qemu.start()
        except BaseException:
            qemu.close()  # a Ctrl-C while it starts: no `with` holds it yet
            raise
    return qemu


def qemu_version(binary: str | None = None) -> Version:
    """MAJOR.MINOR of a QEMU binary, from `--version` (e.g. `QEMU emulator version 7.2.22 (...)`)."""
    return release.binary_version(find_qemu(binary))


def modelled_release(binary: str | None = None) -> Version:
    """The modelled release whose rules a binary follows."""
    try:
        return BASE.latest_release_at(qemu_version(binary))
    except ValueError as exc:
        raise QemuError(str(exc)) from None


# -- the model's side -------------------------------------------------------------------------------------


def dest_line(argv: Sequence[str]) -> str:
    """A command line as `verdict --dest` takes it."""
    return shlex.join(argv)


def predict(data: bytes | Stream, release: Version, dest_argv: Sequence[str]) -> ModelVerdict:
    """verdict() of the model for a stream and a destination argv; a stream the decoder cannot read is
    reported as the model's error (compare() then names it)."""
    out = ModelVerdict(release, None)
    try:
        s = data if isinstance(data, Stream) else decode_stream(data, strict=False, extras=BASE.wire)
    except StreamError as exc:
        out.error = f"(model) the stream cannot be decoded: {exc}"
        return out
    try:
        return verdict(s, release, dest_line(dest_argv), data if isinstance(data, bytes) else None,
                       tap=tap.host_tap())
    except Exception as exc:  # a model crash is a disagreement to report, not a reason to stop
        out.error = f"(model) verdict() raised {type(exc).__name__}: {exc}"
        return out


def overall(v: ModelVerdict) -> tuple[str, str | None]:
    """The whole load as QEMU reports it: sections load in stream order, a broken device goes on."""
    return v.overall()


def assertion(line: str | None) -> str | None:
    """An assert() line without the source path and line number, which differ from build to build
    (`../../hw/virtio/virtio.c:2375: qemu_get_virtqueue_element: Assertion ... failed.`)."""
    return re.sub(r"^\S+:\d+: ", "", line) if line else line


def compare(model_result: ModelVerdict, qemu_verdict: Verdict) -> list[str]:
    """Disagreements between the model's verdict and QEMU's: outcome and first error line (for a crash, the
    assertion QEMU trips)."""
    outcome, error = overall(model_result)
    if outcome == UNDEFINED:  # QEMU corrupts its memory: whatever it does next is not the model's to predict
        return []
    out = []
    if outcome != qemu_verdict.outcome:
        out.append(f"outcome: model {outcome}, QEMU {qemu_verdict.outcome}")
    if outcome == qemu_verdict.outcome == CRASHED:
        if error != assertion(qemu_verdict.error):
            out.append(f"assertion: model {error!r}, QEMU {qemu_verdict.error!r}")
    elif error != qemu_verdict.error:
        out.append(f"first error line: model {error!r}, QEMU {qemu_verdict.error!r}")
    return out


@dataclass(frozen=True)
class ModelLoad:
    """The model's load of one device: the destination's realize and the load result."""

    payload: VirtioPayload
    line: DeviceLine
    realized: Realized
    result: LoadResult

    @property
    def qom_path(self) -> str:
        return qom_path(self.line)


def model_loads(s: Stream, release: Version, dest_argv: Sequence[str]) -> dict[str, ModelLoad]:
    """The model's load of each virtio device of `s` (those the destination has), by section."""
    lines = {line.key: line for line in tap.lines(dest_line(dest_argv), release)}
    out = {}
    for p in s.devices:
        line = lines.get(p.key)
        if line is None or BASE.device(line.config.device).section != p.device:
            continue
        r = realize(line.config)
        try:
            rings = guest_rings(s.memory, s.machine, state_from_wire(r, p.value)) if s.memory else None
            result = load(r, p.encode(), rings, p.section, p.instance_id, s.footers, p.version_id)
        except Exception as exc:  # the model crashed: compare_state() reports "no loaded state"
            text = f"(model) load() raised {type(exc).__name__}: {exc}"
            result = LoadResult(REJECTED, text, (text,), None)
        out[p.label] = ModelLoad(p, line, r, result)
    return out


def compare_state(loads: dict[str, ModelLoad], qemu_verdict: Verdict) -> list[str]:
    """The model's loaded state against what the destination holds (x-query-virtio where safe, else its re-save)."""
    out = []
    for section, ml in loads.items():
        state = ml.result.state
        if state is None or ml.qom_path not in qemu_verdict.devices:
            if (state is None) != (ml.qom_path not in qemu_verdict.devices):
                out.append(f"{section}: the model has {'no' if state is None else 'a'} loaded state, QEMU "
                           f"{'reports one' if state is None else 'reports none'}")
            continue
        out += state_differences(section, state, ml.qom_path, qemu_verdict)
    return out


def state_differences(section: str, state: DeviceState, path: str, qemu_verdict: Verdict,
                      who: str = "model") -> list[str]:
    """`state` against the device at QOM `path` as the destination holds it: status, guest features,
    queue_sel, broken, the queue count, and per queue last-avail-idx, used-idx, vring-num, vring-desc
    (x-query-virtio's names; `(re-save)` marks values read from the destination's re-save)."""
    dev: LoadedDevice | None = qemu_verdict.devices.get(path)
    if dev is None:
        return [f"{section}: QEMU reports no device at {path}"]
    if dev.error is not None:
        return [f"{section}: the destination's re-save of it does not decode: {dev.error}"]
    qemu = "QEMU" if dev.source == QUERY else f"QEMU ({dev.source})"
    out = []
    if dev.unknown_features:
        out.append(f"{section}: QEMU feature names this tool cannot map: {list(dev.unknown_features)}")
    got: dict[str, Any] = {"status": dev.status, "guest-features": dev.guest_features, "queue-sel": dev.queue_sel,
                           "broken": dev.broken, "num-vqs": dev.num_vqs}
    want = {"status": state.status, "guest-features": state.guest_features, "queue-sel": state.queue_sel,
            "broken": state.broken, "num-vqs": saved_queue_count(state)}
    for key, value in want.items():
        if got[key] != value:
            fmt = "#x" if key == "guest-features" else ""
            out.append(f"{section}: {key}: {who} {value:{fmt}}, {qemu} {got[key]:{fmt}}")
    for q in dev.queues:
        if q.index >= len(state.queues):
            out.append(f"{section}: queue {q.index}: {who} has no such queue, {qemu} reports it")
            continue
        mq = state.queues[q.index]
        pairs = {"last-avail-idx": (mq.last_avail_idx, q.last_avail_idx), "used-idx": (mq.used_idx, q.used_idx),
                 "vring-num": (mq.num, q.num), "vring-desc": (mq.desc, q.desc)}
        for key, (mine, theirs) in pairs.items():
            if mine != theirs:
                out.append(f"{section}: queue {q.index} {key}: {who} {mine}, {qemu} {theirs}")
    return out


def compare_resave(loads: dict[str, ModelLoad], resaved: bytes) -> list[str]:
    """The destination's own save against the model's save(load(...)), payload by payload."""
    try:
        again = {p.key: p for p in decode_stream(resaved, extras=BASE.wire).devices}
    except StreamError as exc:
        return [f"the destination's save cannot be decoded: {exc}"]
    out = []
    for section, ml in loads.items():
        state = ml.result.state
        if state is None:
            continue
        p = again.get(ml.payload.key)
        if p is None:
            out.append(f"{section}: not in the destination's save")
            continue
        qemu_bytes = resaved[p.offset : p.offset + p.size]
        model_bytes = save(ml.realized, state)
        if model_bytes != qemu_bytes:
            out.append(f"{section}: save(load(...)) differs from QEMU's save: "
                       + first_difference(model_bytes, qemu_bytes, ml))
    return out


def first_difference(model_bytes: bytes, qemu_bytes: bytes, ml: ModelLoad) -> str:
    """Where two payloads part, by field path when both decode."""
    from harness.wire.payload import decode_payload

    at = next((i for i, (a, b) in enumerate(zip(model_bytes, qemu_bytes, strict=False)) if a != b),
              min(len(model_bytes), len(qemu_bytes)))
    where = f"byte {at} (model {len(model_bytes)} B, QEMU {len(qemu_bytes)} B)"
    try:
        params = ml.payload.params or {}  # the layout decisions the stream's own decode needed (net_multiqueue)
        a = decode_payload(model_bytes, ml.payload.transport, ml.payload.device, **params)
        b = decode_payload(qemu_bytes, ml.payload.transport, ml.payload.device, **params)
    except StreamError:
        return where
    diffs = tree_diff(a, b, names=("model", "QEMU"))
    return where + ("; " + "; ".join(diffs[:5]) if diffs else "")


# -- failure files ----------------------------------------------------------------------------------------


def write_disagreement(
    data: bytes,
    argv: Sequence[str],
    release: Version,
    model_verdict: ModelVerdict | None,
    qemu_verdict: Verdict,
    disagreements: Sequence[str],
    what: str,
    folder: Path | None = None,
    extra: dict[str, Any] | None = None,
    rule: str = RULE,
    key: str | None = None,
) -> Path:
    """A failure file for a disagreement (R12; or a rule real QEMU broke): the stream, the command
    line, and which side said what. `key` names the case when the stream is not stable across runs
    (QEMU's streams carry the RTC): the same key keeps the same file."""
    ident = key.encode() if key is not None else data + dest_line(argv).encode()
    digest = hashlib.sha1(ident + str(release).encode() + rule.encode()).hexdigest()[:10]
    outcome, error = overall(model_verdict) if model_verdict is not None else (None, None)
    record: dict[str, Any] = {
        "rule": rule, "what": what, "release": str(release), "qemu_cmdline": list(argv),
        "disagreements": list(disagreements),
        "model": {"outcome": outcome, "first_error": error,
                  "verdict": model_verdict.as_json() if model_verdict is not None else None},
        "qemu": {"outcome": qemu_verdict.outcome, "first_error": qemu_verdict.error,
                 "stderr": list(qemu_verdict.stderr), "returncode": qemu_verdict.returncode},
        "which_side_said_what": [f"model ({release}): {outcome}" + (f": {error}" if error else ""),
                                 f"QEMU: {qemu_verdict.outcome}" + (f": {qemu_verdict.error}" if qemu_verdict.error
                                                                   else "")],
        "stream": data.hex(),
        "replay": "write `stream` (hex) to FILE; model: virtio-compat verdict FILE --release "
                  f"{release} --dest '{dest_line(argv)}'; QEMU: the same command line plus -incoming defer, then "
                  "migrate-incoming exec:cat FILE",
        **(extra or {}),
    }
    return write_atomic(folder or FAILURES, f"{rule}-{digest}", record)
