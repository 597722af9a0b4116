"""The compatibility matrix as pytest tests: every cell (source release, destination release, transport, device),
with the machine type and the rest of the configuration drawn inside it, against the rules; and with --real, the
cells whose two releases are in the fleet on the real QEMU pair (R12).

Product code, so that an installed copy runs it: `virtio-compat check` gives pytest this file (test_cell, and
test_real_pair with --real); in a checkout, tests/matrix/ re-exports the two tests, so that `pytest -n auto`
collects the same cells under the node ids it always had.

test_fuzz_cell is each cell as one Hypothesis test, the form HypoFuzz fuzzes (`virtio-compat check --profile
nightly --fuzz`, `hypothesis fuzz`); test_cell keeps its findings under the same database key, so a run of the
matrix sharing the database (Redis) replays what the fuzzer found."""

from __future__ import annotations

import functools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import fleet
from harness.failures import FAILURES, state_summary, write_failure
from harness.matrix import DEVICES, EXCEPTION, TRANSPORTS, Cell, CellResult, cells, explore_example, run_cell
from harness.pytest_plugin import matrix_options, record, registry
from harness.qemu.realcells import missing, run_real_cell
from models.releases import Version

__all__ = ["pytest_generate_tests", "test_cell", "test_fuzz_cell", "test_real_pair"]

# test_fuzz_cell's node id as `check` and the nightly fuzzer collect it (rootdir: the folder holding the package)
FUZZ_NODE = "harness/pytest_matrix.py::test_fuzz_cell[{}]"


def _cells(config: pytest.Config) -> list[Cell]:
    o = matrix_options(config)
    releases = tuple(Version.parse(r) for r in o["releases"]) or None
    return cells(releases, tuple(o["devices"]) or DEVICES, tuple(o["transports"]) or TRANSPORTS,
                 o["machines"] or None, registry(config))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "cell" in metafunc.fixturenames:
        metafunc.parametrize("cell", _cells(metafunc.config), ids=lambda c: c.id)
    if "fuzz_cell" in metafunc.fixturenames:
        metafunc.parametrize("fuzz_cell", _cells(metafunc.config), ids=lambda c: c.id)
    if "real_cell" in metafunc.fixturenames:
        # only the cells whose two releases are fleet releases; one not installed skips, saying which
        real = [c for c in _cells(metafunc.config) if {str(c.src), str(c.dst)} <= set(fleet.RELEASES)]
        metafunc.parametrize("real_cell", real if metafunc.config.getoption("--real") else [], ids=lambda c: c.id)


@pytest.mark.matrix
def test_cell(cell: Cell, request: pytest.FixtureRequest) -> None:
    declared = registry(request.config)
    machines = matrix_options(request.config)["machines"] or None
    # narrowed to machine types, a cell keeps its own entries (the fuzzer's would not fail there and be dropped)
    key = None if machines else fuzz_database_key(cell)
    result = run_cell(cell, machines, declared, database_key=key, digests=not settings().derandomize)
    if result.digests is not None:
        record(request.config, {"explored": cell.id, "digests": sorted(set(result.digests))})
    message = path = None
    if result.failure is not None:
        src, dst, state, out, v = result.failure
        message = f"{v}\n  {src.describe()}\n  state: {state_summary(src, state, registry=declared)}"
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
            "expected": result.expected.get(rule), "examples": result.examples, "boundaries": result.boundaries,
            "machines": sorted(result.machines), "qemu": False, "failure": message if failed else None,
            "schema": declared.schema_paths(),
        })
    if result.failure is not None:
        # recorded first, so that a failure file that cannot be written (full disk) leaves the cell in the report
        src, dst, state, out, v = result.failure
        # into $VIRTIO_COMPAT_REPORTS/failures (check sets it)
        path = write_failure(cell, src, dst, state, out, v, registry=declared)
        pytest.fail(f"{message}\n  replay: virtio-compat replay {path}", pytrace=False)


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
        "r5_payloads": result.r5_states, "r9_loads": result.r9_loads,
        "failure": "\n".join(result.failures) if result.failures else None,
        "schema": registry(request.config).schema_paths(),
    })
    if result.failures:
        files = "".join(f"\n  failure file: {f}" for f in dict.fromkeys(result.files))
        machines = ", ".join(dict.fromkeys(result.machines))
        pytest.fail(f"real QEMU ({packages}) on {machines}: " + "\n  ".join(result.failures[:8]) + files,
                    pytrace=False)


@pytest.mark.matrix
@given(data=st.data())
def test_fuzz_cell(fuzz_cell: Cell, pytestconfig: pytest.Config, data: st.DataObject) -> None:
    """One cell, one example per call: what HypoFuzz fuzzes (coverage-guided, its time spread across the cells).
    Under pytest, the minimal failing example of a cell (Hypothesis replays it last) writes a failure file."""
    from hypothesis.control import current_build_context

    declared = registry(pytestconfig)
    result = CellResult(fuzz_cell, 0, set(), {}, None)
    try:
        explore_example(fuzz_cell, matrix_options(pytestconfig)["machines"] or None, data, result, declared)
    except AssertionError:
        if result.failure is not None and current_build_context().is_final:
            src, dst, state, out, v = result.failure
            path = write_failure(fuzz_cell, src, dst, state, out, v, registry=declared)
            raise AssertionError(f"{v}\n  state: {state_summary(src, state, registry=declared)}\n  replay: "
                                 f"virtio-compat replay {path}") from None
        raise


@functools.cache
def fuzz_database_key(cell: Cell) -> bytes:
    """The example database key of test_fuzz_cell[cell], as Hypothesis' pytest plugin and HypoFuzz compute it
    (the test's digest with its node id added)."""
    from hypothesis.internal.reflection import function_digest

    inner: Any = test_fuzz_cell.hypothesis.inner_test

    @functools.wraps(inner)
    def proxy(*args: Any, **kwargs: Any) -> None:
        raise NotImplementedError  # never called: it stands for the test in function_digest

    proxy._hypothesis_internal_add_digest = FUZZ_NODE.format(cell.id).encode()  # type: ignore[attr-defined]
    return function_digest(proxy)
