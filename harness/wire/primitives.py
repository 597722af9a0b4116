"""vmstate primitives in construct, and the few construct subclasses the stream layouts need.

QEMU writes every integer big-endian (qemu_put_be16/32/64); raw buffers are copied as they are.
Reference: ../shared/reference/qemu-virtio-migration.md §1.4 and §1.5.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Mapping
from typing import Any

import construct as c
from construct import Container, ListContainer

from harness.errors import StreamError

# --- vmstate integer types (VMSTATE_UINT8 .. VMSTATE_INT64) -------------------------------------

u8 = c.Int8ub
be16 = c.Int16ub
be32 = c.Int32ub
be64 = c.Int64ub
sbe32 = c.Int32sb
# VMSTATE_BOOL saves 0/1 and loads any byte as a C bool; kept as the byte so that encoding is exact.
vbool = c.Int8ub

QEMU_VM_SUBSECTION = 0x05


# --- arrays whose error paths carry the index ------------------------------------------------------


class Array(c.Array):  # type: ignore[misc]
    """construct.Array whose error path names the element: `queues[2] -> desc`."""

    def _parse(self, stream: Any, context: Any, path: str) -> Any:
        count = c.evaluate(self.count, context)
        if not 0 <= count:
            raise c.RangeError(f"invalid count {count}", path=path)
        obj = ListContainer()
        for i in range(count):
            context._index = i
            obj.append(self.subcon._parsereport(stream, context, f"{path}[{i}]"))
        return obj


# --- the fast path for flat, fixed-size arrays ---------------------------------------------------


def _format_of(sc: Any) -> tuple[str, str, tuple[str, ...]]:
    """(byte order, struct codes, field names) of an integer field or a Struct of integer fields."""
    while isinstance(sc, c.Renamed):
        sc = sc.subcon
    if isinstance(sc, c.FormatField):
        return sc.fmtstr[0], sc.fmtstr[1:], ()
    if isinstance(sc, c.Struct):
        orders, codes, names = set(), "", []
        for sub in sc.subcons:
            order, code, inner = _format_of(sub)
            if inner or not sub.name:
                raise TypeError(f"FlatArray: {sub} is not a named integer field")
            orders.add(order)
            codes += code
            names.append(sub.name)
        if len(orders) != 1:
            raise TypeError("FlatArray: fields of one element must share a byte order")
        return orders.pop(), codes, tuple(names)
    raise TypeError(f"FlatArray: cannot derive a struct format from {sc}")


_ZERO_BLOCK = bytes(1024)


def _nonzero_span(data: bytes) -> tuple[int, int] | None:
    """[start, end) of the bytes that are not zero, or None; memcmp by 1 KB blocks, then strip."""
    n, step = len(data), len(_ZERO_BLOCK)
    i = 0
    while i + step <= n and data.startswith(_ZERO_BLOCK, i):
        i += step
    head = data[i : i + step]
    skip = len(head) - len(head.lstrip(b"\0"))
    if skip == len(head):
        return None
    start = i + skip
    j = n
    while j - step >= start and data.endswith(_ZERO_BLOCK, 0, j):
        j -= step
    lo = max(start, j - step)
    return start, lo + len(data[lo:j].rstrip(b"\0"))


class FlatArray(c.Construct):  # type: ignore[misc]
    """An array of integers, or of Structs of integers, parsed and built with one `struct` call.

    The format is derived from the plain construct declaration given as `subcon`, so the layout
    is declared once; tests check that it agrees with `construct.Array(count, subcon)`.
    Elements are ints (integer subcon) or tuples in field order (Struct subcon; see `.names`).
    """

    def __init__(self, count: Any, subcon: Any) -> None:
        super().__init__()
        self.count = count
        self.subcon = subcon
        self.order, self.codes, self.names = _format_of(subcon)
        self.itemsize = struct.calcsize(self.order + self.codes)
        self._item = struct.Struct(self.order + self.codes)
        self.zero: Any = (0,) * len(self.names) if self.names else 0
        self._cache: dict[int, struct.Struct] = {}

    def _whole(self, n: int) -> struct.Struct:
        s = self._cache.get(n)
        if s is None:
            # `>4096H`, not 4096 codes: a Struct keeps about 32 bytes per code, and n comes from the stream (an rss
            # indirection table of 65535 entries made a 2 MB Struct, and the cache kept 64 of them)
            s = struct.Struct(f"{self.order}{n}{self.codes}" if len(self.codes) == 1 else self.order + self.codes * n)
            if len(self._cache) < 64:
                self._cache[n] = s
        return s

    def _parse(self, stream: Any, context: Any, path: str) -> Any:
        n = c.evaluate(self.count, context)
        if n < 0:
            raise c.RangeError(f"invalid count {n}", path=path)
        size = self.itemsize
        data = c.stream_read(stream, n * size, path)
        # QEMU's fixed 1024-entry arrays are mostly zero: unpack only the span that is not
        out = [self.zero] * n
        span = _nonzero_span(data)
        if span is None:
            return out
        a, b = span[0] // size, -(-span[1] // size)
        chunk = data[a * size : b * size]
        out[a:b] = self._whole(b - a).unpack(chunk) if not self.names else self._item.iter_unpack(chunk)
        return out

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        n = c.evaluate(self.count, context)
        if len(obj) > n:
            raise c.RangeError(f"expected {n} elements, found {len(obj)}", path=path)
        # a shorter list stands for trailing zero elements (QEMU's 1024-entry arrays are mostly zero)
        zero, a, b = self.zero, 0, len(obj)
        while b > 0 and (obj[b - 1] is zero or obj[b - 1] == zero):
            b -= 1
        while a < b and (obj[a] is zero or obj[a] == zero):
            a += 1
        try:
            span = obj[a:b] if not self.names else [v for item in obj[a:b] for v in item]
            data = self._whole(b - a).pack(*span)
        except (struct.error, TypeError) as e:
            raise c.FormatFieldError(f"cannot pack {self.codes}: {e}", path=path) from e
        pad = bytes(a * self.itemsize)
        c.stream_write(stream, pad + data + bytes((n - b) * self.itemsize), n * self.itemsize, path)
        return obj

    def _sizeof(self, context: Any, path: str) -> int:
        return int(c.evaluate(self.count, context)) * self.itemsize


# --- vmstate subsections ---------------------------------------------------------------------------


class UnknownSubsection(c.ExplicitError):  # type: ignore[misc]
    """A subsection name with the parent's prefix that the layout does not know (QEMU: -ENOENT)."""

    def __init__(self, name: str, path: str, parent: str = "") -> None:
        super().__init__(f"unknown subsection {name!r} (not in this tool's layouts)", path=path)
        self.name = name
        self.parent = parent  # the vmsd whose subsection list was being read


