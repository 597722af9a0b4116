"""--real: the matrix cells whose two releases are in the fleet, on the real QEMU pair (a module of its own, so
that a run without --real collects nothing here)."""

from __future__ import annotations

import pytest

from harness import fleet
from harness.failures import FAILURES
from harness.matrix import Cell
from harness.pytest_plugin import record
from harness.qemu.realcells import missing, run_real_cell
from models.schema import loaded_paths
from tests.matrix.test_matrix import _cells


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "real_cell" in metafunc.fixturenames:
        # only the cells whose two releases are fleet releases; one not installed skips, saying which
        real = [c for c in _cells(metafunc.config) if {str(c.src), str(c.dst)} <= set(fleet.RELEASES)]
        metafunc.parametrize("real_cell", real if metafunc.config.getoption("--real") else [], ids=lambda c: c.id)


@pytest.mark.matrix
@pytest.mark.qemu
def test_real_pair(real_cell: Cell, request: pytest.FixtureRequest) -> None:
    """--real: the cell's device driven in the real source QEMU, loaded by the real destination, and the model
    held to both (R12), besides R1/R3/R4 on QEMU itself."""
    why = missing(real_cell)
    if why is not None:
        pytest.skip(why)
    result = run_real_cell(real_cell, request.config.getoption("--real-examples"), failures=FAILURES)
    outcome = "fail" if result.failures else "expected" if result.expected else "pass"
    packages = ", ".join(f"QEMU {r} {v}" for r, v in result.versions.items())
    record(request.config, {
        "src": str(real_cell.src), "dst": str(real_cell.dst), "transport": real_cell.transport,
        "device": real_cell.device, "rule": "R12", "outcome": outcome,
        "expected": "; ".join(f"{k}: {v}" for k, v in result.expected.items()) or None,
        "examples": result.states, "machines": sorted(set(result.machines)), "qemu": True, "packages": packages,
        "failure": "\n".join(result.failures) if result.failures else None, "schema": loaded_paths(),
    })
    if result.failures:
        files = "".join(f"\n  failure file: {f}" for f in dict.fromkeys(result.files))
        machines = ", ".join(dict.fromkeys(result.machines))
        pytest.fail(f"real QEMU ({packages}) on {machines}: " + "\n  ".join(result.failures[:8]) + files,
                    pytrace=False)
