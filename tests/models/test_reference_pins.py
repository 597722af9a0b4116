"""Each declared change pinned to its reference: the literals below are copied from
../shared/reference/qemu-virtio-migration.md (§10, §11) and real-qemu.md, never computed from
the declarations under test."""

from __future__ import annotations

import pytest

from models.config import Config, realize
from models.model import reset_state, save
from models.registry import BASE
from models.releases import ALL_VERSIONS, MachineType, V

DEVICES = ("virtio-net", "virtio-blk", "virtio-balloon", "virtio-rng")

# §10.1: (machine types, {device: (lo, hi)}); net on hubport, blk on null-co, 1 vCPU
HOST_FEATURES = [
    (("2.0",), {"virtio-net": (0x799F8064, 0), "virtio-blk": (0x71000ED4, 0), "virtio-balloon": (0x71000002, 0),
                "virtio-rng": (0x71000000, 0)}),
    (("2.1", "2.2", "2.3"), {"virtio-net": (0x79BF8064, 0), "virtio-blk": (0x71000ED4, 0),
                             "virtio-balloon": (0x71000002, 0), "virtio-rng": (0x71000000, 0)}),
    (("2.4", "2.5", "2.6"), {"virtio-net": (0x79BF8064, 0), "virtio-blk": (0x71000ED4, 0),
                             "virtio-balloon": (0x79000002, 0), "virtio-rng": (0x79000000, 0)}),
    (("2.7", "2.8", "2.9", "2.10", "2.11", "2.12", "3.0", "3.1"),
     {"virtio-net": (0x79BF8064, 1), "virtio-blk": (0x79000E54, 1), "virtio-balloon": (0x79000002, 1),
      "virtio-rng": (0x79000000, 1)}),
    (("4.0", "4.1", "4.2", "5.0"), {"virtio-net": (0x79BF8064, 1), "virtio-blk": (0x79006E54, 1),
                                    "virtio-balloon": (0x79000002, 1), "virtio-rng": (0x79000000, 1)}),
    (("5.1", "5.2", "6.0", "6.1", "6.2", "7.0", "7.1"),
     {"virtio-net": (0x79BF8064, 1), "virtio-blk": (0x79006E54, 1), "virtio-balloon": (0x79000012, 1),
      "virtio-rng": (0x79000000, 1)}),
    (("7.2",), {"virtio-net": (0x79BF8064, 0x101), "virtio-blk": (0x79006E54, 0x101),
                "virtio-balloon": (0x79000012, 0x101), "virtio-rng": (0x79000000, 0x101)}),
]


def _realize(release: str, machine: str, device: str, smp: int = 1, **props: object):  # type: ignore[no-untyped-def]
    return realize(Config(V(release), MachineType.parse(machine), device, "pci", smp, 128, props))


@pytest.mark.parametrize("machines,want", HOST_FEATURES, ids=lambda x: x[0] if isinstance(x, tuple) else "")
def test_host_features_by_machine_type_on_72(machines: tuple[str, ...], want: dict[str, tuple[int, int]]) -> None:
    for m in machines:
        for device, (lo, hi) in want.items():
            r = _realize("7.2", f"pc-i440fx-{m}", device)
            assert (r.host_features & 0xFFFFFFFF, r.host_features >> 32) == (lo, hi), (m, device)


def test_host_features_from_source_for_newer_machine_types() -> None:
    """§10.1 row 8.0 - 10.2 (source): as 7.2."""
    for m in ("8.0", "8.2", "9.2", "10.0", "10.2"):
        assert _realize("10.2", f"pc-i440fx-{m}", "virtio-net").host_features == 0x10179BF8064


def test_blk_with_four_vcpus() -> None:
    """§10.1: 5.2 - 7.2 with -smp 4: blk 79007e54 (MQ) / 1 (7.2: 101); §11: 4 queues, 5 vectors."""
    for m, hi in (("5.2", 1), ("6.0", 1), ("7.1", 1), ("7.2", 0x101)):
        r = _realize("7.2", f"pc-i440fx-{m}", "virtio-blk", smp=4)
        assert (r.host_features & 0xFFFFFFFF, r.host_features >> 32) == (0x79007E54, hi)
        assert (r.queue_sizes, r.vectors) == ((256,) * 4, 5)
    r = _realize("7.2", "pc-i440fx-5.1", "virtio-blk", smp=4)
    assert (r.queue_sizes, r.vectors) == ((256,), 2)


