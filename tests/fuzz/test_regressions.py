"""Regressions: each input the fuzzer (or reading harness/wire while writing it) found to break the decoder's
contract, checked with the fuzzer's own checker (StreamError or success, in time, within the memory bounds)."""

from __future__ import annotations

import functools
import gc
import json
import struct
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import construct as c
import pytest

from harness import fuzz
from harness.errors import StreamError
from harness.fuzz import checker as fuzz_checker
from harness.fuzz import seeds as fuzz_seeds
from harness.wire.primitives import FlatArray, be16
from harness.wire.stream import decode_stream
from harness.wire.virtio import virtio_net_rss
from harness.wire.vmdesc import find_vmdesc
from tests.conftest import SAMPLES, SHARED_FIXTURES

SAMPLE = SAMPLES / "pc-i440fx-7.2-virtio-net-driven.bin"
NET = "0000:00:03.0/virtio-net"
HEADER = b"QEVM\x00\x00\x00\x03"


def keeps_contract(data: bytes) -> StreamError | None:
    """The fuzzer's verdict on one stream: None, or the StreamError the decoder raised; fails on a finding."""
    with fuzz.Checker() as checker:
        found = checker.check(fuzz.Mutant(data, "regression", "-", "-"))
    assert found is None, found.summary
    try:
        decode_stream(data)
    except StreamError as e:
        return e
    return None


def decodes_in_time(data: bytes) -> StreamError | None:
    """Success or StreamError within the fuzzer's time limit (untraced: tracemalloc slows these inputs 10-20x)."""
    start = time.perf_counter()
    try:
        decode_stream(data)
        error = None
    except StreamError as e:
        error = e
    assert time.perf_counter() - start < fuzz_checker.TIME_LIMIT + len(data) * fuzz_checker.TIME_PER_BYTE
    return error


@functools.cache
def slim_sample() -> bytes:
    return fuzz_seeds.slim(SAMPLE.read_bytes())  # the sample with fewer sections: cheaper under tracemalloc


def with_vmdesc(data: bytes, edit: Callable[[dict[str, Any]], Any]) -> bytes:
    at = find_vmdesc(data)
    assert at is not None
    doc = json.loads(data[at + 5 :])
    edit(doc)
    text = json.dumps(doc).encode()
    return data[: at + 1] + struct.pack(">I", len(text)) + text


def device(doc: dict[str, Any], name: str = NET) -> dict[str, Any]:
    found: dict[str, Any] = next(d for d in doc["devices"] if d["name"] == name)
    return found


def first_field(doc: dict[str, Any]) -> dict[str, Any]:
    field: dict[str, Any] = device(doc)["fields"][0]
    return field


# JSON descriptions the walk trusted: where the name says which, that exception escaped decode_stream; the others
# were read as QEMU never writes them (int("4"), a negative size, 1.5 elements) and failed somewhere later
VMDESC_EDITS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "size missing (KeyError)": lambda doc: first_field(doc).pop("size"),
    "size an object (TypeError)": lambda doc: first_field(doc).update(size={}),
    "size null (TypeError)": lambda doc: first_field(doc).update(size=None),
    "size a string": lambda doc: first_field(doc).update(size="4"),
    "size negative": lambda doc: first_field(doc).update(size=-1),
    "array_len a float": lambda doc: first_field(doc).update(array_len=1.5),
    "fields null (TypeError)": lambda doc: device(doc).update(fields=None),
    "a field not an object (AttributeError)": lambda doc: device(doc).update(fields=[1]),
    "subsection without vmsd_name (KeyError)": lambda doc: device(doc).update(subsections=[{"fields": []}]),
    "subsections an object": lambda doc: device(doc).update(subsections={}),
    "instance_id a list (TypeError)": lambda doc: device(doc).update(instance_id=[]),
    "instance_id a string": lambda doc: device(doc).update(instance_id="x"),
}


@pytest.mark.parametrize("what", VMDESC_EDITS)
def test_malformed_json_description_is_a_stream_error(what: str) -> None:
    data = with_vmdesc(slim_sample(), VMDESC_EDITS[what])
    e = keeps_contract(data)
    assert e is not None and e.path.startswith("vmdesc")
    at = find_vmdesc(data)
    assert at is not None and e.offset == at + 5


def test_the_deepest_description_is_walked() -> None:
    """Not a regression: why the recursive walk needs no depth limit. orjson refuses JSON nested past 1024 levels,
    so the deepest description it returns has about 500 nested subsections, well within Python's stack."""
    chain = '{"vmsd_name":"virtio/deep","version_id":1,"fields":[],"subsections":[' * 505 + "]}" * 505
    text = json.dumps({"page_size": 4096, "devices": [{"name": "x", "instance_id": 0, "fields": [],
                                                       "subsections": ["@"]}]}).replace('"@"', chain)
    data = HEADER + b"\x04\x00\x00\x00\x00\x01x\x00\x00\x00\x00\x00\x00\x00\x01" + bytes(64) + b"\x00\x06" + \
        struct.pack(">I", len(text)) + text.encode()
    assert keeps_contract(data) is not None


