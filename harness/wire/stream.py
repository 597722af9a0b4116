"""The QEMU migration stream: file header, sections, footers, configuration, commands, EOF and
the JSON description after it (migration/savevm.c; reference §1.2, §1.3).

The walk over the FULL sections of non-virtio devices is driven by the JSON description, which
gives the size of every field QEMU wrote; it never searches for idstr bytes. Without a description
(machine types 2.2 and older, or suppress-vmdesc) only the layouts this tool knows can be walked,
and the walk stops with a StreamError at the first section it does not know.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass, field
from typing import Any

import construct as c
import orjson

from harness.errors import StreamError
from harness.wire.payload import parse_with
from harness.wire.primitives import _DECODE_ERRORS, Subsections, be16, be32, locate_error, u8
from harness.wire.ram import GuestMemory, RamBlock, RamBlockList, RamPages, apply_pages
from harness.wire.virtio import NO_EXTRAS, Extras, payload_layout, stream_fields
from harness.wire.vmdesc import BadDescription, desc_size, find_vmdesc, virtio_field

QEMU_VM_FILE_MAGIC = 0x5145564D
QEMU_VM_FILE_VERSION = 3
QEMU_VM_FILE_VERSION_COMPAT = 2

QEMU_VM_EOF = 0x00
QEMU_VM_SECTION_START = 0x01
QEMU_VM_SECTION_PART = 0x02
QEMU_VM_SECTION_END = 0x03
QEMU_VM_SECTION_FULL = 0x04
QEMU_VM_SUBSECTION = 0x05
QEMU_VM_VMDESCRIPTION = 0x06
QEMU_VM_CONFIGURATION = 0x07
QEMU_VM_COMMAND = 0x08
QEMU_VM_SECTION_FOOTER = 0x7E

SECTION_NAMES = {1: "START", 2: "PART", 3: "END", 4: "FULL"}

# --- layouts ------------------------------------------------------------------------------------

FileHeader = c.Struct("magic" / be32, "version" / be32)

Idstr = c.PascalString(u8, "latin-1")
SectionHeaderFull = c.Struct(  # FULL and START
    "section_id" / be32, "idstr" / Idstr, "instance_id" / be32, "version_id" / be32)
SectionHeaderPart = c.Struct("section_id" / be32)  # PART and END
SectionFooter = c.Struct("section_id" / be32)  # after the 0x7e byte

# vmstate_configuration (savevm.c): machine type name, then its subsections
Configuration = c.Struct(
    "len" / be32,
    "name" / c.Bytes(c.this.len),
    "subsections" / Subsections("configuration", {
        "configuration/target-page-bits": c.Struct("target_page_bits" / be32),
        "configuration/capabilities": c.Struct(
            "caps_count" / be32,
            "capabilities" / c.Array(c.this.caps_count, c.PascalString(u8, "latin-1"))),
        "configuration/uuid": c.Struct("uuid" / c.Bytes(16)),
    }),
)

Command = c.Struct("cmd" / be16, "len" / be16, "data" / c.Bytes(c.this.len))

# s390-storage_attributes (hw/s390x/s390-stattrib.c): be64 gfn<<page_bits | flags records to EOS
STATTR_FLAG_EOS, STATTR_FLAG_MORE, STATTR_FLAG_ERROR, STATTR_FLAG_DONE = 0x01, 0x02, 0x04, 0x08


def stattrib_records(page_size: int) -> Any:
    record = c.Struct(
        "addr_flags" / c.Int64ub,
        "flags" / c.Computed(c.this.addr_flags & (page_size - 1)),
        "_check" / c.Check(lambda ctx: ctx.flags in (STATTR_FLAG_EOS, STATTR_FLAG_MORE, STATTR_FLAG_DONE)),
        "count" / c.If(c.this.flags == STATTR_FLAG_MORE, c.Int64ub),
        "values" / c.If(c.this.flags == STATTR_FLAG_MORE, c.Bytes(c.this.count)),
    )
    return c.RepeatUntil(lambda obj, lst, ctx: obj.flags == STATTR_FLAG_EOS, record)


# --- the decoded stream -------------------------------------------------------------------------


@dataclass
class VirtioPayload:
    """One virtio device's payload (the vmsd field "virtio"), decoded."""

    section: str
    instance_id: int
    version_id: int
    device: str  # "virtio-net", ...
    transport: str  # "pci", "mmio", "ccw"
    offset: int  # of the payload in the file
    size: int
    value: Any  # construct Container of harness.wire.virtio.payload_layout; None if it did not decode
    raw: bytes | None = None  # the payload's bytes, kept only when it did not decode (tolerant walks)
    error: StreamError | None = None  # why it did not decode
    fields: dict[str, bool] | None = None  # which fields schema modules add it carries (the parameter schema_fields)
    extras: Extras = NO_EXTRAS  # the schema modules' additions to the layout it was decoded with
    params: dict[str, Any] | None = None  # layout decisions the payload alone did not give (net_multiqueue)

    @property
    def key(self) -> tuple[str, int]:
        """QEMU finds a section's device by idstr and instance id."""
        return self.section, self.instance_id

    @property
    def label(self) -> str:
        """The idstr, and the instance id where it tells same-named sections apart."""
        return self.section if self.instance_id == 0 else f"{self.section} (instance {self.instance_id})"

    def encode(self) -> bytes:
        if self.value is None:
            return self.raw or b""
        return bytes(payload_layout(self.transport, self.device, self.extras).build(
            self.value, schema_fields=self.fields, **(self.params or {})))


