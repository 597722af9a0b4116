"""A structure-aware fuzzer for the stream decoder (issue 5, hostile streams).

The decoder's contract, checked for every input: `decode_stream(bytes)` and `decode_payload(bytes, transport,
device)` either succeed or raise StreamError whose offset is an int within the input and whose path is not empty;
nothing else, no hang, no allocation beyond a bounded multiple of the input, and no memory kept once it returns.

Inputs are mutations of the seed streams (the package's samples, or `--seeds DIR`). Field positions come from
the decoded structure: the stream is decoded once and every construct parse is recorded with its stream positions
(`field_map`), so a mutation can flip, insert, delete or duplicate bytes or whole fields, set lengths and counts to
0, max or just past the bytes that remain, rewrite the JSON description the walk trusts, or splice sections between
streams. Input `i` of a run depends only on the seed and `i`, so any input can be made again.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import os
import random
import re
import signal
import struct
import sys
import tempfile
import threading
import time
import traceback
import tracemalloc
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from hashlib import sha1
from pathlib import Path
from typing import Any

import construct as c
import orjson
from construct import Container, ListContainer

from harness import interrupt, samples
from harness.decode import format_text, stream_summary
from harness.errors import StreamError
from harness.wire import stream as wire_stream
from harness.wire.primitives import FlatArray, NonZeroList, Peeked, Subsections, field_path
from harness.wire.ram import RamBlockList, RamPages, ZeroRun
from harness.wire.stream import decode_payload, decode_stream  # the targets (tests replace them to plant bugs)
from harness.wire.virtio import DEVICES, TRANSPORTS, compiled_payload_layout, payload_layout

ROOT = Path(__file__).resolve().parent.parent  # the folder that holds the harness package (findings name files by it)

# Time allowed for one decode (untraced): a base, and 10 us a byte. The slowest linear decodes measured take 8 us a
# byte: lists of small construct records (RAM block entries, QEMU_VM_COMMAND records), parsed twice, the second time
# to locate an error. A fixture takes 2-6 ms; what is quadratic or unbounded blows far past this.
TIME_LIMIT = 2.0
TIME_PER_BYTE = 10e-6
# tracemalloc makes allocation-heavy code 10-20x slower: the traced run (for the peak) has a limit of its own
TRACED_SLOWDOWN = 20
# Peak traced memory allowed for one decode: MEMORY_FACTOR x input + MEMORY_SLACK. The decoder makes a Python object
# for every field it reads, so its densest inputs cost a constant factor, measured: the real streams 3-6x, RAM
# records of 9 bytes 14x, repeated subsections 19x, JSON description text up to 37x (`[{},{},...]`: a dict per
# 3 bytes), RAM block entries and QEMU_VM_COMMAND records (a construct Container per 5-9 bytes) 45-51x. The slack
# covers fixed costs (compiled layouts, 1024-entry arrays whatever the input). What a length or count field drives
# instead of the bytes that are there grows with the field (up to 4 GiB from 4 bytes), and lands far above the line.
MEMORY_FACTOR = 64
MEMORY_SLACK = 4 << 20
# Memory a decode may leave allocated once it returned (caches filled for the first time, small): more is a cache
# that hostile input grows, which a long run pays again and again
RETAINED_LIMIT = 1 << 20

MUTATIONS = ("flip", "insert", "delete", "duplicate", "length", "vmdesc", "truncate", "splice", "payload", "stack",
             "random", "header")

# integer fields that size or count what follows them (their last path element)
COUNT_NAMES = frozenset({
    "len", "config_len", "num_queues", "mac_table_in_use", "indirections_len", "caps_count", "count", "total",
    "used_length", "curr_queue_pairs", "max_queue_pairs", "in_num", "out_num", "version_id", "length", "more",
    "name_length", "msix_vectors",
})


# --- the field map ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One field of a seed, where it is in the input and what it is."""

    path: str
    offset: int
    size: int
    kind: str  # "int", "bytes", or "group" (a struct, array, subsection or section: several fields)
    value: int = 0
    limit: int = 0  # end of what the field is read from (its payload, or the stream)
    count: bool = False  # an integer that sizes or counts what follows


@dataclass(frozen=True)
class PayloadRef:
    """A virtio payload inside a seed stream."""

    section: str
    instance_id: int
    offset: int
    size: int
    transport: str
    device: str


@dataclass
class View:
    """Bytes with their field map: a whole seed stream, or one payload of it (offsets from the payload)."""

    data: bytes
    fields: list[Field]
    elem_sizes: tuple[int, ...]
    ints: list[Field] = field(default_factory=list)
    counts: list[Field] = field(default_factory=list)
    groups: list[Field] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ints = [f for f in self.fields if f.kind == "int"]
        self.counts = [f for f in self.ints if f.count]
        self.groups = [f for f in self.fields if f.kind == "group"]


@dataclass
class Seed:
    name: str
    view: View
    payloads: list[tuple[PayloadRef, View]]
    vmdesc_at: int | None

    @property
    def data(self) -> bytes:
        return self.view.data


Record = tuple[str, Any, int, int, Any, Any]  # path, construct, start, end, value, top-level construct


@contextlib.contextmanager
def _recording() -> Iterator[list[Record]]:
    """Record every construct parse as (path, construct, start, end, value, top-level construct).

    construct keeps no stream positions, so while a seed's map is made (never while fuzzing) the one method every
    parse goes through is wrapped."""
    records: list[Record] = []
    stack: list[Any] = []
    original = c.Construct._parsereport

    def parsereport(self: Any, stream: Any, context: Any, path: str) -> Any:
        start = stream.tell()
        stack.append(self)
        try:
            obj = original(self, stream, context, path)
        finally:
            stack.pop()
        name = f"{path} -> {self.name}" if isinstance(self, c.Renamed) else path
        records.append((name, self, start, stream.tell(), obj, stack[0] if stack else self))
        return obj

    c.Construct._parsereport = parsereport
    try:
        yield records
    finally:
        c.Construct._parsereport = original


