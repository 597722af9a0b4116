"""Shared test fixtures: the real QEMU 7.2 streams of ../shared (CI has them beside the clone) and
the samples the package ships (harness/samples); tests/data keeps what only the tests need."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from harness.samples import FOLDER as SAMPLES

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
SHARED_FIXTURES = ROOT.parent / "shared" / "fixtures" / "qemu-7.2"


def fixture_streams() -> list[Path]:
    """Every stream with its ground truth beside it: ../shared fixtures, else the samples here."""
    folder = SHARED_FIXTURES if SHARED_FIXTURES.is_dir() else SAMPLES
    return sorted(p for p in folder.glob("*.bin") if p.with_suffix(".json").exists())


def truth_of(stream: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(stream.with_suffix(".json").read_text())
    return result


def fixture_devices(path: Path) -> Iterator[tuple[Any, Any, bytes, Any, dict[str, Any] | None]]:
    """Each virtio device of a real 7.2 stream: the decoded stream, the payload, its bytes, the release realized
    from the stream's command line, and the device's ground truth (None where it has none)."""
    from harness.wire.stream import decode_stream
    from models.cmdline import parse
    from models.config import realize
    from models.releases import V

    truth = truth_of(path)
    data = path.read_bytes()
    s = decode_stream(data)
    lines = {line.section: line for line in parse(truth["qemu_cmdline"], V("7.2"))}
    by_section = {t["section"]: t for t in truth["devices"]}
    for p in s.devices:
        yield s, p, data[p.offset : p.offset + p.size], realize(lines[p.section].config), by_section.get(p.section)


@pytest.fixture(params=fixture_streams(), ids=lambda p: p.stem)
def fixture_stream(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    return path


@pytest.fixture
def ci_profile(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run a test under the `ci` Hypothesis profile (what the matrix runs), whatever is loaded, derandomized and
    with no example database: the test's outcome must not depend on the commit or on earlier runs."""
    previous = settings.default
    monkeypatch.setenv("VIRTIO_COMPAT_SEED", "0")  # the subprocesses it starts: a fixed seed
    settings.register_profile("ci-pinned", parent=settings.get_profile("ci"), database=None, derandomize=True)
    settings.load_profile("ci-pinned")
    yield
    settings.register_profile("_restore", previous)
    settings.load_profile("_restore")
