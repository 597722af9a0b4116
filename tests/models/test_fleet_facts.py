"""Model facts that the fleet's binaries (5.2, 7.2, 10.0) showed the models had wrong, pinned without a binary.
The binaries' own streams are checked in tests/qemu/test_fleet_models.py."""

from __future__ import annotations

from dataclasses import replace

import pytest

from harness.wire.payload import decode_payload
from models import features as F
from models.config import Config, Realized, realize
from models.model import ACCEPTED, REJECTED, load, reset_state, save
from models.releases import MachineType, V
from models.state import BalloonState, DeviceState, NetState

BALLOON = "0000:00:05.0/virtio-balloon"
NET = "0000:00:03.0/virtio-net"
OPEN, EMPTY = b"\xff" * 512, bytes(512)


def _r(release: str, device: str, machine: str) -> Realized:
    props = {"romfile": ""} if device == "virtio-net" else {}
    return realize(Config(V(release), MachineType.parse(machine), device, "pci", 1, 128, props))


def _poisoned(r: Realized) -> DeviceState:
    """A legacy driver that negotiated PAGE_POISON (on by default from 5.1 machine types) and wrote poison_val."""
    s = reset_state(r)
    assert F.has(r.host_features, F.BALLOON_PAGE_POISON)
    return replace(s, status=7, guest_features=F.bit(F.BALLOON_PAGE_POISON) | F.bit(F.BALLOON_STATS_VQ),
                   device=BalloonState(num_pages=3, actual=2, poison_val=0xAA55AA55))


@pytest.mark.parametrize("release, name", [("5.2", b"vitio-balloon-device/page-poison"),
                                           ("6.0", b"vitio-balloon-device/page-poison"),
                                           ("7.2", b"virtio-balloon-device/page-poison"),
                                           ("10.0", b"virtio-balloon-device/page-poison")])
def test_page_poison_subsection_name(release: str, name: bytes) -> None:
    """5.1 to 6.1 write the subsection as `vitio-...` (the 5.2 binary does); the decoder reads it as sent."""
    r = _r(release, "virtio-balloon", "pc-i440fx-5.2")
    data = save(r, _poisoned(r))
    assert bytes([0x05, len(name)]) + name + (1).to_bytes(4, "big") + (0xAA55AA55).to_bytes(4, "big") in data
    other = name.replace(b"vitio-", b"virtio-") if name.startswith(b"vitio") else name.replace(b"virtio-", b"vitio-")
    assert other not in data
    v = decode_payload(data, "pci", "virtio-balloon")
    assert [s.name for s in v.device.subsections] == [name.decode()]
    assert v.device.subsections[0].body.poison_val == 0xAA55AA55
    assert "virtio/64bit_features" in [s.name for s in v.subsections]  # the core subsections follow, read as sent


@pytest.mark.parametrize("dst", ["5.2", "6.0", "7.2", "10.0", "10.2"])
def test_misspelt_page_poison_fails_every_load(dst: str) -> None:
    """No loader reads `vitio-balloon-device/page-poison` (its name lacks the vmsd's prefix): the device, core and
    outer subsection loaders all stop there and the section footer check fails (the 5.2, 7.2, 10.0 binaries)."""
    src = _r("5.2", "virtio-balloon", "pc-i440fx-5.2")
    data = save(src, _poisoned(src))
    res = load(_r(dst, "virtio-balloon", "pc-i440fx-5.2"), data, idstr=BALLOON)
    # from 10.2 the migration's own line names the section id, which a lone payload does not carry
    last = ("load of migration failed: Invalid argument",) if V(dst) < V("10.2") else ()
    assert (res.outcome, res.lines) == (REJECTED, (f"Missing section footer for {BALLOON}", *last))
    no_footer = load(_r(dst, "virtio-balloon", "pc-i440fx-5.2"), data, idstr=BALLOON, footer=False)
    # from 10.2 the main loop's complaint is an Error, which the migration's line carries
    assert no_footer.error == ("Unknown savevm section type 5" if V(dst) < V("10.2") else
                               "load of migration failed: Invalid argument: Unknown section type 5")


def test_without_page_poison_5_2_migrates() -> None:
    src = _r("5.2", "virtio-balloon", "pc-i440fx-5.2")
    s = replace(_poisoned(src), guest_features=F.bit(F.BALLOON_STATS_VQ))
    res = load(_r("7.2", "virtio-balloon", "pc-i440fx-5.2"), save(src, s), idstr=BALLOON)
    assert res.outcome == ACCEPTED and res.state is not None
    assert res.state.device == BalloonState(num_pages=3, actual=2)  # poison_val is not sent without the feature


