"""The core subsections' declared fields (models/core.py) are the bodies harness/wire/virtio.py lays out, field for
field, and the model writes and reads them from the declarations alone."""

from __future__ import annotations

import construct as c

from harness.diff import fields_of
from harness.wire.payload import decode_payload
from harness.wire.virtio import TRANSPORTS, core_subsections
from models import core
from models.config import Config, realize
from models.model import reset_state, save, state_from_wire
from models.releases import MachineType, V


def test_declared_fields_are_the_layouts() -> None:
    declared = [s for s in core.CORE_SUBSECTIONS if s.fields]
    # every core subsection's body but virtio/extra_state's, which is the transport's (the test below)
    assert {s.name for s in declared} == {s.name for s in core.CORE_SUBSECTIONS} - {"virtio/extra_state"}
    for transport in TRANSPORTS:
        layout = core_subsections(transport)
        for sub in declared:
            mine = c.Struct(*(f.name / f.wire_type() for f in sub.fields))
            assert fields_of(mine) == fields_of(layout.body(sub.name, 1)), (transport, sub.name)


def test_transport_declarations_are_the_layouts() -> None:
    """virtio/extra_state's subsections (models/core.py's TransportSubsection fields) are the bodies the decoder lays
    out inside it, nested ones included, field for field (their list of nested subsections apart)."""
    from harness.diff.layout import _transport_bodies

    for transport in ("pci", "mmio"):
        bodies = _transport_bodies(transport)
        subs = [s for s in core.TRANSPORT_SUBSECTIONS if s.transport == transport]
        assert subs and all(s.fields for s in subs) and {s.name for s in subs} == set(bodies)
        for sub in subs:
            mine = c.Struct(*(f.name / f.wire_type() for f in sub.fields))
            assert list(fields_of(mine)) == [x for x in fields_of(bodies[sub.name]) if x[0] != "subsections"], \
                sub.name


def test_declared_fields_round_trip() -> None:
    r = realize(Config(V("7.2"), MachineType.parse("pc-q35-7.2"), "virtio-blk"))
    for changes in ({"broken": True, "status": 0x4F}, {"started": True, "status": 0xF},
                    {"disabled": True, "status": 0xB}):
        s = reset_state(r).with_(**changes)
        data = save(r, s)
        v = decode_payload(data, "pci", "virtio-blk")
        name = next(k for k in changes if k != "status")
        assert [x.name for x in v.subsections if x.name == f"virtio/{name}"] == [f"virtio/{name}"]
        assert getattr(state_from_wire(r, v), name) is True


def test_device_declarations_are_the_layouts() -> None:
    """A device subsection's declared fields (models/devices/) are the body the decoder lays out for it."""
    from harness.diff.layout import _device_list
    from models.registry import BASE

    checked = 0
    for decl in BASE.devices:
        listed = _device_list(decl.name, BASE)
        for sub in (s for s in getattr(decl.code, "SUBSECTIONS", ()) if s.fields):
            assert listed is not None
            mine = c.Struct(*(f.name / f.wire_type() for f in sub.fields))
            assert list(fields_of(mine)) == list(fields_of(listed.body(sub.name, 1))), sub.name
            checked += 1
    assert checked == 3  # the balloon's; virtio-net-device/rss keeps its versioned body in harness/wire/virtio.py
