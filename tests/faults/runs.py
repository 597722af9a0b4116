"""Helpers of the fault tests: narrowed matrix runs in subprocesses (each in its own process group and
reports folder), the processes they leave, and the report files they write."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# four cells (2.6 and 7.2 both ways, pci, virtio-net): a run takes 2-4 s on 2 cores
NARROW = ("--releases", "2.6,7.2", "--devices", "virtio-net", "--transports", "pci")
BROKEN_STARTED = "tests.faults.broken_started"  # R4 fails in 7.2 -> 2.6 (a small failure file)
BROKEN_MODERN = "tests.faults.broken_modern"  # R1 fails in 7.2 -> 7.2 (a failure file of about 100 KB)


def env(reports: Path, plugin: str | None = None) -> dict[str, str]:
    """The environment of a run: profile ci, no example database, failure files inside `reports`."""
    out = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "HYPOTHESIS_"))}
    out.update(HYPOTHESIS_PROFILE="ci", VIRTIO_COMPAT_REPORTS=str(reports), PYTHONPATH=str(ROOT),
               VIRTIO_COMPAT_EXAMPLE_DB="none", VIRTIO_COMPAT_SEED="0")
    if plugin:
        out["PYTEST_PLUGINS"] = plugin
    return out


def pytest_cmd(reports: Path, workers: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider", "tests/matrix",
            *NARROW, "-n", str(workers), "--reports", str(reports), "-q", *extra]


def check_cmd(reports: Path, workers: int = 2) -> list[str]:
    return [sys.executable, "-m", "harness.cli", "check", *NARROW, "-n", str(workers), "--reports", str(reports)]


@dataclass
class Run:
    returncode: int
    output: str
    leftovers: list[int]  # processes of the run's group still alive once it ended (killed by then)


def run_matrix(reports: Path, workers: int, plugin: str | None = None) -> Run:
    """One narrowed pytest run in its own process group."""
    proc = subprocess.Popen(pytest_cmd(reports, workers), cwd=ROOT, env=env(reports, plugin), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        left = wait_gone(group_members(proc.pid), 5.0)
        kill_group(proc.pid)
    return Run(proc.returncode, out, left)


# --- processes ----------------------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, process group) of a live process, or None (gone, or a zombie)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else (int(fields[1]), int(fields[2]))


def _pids() -> Iterator[int]:
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            yield int(d.name)


def children(pid: int) -> list[int]:
    return [p for p in _pids() if (st := _stat(p)) is not None and st[0] == pid]


def descendants(pid: int) -> set[int]:
    out: set[int] = set()
    todo = [pid]
    while todo:
        for kid in children(todo.pop()):
            if kid not in out:
                out.add(kid)
                todo.append(kid)
    return out


def group_members(pgid: int) -> list[int]:
    return [p for p in _pids() if (st := _stat(p)) is not None and st[1] == pgid]


def alive(pids: Sequence[int] | set[int]) -> list[int]:
    return [p for p in pids if _stat(p) is not None]


def wait_gone(pids: Sequence[int] | set[int], seconds: float = 10.0) -> list[int]:
    """The processes still alive after up to `seconds` (killed ones are reaped asynchronously)."""
    deadline = time.monotonic() + seconds
    while (left := alive(pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def wait_for(what: str, test: Any, proc: subprocess.Popen[str], seconds: float = 60.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = test()
        if value:
            return value
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {what}: {proc.communicate()}")
        time.sleep(0.02)
    raise AssertionError(f"no {what} within {seconds} s")


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# --- report files -------------------------------------------------------------------------------------------


def temp_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.name.endswith(".tmp"))


def assert_reports_whole(folder: Path) -> None:
    """Every report file under `folder` is complete: the JSON ones parse, junit.xml parses, md and html end as
    written; no temporary file is left."""
    assert not temp_files(folder), temp_files(folder)
    for p in folder.rglob("*"):
        if p.is_dir() or p.parent.name == ".parts":
            continue
        text = p.read_text()
        if p.suffix == ".json":
            json.loads(text)
        elif p.suffix == ".xml":
            ET.fromstring(text)
        elif p.name == "compat-matrix.md":  # report.to_markdown ends every section with its machine types
            assert text.rstrip().splitlines()[-1].startswith("Machine types covered: "), p
        elif p.name == "compat-matrix.html":
            assert text.rstrip().endswith("</table>"), p


def parts_lines(folder: Path) -> tuple[list[dict[str, Any]], int]:
    """The valid result lines of the parts, and the number of lines that are not JSON (the lines of the examples
    a cell explored, {"explored": ...}, are valid and no result)."""
    good, bad = [], 0
    for p in sorted((folder / ".parts").glob("*.jsonl")):
        for line in p.read_bytes().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if not (isinstance(entry, dict) and "explored" in entry):
                good.append(entry)
    return good, bad


def normalized(folder: Path) -> dict[str, Any]:
    """What a run wrote, with its own folder name taken out: the matrix entries and the failure files."""
    def text(p: Path) -> str:
        return p.read_text().replace(str(folder), "<reports>")

    return {
        "matrix": json.loads(text(folder / "compat-matrix.json")),
        "md": text(folder / "compat-matrix.md"),
        "failures": {p.name: json.loads(text(p)) for p in sorted((folder / "failures").glob("*.json"))},
    }


# --- signals (issue 14) -------------------------------------------------------------------------------------

SIGNAL_SEED = "VIRTIO_COMPAT_SIGNAL_SEED"  # set it to repeat the random moments of a failed run
STOP_WITHIN = 2.0  # seconds from a signal to the command's exit, its group empty


def signal_seed() -> int:
    """The seed of a test's random moments: $VIRTIO_COMPAT_SIGNAL_SEED, else a fresh one (in every message)."""
    import random

    return int(os.environ.get(SIGNAL_SEED) or random.randrange(2**32))