class Subsections(c.Construct):  # type: ignore[misc]
    """The subsection list after a vmsd's fields (vmstate_subsection_save / _load).

    Each entry is `0x05, name_len u8, name, version_id be32, body`. Parsing stops, as QEMU's loader
    does, at a byte other than 0x05 or at a name that does not start with the parent vmsd name; a
    name with the prefix that is not in `known` is an error (QEMU fails the load with -ENOENT).
    The value is a list of Containers (name, version_id, body), in stream order.
    `known` maps the full subsection name to its body, or to a function of the version_id giving it.
    A known name without the prefix is one QEMU wrote in this list all the same (5.1's misspelt
    `vitio-balloon-device/page-poison`): it is read as an entry, though every QEMU loader stops there.
    """

    def __init__(self, parent: str, known: Mapping[str, Any]) -> None:
        super().__init__()
        self.parent = parent
        self.known = dict(known)

    def body(self, name: str, version_id: int) -> Any:
        body = self.known[name]
        return body(version_id) if callable(body) and not isinstance(body, c.Construct) else body

    def _parse(self, stream: Any, context: Any, path: str) -> Any:
        out = ListContainer()
        while True:
            start = stream.tell()
            head = stream.read(2)
            if len(head) < 2 or head[0] != QEMU_VM_SUBSECTION:
                stream.seek(start)
                return out
            raw = stream.read(head[1])
            # vmstate_subsection_load compares C strings: the name ends at its first NUL
            name = raw.split(b"\0", 1)[0].decode("latin-1")
            if len(raw) != head[1] or (name not in self.known and (head[1] < len(self.parent) + 1
                                                                    or not name.startswith(self.parent))):
                stream.seek(start)
                return out
            if name not in self.known:
                raise UnknownSubsection(name, f"{path} -> {name}", self.parent)
            # the entries loaded so far, for a VMSTATE_*_TEST in a later body: QEMU loads them into the device in
            # stream order (models/declared.py reads them from the context; the parsed value is apart from it)
            context["_subsections"] = out
            version_id = c.Int32ub._parsereport(stream, context, f"{path} -> {name} -> version_id")
            # QEMU keeps the version in a uint8_t: that is the version the body is read with
            body = self.body(name, version_id & 0xFF)._parsereport(stream, context, f"{path} -> {name}")
            entry = Container(name=name, version_id=version_id, body=body)
            if raw != name.encode("latin-1"):
                entry.raw_name = raw  # rebuilt as it was read
            out.append(entry)

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        for sub in obj:
            name = sub["name"]
            if name not in self.known:
                raise c.ExplicitError(f"unknown subsection {name!r}", path=path)
            raw = sub.get("raw_name") or name.encode("latin-1")
            c.stream_write(stream, bytes([QEMU_VM_SUBSECTION, len(raw)]) + raw, 2 + len(raw), path)
            c.Int32ub._build(sub["version_id"], stream, context, path)
            self.body(name, sub["version_id"] & 0xFF)._build(sub["body"], stream, context, f"{path} -> {name}")
        return obj

    def _sizeof(self, context: Any, path: str) -> int:
        raise c.SizeofError("subsections have no fixed size", path=path)