def _fields_of(records: Sequence[Record], lookup: dict[tuple[str, int], Record], data: bytes, base: int, prefix: str,
               limit: int) -> tuple[list[Field], set[int]]:
    """Fields from recorded parses (offsets + `base`), and the element sizes of the arrays among them.
    `lookup` finds any record of the same parse by its construct path and start."""
    out: list[Field] = []
    elems: set[int] = set()
    for path, con, start, end, obj, _top in records:
        if end <= start:
            continue
        name = field_path(path, prefix) or prefix
        leaf = re.split(r"[.>\[ ]", name)[-1] if not name.endswith("]") else ""
        inner = con.subcon if isinstance(con, c.Renamed) else con
        if isinstance(inner, c.FormatField):
            value = obj if isinstance(obj, int) else 0
            out.append(Field(name, base + start, end - start, "int", value, limit, leaf in COUNT_NAMES))
        elif isinstance(inner, c.Prefixed):
            width = inner.lengthfield.sizeof()
            value = int.from_bytes(data[start : start + width], "big")
            out.append(Field(f"{name}.length", base + start, width, "int", value, limit, True))
            out.append(Field(name, base + start, end - start, "bytes", 0, limit))
        elif isinstance(inner, (c.Bytes, Peeked, c.StringEncoded, type(c.GreedyBytes))):
            out.append(Field(name, base + start, end - start, "bytes", 0, limit))
        else:
            out.append(Field(name, base + start, end - start, "group", 0, limit))
        if isinstance(inner, FlatArray):
            elems.add(inner.itemsize)
        elif path.endswith("[0]"):
            elems.add(end - start)
        if isinstance(inner, NonZeroList):  # the `more` byte before each request and the 0 that ends them
            i, at = 0, start
            while (elem := lookup.get((f"{path}[{i}]", at + 1))) is not None:
                out.append(Field(f"{name}[{i}].more", base + at, 1, "int", data[at], limit, True))
                out.append(Field(f"{name}[{i}] with its marker", base + at, elem[3] - at, "group", 0, limit))
                i, at = i + 1, elem[3]
            out.append(Field(f"{name}.end", base + end - 1, 1, "int", 0, limit, True))
        if path.endswith(" -> version_id"):  # a subsection: 0x05, name length, name, version_id, body
            sub_path = path.rsplit(" -> ", 1)[0]
            raw = sub_path.rsplit(" -> ", 1)[-1].encode("latin-1")
            at = start - len(raw) - 2
            if at >= 0 and data[at] == 0x05 and data[at + 1] == len(raw) and data[at + 2 : start] == raw:
                body = lookup.get((sub_path, end))
                stop = body[3] if body is not None else end
                sname = field_path(sub_path, prefix)
                out.append(Field(f"{sname}.marker", base + at, 1, "int", 0x05, limit))
                out.append(Field(f"{sname}.name_length", base + at + 1, 1, "int", len(raw), limit, True))
                out.append(Field(f"{sname}.name", base + at + 2, len(raw), "bytes", 0, limit))
                out.append(Field(f"{sname} (whole subsection)", base + at, stop - at, "group", 0, limit))
    return out, elems


def _lookup(records: Sequence[Record]) -> dict[tuple[str, int], Record]:
    return {(r[0], r[2]): r for r in records}


_TOP_NAMES = {
    id(wire_stream.FileHeader): "header", id(wire_stream.SectionHeaderFull): "header",
    id(wire_stream.SectionHeaderPart): "header", id(wire_stream.SectionFooter): "footer",
    id(wire_stream.Configuration): "configuration", id(wire_stream.Command): "command",
    id(RamBlockList): "blocks",
}
_ALWAYS_ELEMS = (1, 2, 4, 6, 8, 9, 16)


def field_map(data: bytes) -> tuple[View, list[tuple[PayloadRef, View]], int | None]:
    """The fields of a stream that decodes: stream-level records, every payload field, RAM page records, the
    JSON description; and a View of each virtio payload."""
    s = wire_stream.decode_stream(data)  # a seed must decode
    with _recording() as records:
        wire_stream.decode_stream(data)
    vmdesc_at = wire_stream.find_vmdesc(data)
    end_of_sections = vmdesc_at if vmdesc_at is not None else len(data)
    sections = [r for r in s.records if isinstance(r, wire_stream.Section)]
    starts = [sec.offset for sec in sections]

    def owner(pos: int) -> str:
        i = bisect_right(starts, pos) - 1
        return (sections[i].idstr or f"section {sections[i].section_id}") if i >= 0 else "stream"

    fields: list[Field] = []
    elems: set[int] = set(_ALWAYS_ELEMS)
    stream_records = [r for r in records if not isinstance(r[5], c.Compiled)]
    lookup = _lookup(stream_records)
    for rec in stream_records:
        path, con, start, end, obj, top = rec
        label = _TOP_NAMES.get(id(top)) or ("pages" if isinstance(top, RamPages) else "records")
        if label in ("configuration", "command"):
            prefix = label
        elif label == "header" and start == 0:
            prefix = "file header"
        else:
            prefix = f"{owner(start)} > {label}"
        got, e = _fields_of([rec], lookup, data, 0, prefix, end_of_sections)
        fields += got
        elems |= e
        if con is top and label in ("configuration", "command"):
            fields.append(Field(f"{label} (whole record)", start - 1, end - start + 1, "group", 0, end_of_sections))
        if isinstance(con, RamPages):
            fields += _page_fields(obj, start, s.page_size, f"{owner(start)} > pages", end_of_sections)
    # sections as whole fields, with their type byte
    bounds = starts + [end_of_sections - 1]
    for i, sec in enumerate(sections):
        name = sec.idstr or f"section {sec.section_id}"
        fields.append(Field(f"{name} (whole section)", sec.offset, bounds[i + 1] - sec.offset, "group", 0,
                            end_of_sections))
        fields.append(Field(f"{name} > type", sec.offset, 1, "int", sec.kind, end_of_sections))
    fields.append(Field("stream > EOF", end_of_sections - 1, 1, "int", 0, end_of_sections))
    if vmdesc_at is not None:
        fields.append(Field("vmdesc > marker", vmdesc_at, 1, "int", 6, len(data)))
        fields.append(Field("vmdesc > length", vmdesc_at + 1, 4, "int", len(data) - vmdesc_at - 5, len(data), True))
        fields.append(Field("vmdesc > json", vmdesc_at + 5, len(data) - vmdesc_at - 5, "bytes", 0, len(data)))
    payloads: list[tuple[PayloadRef, View]] = []
    for d in s.devices:
        ref = PayloadRef(d.section, d.instance_id, d.offset, d.size, d.transport, d.device)
        chunk = data[d.offset : d.offset + d.size]
        with _recording() as precords:
            payload_layout(d.transport, d.device).parse(chunk)
        local, e = _fields_of(precords, _lookup(precords), chunk, 0, "virtio", len(chunk))
        elems |= e
        pview = View(chunk, local, ())
        payloads.append((ref, pview))
        fields += [Field(f"{d.section} > {f.path}", f.offset + d.offset, f.size, f.kind, f.value,
                         d.offset + d.size, f.count) for f in local]
    unique = {(f.offset, f.size, f.kind, f.path): f for f in fields if f.size > 0}
    ordered = sorted(unique.values(), key=lambda f: (f.offset, -f.size))
    elem_sizes = tuple(sorted(elems))[:16]
    for _ref, pview in payloads:
        pview.elem_sizes = elem_sizes
    return View(data, ordered, elem_sizes), payloads, vmdesc_at


