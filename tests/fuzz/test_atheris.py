"""`virtio-compat fuzz --engine atheris`: a short real run under libFuzzer (a subprocess, as a user runs it) that
checks inputs, grows a corpus and ends cleanly; a bug planted in `verdict` is found, saved with the verdict that
reproduces it, and `--replay` tells when it is gone. Skips where atheris is not installed (the test extra installs
it where a wheel exists: CPython <= 3.11 on Linux x86_64)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(importlib.util.find_spec("atheris") is None,
                                reason="atheris is not installed (pip install '.[test]' on Linux x86_64, CPython "
                                "<= 3.11, or pip install atheris)")
CLI = [sys.executable, "-m", "harness.cli", "fuzz", "--engine", "atheris"]

# a bug in the verdict, planted in the child before libFuzzer starts: one input in three that reach it
PLANT = '''
import harness.fuzz.targets as targets
real = targets.verdict
def planted(s, release, dest, data=None):
    if data is not None and len(data) % 3 == 0:
        raise ZeroDivisionError("planted in verdict")
    return real(s, release, dest, data)
targets.verdict = planted
'''


@pytest.fixture
def tmp_env(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path]]:
    """Its own TMPDIR, which the run must leave empty."""
    tmp = Path(tempfile.mkdtemp(prefix="vc-ath-", dir="/tmp"))
    try:
        yield {**os.environ, "TMPDIR": str(tmp)}, tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _inputs(stderr: str) -> int:
    m = re.search(r"fuzz: atheris, seed \d+, verdict: (\d+) inputs in [\d.]+ s \(\d+/s\), coverage (\d+) ", stderr)
    assert m, stderr[-3000:]
    assert int(m[2]) > 100, f"libFuzzer saw almost no coverage: is the decoder instrumented?\n{stderr}"
    return int(m[1])


def test_slow_subprocess_a_short_run_checks_inputs_and_ends_cleanly(tmp_path: Path,
                                                                   tmp_env: tuple[dict[str, str], Path]) -> None:
    environ, tmp = tmp_env
    out, corpus = tmp_path / "out", tmp_path / "corpus"
    r = subprocess.run([*CLI, "--minutes", "0.1", "--out", str(out), "--corpus", str(corpus)], cwd=tmp_path,
                       env=environ, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _inputs(r.stderr) >= 20
    assert "Traceback" not in r.stderr + r.stdout and "0 finding(s)" in r.stderr
    assert not list(out.iterdir()), "a clean run saves nothing"
    grown = list(corpus.iterdir())
    assert grown, "libFuzzer kept no input that reached new code"
    assert not list(tmp.iterdir()), "the run's temporary folder is left"
    # the corpus is kept: a second run starts from it and adds to it, never removing what was there
    r = subprocess.run([*CLI, "--minutes", "0.05", "--out", str(out), "--corpus", str(corpus), "--seed", "1"],
                       cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert set(grown) <= set(corpus.iterdir())


def test_slow_subprocess_a_planted_verdict_bug_is_found_and_replayed(tmp_path: Path,
                                                                   tmp_env: tuple[dict[str, str], Path]) -> None:
    environ, tmp = tmp_env
    plant = tmp_path / "plant"
    plant.mkdir()
    (plant / "sitecustomize.py").write_text(PLANT)
    planted = {**environ, "PYTHONPATH": os.pathsep.join([str(plant), str(ROOT)])}
    out = tmp_path / "out"
    r = subprocess.run([*CLI, "--minutes", "0.1", "--out", str(out)], cwd=tmp_path, env=planted,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr[-3000:]
    assert "1 finding(s)" in r.stderr, r.stderr[-3000:]
    saved = sorted(out.glob("crash-*.bin"))
    assert len(saved) == 1, "one bug, one file"
    meta = json.loads(saved[0].with_suffix(".json").read_text())
    assert meta["signature"].startswith("crash verdict ZeroDivisionError")
    assert meta["reproduce"].startswith(f"virtio-compat verdict {saved[0].name} --release {meta['release']}")
    assert f"  reproduce: virtio-compat verdict {saved[0]} --release {meta['release']}" in r.stdout
    assert len(saved[0].read_bytes()) % 3 == 0
    assert not list(tmp.iterdir())
    # --replay: still there with the bug, gone without it (what a regression case in tests/data/fuzz checks)
    replay = [sys.executable, "-m", "harness.cli", "fuzz", "--replay", str(out), "--out", str(tmp_path / "r")]
    assert subprocess.run(replay, env=planted, capture_output=True, text=True).returncode == 1
    r = subprocess.run(replay, env=environ, capture_output=True, text=True)
    assert r.returncode == 0 and "replayed 1 input(s)" in r.stderr, r.stderr
