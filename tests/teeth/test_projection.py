"""R1/R3/R4 compare every field of the state the stream carries (harness/projection.py): a loaded state that differs
from the saved one in any compared field is a violation naming it, one that differs only in a dropped field is not,
and a field of a subsection the source did not send is not compared (what the pair does not migrate)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from harness import projection as P
from harness.rules import Run, r1_round_trip, r34_migration
from models.config import Config, Realized, realize
from models.model import reset_state
from models.releases import MachineType, V
from models.state import ENDIAN_BIG, DeviceState, QueueState

PCI = realize(Config(V("7.2"), MachineType.parse("pc-q35-7.2"), "virtio-net", props={"packed": True}))
MMIO = realize(Config(V("7.2"), MachineType.parse("virt-7.2"), "virtio-rng", "mmio", props={"force-legacy": False}))
CCW = realize(Config(V("7.2"), MachineType.parse("s390-ccw-virtio-7.2"), "virtio-blk", "ccw"))


def _running(r: Realized) -> DeviceState:
    """A modern driver's state: VERSION_1, DRIVER_OK, queue 0 set up with a smaller ring (virtio/ringsize), the
    transport's modern registers programmed."""
    s = reset_state(r)
    q0 = replace(s.queues[0], num=s.queues[0].num // 2, desc=0x100000, avail=0x104000, used=0x108000,
                 last_avail_idx=3, avail_idx=3, used_idx=3)
    s = s.with_(status=0xF, guest_features=1 << 32, queues=(q0, *s.queues[1:]))
    if s.pci is not None:
        regs = ((q0.num, 0, 1, q0.desc, 0, q0.avail, 0, q0.used, 0),)
        s = s.with_(pci=replace(s.pci, dfselect=1, modern_guest_features=(0, 1), modern_queues=regs))
    if s.mmio is not None:
        s = s.with_(mmio=replace(s.mmio, guest_page_shift=12, modern_guest_features=(0, 1),
                                 modern_queues=((q0.num, 1, q0.desc, 0, q0.avail, 0, q0.used, 0),)))
    return s


def _run(r: Realized, s: DeviceState) -> Run:
    run = Run.of(r, r, s)
    assert run.result.state is not None and r1_round_trip(run) is None, run.result.error
    return run


def _queue0(s: DeviceState, **changes: Any) -> tuple[QueueState, ...]:
    return (replace(s.queues[0], **changes), *s.queues[1:])


def _of(s: DeviceState, part: str, **changes: Any) -> DeviceState:
    """s with its transport's state (pci, mmio, ccw) changed."""
    return s.with_(**{part: replace(getattr(s, part), **changes)})


# a change to the loaded state in each compared field, on a configuration whose stream carries it
COMPARED: list[tuple[str, Realized, Callable[[DeviceState], DeviceState]]] = [
    ("status", PCI, lambda s: s.with_(status=0x7)),
    ("isr", PCI, lambda s: s.with_(isr=1)),
    ("queue_sel", PCI, lambda s: s.with_(queue_sel=1)),
    ("guest_features", PCI, lambda s: s.with_(guest_features=0)),
    ("config", PCI, lambda s: s.with_(config=b"\xff" + s.config[1:])),
    ("queues", PCI, lambda s: s.with_(queues=_queue0(s, last_avail_idx=4))),
    ("queues", PCI, lambda s: s.with_(queues=_queue0(s, used=0x10c000))),
    ("num_default", PCI, lambda s: s.with_(num_default=(1, *s.num_default[1:]))),
    ("config_vector", PCI, lambda s: s.with_(config_vector=5)),
    ("device_endian", PCI, lambda s: s.with_(device_endian=ENDIAN_BIG)),
    ("pci", PCI, lambda s: _of(s, "pci", msix_table=b"\x01" + bytes(31))),
    ("pci", PCI, lambda s: _of(s, "pci", irq_state=(1, 0, 0, 0))),
    ("pci", PCI, lambda s: _of(s, "pci", modern_queues=())),
    ("pci", PCI, lambda s: _of(s, "pci", dfselect=0)),
    ("packed", PCI, lambda s: s.with_(packed=((1, 1, 0, 0, 0),))),
    ("device", PCI, lambda s: s.with_(device=replace(s.device, promisc=0))),
    ("broken", PCI, lambda s: s.with_(broken=True)),
    ("mmio", MMIO, lambda s: _of(s, "mmio", guest_page_shift=0)),
    ("mmio", MMIO, lambda s: _of(s, "mmio", modern_queues=())),
    ("ccw", CCW, lambda s: _of(s, "ccw", config_vector=1)),
]


@pytest.mark.parametrize(("name", "r", "change"), COMPARED, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(COMPARED)])
def test_a_compared_field_that_differs_is_a_violation(name: str, r: Realized,
                                                      change: Callable[[DeviceState], DeviceState]) -> None:
    run = _run(r, _running(r))
    loaded = run.result.state
    assert loaded is not None
    run.result = replace(run.result, state=change(loaded))
    v = r1_round_trip(run)
    assert v is not None and name in v.details, (name, v)
    assert r34_migration(run, "R3") is not None


def test_a_dropped_field_that_differs_is_not() -> None:
    run = _run(PCI, _running(PCI))
    loaded = run.result.state
    assert loaded is not None
    assert set(P.DROPPED) >= {"queues[].avail_idx", "guest_features_lo_field"} and all(P.DROPPED.values())
    run.result = replace(run.result, state=loaded.with_(queues=_queue0(loaded, avail_idx=9, used_idx=9),
                                                        guest_features_lo_field=1))
    assert r1_round_trip(run) is None


def test_what_the_source_does_not_send_is_not_compared() -> None:
    """Without a resized queue virtio/ringsize is not sent: num_default is each side's own; without migrate-extra
    (pc-q35-2.4's compat) the modern registers stay behind."""
    r = realize(Config(V("7.2"), MachineType.parse("pc-q35-2.4"), "virtio-net"))
    s = _running(r)
    s = s.with_(queues=_queue0(s, num=s.num_default[0]))
    run = _run(r, s)
    assert not {"virtio/ringsize", "virtio/extra_state", "virtio_pci/modern_state"} & P.sent_subsections(run.decoded)
    loaded = run.result.state
    assert loaded is not None and loaded.pci is not None
    run.result = replace(run.result, state=loaded.with_(num_default=(1, 2, 3), pci=replace(loaded.pci, dfselect=7)))
    assert r1_round_trip(run) is None
