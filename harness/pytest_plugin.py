"""pytest plugin of virtio-compat: options that narrow the matrix, Hypothesis profiles, and the
collection of per-cell results that the reports are written from (xdist workers each write their
own part; the controlling process merges them at the end)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, Phase, settings

from harness.explore import default_database

# dev and ci skip Hypothesis' explain phase: it replays a failing cell's minimal example hundreds of times (5-10 s
# per failing cell); the `explain` profile runs it
_FAST_PHASES = [p for p in Phase if p != Phase.explain]
# dev is derandomized and keeps nothing: a developer's quick run. ci draws from the run's seed (the commit under
# test: new examples on each commit, the same ones again on the same commit; harness/explore.py) and keeps what it
# finds in Hypothesis' example database (.hypothesis/examples, or --example-db), which it replays first.
# Each profile stands on Hypothesis' own defaults: under CI (the CI, GITHUB_ACTIONS, ... variables) Hypothesis makes
# its derandomized, database-less "ci" profile the default, and a profile without a parent would inherit that.
_BASE = settings.get_profile("default")
settings.register_profile("dev", _BASE, max_examples=5, deadline=None, database=None, derandomize=True,
                          suppress_health_check=list(HealthCheck), phases=_FAST_PHASES)
settings.register_profile("ci", _BASE, max_examples=12, deadline=None, database=default_database(),
                          suppress_health_check=list(HealthCheck), phases=_FAST_PHASES)
settings.register_profile("thorough", _BASE, max_examples=300, deadline=None, database=default_database(),
                          suppress_health_check=list(HealthCheck))
# nightly: hours of exploration, sharded across machines that share a Redis database (--shard, --example-db), or
# under HypoFuzz (`hypothesis fuzz`, the test_fuzz_cell targets), which skips a test that suppresses nested_given
settings.register_profile("nightly", _BASE, max_examples=2000, deadline=None, database=default_database(),
                          suppress_health_check=[h for h in HealthCheck if h != HealthCheck.nested_given])
settings.register_profile("explain", _BASE, max_examples=12, deadline=None, database=None, derandomize=True,
                          suppress_health_check=list(HealthCheck), phases=list(Phase))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPORTS = Path(os.environ.get("VIRTIO_COMPAT_REPORTS", "reports"))

if TYPE_CHECKING:
    from models.registry import Registry

# the session's registry in config.stash (a plugin that runs the matrix with other declarations replaces it)
REGISTRY = pytest.StashKey["Registry"]()


class _Exploration:
    """The run's seed, --example-db and --shard, configured after Hypothesis' own plugin has loaded
    --hypothesis-profile and --hypothesis-seed (trylast); a plugin object of its own, so that this module's
    pytest_configure keeps its place before the plugins that change the session's registry."""

    @pytest.hookimpl(trylast=True)
    def pytest_configure(self, config: pytest.Config) -> None:
        _exploration(config)


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    if not pluginmanager.has_plugin("virtio-compat-exploration"):
        pluginmanager.register(_Exploration(), "virtio-compat-exploration")
    g = parser.getgroup("virtio-compat", "narrow the compatibility matrix")
    g.addoption("--releases", default="", help="comma-separated releases, e.g. 2.6,7.2 (default: all)")
    g.addoption("--devices", default="", help="comma-separated devices, e.g. virtio-net,virtio-blk")
    g.addoption("--transports", default="", help="comma-separated transports: pci,mmio,ccw")
    g.addoption("--machines", default="", help="comma-separated machine types or families, e.g. pc-q35")
    g.addoption("--reports", default=str(REPORTS), help="where the matrix reports go (default: reports/)")
    g.addoption("--schema", action="append", default=[], metavar="MODULE",
                help="a schema module (models/schema.py) to run the matrix with; repeatable")
    g.addoption("--real", action="store_true", default=False,
                help="cells whose two releases are in the fleet also run a sample through the real QEMU pair")
    g.addoption("--real-examples", type=int, default=4, metavar="N",
                help="device states per cell on real QEMU with --real (default 4: one QEMU pair)")
    g.addoption("--shard", default=None, metavar="I/N",
                help="run the I-th of N disjoint parts of the collected tests, balanced by the durations the "
                "previous run recorded (durations.json), else by count")
    g.addoption("--example-db", default=None, metavar="DB",
                help="Hypothesis' example database: redis://HOST:PORT/DB (shared by shards and machines), a "
                "folder, or none (default $VIRTIO_COMPAT_EXAMPLE_DB, else the profile's: .hypothesis/examples)")
    g.addoption("--history", default=None, metavar="DIR",
                help="where the previous run's durations.json and explored.json are read (default: --reports)")


