"""The bi-endian R7 case on real QEMU: aarch64 `virt`, whose default is little-endian, with a guest CPU that runs
(harness/qemu/guest.py) and resets a virtio-mmio device with big- or little-endian data. QEMU then takes the
device's endianness from that CPU (virtio_reset: virtio_current_cpu_endian), sends virtio/device_endian for the
big one, and a legacy device's rings are in that byte order. The model is held to each of the fleet's releases,
and a schema module with a wrong needed() is caught by R5 against the real stream."""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path

import pytest

from harness.errors import QemuError
from harness.qemu import crosscheck, guest, oracle, presence
from harness.qemu.backend import DeviceConfig, save_stream
from harness.qemu.drawn import RING_BASE_PFN_MMIO
from harness.qemu.drive import DriveSpec, QueueSpec
from harness.wire.stream import decode_stream
from models import rings, schema
from models.config import realize
from models.registry import BASE
from models.releases import V
from models.state import ENDIAN_BIG, ENDIAN_LITTLE
from tests.qemu.test_fleet import fleet_binary

pytestmark = pytest.mark.qemu
HERE = Path(__file__).parent
TEETH = HERE.parent / "teeth" / "schemas" / "device_endian_modern_only.py"
FLEET = ("5.2", "7.2", "10.0", "11.1")
ENDIANS = {"big": ENDIAN_BIG, "little": ENDIAN_LITTLE, None: ENDIAN_LITTLE}


def _three_rngs(binary: str, machine: str) -> tuple[bytes, dict[str, object]]:
    """Three virtio-rng devices, reset by a big-endian guest, a little-endian guest and qtest (no CPU), in that
    order, each then driven to DRIVER_OK with its queue set up."""
    devices = [DeviceConfig("virtio-rng", i, transport="mmio") for i in range(3)]
    drives = [DriveSpec("virtio-rng", i, 0xFFFFFFFF, (QueueSpec(0, RING_BASE_PFN_MMIO + 2 * i),), transport="mmio",
                        reset_endian=e) for i, e in enumerate(("big", "little", None))]
    return save_stream(machine, devices, drives, mem_mb=64, binary=binary)


@pytest.mark.parametrize("release", FLEET)
def test_a_big_endian_guest_reset_makes_the_device_big_endian(release: str) -> None:
    """Each fleet release: the device the big-endian guest reset is sent with virtio/device_endian = big (2), the
    others without it (the target's little); the model of the release sends the same for the states the stream
    holds (R5 against the real stream) and loads device_endian as R7 says."""
    binary = fleet_binary(release, "aarch64")
    machine = f"virt-{'5.2' if release == '5.2' else '7.2'}"
    data, truth = _three_rngs(binary, machine)
    s = decode_stream(data)
    sent = [next((x.body.device_endian for x in p.value.subsections if x.name == "virtio/device_endian"), None)
            for p in s.devices]
    assert sent == [ENDIAN_BIG, None, None]
    assert [d["device_endian"] for d in truth["devices"]] == [2, 1, None]  # type: ignore[index]
    checked, lines = presence.check(s, V(release), truth["qemu_cmdline"])  # type: ignore[arg-type]
    assert (checked, lines) == (3, [])
    v = oracle.predict(s, V(release), truth["qemu_cmdline"])  # type: ignore[arg-type]
    assert v.overall()[0] == "accepted"
    loads = oracle.model_loads(s, V(release), truth["qemu_cmdline"])  # type: ignore[arg-type]
    assert [ml.result.state.device_endian for ml in loads.values()] == [ENDIAN_BIG, ENDIAN_LITTLE, ENDIAN_LITTLE]


def _blk_pair(release: str, endian: str | None) -> crosscheck.Example:
    side = crosscheck.side(release, "aarch64")
    spec = DriveSpec("virtio-blk", 0, 0xFFFFFFFF, (QueueSpec(0, RING_BASE_PFN_MMIO, 3, 128),), transport="mmio",
                     reset_endian=endian)
    return crosscheck.run_specs(0, side, side, "virt-7.2", ["virtio-blk"], [spec])


