"""The rules have teeth: deliberately broken model variants (they live here, never in models/) are
caught by the matrix in the cell where they should be, with the right rule id and a minimized
example, while the unbroken model passes the same cells with the same (derandomized) seed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from harness.matrix import Cell, run_cell
from models import core
from models.registry import BASE, Registry
from models.releases import V

pytestmark = pytest.mark.usefixtures("ci_profile")


def _with_started_rule(test: object) -> Registry:
    """The in-tree registry with virtio/started's needed() replaced by `test`."""
    out = []
    for sub in BASE.core_subsections:
        if sub.name == "virtio/started":
            sub = replace(sub, needed=(core.Rule(V("4.1"), test, "broken"),))  # type: ignore[arg-type]
        out.append(sub)
    return replace(BASE, core_subsections=tuple(out))


CELL = Cell(V("4.1"), V("4.0"), "pci", "virtio-net")


def test_unbroken_model_passes_the_cells() -> None:
    for cell in (CELL, Cell(V("7.2"), V("7.2"), "pci", "virtio-net")):
        assert run_cell(cell).status == "pass", cell.id


def test_subsection_needed_always() -> None:
    result = run_cell(CELL, registry=_with_started_rule(lambda r, s: True))
    assert result.failure is not None
    src, dst, state, out, v = result.failure
    assert v.rule == "R4" and "rejected" in v.got
    assert str(src.release) == "4.1" and str(dst.release) == "4.0"


def test_new_subsection_without_machine_type_gate() -> None:
    """virtio/started sent whenever the driver set DRIVER_OK, ignoring use-started (hw_compat_4_0)."""
    result = run_cell(CELL, registry=_with_started_rule(lambda r, s: bool(s.status & 4)))
    assert result.failure is not None
    _src, _dst, state, _out, v = result.failure
    assert v.rule == "R4"
    assert state.status & 4  # minimized to a state that has DRIVER_OK
    assert state.status in (4, 7, 0xF, 0xB) or state.status & 4


def test_features_read_before_the_core_subsections_and_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """Device load code that takes the 32-bit features it saw at step 9 as final: the high bits
    (VERSION_1) that virtio/64bit_features brings later are lost."""
    from models import load

    def early(r, v, incoming):  # type: ignore[no-untyped-def]
        return v.guest_features_lo & r.host_features, None

    monkeypatch.setattr(load, "sanitize_features", early)
    # on 7.2 machine types every device offers VERSION_1, so every cell example can negotiate a high bit
    result = run_cell(Cell(V("7.2"), V("7.2"), "pci", "virtio-net"), ["pc-i440fx-7.2", "pc-q35-7.2"])
    assert result.failure is not None
    _src, _dst, state, _out, _v = result.failures["R1"]
    assert "R1" in result.failures and "guest_features" in result.failures["R1"][4].got
    assert state.guest_features >> 32  # the minimal example negotiated a high bit




@pytest.mark.parametrize(("cell", "machine", "known"), [
    (Cell(V("5.0"), V("4.2"), "pci", "virtio-blk"), "pc-i440fx-4.2", "disabled-on-4.2-from-5.x"),
    (Cell(V("2.8"), V("2.7"), "pci", "virtio-net"), "pc-q35-2.7", "broken-to-2.7"),
])
def test_declared_incompatibilities_are_reached(cell: Cell, machine: str, known: str) -> None:
    """The driver reaches the states QEMU's known incompatibilities need (a disabled device, a broken one), so
    each entry is reported as expected on its machine type, and the same cell fails without it. (The cell's
    expected names one entry per rule: on 2.7 vlans-rewritten-on-load may be the one it names for R4.)"""
    from harness import known as matrix_known

    passed = run_cell(cell, [machine])
    assert passed.failure is None and passed.expected.get("R4") in (known, "vlans-rewritten-on-load")
    entries = tuple(k for k in matrix_known.KNOWN if k.name != known)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(matrix_known, "KNOWN", entries)
        result = run_cell(cell, [machine])
    assert result.failure is not None and result.failure[4].rule == "R4"


