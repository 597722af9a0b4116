"""The Device declarations (models/declarations.Device): the registry is the one list of devices, and
virtio-input's realize values are the fleet's."""

from __future__ import annotations

import pytest

from harness.errors import SchemaError
from harness.matrix import cells
from harness.qemu.backend import DeviceConfig, QemuConfig
from harness.wire.stream import device_of
from models.cmdline import parse
from models.config import Config, realize
from models.declarations import Device, Transport
from models.devices import input as vinput
from models.registry import BASE
from models.releases import MachineType, Version
from models.reset import local_config_space
from models.schema import load

V = Version.parse
INPUT = ("virtio-keyboard", "virtio-mouse", "virtio-tablet", "virtio-multitouch")


def test_the_registry_lists_every_device_in_declared_order() -> None:
    assert BASE.device_names == ("virtio-net", "virtio-blk", "virtio-balloon", "virtio-rng", "virtio-scsi", *INPUT)
    assert {d.section for d in BASE.section_devices("virtio-input")} == {"virtio-input"}
    assert [d.name for d in BASE.section_devices("virtio-input")] == list(INPUT)
    with pytest.raises(SchemaError, match="unknown device 'virtio-gpu' \\(known: virtio-net, .*virtio-multitouch\\)"):
        BASE.device("virtio-gpu")


def test_compat_globals_reach_a_device_through_its_declared_parents() -> None:
    # hw_compat_2_3 any_layout=off on virtio-rng-pci; ccw_machine_2_4 max_revision=0 on each device's -ccw type
    assert BASE.type_parents["virtio-keyboard-pci"] == ("virtio-input-hid-pci", "virtio-input-pci", "virtio-pci")
    assert BASE.type_parents["virtio-net-ccw"] == ("virtio-ccw",)
    ccw24 = MachineType.parse("s390-ccw-virtio-2.4")
    for name in ("virtio-net", "virtio-blk", "virtio-balloon", "virtio-rng"):
        assert BASE.compat_values(V("7.2"), ccw24, f"{name}-ccw")["max_revision"] == 0
    # hw_compat_2_10 wheel-axis=off reaches the mouse and the tablet only
    pc210 = MachineType.parse("pc-i440fx-2.10")
    assert BASE.compat_values(V("7.2"), pc210, "virtio-mouse-device")["wheel-axis"] is False
    assert "wheel-axis" not in BASE.compat_values(V("7.2"), pc210, "virtio-keyboard-device")
    props = BASE.effective_props(V("7.2"), MachineType.parse("pc-i440fx-7.2"), "virtio-tablet", "pci", {})
    assert props["vectors"] == 2 and props["wheel-axis"] is True and props["serial"] is None


@pytest.mark.parametrize("device,config_len,cls", [("virtio-keyboard", 37, 0x0900), ("virtio-mouse", 51, 0x0902),
                                                   ("virtio-tablet", 51, 0x0980), ("virtio-multitouch", 51, 0x0980)])
def test_input_realize_values_are_the_fleets(device: str, config_len: int, cls: int) -> None:
    """config_len, queues, PCI ids as QEMU 5.2 to 11.1 save them (tests/qemu/test_input.py checks them live)."""
    r = realize(Config(V("10.0"), MachineType.parse("pc-i440fx-10.0"), device, "pci"))
    assert (r.config_len, r.queue_sizes, r.vectors, r.modern, r.legacy) == (config_len, (64, 64), 2, True, False)
    space = local_config_space(r).config
    assert int.from_bytes(space[2:4], "little") == 0x1052  # modern-only: 0x1040 + VIRTIO_ID_INPUT
    assert int.from_bytes(space[0x0A:0x0C], "little") == cls
    serial = realize(Config(V("10.0"), MachineType.parse("pc-i440fx-10.0"), device, "pci", props={"serial": "x" * 60}))
    assert serial.config_len == max(config_len, 68)  # an ID_SERIAL entry as long as the string