def test_big_endian_rings_are_written_read_and_checked_in_big_endian() -> None:
    """A legacy virtio-blk reset by a big-endian guest: the driver writes the ring and request headers big-endian,
    QEMU completes the three requests (it read them so), the destination accepts, and the model, reading the
    rings in the loaded device_endian, agrees. Read little-endian (as before bi-endian targets), its ring check
    sees avail idx 0x300 and marks the device broken where QEMU does not: R12 names it."""
    fleet_binary("7.2", "aarch64")
    ex = _blk_pair("7.2", "big")
    s = decode_stream(ex.data)
    ram = s.memory
    assert ram is not None
    avail = (RING_BASE_PFN_MMIO << 12) + 16 * 128 + 2
    assert ram.read_phys(s.machine, avail, 2) == b"\x00\x03"  # big-endian 3
    assert (ex.outcome, ex.model_outcome, ex.disagreements, ex.violations) == ("accepted", "accepted", [], [])

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rings, "bi_endian", lambda machine: False)  # rings_big_endian as a little-endian target's
        side = crosscheck.side("7.2", "aarch64")
        broken = crosscheck.run_specs(0, side, side, "virt-7.2", ["virtio-blk"], list(ex.drives))
    assert broken.outcome == "accepted" and broken.model_outcome == "accepted-broken", broken.disagreements
    assert any(d.startswith("R12") or "outcome" in d for d in broken.disagreements), broken.disagreements


def test_a_modern_device_of_a_big_endian_guest_is_sent_big_with_little_endian_rings() -> None:
    """force-legacy=off: a virtio 1.0 driver on a device the big-endian guest reset. VERSION_1 makes its rings
    little-endian (the driver writes them so, QEMU completes the requests), yet device_endian stays big and is
    sent (virtio_device_endian_needed: not little for a VERSION_1 device), and the model agrees on every release
    pair of the fleet's 7.2 and 11.1."""
    fleet_binary("7.2", "aarch64")
    fleet_binary("11.1", "aarch64")
    spec = DriveSpec("virtio-blk", 0, 0xFFFFFFFF, (QueueSpec(0, RING_BASE_PFN_MMIO, 3, 64),), status=0xF,
                     transport="mmio", reset_endian="big", modern=True)
    for src, dst in (("7.2", "11.1"), ("11.1", "7.2")):
        a, b = crosscheck.side(src, "aarch64"), crosscheck.side(dst, "aarch64")
        ex = crosscheck.run_specs(0, a, b, "virt-7.2", ["virtio-blk"], [spec])
        s = decode_stream(ex.data)
        (p,) = s.devices
        assert [x.body.device_endian for x in p.value.subsections if x.name == "virtio/device_endian"] == [2]
        avail = (RING_BASE_PFN_MMIO << 12) + 16 * 64 + 2
        assert s.memory is not None and s.memory.read_phys(s.machine, avail, 2) == b"\x03\x00"  # little-endian 3
        assert (ex.outcome, ex.model_outcome, ex.disagreements, ex.violations) == ("accepted", "accepted", [], [])


def _endian_registry(modern_only: bool, tmp_path: Path) -> object:
    """BASE without its virtio/device_endian, given it again by the teeth module (fixed: MODERN_ONLY False)."""
    base = replace(BASE, core_subsections=tuple(s for s in BASE.core_subsections
                                                 if s.name != "virtio/device_endian"))
    module = tmp_path / f"device_endian_{modern_only}.py"
    module.write_text(TEETH.read_text().replace("MODERN_ONLY = True", f"MODERN_ONLY = {modern_only}"))
    return schema.load(module, base)


def test_a_wrong_device_endian_needed_is_caught_by_r5_on_the_real_stream(tmp_path: Path) -> None:
    """The teeth module (virtio/device_endian only for a non-little VERSION_1 device) against what the fleet's 7.2
    saves: the big-endian guest's legacy device is named (QEMU sends it, the model does not); the little-endian
    guest's and qtest's devices cannot tell the two apart. The fixed module passes all three."""
    binary = fleet_binary("7.2", "aarch64")
    data, truth = _three_rngs(binary, "virt-7.2")
    s = decode_stream(data)
    argv = truth["qemu_cmdline"]
    for modern_only in (True, False):
        reg = _endian_registry(modern_only, tmp_path)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(presence, "realize", functools.partial(realize, registry=reg))
            checked, lines = presence.check(s, V("7.2"), argv)  # type: ignore[arg-type]
        want = [f"R5: {s.devices[0].section}: QEMU 7.2 sends virtio/device_endian, the model of 7.2 does not"]
        assert (checked, lines) == (3, want if modern_only else []), lines


def test_the_guest_program_is_refused_where_there_is_none() -> None:
    with pytest.raises(QemuError, match="no guest program for target x86_64"):
        guest.loader_args("x86_64")
