"""`virtio-compat mutate` (issue 11): boundary mutations of real streams, loaded by real QEMU and by the model.

Without QEMU: the mutation generator, the ccw `devno=` destination, `verdict --json`'s `outcome`, and every kept
regression case (a mutant QEMU 7.2 loaded, as a base stream and an edit, with QEMU's verdict) against the model.
With QEMU (marker `qemu`): a short campaign on pc-i440fx-7.2, with no QEMU left behind.
"""

from __future__ import annotations

import json
import lzma
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from harness.mutate import Mutation, mutations
from harness.qemu.mutate import campaign, case_mutant, recheck
from harness.qemu.oracle import predict
from harness.qemu.process import live_processes
from harness.wire.stream import decode_stream
from models.registry import BASE
from tests.conftest import DATA, SAMPLES

HOSTILE = DATA / "hostile"
SAMPLE = SAMPLES / "pc-i440fx-7.2-virtio-net-driven.bin"
CCW = HOSTILE / "ccw-devno-s390-ccw-virtio-7.2.bin.xz"
# the source's own command line (as `fleet`/backend wrote it): devices on devno fe.0.0007 and fe.0.0002
CCW_ARGV = ("-machine s390-ccw-virtio-7.2 -m 64 -smp 1 -blockdev driver=null-co,node-name=bd_vblk0,size=1048576 "
            "-device virtio-blk-ccw,id=vblk0,drive=bd_vblk0,devno=fe.0.0007 -netdev hubport,id=nd_vnet0,hubid=0 "
            "-device virtio-net-ccw,id=vnet0,netdev=nd_vnet0,devno=fe.0.0002")


def _cases() -> list[dict[str, Any]]:
    path = HOSTILE / "cases.json"
    return json.loads(path.read_text()) if path.exists() else []


# -- the generator ----------------------------------------------------------------------------------------------


def test_every_field_gets_its_boundaries() -> None:
    data = SAMPLE.read_bytes()
    ms = mutations(data)
    by_field: dict[str, set[str]] = {}
    for m in ms:
        by_field.setdefault(f"{m.section} > {m.field}", set()).add(m.what)
    net = "0000:00:03.0/virtio-net > virtio > "
    assert {"= 0x0 (was 0x3)", "= 0xffffffff (was 0x3)", "= 0x400 (was 0x3)", "= 0x401 (was 0x3)"} <= \
        by_field[net + "num_queues"]  # 0, max, VIRTIO_QUEUE_MAX and one past
    assert "= 0x101 (was 0x100)" in by_field[net + "queues[0].num"]
    assert any("unknown" in w for w in by_field[net + "subsections.virtio/started.name"])
    assert any(w.startswith("section cut") for w in by_field[net + "queue_sel"])
    assert any(f.endswith("virtqueues.vqs[2].used") for f in by_field)  # rows of the 1024-entry arrays
    assert not any(f.endswith("virtqueues.vqs[5].used") for f in by_field)  # ... only as far as num_queues + 1


def test_mutants_are_the_stream_with_one_edit() -> None:
    data = SAMPLE.read_bytes()
    ms = mutations(data)
    same = next(m for m in ms if m.field.endswith("queue_sel") and m.what.startswith("="))
    mutant = same.apply(data)
    assert len(mutant) == len(data) and sum(a != b for a, b in zip(mutant, data, strict=True)) <= 2
    cut = next(m for m in ms if m.field.endswith("queue_sel") and m.what.startswith("section cut"))
    s = decode_stream(cut.apply(data), strict=False)  # the description says the new size: the walk goes on
    assert [p.section for p in s.devices] == [p.section for p in decode_stream(data).devices]
    assert Mutation.from_json(json.loads(json.dumps(cut.as_json()))) == cut


# -- the user's command line: devno= on ccw, and verdict --json ------------------------------------------------


def test_ccw_devno_on_the_dest_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's user: `--dest` is the source's own command line, whose ccw devices carry devno=."""
    stream = tmp_path / "ccw.bin"
    stream.write_bytes(lzma.decompress(CCW.read_bytes()))
    assert main(["verdict", str(stream), "--dest", CCW_ARGV, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["outcome"] == "accepted" and out["first_error"] is None
    assert [(d["section"], d["outcome"]) for d in out["devices"]] == [
        ("/fe.0.0007/virtio-blk", "accepted"), ("/fe.0.0002/virtio-net", "accepted")]
    # the same without --dest: the destination inferred from the stream (its devno and subchannel)
    assert main(["verdict", str(stream), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["outcome"] == "accepted"
    # a devno taken twice is QEMU's own error, one line and exit 2
    twice = CCW_ARGV.replace("fe.0.0002", "fe.0.0007")
    assert main(["verdict", str(stream), "--dest", twice]) == 2
    assert "Device fe.0.0007 already exists" in capsys.readouterr().err


def test_verdict_json_outcome_is_the_worst(capsys: pytest.CaptureFixture[str]) -> None:
    dest = ("-machine pc-i440fx-7.2 -netdev tap,id=n0,queues=2 -device virtio-net-pci,netdev=n0,addr=0x3,mq=on,"
            "vectors=6")
    assert main(["verdict", str(SAMPLE), "--dest", dest, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["outcome"] == "rejected" and out["first_error"].startswith("get_pci_config_device: Bad config data")
    assert out["error"] is None and out["devices"][0]["outcome"] == "rejected"
    assert main(["verdict", str(SAMPLE), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["outcome"] == "accepted"


# -- regression cases: mutants QEMU loaded, against the model alone ----------------------------------------------


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c["id"])
def test_regression_case(case: dict[str, Any]) -> None:
    assert recheck(case, HOSTILE) == [], case["name"]
    if "model" in case:  # an undefined verdict agrees with anything QEMU did: it must still be the one given
        got = predict(case_mutant(case, HOSTILE), BASE.release_of(case["release"]), case["argv"]).overall()[0]
        assert got == case["model"], case["name"]


# -- bad input and a short campaign ---------------------------------------------------------------------------


def test_bad_usage_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mutate", "--mutants", "0"]) == 2
    assert main(["mutate", "--machine", "foo"]) == 2
    assert main(["mutate", "--binary", "/nonexistent/qemu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("virtio-compat: error: ") for line in err)


@pytest.mark.qemu
def test_short_campaign_agrees(qemu_binary: str, tmp_path: Path) -> None:
    """100 mutants of one driven pc-i440fx-7.2 stream (a few seconds): QEMU and the model agree on each, or the
    case is written down for the regression set; no QEMU is left running."""
    tally = campaign(qemu_binary, "pc", 100, seed=1, per_stream=100, out=tmp_path)
    assert tally.mutants == 100 and tally.streams == 1 and sum(tally.outcomes.values()) == 100
    assert {"accepted", "rejected"} <= set(tally.outcomes)
    cases = sorted(tmp_path.glob("7.2/pci/disagreement-*.json"))
    assert len(cases) == tally.disagreements
    assert tally.disagreements == 0, [json.loads(p.read_text())["name"] for p in cases]
    assert not live_processes()