@dataclass
class Section:
    kind: int  # QEMU_VM_SECTION_*
    section_id: int
    offset: int  # of the type byte
    idstr: str = ""  # FULL and START only
    instance_id: int = 0
    version_id: int = 0
    body: Any = b""  # raw bytes, RAM records, or a VirtioPayload (whose value is the body)
    prefix: bytes = b""  # fields before the virtio field (none for virtio devices QEMU writes)
    suffix: bytes = b""  # fields and subsections after it


@dataclass
class Stream:
    version: int
    records: list[Any] = field(default_factory=list)  # Sections, configuration, commands, in order
    configuration: Any = None
    footers: bool = False
    vmdesc: dict[str, Any] | None = None
    vmdesc_raw: bytes | None = None
    page_size: int = 4096
    memory: GuestMemory | None = None
    devices: list[VirtioPayload] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was not understood

    @property
    def machine(self) -> str | None:
        """The machine type: from the configuration section, else inferred (see machine_source)."""
        if self.configuration is not None:
            return bytes(self.configuration.name).decode("latin-1")
        return self.inferred_machine()

    @property
    def machine_source(self) -> str | None:
        if self.configuration is not None:
            return "configuration"
        return "inferred" if self.inferred_machine() else None

    def inferred_machine(self) -> str | None:
        """Machine types up to 2.3 send no configuration section (hw_compat_2_3 send-configuration=off)
        and up to 2.2 no JSON description (suppress-vmdesc), so a stream with a description but no
        configuration section comes from a 2.3 machine type; its sections tell i440fx from q35."""
        if self.vmdesc is None:
            return None
        names = {str(d.get("name", "")) for d in self.vmdesc.get("devices", []) if isinstance(d, dict)}
        if any(n.endswith("/I440FX") for n in names):
            return "pc-i440fx-2.3"
        if any(n.endswith("/mch") for n in names):
            return "pc-q35-2.3"
        return None


def device_of(idstr: str, machine: str | None = None, extras: Extras = NO_EXTRAS) -> tuple[str, str] | None:
    """(device, transport) from a virtio device's section idstr, or None for other sections. A bare vmsd name
    (old virt and s390-ccw-virtio machine types give no transport path) takes the machine's transport."""
    dev = idstr.rsplit("/", 1)[-1]
    if dev not in extras.sections():
        return None
    path = idstr[: -len(dev)]
    if not path and machine:
        return dev, "ccw" if machine.startswith("s390-ccw-virtio") else "mmio" if machine.startswith("virt") else "pci"
    if "virtio-mmio@" in path:
        return dev, "mmio"
    if idstr.startswith("/") and path.count("/") == 2 and path[1:3] in ("fe", "ff") or path.startswith("/fe."):
        return dev, "ccw"
    return dev, "pci"


