"""The matrix's wider draws (issue 16 item 4) reach what a real driver can make, and realize keeps QEMU's limits:
each search below must find its kind of state among the draws, and the model must round-trip it (R1)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, find, settings

from harness.errors import SchemaError
from harness.matrix import run_example
from models import features as F
from models.config import Config, NetBackend, realize
from models.registry import BASE
from models.releases import V, Version
from models.state import NO_VECTOR, DeviceState
from strategies.configs import configs
from strategies.driver import device_states

SEARCH = settings(max_examples=3000, database=None, suppress_health_check=list(HealthCheck), deadline=None)


def _machine(release: Version, name: str) -> object:
    return next(m for m in BASE.machine_types(release, "pci") if m.name == name)


def _net(release: str, machine: str, netdev: NetBackend, **props: object) -> Config:
    r = V(release)
    return Config(r, _machine(r, machine), "virtio-net", "pci", props={"romfile": "", **props},  # type: ignore[arg-type]
                  netdev=netdev)


def _found(config: Config, what: Callable[[DeviceState], bool]) -> DeviceState:
    state = find(device_states(realize(config)), what, settings=SEARCH)
    out = run_example(config, config, state)
    assert out.violations == [], out.violations
    return state


def test_realize_refuses_more_queue_pairs_than_fit() -> None:
    tap = NetBackend("tap", vnet_hdr=True)
    assert len(realize(_net("7.2", "pc-i440fx-7.2", NetBackend("tap", True, queues=511), mq=True)).queue_sizes) == 1023
    with pytest.raises(SchemaError, match=r"Invalid number of queue pairs \(= 512\), .* less than 511\."):
        realize(_net("7.2", "pc-i440fx-7.2", NetBackend("tap", True, queues=512), mq=True))
    with pytest.raises(SchemaError, match=r"Invalid number of queues \(= 32\), .* less than 31\."):
        realize(_net("2.0", "pc-i440fx-2.0", NetBackend("tap", True, queues=32)))
    assert len(realize(_net("2.0", "pc-i440fx-2.0", NetBackend("tap", True, queues=31))).queue_sizes) == 63
    assert tap.queues == 1


def test_msix_vectors_assigned_and_bars_mapped() -> None:
    config = _net("7.2", "pc-i440fx-7.2", NetBackend("tap", True, queues=4), mq=True)
    s = _found(config, lambda s: s.config_vector != NO_VECTOR and any(q.vector != NO_VECTOR for q in s.queues))
    assert s.pci is not None
    cap = next(p for p in range(0x40, 0x100) if s.pci.config[p] == 0x11)  # MSI-X
    assert s.pci.config[cap + 3] & 0x80  # enabled
    assert s.pci.msix_table[16 * s.config_vector + 12] & 1 == 0  # its entry unmasked
    assert int.from_bytes(s.pci.config[0x14:0x18], "little") & ~0xF  # BAR1 mapped


def test_modern_driver_resizes_a_ring() -> None:
    config = _net("10.0", "pc-q35-10.0", NetBackend())
    s = _found(config, lambda s: any(q.desc and q.num < n for q, n in zip(s.queues, s.num_default, strict=False)))
    assert F.has(s.guest_features, F.VERSION_1)


def test_packed_rings_carry_their_wrap_counters() -> None:
    config = _net("7.2", "pc-i440fx-7.2", NetBackend(), packed=True)
    s = _found(config, lambda s: F.has(s.guest_features, F.RING_PACKED) and any(row[0] for row in s.packed))
    for q, row in zip(s.queues, s.packed, strict=False):
        if q.desc:  # the device's avail and used positions, in the ring, with their wrap counters
            assert row[0] == row[2] == q.last_avail_idx < q.num and row[1] == row[3] in (0, 1)


def test_a_guest_without_mq_leaves_one_pair() -> None:
    config = _net("7.2", "pc-i440fx-7.2", NetBackend("tap", True, queues=32), mq=True)
    s = _found(config, lambda s: bool(s.status & 2) and not F.has(s.guest_features, F.NET_MQ))
    assert [q.num for q in s.queues[:4]] == [256, 256, 64, 0]
    s = _found(config, lambda s: F.has(s.guest_features, F.NET_MQ))
    assert len([q for q in s.queues if q.num]) == 65


def test_the_destination_backend_is_drawn_on_its_own() -> None:
    pair = find(configs(V("7.2"), V("10.0"), "pci", "virtio-net"),
                lambda c: c[0].netdev.kind == "tap" and c[1].netdev.kind == "tap" and c[0].netdev.uso
                and not c[1].netdev.vnet_hdr, settings=SEARCH)
    assert pair[0].netdev != pair[1].netdev
    big = find(configs(V("7.2"), V("10.0"), "pci", "virtio-net"), lambda c: c[0].netdev.queues >= 32, settings=SEARCH)
    assert big[0].props.get("mq")
    small = find(configs(V("2.0"), V("2.0"), "pci", "virtio-net"), lambda c: c[0].netdev.queues > 1, settings=SEARCH)
    assert 2 * small[0].netdev.queues + 1 <= 64
