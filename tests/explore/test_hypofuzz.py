"""The nightly fuzzer: HypoFuzz over the cells' test_fuzz_cell targets starts, keeps its corpus under the database
key test_cell uses (so the matrix replays what it finds), and stops cleanly on SIGINT with nothing left behind;
`check --fuzz` runs it for a time and then the matrix (issue 16.7).

The cells here pass: HypoFuzz 25.11.1 cannot shrink a failure under Hypothesis >= 6.160 (it reads
`slice_comments`, which Hypothesis removed), so a failing cell would stop it with its own traceback."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.check import FUZZ_STOP_GRACE, fuzz_command, matrix_module
from tests.faults.runs import group_members, wait_gone

pytest.importorskip("hypofuzz", reason="HypoFuzz is not installed (pip install -e '.[test]')")

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "examples" / "schemas" / "net_foo_gated.py"  # the fix: every cell passes
NARROW = ("--schema", str(SCHEMA), "--releases", "11.1,11.2", "--devices", "virtio-net", "--transports", "pci")


def test_slow_subprocess_hypofuzz_fuzzes_under_test_cells_key_and_stops_on_sigint(tmp_path: Path) -> None:
    from hypothesis.database import DirectoryBasedExampleDatabase

    from harness.matrix import Cell
    from harness.pytest_matrix import fuzz_database_key
    from models.releases import V

    db = tmp_path / "db"
    args = argparse.Namespace(n="1", releases="11.1,11.2", devices="virtio-net", transports="pci", machines=None,
                              schema=[str(SCHEMA)], example_db=str(db))
    cmd = [*fuzz_command(args, matrix_module()), "-k", "11.2-11.1"]  # one cell: HypoFuzz starts on it at once
    log = tmp_path / "fuzz.log"
    env = {**os.environ, "HYPOTHESIS_PROFILE": "nightly", "VIRTIO_COMPAT_REPORTS": str(tmp_path / "reports")}
    key = fuzz_database_key(Cell(V("11.2"), V("11.1"), "pci", "virtio-net"))
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        found: list[bytes] = []
        while time.monotonic() < deadline and proc.poll() is None and not found:
            time.sleep(1)
            # its corpus (the inputs that reached new coverage), beside the key's failures
            found = list(DirectoryBasedExampleDatabase(str(db)).fetch(key + b".hypofuzz.corpus"))
        assert proc.poll() is None, log.read_text()[-3000:]
        assert found, "HypoFuzz kept nothing under test_cell's key in 240 s: " + log.read_text()[-3000:]
        assert "fuzz 1 test" in log.read_text()
        # as `check --fuzz` stops it: SIGINT to its group, SIGKILL after the grace (a loaded machine can keep
        # HypoFuzz's own shutdown past it; what it stored is in the database already)
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=FUZZ_STOP_GRACE)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        left = wait_gone(group_members(proc.pid), 5.0)  # zombies of killed workers do not count
        assert not left, f"HypoFuzz left processes behind after SIGINT (and SIGKILL after the grace): {left}"
    finally:
        if group_members(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    # the matrix with the same database and the fuzzer's profile passes
    reports = tmp_path / "reports"
    p = subprocess.run([sys.executable, "-m", "harness.cli", "check", *NARROW, "--reports", str(reports), "-n", "0",
                        "--seed", "5", "--example-db", str(db)], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stdout + p.stderr


def test_slow_subprocess_check_fuzz_runs_for_its_time_then_the_matrix(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    started = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "harness.cli", "check", *NARROW, "--reports", str(reports), "-n", "1",
                        "--fuzz", "0.25", "--example-db", str(tmp_path / "db")], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
    assert time.monotonic() - started >= 15
    assert p.returncode == 0, p.stdout + p.stderr
    assert "HypoFuzz ran 0.2 minutes" in p.stdout or "HypoFuzz ran 0.3 minutes" in p.stdout, p.stdout
    assert "4 cells" in p.stdout
    assert "Traceback" not in p.stdout + p.stderr
    assert (reports / "fuzz-matrix.log").is_file()
    left = subprocess.run(["pgrep", "-f", f"--reports={reports}"], capture_output=True, text=True).stdout
    assert not left.strip()


def test_check_fuzz_needs_a_positive_time(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "harness.cli", "check", "--fuzz", "0", "--releases", "11.1"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60, env={**os.environ,
                                                                                     "PYTHONPATH": str(ROOT)})
    assert p.returncode == 2 and "--fuzz: expected a positive number of minutes" in p.stderr