@pytest.mark.parametrize("src", ["7.2", "10.0"])
def test_page_poison_from_6_2_on_is_unknown_to_5_2(src: str) -> None:
    """The right name has the prefix, and 5.2 only knows the misspelt one: -ENOENT, no message before 10.2."""
    r = _r(src, "virtio-balloon", "pc-i440fx-5.2")
    res = load(_r("5.2", "virtio-balloon", "pc-i440fx-5.2"), save(r, _poisoned(r)), idstr=BALLOON)
    assert res.outcome == REJECTED
    assert res.lines == ("Failed to load virtio-balloon:virtio",
                         f"error while loading state for instance 0x0 of device '{BALLOON}'",
                         "load of migration failed: No such file or directory")
    ok = load(_r("7.2", "virtio-balloon", "pc-i440fx-5.2"), save(r, _poisoned(r)), idstr=BALLOON)
    assert ok.outcome == ACCEPTED and ok.state is not None and ok.state.device.poison_val == 0xAA55AA55


# -- virtio-net's VLAN filter table after a load ------------------------------------------------------------------


def _net(release: str, features: int, vlans: bytes) -> tuple[Realized, DeviceState]:
    r = _r(release, "virtio-net", "pc-i440fx-5.2")
    s = reset_state(r)
    assert isinstance(s.device, NetState)
    return r, replace(s, status=7, guest_features=features, device=replace(s.device, vlans=vlans))


CTRL = F.bit(F.NET_CTRL_VQ) | F.bit(F.NET_CTRL_VLAN)
ODD = bytes(range(256)) * 2  # a table a guest filled through the control queue


@pytest.mark.parametrize("dst, features, want", [
    ("7.2", CTRL, EMPTY),  # up to 8.1 set_features resets the table: empty with CTRL_VLAN
    ("7.2", F.bit(F.NET_CTRL_VQ), OPEN),  # ... every VLAN let through without
    ("5.2", CTRL, EMPTY),
    ("8.2", CTRL, ODD),  # 06b636a1e2ad: kept with CTRL_VLAN
    ("10.0", CTRL, ODD),
    ("10.0", F.bit(F.NET_CTRL_VQ), OPEN),
    ("10.1", CTRL, ODD),  # 6071d13c6a: reset only when the CTRL_VLAN bit changes, which a load never does
    ("10.1", F.bit(F.NET_CTRL_VQ), ODD),
])
def test_vlans_after_a_load(dst: str, features: int, want: bytes) -> None:
    """The 10.0 -> 7.2 disagreement: 7.2's virtio_net_set_features, the last step of virtio_load, rewrites the
    table the device vmsd loaded (real 7.2 saves an empty table after loading 10.0's open one with CTRL_VLAN)."""
    src, s = _net("10.0", features, ODD)
    res = load(_r(dst, "virtio-net", "pc-i440fx-5.2"), save(src, s), idstr=NET)
    assert res.outcome == ACCEPTED and res.state is not None
    assert isinstance(res.state.device, NetState) and res.state.device.vlans == want


@pytest.mark.parametrize("release, want", [("5.2", EMPTY), ("6.0", EMPTY), ("7.2", OPEN), ("8.2", EMPTY),
                                           ("10.0", OPEN), ("10.1", OPEN)])
def test_vlans_after_reset(release: str, want: bytes) -> None:
    """virtio_net_reset empties the table; virtio_reset's set_features(0) (7.2.18, 10.0.2, 10.1) opens it again:
    the saves of an untouched device by the 5.2, 7.2 (7.2.22) and 10.0 (10.0.2) binaries."""
    dev = reset_state(_r(release, "virtio-net", "pc-i440fx-5.2")).device
    assert isinstance(dev, NetState) and dev.vlans == want


# -- section idstrs and realize values on old s390x and virt machine types (the 5.2 and 7.2 binaries) -----------


