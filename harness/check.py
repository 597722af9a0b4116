"""`virtio-compat check`: the compatibility matrix in one command.

It runs the same tests as `pytest -n auto` (harness/pytest_matrix.py, which tests/matrix re-exports, in a pytest
subprocess), shows progress, and prints a summary from the reports. pytest writes into a staging folder inside
the reports folder; the reports replace the previous ones only when the run completes, so an interrupted check
leaves the previous reports as they were. This module is also the small pytest plugin (`-p harness.check`) that
tells the parent how many cells there are and when each one ends.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pluggy

from harness import interrupt
from harness.errors import UsageError
from harness.interrupt import Kept
from harness.report import real_qemu

if TYPE_CHECKING:
    import pytest

    from models.registry import Registry

hookimpl = pluggy.HookimplMarker("pytest")  # pytest.hookimpl, without importing pytest into the CLI

PROGRESS_FD = "VIRTIO_COMPAT_PROGRESS_FD"
PROFILES = ("dev", "ci", "thorough", "nightly")
# the last two are the run's history: test durations (--shard balances by them) and the examples drawn
REPORT_FILES = ("compat-matrix.json", "compat-matrix.md", "compat-matrix.html", "junit.xml", "pytest.log",
                "durations.json", "explored.json")
STAGING = ".check-run"
# seconds pytest's group gets to stop after SIGINT before SIGKILL: its results are thrown away anyway (failure
# files are renamed into place whole), and the check must end within 2 s of a Ctrl-C; a Hypothesis test that
# is shrinking takes longer than this to stop
STOP_GRACE = 0.5

# --- the pytest side (controlling process only) --------------------------------------------------------------

_channel: IO[str] | None = None


def _emit(line: str) -> None:
    if _channel is not None:
        try:
            _channel.write(line + "\n")
            _channel.flush()
        except OSError:
            pass  # the parent went away; the run goes on


def pytest_configure(config: pytest.Config) -> None:
    global _channel
    fd = os.environ.get(PROGRESS_FD)
    if fd and not hasattr(config, "workerinput") and _channel is None:
        try:
            _channel = os.fdopen(int(fd), "w", buffering=1)
        except (OSError, ValueError):
            _channel = None


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.items:
        _emit(f"total {len(session.items)}")


@hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    _emit(f"total {len(ids)}")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # one line per test: its call, or a setup that did not pass (then there is no call)
    if report.when == "call" or (report.when == "setup" and not report.passed):
        _emit(f"done {report.outcome}")


# --- the command ----------------------------------------------------------------------------------------------


def matrix_module() -> Path:
    """The matrix tests, a module of this package (given to pytest by path: `check` does not import pytest's side)."""
    module = Path(__file__).resolve().with_name("pytest_matrix.py")
    if not module.is_file():
        raise UsageError(f"the matrix tests are not found ({module} does not exist): a broken install")
    return module


def _csv(text: str | None) -> list[str]:
    return [x.strip() for x in (text or "").split(",") if x.strip()]


def workers(text: str) -> str:
    """argparse type of -n: auto or a count."""
    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of workers or auto, not {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a number of workers >= 0 or auto, not {n}")
    return str(n)


def validate(args: argparse.Namespace, registry: Registry) -> None:
    """Check the narrowing options against the models (as `registry` declares them), so that a typo is one line,
    not an empty run."""
    from harness.matrix import TRANSPORTS
    from models.releases import FAMILIES, Version

    first, last = registry.releases[0], registry.releases[-1]

    for r in _csv(args.releases):
        try:
            v = Version.parse(r)
        except ValueError as e:
            raise UsageError(f"--releases: {e}") from None
        # any QEMU release in the modelled span (one between modelled releases follows the older one's rules)
        if v not in registry.all_versions or not first <= v <= last:
            raise UsageError(f"--releases: {v} is not a QEMU release from {first} to {last}")
    for name, value, known in (("devices", args.devices, registry.device_names),
                               ("transports", args.transports, TRANSPORTS)):
        for x in _csv(value):
            if x not in known:
                raise UsageError(f"--{name}: unknown {name[:-1]} {x!r} (known: {', '.join(known)})")
    for m in _csv(args.machines):
        if m not in FAMILIES:
            try:
                registry.machine(m)
            except ValueError as e:
                raise UsageError(f"--machines: {e}") from None
    if getattr(args, "real", False):
        from harness import fleet

        if args.real_examples < 1:
            raise UsageError("--real-examples must be at least 1")
        if not fleet.installed():
            raise UsageError(f"--real: no release of the fleet is installed in {fleet.cache_dir()} "
                             "(`virtio-compat fleet install`)")
    reports = Path(args.reports)
    if reports.exists() and not reports.is_dir():
        raise UsageError(f"--reports: {reports} is not a directory")
    from harness.shard import parse_shard

    if getattr(args, "fuzz", None) is not None and not args.fuzz > 0:
        raise UsageError(f"--fuzz: expected a positive number of minutes, not {args.fuzz}")

    if getattr(args, "shard", None):
        parse_shard(args.shard)


@dataclass
class Progress:
    total: int | None = None
    done: int = 0
    failed: int = 0
    skipped: int = 0
    started: float = field(default_factory=time.monotonic)
    shown: float = 0.0
    tty: bool = False
    buffer: str = ""
    last: tuple[int, int] | None = None  # (done, failed) last shown

    def feed(self, text: str) -> None:
        self.buffer += text
        *lines, self.buffer = self.buffer.split("\n")
        for line in lines:
            kind, _, value = line.partition(" ")
            if kind == "total" and value.isdigit():
                self.total = max(self.total or 0, int(value))
            elif kind == "done":
                self.done += 1
                self.failed += value == "failed"
                self.skipped += value == "skipped"

    def line(self) -> str:
        elapsed = f"{time.monotonic() - self.started:.0f} s"
        if self.total is None:
            return f"virtio-compat check: starting pytest and collecting the cells, {elapsed}"
        return f"virtio-compat check: {self.done}/{self.total} cells, {self.failed} failed, {elapsed}"

    def clear(self) -> None:
        if self.tty and self.shown:
            sys.stderr.write("\r" + " " * 60 + "\r")

    def show(self, final: bool = False) -> None:
        """At most once a second on a terminal (one line, rewritten), every 10 s otherwise."""
        now = time.monotonic()
        if not final and now - self.shown < (1.0 if self.tty else 10.0):
            return
        self.shown = now
        if self.tty:
            sys.stderr.write("\r" + self.line().ljust(60) + ("\n" if final else ""))
        elif self.done and self.last != (self.done, self.failed):
            sys.stderr.write(self.line() + "\n")
        self.last = (self.done, self.failed)
        sys.stderr.flush()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def command_line(args: argparse.Namespace, module: Path, staging: Path) -> list[str]:
    real = ["--real", f"--real-examples={args.real_examples}", f"{module}::test_real_pair"] \
        if getattr(args, "real", False) else []
    # pytest's configuration is its own wherever the package is installed: no ini file (a project's pytest
    # settings above site-packages would apply otherwise), node ids relative to the folder holding the package
    # -P: the folder check runs in is not put on sys.path, so a `harness` folder there never shadows this one
    cmd = [sys.executable, "-P", "-m", "pytest", f"{module}::test_cell", *real, "-c", os.devnull,
           f"--rootdir={module.parents[1]}", "-n", args.n, "-p", "no:cacheprovider",
           "-p", "harness.check", f"--junitxml={staging / 'junit.xml'}", f"--reports={staging}", "-q",
           f"--basetemp={staging / 'tmp'}"]  # pytest's temporary folders go with the staging folder
    for name in ("releases", "devices", "transports", "machines"):
        value = ",".join(_csv(getattr(args, name)))
        if value:
            cmd.append(f"--{name}={value}")
    # --schema (models/schema.py): pytest loads the same modules in every process; cli.cmd_check loaded them once
    cmd += [f"--schema={Path(p).resolve()}" for p in getattr(args, "schema", None) or []]
    # the run's seed, resolved once here (run_check); the previous run's files are in the reports folder itself
    seed = getattr(args, "run_seed", None)
    if seed is not None:
        cmd.append(f"--hypothesis-seed={seed.value}")
    cmd.append(f"--history={staging.parent}")
    if getattr(args, "shard", None):
        cmd.append(f"--shard={args.shard}")
    if getattr(args, "example_db", None):
        db = args.example_db
        cmd.append(f"--example-db={db if '://' in db or db.lower() == 'none' else Path(db).resolve()}")
    return cmd


def exploration(args: argparse.Namespace) -> str:
    """The header line: the profile, the run's seed and how to draw the same examples again, the database."""
    from harness.explore import DB_ENV, RunSeed, describe_database, example_database, run_seed

    if args.profile == "dev":
        args.run_seed = None
        return "profile dev: derandomized (the examples follow from each cell), no example database"
    args.run_seed = RunSeed(args.seed, "--seed") if getattr(args, "seed", None) is not None else run_seed()
    spec = getattr(args, "example_db", None) or os.environ.get(DB_ENV)
    if spec:  # checked here (a Redis that does not answer is one line), and given to pytest
        where = "--example-db" if getattr(args, "example_db", None) else f"${DB_ENV}"
        db = describe_database(example_database(spec, where))
    else:
        db = "example database .hypothesis/examples"
    shard = f", shard {args.shard}" if getattr(args, "shard", None) else ""
    return (f"profile {args.profile}, {args.run_seed}, {db}{shard}; the same examples again: "
            f"--seed {args.run_seed.value}")


def _run(cmd: list[str], cwd: Path, env: dict[str, str], log: Path, progress: Progress) -> int:
    """Run pytest with the progress channel; its exit code. A signal stops pytest's group, then is raised."""
    rfd, wfd = os.pipe()
    # A signal is only recorded here (and raised when the block ends): the loop below stops pytest's group
    with interrupt.deferred():
        try:
            with open(log, "w") as out:
                proc = subprocess.Popen(cmd, cwd=cwd, env={**env, PROGRESS_FD: str(wfd)}, pass_fds=(wfd,),
                                        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True)  # its own group: Ctrl-C reaches us, we stop it
            os.close(wfd)
            wfd = -1
            pgid, sent, reader_open = proc.pid, 0, True
            while proc.poll() is None or reader_open:
                if reader_open:
                    ready, _, _ = select.select([rfd], [], [], 0.1)
                    if ready:
                        chunk = os.read(rfd, 65536)
                        if chunk:
                            progress.feed(chunk.decode(errors="replace"))
                        else:
                            reader_open = False
                else:
                    time.sleep(0.05)
                if interrupt.pending() is None:
                    progress.show()
                    continue
                if not sent:
                    _signal_group(pgid, signal.SIGINT)
                    sent, stop_at = 1, time.monotonic()
                elif sent == 1 and time.monotonic() - stop_at >= STOP_GRACE:
                    _signal_group(pgid, signal.SIGKILL)
                    sent = 2
                if proc.poll() is not None:
                    break  # pytest is gone; do not wait for the channel
            code = proc.wait()
            # workers left behind by a stopped controller
            _signal_group(pgid, signal.SIGKILL if sent else signal.SIGTERM)
            return code
        finally:
            os.close(rfd)
            if wfd >= 0:
                os.close(wfd)


FUZZ_STOP_GRACE = 10.0  # seconds HypoFuzz gets after SIGINT to save what it has, before SIGKILL


def fuzz_command(args: argparse.Namespace, module: Path) -> list[str]:
    """HypoFuzz (`hypothesis fuzz`) over the narrowed cells' test_fuzz_cell targets, with pytest configured as
    check configures it (no ini file, rootdir the package's folder: the node ids test_cell's keys name)."""
    n = str(os.cpu_count() or 1) if args.n in ("auto", "0") else args.n
    cmd = [sys.executable, "-P", "-c", "import hypofuzz.entrypoint, hypothesis.extra.cli as c; c.main()", "fuzz",
           "--no-dashboard", "-n", n, "--", f"{module}::test_fuzz_cell", "-c", os.devnull,
           f"--rootdir={module.parents[1]}", "-p", "no:cacheprovider"]
    for name in ("releases", "devices", "transports", "machines"):
        value = ",".join(_csv(getattr(args, name)))
        if value:
            cmd.append(f"--{name}={value}")
    cmd += [f"--schema={Path(p).resolve()}" for p in getattr(args, "schema", None) or []]
    if getattr(args, "example_db", None):
        db = args.example_db
        cmd.append(f"--example-db={db if '://' in db or db.lower() == 'none' else Path(db).resolve()}")
    return cmd


def run_fuzzer(args: argparse.Namespace, module: Path, env: dict[str, str], log: Path) -> float:
    """Run HypoFuzz for args.fuzz minutes, then stop it (SIGINT to its group, SIGKILL after a grace) and reap it;
    a signal to check stops it the same way and is raised. Its findings are in the example database."""
    try:
        import hypofuzz  # noqa: F401
    except ImportError:
        raise UsageError("--fuzz needs HypoFuzz (pip install 'virtio-compat[nightly]')") from None
    started = time.monotonic()
    deadline = started + args.fuzz * 60
    with interrupt.deferred(), open(log, "w") as out:
        proc = subprocess.Popen(fuzz_command(args, module), cwd=Path.cwd(), env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        stop_at = None
        try:
            while proc.poll() is None:
                time.sleep(0.1)
                now = time.monotonic()
                if stop_at is None and (now >= deadline or interrupt.pending() is not None):
                    _signal_group(proc.pid, signal.SIGINT)
                    stop_at = now
                grace = 1.0 if interrupt.pending() is not None else FUZZ_STOP_GRACE
                if stop_at is not None and now - stop_at >= grace:
                    _signal_group(proc.pid, signal.SIGKILL)
                    break
            code = proc.wait()
        finally:
            _signal_group(proc.pid, signal.SIGKILL)  # its worker processes, whatever happened
    if interrupt.pending() is None and stop_at is None and code != 0:
        raise UsageError(f"--fuzz: HypoFuzz stopped with exit code {code} before its time was up; its output: {log}")
    return time.monotonic() - started


def _usage_line(log: Path) -> str:
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    errors = [ln for ln in lines if "error:" in ln.lower()]
    return (errors or lines or ["pytest rejected its command line"])[-1].strip()


def run_check(args: argparse.Namespace, registry: Registry) -> int:
    """`registry`: the in-tree one extended by args.schema (pytest loads the same modules in each process)."""
    from pytest import ExitCode

    validate(args, registry)
    module = matrix_module()
    reports = Path(args.reports).resolve()
    staging = reports / STAGING
    failures = reports / "failures"
    created = not reports.exists()
    before = set(failures.glob("*.json"))
    env = {**os.environ, "HYPOTHESIS_PROFILE": args.profile, "VIRTIO_COMPAT_REPORTS": str(reports)}
    header = exploration(args)
    if args.run_seed is not None:
        env["VIRTIO_COMPAT_SEED_ORIGIN"] = args.run_seed.origin
    print(f"virtio-compat check: {header}", flush=True)
    progress = Progress(tty=sys.stderr.isatty())
    log = staging / "pytest.log"
    replaced = False
    try:
        shutil.rmtree(staging, ignore_errors=True)  # what an earlier, killed check left
        staging.mkdir(parents=True)
        if getattr(args, "fuzz", None):
            fuzz_log = reports / "fuzz-matrix.log"
            # HypoFuzz fuzzes under nightly (it leaves out derandomized tests and those that suppress nested_given)
            seconds = run_fuzzer(args, module, {**env, "HYPOTHESIS_PROFILE": "nightly"}, fuzz_log)
            interrupt.check()
            print(f"virtio-compat check: HypoFuzz ran {seconds / 60:.1f} minutes (its output: {fuzz_log}); the "
                  "matrix now replays what it found from the example database", flush=True)
            progress.started = time.monotonic()
        code = _run(command_line(args, module, staging), Path.cwd(), env, log, progress)
        progress.clear()  # the final line, or an error, replaces it
        if code == ExitCode.INTERRUPTED:
            raise KeyboardInterrupt  # pytest's own Ctrl-C (a signal to it alone)
        matrix = staging / "compat-matrix.json"
        # no cell: pytest collects nothing, or one item skipped for an empty parameter set
        if code == ExitCode.NO_TESTS_COLLECTED or (
                code == ExitCode.OK and not matrix.exists() and progress.done == progress.skipped):
            raise UsageError("no matrix cell matches the --releases/--devices/--transports/--machines given")
        if code == ExitCode.USAGE_ERROR:
            raise UsageError(f"pytest: {_usage_line(log)}")
        progress.show(final=True)
        if code not in (ExitCode.OK, ExitCode.TESTS_FAILED) or not matrix.exists():
            shutil.copyfile(log, reports / "pytest.log")
            print(f"virtio-compat check: pytest stopped with exit code {code} before the reports were written; "
                  f"its output: {reports / 'pytest.log'}", file=sys.stderr)
            return 1
        entries: list[dict[str, Any]] = json.loads(matrix.read_text())
        with interrupt.deferred():  # the reports are replaced as a set: a signal waits for the last rename
            for name in [*REPORT_FILES, *(p.name for p in staging.glob("durations-*of*.json"))]:
                if (staging / name).exists():  # each file replaced whole (rename)
                    os.replace(staging / name, reports / name)
            replaced = True
    except KeyboardInterrupt as e:
        progress.clear()
        # a worker killed in a write leaves its temporary file (harness.failures.write_files_atomic)
        for tmp in failures.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        new = len(set(failures.glob("*.json")) - before)
        kept = f"; {new} failure file{'s' * (new != 1)} kept in {failures}" if new else ""
        if replaced:
            raise Kept(e, f"check interrupted; the reports in {reports} are complete{kept}") from None
        raise Kept(e, f"check interrupted; no reports written (those in {reports} are as they were){kept}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and reports.is_dir() and not any(reports.iterdir()):
            reports.rmdir()
    return summarize(entries, code, progress, reports, args)


def summarize(entries: list[dict[str, Any]], code: int, progress: Progress, reports: Path,
              args: argparse.Namespace) -> int:
    from pytest import ExitCode

    counts = {"pass": 0, "expected": 0, "fail": 0}
    for e in entries:
        counts[e["outcome"]] = counts.get(e["outcome"], 0) + 1
    cells = len({(e["src"], e["dst"], e["transport"], e["device"]) for e in entries})
    print(f"virtio-compat check: {cells} cells, {len(entries)} results (cell x rule) in "
          f"{time.monotonic() - progress.started:.0f} s, profile {args.profile}, -n {args.n}")
    # a cell whose test failed without a result of its own (an error in the harness) is a failure too
    outside = max(progress.failed - cells_failed(entries), 0) if code == ExitCode.TESTS_FAILED else 0
    print(f"  {counts['pass']} pass, {counts['expected']} expected incompatibilities, {counts['fail'] + outside} fail")
    real = real_qemu(entries)
    if real:
        print(f"  {real}")
    for e in entries:
        if e["outcome"] == "fail":
            first, *rest = (e.get("failure") or "").splitlines() or [""]
            replay = next((ln.strip() for ln in rest if ln.strip().startswith("replay:")), "")
            state = next((ln.strip() for ln in rest if ln.strip().startswith("state:")), "")  # the minimized state
            print(f"  FAIL {e['device']} {e['transport']} {e['src']} -> {e['dst']} {first}"
                  + (f"\n       {state}" if state else "") + (f"\n       {replay}" if replay else ""))
    if outside:
        print(f"  {outside} cells failed outside the rules (an error in the harness): see {reports / 'pytest.log'}")
    explored = _explored(reports) if getattr(args, "run_seed", None) is not None else None
    if explored:
        print(f"  {explored}")
    print(f"reports: {', '.join(str(reports / n) for n in REPORT_FILES[:4])}")
    print(f"pytest output: {reports / 'pytest.log'}")
    return 1 if counts["fail"] or code != ExitCode.OK else 0


def _explored(reports: Path) -> str | None:
    from harness.explore import EXPLORED, explored_line

    try:
        record = json.loads((reports / EXPLORED).read_text())
        return explored_line(record)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def cells_failed(entries: list[dict[str, Any]]) -> int:
    return len({(e["src"], e["dst"], e["transport"], e["device"]) for e in entries if e["outcome"] == "fail"})
