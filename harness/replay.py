"""`virtio-compat replay FILE`: re-run exactly the case of a failure file (reports/failures/<rule>-<hash>.json),
without Hypothesis or its database, and show why it fails: the rule, the configurations, an annotated dump of
the saved stream and the destination's load trace."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness.annotate import annotate, format_dump
from harness.errors import HarnessError, UsageError
from harness.failures import state_summary
from harness.matrix import EXCEPTION, Outcome, run_example
from harness.rules import Violation
from harness.wire.virtio import payload_layout
from models.config import Config, realize
from models.registry import BASE, Registry
from models.save import save_params as model_save_params
from models.serialize import from_json
from models.state import DeviceState

EXIT_PASSES, EXIT_FAILS = 0, 1
NEEDED = ("rule", "src_config", "dst_config", "state", "stream")


class RealPair(Exception):
    """A failure file of `virtio-compat qemu`: replayed on the real pair it records (harness/qemu/realcase.py)."""

    def __init__(self, record: dict[str, Any]) -> None:
        super().__init__("real pair")
        self.record = record


@dataclass
class Case:
    path: Path
    record: dict[str, Any]
    src: Config
    dst: Config
    state: DeviceState
    stream: bytes
    hostile: Any = None  # R10/R11: the hostile class (strategies/hostile.py) whose verdict judges the load
    registry: Registry = BASE  # the in-tree declarations and those of the schema modules the case was found with


def read_case(path: str) -> Case:
    """A failure file's case, or a UsageError saying in one line what is wrong with the file."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{path}: is a directory, not a failure file")
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    try:
        record = json.loads(text)
    except ValueError as e:
        raise UsageError(f"{path}: not a failure file (not JSON: {e})") from None
    if not isinstance(record, dict):
        raise UsageError(f"{path}: not a failure file (a JSON object is expected)")
    if "real_pair" in record:
        raise RealPair(record)
    missing = [k for k in NEEDED if k not in record]
    if missing:
        hint = f"; it says how to replay it: {record['replay']}" if isinstance(record.get("replay"), str) else ""
        raise UsageError(f"{path}: not a matrix failure file (no {', '.join(missing)}){hint}")
    registry = load_schemas(record.get("schema"), path)
    try:
        src, dst, state = (from_json(record[k]) for k in ("src_config", "dst_config", "state"))
        stream = bytes.fromhex(record["stream"])
        for config in (src, dst):
            if isinstance(config, Config) and config.machine not in registry.machine_types(config.release,
                                                                                          config.transport):
                raise UsageError(f"{path}: cannot rebuild the case: QEMU {config.release} has no machine type "
                                 f"{config.machine}")
    except HarnessError as e:
        raise UsageError(f"{path}: cannot rebuild the case: {e}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UsageError(f"{path}: cannot rebuild the case: {type(e).__name__}: {e}") from None
    if not (isinstance(src, Config) and isinstance(dst, Config) and isinstance(state, DeviceState)):
        raise UsageError(f"{path}: cannot rebuild the case: src_config, dst_config or state has the wrong type")
    return Case(p, record, src, dst, state, stream, hostile_class(record.get("hostile"), path), registry)


def hostile_class(name: Any, path: str) -> Any:
    """The hostile class a failure file names, from strategies/hostile.py; None for a file without one."""
    if name is None:
        return None
    from strategies.hostile import HOSTILE

    found = next((h for h in HOSTILE if h.name == name), None)
    if found is None:
        raise UsageError(f"{path}: the hostile class {name!r} is unknown (known: "
                         f"{', '.join(h.name for h in HOSTILE)})")
    return found


def load_schemas(paths: Any, path: str) -> Registry:
    """The declarations the case was found with: the in-tree ones and its schema modules' (models/schema.py)."""
    from harness.errors import SchemaError
    from models.schema import load

    registry = BASE
    for module in paths or []:
        try:
            registry = load(module, registry)
        except SchemaError as e:
            raise UsageError(f"{path}: needs the schema module {module}: {e}") from None
    return registry


def save_params(src: Config, state: DeviceState, registry: Registry = BASE) -> dict[str, Any]:
    """The layout decisions the source's save took from its own device (as models/save.py save() takes them)."""
    return model_save_params(realize(src, registry), state)


def annotated_stream(case: Case) -> str:
    layout = payload_layout(case.src.transport, case.registry.device(case.src.device).section, case.registry.wire)
    return format_dump(annotate(layout, case.stream, **save_params(case.src, case.state, case.registry)),
                       case.stream)


def _first_difference(a: bytes, b: bytes) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def verdict(case: Case, out: Outcome) -> tuple[int, list[str]]:
    """The exit code and what to say: 1 while the recorded rule (or another rule) still fails on the case."""
    rule = case.record["rule"]
    same = [v for v in out.violations if v.rule == rule]
    others = [v for v in out.violations if v.rule != rule]
    expected = [(v, k) for v, k in out.expected if v.rule == rule]
    lines = []
    if case.hostile is not None:
        lines.append(f"hostile class {case.hostile.name} ({case.hostile.source}): "
                     f"{case.hostile.verdict(case.dst.release)} on {case.dst.release}")
    if same:
        lines.append(f"now:   {rule} STILL FAILS: expected {same[0].expected}; got {same[0].got}")
    elif expected:
        lines.append(f"now:   {rule} fails as a declared incompatibility ({expected[0][1].name}): counted as expected")
    else:
        lines.append(f"now:   {rule} passes")
    for v in others:
        lines.append(f"       but {v.rule} fails on this case: expected {v.expected}; got {v.got}")
    return (EXIT_FAILS if same or others else EXIT_PASSES), lines


def _violation_details(v: Violation) -> list[str]:
    out = [f"  {k}: {val!r}"[:300] for k, val in sorted(v.details.items()) if k not in ("lines", "traceback")]
    if "traceback" in v.details:  # the whole of it: where the model raised is the point of the case
        out += ["  " + line for line in str(v.details["traceback"]).splitlines()]
    return out


def report(case: Case, out: Outcome) -> tuple[int, str]:
    """The text `replay` prints and its exit code."""
    rec, run = case.record, out.run
    code, now = verdict(case, out)
    text = [f"replay {case.path}" + (f" (cell {rec['cell']})" if rec.get("cell") else ""),
            f"rule:  {rec['rule']}: expected {rec.get('expected', '?')}; got {rec.get('got', '?')} (when saved)",
            *now]
    for v in out.violations:
        text += _violation_details(v)
    shown = state_summary(case.src, case.state, limit=2000, registry=case.registry)  # what differs from reset
    text += ["", f"source:      {case.src.describe()}", f"destination: {case.dst.describe()}",
             f"state:       {shown}", ""]
    if run is None:  # the model raised before the load gave a result
        text += [f"the model raised; no stream or load to show (rule {EXCEPTION})", "",
                 f"exit {code}: " + ("the case still fails" if code else "the case passes")]
        return code, "\n".join(text)
    saved = case.stream
    if run.data == saved:
        text.append(f"saved stream: {len(saved)} bytes (the model saves the same bytes now)")
    else:
        text.append(f"saved stream: {len(saved)} bytes (the model now saves {len(run.data)} bytes, first difference "
                    f"at offset {_first_difference(run.data, saved):#x}; the load below is of the new bytes)")
    # a file saved when the model raised has no stream: the one the model saves now
    text += [annotated_stream(case if saved else replace(case, stream=run.data)), ""]
    rings = [f"queue {i}: avail idx {q.avail_idx:#x}, used idx {q.used_idx:#x}"
             for i, q in enumerate(case.state.queues) if q.desc]
    if rings:  # not in the stream: guest RAM, which the ring checks read
        text += ["guest RAM ring indices (read by the ring checks):"] + [f"  {r}" for r in rings] + [""]
    res = run.result
    text.append(f"load by the destination (QEMU {case.dst.release}): {res.outcome}"
                + (f": {res.error}" if res.error else ""))
    text.append("trace:")
    text += [f"  {i + 1:>2}. {step}" for i, step in enumerate(res.trace.steps)]
    text.append("early reads:" + ("" if res.trace.early_reads else " none"))
    text += [f"  - {r}" for r in res.trace.early_reads]
    text.append("error lines:" + ("" if res.lines else " none"))
    text += [f"  {line}" for line in res.lines]
    text += ["", f"exit {code}: " + ("the case still fails" if code else "the case passes")]
    return code, "\n".join(text)


def replay(path: str) -> tuple[int, str]:
    try:
        case = read_case(path)
    except RealPair as real:
        from harness.qemu import realcase  # only a real-pair file needs QEMU's side

        return realcase.replay(path, real.record)
    try:
        out = run_example(case.src, case.dst, case.state, hostile=case.hostile, registry=case.registry)
    except HarnessError as e:
        raise UsageError(f"{path}: cannot re-run the case: {e}") from None
    return report(case, out)


def run_cli(path: str) -> int:
    code, text = replay(os.fspath(path))
    print(text)
    return code
