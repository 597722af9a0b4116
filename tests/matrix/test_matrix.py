"""The compatibility matrix: every cell (source release, destination release, transport, device),
with the machine type and the rest of the configuration drawn inside it, against the rules."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import event, given, note
from hypothesis import strategies as st

from harness.failures import write_failure
from harness.matrix import Cell, cells, run_example
from harness.pytest_plugin import matrix_options, record
from models.config import realize
from models.releases import RELEASES, Version
from strategies.configs import configs
from strategies.driver import device_states


def _cells(config: pytest.Config) -> list[Cell]:
    o = matrix_options(config)
    releases = tuple(Version.parse(r) for r in o["releases"]) or RELEASES
    return cells(releases, tuple(o["devices"]) or ("virtio-net", "virtio-blk", "virtio-balloon", "virtio-rng"),
                 tuple(o["transports"]) or ("pci", "mmio", "ccw"), o["machines"] or None)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "cell" in metafunc.fixturenames:
        metafunc.parametrize("cell", _cells(metafunc.config), ids=lambda c: c.id)


@pytest.mark.matrix
def test_cell(cell: Cell, request: pytest.FixtureRequest) -> None:
    machines = matrix_options(request.config)["machines"] or None
    seen: dict[str, Any] = {"examples": 0, "machines": set(), "expected": {}}

    @given(st.data())
    def check(data: st.DataObject) -> None:
        src, dst = data.draw(configs(cell.src, cell.dst, cell.transport, cell.device, machines), label="config")
        state = data.draw(device_states(realize(src)), label="state")
        note(src.describe())
        out = run_example(src, dst, state)
        seen["examples"] += 1
        seen["machines"].add(src.machine.name)
        for v, known in out.expected:
            seen["expected"][v.rule] = known.name
            event(f"expected incompatibility {known.name}")
        if out.violations:
            seen["last_failure"] = (src, dst, state, out, out.violations[0])
            raise AssertionError(str(out.violations[0]))

    status, message = "pass", None
    try:
        check()
    except AssertionError:
        # Hypothesis replays the minimal example last: that is the one the failure file keeps
        src, dst, state, out, v = seen["last_failure"]
        path = write_failure(cell, src, dst, state, out, v)
        status, message = "fail", f"{v}\n  {src.describe()}\n  replay: virtio-compat replay {path}"
        raise AssertionError(message) from None
    finally:
        rules = ["R1", "R2"] if cell.direction == "same" else ["R3" if cell.direction == "forward" else "R4"]
        for rule in rules + ["R5", "R6", "R7", "R8", "R9"]:
            failed = status == "fail" and message is not None and message.startswith(rule + ":")
            record(request.config, {
                "src": str(cell.src), "dst": str(cell.dst), "transport": cell.transport, "device": cell.device,
                "rule": rule, "outcome": "fail" if failed else "expected" if rule in seen["expected"] else "pass",
                "expected": seen["expected"].get(rule), "examples": seen["examples"],
                "machines": sorted(seen["machines"]), "qemu": False, "failure": message if failed else None,
            })