def subsection(subs: list[Any], name: str) -> Any:
    """The body of the subsection `name` in a parsed Subsections list, or None."""
    for sub in subs:
        if sub.name == name:
            return sub.body
    return None


# --- raw buffers whose size the bytes themselves decide -------------------------------------------


class Peeked(c.Construct):  # type: ignore[misc]
    """Bytes whose length is decided by a function of the bytes peeked at the start (e.g. a PCI
    config space is 4096 bytes when its first 256 name a PCI Express capability)."""

    def __init__(self, peek: int, length: Callable[[bytes], int]) -> None:
        super().__init__()
        self.peek = peek
        self.length = length

    def _parse(self, stream: Any, context: Any, path: str) -> Any:
        start = stream.tell()
        head = c.stream_read(stream, self.peek, path)
        stream.seek(start)
        return c.stream_read(stream, self.length(head), path)

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        want = self.length(bytes(obj[: self.peek]))
        if len(obj) != want:
            raise c.ExplicitError(f"expected {want} bytes, found {len(obj)}", path=path)
        c.stream_write(stream, bytes(obj), len(obj), path)
        return obj


class NonZeroList(c.Construct):  # type: ignore[misc]
    """`while (qemu_get_sbyte(f)) { item }`: items each after a non-zero byte, ended by a 0 byte
    (virtio-blk's request list). Builds 0x01 before each item."""

    def __init__(self, subcon: Any) -> None:
        super().__init__()
        self.subcon = subcon

    def _parse(self, stream: Any, context: Any, path: str) -> Any:
        out = ListContainer()
        while c.stream_read(stream, 1, f"{path}[{len(out)}] -> more")[0]:
            out.append(self.subcon._parsereport(stream, context, f"{path}[{len(out)}]"))
        return out

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        for i, item in enumerate(obj):
            c.stream_write(stream, b"\x01", 1, path)
            self.subcon._build(item, stream, context, f"{path}[{i}]")
        c.stream_write(stream, b"\x00", 1, path)
        return obj