@pytest.mark.parametrize(("cell", "machine", "rule", "known"), [
    (Cell(V("5.2"), V("7.2"), "pci", "virtio-balloon"), "pc-i440fx-5.2", "R3", "balloon-page-poison-misspelt"),
    (Cell(V("10.0"), V("7.2"), "pci", "virtio-net"), "pc-i440fx-7.2", "R4", "vlans-rewritten-on-load"),
])
def test_fleet_incompatibilities_are_reached(cell: Cell, machine: str, rule: str, known: str) -> None:
    """What the fleet's binaries showed: a balloon with PAGE_POISON across the 6.2 rename, and the VLAN table a
    7.2 destination empties; each is reported as expected, and the same cell fails without its entry."""
    from harness import known as matrix_known

    assert run_cell(cell, [machine]).expected.get(rule) == known
    entries = tuple(k for k in matrix_known.KNOWN if k.name != known)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(matrix_known, "KNOWN", entries)
        result = run_cell(cell, [machine])
    assert result.failure is not None and result.failure[4].rule == rule


def test_compat_entry_one_release_late_breaks_the_machine_type_promise() -> None:
    """hw_compat_2_3's `virtio-rng-pci.any_layout=off` added one release late (in 2.5, not 2.4): 2.4 offers
    ANY_LAYOUT on pc-i440fx-2.1 where 2.1 did not. Forward, 2.1 -> 2.4 still loads (the destination offers
    more), so only R13 sees it."""
    cell, machine = Cell(V("2.1"), V("2.4"), "pci", "virtio-rng"), ["pc-i440fx-2.1"]
    assert run_cell(cell, machine).failure is None
    late = tuple(replace(e, since=V("2.5")) if (e.driver, e.prop) == ("virtio-rng-pci", "any_layout") else e
                 for e in BASE.compat)
    result = run_cell(cell, machine, replace(BASE, compat=late))
    assert result.failure is not None and list(result.failures) == ["R13"]
    v = result.failure[4]
    assert v.details == {"realized": "host_features"} and "pc-i440fx-2.1" in v.expected


def test_new_field_without_its_machine_type_gate_breaks_the_promise() -> None:
    """virtio/started sent by 4.1 on pc-*-4.0 whenever the driver set DRIVER_OK (use-started ignored): R13 names
    the subsection one release sends and the other does not, in the direction R4 cannot see (4.0 -> 4.1)."""
    from harness.rules import Run, r13_machine_compat
    from models.config import Config, realize
    from models.model import reset_state
    from models.releases import MachineType

    broken = _with_started_rule(lambda r, s: bool(s.status & 4))
    a, b = (realize(Config(V(r), MachineType.parse("pc-i440fx-4.0"), "virtio-rng"), broken) for r in ("4.0", "4.1"))
    state = replace(reset_state(a), status=7)
    v = r13_machine_compat(Run.of(a, b, state))
    assert v is not None and v.rule == "R13"
    assert "subsections: 4.0 sends [" in v.got and v.got.split("4.1 sends")[1].endswith("'virtio/started']")
    assert r13_machine_compat(Run.of(a, b, replace(state, status=3))) is None


BAZ = Path(__file__).resolve().parent / "schemas" / "core_baz.py"


def test_a_declared_core_field_is_drawn_and_compared() -> None:
    """A core subsection a schema module declares (tests/teeth/schemas/core_baz.py): its fields are drawn (values
    other than their reset ones), and a model that drops one on load is caught by R1, R3 and R4 with that field
    named, with no edit to strategies/ or harness/rules.py."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from models import declared, schema
    from models.config import Config, realize
    from models.releases import MachineType
    from strategies.driver import device_states

    reg = schema.load(BAZ)
    r = realize(Config(V("11.3"), MachineType.parse("pc-i440fx-11.2"), "virtio-rng"), reg)
    seen: set[tuple[int, tuple[int, ...]]] = set()

    @settings(max_examples=60, database=None, derandomize=True)
    @given(st.data())
    def draw(data: st.DataObject) -> None:
        extra = dict(data.draw(device_states(r)).extra)
        seen.add((extra["baz"], extra["baz_regs"]))

    draw()
    assert any(baz != 0 for baz, _ in seen) and any(regs != (0, 0, 0) for _, regs in seen), seen
    cells = [Cell(V("11.3"), V("11.3"), "pci", "virtio-rng"), Cell(V("11.2"), V("11.3"), "pci", "virtio-rng"),
             Cell(V("11.3"), V("11.2"), "pci", "virtio-rng")]
    machine = ["pc-i440fx-11.2"]
    for cell in cells:
        assert run_cell(cell, machine, registry=reg).failure is None, cell.id
    own = declared.values_from_wire

    def drops_baz(realized, decoded):  # type: ignore[no-untyped-def]
        return tuple((k, 0 if k == "baz" else v) for k, v in own(realized, decoded))

    with pytest.MonkeyPatch.context() as m:
        m.setattr(declared, "values_from_wire", drops_baz)
        for cell, rule in zip(cells, ("R1", "R3", "R4"), strict=True):
            result = run_cell(cell, machine, registry=reg)
            assert result.failure is not None, cell.id
            _src, _dst, state, _out, v = result.failure
            assert v.rule == rule and "baz" in v.got and dict(state.extra)["baz"] != 0, (cell.id, str(v))


def test_a_core_field_is_drawn_from_its_declaration() -> None:
    """virtio/started's field is derived from DRIVER_OK and use-started by its declaration (models/core.py), which
    strategies/driver.py follows without naming it: declared without `derived`, the matrix draws it freely, sends
    virtio/started where 4.0's machine types keep use-started off, and R4 fails."""
    out = []
    for sub in BASE.core_subsections:
        if sub.name == "virtio/started":
            sub = replace(sub, fields=tuple(replace(f, derived=None) for f in sub.fields))
        out.append(sub)
    machine = ["pc-i440fx-4.0"]
    assert run_cell(CELL, machine).failure is None
    result = run_cell(CELL, machine, registry=replace(BASE, core_subsections=tuple(out)))
    assert result.failure is not None
    _src, _dst, state, _out, v = result.failure
    assert v.rule == "R4" and "rejected" in v.got and state.started
    assert "load of migration failed: No such file or directory" in v.details["lines"]  # -ENOENT: not known


