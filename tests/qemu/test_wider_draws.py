"""The wider real-guest draws (issue 16 item 4) on the fleet's binaries: BARs mapped as firmware maps them, MSI-X
enabled with vectors assigned, a modern driver resizing rings and asking RING_PACKED, multiqueue taps up to 64 pairs
and a guest that did not negotiate MQ. Each state is driven over qtest, saved, loaded by the destination, and the
model must agree with QEMU (R12). Each test skips, saying which, when a fleet release or a tap device is missing."""

from __future__ import annotations

import struct
from dataclasses import replace

import pytest

from harness.fleet import FleetError, binary
from harness.qemu import crosscheck, oracle, tap
from harness.qemu.backend import QemuConfig, save
from harness.qemu.drive import DriveSpec, QueueSpec
from harness.wire.stream import decode_stream
from models.config import realize
from models.model import save as model_save
from models.model import state_from_wire
from models.releases import V

pytestmark = pytest.mark.qemu


def _pair(src: str, dst: str) -> tuple[crosscheck.Side, crosscheck.Side]:
    for r in (src, dst):
        try:
            binary(r)
        except FleetError:
            pytest.skip(f"QEMU {r} of the fleet is not installed")
    return crosscheck.side(src), crosscheck.side(dst)


def _tap() -> None:
    if tap.host_tap() is None:
        pytest.skip("no tap device can be made here (/dev/net/tun and CAP_NET_ADMIN)")


def _agrees(ex: crosscheck.Example) -> None:
    assert ex.outcome == "accepted", ex.error
    assert ex.disagreements == []
    assert ex.violations == [] or ex.expected


def _subsections(p: object) -> list[str]:
    return [x.name for x in p.value.subsections]  # type: ignore[attr-defined]


MODERN_RNG = DriveSpec("virtio-rng", 3, (1 << 64) - 1, (QueueSpec(0, 0x100, 0, 4, 1),), 0xF, 0, firmware=True,
                       msix=True, config_vector=0, modern=True, props=(("packed", "on"),))


def test_firmware_bars_msix_modern_resize_packed_on_7_2() -> None:
    """Every BAR mapped (the config space carries the addresses), MSI-X enabled with the config and queue vectors
    and their table entries, a 4-entry ring where the device has 8 (virtio/ringsize), RING_PACKED negotiated; the
    model writes the very bytes QEMU wrote and predicts the destination."""
    src, dst = _pair("7.2", "7.2")
    ex = crosscheck.run_specs(0, src, dst, "pc-i440fx-7.2", ["virtio-rng"], [MODERN_RNG])
    _agrees(ex)
    s = decode_stream(ex.data)
    (p,) = s.devices
    t = p.value.transport
    config = bytes(t.pci.config)
    bar1, bar4 = struct.unpack_from("<I", config, 0x14)[0], struct.unpack_from("<I", config, 0x20)[0]
    assert bar1 & ~0xF and bar4 & ~0xF  # mapped
    assert config[4] & 0x7 == 0x7  # I/O, memory, bus master
    assert t.config_vector == 0 and p.value.queues[0].vector == 1 and p.value.queues[0].num == 4
    table = bytes(t.msix_table)
    assert struct.unpack_from("<IIII", table, 16) == (0xFEE00000, 0, 0x21, 0)  # vector 1, unmasked
    assert {"virtio/ringsize", "virtio/packed_virtqueues"} <= set(_subsections(p))
    packed = next(x.body for x in p.value.subsections if x.name == "virtio/packed_virtqueues")
    assert tuple(packed.vqs[0]) == (0, 1, 0, 1, 0)  # wrap counters set by reset
    f64 = next(x.body for x in p.value.subsections if x.name == "virtio/64bit_features")
    assert f64.guest_features >> 34 & 1  # RING_PACKED
    (line,) = tap.lines(oracle.dest_line(ex.argv), V("7.2"))
    r = realize(line.config)
    assert model_save(r, state_from_wire(r, p.value)) == ex.data[p.offset:p.offset + p.size]


@pytest.mark.parametrize("src, dst", [("7.2", "11.1"), ("11.1", "5.2"), ("10.0", "7.2")])
def test_modern_resize_across_releases(src: str, dst: str) -> None:
    """11.1 sends no virtio/ringsize for a resized ring (the known incompatibility ringsize-dropped-11.1); the
    loads go through and the model agrees either way."""
    a, b = _pair(src, dst)
    # virtio-rng has no MSI-X on machine types before 7.2 (hw_compat_7_1 vectors=0)
    spec = replace(MODERN_RNG, msix=False, config_vector=0xFFFF, queues=(QueueSpec(0, 0x100, 0, 4),))
    ex = crosscheck.run_specs(0, a, b, "pc-i440fx-5.2", ["virtio-rng"], [spec])
    _agrees(ex)
    (p,) = decode_stream(ex.data).devices
    assert ("virtio/ringsize" in _subsections(p)) is (src != "11.1")