def _page_fields(pages: list[Any], start: int, page_size: int, prefix: str, limit: int) -> list[Field]:
    """RAM page records, from their decoded values and the record layout's widths (ram.ram_record)."""
    out: list[Field] = []
    pos = start
    for i, rec in enumerate(pages):
        if isinstance(rec, ZeroRun):
            out.append(Field(f"{prefix}[{i}] (zero run)", pos, len(rec.raw), "group", 0, limit))
            out.append(Field(f"{prefix}[{i}].addr_flags", pos, 8, "int", int.from_bytes(rec.raw[:8], "big"), limit))
            pos += len(rec.raw)
            continue
        addr, flags, block, payload = rec
        begin = pos
        out.append(Field(f"{prefix}[{i}].addr_flags", pos, 8, "int", addr | flags, limit))
        pos += 8
        if block is not None:
            raw = block.encode("latin-1")
            out.append(Field(f"{prefix}[{i}].block.length", pos, 1, "int", len(raw), limit, True))
            out.append(Field(f"{prefix}[{i}].block", pos + 1, len(raw), "bytes", 0, limit))
            pos += 1 + len(raw)
        if isinstance(payload, int):
            out.append(Field(f"{prefix}[{i}].fill", pos, 1, "int", payload, limit))
            pos += 1
        elif payload is not None:
            out.append(Field(f"{prefix}[{i}].page", pos, page_size, "bytes", 0, limit))
            pos += page_size
        out.append(Field(f"{prefix}[{i}]", begin, pos - begin, "group", 0, limit))
    return out


# --- seeds: the sample streams, slimmed, and enriched with every subsection the layouts know ---------------------


def default_seed_paths() -> list[Path]:
    """The sample streams shipped with the package (tests put their own here)."""
    return samples.streams()


def _slim(data: bytes) -> bytes:
    """The same stream with most RAM page records and most non-virtio sections dropped: the structure stays,
    and a decode is several times cheaper, so the fuzzer tries more inputs per second."""
    s = wire_stream.decode_stream(data)
    keep_keys: set[tuple[str, int]] = set()
    records: list[Any] = []
    others = 0
    for rec in s.records:
        if not isinstance(rec, wire_stream.Section):
            records.append(rec)
            continue
        if isinstance(rec.body, tuple):  # RAM: a few page records and the EOS record
            head, pages = rec.body
            rec.body = (head, pages[:6] + ([pages[-1]] if len(pages) > 6 else []))
        elif rec.kind == wire_stream.QEMU_VM_SECTION_FULL and not isinstance(rec.body, wire_stream.VirtioPayload):
            others += 1
            if others % 6:  # every sixth non-virtio device stays, for the description walk's variety
                continue
        if rec.kind == wire_stream.QEMU_VM_SECTION_FULL:
            keep_keys.add((rec.idstr, rec.instance_id))
        records.append(rec)
    s.records = records
    if s.vmdesc is not None:
        s.vmdesc = dict(s.vmdesc)
        s.vmdesc["devices"] = [d for d in s.vmdesc.get("devices", [])
                               if (d.get("name"), d.get("instance_id", 0)) in keep_keys]
        s.vmdesc_raw = json.dumps(s.vmdesc).encode()
    return wire_stream.encode_stream(s)


def _enrich_subsections(con: Any, value: Any, version: int) -> None:
    """Append every subsection `con` knows and `value` lacks, with a body parsed from zero bytes; recurse."""
    while isinstance(con, c.Renamed):
        con = con.subcon
    if isinstance(con, Subsections) and isinstance(value, list):
        present = {sub.name for sub in value}
        for name in con.known:
            if name not in present:
                body = con.body(name, version).parse_stream(io.BytesIO(bytes(1 << 16)))
                if name.endswith("/rss"):  # a table with something in it
                    body.indirections_len, body.indirections_table = 4, [0, 1, 1, 0]
                value.append(Container(name=name, version_id=version, body=body))
        for sub in value:
            _enrich_subsections(con.body(sub.name, sub.version_id), sub.body, version)
    elif isinstance(con, c.Struct) and isinstance(value, dict):
        for sc in con.subcons:
            if sc.name and sc.name in value:
                _enrich_subsections(sc, value[sc.name], version)
    elif isinstance(con, c.Array) and isinstance(value, list):
        for item in value:
            _enrich_subsections(con.subcon, item, version)


def _rich(data: bytes) -> bytes:
    """The slim stream with every subsection the layouts know added to every payload, a second queue pair on
    virtio-net, and a command record: the fixtures (QEMU 7.2) carry only some of them."""
    s = wire_stream.decode_stream(data)
    for p in s.devices:
        v = p.value
        if p.device == "virtio-net" and v.num_queues == 3:
            v.queues = ListContainer([v.queues[0], v.queues[1], v.queues[0], v.queues[1], v.queues[2]])
            v.num_queues = 5
            v.device.max_queue_pairs = v.device.curr_queue_pairs = 2
            v.device.tx_waiting_more = [0]
        _enrich_subsections(payload_layout(p.transport, p.device), v, 1)
    s.records.insert(0, ("command", Container(cmd=2, len=4, data=b"\x00\x00\x00\x01")))  # MIG_CMD_PING 1
    out = wire_stream.encode_stream(s)
    wire_stream.decode_stream(out)
    return out


def load_seeds(paths: Sequence[Path] | None = None, variants: Sequence[str] = ("full", "slim", "rich")) -> list[Seed]:
    """Seeds from stream files: each as it is, slimmed, and slimmed with every known subsection added."""
    seeds: list[Seed] = []
    for path in default_seed_paths() if paths is None else paths:
        full = path.read_bytes()
        slim = _slim(full)
        made = {"full": full, "slim": slim}
        if "rich" in variants:
            made["rich"] = _rich(slim)
        for variant in variants:
            view, payloads, vmdesc_at = field_map(made[variant])
            name = path.stem if variant == "full" else f"{path.stem}~{variant}"
            seeds.append(Seed(name, view, payloads, vmdesc_at))
    return seeds