# --- the walk -----------------------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.io = io.BytesIO(data)

    @property
    def pos(self) -> int:
        return self.io.tell()

    def parse(self, layout: Any, path: str, **ctx: Any) -> Any:
        start = self.pos
        try:
            return layout.parse_stream(self.io, **ctx)
        except _DECODE_ERRORS:
            raise locate_error(layout, self.data, start, 0, path, **ctx) from None

    def byte(self, path: str) -> int:
        b = self.io.read(1)
        if not b:
            raise StreamError("stream ends here; expected a section type byte", self.pos, path)
        return b[0]

    def take(self, n: int, path: str) -> bytes:
        start = self.pos
        b = self.io.read(n)
        if len(b) != n:
            raise StreamError(f"stream ends inside this section ({n} bytes expected, {len(b)} left)",
                              start, path)
        return b


def decode_stream(data: bytes, strict: bool = True, extras: Extras = NO_EXTRAS) -> Stream:
    """Decode a whole migration stream. Raises StreamError (offset, field path) on bad input; with
    strict=False a virtio payload that does not decode but that the JSON description sizes is kept
    as bytes (VirtioPayload.error says why) and the walk goes on. `extras`: what schema modules add to the virtio
    payloads' layouts (models/registry.py)."""
    r = _Reader(data)
    header = r.parse(FileHeader, "header")
    if header.magic != QEMU_VM_FILE_MAGIC:
        raise StreamError(f"not a QEMU migration stream (magic {header.magic:#010x}, expected 0x5145564d "
                          "'QEVM')", 0, "header.magic")
    if header.version == QEMU_VM_FILE_VERSION_COMPAT:
        raise StreamError("SaveVM v2 format is obsolete and no longer supported", 4, "header.version")
    if header.version != QEMU_VM_FILE_VERSION:
        raise StreamError(f"unsupported stream version {header.version} (expected 3)", 4, "header.version")
    s = Stream(version=header.version)

    vmdesc_at = find_vmdesc(data)
    descs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    if vmdesc_at is not None:
        raw = data[vmdesc_at + 5 :]
        try:
            s.vmdesc = orjson.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise StreamError(f"JSON description is not valid JSON: {e}", vmdesc_at + 5, "vmdesc") from None
        s.vmdesc_raw = raw
        if not isinstance(s.vmdesc, dict) or not isinstance(s.vmdesc.get("devices", []), list):
            raise StreamError("JSON description has no device list", vmdesc_at + 5, "vmdesc")
        for i, d in enumerate(s.vmdesc.get("devices", [])):
            if isinstance(d, dict):
                instance = d.get("instance_id", 0)
                if not isinstance(instance, int) or isinstance(instance, bool):
                    raise StreamError(f"JSON description: device {d.get('name')!r} has instance_id {instance!r}",
                                      vmdesc_at + 5, f"vmdesc > devices[{i}]")
                descs.setdefault((str(d.get("name")), instance), []).append(d)
        if isinstance(s.vmdesc.get("page_size"), int):
            s.page_size = s.vmdesc["page_size"]
    end_of_sections = vmdesc_at if vmdesc_at is not None else len(data)

    memory = s.memory = GuestMemory(s.page_size)
    iterables: dict[int, str] = {}
    ram_block: list[str | None] = [None]
    footer_state: list[bool | None] = [None]

    def footer(section: Section, path: str) -> None:
        nxt = data[r.pos : r.pos + 1]
        present = nxt == bytes([QEMU_VM_SECTION_FOOTER])
        if footer_state[0] is None:
            footer_state[0] = s.footers = present
        if footer_state[0] and not present:
            raise StreamError(f"missing section footer for {section.idstr or section.section_id}", r.pos,
                              f"{path} > footer")
        if present:
            r.take(1, path)
            f = r.parse(SectionFooter, f"{path} > footer")
            if f.section_id != section.section_id:
                raise StreamError(f"mismatched section id in footer ({f.section_id} != "
                                  f"{section.section_id})", r.pos - 4, f"{path} > footer")

    while True:
        at = r.pos
        kind = r.byte("stream")
        if kind == QEMU_VM_EOF:
            if vmdesc_at is not None and r.pos != vmdesc_at:
                raise StreamError(f"EOF marker at byte {at}, but the JSON description starts at {vmdesc_at}",
                                  at, "stream")
            if vmdesc_at is None and r.pos != len(data):
                raise StreamError(f"{len(data) - r.pos} bytes after EOF that are not a JSON description",
                                  r.pos, "stream")
            break
        if kind == QEMU_VM_CONFIGURATION:
            s.configuration = r.parse(Configuration, "configuration")
            for sub in s.configuration.subsections:
                if sub.name == "configuration/target-page-bits":
                    bits = sub.body.target_page_bits
                    if not 9 <= bits <= 21:
                        raise StreamError(f"target page bits {bits} out of range", r.pos, "configuration")
                    s.page_size = memory.page_size = 1 << bits
            s.records.append(("configuration", s.configuration))
            continue
        if kind == QEMU_VM_COMMAND:
            cmd = r.parse(Command, "command")
            s.records.append(("command", cmd))
            continue
        if kind in (QEMU_VM_SECTION_START, QEMU_VM_SECTION_FULL):
            h = r.parse(SectionHeaderFull, f"section at {at}")
            sec = Section(kind, h.section_id, at, h.idstr, h.instance_id, h.version_id)
        elif kind in (QEMU_VM_SECTION_PART, QEMU_VM_SECTION_END):
            h = r.parse(SectionHeaderPart, f"section at {at}")
            if h.section_id not in iterables:
                raise StreamError(f"{SECTION_NAMES[kind]} section for unknown section id {h.section_id}",
                                  at + 1, "section")
            sec = Section(kind, h.section_id, at, iterables[h.section_id])
        else:
            raise StreamError(f"unknown section type {kind:#04x}", at, "stream")
        path = sec.idstr or f"section {sec.section_id}"

        if kind == QEMU_VM_SECTION_FULL:
            _full_section(r, s, sec, descs, path, end_of_sections, strict, extras)
        else:
            if kind == QEMU_VM_SECTION_START:
                iterables[sec.section_id] = sec.idstr
            name = iterables[sec.section_id]
            if name == "ram":
                head = r.parse(RamBlockList, f"{path} > blocks") if kind == QEMU_VM_SECTION_START else None
                if head is not None:
                    for b in head.blocks:
                        memory.blocks.setdefault(b.idstr, RamBlock(b.idstr, b.used_length))
                pages = r.parse(RamPages(s.page_size), f"{path} > pages")
                apply_pages(memory, pages, ram_block)
                sec.body = (head, pages)
            elif name == "s390-storage_attributes":
                sec.body = r.parse(stattrib_records(s.page_size), path)
            else:
                raise StreamError(f"iterable section {name!r} has a layout this tool does not know", at, path)
        footer(sec, path)
        s.records.append(sec)
    return s


