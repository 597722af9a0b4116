"""Shrinking toward reset (issue 16 item 6): every field of a drawn state shrinks to its value after realize and
reset, so that a minimized state names only the fields its failure needs, and the summary in failure files and
`replay` shows what differs from the reset state."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, find, settings

from harness import rules
from harness.failures import state_summary
from harness.matrix import Cell, run_cell
from harness.rules import Run, Violation
from models import schema
from models.config import Config, realize
from models.model import reset_state
from models.releases import MachineType, V
from models.state import DeviceState, NetState
from strategies.driver import device_states

SETTINGS = settings(database=None, derandomize=True, max_examples=200, deadline=None,
                    suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink])
MACHINES = {"pci": "pc-i440fx-{}", "mmio": "virt-{}", "ccw": "s390-ccw-virtio-{}"}
SCHEMAS = Path(__file__).resolve().parents[1] / "schema" / "schemas"


def _config(release: str, device: str, transport: str) -> Config:
    props = {"romfile": ""} if device == "virtio-net" and transport == "pci" else {}
    return Config(V(release), MachineType.parse(MACHINES[transport].format(release)), device, transport,
                  props=props)


@pytest.mark.parametrize("device", ["virtio-net", "virtio-blk", "virtio-balloon", "virtio-rng"])
@pytest.mark.parametrize("transport", ["pci", "mmio", "ccw"])
def test_the_simplest_state_is_the_reset_state(device: str, transport: str) -> None:
    r = realize(_config("10.0", device, transport))
    assert find(device_states(r), lambda s: True, settings=SETTINGS) == reset_state(r)


def test_a_running_net_device_keeps_its_reset_flags() -> None:
    """A state that must be running shrinks to DRIVER_OK with everything else at reset: promisc stays 1."""
    r = realize(_config("7.2", "virtio-net", "pci"))
    s = find(device_states(r), lambda s: bool(s.status & 4), settings=SETTINGS)
    assert isinstance(s.device, NetState) and s.device.promisc == 1
    assert s.queues == reset_state(r).queues and s.config == reset_state(r).config
    # and what DRIVER_OK implies: started (use-started) and the command register's bus master
    assert state_summary(r.config, s) == "status=0x7, started=True, pci.config=<1 of 256 bytes changed from offset 0x4>"


def test_declared_values_shrink_to_the_reset_value(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from models.releases import V\nfrom models.schema import Field, Release, Subsection\n"
                      "DECLARATIONS = (Release(V('11.2'), after=V('11.1')), Subsection('virtio/qux', V('11.2'), "
                      "fields=(Field('qux', 'uint8', reset=5, values=(0, 9, 5)),), needed=lambda r, s: True))\n")
    reg = schema.load(module)
    r = realize(_config("11.2", "virtio-rng", "pci"), reg)
    assert find(device_states(r), lambda s: True, settings=SETTINGS).extra == (("qux", 5),)


def test_minimized_matrix_state_names_only_what_the_failure_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken rule that fails on any running virtio-net device: the failure's state is DRIVER_OK and nothing
    else (before, it also carried device.promisc=0)."""
    def running(run: Run) -> Violation | None:
        return Violation("R9", "never running", "running") if run.state.status & 4 else None

    monkeypatch.setitem(rules.RULES, "R9", running)
    result = run_cell(Cell(V("7.2"), V("7.2"), "pci", "virtio-net"))
    assert result.failure is not None
    src, _dst, state, _out, v = result.failure
    assert v.rule == "R9" and state_summary(src, state).startswith("status=0x7, ")
    assert "promisc" not in state_summary(src, state) and isinstance(state.device, NetState)
    assert replace(state, status=0, started=False, pci=reset_state(realize(src)).pci) == reset_state(realize(src))


def test_summary_shows_bytes_and_ints_against_reset() -> None:
    r = realize(_config("7.2", "virtio-net", "pci"))
    s = reset_state(r)
    assert state_summary(r.config, s) == "the reset state"
    assert isinstance(s.device, NetState)
    changed: DeviceState = replace(s, status=7, config=b"\x01" + s.config[1:],
                                   device=replace(s.device, mac_table=bytes(12), promisc=0))
    assert state_summary(r.config, changed) == ("status=0x7, config=<1 of 8 bytes changed from offset 0x0>, "
                                                "device.promisc=0x0, device.mac_table=<12 bytes, 0 after reset>")
