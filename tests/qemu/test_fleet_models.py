"""Each fleet release's model held to its own binary, on the cases where it was wrong: QEMU 5.2's misspelt
page-poison subsection, and the VLAN table a 7.2 destination makes of a 10.0 stream. Each test skips, saying
which, when a fleet release it needs is not installed (`virtio-compat fleet install`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main
from harness.fleet import FleetError, binary
from harness.qemu import crosscheck, oracle
from harness.qemu.backend import DeviceConfig, QemuConfig, save
from harness.qemu.drive import DriveSpec, QueueSpec
from harness.wire.stream import decode_stream
from models import features as F
from models.cmdline import parse
from models.config import realize
from models.model import load, state_from_wire
from models.model import save as model_save
from models.releases import V

pytestmark = pytest.mark.qemu


def _fleet(release: str) -> str:
    try:
        return str(binary(release))
    except FleetError:
        pytest.skip(f"QEMU {release} of the fleet is not installed")


def _saved(release: str, machine: str, kind: str, features: int) -> tuple[bytes, list[str]]:
    config = QemuConfig(machine, (DeviceConfig(kind, 3),), binary=_fleet(release))
    spec = DriveSpec(kind, 3, features, (QueueSpec(0, 0x100), QueueSpec(1, 0x110)), 7, 1)
    data, truth = save(config, [spec])
    return data, truth["qemu_cmdline"]


def _model_save_matches(data: bytes, argv: list[str], release: str) -> None:
    """The model of the source's release writes the payload the binary wrote, byte for byte."""
    s = decode_stream(data)
    (p,) = s.devices
    (line,) = parse(oracle.dest_line(argv), V(release))
    r = realize(line.config)
    assert model_save(r, state_from_wire(r, p.value)) == data[p.offset : p.offset + p.size]


def _chain_matches(data: bytes, argv: list[str], release: str, stderr: tuple[str, ...]) -> None:
    """The model's error lines are the destination binary's, every one of them, in order (warnings aside)."""
    s = decode_stream(data)
    (p,) = s.devices
    (line,) = parse(oracle.dest_line(argv), V(release))
    res = load(realize(line.config), p.encode(), None, p.section, p.instance_id, s.footers, p.version_id)
    real = [x.split(": ", 1)[1] for x in stderr if x.startswith("qemu-system-x86_64: ") and ": warning:" not in x]
    assert list(res.lines) == real


def test_5_2_balloon_with_page_poison() -> None:
    """5.2 writes `vitio-balloon-device/page-poison`; no QEMU loads it (Missing section footer), and the models of
    5.2 and 7.2 say so."""
    data, argv = _saved("5.2", "pc-i440fx-5.2", "virtio-balloon", F.bit(F.BALLOON_PAGE_POISON))
    (p,) = decode_stream(data).devices
    assert [x.name for x in p.value.device.subsections] == ["vitio-balloon-device/page-poison"]
    _model_save_matches(data, argv, "5.2")
    for dst in ("5.2", "7.2"):
        real = oracle.load_and_save(argv, data, binary=_fleet(dst), resave=False).verdict
        assert (real.outcome, real.error) == ("rejected", "Missing section footer for 0000:00:03.0/virtio-balloon")
        assert oracle.overall(oracle.predict(data, V(dst), argv)) == (real.outcome, real.error)
        _chain_matches(data, argv, dst, real.stderr)


def test_7_2_balloon_with_page_poison_into_5_2() -> None:
    data, argv = _saved("7.2", "pc-i440fx-5.2", "virtio-balloon", F.bit(F.BALLOON_PAGE_POISON))
    _model_save_matches(data, argv, "7.2")
    real = oracle.load_and_save(argv, data, binary=_fleet("5.2"), resave=False).verdict
    assert (real.outcome, real.error) == ("rejected", "Failed to load virtio-balloon:virtio")
    assert oracle.overall(oracle.predict(data, V("5.2"), argv)) == (real.outcome, real.error)
    _chain_matches(data, argv, "5.2", real.stderr)