def _full_section(r: _Reader, s: Stream, sec: Section, descs: dict[tuple[str, int], list[dict[str, Any]]],
                  path: str, limit: int, strict: bool = True, extras: Extras = NO_EXTRAS) -> None:
    known = device_of(sec.idstr, s.machine, extras)
    queue = descs.get((sec.idstr, sec.instance_id))
    desc = queue.pop(0) if queue else None
    start = r.pos
    if desc is None:
        if s.vmdesc is not None:
            raise StreamError(f"section {sec.idstr!r} instance {sec.instance_id} is not in the JSON description",
                              sec.offset, path)
        if known is None:
            raise StreamError(f"section {sec.idstr!r} has no JSON description in this stream (machine type "
                              "2.2 or older, or suppress-vmdesc) and its layout is not known to this tool; "
                              "stopping here", sec.offset, path)
        before, vsize, after = 0, None, 0
    else:
        try:
            size = desc_size(desc, r.data, start)
        except BadDescription as e:
            raise StreamError(f"JSON description of {sec.idstr!r}: {e}", limit + 5, f"vmdesc > {path}") from None
        if start + size > limit:
            raise StreamError(f"section {sec.idstr!r} is {size} bytes by its JSON description, but only "
                              f"{limit - start} remain before the description", start, path)
        vf = virtio_field(desc)
        if known is None or vf is None:
            if vf is not None:
                s.notes.append(f"{sec.idstr}: a virtio payload of a device this tool does not decode")
            sec.body = r.take(size, path)
            return
        before, vsize = vf
        after = size - before - vsize
    device, transport = known
    sec.prefix = r.take(before, path)
    off = r.pos
    # without a description the layout alone decides where the payload ends
    raw = error = None
    fields = params = None
    try:
        value, vsize, fields, params = parse_with(r.data, off, vsize, transport, device, f"{path} > virtio",
                                           stream_fields(device, sec.version_id, extras), extras)
    except StreamError as e:
        if strict or vsize is None:
            raise
        # the description still sizes it: keep its bytes (a destination's verdict can be given on them)
        value, raw, error = None, r.data[off : off + vsize], e
        s.notes.append(f"{sec.idstr}: the virtio payload does not decode: {e}")
    r.io.seek(off + vsize)
    payload = VirtioPayload(sec.idstr, sec.instance_id, sec.version_id, device, transport, off, vsize, value,
                            raw, error, fields, extras, params)
    sec.body = payload
    sec.suffix = r.take(after, path)
    s.devices.append(payload)


