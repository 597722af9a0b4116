"""README's "Adding a release or a device version", done: QEMU 4.1's virtio/started and its compat property
use-started (hw_compat_4_0), given to the model as it stood before them, in-tree (one declaration in each of
models/props.py, models/releases.py and models/core.py) and as a schema module (examples/schemas/virtio_started.py).
Both give the model of today: the same declarations, the same bytes, the same cells; without the compat entry R4
fails on pc-i440fx-4.0."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.matrix import Cell, run_cell
from models import core, schema
from models.config import Config, realize
from models.model import save
from models.registry import BASE, Registry
from models.releases import MachineType, V
from strategies.driver import device_states

MODULE = Path(__file__).resolve().parents[2] / "examples" / "schemas" / "virtio_started.py"
NAME, PROP = "virtio/started", "use-started"

pytestmark = pytest.mark.usefixtures("ci_profile")


def _before() -> Registry:
    """The in-tree model without 4.1's change: no virtio/started, no use-started, no hw_compat_4_0 entry for it."""
    return replace(BASE, core_subsections=tuple(s for s in BASE.core_subsections if s.name != NAME),
                   props=tuple(p for p in BASE.props if p.name != PROP),
                   compat=tuple(c for c in BASE.compat if c.prop != PROP))


def _in_tree(before: Registry) -> Registry:
    """The walkthrough's in-tree steps: each declaration added to its table, where QEMU lists the subsection."""
    sub = next(s for s in core.CORE_SUBSECTIONS if s.name == NAME)
    subs = list(before.core_subsections)
    at = [s.name for s in subs].index("virtio/extra_state") + 1
    return replace(before, core_subsections=tuple(subs[:at] + [sub] + subs[at:]),
                   props=(*before.props, *(p for p in BASE.props if p.name == PROP)),
                   compat=(*before.compat, *(c for c in BASE.compat if c.prop == PROP)))


def test_the_module_declares_what_models_holds() -> None:
    reg = schema.load(MODULE, _before())
    assert [s.name for s in reg.core_subsections] == [s.name for s in BASE.core_subsections]
    mine, theirs = (next(s for s in r.core_subsections if s.name == NAME) for r in (reg, BASE))
    assert (mine.since, mine.source) == (theirs.since, theirs.source)
    # conditions are equal only to themselves: the same field, described alike
    assert [(f.describe(), f.derived and f.derived.describe()) for f in mine.fields] == \
        [(f.describe(), f.derived and f.derived.describe()) for f in theirs.fields]
    assert mine.rule(V("4.1")).describe() == theirs.rule(V("4.1")).describe() == "started"  # type: ignore[union-attr]
    assert [p for p in reg.props if p.name == PROP] == [p for p in BASE.props if p.name == PROP]
    assert [c for c in reg.compat if c.prop == PROP] == [c for c in BASE.compat if c.prop == PROP]
    assert not reg.subsections  # bound to DeviceState.started, as models/core.py's: not a schema field in `extra`


@pytest.mark.parametrize("machine", ["pc-i440fx-4.1", "pc-i440fx-4.0"])
def test_both_ways_write_the_same_bytes(machine: str) -> None:
    regs = {"in-tree": _in_tree(_before()), "schema": schema.load(MODULE, _before()), "base": BASE}
    config = Config(V("4.1"), MachineType.parse(machine), "virtio-net")
    realized = {k: realize(config, r) for k, r in regs.items()}
    sent = []

    @settings(max_examples=40, database=None, derandomize=True)
    @given(st.data())
    def same(data: st.DataObject) -> None:
        s = data.draw(device_states(realized["base"]))
        out = {k: save(r, s) for k, r in realized.items()}
        assert out["in-tree"] == out["schema"] == out["base"]
        sent.append(s.started)

    same()
    assert any(sent) == (machine == "pc-i440fx-4.1")  # drawn where use-started is on, and only there


def test_both_ways_pass_the_cells_and_the_compat_entry_matters() -> None:
    machine = ["pc-i440fx-4.0"]
    cells = [Cell(V("4.1"), V("4.1"), "pci", "virtio-net"), Cell(V("4.0"), V("4.1"), "pci", "virtio-net"),
             Cell(V("4.1"), V("4.0"), "pci", "virtio-net")]
    for reg in (_in_tree(_before()), schema.load(MODULE, _before())):
        for cell in cells:
            assert run_cell(cell, machine, registry=reg).failure is None, cell.id
    # without hw_compat_4_0's entry a 4.1 source sends virtio/started on pc-i440fx-4.0, which 4.0 does not know
    decls = schema._read(MODULE, MODULE)[0]  # noqa: SLF001
    ungated = schema._apply(_before(), [d for d in decls if not isinstance(d, schema.Compat)],  # noqa: SLF001
                            lambda i: f"declaration {i}")
    result = run_cell(cells[2], machine, registry=ungated)
    assert result.failure is not None
    _src, _dst, state, _out, v = result.failure
    assert v.rule == "R4" and "rejected" in v.got and state.started


def test_todays_model_refuses_the_module() -> None:
    """README: given to today's model the module is refused in one line, which names the clash."""
    from harness.errors import SchemaError

    with pytest.raises(SchemaError, match=r"virtio_started.py:14: property use-started of virtio-device clashes"):
        schema.load(MODULE)
