"""The load bounds have teeth (issue 16 item 2): a model that lost one of virtio_load's bounds (patched here, or
narrowed by a --schema module) gives a hostile class of strategies/hostile.py a verdict other than its own, and the
matrix (run_cell, `check`) fails R10/R11 in the cells of the releases that lost it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from harness.matrix import Cell, run_cell, run_example
from models import core, schema
from models.config import Config, NetBackend, realize
from models.devices import net
from models.model import reset_state
from models.registry import BASE, Registry
from models.releases import MachineType, V
from strategies.hostile import HOSTILE
from tests.cli.test_cli import run

pytestmark = pytest.mark.usefixtures("ci_profile")
SCHEMAS = Path(__file__).resolve().parents[1] / "schema" / "schemas"


def _without(*names: str) -> Any:
    """A registry without the load checks `names`."""
    return lambda mp: replace(BASE, checks=tuple(c for c in BASE.checks if c.name not in names))


def _no_curr_queue_pairs_check(mp: pytest.MonkeyPatch) -> Registry:
    check = net.check_field
    mp.setattr(net, "check_field", lambda name, value, r: [] if name == "curr_queue_pairs" else check(name, value, r))
    return BASE


def _no_queue_limit(mp: pytest.MonkeyPatch) -> Registry:
    mp.setattr(core, "queue_limit", lambda release: 1 << 20)
    return BASE


# class -> (release, what removes its bound: the registry to run with, the code patched where the bound is code)
REMOVED = {
    "queue-count-over-max": ("7.2", _no_queue_limit),
    "curr-queue-pairs-over-max": ("7.2", _no_curr_queue_pairs_check),
    "config-vector-out-of-table": ("5.2", _without("msix_vector_use")),
    "queue-vector-out-of-table": ("10.0", _without("msix_vector")),
    "config-len-longer": ("2.0", _without("config_len")),
    "config-len-shorter": ("2.0", _without("config_len")),
}


def _state(release: str) -> tuple[Config, Any]:
    cfg = Config(V(release), MachineType.parse(f"pc-i440fx-{release}"), "virtio-net", "pci", 1, 128,
                 {"romfile": "", "mq": True}, NetBackend("tap", queues=2))
    s = reset_state(realize(cfg))
    q0 = replace(s.queues[0], desc=0x100000, avail=0x101000, used=0x102000)
    return cfg, replace(s, status=7, queues=(q0, *s.queues[1:]), config=bytes(range(len(s.config))))


@pytest.mark.parametrize("name", sorted(REMOVED))
def test_a_removed_bound_fails_its_class(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    h = next(x for x in HOSTILE if x.name == name)
    release, remove = REMOVED[name]
    cfg, s = _state(release)
    r = realize(cfg)
    assert h.applies(r, s)
    bad = h.mutate(r, s, 3)
    assert run_example(cfg, cfg, bad, hostile=h).violations == []  # the model as shipped holds the verdict
    v = run_example(cfg, cfg, bad, hostile=h, registry=remove(monkeypatch)).violations
    assert [x.rule for x in v] == [h.rule] and v[0].details["class"] == name, v


def test_the_matrix_catches_a_narrowed_bound() -> None:
    """A schema module that ends the MSI-X vector range check at 11.1: the 11.1 pci cells fail R11, the 10.0 ones
    still pass."""

    reg = schema.load(SCHEMAS / "msix_vector_narrowed.py")
    for device in ("virtio-net", "virtio-blk"):
        bad = run_cell(Cell(V("11.1"), V("11.1"), "pci", device), registry=reg)
        assert bad.failure is not None and bad.failure[4].rule == "R11", device
        assert "vector-out-of-table" in bad.failure[4].expected
    assert run_cell(Cell(V("10.0"), V("10.0"), "pci", "virtio-net"), registry=reg).status == "pass"


def test_check_with_the_narrowed_bound(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    p = run("check", "--schema", str(SCHEMAS / "msix_vector_narrowed.py"), "--releases", "11.1", "--devices",
            "virtio-net", "--transports", "pci", "--profile", "thorough", "--reports", str(reports), "-n", "0",
            cwd=tmp_path)  # thorough: one cell's 12 ci examples from a seed need not draw the narrowed bound
    assert p.returncode == 1, p.stdout + p.stderr
    assert "FAIL virtio-net pci 11.1 -> 11.1 R11: expected config-vector-out-of-table: rejected" in p.stdout \
        or "FAIL virtio-net pci 11.1 -> 11.1 R11: expected queue-vector-out-of-table: rejected" in p.stdout, p.stdout
    files = list((reports / "failures").glob("R11-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["hostile"].endswith("vector-out-of-table")
    # the failure file replays the class with the schema it records: still failing
    r = run("replay", str(files[0]), cwd=tmp_path)
    assert r.returncode == 1 and "R11 STILL FAILS" in r.stdout, r.stdout + r.stderr