def _csv(config: pytest.Config, name: str) -> list[str]:
    return [x.strip() for x in str(config.getoption(name) or "").split(",") if x.strip()]


def matrix_options(config: pytest.Config) -> dict[str, list[str]]:
    return {k: _csv(config, f"--{k}") for k in ("releases", "devices", "transports", "machines")}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "matrix: a compatibility matrix cell")
    # also here, not only in pyproject.toml: `check` runs pytest without an ini file
    config.addinivalue_line("markers", "qemu: needs a real QEMU binary (skips with the reason when none is found)")
    _load_schemas(config)
    out = Path(config.getoption("--reports"))
    config._virtio_compat_parts = out / ".parts"  # type: ignore[attr-defined]
    if not hasattr(config, "workerinput"):  # the controlling process starts a fresh set of parts
        parts = out / ".parts"
        if parts.is_dir():
            for p in parts.glob("*.jsonl"):
                p.unlink()
        # what an earlier run killed in the middle of a write left (harness.failures.write_files_atomic)
        for folder in {out, out / "failures", REPORTS / "failures"}:
            for p in folder.glob(".*.tmp") if folder.is_dir() else []:
                p.unlink(missing_ok=True)


def _exploration(config: pytest.Config) -> None:
    """--example-db, --shard and the run's seed, checked once in every process: a mistake is a usage error."""
    from harness.errors import UsageError
    from harness.explore import DB_ENV, example_database, run_seed
    from harness.shard import parse_shard

    try:
        shard = config.getoption("--shard")
        config._virtio_compat_shard = parse_shard(shard) if shard else None  # type: ignore[attr-defined]
        config._virtio_compat_seed = run_seed()  # type: ignore[attr-defined]
        spec = config.getoption("--example-db") or os.environ.get(DB_ENV)
        if spec and not settings().derandomize:  # a derandomized profile keeps nothing, by design
            where = "--example-db" if config.getoption("--example-db") else f"${DB_ENV}"
            db = example_database(spec, where)
            settings.register_profile("virtio-compat-db", parent=settings(), database=db)
            settings.load_profile("virtio-compat-db")
    except UsageError as e:
        raise pytest.UsageError(str(e)) from None
    _DURATIONS.clear()


def pytest_report_header(config: pytest.Config) -> list[str]:
    from harness.explore import describe_database

    s = settings()
    shard = getattr(config, "_virtio_compat_shard", None)
    if s.derandomize:
        line = "virtio-compat: derandomized profile (the examples follow from each test), no example database"
    else:
        seed = config._virtio_compat_seed  # type: ignore[attr-defined]
        line = (f"virtio-compat: {seed}, {describe_database(s.database)}; the same examples again: "
                f"--hypothesis-seed={seed.value} (check --seed {seed.value})")
    return [line + (f"; shard {shard[0]}/{shard[1]}" if shard else "")]


