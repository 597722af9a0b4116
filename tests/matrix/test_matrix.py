"""The compatibility matrix: every cell (source release, destination release, transport, device),
with the machine type and the rest of the configuration drawn inside it, against the rules."""

from __future__ import annotations

import pytest

from harness.failures import state_summary, write_failure
from harness.matrix import EXCEPTION, Cell, cells, run_cell
from harness.pytest_plugin import matrix_options, record
from models.releases import RELEASES, Version
from models.schema import loaded_paths

ALL_DEVICES = ("virtio-net", "virtio-blk", "virtio-balloon", "virtio-rng")


def _cells(config: pytest.Config) -> list[Cell]:
    o = matrix_options(config)
    releases = tuple(Version.parse(r) for r in o["releases"]) or RELEASES
    return cells(releases, tuple(o["devices"]) or ALL_DEVICES, tuple(o["transports"]) or ("pci", "mmio", "ccw"),
                 o["machines"] or None)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "cell" in metafunc.fixturenames:
        metafunc.parametrize("cell", _cells(metafunc.config), ids=lambda c: c.id)


@pytest.mark.matrix
def test_cell(cell: Cell, request: pytest.FixtureRequest) -> None:
    result = run_cell(cell, matrix_options(request.config)["machines"] or None)
    message = path = None
    if result.failure is not None:
        src, dst, state, out, v = result.failure
        message = f"{v}\n  {src.describe()}\n  state: {state_summary(src, state)}"
        if "traceback" in v.details:  # an exception in the model: the report keeps where it rose
            message += "\n" + v.details["traceback"]
    rules = ["R1", "R2", "R10", "R11"] if cell.direction == "same" else [
        "R3" if cell.direction == "forward" else "R4", "R13"]
    if result.failure is not None and result.failure[4].rule == EXCEPTION:
        rules.insert(0, EXCEPTION)
    for rule in rules + ["R5", "R6", "R7", "R8", "R9"]:
        failed = result.failure is not None and result.failure[4].rule == rule
        record(request.config, {
            "src": str(cell.src), "dst": str(cell.dst), "transport": cell.transport, "device": cell.device,
            "rule": rule, "outcome": "fail" if failed else "expected" if rule in result.expected else "pass",
            "expected": result.expected.get(rule), "examples": result.examples,
            "machines": sorted(result.machines), "qemu": False, "failure": message if failed else None,
            "schema": loaded_paths(),
        })
    if result.failure is not None:
        # recorded first, so that a failure file that cannot be written (full disk) leaves the cell in the report
        src, dst, state, out, v = result.failure
        path = write_failure(cell, src, dst, state, out, v)  # into $VIRTIO_COMPAT_REPORTS/failures (check sets it)
        pytest.fail(f"{message}\n  replay: virtio-compat replay {path}", pytrace=False)

