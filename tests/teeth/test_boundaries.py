"""Boundaries always covered (issue 16 item 3): every cell runs the machine types where something changes for the
pair and the terms a declared needed() names at their edges, so that a schema mistake one release off is caught on
the exact machine types it breaks, by the ci profile, every run; and the correct versions pass."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.matrix import Cell, cells, run_cell
from models import features as F
from models import schema
from models.config import realize
from models.edges import boundary_machines, declared_terms
from models.model import reset_state
from models.registry import BASE
from models.releases import V
from strategies.boundaries import boundaries

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
EXAMPLES = ROOT / "examples" / "schemas"

pytestmark = pytest.mark.usefixtures("ci_profile")


def test_the_machine_types_where_something_changes() -> None:
    """11.0 -> 11.1 on pci for virtio-net (hubport): both sides of hw_compat_5_2 (vectors 3) and hw_compat_7_1
    (queue_reset: RING_RESET offered), the newest machine type both have; not a machine type inside a stretch where
    the example sees nothing change (hw_compat_8_1's USO needs a tap that has it)."""
    names = {m.name for m, _ in boundary_machines(BASE, V("11.0"), V("11.1"), "pci", "virtio-net")}
    for family in ("pc-i440fx", "pc-q35"):
        assert {f"{family}-{v}" for v in ("5.2", "6.0", "7.1", "7.2", "11.0")} <= names
        assert not {f"{family}-{v}" for v in ("6.1", "8.1", "8.2", "11.1")} & names  # 11.0 has no 11.1 machine type
    # a schema's property gated by a compat entry: its boundary is seen through the condition that reads it
    reg = schema.load(EXAMPLES / "net_foo_compat_off.py")
    names = {m.name for m, _ in boundary_machines(reg, V("11.1"), V("11.2"), "pci", "virtio-net")}
    assert {"pc-i440fx-11.0", "pc-i440fx-11.1"} <= names
    # the examples: one per machine type the example sees differently, pc-q35-X run once beside pc-i440fx-X
    runs = [b.src.machine.name for b in boundaries(V("11.0"), V("11.1"), "pci", "virtio-net")]
    assert sorted(runs) == sorted(f"pc-i440fx-{v}" for v in ("5.2", "6.0", "7.1", "7.2", "11.0"))


def test_a_downstream_line_and_a_declared_machine_gate_are_covered() -> None:
    reg = schema.load(ROOT / "tests" / "schema" / "schemas" / "rhel_foo.py")
    names = [m.name for m, _ in boundary_machines(reg, V("11.1"), V("11.2"), "pci", "virtio-net")]
    assert names.count("pc-q35-rhel10.0.0") == 1 and not any("rhel9" in n for n in names)  # the line's newest shared
    reg = schema.load(EXAMPLES / "net_foo_machine_off.py")
    t = declared_terms(reg, "virtio-net", V("11.1"), V("11.2"))
    assert t.machines == {V("11.1")} and t.fields == {"foo": ([1], [0])} and t.holding() == [(("foo", 1),)]
    names = [m.name for m, _ in boundary_machines(reg, V("11.1"), V("11.2"), "mmio", "virtio-net", t.machines)]
    assert "virt-11.0" in names and "virt-11.1" in names


def test_a_boundary_example_sets_the_declared_terms_as_a_driver_would() -> None:
    """A guest feature term past bit 31 is negotiated with VERSION_1 by a driver that wrote its features."""
    reg = schema.load(HERE / "schemas" / "net_reset_machine_off.py")
    b = next(x for x in boundaries(V("11.2"), V("11.1"), "pci", "virtio-net", registry=reg)
             if x.src.machine.name == "pc-i440fx-11.1")
    r = realize(b.src, reg)
    s = b.apply(r, reset_state(r))
    assert F.has(s.guest_features, F.RING_RESET) and F.has(s.guest_features, F.VERSION_1)
    assert s.status & 0xB == 0xB and s.pci is not None and s.pci.modern_guest_features[1] & 1 << (F.RING_RESET - 32)
    assert s.guest_features & ~r.host_features == 0
    # a machine type that does not offer the bit (RING_RESET is off up to 7.1): left out, never invented
    old = next(x for x in boundaries(V("11.2"), V("11.1"), "pci", "virtio-net", registry=reg)
               if x.src.machine.version == V("7.1"))
    r = realize(old.src, reg)
    assert not F.has(old.apply(r, reset_state(r)).guest_features, F.RING_RESET)


@pytest.mark.parametrize("mistake", ["net_foo_compat_off.py", "net_foo_machine_off.py"])
def test_a_gate_one_release_off_is_caught_on_its_exact_machine_type(mistake: str) -> None:
    reg = schema.load(EXAMPLES / mistake)
    results = {c.id: run_cell(c, registry=reg) for c in cells((V("11.1"), V("11.2")), ("virtio-net",), registry=reg)}
    failed = {k for k, r in results.items() if r.status == "fail"}
    assert failed == {f"11.2-11.1-{t}-virtio-net" for t in ("pci", "mmio", "ccw")}
    for k in failed:
        failure = results[k].failure
        assert failure is not None
        src, _dst, state, _out, v = failure
        assert v.rule == "R4" and "virtio-net-device/foo" in v.got
        assert src.machine.version == V("11.1") and dict(state.extra) == {"foo": 1}


@pytest.mark.parametrize("fixed", ["net_foo_gated.py", "net_foo_machine_gated.py"])
def test_the_correct_versions_pass(fixed: str) -> None:
    reg = schema.load(EXAMPLES / fixed)
    for c in cells((V("11.1"), V("11.2")), ("virtio-net",), registry=reg):
        result = run_cell(c, registry=reg)
        assert result.status == "pass", (c.id, result.failure and str(result.failure[4]))
        assert result.boundaries and {"pc-i440fx-11.1", "virt-11.1", "s390-ccw-virtio-11.1"} & result.machines


def test_a_machine_type_a_modern_driver_and_a_feature_bit_at_once(tmp_path: Path) -> None:
    module = HERE / "schemas" / "net_reset_machine_off.py"
    cell = Cell(V("11.2"), V("11.1"), "pci", "virtio-net")
    result = run_cell(cell, registry=schema.load(module))
    assert result.failure is not None
    src, _dst, state, _out, v = result.failure
    assert v.rule == "R4" and "virtio-net-device/bar" in v.got and src.machine.version == V("11.1")
    assert F.has(state.guest_features, F.RING_RESET)
    fixed = tmp_path / "net_reset_machine_gated.py"
    fixed.write_text(module.read_text().replace("GATE_OFF = True", "GATE_OFF = False"))
    assert run_cell(cell, registry=schema.load(fixed)).status == "pass"


def test_a_downstream_line_without_its_own_entry_is_caught(tmp_path: Path) -> None:
    module = ROOT / "tests" / "schema" / "schemas" / "rhel_foo.py"
    missing = tmp_path / "rhel_foo_missing_entry.py"
    missing.write_text(module.read_text().replace("RHEL_ENTRY = True", "RHEL_ENTRY = False"))
    cell = Cell(V("11.2"), V("11.1"), "pci", "virtio-net")
    result = run_cell(cell, registry=schema.load(missing))
    assert result.failure is not None and result.failure[0].machine.name == "pc-q35-rhel10.0.0"
    assert run_cell(cell, registry=schema.load(module)).status == "pass"


def test_derandomized_runs_draw_the_same_boundary_examples() -> None:
    cell = Cell(V("10.2"), V("11.0"), "pci", "virtio-balloon")
    one, two = run_cell(cell, digests=True), run_cell(cell, digests=True)
    assert one.boundaries and one.digests == two.digests and one.machines == two.machines


def test_check_catches_the_mistake_and_passes_the_fix(tmp_path: Path) -> None:
    """`virtio-compat check --profile ci` on the one transport, as a schema author runs it."""
    def check(module: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "harness.cli", "check", "--schema", f"examples/schemas/{module}", "--releases",
             "11.1,11.2", "--devices", "virtio-net", "--transports", "mmio", "--profile", "ci", "-n", "0",
             "--reports", str(tmp_path / module)], capture_output=True, text=True, cwd=ROOT, timeout=600)

    bad = check("net_foo_compat_off.py")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    report = (tmp_path / "net_foo_compat_off.py" / "compat-matrix.md").read_text()
    assert "1 fail" in bad.stdout and "virt-11.1" in report
    good = check("net_foo_gated.py")
    assert good.returncode == 0, good.stdout + good.stderr
