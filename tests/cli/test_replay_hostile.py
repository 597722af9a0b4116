"""`replay` of an R10/R11 failure file judges the recorded state by its hostile class's verdict (issue 16 item 2):
exit 1 while the model still gives the wrong verdict, 0 once it is right; a file naming an unknown class is a
one-line error."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from harness import replay
from harness.cli import main
from harness.failures import write_failure
from harness.matrix import Cell, run_example
from models.config import Config, realize
from models.model import reset_state
from models.registry import BASE
from models.releases import MachineType, Version
from strategies.hostile import HOSTILE
from tests.cli.test_cli import assert_one_line_error, run

CONFIG = Config(Version(7, 2), MachineType.parse("pc-i440fx-7.2"), "virtio-net", "pci", props={"romfile": ""})


def hostile_failure(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A model that lost the queue_sel check accepts queue_sel 1024: R11 fails by the class's verdict. Replay (in
    this process) runs with that model until the monkeypatch is undone."""
    lost = replace(BASE, checks=tuple(c for c in BASE.checks if c.name != "queue_sel"))
    monkeypatch.setattr(replay, "load_schemas", lambda paths, path: lost)
    h = next(x for x in HOSTILE if x.name == "queue-sel")
    bad = h.mutate(realize(CONFIG), reset_state(realize(CONFIG)), 7)
    out = run_example(CONFIG, CONFIG, bad, hostile=h, registry=lost)
    assert [v.rule for v in out.violations] == ["R11"]
    return write_failure(Cell(CONFIG.release, CONFIG.release, "pci", "virtio-net"), CONFIG, CONFIG, bad, out,
                         out.violations[0], folder)


def test_replay_reapplies_the_hostile_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = hostile_failure(tmp_path, monkeypatch)
    assert json.loads(path.read_text())["hostile"] == "queue-sel"
    assert main(["replay", str(path)]) == 1
    out = capsys.readouterr().out
    assert "hostile class queue-sel" in out and "rejected on 7.2" in out
    assert "R11 STILL FAILS: expected queue-sel: rejected; got accepted" in out and "exit 1" in out
    monkeypatch.undo()  # the check is back: the same file passes
    assert main(["replay", str(path)]) == 0
    out = capsys.readouterr().out
    assert "R11 passes" in out and "load by the destination (QEMU 7.2): rejected" in out
    # in a fresh process too (the model as shipped)
    p = run("replay", str(path))
    assert p.returncode == 0 and "R11 passes" in p.stdout, p.stdout + p.stderr


def test_replay_of_an_unknown_hostile_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = hostile_failure(tmp_path, monkeypatch)
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "hostile": "no-such-class"}))
    assert_one_line_error(run("replay", str(path)), "the hostile class 'no-such-class' is unknown", "queue-sel")
