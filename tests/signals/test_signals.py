"""Ctrl-C and SIGTERM (issue 14): every long command, run for real in a process group of its own and sent a real
signal at a random moment (seeded: the seed is in every message, $VIRTIO_COMPAT_SIGNAL_SEED repeats it), to the
group or to its main process alone, exits 128 + signal within 2 s with one line on stderr saying what it kept, no
traceback, no process left in its group, no temporary folder left, and every report file complete or as it was.
`fleet install` has the same test in tests/fleet (it downloads)."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from hashlib import sha1
from pathlib import Path

import pytest

from harness.qemu.process import find_qemu
from tests.faults.runs import (
    BROKEN_STARTED,
    NARROW,
    assert_reports_whole,
    children,
    env,
    group_members,
    run_and_signal,
    signal_seed,
    temp_files,
    wait_for_process,
    wait_gone,
)

CLI = [sys.executable, "-m", "harness.cli"]


def _deliveries(*which: tuple[signal.Signals, bool]) -> list[object]:
    """(signal, to the group?) pairs as parameters: two per command, to keep the suite fast (each pair goes
    through the same handler; the random moments vary from run to run)."""
    return [pytest.param(sig, group, id=f"{sig.name}-{'group' if group else 'main'}") for sig, group in which]


# Ctrl-C in a terminal, and SIGTERM to the main process alone (a CI runner's timeout)
CTRL_C_AND_TERM = _deliveries((signal.SIGINT, True), (signal.SIGTERM, False))


@pytest.fixture
def tmpdir_env(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path]]:
    """The environment of a run: its own TMPDIR (short: QEMU's socket paths), which must be empty at the end,
    and reports under tmp_path."""
    tmp = Path(tempfile.mkdtemp(prefix="vc-sig-", dir="/tmp"))
    reports = tmp_path / "reports"
    try:
        yield {**env(reports), "TMPDIR": str(tmp)}, tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _no_temp_left(tmp: Path, what: str) -> None:
    left = sorted(p.name for p in tmp.iterdir())
    assert not left, f"{what}: temporary folders left: {left}"


def _moment(seed: int, lo: float, hi: float, run: str) -> tuple[float, float | None, str]:
    """When to send the signal, (one time in three) when to send it again (a second Ctrl-C in the clean-up),
    and the run's description for the assertion messages."""
    rng = random.Random(seed)
    at, again = round(rng.uniform(lo, hi), 3), (round(rng.uniform(0.0, 0.2), 3) if rng.random() < 1 / 3 else None)
    return at, again, f"{run}, signal at {at} s{f' and {again} s later' if again is not None else ''} (seed {seed})"


# -- fuzz: findings so far, whole -----------------------------------------------------------------------------


@pytest.mark.parametrize(("sig", "group"), CTRL_C_AND_TERM)
def test_fuzz_stops_keeping_whole_findings(sig: int, group: bool, tmpdir_env: tuple[dict[str, str], Path],
                                           tmp_path: Path) -> None:
    environ, tmp = tmpdir_env
    out = tmp_path / "reports" / "fuzz"
    seed = signal_seed()
    at, again, what = _moment(seed, 0.0, 2.5, "fuzz")  # importing, loading the seeds, or fuzzing (finding, saving)
    cmd = [sys.executable, "-m", "tests.signals.planted_fuzz", "fuzz", "--minutes", "1", "--out", str(out)]
    r = run_and_signal(cmd, sig, group=group, at=at, again=again, env=environ, what=what)
    line = r.assert_stopped(sig, "fuzz interrupted")
    saved = sorted(out.glob("*")) if out.is_dir() else []
    for p in saved:  # a finding is named by its content: a file cut short would not match its name
        assert p.name == f"crash-{sha1(p.read_bytes()).hexdigest()[:12]}.bin", f"{r.what}: {p.name}"
    assert len(saved) == r.out.count("  reproduce: "), f"{r.what}: {r.out}"
    assert (f"{len(saved)} finding(s) kept in {out}" if saved else "no finding") in line or \
        "before its first input" in line, f"{r.what}: {line}"
    _no_temp_left(tmp, r.what)


# -- qemu: no QEMU left, failure files whole --------------------------------------------------------------------


def _qemu_pair() -> tuple[str, str]:
    """11.1 -> 5.2 of the fleet (it writes failure files: the model disagrees on some states), else the system's
    QEMU with itself."""
    for pair in (("11.1", "5.2"), ("qemu-system-x86_64", "qemu-system-x86_64")):
        try:
            for binary in pair:
                find_qemu(binary)
        except Exception:
            continue
        return pair
    pytest.skip("no QEMU: qemu-system-x86_64 not on PATH and no fleet (`virtio-compat fleet install`)")


@pytest.mark.qemu
@pytest.mark.parametrize(("sig", "group"), _deliveries((signal.SIGINT, True), (signal.SIGINT, False)))  # issue 14
def test_qemu_stops_leaving_no_qemu(sig: int, group: bool, tmpdir_env: tuple[dict[str, str], Path],
                                    tmp_path: Path) -> None:
    src, dst = _qemu_pair()
    environ, tmp = tmpdir_env
    seed = signal_seed()
    at, again, what = _moment(seed, 0.0, 3.0, f"qemu {src} -> {dst}")  # probing, starting, driving, migrating, writing
    cmd = [*CLI, "qemu", "--src-binary", src, "--dst-binary", dst, "--examples", "4000"]
    r = run_and_signal(cmd, sig, group=group, at=at, again=again, env=environ, what=what)
    line = r.assert_stopped(sig, "qemu interrupted")
    assert "no failure file written" in line or "failure file" in line, f"{r.what}: {line}"
    if (tmp_path / "reports").is_dir():
        assert_reports_whole(tmp_path / "reports")  # failure files: whole JSON, no temporary file
    _no_temp_left(tmp, r.what)


# -- mutate: no QEMU left, the summary of the mutants so far ---------------------------------------------------


@pytest.mark.qemu
@pytest.mark.parametrize(("sig", "group"), CTRL_C_AND_TERM)
def test_mutate_stops_keeping_its_summary(sig: int, group: bool, tmpdir_env: tuple[dict[str, str], Path],
                                          tmp_path: Path) -> None:
    binary = _qemu_pair()[0]
    environ, tmp = tmpdir_env
    out = tmp_path / "mutate"
    seed = signal_seed()
    at, again, what = _moment(seed, 0.0, 4.0, f"mutate {binary}")  # starting the source, saving, loading mutants
    cmd = [*CLI, "mutate", "--binary", binary, "--mutants", "5000", "--out", str(out), "--log", str(tmp_path / "log")]
    r = run_and_signal(cmd, sig, group=group, at=at, again=again, env=environ, what=what)
    line = r.assert_stopped(sig, "")
    summaries = sorted(out.glob("summary-*.json")) if out.is_dir() else []
    if "mutate interrupted after" in line:  # the tally existed: its summary is whole and says it was cut short
        assert len(summaries) == 1, f"{r.what}: {summaries}"
        summary = json.loads(summaries[0].read_text())
        assert summary["interrupted"] is True and f"after {summary['mutants']} mutants" in line, f"{r.what}: {line}"
    else:  # stopped before the source QEMU gave its first stream
        assert line == "virtio-compat: interrupted" and not summaries, f"{r.what}: {line}"
    assert not list(out.rglob(".*.tmp")) if out.is_dir() else True, r.what
    _no_temp_left(tmp, r.what)


# -- check: pytest and its workers gone, reports as they were, failure files whole --------------------------------


@pytest.mark.parametrize(("sig", "group"), CTRL_C_AND_TERM)
def test_check_stops_while_shrinking(sig: int, group: bool, tmpdir_env: tuple[dict[str, str], Path],
                                     tmp_path: Path) -> None:
    """A matrix whose 7.2 -> 2.6 cell fails R4 (tests/faults/broken_started): the signal comes while pytest starts,
    runs cells, shrinks the failing one or writes its failure file."""
    environ, tmp = tmpdir_env
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "compat-matrix.json").write_text("[]")  # an earlier run's
    seed = signal_seed()
    # collecting, starting the workers, running cells; the failing cell shrinks for most of the run (the whole run
    # takes 4 s on an idle 2-core machine, 10 s on a loaded one) before its failure file is written
    at, again, what = _moment(seed, 0.0, 2.5, "check, after pytest started")

    pytest_group = []

    def moment(proc: subprocess.Popen[str]) -> None:
        # pytest runs in a process group of its own (check stops it): a signal to the group reaches check alone
        pytest_group.append(wait_for_process("-m\0pytest", lambda: children(proc.pid), proc))
        time.sleep(at)

    cmd = [*CLI, "check", *NARROW, "-n", "2", "--reports", str(reports)]
    r = run_and_signal(cmd, sig, group=group, at=moment, again=again, env={**environ, "PYTEST_PLUGINS": BROKEN_STARTED},
                       what=what)
    line = r.assert_stopped(sig, "check interrupted; no reports written")
    left = wait_gone(group_members(pytest_group[0]), 0.5)  # by now (a second or two after the signal)
    assert not left, f"{r.what}: pytest's processes left: {left}"
    assert (reports / "compat-matrix.json").read_text() == "[]", r.what
    assert not (reports / ".check-run").exists() and not temp_files(reports), r.what
    assert_reports_whole(reports)
    failures = sorted((reports / "failures").glob("*.json"))
    assert (f"{len(failures)} failure file" in line) if failures else "failure file" not in line, f"{r.what}: {line}"
    for p in failures:
        assert json.loads(p.read_text())["rule"] == "R4", r.what
    _no_temp_left(tmp, r.what)


