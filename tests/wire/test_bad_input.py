"""Bad input gets a StreamError with a byte offset and a field path, never another exception."""

from __future__ import annotations

import random
import re
import struct
from pathlib import Path

import pytest

from harness.errors import StreamError
from harness.wire.payload import decode_payload
from harness.wire.stream import decode_stream, encode_stream
from harness.wire.virtio import payload_layout
from harness.wire.vmdesc import find_vmdesc
from tests.conftest import SAMPLES, SHARED_FIXTURES

NET = SAMPLES / "pc-i440fx-7.2-virtio-net-driven.bin"
BLK = SAMPLES / "f07-i440fx-7.2-blk-inflight-werror.bin"


def _payloads(path: Path) -> list[tuple[bytes, str, str, int]]:
    data = path.read_bytes()
    return [(data[d.offset : d.offset + d.size], d.transport, d.device, d.offset)
            for d in decode_stream(data).devices]


SMALL = [SHARED_FIXTURES / f"{name}.bin" for name in (
    "f03-i440fx-2.3-net-blk1", "f04-i440fx-2.6-rng-balloon", "f08-virt-7.2-mmio-legacy-net-blk")]
SMALL = [p for p in SMALL if p.exists()]


@pytest.mark.parametrize("path", SMALL, ids=lambda p: p.stem)
def test_every_payload_truncation_is_a_clean_error(path: Path) -> None:
    """Every cut point of small payloads, so every field boundary: a clean error, or (where a payload
    may end, before an optional subsection) a shorter payload that encodes back to the cut bytes."""
    for payload, transport, device, offset in _payloads(path):
        ends = 0
        for cut in range(len(payload)):
            try:
                value = decode_payload(payload[:cut], transport, device, offset)
            except StreamError as e:
                assert e.offset is not None and offset <= e.offset <= offset + cut
                assert e.path
                continue
            assert payload_layout(transport, device).build(value) == payload[:cut]
            ends += 1
        # only right before a subsection (core, device or transport: all names start with "virtio")
        assert ends == len(re.findall(rb"\x05[\x08-\x40]virtio", payload))


def test_truncation_inside_big_payloads_names_the_field() -> None:
    for payload, transport, device, offset in _payloads(NET) + _payloads(BLK):
        cuts = sorted(set(range(0, 400)) | set(random.Random(1).sample(range(len(payload)), 300)))
        for cut in cuts:
            with pytest.raises(StreamError) as e:
                decode_payload(payload[:cut], transport, device, offset)
            assert e.value.offset is not None and e.value.path


def test_truncated_queue_field_path_and_offset() -> None:
    payload, transport, device, offset = _payloads(NET)[0]
    v = decode_payload(payload, transport, device)
    # queue 2's desc starts after the transport part, 12 core bytes, config, num_queues, 2 queues (16 B)
    transport_len = 4 + 256 + 16 + 4 * 16 + 1 + 2
    start = transport_len + 1 + 1 + 2 + 4 + 4 + v.config_len + 4 + 2 * 16 + 4
    with pytest.raises(StreamError) as e:
        decode_payload(payload[: start + 3], transport, device, offset)
    assert e.value.path == "virtio > queues[2].desc"
    assert e.value.offset == offset + start


def test_stream_truncated_anywhere_is_a_clean_error() -> None:
    data = NET.read_bytes()
    rng = random.Random(2)
    for cut in sorted(set(rng.sample(range(len(data)), 200)) | set(range(0, 64))):
        with pytest.raises(StreamError):
            decode_stream(data[:cut])


def test_corrupted_counts_and_lengths_do_not_allocate_or_crash() -> None:
    payload, transport, device, offset = _payloads(NET)[0]
    v = decode_payload(payload, transport, device)
    cl_at = 4 + 256 + 16 + 64 + 1 + 2 + 8  # config_len
    nq_at = cl_at + 4 + v.config_len
    for at in (cl_at, nq_at):
        for value in (0, 1, 0x7FFFFFFF, 0xFFFFFFFF, len(payload) - at + 1):
            bad = payload[:at] + struct.pack(">I", value) + payload[at + 4 :]
            with pytest.raises(StreamError):
                decode_payload(bad, transport, device, offset)


def test_not_a_stream_and_old_version() -> None:
    with pytest.raises(StreamError, match="not a QEMU migration stream"):
        decode_stream(b"\x7fELF" + bytes(100))
    with pytest.raises(StreamError, match="v2 format is obsolete"):
        decode_stream(b"QEVM\x00\x00\x00\x02\x00")


def test_without_description_the_walk_stops_at_the_first_unknown_section() -> None:
    data = NET.read_bytes()
    cut = find_vmdesc(data)
    assert cut is not None
    with pytest.raises(StreamError, match="'timer' has no JSON description") as e:
        decode_stream(data[:cut])
    assert e.value.offset is not None and e.value.offset < cut


def test_walk_is_not_fooled_by_an_idstr_in_guest_ram() -> None:
    """Plant a whole virtio-net FULL section header inside a RAM page: the walk, driven by the JSON
    description and the RAM records, never looks for idstr bytes."""
    data = NET.read_bytes()
    s = decode_stream(data)
    idstr = b"0000:00:03.0/virtio-net"
    planted = b"\x04\x00\x00\x00\x2a" + bytes([len(idstr)]) + idstr + b"\x00\x00\x00\x00\x00\x00\x00\x0b"
    ram = [r for r in s.records if getattr(r, "idstr", "") == "ram" and isinstance(r.body, tuple)]
    done = False
    for sec in ram:
        for i, rec in enumerate(sec.body[1]):
            if isinstance(rec, tuple) and isinstance(rec[3], bytes):
                page = rec[3]
                sec.body[1][i] = (rec[0], rec[1], rec[2], planted + page[len(planted) :])
                done = True
                break
        if done:
            break
    assert done
    fooled = encode_stream(s)
    assert fooled != data and fooled.count(idstr) == data.count(idstr) + 1
    again = decode_stream(fooled)
    assert [(d.section, d.offset, d.size) for d in again.devices] == [(d.section, d.offset, d.size) for d in s.devices]


def test_unknown_subsection_from_a_newer_qemu_is_named() -> None:
    payload, transport, device, offset = _payloads(NET)[0]
    bad = payload.replace(b"\x05\x0evirtio/started", b"\x05\x0evirtio/stardom")
    assert bad != payload
    with pytest.raises(StreamError, match="unknown subsection 'virtio/stardom'"):
        decode_payload(bad, transport, device, offset)
