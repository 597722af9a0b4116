"""An interrupted `virtio-compat check` (issue 5, "Faults in long runs"): SIGINT, SIGTERM, or SIGINT and then
SIGTERM, sent to the check process while pytest runs (booting its workers, or running cells), leaves the
previous reports exactly as they were (no half-written report, no staging folder, no temporary file), no
process (pytest and its xdist workers) behind, and a following check in the same folder succeeds."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from tests.faults.runs import (
    ROOT,
    assert_reports_whole,
    check_cmd,
    children,
    descendants,
    env,
    group_members,
    temp_files,
    wait_for,
    wait_gone,
)

REPORTS = ("compat-matrix.json", "compat-matrix.md", "compat-matrix.html", "junit.xml", "pytest.log")


def _snapshot(reports: Path) -> dict[str, bytes]:
    return {str(p.relative_to(reports)): p.read_bytes() for p in sorted(reports.rglob("*")) if p.is_file()}


def _check(reports: Path, when: str | None = None, signals: tuple[signal.Signals, ...] = ()) -> tuple[int, str, str]:
    """Run a check; with `when`, signal it once pytest is at that point: "workers" (xdist workers started)
    or "cells" (a cell's results written). Every process seen below it must be gone at the end."""
    proc = subprocess.Popen(check_cmd(reports), cwd=ROOT, env=env(reports), text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    seen: set[int] = set()
    pytest_pid = 0
    try:
        if when is not None:
            pytest_pid = wait_for("pytest", lambda: children(proc.pid), proc)[0]
            if when == "workers":
                wait_for("the xdist workers", lambda: len(children(pytest_pid)) >= 2, proc)
            else:
                parts = reports / ".check-run" / ".parts"
                wait_for("a cell's results", lambda: any(p.stat().st_size for p in parts.glob("*.jsonl")), proc)
            seen = descendants(proc.pid)
            for i, sig in enumerate(signals):
                if i:
                    time.sleep(0.3)
                proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    left = wait_gone(seen | set(group_members(pytest_pid) if pytest_pid else ()))
    assert not left, f"processes left behind by the check: {left}"
    return proc.returncode, out, err


def test_slow_subprocess_interrupted_check_keeps_reports_leaves_no_process_next_check_succeeds(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    reports.mkdir()
    for name in REPORTS:  # an earlier run's reports
        (reports / name).write_text("[]" if name.endswith(".json") else f"<r>earlier {name}</r>")
    before = _snapshot(reports)

    for when, signals in (("cells", (signal.SIGINT,)), ("workers", (signal.SIGTERM,)),
                          ("cells", (signal.SIGINT, signal.SIGTERM))):
        code, out, err = _check(reports, when, signals)
        what = f"{[s.name for s in signals]} while pytest runs {when}: {out + err}"
        assert code == 128 + signals[0], what
        assert "Traceback" not in out + err, what
        assert err.strip().splitlines()[-1] == (f"virtio-compat: check interrupted; no reports written (those in "
                                                f"{reports} are as they were)"), what
        assert _snapshot(reports) == before, what  # not one byte changed, nothing added (no staging folder)
        assert not temp_files(reports)

    code, out, err = _check(reports)  # the next check, in the same folder
    assert code in (0, 1) and "Traceback" not in out + err, out + err  # 1: a rule failed (the model's business)
    assert_reports_whole(reports)
    entries = json.loads((reports / "compat-matrix.json").read_text())
    assert len({(e["src"], e["dst"]) for e in entries}) == 4
    assert f"virtio-compat check: 4 cells, {len(entries)} results" in out
    assert set(before) <= set(_snapshot(reports)) and not (reports / ".check-run").exists()
