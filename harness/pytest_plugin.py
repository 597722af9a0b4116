"""pytest plugin of virtio-compat: options that narrow the matrix, Hypothesis profiles, and the
collection of per-cell results that the reports are written from (xdist workers each write their
own part; the controlling process merges them at the end)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings

settings.register_profile("dev", max_examples=5, deadline=None, database=None, derandomize=True,
                          suppress_health_check=list(HealthCheck))
settings.register_profile("ci", max_examples=12, deadline=None, database=None, derandomize=True,
                          suppress_health_check=list(HealthCheck))
settings.register_profile("thorough", max_examples=300, deadline=None,
                          suppress_health_check=list(HealthCheck))
settings.register_profile("explain", max_examples=12, deadline=None, database=None, derandomize=True,
                          suppress_health_check=list(HealthCheck), phases=list(Phase))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPORTS = Path(os.environ.get("VIRTIO_COMPAT_REPORTS", "reports"))


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("virtio-compat", "narrow the compatibility matrix")
    g.addoption("--releases", default="", help="comma-separated releases, e.g. 2.6,7.2 (default: all)")
    g.addoption("--devices", default="", help="comma-separated devices, e.g. virtio-net,virtio-blk")
    g.addoption("--transports", default="", help="comma-separated transports: pci,mmio,ccw")
    g.addoption("--machines", default="", help="comma-separated machine types or families, e.g. pc-q35")
    g.addoption("--reports", default=str(REPORTS), help="where the matrix reports go (default: reports/)")


def _csv(config: pytest.Config, name: str) -> list[str]:
    return [x.strip() for x in str(config.getoption(name) or "").split(",") if x.strip()]


def matrix_options(config: pytest.Config) -> dict[str, list[str]]:
    return {k: _csv(config, f"--{k}") for k in ("releases", "devices", "transports", "machines")}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "matrix: a compatibility matrix cell")
    out = Path(config.getoption("--reports"))
    config._virtio_compat_parts = out / ".parts"  # type: ignore[attr-defined]
    if not hasattr(config, "workerinput"):  # the controlling process starts a fresh set of parts
        parts = out / ".parts"
        if parts.is_dir():
            for p in parts.glob("*.jsonl"):
                p.unlink()


def record(config: pytest.Config, entry: dict[str, Any]) -> None:
    """Append one result line to this process's part (one write per line: complete or absent)."""
    parts: Path = config._virtio_compat_parts  # type: ignore[attr-defined]
    parts.mkdir(parents=True, exist_ok=True)
    worker = getattr(config, "workerinput", {}).get("workerid", "main")
    line = json.dumps(entry, sort_keys=True) + "\n"
    fd = os.open(parts / f"{worker}.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if hasattr(config, "workerinput"):
        return
    if session.items and not any(item.get_closest_marker("matrix") for item in session.items):
        return  # no matrix cell ran in this session (under xdist the parts alone tell)
    parts: Path = config._virtio_compat_parts  # type: ignore[attr-defined]
    entries = []
    for p in sorted(parts.glob("*.jsonl")) if parts.is_dir() else []:
        for line in p.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue  # a line cut by a killed worker: the cell is reported as not run
    if not entries:
        return
    from harness.report import write_reports

    paths = write_reports(entries, parts.parent)
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(f"virtio-compat: {len(entries)} matrix results; reports: " + ", ".join(map(str, paths)))
