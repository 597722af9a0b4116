"""`virtio-compat qemu --src-binary A --dst-binary B` and the QEMU figure of `virtio-compat bench`, with
A = B = the installed 7.2; and the one-line errors (exit 2) for a missing binary or a bad choice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import bench as bench_module
from harness.cli import main
from harness.errors import QemuError
from harness.qemu import oracle
from harness.qemu.crosscheck import bench, vm_kinds
from harness.qemu.drive import DEVICE_KINDS
from harness.qemu.process import live_processes
from models.releases import V


@pytest.mark.qemu
def test_same_binary_both_sides_agrees_with_the_model(qemu_binary: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["qemu", "--src-binary", qemu_binary, "--dst-binary", qemu_binary, "--examples", "4", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0, out
    assert out["source"]["release"] == out["destination"]["release"] == "7.2"
    assert out["machine"] == "pc-i440fx-7.2" and out["rule"] == "R1" and out["failed"] == 0
    # one QEMU pair, one device of each kind on consecutive slots
    [e] = out["examples"]
    assert e["devices"] == ["virtio-net", "virtio-blk", "virtio-balloon", "virtio-rng"]
    assert [d["slot"] for d in e["drives"]] == [3, 4, 5, 6]
    for e in out["examples"]:
        assert e["qemu"] == {"outcome": "accepted", "error": None} and e["model"] == e["qemu"]
        assert e["agrees"] and e["violations"] == [] and e["failures"] == []
    assert live_processes() == []


@pytest.mark.qemu
def test_text_report_on_another_machine_type(qemu_binary: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["qemu", "--src-binary", qemu_binary, "--dst-binary", qemu_binary, "--machine", "pc-q35-5.2",
               "--device", "virtio-blk", "--examples", "3", "--per-vm", "2", "--seed", "3"])
    lines = capsys.readouterr().out.splitlines()
    assert rc == 0, lines
    assert "(QEMU 7.2, model 7.2)" in lines[0] and "pc-q35-5.2, seed 3" in lines[0]
    assert lines[1].startswith("#0 virtio-blk ") and lines[1].count("virtio-blk") == 2
    assert lines[2].startswith("#1 virtio-blk ") and lines[2].count("virtio-blk") == 1
    assert all(line.endswith("QEMU accepted; model agrees") for line in lines[1:3])
    assert lines[-1] == "3 device states in 2 QEMU pairs, 0 with a disagreement or a rule violation (R1)"


@pytest.mark.qemu
def test_a_disagreement_exits_1_with_a_failure_file(
    qemu_binary: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(oracle, "FAILURES", tmp_path)
    real = oracle.overall
    # the model is made to predict a rejection: the run must say so, exit 1 and write the case down
    monkeypatch.setattr(oracle, "overall", lambda v: ("rejected", "made up") if v.devices else real(v))
    rc = main(["qemu", "--src-binary", qemu_binary, "--dst-binary", qemu_binary, "--device", "virtio-rng",
               "--examples", "1"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "MODEL DISAGREES (rejected: made up)" in out and "outcome: model rejected, QEMU accepted" in out
    [path] = tmp_path.glob("R12-*.json")
    record = json.loads(path.read_text())
    assert record["which_side_said_what"] == ["model (7.2): rejected: made up", "QEMU: accepted"]
    assert record["destination_binary"] == qemu_binary and bytes.fromhex(record["stream"]).startswith(b"QEVM")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--src-binary", "/nonexistent/qemu-system-x86_64", "--dst-binary", "qemu-system-x86_64"],
         "QEMU binary /nonexistent/qemu-system-x86_64 does not exist or is not executable"),
        (["--src-binary", "qemu-system-x86_64", "--dst-binary", "qemu-system-nonesuch"],
         "qemu-system-nonesuch not found on PATH"),
    ],
)
def test_a_missing_binary_is_one_line_and_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    if "nonesuch" in args[-1]:
        try:
            oracle.find_qemu("qemu-system-x86_64")
        except QemuError:
            pytest.skip("the source binary is missing too: the message would name it instead")
    rc = main(["qemu", *args])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("virtio-compat: error: ") and message in err
    assert "Traceback" not in err


@pytest.mark.qemu
@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--device", "virtio-gpu"], "--device virtio-gpu: one of virtio-net"),
     (["--machine", "pc-i440fx-99.0"], "--machine pc-i440fx-99.0: QEMU 7.2 "),
     (["--examples", "0"], "--examples must be at least 1")],
)
def test_bad_choices_exit_2(qemu_binary: str, extra: list[str], message: str,
                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["qemu", "--src-binary", qemu_binary, "--dst-binary", qemu_binary, *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


@pytest.mark.qemu
def test_version_and_release_of_the_binary(qemu_binary: str) -> None:
    assert oracle.qemu_version(qemu_binary) == V("7.2")
    assert oracle.modelled_release(qemu_binary) == V("7.2")


@pytest.mark.qemu
def test_bench_figure_with_two_workers(qemu_binary: str) -> None:
    f = bench(1.0, 2, lead=2.0)
    assert f["workers"] == 2 and f["qemu_examples"] >= 2 and f["disagreements"] == 0
    assert f["qemu_per_second"] > 0 and f["model_per_second"] > f["qemu_per_second"]
    assert f["ratio"] == pytest.approx(f["model_per_second"] / f["qemu_per_second"])
    assert live_processes() == []


def test_bench_says_why_it_skips_the_qemu_figure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    rows, skipped = bench_module.qemu_figures(1.0)
    assert rows == [] and skipped is not None and "qemu-system-x86_64 not found on PATH" in skipped


@pytest.mark.parametrize("examples, per_vm, device",
                         [(8, 4, None), (40, 8, None), (33, 16, None), (6, 3, "virtio-balloon")])
def test_one_balloon_per_qemu_pair(examples: int, per_vm: int, device: str | None) -> None:
    """QEMU refuses a second balloon: --per-vm above 4 puts off the next balloon, and no state is lost."""
    vms = vm_kinds(examples, per_vm, device)
    assert all(vm.count("virtio-balloon") <= 1 and 1 <= len(vm) <= per_vm for vm in vms)
    n = len(DEVICE_KINDS)
    assert sorted(k for vm in vms for k in vm) == sorted(device or DEVICE_KINDS[i % n] for i in range(examples))
    if per_vm <= 4 and device is None:  # each kind in turn, as before: a seed draws the same states
        assert [k for vm in vms for k in vm] == [DEVICE_KINDS[i % len(DEVICE_KINDS)] for i in range(examples)]
