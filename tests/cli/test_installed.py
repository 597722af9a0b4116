"""The product stands on its own (issue 12): the wheel, installed into a fresh venv (not editable), runs `check`,
`decode`, `bench` and `fuzz` from an empty folder, with no checkout beside it. The wheel is built from a copy of
the sources, so that nothing (setuptools' build/ and egg-info) is written into the repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from models.registry import BASE
from tests.conftest import ROOT

# what pyproject.toml packages, and what it needs to build
SOURCES = ("pyproject.toml", "README.md", "harness", "models", "strategies")


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, f"{' '.join(cmd)}: exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    assert "Traceback" not in p.stderr, p.stderr
    return p


def test_slow_subprocess_wheel_in_a_fresh_venv_runs_check_decode_bench_fuzz_from_an_empty_folder(
        tmp_path: Path) -> None:
    before = {p.name for p in ROOT.iterdir()}
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("PYTEST_", "HYPOTHESIS_", "VIRTIO_COMPAT_", "PYTHON"))}
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(src), "-w", str(tmp_path / "dist")],
         tmp_path, base)
    wheel, = (tmp_path / "dist").glob("virtio_compat-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path, base)
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)], tmp_path, base)

    work = tmp_path / "work"  # an empty folder: no checkout, no tests/, no ../shared
    work.mkdir()
    # only the venv on PATH: bench finds no QEMU and skips its QEMU figure (seconds of QEMU pairs otherwise)
    env = {**base, "PATH": str(venv / "bin")}
    cli = str(venv / "bin" / "virtio-compat")
    site = _run([str(venv / "bin" / "python"), "-c", "import harness.samples as s; print(s.FOLDER, s.BLK)"],
                work, env).stdout.split()
    assert Path(site[0]).is_relative_to(venv), f"harness imported from {site[0]}, not from the installed wheel"

    check = _run([cli, "check", "--profile", "dev", "--releases", "5.2,11.1", "-n", "2"], work, env)
    assert "0 fail" in check.stdout, check.stdout
    entries = json.loads((work / "reports" / "compat-matrix.json").read_text())
    assert {(e["src"], e["dst"]) for e in entries} == {("5.2", "5.2"), ("5.2", "11.1"), ("11.1", "5.2"),
                                                       ("11.1", "11.1")}
    assert {e["device"] for e in entries} == {d.name for d in BASE.devices}
    assert all(e["examples"] > 0 for e in entries)

    decoded = json.loads(_run([cli, "decode", "--json", site[1]], work, env).stdout)
    assert decoded["machine"] == "pc-i440fx-7.2"
    assert [d["device"] for d in decoded["devices"]] == ["virtio-blk"]

    bench = json.loads(_run([cli, "bench", "--seconds", "0.1", "--json"], work, env).stdout)
    rows = {r["what"]: r for r in bench}
    assert rows["decode whole stream"]["per_second"] > 0, bench
    assert "not found on PATH" in rows["real QEMU backend, 2 workers"]["skipped"], bench

    fuzz = _run([cli, "fuzz", "--minutes", "0.03", "--out", "fuzz"], work, env)
    assert "0 finding(s)" in fuzz.stderr and " inputs in " in fuzz.stderr, fuzz.stderr

    assert {p.name for p in work.iterdir()} <= {"reports", "fuzz", ".hypothesis"}
    # what a build in the checkout would leave (build/, *.egg-info, dist/); other tests running beside this one
    # may add .hypothesis or reports
    new = {p.name for p in ROOT.iterdir()} - before
    assert new <= {".hypothesis", "reports"}, f"the test wrote into the repository: {sorted(new)}"
