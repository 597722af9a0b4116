"""A VMSTATE_*_TEST field's test on the destination sees the device as loaded so far, in stream order: the core
fields, the device's fields and the subsections loaded before its own (QEMU loads each into the device as it reads
it), never a later one's."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.matrix import cells, run_cell, run_example
from models import schema
from models.config import Config, realize
from models.model import reset_state
from models.registry import Registry
from models.releases import V
from models.state import DeviceState

HERE = Path(__file__).resolve().parent
MODULE = HERE / "schemas" / "net_test_across.py"

pytestmark = pytest.mark.usefixtures("ci_profile")


def _state(reg: Registry, **extra: int) -> tuple[Config, DeviceState]:
    c = Config(V("11.2"), reg.machine("pc-i440fx-11.2"), "virtio-net", "pci", props={"romfile": ""})
    s = reset_state(realize(c, reg))
    return c, s.with_(extra=tuple(sorted({**dict(s.extra), **extra}.items())))


def test_a_test_reads_the_subsection_loaded_before_it() -> None:
    reg = schema.load(MODULE)
    for mode, hi in ((2, 7), (1, 0), (0, 0)):
        c, s = _state(reg, mode=mode, regs_lo=5, regs_hi=hi)
        out = run_example(c, c, s, registry=reg)
        assert out.violations == [], (mode, [str(v) for v in out.violations])
        assert out.run is not None and out.run.result.outcome == "accepted"
        assert out.run.result.state is not None and dict(out.run.result.state.extra)["regs_hi"] == hi


def test_the_correct_module_passes_the_matrix() -> None:
    reg = schema.load(MODULE)
    for c in cells((V("11.1"), V("11.2")), ("virtio-net",), ("pci",), registry=reg):
        result = run_cell(c, registry=reg)
        assert result.status == "pass", (c.id, result.failure and str(result.failure[4]))


def test_a_test_never_reads_a_subsection_loaded_after_it(tmp_path: Path) -> None:
    """regs declared (so sent) before mode: its test sees mode as it was before the load (0), so regs_hi written
    for mode 2 is not read, and the rest of the stream is out of step: QEMU fails the load, and so does the model,
    which the matrix reports."""
    text = MODULE.read_text()
    head, mode, regs = text.split("    Subsection(")
    swapped = tmp_path / "net_test_before.py"
    swapped.write_text(head + "    Subsection(" + regs.rstrip().removesuffix(")").rstrip() + "\n    Subsection(" + mode
                       + ")\n")
    reg = schema.load(swapped)
    assert [s.name for s in reg.subsections] == ["virtio-net-device/regs", "virtio-net-device/mode"]
    c, s = _state(reg, mode=2, regs_lo=5, regs_hi=7)
    out = run_example(c, c, s, registry=reg)
    assert out.run is not None and out.run.result.outcome == "rejected"
    assert [v.rule for v in out.violations] == ["R1"]
    c, s = _state(reg, mode=1, regs_lo=5)
    assert run_example(c, c, s, registry=reg).violations == []


def test_a_core_subsection_test_reads_the_loaded_core_fields(tmp_path: Path) -> None:
    """A core subsection's test over the device status: the status just loaded, not the reset one."""
    module = tmp_path / "core_tested.py"
    module.write_text(
        "from models.conditions import Property, StateField, Status\n"
        "from models.releases import V\n"
        "from models.schema import Compat, Field, Prop, Release, Subsection\n"
        "DECLARATIONS = (\n"
        "    Release(V('11.2'), after=V('11.1')),\n"
        "    Prop('virtio-device', 'x-qux', True, V('11.2')),\n"
        "    Compat(V('11.1'), 'virtio-device', 'x-qux', False, V('11.2')),\n"
        "    Subsection('virtio/qux', V('11.2'), fields=(Field('qux', 'uint32'), Field('qux_hi', 'uint32',\n"
        "               present=Status(4))), needed=Property('x-qux') & (StateField('qux') != 0)),\n"
        ")\n")
    reg = schema.load(module)
    c, s = _state(reg, qux=1, qux_hi=9)
    out = run_example(c, c, s.with_(status=7), registry=reg)
    assert out.violations == [] and out.run is not None and dict(out.run.result.state.extra)["qux_hi"] == 9  # type: ignore[union-attr]
