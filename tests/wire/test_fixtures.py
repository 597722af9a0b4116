"""Real QEMU 7.2 streams decode to their ground truth and encode back byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.decode import stream_summary
from harness.wire.payload import decode_payload
from harness.wire.stream import decode_stream, encode_stream
from harness.wire.virtio import payload_layout
from tests.conftest import SAMPLES, truth_of


def test_decodes_to_ground_truth(fixture_stream: Path) -> None:
    truth = truth_of(fixture_stream)
    summary = stream_summary(decode_stream(fixture_stream.read_bytes()))
    assert summary["machine"] == truth["machine"]
    by_section = {d["section"]: d for d in summary["devices"]}
    assert set(by_section) >= {t["section"] for t in truth["devices"]}
    for t in truth["devices"]:
        d = by_section[t["section"]]
        for key in ("device", "transport", "msix_vectors", "status", "queue_sel", "guest_features_lo"):
            if key in t:
                assert d[key] == t[key], (t["section"], key)
        if "pci_config_size" in t:
            assert d["pci_config_size"] == t["pci_config_size"]
        if "pci_command" in t:
            assert d["pci_command"] == t["pci_command"]
        assert len(d["queues"]) == t.get("num_queues", len(d["queues"]))
        for tq in t.get("queues", []):
            if tq["index"] >= len(d["queues"]):
                continue
            q = d["queues"][tq["index"]]
            for key in ("num", "desc", "last_avail_idx"):
                assert q[key] == tq[key], (t["section"], tq["index"], key)
        if "mac" in t:
            assert d["device_state"]["mac"] == t["mac"]
        if "inflight_requests" in t and t["device"] == "virtio-blk":
            # virtio-scsi's travel in the scsi-disk section: tests/models/test_scsi.py holds them to this truth
            got = [(r["queue"] or 0, r["head"], r["out_len"], r["in_len"], r["out_addr"], r["in_addr"])
                   for r in d["device_state"]["requests"]]
            want = [(r["queue"], r["head"], r["out_len"], r["in_len"], r["out_addr"], r["in_addr"])
                    for r in t["inflight_requests"]]
            assert sorted(got) == sorted(want)
        if "expect_subsections" in t:
            mine = [n for n in d["subsections"] if n.split("/")[0] in ("virtio", "virtio_pci", "virtio_mmio")]
            assert mine == t["expect_subsections"]
    stream = summary["stream"]
    assert stream["configuration_section"] == truth["stream_has_configuration_section"]
    assert stream["section_footers"] == truth["stream_has_section_footers"]


def test_whole_stream_round_trips(fixture_stream: Path) -> None:
    data = fixture_stream.read_bytes()
    assert encode_stream(decode_stream(data)) == data


def test_each_payload_round_trips_from_values_alone(fixture_stream: Path) -> None:
    data = fixture_stream.read_bytes()
    for dev in decode_stream(data).devices:
        payload = data[dev.offset : dev.offset + dev.size]
        # decode on its own, then build from the decoded tree: nothing but values goes in
        value = decode_payload(payload, dev.transport, dev.device)
        assert payload_layout(dev.transport, dev.device).build(value) == payload
        assert dev.encode() == payload


def test_payload_sizes_equal_the_json_description(fixture_stream: Path) -> None:
    s = decode_stream(fixture_stream.read_bytes())
    assert s.vmdesc is not None
    described = {(d["name"], d["instance_id"]): d for d in s.vmdesc["devices"]}
    for dev in s.devices:
        fields = described[(dev.section, dev.instance_id)]["fields"]
        assert [f["size"] for f in fields if f["type"] == "virtio"] == [dev.size]


def test_samples_in_the_repository_decode() -> None:
    """README's sample streams work without ../shared."""
    for path in sorted(SAMPLES.glob("*.bin")):
        assert decode_stream(path.read_bytes()).devices


@pytest.mark.parametrize("edit", ["status", "desc", "mac"])
def test_edited_tree_encodes_the_edit(edit: str) -> None:
    data = (SAMPLES / "pc-i440fx-7.2-virtio-net-driven.bin").read_bytes()
    s = decode_stream(data)
    net = next(d for d in s.devices if d.device == "virtio-net")
    if edit == "status":
        net.value.status = 0x0F
    elif edit == "desc":
        net.value.queues[1].desc = 0x222000
    else:
        net.value.device.mac = bytes.fromhex("525400abcdef")
    again = decode_stream(encode_stream(s))
    got = next(d for d in again.devices if d.device == "virtio-net").value
    assert (got.status, got.queues[1].desc, bytes(got.device.mac)) == (
        0x0F if edit == "status" else 7,
        0x222000 if edit == "desc" else 0x110000,
        bytes.fromhex("525400abcdef") if edit == "mac" else bytes.fromhex("525400123456"),
    )