def test_legacy_driver_with_msix_vectors() -> None:
    """The legacy registers 20 and 22 exist while MSI-X is enabled: a vector past the table reads back as none."""
    src, dst = _pair("7.2", "10.0")
    spec = DriveSpec("virtio-blk", 3, 0xFFFFFFFF, (QueueSpec(0, 0x100, 2, 0, 7),), 7, 0, firmware=True, msix=True,
                     config_vector=1)
    ex = crosscheck.run_specs(0, src, dst, "pc-i440fx-7.2", ["virtio-blk"], [spec])
    _agrees(ex)
    (p,) = decode_stream(ex.data).devices
    assert p.value.transport.config_vector == 1
    assert p.value.queues[0].vector == 0xFFFF and p.value.queues[0].last_avail_idx == 2


@pytest.mark.parametrize("queues", [2, 40])
def test_multiqueue_tap(queues: int) -> None:
    """mq=on with a tap of `queues` pairs (40: 81 queues, 82 vectors), the guest negotiating MQ or not: the model
    decodes, loads and re-saves what QEMU does."""
    _tap()
    src, dst = _pair("7.2", "11.1")
    netdev = f"tap,vnet_hdr=on,queues={queues}"
    for features in (0xFFFFFFFF, 0xFFFFFFFF & ~(1 << 22)):
        spec = DriveSpec("virtio-net", 3, features, (QueueSpec(0, 0x100), QueueSpec(2, 0x110)), 7, 0,
                         props=(("mq", "on"),), netdev=netdev)
        ex = crosscheck.run_specs(0, src, dst, "pc-i440fx-7.2", ["virtio-net"], [spec])
        _agrees(ex)
        (p,) = decode_stream(ex.data).devices
        want = 2 * queues + 1 if features >> 22 & 1 else 3
        assert len(p.value.queues) == want
        assert p.value.device.max_queue_pairs == queues


def test_5_2_multiqueue_reset_collapses_and_10_0_uses_freed_memory() -> None:
    """A 5.2 guest negotiated MQ on a 4-pair tap and then reset the device: 5.2 saves 9 queues with no features.
    7.2 keeps one pair (net-queues-collapse-on-load); the model says the same, and that 10.0 uses freed memory."""
    _tap()
    src, dst = _pair("5.2", "7.2")
    spec = DriveSpec("virtio-net", 3, 0xFFFFFFFF, (), 0, 0, props=(("mq", "on"),), netdev="tap,vnet_hdr=off,queues=4")
    ex = crosscheck.run_specs(0, src, dst, "pc-i440fx-5.2", ["virtio-net"], [spec])
    assert ex.disagreements == []
    assert ex.violations and set(crosscheck.known_incompatibilities(ex, src.release, dst.release)) == {
        "net-queues-collapse-on-load"}
    (p,) = decode_stream(ex.data).devices
    assert len(p.value.queues) == 9
    assert oracle.overall(oracle.predict(ex.data, V("10.0"), ex.argv))[0] == "undefined"


def test_host_tap_offloads_reach_the_model() -> None:
    """QEMU offers USO with a vnet_hdr tap exactly when this kernel's tap takes it (8.2 on), and the model, told
    the host's offloads, offers the same."""
    _tap()
    caps = tap.host_tap()
    assert caps is not None
    src, _ = _pair("11.1", "11.1")
    config = QemuConfig("pc-i440fx-11.1", crosscheck.qemu_config("pc-i440fx-11.1", ["virtio-net"], [()],
                                                                   ["tap,vnet_hdr=on"]).devices, 1, 4, src.binary)
    data, truth = save(config, [DriveSpec("virtio-net", 3, (1 << 64) - 1, (), 0xF, 0, firmware=True, modern=True,
                                          netdev="tap,vnet_hdr=on")])
    (line,) = tap.lines(oracle.dest_line(truth["qemu_cmdline"]), V("11.1"))
    offered = realize(line.config).host_features
    (p,) = decode_stream(data).devices
    f64 = next(x.body for x in p.value.subsections if x.name == "virtio/64bit_features")
    uso = sum(1 << b for b in (54, 55, 56))
    assert bool(offered & uso) is caps.uso
    assert f64.guest_features & uso == offered & uso  # the driver took all it was offered
