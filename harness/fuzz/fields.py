"""The field map: where every field of a seed stream is, from the decoder's own parse."""

from __future__ import annotations

import contextlib
import re
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import construct as c

from harness.wire import stream as wire_stream
from harness.wire.primitives import FlatArray, NonZeroList, Peeked, field_path
from harness.wire.ram import RamBlockList, RamPages, ZeroRun
from harness.wire.virtio import payload_layout
from harness.wire.vmdesc import find_vmdesc

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
    dest: str | None = None  # the command line of the QEMU that saved it (its .json beside it), for `verdict --dest`

    @property
    def data(self) -> bytes:
        return self.view.data


Record = tuple[str, Any, int, int, Any, Any]  # path, construct, start, end, value, top-level construct


@contextlib.contextmanager
def recording() -> Iterator[list[Record]]:
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
    with recording() as records:
        wire_stream.decode_stream(data)
    vmdesc_at = find_vmdesc(data)
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
        with recording() as precords:
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
