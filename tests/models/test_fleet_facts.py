"""Model facts that the fleet's binaries (5.2, 7.2, 10.0) showed the models had wrong, pinned without a binary.
The binaries' own streams are checked in tests/qemu/test_fleet_models.py."""

from __future__ import annotations

from dataclasses import replace

import pytest

from harness.wire.stream import decode_payload
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
    assert (res.outcome, res.lines) == (REJECTED, (f"Missing section footer for {BALLOON}",
                                                   "load of migration failed: Invalid argument"))
    no_footer = load(_r(dst, "virtio-balloon", "pc-i440fx-5.2"), data, idstr=BALLOON, footer=False)
    assert no_footer.error == "Unknown savevm section type 5"


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
