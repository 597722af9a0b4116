"""A real-pair failure (`virtio-compat qemu`) is shrunk over real QEMU and replayed like a matrix failure.

The disagreement is made on purpose: the 5.2 destination is judged by the model of 7.2, which spells the balloon's
page-poison subsection right where 5.1-6.1 misspell it (`vitio-balloon-device/page-poison`), so a 7.2 balloon with
PAGE_POISON negotiated is rejected by the real 5.2 and accepted by that (wrong) model."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from harness.qemu import crosscheck, realcase
from models.releases import Version
from tests.qemu.test_fleet import fleet_binary

pytestmark = pytest.mark.qemu


@pytest.fixture(scope="module")
def found(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    fleet_binary("7.2")
    fleet_binary("5.2")
    folder = tmp_path_factory.mktemp("failures")
    src = crosscheck.side("7.2")
    dst = dataclasses.replace(crosscheck.side("5.2"), release=Version.parse("7.2"))
    machine = crosscheck.default_machine(src, dst)
    rng = random.Random(0)
    examples = []
    for index in range(8):  # each draws the balloon's 32 feature bits: PAGE_POISON is one of them
        kinds = list(crosscheck.kinds_for(src, dst, machine))  # every device both offer: 7 (no multitouch)
        examples.append(realcase.run_example(index, rng, src, dst, machine, kinds, failures=folder, seed=0))
        # the balloon's: the 7.2 model on the 5.2 binary also disagrees elsewhere (a multiqueue net's queues)
        files = sorted(f for f in folder.glob("R12-*.json")
                       if json.loads(f.read_text())["real_pair"]["devices"] == ["virtio-balloon"])
        if files:
            break
    assert files, f"no disagreement in {len(examples)} examples: {[e.as_json() for e in examples]}"
    return {"path": files[0], "record": json.loads(files[0].read_text())}


def test_the_failure_is_shrunk_to_one_device(found: dict[str, Any]) -> None:
    rec = found["record"]
    pair = rec["real_pair"]
    assert len(rec["original_state"]["devices"]) == 8  # the four older devices, three virtio-input types, virtio-scsi
    assert pair["devices"] == ["virtio-balloon"] and len(pair["drives"]) == 1
    d = pair["drives"][0]
    assert d["guest_features"] == 1 << 4  # VIRTIO_BALLOON_F_PAGE_POISON alone
    assert d["queues"] == [] and d["queue_sel"] == 0
    assert rec["shrink"]["runs"] <= realcase.MAX_RUNS and rec["shrink"]["seconds"] <= realcase.MAX_SECONDS + 10
    assert rec["minimized_state"].startswith("virtio-balloon: guest_features=0x10")
    assert pair["source"]["release"] == "7.2"
    assert pair["source"]["version_output"].startswith("QEMU emulator version 7.2")
    assert pair["destination"]["release"] == "5.2" and pair["machine"].startswith("pc-i440fx-")


def test_replay_reruns_the_real_pair_and_exits_1(found: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(found["path"])]) == 1
    out = capsys.readouterr().out
    assert "QEMU:  rejected: Failed to load virtio-balloon:virtio" in out
    assert "model: accepted" in out and "exit 1: R12 still fails" in out


def test_a_case_that_agrees_exits_0(found: dict[str, Any], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    rec = found["record"]
    rec["real_pair"]["drives"][0]["guest_features"] = 0  # without PAGE_POISON both sides accept
    path = tmp_path / "R12-agrees.json"
    path.write_text(json.dumps(rec))
    assert main(["replay", str(path)]) == 0
    assert "exit 0: R12 passes" in capsys.readouterr().out


def test_a_release_not_installed_is_one_line_and_exit_2(found: dict[str, Any], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("VIRTIO_COMPAT_QEMU_CACHE", str(tmp_path / "empty"))
    assert main(["replay", str(found["path"])]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "source QEMU 7.2 is not installed" in err