@dataclass
class Stopped:
    """A command stopped by a real signal, as its caller sees it."""

    returncode: int
    out: str
    err: str
    seconds: float  # from the signal until the command exited and its process group was empty
    left: list[int]  # processes of its group still alive STOP_WITHIN s after the signal (killed by then)
    what: str  # the run, the signal and the seed, for assertion messages

    def assert_stopped(self, sig: int, line: str) -> str:
        """Exit 128 + sig, within STOP_WITHIN s, one line on stderr that contains `line` and no traceback,
        nothing left in the group; returns the line."""
        err = self.err.strip().splitlines()
        assert self.returncode == 128 + sig, f"{self.what}: exit {self.returncode}\n{self.err}"
        assert len(err) == 1 and line in err[0], f"{self.what}: stderr is not one line with {line!r}:\n{self.err}"
        assert "Traceback" not in self.out + self.err, self.what
        assert not self.left, f"{self.what}: processes left in the group: {self.left}"
        assert self.seconds < STOP_WITHIN, f"{self.what}: stopped {self.seconds:.2f} s after the signal"
        print(f"{self.what}: stopped in {self.seconds:.2f} s: {err[0]}")  # shown with -s (the figures of issue 14)
        return err[0]


def run_and_signal(cmd: Sequence[str], sig: int, *, group: bool, at: Any, env: dict[str, str] | None = None,
                   again: float | None = None, what: str = "", cwd: Path = ROOT) -> Stopped:
    """Run `cmd` in a process group of its own and send it `sig` at a moment: `at` seconds after it installed
    its signal handlers, or once `at(proc)` returns. `group`: to the whole group (a terminal's Ctrl-C), else to
    the main process alone (a CI runner, a wrapper script). `again`: the same signal once more that many seconds
    later (a second Ctrl-C during the clean-up)."""
    proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    what = f"{what or ' '.join(cmd[2:5])}, {signal.Signals(sig).name} to the {'group' if group else 'main process'}"
    try:
        wait_for("the command's signal handlers", lambda: handles_sigterm(proc.pid), proc)
        if callable(at):
            at(proc)
        else:
            time.sleep(at)
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"{what}: the run ended before the signal (exit {proc.returncode}): {err[-2000:]}")
        sent = time.monotonic()
        for i in range(1 if again is None else 2):
            if i:
                time.sleep(again or 0.0)
            os.killpg(proc.pid, sig) if group else proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
        left = wait_gone(group_members(proc.pid), max(sent + STOP_WITHIN - time.monotonic(), 0.0))
        seconds = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        kill_group(proc.pid)
    return Stopped(proc.returncode, out, err, seconds, left, what)


def handles_sigterm(pid: int) -> bool:
    """Whether the process catches SIGTERM: harness.cli.main() installed its handlers (before that, a signal
    meets Python's start-up and its defaults: a KeyboardInterrupt traceback, or death by SIGTERM)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next((int(line.split()[1], 16) for line in status.splitlines() if line.startswith("SigCgt:")), 0)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def wait_for_process(name: str, among: Any, proc: subprocess.Popen[str], seconds: float = 60.0) -> int:
    """The first process of `among()` (pids) whose command line contains `name` (a QEMU, a pytest)."""
    def find() -> int:
        for pid in among():
            try:
                if name.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return int(pid)
            except OSError:
                pass
        return 0

    found: int = wait_for(f"a process running {name!r}", find, proc, seconds)
    return found
