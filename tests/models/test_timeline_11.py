"""QEMU 11.0 and 11.1 in the timeline, without a QEMU: their machine types (as the fleet's binaries list them and
MACHINE_VER_DELETION's rule gives them), the compat values at the 10.2 / 11.0 / 11.1 boundaries, and the matrix's
newest release."""

from __future__ import annotations

from dataclasses import replace

import pytest

from harness.matrix import cells, release_pairs
from models.config import Config, realize
from models.model import ACCEPTED, REJECTED, load, reset_state, save
from models.registry import BASE
from models.releases import (
    RELEASES,
    MachineType,
    V,
    machine_deleted,
    oldest_machine,
)

FAMILIES = ("pc-i440fx", "pc-q35", "virt", "s390-ccw-virtio")


def versions(release: str, family: str) -> list[str]:
    return [str(m.version) for m in BASE.machine_types(V(release)) if m.family == family]


def test_11_0_and_11_1_are_the_newest_releases() -> None:
    assert RELEASES[-3:] == (V("10.2"), V("11.0"), V("11.1"))
    pairs = release_pairs(RELEASES)
    # the newest release is an anchor: every release with it, both ways
    assert all((r, V("11.1")) in pairs and (V("11.1"), r) in pairs for r in RELEASES)
    assert (V("2.0"), V("10.2")) not in pairs  # 10.2 is a neighbour only now


@pytest.mark.parametrize("family", FAMILIES)
def test_11_1_machine_types_are_5_2_to_11_1(family: str) -> None:
    got = versions("11.1", family)
    assert got[0] == "5.2" and got[-1] == "11.1" and len(got) == 18  # the 11.1 binary's -machine help
    assert versions("11.0", family)[:2] == ["5.1", "5.2"] and versions("11.0", family)[-1] == "11.0"


@pytest.mark.parametrize(("release", "family", "oldest"), [
    ("5.2", "pc-i440fx", "2.0"), ("5.2", "pc-q35", "2.4"), ("5.2", "virt", "2.6"), ("5.2", "s390-ccw-virtio", "2.4"),
    ("7.2", "pc-q35", "2.4"), ("7.2", "s390-ccw-virtio", "2.4"),
    ("10.0", "pc-i440fx", "2.4"), ("10.0", "pc-q35", "2.4"), ("10.0", "virt", "2.6"),
    ("10.0", "s390-ccw-virtio", "2.9"),
    ("10.1", "pc-i440fx", "4.2"), ("10.2", "virt", "5.0"), ("11.0", "s390-ccw-virtio", "5.1"),
    ("11.1", "pc-q35", "5.2"),
])  # fmt: skip
def test_oldest_machine_type(release: str, family: str, oldest: str) -> None:
    assert oldest_machine(V(release), family, BASE.all_versions) == V(oldest)
    assert versions(release, family)[0] == oldest


def test_machine_ver_deletion_starts_in_10_1() -> None:
    assert not machine_deleted(V("10.0"), V("2.4"))  # 10.0 keeps it (the rule is gated on 10.1)
    assert machine_deleted(V("10.1"), V("4.1")) and not machine_deleted(V("10.1"), V("4.2"))
    assert machine_deleted(V("11.1"), V("5.1")) and not machine_deleted(V("11.1"), V("5.2"))
    assert machine_deleted(V("11.1"), V("3.1"))  # more than 6 majors: whatever the minor


def test_no_pair_with_11_1_shares_a_machine_type_older_than_5_2() -> None:
    with_11_1 = [c for c in cells((V("7.2"), V("11.1")), ("virtio-net",)) if V("11.1") in (c.src, c.dst)]
    assert len(with_11_1) == 3 * 3  # 7.2 -> 11.1, 11.1 -> 7.2, 11.1 -> 11.1; pci, mmio, ccw
    for c in with_11_1:
        common = {m.version for m in BASE.machine_types(c.src, c.transport)} & {
            m.version for m in BASE.machine_types(c.dst, c.transport)}
        assert common and min(common) == V("5.2")


def mmio(release: str, machine: str, device: str = "virtio-net") -> tuple[int, ...]:
    return realize(Config(V(release), MachineType.parse(machine), device, "mmio")).queue_sizes


