"""Fresh streams from a real QEMU 7.2 (issue 2): every machine type of the issue, four devices each,
driven into known states; the decoder's values equal what was driven, every payload size equals
the stream's JSON description, and the ring indices read from the stream's RAM equal the driven ones.

pc-i440fx-2.2 writes no JSON description, so its walk stops at the first section whose layout this
tool does not know; the same machine type with `suppress-vmdesc=off` has one and decodes fully.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from fresh_plan import MACHINES, fresh_stream, mac_of
from qemu_streams import virtio_blob

from harness.decode import stream_summary
from harness.errors import StreamError
from harness.wire.stream import Stream, decode_stream, encode_stream

pytestmark = pytest.mark.qemu

DECODED = ["2.2-vmdesc", "2.3", "2.6", "4.2", "5.2-smp4", "7.2", "q35-7.2"]
# section version of each device's vmsd (QEMU 7.2: virtio-net 11, virtio-blk 2, balloon 1, rng 1)
VERSION_IDS = {"virtio-net": 11, "virtio-blk": 2, "virtio-balloon": 1, "virtio-rng": 1}
NO_VECTOR = 0xFFFF
DRIVER_OK = 4
MRG_RXBUF, CTRL_GUEST_OFFLOADS, PAGE_POISON = 1 << 15, 1 << 2, 1 << 4
RAM_SAVE_FLAG_EOS = 0x10


def legacy_rings(desc: int, num: int) -> tuple[int, int]:
    """(avail, used) of a legacy split ring: avail after the descriptors, used on the next 4 KiB."""
    avail = desc + 16 * num
    return avail, (avail + 4 + 2 * num + 4095) & ~4095


def version_of(key: str) -> tuple[int, int]:
    major, minor = MACHINES[key].machine.split(",")[0].rsplit("-", 1)[1].split(".")
    return int(major), int(minor)


def expected_core_subsections(key: str, status: int) -> list[str]:
    """Reference §3 / fixture README: none up to 2.4, extra_state alone for a legacy-only device
    (2.5, 2.6), then 64-bit features, virtqueues and modern state (VERSION_1 offered from 2.7), and
    `virtio/started` from 4.1 once DRIVER_OK is set."""
    version = version_of(key)
    if version <= (2, 4):
        return []
    if version <= (2, 6):
        return ["virtio/extra_state"]
    subs = ["virtio/64bit_features", "virtio/virtqueues", "virtio/extra_state", "virtio_pci/modern_state"]
    return subs + (["virtio/started"] if status & DRIVER_OK and version >= (4, 1) else [])


def payload_size_in_vmdesc(s: Stream, section: str) -> int:
    assert s.vmdesc is not None
    [desc] = [d for d in s.vmdesc["devices"] if d["name"] == section and d["instance_id"] == 0]
    [field] = [f for f in desc["fields"] if f["type"] == "virtio"]
    return int(field["size"]) * int(field.get("array_len", 1))


def check_device(key: str, s: Stream, data: bytes, got: dict[str, Any], truth: dict[str, Any]) -> None:
    """Every decoded value of one device against what was driven (or, never driven, its reset value)."""
    section, kind = truth["section"], truth["device"]
    where = f"{key} {section}"
    assert (got["section"], got["device"], got["transport"]) == (section, kind, "pci"), where
    assert (got["instance_id"], got["version_id"]) == (0, VERSION_IDS[kind]), where

    # the payload: where the description says, and as long as it says
    assert got["size"] == payload_size_in_vmdesc(s, section), where
    assert (got["offset"], got["size"]) == virtio_blob(data, section), where

    # driven through the legacy registers
    assert got["status"] == truth["status"], where
    assert got["queue_sel"] == truth["queue_sel"], where
    assert got["guest_features_lo"] == truth["guest_features_lo"], where
    assert got["guest_features"] == truth["guest_features_lo"], where  # the legacy register has no high word
    assert truth["guest_features_lo"] & ~truth["host_features_lo"] == 0, where
    assert got["msix_vectors"] == truth["msix_vectors"], where
    assert got["pci_command"] == truth["pci_command"], where
    assert got["pci_config_size"] == 256, where  # on the root bus: conventional PCI
    p = next(d for d in s.devices if d.section == section)
    assert struct.unpack_from("<I", bytes(p.value.transport.pci.config), 0x10)[0] == truth["bar0"], where
    vector = NO_VECTOR if truth["msix_vectors"] else None  # no vector was ever written
    assert got["config_vector"] == vector, where

    assert len(got["queues"]) == truth["num_queues"], where
    for q, t in zip(got["queues"], truth["queues"], strict=True):
        assert (q["index"], q["num"], q["desc"], q["last_avail_idx"]) == (
            t["index"], t["num"], t["desc"], t["last_avail_idx"]), f"{where} queue {t['index']}"
        assert q["vector"] == vector, f"{where} queue {t['index']}"
        if q["avail"] is not None:  # virtio/virtqueues: the addresses the PFN write set
            rings = legacy_rings(t["desc"], t["num"]) if t["desc"] else (0, 0)
            assert (q["avail"], q["used"]) == rings, f"{where} queue {t['index']}"

    # subsections and flags follow from the machine type and the status written
    assert got["subsections"] == expected_core_subsections(key, truth["status"]), where
    started = version_of(key) >= (4, 1) and truth["status"] & DRIVER_OK
    assert got["started"] is (True if started else None), where
    assert got["broken"] is False and got["device_endian"] is None, where
    # only virtio-blk used buffers; with MSI-X not enabled its interrupt sets ISR bit 0, never read back
    assert got["isr"] == (1 if kind == "virtio-blk" else 0), where

    ds, gf = got["device_state"], truth["guest_features_lo"]
    if kind == "virtio-net":
        mac = truth["mac"]
        assert mac == mac_of(MACHINES[key].k), where  # the mac= of the command line, read back
        assert ds["mac"] == mac and got["config"].startswith(mac.replace(":", "")), where
        assert ds["mergeable_rx_bufs"] == int(bool(gf & MRG_RXBUF)), where
        assert (ds["curr_guest_offloads"] is not None) == bool(gf & CTRL_GUEST_OFFLOADS), where
        # never driven: realize/reset values of a single-queue device on a hub port
        assert (ds["status"], ds["promisc"], ds["allmulti"], ds["mac_table_in_use"], ds["has_vnet_hdr"]) == (
            1, 1, 0, 0, 0), where
        assert (ds["max_queue_pairs"], ds["curr_queue_pairs"]) == (None, None), where
    elif kind == "virtio-blk":
        assert ds["requests"] == [], where  # every request made was completed
    elif kind == "virtio-balloon":
        assert (ds["num_pages"], ds["actual"]) == (0, 0), where
        assert ds["subsections"] == (["virtio-balloon-device/page-poison"] if gf & PAGE_POISON else []), where
    else:
        assert ds == {}, where


@pytest.mark.parametrize("key", DECODED)
def test_fresh_stream_decodes_to_what_was_driven(qemu_binary: str, key: str) -> None:
    data, truth = fresh_stream(key, qemu_binary)
    s = decode_stream(data)
    summary = stream_summary(s)

    old = version_of(key) <= (2, 3)  # hw_compat_2_3: no configuration section, no section footers
    assert summary["stream"] == {
        "version": 3, "configuration_section": not old, "section_footers": not old, "json_description": True,
        "page_size": 4096, "not_understood": []}
    if not old:
        assert (summary["machine"], summary["machine_source"]) == (truth["machine"], "configuration")
    else:
        # no configuration section: inferred. A 2.2 stream with a description looks like a 2.3 one
        assert summary["machine_source"] == "inferred"
        assert summary["machine"] in ({"pc-i440fx-2.3"} if key == "2.3" else {"pc-i440fx-2.2", "pc-i440fx-2.3"})

    assert [d["section"] for d in summary["devices"]] == [t["section"] for t in truth["devices"]]
    for got, want in zip(summary["devices"], truth["devices"], strict=True):
        check_device(key, s, data, got, want)
    assert encode_stream(s) == data


@pytest.mark.parametrize("key", DECODED)
def test_ring_indices_in_the_streams_ram_equal_the_driven_ones(qemu_binary: str, key: str) -> None:
    data, truth = fresh_stream(key, qemu_binary)
    s = decode_stream(data)
    assert s.memory is not None
    configured = 0
    for dev in truth["devices"]:
        for q in dev["queues"]:
            if not q["desc"]:
                continue
            configured += 1
            avail, used = legacy_rings(q["desc"], q["num"])
            read = (s.memory.read_u16_phys(s.machine, avail + 2), s.memory.read_u16_phys(s.machine, used + 2))
            assert read == (q["avail_idx"], q["used_idx"]), f"{dev['section']} queue {q['index']}"
    assert configured >= 7
    blk = next(d for d in truth["devices"] if d["device"] == "virtio-blk")
    assert sum(q.get("used_idx", 0) for q in blk["queues"]) > 0  # not only zeros


def test_2_2_stream_without_description_stops_at_its_first_unknown_section(qemu_binary: str) -> None:
    data, _ = fresh_stream("2.2", qemu_binary)
    with_desc, _ = fresh_stream("2.2-vmdesc", qemu_binary)
    s_desc = decode_stream(with_desc)
    assert s_desc.vmdesc is not None
    # the first non-iterable section of this machine type, by the description of the same machine type
    first = s_desc.vmdesc["devices"][0]
    assert (first["name"], first["instance_id"]) == ("timer", 0)

    # where it is in the 2.2 stream: FULL (0x04), be32 section id, idstr, instance 0, version
    header = b"\x05timer" + struct.pack(">I", 0)
    at = data.index(header) - 5
    assert data[at] == 0x04 and data.count(header) == 1
    # right after the END section of RAM and its end-of-section record: nothing was skipped
    assert data[at - 13] == 0x03 and struct.unpack_from(">Q", data, at - 8)[0] == RAM_SAVE_FLAG_EOS

    with pytest.raises(StreamError) as err:
        decode_stream(data)
    e = err.value
    assert (e.offset, e.path) == (at, "timer")
    assert e.message.startswith("section 'timer' has no JSON description in this stream (machine type 2.2 or "
                                "older, or suppress-vmdesc) and its layout is not known to this tool")
    assert str(e).endswith(f"(at byte {at}, in timer)")


def test_suppress_vmdesc_off_gives_the_same_2_2_devices_with_a_description(qemu_binary: str) -> None:
    """QEMU 7.2 accepts `-machine pc-i440fx-2.2,suppress-vmdesc=off` (the fixture above was made with
    it): the stream gains the description and nothing else changes in the virtio payloads."""
    data, truth = fresh_stream("2.2", qemu_binary)
    with_desc, truth_desc = fresh_stream("2.2-vmdesc", qemu_binary)
    assert "pc-i440fx-2.2,suppress-vmdesc=off,accel=tcg" in truth_desc["qemu_cmdline"]
    assert data[-1:] != b"}" and with_desc.endswith(b"}")
    s = decode_stream(with_desc)
    assert len(s.devices) == 4
    for p in s.devices:
        payload = with_desc[p.offset : p.offset + p.size]
        header = bytes([len(p.section)]) + p.section.encode() + struct.pack(">II", 0, p.version_id)
        start = data.index(header) + len(header)
        assert data[start : start + p.size] == payload, p.section
        assert data[start + p.size] in (0x04, 0x00), p.section  # the next section (no footers) or EOF
    assert truth["devices"] == truth_desc["devices"]  # driven alike, read back alike