def _history(config: pytest.Config) -> Path:
    return Path(config.getoption("--history") or config.getoption("--reports"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    shard = getattr(config, "_virtio_compat_shard", None)
    if not shard:
        return
    from harness.shard import load_durations, shard_of

    # every process (each xdist worker collects) computes the same partition from the same ids and files
    seed = config._virtio_compat_seed.value  # type: ignore[attr-defined]
    keep = shard_of([i.nodeid for i in items], load_durations(_history(config), seed), *shard)
    config.hook.pytest_deselected(items=[i for i in items if i.nodeid not in keep])
    items[:] = [i for i in items if i.nodeid in keep]


_DURATIONS: dict[str, float] = {}  # this session's test durations (setup + call + teardown), by test id


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # in the controlling process xdist hands on every worker's reports
    _DURATIONS[report.nodeid] = _DURATIONS.get(report.nodeid, 0.0) + report.duration


def _load_schemas(config: pytest.Config) -> None:
    """--schema: every process loads the modules (xdist workers get the option too), before collection."""
    from harness.errors import SchemaError
    from models.schema import load_all

    try:
        config.stash[REGISTRY] = load_all(config.getoption("--schema") or [])
    except SchemaError as e:
        raise pytest.UsageError(str(e)) from None


def registry(config: pytest.Config) -> Registry:
    """The declarations this session runs the matrix with: the in-tree ones and its --schema modules'."""
    return config.stash[REGISTRY]


def record(config: pytest.Config, entry: dict[str, Any]) -> None:
    """Append one result line to this process's part: the line is complete or absent, also when the disk is
    full (a short write is cut back off, so the next line does not land on half a line)."""
    parts: Path = config._virtio_compat_parts  # type: ignore[attr-defined]
    parts.mkdir(parents=True, exist_ok=True)
    worker = getattr(config, "workerinput", {}).get("workerid", "main")
    line = (json.dumps(entry, sort_keys=True) + "\n").encode()
    fd = os.open(parts / f"{worker}.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        start = os.fstat(fd).st_size  # this process is the part's only writer
        try:
            done = 0
            while done < len(line):  # after a short write, the next one says why (ENOSPC, EFBIG)
                done += os.write(fd, line[done:])
        except OSError as e:
            os.ftruncate(fd, start)
            from harness.failures import WriteError

            raise WriteError(f"cannot write {parts / f'{worker}.jsonl'}: {e.strerror or e}") from None
    finally:
        os.close(fd)


REQUIRED = ("src", "dst", "transport", "device", "rule", "outcome")


def read_parts(parts: Path) -> list[dict[str, Any]]:
    """Every complete result line of the workers' parts; a line cut by a killed worker, or any line that is
    not a result, is dropped (its cell is missing from the report, and its test reported by pytest)."""
    return [e for e in _part_lines(parts) if all(isinstance(e.get(k), str) for k in REQUIRED)]


def _part_lines(parts: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of the workers' parts, file by file; a line that does not parse (cut by a kill) is skipped."""
    for p in sorted(parts.glob("*.jsonl")) if parts.is_dir() else []:
        for line in p.read_bytes().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                yield entry


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if hasattr(config, "workerinput"):
        return
    from harness.errors import HarnessError

    tr = config.pluginmanager.get_plugin("terminalreporter")
    try:
        _write_history(config, tr)
    except HarnessError as e:
        if tr is not None:
            tr.write_line(f"virtio-compat: {e}", red=True)
    if session.items and not any(item.get_closest_marker("matrix") for item in session.items):
        return  # no matrix cell ran in this session (under xdist the parts alone tell)
    parts: Path = config._virtio_compat_parts  # type: ignore[attr-defined]
    entries = read_parts(parts)
    if not entries:
        return
    from harness.report import write_reports

    try:
        paths = write_reports(entries, parts.parent)
    except HarnessError as e:  # a full disk: one line, and the run fails, rather than an INTERNALERROR traceback
        if tr is not None:
            tr.write_line(f"virtio-compat: the reports were not written: {e}", red=True)
        session.exitstatus = pytest.ExitCode.INTERNAL_ERROR
        return
    if tr is not None:
        tr.write_line(f"virtio-compat: {len(entries)} matrix results; reports: " + ", ".join(map(str, paths)))


def read_explored(parts: Path) -> dict[str, list[str]]:
    """The example digests the cells recorded (lines {"explored": cell id, "digests": [...]} of the parts)."""
    cells: dict[str, list[str]] = {}
    for entry in _part_lines(parts):
        if isinstance(entry.get("explored"), str):
            cells.setdefault(entry["explored"], []).extend(map(str, entry.get("digests") or []))
    return cells


def _write_history(config: pytest.Config, tr: Any) -> None:
    """durations.json (this run's test durations over the previous file's, for --shard) and explored.json (the
    examples the cells drew, and how many of them the previous run did not), beside the reports."""
    from harness.explore import EXPLORED, explored_line, explored_record
    from harness.failures import write_files_atomic
    from harness.shard import durations_file, durations_record, load_durations

    out, history = Path(config.getoption("--reports")), _history(config)
    shard = config._virtio_compat_shard  # type: ignore[attr-defined]
    seed = config._virtio_compat_seed.value  # type: ignore[attr-defined]
    files = []
    if _DURATIONS:
        # a whole run keeps the others' values for what it did not run (a narrowed run); a shard only its own
        measured = _DURATIONS if shard else {**load_durations(history, seed), **_DURATIONS}
        files.append((out / durations_file(shard), durations_record(measured, seed, time.time())))
    cells = read_explored(config._virtio_compat_parts)  # type: ignore[attr-defined]
    record = None
    if cells:
        record = explored_record(cells, str(config._virtio_compat_seed), history / EXPLORED)  # type: ignore
        files.append((out / EXPLORED, json.dumps(record, sort_keys=True)))
    if files:
        write_files_atomic(files)
    if record is not None and tr is not None:
        tr.write_line(f"virtio-compat: {explored_line(record)}")