# --- encoding -----------------------------------------------------------------------------------


def encode_stream(s: Stream) -> bytes:
    """The bytes of a decoded stream, from its decoded values (virtio payloads re-encoded)."""
    out = io.BytesIO()
    resized = False
    FileHeader.build_stream(dict(magic=QEMU_VM_FILE_MAGIC, version=s.version), out)
    for rec in s.records:
        if isinstance(rec, tuple):
            kind, value = rec
            if kind == "configuration":
                out.write(bytes([QEMU_VM_CONFIGURATION]))
                Configuration.build_stream(value, out)
            else:
                out.write(bytes([QEMU_VM_COMMAND]))
                Command.build_stream(value, out)
            continue
        sec: Section = rec
        out.write(bytes([sec.kind]))
        if sec.kind in (QEMU_VM_SECTION_START, QEMU_VM_SECTION_FULL):
            SectionHeaderFull.build_stream(dict(section_id=sec.section_id, idstr=sec.idstr,
                                                instance_id=sec.instance_id, version_id=sec.version_id), out)
        else:
            SectionHeaderPart.build_stream(dict(section_id=sec.section_id), out)
        if isinstance(sec.body, VirtioPayload):
            out.write(sec.prefix)
            payload = sec.body.encode()
            if len(payload) != sec.body.size:
                resized = _resize_virtio_field(s, sec, len(payload)) or resized
            out.write(payload)
            out.write(sec.suffix)
        elif isinstance(sec.body, tuple):  # ram
            head, pages = sec.body
            if head is not None:
                RamBlockList.build_stream(head, out)
            RamPages(s.page_size).build_stream(pages, out)
        elif isinstance(sec.body, list):  # storage attributes
            stattrib_records(s.page_size).build_stream(sec.body, out)
        else:
            out.write(sec.body)
        if s.footers:
            out.write(bytes([QEMU_VM_SECTION_FOOTER]))
            out.write(struct.pack(">I", sec.section_id))
    out.write(bytes([QEMU_VM_EOF]))
    raw = s.vmdesc_raw
    if resized and s.vmdesc is not None:
        raw = json.dumps(s.vmdesc).encode()  # QEMU's JSON writer uses the same separators
    if raw is not None:
        out.write(bytes([QEMU_VM_VMDESCRIPTION]) + struct.pack(">I", len(raw)) + raw)
    return out.getvalue()


def _resize_virtio_field(s: Stream, sec: Section, size: int) -> bool:
    """Keep the JSON description true when an edited payload changed its length."""
    for d in (s.vmdesc or {}).get("devices", []):
        if d.get("name") == sec.idstr and d.get("instance_id") == sec.instance_id:
            for f in d.get("fields", []):
                if f.get("type") == "virtio":
                    f["size"] = size
                    return True
    return False