# §11 (pc-i440fx, 1 vCPU): (sizes, vectors, config_len) per device
QUEUES = {
    "2.0": {"virtio-net": ((256, 256, 64), 3, 8), "virtio-blk": ((128,), 2, 36), "virtio-balloon": ((128,) * 3, 0, 8),
            "virtio-rng": ((8,), 0, 0)},
    "3.1": {"virtio-net": ((256, 256, 64), 3, 8), "virtio-blk": ((128,), 2, 36), "virtio-balloon": ((128,) * 3, 0, 8),
            "virtio-rng": ((8,), 0, 0)},
    "4.0": {"virtio-net": ((256, 256, 64), 3, 8), "virtio-blk": ((128,), 2, 57),
            "virtio-balloon": ((128,) * 3, 0, 16), "virtio-rng": ((8,), 0, 0)},
    "4.1": {"virtio-blk": ((128,), 2, 57), "virtio-balloon": ((128,) * 3, 0, 8)},
    "5.0": {"virtio-blk": ((256,), 2, 57), "virtio-balloon": ((128,) * 3, 0, 8)},
    "5.1": {"virtio-balloon": ((128,) * 3, 0, 16)},
    "6.0": {"virtio-net": ((256, 256, 64), 4, 8)},
    "7.1": {"virtio-rng": ((8,), 0, 0)},
    "7.2": {"virtio-net": ((256, 256, 64), 4, 8), "virtio-blk": ((256,), 2, 57),
            "virtio-balloon": ((128,) * 3, 0, 16), "virtio-rng": ((8,), 2, 0)},
}


@pytest.mark.parametrize("machine", sorted(QUEUES))
def test_queues_vectors_config_len_on_72(machine: str) -> None:
    for device, want in QUEUES[machine].items():
        r = _realize("7.2", f"pc-i440fx-{machine}", device)
        assert (r.queue_sizes, r.vectors, r.config_len) == want, device


def test_balloon_vectors_from_10_0() -> None:
    """§11 (source): virtio-balloon-pci gets 2 MSI-X vectors on 10.0+ machine types."""
    assert _realize("10.2", "pc-i440fx-9.2", "virtio-balloon").vectors == 0
    assert _realize("10.2", "pc-i440fx-10.0", "virtio-balloon").vectors == 2


# real-qemu.md §3: blob sizes of reset-state devices (romfile default), QEMU 7.2
@pytest.mark.parametrize("machine,net,blk", [("pc-i440fx-7.2", 46143, 45584), ("pc-q35-7.2", 46143, 45584),
                                              ("pc-i440fx-2.6", 968, 404), ("pc-i440fx-2.3", 944, 380)])
def test_reset_blob_sizes(machine: str, net: int, blk: int) -> None:
    for device, size in (("virtio-net", net), ("virtio-blk", blk)):
        r = _realize("7.2", machine, device)
        assert len(save(r, reset_state(r))) == size, device


def test_subsections_by_machine_type_of_reset_devices() -> None:
    """§10.2 note and fixtures README: 2.4 none, 2.5/2.6 extra_state only, 2.7 64bit+virtqueues+extra_state."""
    from harness.wire.payload import decode_payload

    want = {"2.4": [], "2.6": ["virtio/extra_state"],
            "2.7": ["virtio/64bit_features", "virtio/virtqueues", "virtio/extra_state"]}
    for m, names in want.items():
        for device in DEVICES:
            r = _realize("7.2", f"pc-i440fx-{m}", device)
            v = decode_payload(save(r, reset_state(r)), "pci", device)
            assert [s.name for s in v.subsections] == names, (m, device)


def test_machine_types_a_release_has() -> None:
    names = {m.name for m in BASE.machine_types(V("7.2"), "pci")}
    assert {"pc-i440fx-2.0", "pc-q35-7.2", "pc-i440fx-7.2"} <= names and "pc-i440fx-8.0" not in names
    assert "pc-i440fx-2.5" not in {m.name for m in BASE.machine_types(V("10.1"), "pci")}
    assert len([v for v in ALL_VERSIONS if v <= V("7.2")]) == 27  # §10: 2.0 ... 7.2 is 27 machine types
