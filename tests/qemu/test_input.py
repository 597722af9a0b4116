"""virtio-input held to real QEMU: the streams of each type on each transport (config length, queues, PCI ids),
decode and verdict of them, and driven states through a QEMU pair with the model agreeing. Skips, saying which,
when a fleet release it needs is not installed (`virtio-compat fleet install`)."""

from __future__ import annotations

import json
import random

import pytest

from harness.cli import main
from harness.fleet import FleetError, binary
from harness.qemu import crosscheck, oracle
from harness.qemu.backend import DeviceConfig, QemuConfig, save
from harness.wire.stream import decode_stream
from models.cmdline import parse
from models.config import realize
from models.model import save as model_save
from models.model import state_from_wire
from models.registry import BASE
from models.releases import V

pytestmark = pytest.mark.qemu
TYPES = ("virtio-keyboard", "virtio-mouse", "virtio-tablet", "virtio-multitouch")


def _fleet(release: str) -> None:
    try:
        binary(release)
    except FleetError:
        pytest.skip(f"QEMU {release} of the fleet is not installed")


@pytest.mark.parametrize("release,machine,transport", [("7.2", "pc-i440fx-7.2", "pci"), ("10.0", "virt-10.0", "mmio"),
                                                       ("11.1", "pc-q35-11.1", "pci")])
def test_each_input_type_saves_as_the_model_does(release: str, machine: str, transport: str) -> None:
    """The reset state of every input type the release has: the model's bytes are the binary's."""
    _fleet(release)
    side = crosscheck.side(release, "aarch64" if transport == "mmio" else "x86_64")
    kinds = [k for k in TYPES if BASE.device(k).offered(V(release), transport)]
    devices = tuple(DeviceConfig(k, i + 2 if transport == "pci" else i, transport=transport)
                    for i, k in enumerate(kinds))
    data, truth = save(QemuConfig(machine, devices, binary=side.binary))
    s = decode_stream(data, extras=BASE.wire)
    assert [p.device for p in s.devices] == ["virtio-input"] * len(kinds)
    for p, line in zip(s.devices, parse(oracle.dest_line(truth["qemu_cmdline"]), V(release)), strict=True):
        r = realize(line.config)
        assert (p.value.config_len, p.value.num_queues) == (r.config_len, 2)
        assert model_save(r, state_from_wire(r, p.value)) == data[p.offset : p.offset + p.size]


def test_decode_and_verdict_name_the_type(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    _fleet("7.2")
    from pathlib import Path

    side = crosscheck.side("7.2")
    devices = (DeviceConfig("virtio-keyboard", 2), DeviceConfig("virtio-mouse", 3))
    data, _ = save(QemuConfig("pc-i440fx-7.2", devices, binary=side.binary))
    path = Path(str(tmp_path)) / "input.bin"
    path.write_bytes(data)
    assert main(["decode", "--json", str(path)]) == 0
    decoded = json.loads(capsys.readouterr().out)
    assert [(d["section"], d["config_len"]) for d in decoded["devices"]] == [
        ("0000:00:02.0/virtio-input", 37), ("0000:00:03.0/virtio-input", 51)]
    assert main(["verdict", "--json", str(path), "--release", "10.0"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert [d["outcome"] for d in verdict["devices"]] == ["accepted", "accepted"]
    assert any("-device virtio-mouse-pci" in a for a in verdict["assumptions"])


@pytest.mark.parametrize("src,dst,machine", [("7.2", "7.2", "pc-i440fx-7.2"), ("7.2", "10.0", "pc-q35-7.2"),
                                             ("11.1", "10.0", "virt-10.0")])
def test_driven_input_states_agree_with_the_binaries(src: str, dst: str, machine: str) -> None:
    _fleet(src)
    _fleet(dst)
    target = "aarch64" if machine.startswith("virt") else "x86_64"
    a, b = crosscheck.side(src, target), crosscheck.side(dst, target)
    kinds = [k for k in TYPES if BASE.device(k).offered(min(a.release, b.release), "pci")]
    ex = crosscheck.run_example(0, random.Random(7), a, b, machine, kinds * 2)
    assert ex.outcome == "accepted" and not ex.disagreements and not ex.violations, ex
    assert any(d.status for d in ex.drives)  # a driver set something up, not only reset states
