"""Failures outside the rules are failures (issue 16 item 5): an exception inside the model during a matrix cell
is counted in check's summary, stays in the report with its traceback, writes a failure file that `replay`
reproduces; and a schema's LoadCheck ranges (several per check; ending a step's only check is a mistake)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from harness.check import Progress, summarize
from harness.errors import SchemaError
from harness.matrix import EXCEPTION, Cell, run_cell
from models import schema
from models.registry import BASE
from models.releases import V
from tests.cli.test_cli import assert_one_line_error, run

SCHEMAS = Path(__file__).resolve().parents[1] / "schema" / "schemas"
RAISING = SCHEMAS / "raising_needed.py"


def test_an_exception_in_the_model_is_a_failure_of_the_cell() -> None:
    reg = schema.load(RAISING)
    result = run_cell(Cell(V("11.2"), V("11.2"), "pci", "virtio-rng"), registry=reg)
    assert result.failure is not None
    src, _dst, state, out, v = result.failure
    assert v.rule == EXCEPTION and out.run is None
    assert v.got == "KeyError: 'bar' at tests/schema/schemas/raising_needed.py:10"
    assert "Traceback (most recent call last)" in v.details["traceback"]
    assert state.status & 4  # shrunk to a state that still raises


def test_check_counts_reports_and_replays_the_exception(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    p = run("check", "--schema", str(RAISING), "--releases", "11.2", "--devices", "virtio-rng", "--transports",
            "pci", "--profile", "dev", "--reports", str(reports), "-n", "0", cwd=tmp_path)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "1 cells, 10 results" in p.stdout and "9 pass, 0 expected incompatibilities, 1 fail" in p.stdout
    assert "FAIL virtio-rng pci 11.2 -> 11.2 exception: expected a verdict" in p.stdout
    assert "outside the rules" not in p.stdout
    entries = json.loads((reports / "compat-matrix.json").read_text())
    failed = [e for e in entries if e["outcome"] == "fail"]
    assert [e["rule"] for e in failed] == [EXCEPTION]
    assert "Traceback (most recent call last)" in failed[0]["failure"] and "KeyError: 'bar'" in failed[0]["failure"]
    assert "exception" in (reports / "compat-matrix.md").read_text()
    files = list((reports / "failures").glob("exception-*.json"))
    assert len(files) == 1
    record = json.loads(files[0].read_text())
    assert record["rule"] == EXCEPTION and "KeyError" in record["traceback"] and record["stream"] == ""
    r = run("replay", str(files[0]), cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "exception STILL FAILS" in r.stdout and "raise KeyError" in r.stdout and "exit 1" in r.stdout


def test_summary_counts_cells_that_failed_without_a_result(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A cell whose test failed before it recorded a result (an error in a strategy) is still a failure."""
    base = {"src": "7.2", "dst": "7.2", "transport": "pci", "device": "virtio-rng", "expected": None,
            "examples": 5, "machines": ["pc-i440fx-7.2"], "qemu": False, "failure": None, "outcome": "pass"}
    args = argparse.Namespace(profile="dev", n="1")
    assert summarize([{**base, "rule": "R1"}], 1, Progress(done=2, failed=1), tmp_path, args) == 1
    out = capsys.readouterr().out
    assert "1 pass, 0 expected incompatibilities, 1 fail" in out and "1 cells failed outside the rules" in out


def test_load_check_in_several_ranges() -> None:
    reg = schema.load(SCHEMAS / "check_two_ranges.py")
    held = {r: reg.check("inuse_modular", V(r)) is not None for r in ("2.9", "11.1", "11.2", "11.3")}
    assert held == {"2.9": True, "11.1": True, "11.2": False, "11.3": True}
    assert reg.check("inuse_modular", V("11.3")).source == "back"  # type: ignore[union-attr]
    assert [c.until for c in BASE.checks if c.name == "inuse_modular"] == [None]  # the base is as it was


def test_ending_a_steps_only_check_names_the_module_and_line() -> None:
    before = BASE.checks
    with pytest.raises(SchemaError) as e:
        schema.load(SCHEMAS / "check_ends.py")
    assert str(e.value).startswith(f"{SCHEMAS / 'check_ends.py'}:8: load check 'desc_zero' (2.0 to 11.2) leaves "
                                   "QEMU 11.2 without a 'desc_zero' check"), str(e.value)
    assert BASE.checks == before
    p = run("check", "--schema", str(SCHEMAS / "check_ends.py"), "--profile", "dev")
    assert_one_line_error(p, "check_ends.py:8:", "desc_zero")


@pytest.mark.parametrize("ranges, words", [
    ('("2.9", None), ("11.0", None)', "overlaps the one declared before (2.9 on)"),
    ('("2.9", "2.9")', "is empty"),
    ('("2.9", "11.0"), ("10.0", "11.2")', "overlaps"),
])
def test_load_check_range_mistakes(tmp_path: Path, ranges: str, words: str) -> None:
    module = tmp_path / "m.py"
    decls = ", ".join(f"LoadCheck('inuse_modular', V({a!s}), {'None' if b == 'None' else f'V({b})'}, 'x')"
                      for a, b in (pair.strip("()").split(", ") for pair in ranges.split("), (")))
    module.write_text("from models.releases import V\nfrom models.schema import LoadCheck\n"
                      f"DECLARATIONS = ({decls},)\n")
    with pytest.raises(SchemaError) as e:
        schema.load(module)
    assert str(e.value).startswith(f"{module}:3: load check 'inuse_modular'") and words in str(e.value), str(e.value)
