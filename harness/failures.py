"""Failure files: everything needed to replay a failing case without Hypothesis' database.
Written atomically under a unique name, so that many xdist workers never collide or leave half a file."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from harness import interrupt
from harness.errors import HarnessError
from harness.matrix import Cell, Outcome
from harness.rules import Violation
from models.config import Config, realize
from models.registry import BASE, Registry
from models.serialize import to_json
from models.state import DeviceState

FAILURES = Path(os.environ.get("VIRTIO_COMPAT_REPORTS", "reports")) / "failures"


def failure_record(cell: Cell | None, src: Config, dst: Config, state: DeviceState, out: Outcome,
                   v: Violation, registry: Registry = BASE) -> dict[str, Any]:
    return {
        "rule": v.rule, "expected": v.expected, "got": v.got, "details": repr(v.details)[:2000],
        "traceback": v.details.get("traceback"),  # an exception in the model (rule exception): where it rose
        "hostile": v.details.get("class"),  # R10/R11: the hostile class (strategies/hostile.py) replay judges it by
        "cell": cell.id if cell else None, "source": src.describe(), "destination": dst.describe(),
        "src_config": to_json(src), "dst_config": to_json(dst), "state": to_json(state),
        **run_record(out),
        "seed": hypothesis_seed(),
        "schema": registry.schema_paths(),  # the schema modules the case needs (`replay` loads them again)
        "minimized_state": state_summary(src, state, registry=registry),
    }


def run_record(out: Outcome) -> dict[str, Any]:
    """The saved stream and the destination's load; none when the model raised before they were made."""
    run = out.run
    if run is None:
        return {"stream": "", "outcome": None, "error_lines": [], "trace": [], "early_reads": []}
    return {"stream": run.data.hex(), "outcome": run.result.outcome, "error_lines": list(run.result.lines),
            "trace": list(run.result.trace.steps), "early_reads": list(run.result.trace.early_reads)}


def hypothesis_seed() -> str | None:
    """What makes Hypothesis draw this run's examples again: a derandomized profile needs nothing (its seed
    follows from the test), else the run's seed (harness/explore.py: the commit, --hypothesis-seed, `check
    --seed`), the same in every worker and shard. The file itself needs neither: it holds the whole case."""
    from hypothesis import settings

    from harness.explore import run_seed

    if settings().derandomize:
        return "derandomized"
    return str(run_seed().value)


class WriteError(HarnessError):
    """A report or failure file that could not be written (a full disk, a file-size limit, no permission)."""


def write_atomic(folder: Path, stem: str, payload: dict[str, Any]) -> Path:
    """Write `payload` as `folder/stem.json` via a temporary file and a rename: the file is either
    complete or absent. An existing file with the same name holds the same case and is kept."""
    path = folder / f"{stem}.json"
    if path.exists():
        return path
    text = json.dumps(payload, indent=1, sort_keys=True)  # a payload that does not serialize leaves no file
    return write_files_atomic([(path, text)])[0]


def write_files_atomic(files: list[tuple[Path, str]]) -> list[Path]:
    """Write each (path, text) through a temporary file beside it, then rename them all: a reader sees the
    old files or the new ones, never a part of one, and if any cannot be written none is replaced. No
    temporary file is left behind, whatever happens (a full disk, a signal); an OSError becomes one line."""
    temps: list[str] = []
    current = files[0][0] if files else Path()
    with interrupt.deferred():  # a signal waits until the files are renamed or their temporaries removed
        try:
            for current, text in files:
                current.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=current.parent, prefix=f".{current.name}.", suffix=".tmp")
                temps.append(tmp)
                with os.fdopen(fd, "wb") as f:
                    os.fchmod(f.fileno(), 0o644)  # not mkstemp's 0600: reports are read by others (CI, a web server)
                    f.write(text.encode())
                    f.flush()
                    os.fsync(f.fileno())
            for (current, _), tmp in zip(files, temps, strict=True):
                os.replace(tmp, current)
        except OSError as e:
            raise WriteError(f"cannot write {current}: {e.strerror or e}") from None
        finally:
            for tmp in temps:
                Path(tmp).unlink(missing_ok=True)  # the renamed ones are gone already
    return [path for path, _ in files]


def write_failure(cell: Cell | None, src: Config, dst: Config, state: DeviceState, out: Outcome,
                  v: Violation, folder: Path | None = None, registry: Registry = BASE) -> Path:
    record = failure_record(cell, src, dst, state, out, v, registry)
    digest = hashlib.sha1(json.dumps([record["src_config"], record["dst_config"], record["state"], v.rule],
                                     sort_keys=True).encode()).hexdigest()[:10]
    record["replay"] = f"virtio-compat replay {(folder or FAILURES) / f'{v.rule}-{digest}.json'}"
    return write_atomic(folder or FAILURES, f"{v.rule}-{digest}", record)


def state_summary(src: Config, state: DeviceState, limit: int = 300, registry: Registry = BASE) -> str:
    """The (minimized) state in one line: what differs from the source's state after realize and reset."""
    import dataclasses

    from models.model import reset_state

    reset = reset_state(realize(src, registry))
    out = []
    for f in dataclasses.fields(state):
        a, b = getattr(state, f.name), getattr(reset, f.name)
        if f.name == "extra":
            out += [f"{k}={v}" for k, v in a if dict(b).get(k) != v]
        elif dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b) and type(a) is type(b):
            out += [f"{f.name}.{g.name}={_shown(getattr(a, g.name), getattr(b, g.name))}" for g in dataclasses.fields(a)
                    if getattr(a, g.name) != getattr(b, g.name)]
        elif a != b and f.name != "queues":
            out.append(f"{f.name}={_shown(a, b)}")
    queues = [i for i, (q, r) in enumerate(zip(state.queues, reset.queues, strict=False)) if q != r]
    if queues:
        out.append(f"queues {queues} set up")
    text = ", ".join(out) or "the reset state"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _shown(value: Any, reset: Any) -> str:
    """A field's value in the state summary: ints in hex (flags and addresses), bytes as where they differ from
    the reset value (a config space or a table is too long to show)."""
    if isinstance(value, bytes) and isinstance(reset, bytes):
        if len(value) != len(reset):
            return f"<{len(value)} bytes, {len(reset)} after reset>"
        at = [i for i, (x, y) in enumerate(zip(value, reset, strict=True)) if x != y]
        return f"<{len(at)} of {len(value)} bytes changed from offset {at[0]:#x}>"
    if isinstance(value, int) and not isinstance(value, bool):
        return hex(value)
    return repr(value)