# --- mutations ------------------------------------------------------------------------------------------

Edit = tuple[int, int, bytes]  # at offset, remove n bytes, insert these


def apply_edits(data: bytes, edits: Sequence[Edit]) -> bytes:
    """Apply edits made against `data`, from the last offset backwards so earlier offsets stay true; an edit
    that overlaps one already applied is dropped."""
    out = bytearray(data)
    floor = len(data) + 1
    for at, n, new in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        at = min(max(at, 0), len(data))
        if at + n > floor:
            continue
        out[at : at + n] = new
        floor = at
    return bytes(out)


def _pick_field(rng: random.Random, view: View, kinds: str = "any") -> Field | None:
    pool = {"any": view.fields, "int": view.ints, "count": view.counts or view.ints, "group": view.groups}[kinds]
    return rng.choice(pool) if pool else None


def int_values(rng: random.Random, f: Field, elem_sizes: Sequence[int]) -> list[int]:
    """Values worth trying in an integer field: 0, max, around the old value, and just past what remains."""
    bits = 8 * f.size
    top = (1 << bits) - 1
    remaining = max(f.limit - (f.offset + f.size), 0)
    values = [0, 1, top, top >> 1, (top >> 1) + 1, f.value + 1, f.value - 1, f.value * 2,
              f.value ^ (1 << rng.randrange(bits)), remaining, remaining + 1, remaining - 1, rng.getrandbits(bits)]
    values += [remaining // e + rng.choice((0, 1)) for e in elem_sizes]
    return [v & top for v in values]


def _set_int(rng: random.Random, view: View, f: Field) -> tuple[Edit, str]:
    value = rng.choice(int_values(rng, f, view.elem_sizes))
    return (f.offset, f.size, value.to_bytes(f.size, "big")), f"{f.path} = {value:#x} (was {f.value:#x})"


def _filler(rng: random.Random, view: View) -> tuple[bytes, str]:
    r = rng.random()
    if r < 0.3:
        return rng.randbytes(rng.randint(1, 32)), "random bytes"
    if r < 0.5:
        n = rng.choice((1, 2, 4, 8, 64, 4096, 65536))
        return bytes(n), f"{n} zero bytes"
    if r < 0.6:
        n = rng.choice((1, 4, 64, 4096))
        return b"\xff" * n, f"{n} 0xff bytes"
    if r < 0.8:
        name = rng.choice(_SUBSECTION_NAMES).encode()
        version = struct.pack(">I", rng.choice((1, 2, 0, 0xFFFFFFFF)))
        return bytes([5, len(name)]) + name + version, "a subsection header"
    f = _pick_field(rng, view)
    if f is None:
        return b"\x00", "a zero byte"
    return view.data[f.offset : f.offset + min(f.size, 1 << 16)], f"a copy of {f.path}"


_SUBSECTION_NAMES = ("virtio/device_endian", "virtio/64bit_features", "virtio/virtqueues", "virtio/ringsize",
                     "virtio/extra_state", "virtio/started", "virtio/broken", "virtio/packed_virtqueues",
                     "virtio/disabled", "virtio/128bit_features", "virtio-net-device/rss", "virtio_pci/modern_state",
                     "virtio_mmio/state", "virtio-balloon-device/page-poison", "s390_subch_dev/orb",
                     "configuration/target-page-bits", "virtio/zzz", "virtio")


def _position(rng: random.Random, view: View) -> tuple[int, str]:
    f = _pick_field(rng, view)
    if f is None or rng.random() < 0.2:
        at = rng.randrange(len(view.data) + 1)
        return at, f"byte {at}"
    if rng.random() < 0.5:
        return f.offset, f"the start of {f.path}"
    return f.offset + f.size, f"the end of {f.path}"


def m_flip(rng: random.Random, view: View) -> tuple[list[Edit], str]:
    if not view.data:
        return [], "nothing to flip"
    f = _pick_field(rng, view)
    edits: list[Edit] = []
    where = "anywhere"
    for _ in range(rng.choice((1, 1, 2, 4, 8))):
        if f is not None and rng.random() < 0.8:
            at, where = f.offset + rng.randrange(f.size), f.path
        else:
            at = rng.randrange(len(view.data))
        edits.append((at, 1, bytes([view.data[at] ^ (1 << rng.randrange(8))])))
    return edits, f"flip {len(edits)} bit(s) in {where}"


def m_insert(rng: random.Random, view: View) -> tuple[list[Edit], str]:
    at, where = _position(rng, view)
    new, what = _filler(rng, view)
    return [(at, 0, new)], f"insert {what} at {where}"


def m_delete(rng: random.Random, view: View) -> tuple[list[Edit], str]:
    f = _pick_field(rng, view)
    if f is not None and rng.random() < 0.6:
        return [(f.offset, f.size, b"")], f"delete {f.path}"
    at, where = _position(rng, view)
    n = rng.choice((1, 1, 2, 3, 4, 8, 16))
    return [(at, n, b"")], f"delete {n} byte(s) at {where}"


def m_duplicate(rng: random.Random, view: View) -> tuple[list[Edit], str]:
    f = _pick_field(rng, view, "group" if rng.random() < 0.5 else "any")
    if f is not None and rng.random() < 0.7:
        copies = rng.choice((1, 1, 2, 16))
        return [(f.offset + f.size, 0, view.data[f.offset : f.offset + f.size] * copies)], \
            f"duplicate {f.path} x{copies}"
    at, where = _position(rng, view)
    n = rng.choice((1, 2, 4, 8, 16))
    return [(at, 0, view.data[at : at + n])], f"duplicate {n} byte(s) at {where}"


def m_length(rng: random.Random, view: View) -> tuple[list[Edit], str]:
    f = _pick_field(rng, view, "count" if rng.random() < 0.7 else "int")
    if f is None:
        return m_flip(rng, view)
    edit, note = _set_int(rng, view, f)
    return [edit], note


def m_truncate(rng: random.Random, view: View) -> tuple[list[Edit], str]:
    at, where = _position(rng, view)
    at = min(max(at + rng.choice((-1, 0, 0, 1)), 0), len(view.data))
    return [(at, len(view.data) - at, b"")], f"truncate at {where}"


_STRUCTURAL: dict[str, Callable[[random.Random, View], tuple[list[Edit], str]]] = {
    "flip": m_flip, "insert": m_insert, "delete": m_delete, "duplicate": m_duplicate, "length": m_length,
    "truncate": m_truncate,
}


# --- the JSON description ------------------------------------------------------------------------------------

_JSON_INTS: tuple[Any, ...] = (0, 1, -1, 2, 3, 7, 255, 4096, 2**31 - 1, 2**32, 2**63 - 1, -(2**63), 1e30, 1.5, -0.5,
                               "4", None, [], {}, True)
_JSON_VALUES: dict[str, tuple[Any, ...]] = {
    "type": ("virtio", "struct", "uint8", "buffer", "", None, 3),
    "name": ("", "x", "virtio", "0000:00:03.0/virtio-net", None, 7, "a" * 300, "\u00e9"),
    "vmsd_name": ("", "virtio", "s390_css", "virtio/extra_state", None, 7),
    "page_size": (0, 1, -1, 3, 512, 4095, 65536, 2**21, 2**40, 2**63 - 1, "4096", None, 1.5),
    "struct": ({}, None, [], 1, {"vmsd_name": "x", "fields": []}),
}
_JSON_LISTS: tuple[Any, ...] = (None, {}, 1, "x", [], [None], [1], [{}], [{"name": "x"}])
_DEEP = "@@deep@@"


def _json_nodes(node: Any, out: list[Any]) -> None:
    if isinstance(node, dict):
        out.append(node)
        for v in node.values():
            _json_nodes(v, out)
    elif isinstance(node, list):
        for v in node:
            _json_nodes(v, out)


def _json_value(rng: random.Random, key: str, old: Any) -> Any:
    if key in _JSON_VALUES:
        return rng.choice(_JSON_VALUES[key])
    if isinstance(old, list) or key in ("fields", "subsections", "devices"):
        options: list[Any] = list(_JSON_LISTS)
        if isinstance(old, list) and old:
            options += [old * 2, old[::-1], old + [rng.choice(old)], old[1:]]
        if key == "subsections":
            options += [_DEEP] * 3
        return rng.choice(options)
    values = list(_JSON_INTS)
    if isinstance(old, int) and not isinstance(old, bool):
        values += [old + 1, old - 1, old * 2, old * 1000, -old]
    return rng.choice(values)


def _dump_json(doc: Any, depth: int) -> bytes:
    try:
        text = orjson.dumps(doc)
    except (TypeError, orjson.JSONEncodeError):
        text = json.dumps(doc).encode()  # integers past 64 bits
    chain = b'{"vmsd_name":"virtio/deep","version_id":1,"fields":[],"subsections":['
    return text.replace(f'"{_DEEP}"'.encode(), b"[" + chain * depth + b"]}" * depth + b"]")


def m_vmdesc(rng: random.Random, seed: Seed) -> tuple[list[Edit], str]:
    """Rewrite one value of the JSON description (sizes, array lengths, names, types, lists), which the walk
    trusts to find the fields of every device."""
    at = seed.vmdesc_at
    if at is None:
        return m_length(rng, seed.view)
    data = seed.data
    doc = orjson.loads(data[at + 5 :])
    nodes: list[Any] = []
    _json_nodes(doc, nodes)
    r = rng.random()
    if r < 0.03:
        doc, note = rng.choice(([], "x", 1, None, {})), "replace the whole description"
    else:
        node = rng.choice(nodes)
        keys = list(node)
        if r < 0.1 and keys:
            key = rng.choice(keys)
            del node[key]
            note = f"delete key {key!r}"
        elif r < 0.15 and (arrays := [f for f in nodes if f.get("struct") == {} and f.get("size") == 1]):
            target = rng.choice(arrays)  # an array of pointers, sized by the stream's bytes (s390_css)
            target["array_len"] = rng.choice((2**31, 2**62, target.get("array_len", 1) + 1))
            note = f"array of pointers {target.get('name')!r}: array_len {target['array_len']}"
        elif r < 0.2 and node.get("fields") is not None and isinstance(node.get("fields"), list):
            bad = {"name": "p", "type": "struct", "struct": {}, "size": 1, "array_len": rng.choice((2, 10**6, 2**62))}
            node["fields"].append(bad)
            note = f"append a pointer-array field of array_len {bad['array_len']}"
        elif r < 0.25:
            key = rng.choice(("array_len", "type", "size", "subsections", "fields"))
            node[key] = _json_value(rng, key, None)
            note = f"add {key!r} = {str(node[key])[:40]}"
        else:
            key = rng.choice(keys) if keys else "size"
            node[key] = _json_value(rng, key, node.get(key))
            note = f"set {key!r} to {str(node[key])[:40]}"
    text = _dump_json(doc, rng.choice((10, 300, 505, 600)))  # orjson refuses JSON nested past 1024
    length = len(text) if rng.random() < 0.85 else rng.choice((0, len(text) - 1, len(text) + 1, 0xFFFFFFFF))
    return [(at + 1, len(data) - at - 1, struct.pack(">I", length) + text)], f"vmdesc: {note}"


# --- whole inputs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mutant:
    """One fuzz input. `payload` set: `data` is that payload alone, for decode_payload (as `transport`/`device`,
    usually the payload's own)."""

    data: bytes
    mutation: str
    seed: str
    note: str
    payload: PayloadRef | None = None
    transport: str = ""
    device: str = ""


def _embed(seed: Seed, ref: PayloadRef, payload: bytes) -> bytes:
    """The seed stream with one payload replaced, its size in the JSON description updated, so that
    `virtio-compat decode` reaches it."""
    data = seed.data
    out = data[: ref.offset] + payload + data[ref.offset + ref.size :]
    at = seed.vmdesc_at
    if at is None:
        return out
    return with_payload_size(out, at + len(payload) - ref.size, ref.section, ref.instance_id, len(payload))


def with_payload_size(data: bytes, at: int, section: str, instance_id: int, size: int) -> bytes:
    """`data` with the size of one virtio payload in its JSON description (at `at`) set to `size`."""
    doc = orjson.loads(data[at + 5 :])
    for d in doc.get("devices", []):
        if d.get("name") == section and d.get("instance_id") == instance_id:
            for f in d.get("fields", []):
                if f.get("type") == "virtio":
                    f["size"] = size
    text = json.dumps(doc).encode()
    return data[: at + 1] + struct.pack(">I", len(text)) + text


class Mutator:
    """Input `i` of seed `seed` over a list of seeds: a pure function of (seed, i)."""

    def __init__(self, seeds: Sequence[Seed], seed: int = 0) -> None:
        if not seeds:
            raise ValueError("no seed streams to mutate")
        self.seeds = list(seeds)
        self.seed = seed
        # the slim and rich variants decode several times faster than the full streams: pick them more often
        self.weights = [1.0 if "~" in s.name else 0.15 for s in self.seeds]

    def mutant(self, i: int, kind: str | None = None, seed: Seed | None = None) -> Mutant:
        rng = random.Random(f"{self.seed}/{i}")
        kind = kind or rng.choice(MUTATIONS)
        s = seed or rng.choices(self.seeds, self.weights)[0]
        return self.make(rng, kind, s)

    def make(self, rng: random.Random, kind: str, s: Seed) -> Mutant:
        if kind == "random":
            n = rng.choice((0, 1, 8, 9, 64, 1024, 4096))
            head = b"QEVM" if rng.random() < 0.3 else b""
            return Mutant(head + rng.randbytes(n), kind, "-", f"{n} random bytes")
        if kind == "header":
            return Mutant(b"QEVM\x00\x00\x00\x03" + self._records(rng), kind, "-", "a valid header, then noise")
        if kind == "payload" and s.payloads:
            ref, view = rng.choice(s.payloads)
            sub = rng.choice(("flip", "insert", "delete", "duplicate", "length", "length", "truncate"))
            edits, note = self._edits(rng, sub, view)
            if rng.random() < 0.5:
                more, note2 = self._edits(rng, "length", view)
                edits, note = edits + more, f"{note}; {note2}"
            transport, device = ref.transport, ref.device
            if rng.random() < 0.1:
                transport, device = rng.choice(TRANSPORTS), rng.choice(DEVICES)
                note += f"; decoded as {device} on {transport}"
            return Mutant(apply_edits(view.data, edits), kind, s.name, f"{ref.section}: {note}", ref, transport,
                          device)
        if kind == "vmdesc":
            edits, note = m_vmdesc(rng, s)
        elif kind == "splice":
            edits, note = self._splice(rng, s)
        elif kind == "stack":
            edits, notes = [], []
            for _ in range(rng.randint(2, 5)):
                sub = rng.choice(("flip", "insert", "delete", "duplicate", "length", "length", "vmdesc"))
                more, what = m_vmdesc(rng, s) if sub == "vmdesc" else self._edits(rng, sub, s.view)
                edits += more
                notes.append(what)
            note = "; ".join(notes)
        else:
            edits, note = self._edits(rng, kind if kind in _STRUCTURAL else "flip", s.view)
        return Mutant(apply_edits(s.data, edits), kind, s.name, note)

    @staticmethod
    def _edits(rng: random.Random, kind: str, view: View) -> tuple[list[Edit], str]:
        return _STRUCTURAL[kind](rng, view)

    def _splice(self, rng: random.Random, s: Seed) -> tuple[list[Edit], str]:
        """Swap two groups of this seed, or put one from another seed in place of one of this seed."""
        a = _pick_field(rng, s.view, "group")
        other = rng.choice(self.seeds)
        b = _pick_field(rng, other.view, "group")
        if a is None or b is None:
            return m_flip(rng, s.view)
        new = other.data[b.offset : b.offset + b.size]
        if other is s and rng.random() < 0.5 and (b.offset >= a.offset + a.size or a.offset >= b.offset + b.size):
            return [(a.offset, a.size, new), (b.offset, b.size, s.data[a.offset : a.offset + a.size])], \
                f"swap {a.path} and {b.path}"
        return [(a.offset, a.size, new)], f"replace {a.path} with {b.path} of {other.name}"

    def _records(self, rng: random.Random) -> bytes:
        """Plausible records with random contents: type bytes, ids, idstrs of known devices, random bodies."""
        out = bytearray()
        for _ in range(rng.randint(1, 8)):
            kind = rng.choice((0, 1, 2, 3, 4, 4, 4, 5, 6, 7, 8, 0x7E, rng.randrange(256)))
            out.append(kind)
            if kind in (1, 4):
                name = rng.choice(("ram", "timer", "0000:00:03.0/virtio-net", "virtio-mmio@000000000a003e00/virtio-blk",
                                   "/fe.0.0000/virtio-net", "s390-storage_attributes", "x")).encode()
                out += struct.pack(">I", rng.randrange(4)) + bytes([len(name)]) + name + struct.pack(">II", 0, 1)
            out += rng.randbytes(rng.choice((0, 4, 9, 64, 512)))
        return bytes(out)


# --- checking one input ----------------------------------------------------------------------------------


class _Hang(BaseException):
    """Raised by the SIGALRM handler inside a decode that ran past the time limit (a BaseException, so that no
    `except Exception` in the decoder swallows it)."""


@dataclass(frozen=True)
class Finding:
    kind: str  # crash, hang, memory, bad-error
    summary: str  # one line: what happened
    signature: str  # findings with one signature are one bug
    mutant: Mutant
    stream: bytes  # a whole stream to reproduce it with `virtio-compat decode` (the input, or it embedded)
    seconds: float = 0.0
    peak: int = 0


def memory_bound(size: int) -> int:
    return MEMORY_FACTOR * size + MEMORY_SLACK


def _where(tb: Any) -> str:
    """Where an exception was raised, as file:line (function): the innermost frame of the harness (the fuzzer
    itself aside), else the innermost frame."""
    frames = [fr for fr in traceback.extract_tb(tb) if fr.filename != __file__]
    ours = [fr for fr in frames if fr.filename.startswith(str(ROOT / "harness"))]
    if not (ours or frames):
        return "?"
    fr = (ours or frames)[-1]
    name = Path(fr.filename)
    return f"{name.relative_to(ROOT) if name.is_relative_to(ROOT) else name}:{fr.lineno} ({fr.name})"


def _chain(e: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


_DIGITS = re.compile(r"\d+")


def _malformed(e: StreamError, size: int, whole_stream: bool) -> str:
    """What is wrong with a StreamError's offset and path ('' when nothing is)."""
    offset = e.offset
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= size:
        return f"offset {offset!r} not within the {size}-byte input"
    if not isinstance(e.path, str) or not e.path:
        return "empty field path"
    if whole_stream and offset < 8 and not e.path.startswith("header"):
        return f"offset {offset} is in the file header, not in {e.path}"  # an offset lost on the way
    return ""


class Checker:
    """Runs inputs through the decoder under a time limit (SIGALRM) and tracemalloc; use as a context manager."""

    def __init__(self, time_limit: float | None = None, per_byte: float | None = None,
                 bound: Callable[[int], int] | None = None) -> None:
        self.time_limit = TIME_LIMIT if time_limit is None else time_limit
        self.per_byte = TIME_PER_BYTE if per_byte is None else per_byte
        self.bound = memory_bound if bound is None else bound
        self._armed = False
        self._alarm = False
        self._old_handler: Any = None
        self._outer_tracing = False

    def __enter__(self) -> Checker:
        for transport in TRANSPORTS:  # compiling a layout takes a while: not inside any input's time limit
            for device in DEVICES:
                compiled_payload_layout(transport, device)
        self._alarm = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
        if self._alarm:
            self._old_handler = signal.signal(signal.SIGALRM, self._on_alarm)
        self._outer_tracing = tracemalloc.is_tracing()
        # what exists now (seeds, layouts) is not the decodes' garbage: a collection then walks only theirs
        gc.freeze()
        return self

    def __exit__(self, *exc: object) -> None:
        gc.unfreeze()
        self._armed = False
        if self._alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._old_handler)

    def _on_alarm(self, signum: int, frame: Any) -> None:
        if self._armed:
            self._armed = False
            raise _Hang()

    def _run(self, m: Mutant, kept: list[StreamError]) -> None:
        if m.payload is None:
            # what `virtio-compat decode`, the reproduction, does: a payload that does not decode is kept with its
            # StreamError (the one a strict decode_stream raises) and the walk goes on; then the summary
            s = decode_stream(m.data, strict=False)
            kept += [p.error for p in s.devices if p.error is not None]
            format_text(stream_summary(s))
        else:
            decode_payload(m.data, m.transport, m.device)

    def _timed(self, m: Mutant, limit: float, kept: list[StreamError]) -> tuple[BaseException | None, float]:
        """Decode once under a SIGALRM timer: (the exception, or None; seconds); payload errors a tolerant walk
        kept go to `kept`."""
        start = time.perf_counter()
        try:
            self._armed = True
            if self._alarm:
                signal.setitimer(signal.ITIMER_REAL, limit)
            try:
                self._run(m, kept)
            finally:
                self._armed = False
                if self._alarm:
                    signal.setitimer(signal.ITIMER_REAL, 0)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # judged by the caller; anything but StreamError breaks the contract
            return e, time.perf_counter() - start
        return None, time.perf_counter() - start

    def _traced(self, m: Mutant, limit: float) -> tuple[BaseException | None, int, int]:
        """Decode once under tracemalloc: (the exception, or None; peak bytes allocated by the decode; bytes it
        allocated and still held once it returned and garbage was collected: what a cache kept)."""
        if self._outer_tracing:
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            error, _ = self._timed(m, limit, [])
            return error, tracemalloc.get_traced_memory()[1] - base, 0
        tracemalloc.start()  # traces only what this decode allocates: a small table, and the peak is the decode's
        try:
            error, _ = self._timed(m, limit, [])
            for e in _chain(error) if error is not None else ():
                e.__traceback__ = None  # its frames hold the decode's objects
            current, peak = tracemalloc.get_traced_memory()
            if current > RETAINED_LIMIT:  # decoded values hold cycles (construct contexts): collect them first
                gc.collect()
                current = tracemalloc.get_traced_memory()[0]
            return error, peak, current
        finally:
            tracemalloc.stop()

    def check(self, m: Mutant, seed: Seed | None = None) -> Finding | None:
        """None when the decoder kept its contract for this input, else what went wrong (`seed`: the seed of a
        payload input, to embed it in a stream)."""
        size = len(m.data)
        limit = self.time_limit + size * self.per_byte
        kept: list[StreamError] = []
        error, seconds = self._timed(m, limit, kept)
        peak = 0

        def finding(kind: str, summary: str, signature: str) -> Finding:
            stream = m.data if m.payload is None or seed is None else _embed(seed, m.payload, m.data)
            return Finding(kind, summary, signature, m, stream, seconds, peak)

        if isinstance(error, _Hang) or (error is None and seconds > limit):
            where = _where(error.__traceback__) if error is not None else "?"
            return finding("hang", f"decode still running after {limit:.3g} s, in {where}", f"hang {where}")
        if error is not None and not isinstance(error, StreamError):
            where = _where(error.__traceback__)
            text = f"{type(error).__name__}: {str(error)[:200]}"
            return finding("crash", f"{text} at {where}", f"crash {type(error).__name__} {where}")
        for e in ([error] if isinstance(error, StreamError) else []) + kept:
            bad = _malformed(e, size, m.payload is None)
            if bad:
                return finding("bad-error", f"StreamError {e}: {bad}",
                               f"bad-error {_DIGITS.sub('N', e.message)[:80]} {bad[:12]}")
            memory_error = next((x for x in _chain(e) if isinstance(x, MemoryError)), None)
            if memory_error is not None:
                where = _where(memory_error.__traceback__)
                return finding("memory", f"an allocation failed (MemoryError) in {where}, reported as: {e}",
                               f"memory MemoryError {where}")
        del kept
        # tracemalloc makes allocation-heavy code 10-20x slower, so time is judged above, untraced; the traced run
        # gets a limit of its own only so that it cannot hang the fuzzer
        traced_error, peak, retained = self._traced(m, limit * TRACED_SLOWDOWN)
        if isinstance(traced_error, _Hang):
            return finding("hang", f"decode still running after {limit * TRACED_SLOWDOWN:.3g} s under "
                           "tracemalloc", "hang traced")
        outcome = "ok" if error is None else _DIGITS.sub("N", error.path if isinstance(error, StreamError) else "")
        if peak > self.bound(size):
            return finding("memory", f"peak {peak / 2**20:.1f} MiB for a {size}-byte input "
                           f"(bound {self.bound(size) / 2**20:.1f} MiB); outcome: {outcome}", f"memory {outcome}")
        if retained > RETAINED_LIMIT:
            return finding("memory", f"{retained / 2**20:.1f} MiB still held after the decode returned (a cache "
                           f"that hostile input grows); outcome: {outcome}", f"memory retained {outcome}")
        return None


# --- a run ----------------------------------------------------------------------------------------------


@dataclass
class Stats:
    inputs: int = 0
    findings: int = 0  # distinct signatures
    seconds: float = 0.0
    interrupted: bool = False
    signum: int = signal.SIGINT  # what interrupted it
    by_signature: dict[str, int] = field(default_factory=dict)  # inputs per signature
    by_mutation: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.inputs / self.seconds if self.seconds > 0 else 0.0


def run(mutator: Mutator, checker: Checker, deadline: float | None = None, count: int | None = None,
        on_finding: Callable[[Finding], None] | None = None, on_progress: Callable[[Stats], None] | None = None,
        start: int = 0) -> Stats:
    """Check inputs start, start + 1, ... until `deadline` (time.monotonic; at least one input) or `count` inputs,
    or Ctrl-C. `on_finding` sees the first input of each new signature; `on_progress` runs at most once a second."""
    stats = Stats()
    by_name = {s.name: s for s in mutator.seeds}
    began = last = time.monotonic()
    i = start
    try:
        while (count is None or stats.inputs < count) and \
                (deadline is None or stats.inputs == 0 or time.monotonic() < deadline):
            interrupt.check()  # a signal whose raise Python dropped (in a finalizer of the decoder's garbage)
            m = mutator.mutant(i)
            i += 1
            seed = by_name.get(m.seed)
            found = checker.check(m, seed)
            stats.inputs += 1
            stats.by_mutation[m.mutation] = stats.by_mutation.get(m.mutation, 0) + 1
            if found is not None:
                new = found.signature not in stats.by_signature
                stats.by_signature[found.signature] = stats.by_signature.get(found.signature, 0) + 1
                if new:
                    stats.findings += 1
                    if on_finding is not None:
                        on_finding(_as_stream(found, checker, seed))
            now = time.monotonic()
            stats.seconds = now - began
            if on_progress is not None and now - last >= 1.0:
                last = now
                on_progress(stats)
    except KeyboardInterrupt as e:
        stats.interrupted = True
        stats.signum = getattr(e, "signum", signal.SIGINT)
    stats.seconds = time.monotonic() - began
    return stats


def _as_stream(found: Finding, checker: Checker, seed: Seed | None) -> Finding:
    """A payload input's finding as the whole stream it was embedded in, when that stream reproduces it."""
    if found.mutant.payload is None:
        return found
    m = found.mutant
    again = checker.check(Mutant(found.stream, m.mutation, m.seed, f"{m.note} (embedded in {m.seed})"), seed)
    if again is not None and again.kind == found.kind:
        return again
    return Finding(found.kind, f"{found.summary} (found by decode_payload as {m.device} on {m.transport}; the "
                   "saved stream may not reproduce it)", found.signature, m, found.stream, found.seconds, found.peak)


def save_finding(found: Finding, out: Path) -> tuple[Path, bool]:
    """Write the finding's stream as `<out>/<kind>-<sha1[:12]>.bin`, atomically: a temporary file in `out`, then
    a hard link, which fails rather than replace a file of that name. (path, whether it was written now)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{found.kind}-{sha1(found.stream).hexdigest()[:12]}.bin"
    if path.exists():
        return path, False
    with interrupt.deferred():  # a signal waits until the file is in place and the temporary one gone
        fd, tmp = tempfile.mkstemp(prefix=".fuzz-", suffix=".tmp", dir=out)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(found.stream)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                return path, False
            return path, True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


@contextlib.contextmanager
def _address_space_cap(extra: int) -> Iterator[None]:
    """Cap the address space at what the process uses now + `extra` while fuzzing, so that a decode that
    allocates by a hostile length fails with MemoryError (reported as a finding) instead of exhausting the
    machine. A no-op where the limit cannot be read or set."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        with open("/proc/self/status") as f:
            vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
        cap = vm + extra if hard == resource.RLIM_INFINITY else min(vm + extra, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (ImportError, OSError, ValueError, StopIteration):
        yield
        return
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def run_cli(args: Any) -> int:
    """`virtio-compat fuzz [--minutes N] [--seed S] [--seeds DIR] [--out DIR]`: 1 if anything was found, else 0;
    interrupted: Kept (the findings so far are whole files in DIR), exit 130 or 143."""
    from harness.errors import UsageError
    from harness.interrupt import Kept

    began = time.monotonic()
    minutes = float(args.minutes)
    if not 0 < minutes < float("inf"):
        raise UsageError(f"--minutes must be a positive number, not {args.minutes}")
    if args.seed < 0:
        raise UsageError(f"--seed must be 0 or more, not {args.seed}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: not a directory (--out)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{out}: cannot create the output directory: {e.strerror or e}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"{out}: cannot write there (--out)")
    paths = samples.streams_in(args.seeds) if getattr(args, "seeds", None) else default_seed_paths()
    if not paths:
        raise UsageError("no seed streams: the package's samples are missing (a broken install)")
    mutator = Mutator(load_seeds(paths), args.seed)
    tty = sys.stderr.isatty()
    last_line = [0.0]

    def on_finding(found: Finding) -> None:
        try:
            path, _ = save_finding(found, out)
        except OSError as e:
            print(f"fuzz: {found.kind}: {found.summary}; could not save it in {out}: {e.strerror or e}", flush=True)
            return
        m = found.mutant
        print(f"fuzz: {found.kind}: {found.summary} [{m.mutation} on {m.seed}: {m.note[:160]}]", flush=True)
        print(f"  reproduce: virtio-compat decode {path}", flush=True)

    def on_progress(stats: Stats) -> None:
        # a line a second on a terminal (rewritten in place), one every 10 s into a log
        if not tty and stats.seconds - last_line[0] < 10:
            return
        last_line[0] = stats.seconds
        text = (f"fuzz: {stats.seconds:.0f} s, {stats.inputs} inputs, {stats.rate:.0f}/s, "
                f"{stats.findings} finding(s)")
        print(f"\r{text}" if tty else text, end="" if tty else "\n", file=sys.stderr, flush=True)

    deadline = began + minutes * 60
    with _address_space_cap(4 << 30), Checker() as checker:
        stats = run(mutator, checker, deadline=deadline, on_finding=on_finding, on_progress=on_progress,
                    start=0)
    inputs_found = sum(stats.by_signature.values())
    if tty:  # the progress line ends, or makes way for the one line that says what was kept
        sys.stderr.write("\r" + " " * 70 + "\r" if stats.interrupted else "\n")
    if stats.interrupted:  # one line (cli prints it): what the run kept
        kept = f"{stats.findings} finding(s) kept in {out}" if stats.findings else "no finding"
        raise Kept(stats.signum, f"fuzz interrupted after {stats.inputs} inputs in {stats.seconds:.1f} s (seed "
                                 f"{args.seed}); {kept}")
    print(f"fuzz: seed {args.seed}: {stats.inputs} inputs in {stats.seconds:.1f} s ({stats.rate:.0f}/s), "
          f"{stats.findings} finding(s) from {inputs_found} input(s)" + (f", saved in {out}" if stats.findings else ""),
          file=sys.stderr, flush=True)
    return 1 if stats.findings else 0