@pytest.mark.parametrize("features", [F.bit(F.NET_CTRL_VQ) | F.bit(F.NET_CTRL_VLAN), F.bit(F.NET_CTRL_VQ)])
def test_10_0_net_vlans_into_7_2(features: int) -> None:
    """10.0 leaves the VLAN table open with CTRL_VLAN (its reset calls set_features(0)); 7.2's set_features, at the
    end of the load, empties it: the model's save(load(...)) is 7.2's own save, byte for byte."""
    data, argv = _saved("10.0", "pc-i440fx-7.2", "virtio-net", features)
    (p,) = decode_stream(data).devices
    assert bytes(p.value.device.vlans) == b"\xff" * 512
    _model_save_matches(data, argv, "10.0")
    result = oracle.load_and_save(argv, data, binary=_fleet("7.2"))
    assert result.verdict.outcome == "accepted" and result.resaved is not None
    (again,) = decode_stream(result.resaved).devices
    want = bytes(512) if F.has(features, F.NET_CTRL_VLAN) else b"\xff" * 512
    assert bytes(again.value.device.vlans) == want
    assert oracle.compare_resave(oracle.model_loads(decode_stream(data), V("7.2"), argv), result.resaved) == []


def _pair(src: str, dst: str, target: str) -> tuple[crosscheck.Side, crosscheck.Side]:
    _fleet(src), _fleet(dst)
    return crosscheck.side(src, target), crosscheck.side(dst, target)


@pytest.mark.parametrize("machine, kinds", [
    ("s390-ccw-virtio-2.6", ["virtio-rng", "virtio-net", "virtio-rng"]),  # idstrs without devno: instance ids
    ("s390-ccw-virtio-2.4", ["virtio-balloon", "virtio-blk"]),  # max_revision=0: legacy only
])
def test_old_s390x_machine_types(machine: str, kinds: list[str]) -> None:
    src, dst = _pair("5.2", "7.2", "s390x")
    ex = crosscheck.run_specs(0, src, dst, machine, kinds, [])
    assert ex.outcome == "accepted" and ex.disagreements == [] and ex.violations == []
    want = [(k, kinds[:i].count(k)) for i, k in enumerate(kinds)]
    assert [(p.section, p.instance_id) for p in decode_stream(ex.data).devices] == want  # no devno before 2.7


def _mmio_rng(slot: int, num: int) -> DriveSpec:
    return DriveSpec("virtio-rng", slot, 0, (QueueSpec(0, 0x40100 + 4 * slot, 0, num),), 1, 0, transport="mmio")


def test_old_virt_machine_type_two_of_a_kind() -> None:
    """virt-2.6: both rngs' sections are `virtio-rng`, instances 0 and 1; each loads into its own device."""
    src, dst = _pair("7.2", "7.2", "aarch64")
    ex = crosscheck.run_specs(0, src, dst, "virt-2.6", ["virtio-rng", "virtio-rng"], [_mmio_rng(0, 8), _mmio_rng(1, 4)])
    sections = [(p.section, p.instance_id) for p in decode_stream(ex.data).devices]
    assert sections == [("virtio-rng", 0), ("virtio-rng", 1)]
    assert ex.outcome == "accepted" and ex.disagreements == [] and ex.violations == []


@pytest.mark.parametrize("src_release, machine", [("7.2", "virt-7.2"), ("11.1", "virt-11.1")])
def test_11_1_ring_resized_by_the_driver(src_release: str, machine: str) -> None:
    """A legacy mmio driver's smaller ring: 7.2 sends virtio/ringsize, 11.1 does not, and an 11.1 destination
    keeps its own num_default either way (the model's save(load(...)) is 11.1's own re-save)."""
    src, dst = _pair(src_release, "11.1", "aarch64")
    ex = crosscheck.run_specs(0, src, dst, machine, ["virtio-rng"], [_mmio_rng(0, 4)])
    (p,) = decode_stream(ex.data).devices
    assert ("virtio/ringsize" in [x.name for x in p.value.subsections]) is (src_release == "7.2")
    assert ex.outcome == "accepted" and ex.disagreements == [] and ex.violations == []


def test_qemu_names_a_known_incompatibility_and_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`virtio-compat qemu` judges QEMU's own violations as the matrix does: 5.2's misspelt page-poison subsection
    is a declared known incompatibility, so it is named, writes no failure file and does not fail the run."""
    _fleet("5.2")
    monkeypatch.chdir(tmp_path)
    code = main(["qemu", "--src-binary", "5.2", "--dst-binary", "5.2", "--device", "virtio-balloon",
                 "--examples", "6", "--seed", "3"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "expected: known incompatibility balloon-page-poison-misspelt" in out
    assert "with a known incompatibility only" in out
    assert not (tmp_path / "reports").exists()