def test_a_core_subsection_declared_in_tree_needs_no_other_file() -> None:
    """A new core subsection is one declaration in models/core.py's table (here the registry built with it): without
    a layout in harness/wire/virtio.py or a DeviceState field, it is saved, read back, drawn and compared (R1 catches
    a model that drops its field on load), and an older destination that does not know it fails R4."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from harness.wire.payload import decode_payload
    from models import declared
    from models.conditions import StateField
    from models.config import Config, realize
    from models.declarations import Field
    from models.model import save, state_from_wire
    from models.releases import MachineType
    from strategies.driver import device_states

    baz = core.CoreSubsection("virtio/baz", V("11.1"), (core.Rule(V("11.1"), StateField("baz") != 0),), "test",
                              fields=(Field("baz", "uint32"), Field("baz_regs", "uint16", count=3)))
    reg = replace(BASE, core_subsections=(*BASE.core_subsections, baz))
    r = realize(Config(V("11.1"), MachineType.parse("pc-i440fx-11.1"), "virtio-rng"), reg)
    seen: list[int] = []

    @settings(max_examples=40, database=None, derandomize=True)
    @given(st.data())
    def round_trip(data: st.DataObject) -> None:
        s = data.draw(device_states(r))
        v = decode_payload(save(r, s), "pci", "virtio-rng", extras=reg.wire)
        sent = "virtio/baz" in [x.name for x in v.subsections]
        assert sent == (dict(s.extra)["baz"] != 0)
        # read back where sent; else not migrated: each side's reset values
        assert state_from_wire(r, v).extra == (s.extra if sent else (("baz", 0), ("baz_regs", (0, 0, 0))))
        seen.append(dict(s.extra)["baz"])

    round_trip()
    assert any(seen)
    machine = ["pc-i440fx-11.0"]
    same, forward, backward = (Cell(V("11.1"), V("11.1"), "pci", "virtio-rng"),
                               Cell(V("11.0"), V("11.1"), "pci", "virtio-rng"),
                               Cell(V("11.1"), V("11.0"), "pci", "virtio-rng"))
    assert run_cell(same, machine, registry=reg).failure is None
    assert run_cell(forward, machine, registry=reg).failure is None
    result = run_cell(backward, machine, registry=reg)
    assert result.failure is not None and result.failure[4].rule == "R4" and "rejected" in result.failure[4].got
    own = declared.values_from_wire

    def drops_baz(realized, decoded):  # type: ignore[no-untyped-def]
        return tuple((k, 0 if k == "baz" else v) for k, v in own(realized, decoded))

    with pytest.MonkeyPatch.context() as m:
        m.setattr(declared, "values_from_wire", drops_baz)
        result = run_cell(same, machine, registry=reg)
    assert result.failure is not None
    _src, _dst, state, _out, v = result.failure
    assert v.rule == "R1" and "baz" in v.got and dict(state.extra)["baz"] != 0, str(v)