class Derived(c.Computed):  # type: ignore[misc]
    """A value computed from fields already read (never on the wire); compiles as a linked call."""

    def _emitparse(self, code: Any) -> str:
        raise NotImplementedError

    def _emitbuild(self, code: Any) -> str:
        raise NotImplementedError


class When(c.IfThenElse):  # type: ignore[misc]
    """`If` with a Python condition (interpreted inside compiled layouts)."""

    def __init__(self, condfunc: Callable[[Any], Any], subcon: Any) -> None:
        super().__init__(condfunc, subcon, c.Pass)

    def _emitparse(self, code: Any) -> str:
        raise NotImplementedError

    def _emitbuild(self, code: Any) -> str:
        raise NotImplementedError


def local(name: str, inferred: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A layout decision QEMU's loader takes from the destination's own device (not from the stream):
    the parse parameter `name` when a model destination gives it, else inferred from the stream."""

    def decide(ctx: Any) -> Any:
        params = getattr(ctx, "_params", None) or {}
        value = params.get(name)
        return inferred(ctx) if value is None else value

    return decide


# --- parsing with QEMU-style errors ----------------------------------------------------------------


class _TrackingIO(io.BytesIO):
    """BytesIO that remembers where the last read started (used only to locate an error)."""

    last_read = 0

    def read(self, n: int | None = -1) -> bytes:
        self.last_read = self.tell()
        return super().read(n)

    def seek(self, pos: int, whence: int = 0) -> int:
        # parsers that read through getbuffer() (RamPages) seek to the record they fail on before raising
        self.last_read = super().seek(pos, whence)
        return self.last_read


def field_path(construct_path: str, prefix: str = "") -> str:
    """`(parsing) -> queues[2] -> desc` as `prefix > queues[2].desc`."""
    parts = [p for p in construct_path.split(" -> ") if p and not p.startswith("(")]
    inner = ".".join(parts)
    return f"{prefix} > {inner}" if prefix and inner else (prefix or inner)


def _stream_error(e: BaseException, offset: int, prefix: str) -> StreamError:
    if not isinstance(e, c.ConstructError):
        return StreamError(f"cannot decode: {e}", offset, prefix)
    msg = str(e).split("\n")[-1].strip()
    msg = msg.split(": ", 1)[-1] if msg.startswith("Error in path") else msg
    if "stream read less than specified amount" in msg:
        msg = f"stream ends inside this field ({msg.split(', ', 1)[-1]} bytes left)"
    return StreamError(msg, offset, field_path(e.path or "", prefix))


_DECODE_ERRORS = (c.ConstructError, struct.error, ValueError, OverflowError, MemoryError, RecursionError)


def locate_error(layout: Any, data: bytes, start: int, base: int, prefix: str, **ctx: Any) -> StreamError:
    """Parse `data` from `start` again with `layout` (interpreted) to find where and in which field
    it fails; offsets are `base` + position in `data`."""
    t = _TrackingIO(data)
    t.seek(start)
    try:
        layout.parse_stream(t, **ctx)
    except _DECODE_ERRORS as e:
        return _stream_error(e, base + t.last_read, prefix)
    return StreamError("cannot decode", base + start, prefix)


def parse_exact(fast: Any, slow: Any, data: bytes, base: int, prefix: str, **ctx: Any) -> Any:
    """Parse `data` with `fast` (compiled), require every byte to be used, and on any failure
    re-parse with `slow` (interpreted) to report the byte offset (`base` + position) and path."""
    s = io.BytesIO(data)
    try:
        value = fast.parse_stream(s, **ctx)
    except _DECODE_ERRORS:
        raise locate_error(slow, data, 0, base, prefix, **ctx) from None
    if s.tell() != len(data):
        raise StreamError(f"{len(data) - s.tell()} bytes left over after the last known field",
                          base + s.tell(), prefix)
    return value
