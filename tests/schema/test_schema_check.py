"""The matrix with a schema module: the cells it breaks fail with the right rule and a minimized state, the
failure file records the module, `replay` loads it again, and `check --schema` runs it all under xdist."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.failures import write_failure
from harness.matrix import CellResult, cells, run_cell
from models import schema
from models.releases import V

HERE = Path(__file__).resolve().parent
SCHEMAS = HERE / "schemas"
EXAMPLES = HERE.parents[1] / "examples" / "schemas"
ROOT = HERE.parents[1]


pytestmark = pytest.mark.usefixtures("ci_profile")


def statuses(module: Path, devices: tuple[str, ...], transports: tuple[str, ...] = ("pci", "mmio", "ccw")
             ) -> dict[str, CellResult]:
    reg = schema.load(module)
    return {c.id: run_cell(c, registry=reg) for c in cells((V("11.1"), V("11.2")), devices, transports, registry=reg)}


def test_ungated_subsection_breaks_exactly_the_backward_cells() -> None:
    """Backward, 11.1 refuses the subsection (R4). Forward, every state 11.1 can reach has foo at its reset
    value 0, which 11.2 writes as 11.1 does (R13 holds)."""
    results = statuses(EXAMPLES / "net_foo_ungated.py", ("virtio-net",))
    failed = {k for k, r in results.items() if r.status == "fail"}
    assert failed == {f"11.2-11.1-{t}-virtio-net" for t in ("pci", "mmio", "ccw")}
    for k in failed:
        failure = results[k].failure
        assert failure is not None
        _src, _dst, state, out, v = failure
        assert v.rule == "R4" and "VM subsection 'virtio-net-device/foo'" in v.got
        assert dict(state.extra) == {"foo": 1}  # minimized: the smallest foo that sends the subsection
        assert out.run.result.outcome == "rejected"


def test_gated_subsection_passes_every_cell() -> None:
    results = statuses(EXAMPLES / "net_foo_gated.py", ("virtio-net",))
    assert len(results) == 12 and {r.status for r in results.values()} == {"pass"}


def test_core_subsection_round_trips_and_is_gated() -> None:
    results = statuses(SCHEMAS / "core_bar_gated.py", ("virtio-rng", "virtio-blk"), ("pci",))
    assert {r.status for r in results.values()} == {"pass"}, {
        k: str(r.failure[4]) for k, r in results.items() if r.failure}


def test_failure_file_records_the_schema_and_replay_loads_it(tmp_path: Path) -> None:
    module = EXAMPLES / "net_foo_ungated.py"
    reg = schema.load(module)
    result = run_cell(next(c for c in cells((V("11.1"), V("11.2")), ("virtio-net",), ("pci",), registry=reg)
                           if c.id == "11.2-11.1-pci-virtio-net"), registry=reg)
    assert result.failure is not None
    src, dst, state, out, v = result.failure
    path = write_failure(None, src, dst, state, out, v, folder=tmp_path, registry=reg)
    record = json.loads(path.read_text())
    assert record["schema"] == [str(module)] and record["minimized_state"].endswith("foo=1")
    # a fresh process: only the failure file says that the case needs the module
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "replay", str(path)], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 1, proc.stderr
    assert "R4 STILL FAILS" in proc.stdout and "virtio-net-device/foo" in proc.stdout


def test_check_with_a_schema_under_xdist(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "check", "--schema", "examples/schemas/net_foo_ungated.py",
         "--releases", "11.1,11.2", "--devices", "virtio-net", "--transports", "pci", "--profile", "dev", "-n", "2",
         "--reports", str(reports)], capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "VIRTIO_COMPAT_REPORTS": str(reports)})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL virtio-net pci 11.2 -> 11.1 R4" in proc.stdout
    assert "state: " in proc.stdout and "foo=1" in proc.stdout
    entries = json.loads((reports / "compat-matrix.json").read_text())
    failed = {(e["src"], e["dst"], e["rule"]) for e in entries if e["outcome"] == "fail"}
    assert failed == {("11.2", "11.1", "R4")}
    files = list((reports / "failures").glob("R4-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["schema"] == [
        str(EXAMPLES / "net_foo_ungated.py")]


@pytest.mark.parametrize(("module", "failing"), [
    # section version 12: 11.1 refuses it; and 11.2 reads foo from 11.1's stream (virtio_load's local version)
    ("net_device_v12.py", {"11.1-11.2": ("R3", "Missing section footer"),
                           "11.2-11.1": ("R4", "unsupported version 12 for 'virtio-net' v11")}),
    # written from version 12, read with the section's 11: 11.2 cannot migrate to itself
    ("net_device_inner_only.py", {"11.2-11.2": ("R1", "Missing section footer"),
                                  "11.2-11.1": ("R4", "Missing section footer"),
                                  "11.1-11.2": ("R13", "bytes differ")}),
    ("net_device_unversioned.py", {"11.1-11.2": ("R3", "Missing section footer"),
                                   "11.2-11.1": ("R4", "Missing section footer")}),
    ("net_device_tested.py", {}),  # the tests follow a property that hw_compat_11_1 turns off
])
def test_device_vmsd_changes_break_exactly_their_cells(module: str, failing: dict[str, tuple[str, str]]) -> None:
    results = statuses(SCHEMAS / module, ("virtio-net",), ("pci",))
    got = {k.removesuffix("-pci-virtio-net"): r for k, r in results.items() if r.status == "fail"}
    assert set(got) == set(failing), {k: str(r.failure[4]) for k, r in got.items() if r.failure}
    for k, (rule, words) in failing.items():
        failure = got[k].failure
        assert failure is not None
        v = failure[4]
        assert v.rule == rule and words in v.got, str(v)


def test_a_new_version_of_a_subsection_of_the_models() -> None:
    """virtio/started version 2 (started_v2.py): 11.1 refuses it wherever a started device sends it; 11.2 loads
    it, and the field it adds round-trips (R1 compares what the stream carried with what was loaded)."""
    results = statuses(SCHEMAS / "started_v2.py", ("virtio-blk",), ("mmio", "ccw"))
    failed = {k: r for k, r in results.items() if r.status == "fail"}
    assert set(failed) == {f"{p}-{t}-virtio-blk" for p in ("11.2-11.1", "11.1-11.2") for t in ("mmio", "ccw")}
    for k, r in failed.items():
        assert r.failure is not None
        _src, _dst, state, _out, v = r.failure
        if k.startswith("11.2-11.1"):
            assert v.rule == "R4" and "virtio/started: incoming version_id 2 is too new for local version_id 1" in v.got
        else:  # 11.2 writes version 2 on 11.1's machine types too
            assert v.rule == "R13" and "version_id: 11.1 1, 11.2 2" in v.got, v.got
        assert state.started
    from dataclasses import replace

    from harness.matrix import run_example
    from models.config import Config, realize
    from models.model import reset_state
    from models.releases import MachineType

    reg = schema.load(SCHEMAS / "started_v2.py")
    config = Config(V("11.2"), MachineType.parse("virt-11.1"), "virtio-blk", "mmio")
    s = replace(reset_state(realize(config, reg)), status=7, started=True, extra=(("kick_count", 513),))
    out = run_example(config, config, s, registry=reg)
    assert out.violations == [] and out.run.result.state is not None
    assert dict(out.run.result.state.extra) == {"kick_count": 513}
