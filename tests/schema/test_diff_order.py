"""`diff` judges subsection order where a VMSTATE_*_TEST field's test reads another subsection's field: the
destination loads subsections in stream order, so a test that reads one loaded after it sees the value from
before the load (harness/diff/order.py)."""

from __future__ import annotations

from pathlib import Path

from harness.diff import BREAKS, diff
from models import schema
from models.releases import V

HERE = Path(__file__).resolve().parent
MODULE = HERE / "schemas" / "net_test_across.py"


def _swapped(tmp_path: Path) -> Path:
    """net_test_across.py with regs declared (so sent) before mode."""
    head, mode, regs = MODULE.read_text().split("    Subsection(")
    out = tmp_path / "net_test_before.py"
    out.write_text(head + "    Subsection(" + regs.rstrip().removesuffix(")").rstrip() + "\n    Subsection(" + mode
                   + ")\n")
    return out


def test_a_test_reading_a_subsection_loaded_before_it_is_safe() -> None:
    reg = schema.load(MODULE)
    result = diff(V("11.1"), V("11.2"), ["virtio-net"], registry=reg)
    assert not [x for x in result.differences if x.kind == "test-order"]
    assert not result.breaks


def test_a_test_reading_a_later_subsection_breaks(tmp_path: Path) -> None:
    reg = schema.load(_swapped(tmp_path))
    result = diff(V("11.1"), V("11.2"), ["virtio-net"], registry=reg)
    [x] = [x for x in result.differences if x.kind == "test-order"]
    assert x.subject == "virtio-net-device/regs.regs_hi" and x.verdict == BREAKS and x.direction == "11.2 -> 11.2"
    assert "pc-i440fx-11.2" in x.machines and "pc-i440fx-11.1" not in x.machines  # regs is gated by x-mode
    assert any("after virtio-net-device/regs" in w for w in x.why)


def test_a_release_that_adds_the_subsection_a_test_reads(tmp_path: Path) -> None:
    """11.2 tests mode, which no subsection of 11.2 carries; 11.3 adds the mode subsection (before regs). 11.3 ->
    11.2: 11.2 never loads mode, and decides the test over its reset value where 11.3 decided over the real one."""
    module = tmp_path / "net_mode_later.py"
    module.write_text(MODULE.read_text().replace(
        "    Release(V(\"11.2\"), after=V(\"11.1\")),",
        "    Release(V(\"11.2\"), after=V(\"11.1\")),\n    Release(V(\"11.3\"), after=V(\"11.2\")),").replace(
        "Subsection(\"virtio-net-device/mode\", V(\"11.2\")", "Subsection(\"virtio-net-device/mode\", V(\"11.3\")"))
    reg = schema.load(module)
    result = diff(V("11.2"), V("11.3"), ["virtio-net"], registry=reg)
    [x] = [x for x in result.differences if x.kind == "test-order"]
    assert x.verdict == BREAKS and x.direction == "11.3 -> 11.2", x.why
    assert any(w.startswith("11.2 -> 11.3: 11.3 loads mode") for w in x.why)