def test_input_is_offered_where_qemu_offers_it() -> None:
    with pytest.raises(SchemaError, match="QEMU 7.2 has no virtio-multitouch-pci"):
        realize(Config(V("7.2"), MachineType.parse("pc-i440fx-7.2"), "virtio-multitouch", "pci"))
    with pytest.raises(SchemaError, match="QEMU 10.0 has no virtio-multitouch-ccw"):
        realize(Config(V("10.0"), MachineType.parse("s390-ccw-virtio-10.0"), "virtio-multitouch", "ccw"))
    got = {(c.device, c.transport) for c in cells((V("7.2"), V("10.0")), INPUT)}
    assert ("virtio-multitouch", "ccw") not in got and ("virtio-keyboard", "ccw") in got
    assert {c.src for c in cells((V("7.2"), V("10.0")), ("virtio-multitouch",))} == {V("10.0")}


def test_a_command_line_and_a_stream_name_input_devices_by_their_declaration() -> None:
    (line,) = parse(["-machine", "pc-i440fx-7.2", "-device", "virtio-tablet-pci,addr=0x5"], V("7.2"))
    assert (line.config.device, line.section) == ("virtio-tablet", "0000:00:05.0/virtio-input")
    assert device_of("0000:00:05.0/virtio-input", None, BASE.wire) == ("virtio-input", "pci")
    assert device_of("0000:00:05.0/virtio-input") is None  # harness/wire alone does not lay it out
    args = QemuConfig("pc-i440fx-7.2", (DeviceConfig("virtio-blk", 3), DeviceConfig("virtio-mouse", 4))).args()
    assert args[args.index("-blockdev") + 1] == "driver=null-co,node-name=bd_vblk0,size=1048576"
    assert "virtio-blk-pci,id=vblk0,drive=bd_vblk0,addr=0x3" in args
    assert "virtio-mouse-pci,id=vmou0,addr=0x4" in args


def test_a_device_declaration_is_checked() -> None:
    pci = (Transport("pci", V("2.5")),)
    with pytest.raises(SchemaError, match="declares no transport"):
        Device("virtio-foo", vinput.VERSIONS, 42, vinput)
    with pytest.raises(SchemaError, match="unknown transport 'pcie'"):
        Device("virtio-foo", vinput.VERSIONS, 42, vinput, transports=(Transport("pcie", V("2.0")),))
    with pytest.raises(SchemaError, match="harness/wire lays out no 'virtio-input' section: give its device data"):
        Device("virtio-foo", vinput.VERSIONS, 42, vinput, transports=pci)


def test_a_schema_module_declares_a_device(tmp_path: object) -> None:
    from pathlib import Path

    folder = Path(str(tmp_path))
    dup = folder / "dup.py"
    dup.write_text("from models.devices.input import DEVICES\nDECLARATIONS = (DEVICES[0],)\n")
    with pytest.raises(SchemaError, match="device 'virtio-keyboard' is already declared"):
        load(dup)
    bare = folder / "bare.py"
    bare.write_text("from types import SimpleNamespace\nfrom models.schema import Device, Transport\n"
                    "from models.vmsd import Versions, Vmsd\nfrom models.releases import Version\n"
                    "DECLARATIONS = (Device('virtio-foo', Versions(Vmsd('virtio-foo', 1, 1), None), 42,\n"
                    "                       SimpleNamespace(), transports=(Transport('pci', Version(2, 5)),)),)\n")
    with pytest.raises(SchemaError, match="bare.py.*its code has no host_features, get_features"):
        load(bare)


def test_diff_names_a_device_type_one_release_lacks() -> None:
    from harness.diff import diff

    d = diff(V("7.2"), V("10.0"), ["virtio-multitouch"], [], "dev", BASE)
    added = [(x.kind, x.subject) for x in d.differences if x.kind.startswith("device-")]
    assert added == [("device-added", "virtio-multitouch-pci"), ("device-added", "virtio-multitouch-device")]
    assert not [x for x in diff(V("7.2"), V("10.0"), ["virtio-tablet"], [], "dev", BASE).differences
                if x.kind.startswith("device-")]