@pytest.mark.parametrize("machine, want", [
    ("s390-ccw-virtio-2.6", [("virtio-rng", 0), ("virtio-net", 0), ("virtio-rng", 1)]),  # css_dev_path off
    ("s390-ccw-virtio-2.7", [("/fe.0.0000/virtio-rng", 0), ("/fe.0.0007/virtio-net", 0), ("/fe.0.0002/virtio-rng", 0)]),
    ("virt-2.6", [("virtio-rng", 0), ("virtio-net", 0), ("virtio-rng", 1)]),  # format_transport_address off
    ("virt-2.7", [("virtio-mmio@000000000a003e00/virtio-rng", 0), ("virtio-mmio@000000000a003c00/virtio-net", 0),
                  ("virtio-mmio@000000000a003a00/virtio-rng", 0)]),
])
def test_section_idstr_and_instance_on_old_machine_types(machine: str, want: list[tuple[str, int]]) -> None:
    """Without a transport path, same-named sections are told apart by instance id, in creation order."""
    from models.cmdline import parse

    suffix = "ccw" if machine.startswith("s390") else "device"
    devno = ",devno=fe.0.0007" if suffix == "ccw" else ""
    argv = ["-machine", machine, "-device", f"virtio-rng-{suffix}", "-device", f"virtio-net-{suffix}{devno}",
            "-device", f"virtio-rng-{suffix}"]
    assert [line.key for line in parse(argv, V("7.2"))] == want


def test_ccw_devno_given_and_its_subchannel() -> None:
    """devno= names the device (and its idstr); its subchannel is still the first free one; a devno taken is
    refused; one not given is the first free from the subchannel's number on."""
    from harness.errors import UsageError
    from models.cmdline import parse

    lines = parse(["-machine", "s390-ccw-virtio-7.2", "-device", "virtio-blk-ccw,devno=fe.0.0001",
                   "-device", "virtio-rng-ccw"], V("7.2"))
    assert [(ln.config.ccw_devno, ln.config.ccw_schid) for ln in lines] == [(1, 0), (2, 1)]
    tree = reset_state(realize(lines[0].config)).ccw
    assert tree is not None
    sch = tree.tree["parent_obj"]["sch"]
    assert (sch["devno"], sch["migrated_schid"]) == (1, 0)
    with pytest.raises(UsageError, match="Device fe.0.0001 already exists"):
        parse(["-machine", "s390-ccw-virtio-7.2", "-device", "virtio-blk-ccw,devno=fe.0.0001",
               "-device", "virtio-rng-ccw,devno=fe.0.0001"], V("7.2"))


@pytest.mark.parametrize("machine, version_1", [("s390-ccw-virtio-2.4", False), ("s390-ccw-virtio-2.5", True)])
def test_ccw_2_4_is_legacy_only(machine: str, version_1: bool) -> None:
    """ccw_machine_2_4 sets max_revision=0 on every virtio-*-ccw: no VERSION_1, so no 64bit_features and no
    virtqueues subsection (the 7.2 binary's balloon on s390-ccw-virtio-2.4 sends none)."""
    r = realize(Config(V("7.2"), MachineType.parse(machine), "virtio-balloon", "ccw"))
    assert F.has(r.host_features, F.VERSION_1) is version_1
    names = [x.name for x in decode_payload(save(r, reset_state(r)), "ccw", "virtio-balloon").subsections]
    assert ("virtio/virtqueues" in names) is version_1


def test_11_1_neither_sends_nor_loads_ringsize() -> None:
    """11.1 keeps each queue at the size its device allocated: a smaller legacy mmio QueueNum goes without
    virtio/ringsize, and an incoming virtio/ringsize's num_default is not taken (10.0 takes it)."""
    def resized(release: str) -> tuple[Realized, DeviceState]:
        r = realize(Config(V(release), MachineType.parse("virt-7.2"), "virtio-rng", "mmio"))
        s = reset_state(r)
        return r, replace(s, status=1, queues=(replace(s.queues[0], num=4, desc=0x40102000),))

    r10, s10 = resized("10.0")
    r11, s11 = resized("11.1")
    def names(r: Realized, s: DeviceState) -> list[str]:
        return [x.name for x in decode_payload(save(r, s), "mmio", "virtio-rng").subsections]

    assert "virtio/ringsize" in names(r10, s10) and "virtio/ringsize" not in names(r11, s11)
    wide = replace(s10, num_default=(16,))  # a 10.0 source whose queue's default was 16
    for r, default in ((r10, 16), (r11, 1024)):  # 11.1 on virt-7.2: x-override-queue-size 1024 (hw_compat_11_0)
        res = load(r, save(r10, wide), None, "virtio-mmio@000000000a003e00/virtio-rng", 0, True, 1)
        assert res.outcome == ACCEPTED and res.state is not None
        assert res.state.num_default[0] == default, r.release
