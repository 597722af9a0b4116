"""A worker killed in the middle of a run (issue 5, "Faults in long runs"): SIGKILL one xdist worker while the
cells run; the run still ends, its reports are whole (no half-written file, no temporary file, only complete
result lines merged), no process of the run is left, and the next run in the same folder is a normal run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

from tests.faults.runs import (
    ROOT,
    assert_reports_whole,
    children,
    descendants,
    env,
    group_members,
    kill_group,
    parts_lines,
    pytest_cmd,
    wait_for,
    wait_gone,
)

ALL_TRANSPORTS = ("--transports", "pci,mmio,ccw")  # twelve cells: the workers are busy for a few seconds
CELLS = 12


def _complete(entries: list[dict[str, Any]]) -> None:
    """Every cell is there with every rule its direction checks (cells of one direction check the same rules)."""
    rules: dict[tuple[str, str, str, str], set[str]] = defaultdict(set)
    for e in entries:
        rules[(e["src"], e["dst"], e["transport"], e["device"])].add(e["rule"])
    assert len(rules) == CELLS, sorted(rules)
    for direction in (-1, 0, 1):
        sets = {frozenset(r) for (src, dst, _, _), r in rules.items() if _direction(src, dst) == direction}
        assert len(sets) == 1, sets


def _direction(src: str, dst: str) -> int:
    a, b = (tuple(map(int, v.split("."))) for v in (src, dst))
    return (a > b) - (a < b)


def _run(reports: Path, kill_a_worker: bool) -> tuple[int, str, set[int]]:
    """The run's exit code and output, and every process seen in it (the killed worker included)."""
    proc = subprocess.Popen(pytest_cmd(reports, 2, *ALL_TRANSPORTS), cwd=ROOT, env=env(reports), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    seen: set[int] = set()
    try:
        if kill_a_worker:
            def first_result() -> bool:
                return any(p.stat().st_size for p in (reports / ".parts").glob("*.jsonl"))

            wait_for("a cell's results", first_result, proc)
            workers = wait_for("two workers", lambda: len(children(proc.pid)) >= 2 and children(proc.pid), proc)
            seen = descendants(proc.pid)
            os.kill(workers[0], signal.SIGKILL)
        out, _ = proc.communicate(timeout=120)
    finally:
        left = wait_gone(seen | set(group_members(proc.pid)))
        kill_group(proc.pid)
    assert not left, f"processes left behind by the run: {left}"
    return proc.returncode, out, seen


def test_slow_subprocess_killed_worker_leaves_whole_reports_no_process_and_a_clean_next_run(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    code, out, seen = _run(reports, kill_a_worker=True)
    assert len(seen) >= 2
    assert code == 1 and "crashed while running" in out, out  # xdist reports the cell the worker was running
    assert_reports_whole(reports)
    good, bad = parts_lines(reports)
    assert bad == 0  # one write per line: a SIGKILL cannot cut one
    killed = json.loads((reports / "compat-matrix.json").read_text())
    key = lambda e: json.dumps(e, sort_keys=True)  # noqa: E731
    assert sorted(map(key, killed)) == sorted(map(key, good))  # every complete result line, nothing else

    # what a run killed in the middle of a write leaves (harness.failures.write_files_atomic): the next run clears it
    (reports / "failures").mkdir(exist_ok=True)
    for stale in (reports / ".compat-matrix.json.k1ll3d.tmp", reports / "failures" / ".R1-0123456789.json.x.tmp"):
        stale.write_text('{"half": ')
    code, out, _ = _run(reports, kill_a_worker=False)  # the next run, in the same folder
    assert code in (0, 1) and "crashed while running" not in out, out  # 1: a rule failed (the model)
    assert_reports_whole(reports)
    merged = json.loads((reports / "compat-matrix.json").read_text())
    _complete(merged)
    assert len(killed) < len(merged)  # the killed worker's cell was missing (pytest reported it crashed)
    assert len(set(map(key, merged))) == len(merged)  # no result twice: nothing of the killed run was merged
    assert len(parts_lines(reports)[0]) == len(merged)


def test_parts_merge_drops_cut_and_foreign_lines(tmp_path: Path) -> None:
    """What a killed writer can leave in a part: the merge keeps the complete result lines only."""
    from harness.pytest_plugin import read_parts

    good = {"src": "7.2", "dst": "7.2", "transport": "pci", "device": "virtio-rng", "rule": "R1", "outcome": "pass"}
    line = json.dumps(good, sort_keys=True)
    parts = tmp_path / ".parts"
    parts.mkdir()
    (parts / "gw0.jsonl").write_text(f"{line}\n{line[:40]}")  # cut at the end
    (parts / "gw1.jsonl").write_bytes(b"7\n[1]\n" + line[:-1].encode() + b"\n{\"rule\": \"R1\"}\n\xff\xfe\n"
                                      + line.encode() + b"\n")
    assert read_parts(parts) == [good, good]
