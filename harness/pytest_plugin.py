"""pytest plugin of virtio-compat: options that narrow the matrix, Hypothesis profiles, and the
collection of per-cell results that the reports are written from (xdist workers each write their
own part; the controlling process merges them at the end)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, Phase, settings

# dev and ci skip Hypothesis' explain phase: it replays a failing cell's minimal example hundreds of times (5-10 s
# per failing cell); the `explain` profile runs it
_FAST_PHASES = [p for p in Phase if p != Phase.explain]
settings.register_profile("dev", max_examples=5, deadline=None, database=None, derandomize=True,
                          suppress_health_check=list(HealthCheck), phases=_FAST_PHASES)
settings.register_profile("ci", max_examples=12, deadline=None, database=None, derandomize=True,
                          suppress_health_check=list(HealthCheck), phases=_FAST_PHASES)
settings.register_profile("thorough", max_examples=300, deadline=None,
                          suppress_health_check=list(HealthCheck))
settings.register_profile("explain", max_examples=12, deadline=None, database=None, derandomize=True,
                          suppress_health_check=list(HealthCheck), phases=list(Phase))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPORTS = Path(os.environ.get("VIRTIO_COMPAT_REPORTS", "reports"))

if TYPE_CHECKING:
    from models.registry import Registry

# the session's registry in config.stash (a plugin that runs the matrix with other declarations replaces it)
REGISTRY = pytest.StashKey["Registry"]()


def pytest_addoption(parser: pytest.Parser) -> None:
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
    entries = []
    for p in sorted(parts.glob("*.jsonl")) if parts.is_dir() else []:
        for line in p.read_bytes().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and all(isinstance(entry.get(k), str) for k in REQUIRED):
                entries.append(entry)
    return entries


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if hasattr(config, "workerinput"):
        return
    if session.items and not any(item.get_closest_marker("matrix") for item in session.items):
        return  # no matrix cell ran in this session (under xdist the parts alone tell)
    parts: Path = config._virtio_compat_parts  # type: ignore[attr-defined]
    entries = read_parts(parts)
    if not entries:
        return
    from harness.errors import HarnessError
    from harness.report import write_reports

    tr = config.pluginmanager.get_plugin("terminalreporter")
    try:
        paths = write_reports(entries, parts.parent)
    except HarnessError as e:  # a full disk: one line, and the run fails, rather than an INTERNALERROR traceback
        if tr is not None:
            tr.write_line(f"virtio-compat: the reports were not written: {e}", red=True)
        session.exitstatus = pytest.ExitCode.INTERNAL_ERROR
        return
    if tr is not None:
        tr.write_line(f"virtio-compat: {len(entries)} matrix results; reports: " + ", ".join(map(str, paths)))
