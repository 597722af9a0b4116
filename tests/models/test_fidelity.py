"""The 7.2 model against real QEMU 7.2 streams: it re-encodes every fixture's decoded state to the
fixture's bytes, realize gives the host features the fixture read from the device, and every
fixture loads (as QEMU 7.2 loaded them back)."""

from __future__ import annotations

from pathlib import Path

from harness.verdict import verdict
from harness.wire.stream import decode_stream
from models.model import ACCEPTED, guest_rings, load, save, state_from_wire
from models.releases import V
from tests.conftest import fixture_devices as _devices


def test_model_save_equals_qemu_bytes(fixture_stream: Path) -> None:
    for _s, p, payload, r, _t in _devices(fixture_stream):
        assert save(r, state_from_wire(r, p.value)) == payload, p.section


def test_realize_matches_what_the_device_showed(fixture_stream: Path) -> None:
    for _s, p, _payload, r, t in _devices(fixture_stream):
        if t is None:
            continue
        if "host_features_lo" in t:
            assert r.host_features & 0xFFFFFFFF == t["host_features_lo"], p.section
        if "msix_vectors" in t:
            assert r.vectors == t["msix_vectors"], p.section
        assert r.config_len == p.value.config_len
        ringsize = any(x.name == "virtio/ringsize" for x in p.value.subsections)
        if not ringsize:  # sizes untouched: realize's defaults are what the stream carries
            assert [q.num for q in p.value.queues] == list(r.queue_sizes[: p.value.num_queues]), p.section


def test_every_fixture_loads_back(fixture_stream: Path) -> None:
    for s, p, payload, r, _t in _devices(fixture_stream):
        src = state_from_wire(r, p.value)
        res = load(r, payload, guest_rings(s.memory, s.machine, src), p.section)
        assert (res.outcome, res.error) == (ACCEPTED, None), p.section
        assert res.state is not None and save(r, res.state) == payload  # R2: a fixed point


def test_verdict_with_an_inferred_destination_accepts_every_fixture(fixture_stream: Path) -> None:
    s = decode_stream(fixture_stream.read_bytes())
    v = verdict(s, V("7.2"), None)
    assert v.error is None and v.assumptions
    # a virtio-scsi stream's scsi-disk sections (its in-flight requests) are judged besides its devices
    assert len(v.devices) >= len(s.devices) and {d["outcome"] for d in v.devices} == {"accepted"}