def test_mmio_queue_size_override_at_the_11_0_boundary() -> None:
    # 11.1: machine types up to 11.0 realize every virtio-mmio queue with 1024 entries (hw_compat_11_0)
    assert mmio("11.1", "virt-11.0") == (1024, 1024, 1024)
    assert mmio("11.1", "virt-5.2", "virtio-blk") == (1024,)
    assert mmio("11.1", "virt-11.1") == (256, 256, 64)
    # before 11.1 the property does not exist and the queues have the device's sizes
    assert mmio("11.0", "virt-11.0") == (256, 256, 64) == mmio("10.2", "virt-10.2")
    virt = MachineType.parse("virt-11.0")
    assert BASE.compat_values(V("11.1"), virt, "virtio-mmio") == {"x-override-queue-size": 1024}
    assert BASE.compat_values(V("11.1"), MachineType.parse("virt-11.1"), "virtio-mmio") == {}
    assert "x-override-queue-size" not in realize(Config(V("11.0"), MachineType.parse("virt-11.0"), "virtio-rng",
                                                         "mmio")).props


@pytest.mark.parametrize("transport", ["pci", "ccw"])
def test_pci_and_ccw_queue_sizes_ignore_the_mmio_override(transport: str) -> None:
    machine = {"pci": "pc-i440fx-11.0", "ccw": "s390-ccw-virtio-11.0"}[transport]
    r = realize(Config(V("11.1"), MachineType.parse(machine), "virtio-net", transport))
    assert r.queue_sizes == (256, 256, 64)


@pytest.mark.parametrize("release", ["11.0", "11.1"])
def test_hw_compat_10_2_touches_no_virtio_device(release: str) -> None:
    # the 10.2 machine type of 11.0 and 11.1 is the 11.0 machine type for every modelled virtio type
    for qom_type in ("virtio-net-pci", "virtio-net-device", "virtio-blk-device", "virtio-balloon-pci",
                     "virtio-rng-pci", "virtio-pci", "virtio-device"):
        assert BASE.compat_values(V(release), MachineType.parse("pc-i440fx-10.2"), qom_type) == BASE.compat_values(
            V(release), MachineType.parse("pc-i440fx-11.0"), qom_type), qom_type
    # while hw_compat_10_1's tunnel properties still reach 10.1
    pc = MachineType.parse("pc-i440fx-10.1")
    assert BASE.compat_values(V(release), pc, "virtio-net-device")["host_tunnel"] is False


def test_host_features_of_11_1_machine_types_are_10_2s() -> None:
    for device in ("virtio-net", "virtio-blk", "virtio-balloon", "virtio-rng"):
        new = realize(Config(V("11.1"), MachineType.parse("pc-i440fx-11.1"), device))
        old = realize(Config(V("10.2"), MachineType.parse("pc-i440fx-10.2"), device))
        assert (new.host_features, new.queue_sizes, new.config_len, new.vectors) == (
            old.host_features, old.queue_sizes, old.config_len, old.vectors), device


@pytest.mark.parametrize(("release", "machine", "transport", "num", "refused"), [
    ("11.0", "pc-i440fx-11.0", "pci", 512, False),  # 11.0 takes vring.num as it is
    ("11.1", "pc-i440fx-11.0", "pci", 512, True),
    ("11.1", "pc-i440fx-11.1", "pci", 256, False),
    ("11.1", "virt-11.0", "mmio", 1024, False),  # x-override-queue-size: allocated 1024
    ("11.1", "virt-11.1", "mmio", 1024, True),
])  # fmt: skip
def test_vring_num_check_from_11_1(release: str, machine: str, transport: str, num: int, refused: bool) -> None:
    r = realize(Config(V(release), MachineType.parse(machine), "virtio-blk", transport))
    s = reset_state(r)
    s = replace(s, queues=(replace(s.queues[0], num=num),) + s.queues[1:])
    res = load(r, save(r, s), None, "dev")
    if refused:
        assert res.outcome == REJECTED and res.error == f"VQ 0 vring.num {num} exceeds allocated max {r.queue_sizes[0]}"
    else:
        assert res.outcome == ACCEPTED, res.error