# -- bench: workers and their QEMUs gone ------------------------------------------------------------------------


@pytest.mark.parametrize(("sig", "group"), _deliveries((signal.SIGTERM, True)))
def test_bench_stops_in_the_model_figures(sig: int, group: bool, tmpdir_env: tuple[dict[str, str], Path]) -> None:
    environ, tmp = tmpdir_env
    seed = signal_seed()
    at, again, what = _moment(seed, 0.0, 2.5, "bench")
    r = run_and_signal([*CLI, "bench", "--seconds", "0.2"], sig, group=group, at=at, again=again, env=environ,
                       what=what)
    r.assert_stopped(sig, "bench interrupted")
    _no_temp_left(tmp, r.what)


@pytest.mark.qemu
@pytest.mark.parametrize(("sig", "group"), _deliveries((signal.SIGINT, False)))
def test_bench_stops_its_qemu_workers(sig: int, group: bool, tmpdir_env: tuple[dict[str, str], Path]) -> None:
    try:
        find_qemu(None)
    except Exception as e:
        pytest.skip(str(e))
    environ, tmp = tmpdir_env
    seed = signal_seed()
    at, again, what = _moment(seed, 0.0, 1.5, "bench, after its workers started a QEMU")

    def moment(proc: subprocess.Popen[str]) -> None:
        wait_for_process("qemu-system", lambda: group_members(proc.pid), proc)
        time.sleep(at)

    r = run_and_signal([*CLI, "bench", "--seconds", "0.2"], sig, group=group, at=moment, again=again, env=environ,
                       what=what)
    r.assert_stopped(sig, "bench interrupted")
    _no_temp_left(tmp, r.what)
