"""Failure files: everything needed to replay a failing case without Hypothesis' database.
Written atomically under a unique name, so that many xdist workers never collide or leave half a file."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from harness.matrix import Cell, Outcome
from harness.rules import Violation
from models.config import Config
from models.serialize import to_json
from models.state import DeviceState

FAILURES = Path(os.environ.get("VIRTIO_COMPAT_REPORTS", "reports")) / "failures"


def failure_record(cell: Cell | None, src: Config, dst: Config, state: DeviceState, out: Outcome,
                   v: Violation) -> dict[str, Any]:
    return {
        "rule": v.rule, "expected": v.expected, "got": v.got, "details": repr(v.details)[:2000],
        "cell": cell.id if cell else None, "source": src.describe(), "destination": dst.describe(),
        "src_config": to_json(src), "dst_config": to_json(dst), "state": to_json(state),
        "stream": out.run.data.hex(), "outcome": out.run.result.outcome, "error_lines": list(out.run.result.lines),
        "trace": list(out.run.result.trace.steps), "early_reads": list(out.run.result.trace.early_reads),
        "seed": os.environ.get("PYTEST_XDIST_TESTRUNUID") or None,
    }


def write_atomic(folder: Path, stem: str, payload: dict[str, Any]) -> Path:
    """Write `payload` as `folder/stem.json` via a temporary file and a rename: the file is either
    complete or absent. An existing file with the same name holds the same case and is kept."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.json"
    if path.exists():
        return path
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_failure(cell: Cell | None, src: Config, dst: Config, state: DeviceState, out: Outcome,
                  v: Violation, folder: Path | None = None) -> Path:
    record = failure_record(cell, src, dst, state, out, v)
    digest = hashlib.sha1(json.dumps([record["src_config"], record["dst_config"], record["state"], v.rule],
                                     sort_keys=True).encode()).hexdigest()[:10]
    record["replay"] = f"virtio-compat replay {(folder or FAILURES) / f'{v.rule}-{digest}.json'}"
    return write_atomic(folder or FAILURES, f"{v.rule}-{digest}", record)
