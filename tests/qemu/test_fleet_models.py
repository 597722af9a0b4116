"""Each fleet release's model held to its own binary, on the cases where it was wrong: QEMU 5.2's misspelt
page-poison subsection, and the VLAN table a 7.2 destination makes of a 10.0 stream. Each test skips, saying
which, when a fleet release it needs is not installed (`virtio-compat fleet install`)."""

from __future__ import annotations

import pytest

from harness.fleet import FleetError, binary
from harness.qemu import oracle
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
