"""A full disk while writing a failure file or a report (issue 5, "Faults in long runs"), simulated with a
file-size limit (RLIMIT_FSIZE) in a subprocess: no half-written file and no temporary file is left, the
error is one line (harness.failures.WriteError), and at the CLI (`virtio-compat check`) it is a clear
message with no traceback; the next check in the same folder works."""

from __future__ import annotations

import json
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.faults.runs import (
    BROKEN_MODERN,
    BROKEN_STARTED,
    ROOT,
    assert_reports_whole,
    check_cmd,
    descendants,
    env,
    temp_files,
    wait_gone,
)


def _child(scenario: str, folder: Path) -> dict[str, Any]:
    p = subprocess.run([sys.executable, "-m", "tests.faults.full_disk_child", scenario, str(folder)], cwd=ROOT,
                       env=env(folder), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    result: dict[str, Any] = json.loads(p.stdout)
    return result


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_failure_file_larger_than_the_disk_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "R9-0123456789.json").write_text('{"rule": "R9"}')  # an earlier case's file
    before = _files(tmp_path)
    got = _child("failure", tmp_path)
    assert got["raised"] == "WriteError", got
    message: str = got["message"]
    assert message.startswith(f"cannot write {tmp_path}/R") and message.endswith(".json: File too large"), message
    assert "\n" not in message
    assert _files(tmp_path) == before  # no part of the new file, no temporary file, the old one untouched


def test_reports_larger_than_the_disk_replace_none_of_the_earlier_ones(tmp_path: Path) -> None:
    for name in ("compat-matrix.json", "compat-matrix.md", "compat-matrix.html"):
        (tmp_path / name).write_text("[]" if name.endswith(".json") else f"earlier {name}")
    before = _files(tmp_path)
    got = _child("reports", tmp_path)
    assert got["raised"] == "WriteError", got
    assert got["message"] == f"cannot write {tmp_path}/compat-matrix.json: File too large"
    assert _files(tmp_path) == before  # all three as they were: the set is replaced whole or not at all


def test_result_line_cut_by_the_disk_is_taken_back(tmp_path: Path) -> None:
    from harness.pytest_plugin import read_parts

    got = _child("parts", tmp_path)
    assert got["raised"] == "WriteError" and got["written"] == 2, got
    assert got["message"] == f"cannot write {tmp_path}/.parts/main.jsonl: File too large"
    part = (tmp_path / ".parts" / "main.jsonl").read_bytes()
    assert part.endswith(b"\n") and len(part.splitlines()) == 2  # no half line for the next one to land on
    assert [e["rule"] for e in read_parts(tmp_path / ".parts")] == ["R1", "R2"]


def _check_with_limit(reports: Path, plugin: str, limit: int | None) -> tuple[int, str, str]:
    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    proc = subprocess.Popen(check_cmd(reports), cwd=ROOT, env=env(reports, plugin), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=limited)
    seen: set[int] = set()
    try:
        while proc.poll() is None:  # every process the check starts, to see that none is left
            seen |= descendants(proc.pid)
            try:
                out, err = proc.communicate(timeout=0.2)
            except subprocess.TimeoutExpired:
                continue
        else:
            out, err = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not wait_gone(seen), "processes left behind by the check"
    assert "Traceback" not in out + err, out + err
    return proc.returncode, out, err


@pytest.mark.parametrize("plugin, limit, lost", [
    # neither the failure file (about 8.8 KB) nor the matrix report (about 15 KB) fits; each worker's parts (up to
    # about 8 KB: two cells of nine rules each, with the boundary phase's machine types) do
    (BROKEN_STARTED, 8_500, "reports"),
    # the failure file (about 100 KB) does not fit, the reports (about 10 KB) do; then the disk has room again
    (BROKEN_MODERN, 40_000, "failure file"),
])
def test_slow_subprocess_check_on_a_full_disk_says_so_in_one_line_and_the_next_check_works(
        tmp_path: Path, plugin: str, limit: int, lost: str) -> None:
    reports = tmp_path / "reports"
    code, out, err = _check_with_limit(reports, plugin, limit)
    assert code == 1, out + err
    assert not temp_files(reports) and not (reports / ".check-run").exists()
    assert_reports_whole(reports)
    log = (reports / "pytest.log").read_text()
    rule = "R4" if plugin == BROKEN_STARTED else "R1"  # the broken cell's failure file
    assert not list((reports / "failures").glob(f"{rule}-*.json")), "a failure file larger than the disk"
    assert f"WriteError: cannot write {reports}/failures/{rule}-" in log and ".json: File too large" in log
    if lost == "failure file":
        # the cell was recorded before its failure file was tried: the report still shows it failing
        assert re.search(r"\b1 fail\b", out), out
        entries = json.loads((reports / "compat-matrix.json").read_text())
        assert any(e["rule"] == rule and e["outcome"] == "fail" for e in entries)
    else:
        assert err.strip().splitlines()[-1] == ("virtio-compat check: pytest stopped with exit code 3 before the "
                                                f"reports were written; its output: {reports / 'pytest.log'}"), err
        assert (f"virtio-compat: the reports were not written: cannot write {reports}/.check-run/"
                "compat-matrix.json: File too large") in log
        assert not list(reports.glob("compat-matrix.*"))
        return

    code, out, err = _check_with_limit(reports, plugin, None)  # the disk has room again
    assert code == 1, out + err  # the broken model's cell fails
    assert_reports_whole(reports)
    entries = json.loads((reports / "compat-matrix.json").read_text())
    assert len({(e["src"], e["dst"]) for e in entries}) == 4
    assert any((e["src"], e["dst"], e["rule"], e["outcome"]) == ("7.2", "7.2", rule, "fail") for e in entries)
    assert len(list((reports / "failures").glob(f"{rule}-*.json"))) == 1