@pytest.mark.skipif(not (SHARED_FIXTURES / "f09-s390x-7.2-ccw-net-blk-reset.bin").exists(), reason="no s390x fixture")
@pytest.mark.parametrize("array_len", [2**31, 2**62])
def test_pointer_array_with_a_huge_length_is_bounded_by_the_stream(array_len: int) -> None:
    """s390_css.css is described by its first, NULL element; the walk sized each element from the stream, and
    looped `array_len` times even past the end of the stream (a hang)."""
    data = (SHARED_FIXTURES / "f09-s390x-7.2-ccw-net-blk-reset.bin").read_bytes()

    def grow(doc: dict[str, Any]) -> None:
        css = next(d for d in doc["devices"] if d.get("vmsd_name") == "s390_css")
        field = next(f for f in css["fields"] if f.get("name") == "css")
        field["array_len"] = array_len

    start = time.monotonic()
    e = keeps_contract(with_vmdesc(data, grow))
    assert e is not None and "s390_css" in e.message and time.monotonic() - start < 30


def _ram_stream(records: bytes, blocks: bytes = b"\x06pc.ram" + struct.pack(">Q", 1 << 20),
                total: int = 1 << 20) -> bytes:
    start = b"\x01" + struct.pack(">I", 0) + b"\x03ram" + struct.pack(">II", 0, 4)
    return HEADER + start + struct.pack(">Q", total | 4) + blocks + records + struct.pack(">Q", 0x10) + b"\x00"


def test_a_long_ram_block_list_is_linear() -> None:
    """RamBlockList summed every block's length after each block: quadratic (20,000 blocks, 180 KB: seconds; a
    whole stream of them: hours)."""
    blocks = (b"\x00" + bytes(8)) * 20_000 + b"\x06pc.ram" + struct.pack(">Q", 1 << 20)
    assert decodes_in_time(_ram_stream(b"", blocks)) is None
    assert keeps_contract(_ram_stream(b"", (b"\x00" + bytes(8)) * 2_000)) is not None  # ends inside the list


def test_many_short_zero_page_runs_are_linear() -> None:
    """Each zero-page record that might start a run copied the whole rest of the stream to measure the run: a
    stream of short runs was quadratic (64,000 of them, 1.1 MB: half a minute)."""
    pairs = b"".join(struct.pack(">Q", (2 * i << 12) | 0x22) + b"\x00" + struct.pack(">Q", (2 * i + 1 << 12) | 0x22)
                     + b"\x01" for i in range(64_000))
    records = struct.pack(">Q", 0x2) + b"\x06pc.ram\x00" + pairs
    assert decodes_in_time(_ram_stream(records)) is None
    assert keeps_contract(_ram_stream(records[: 18 * 2_000])) is not None  # cut inside a record


def test_a_bad_ram_record_is_located() -> None:
    """RAM records are read through the buffer, not read(): the error was placed at byte 0 of the stream."""
    good = struct.pack(">Q", 0x1000 | 0x02) + b"\x06pc.ram\x00"
    data = _ram_stream(good + struct.pack(">Q", 0x2000 | 0x40) + b"\x00")  # XBZRLE
    e = keeps_contract(data)
    assert e is not None and "XBZRLE" in e.message
    assert e.offset == data.index(good) + len(good) and e.path.startswith("ram")


def test_rss_layout_cache_does_not_grow_with_version_ids() -> None:
    """The rss layout was cached per version_id read from the stream: a layout kept per hostile version."""
    layouts = {id(virtio_net_rss(v)) for v in range(1000)}
    assert len(layouts) == 2
    assert virtio_net_rss(7) is virtio_net_rss(2) and virtio_net_rss(0) is virtio_net_rss(1)


def test_flat_array_formats_do_not_grow_with_the_count() -> None:
    """FlatArray built a struct format of one code per element ('HHHH...'): 2 MB for a 65535-entry rss table,
    and kept up to 64 of them."""
    layout = c.Struct("n" / be16, "table" / FlatArray(c.this.n, be16))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(65535 - 40, 65536):
            value = layout.parse(struct.pack(">H", n) + b"\x00\x07" * n)  # small ints: no object per element
            assert value.table[-1] == 7
        del value
        gc.collect()  # parsed values sit in reference cycles (construct contexts) until collected
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 1 << 20


def test_the_checker_sees_what_a_cache_keeps(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fuzzer's retained-memory check is what catches caches like the two above."""
    kept: list[bytes] = []

    def leaks(data: bytes, **kwargs: Any) -> Any:
        kept.append(bytes(2 << 20))
        raise StreamError("leaked", 8, "stream")

    monkeypatch.setattr(fuzz_checker, "decode_stream", leaks)
    with fuzz.Checker() as checker:
        found = checker.check(fuzz.Mutant(HEADER, "regression", "-", "-"))
    assert found is not None and found.kind == "memory" and "still held" in found.summary
