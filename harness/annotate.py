"""The field path of every byte range of a payload, derived from its construct layout, and an annotated hex dump.

`annotate` parses once with the layout itself, recording where each construct's `_parsereport` starts and ends
in the stream (so the paths are the layout's own, with our Array's `[i]` suffixes); nothing here declares a
layout. Bytes a construct reads without a sub-construct (a subsection's 0x05/name header, virtio-blk's
"more" byte) are attributed to the enclosing field.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field
from typing import Any

import construct as c

from harness.wire.primitives import _DECODE_ERRORS, Subsections

Entry = tuple[int, int, str, Any]  # (start, end) byte offsets (end exclusive), field path, value
UNDECODED = "(not decoded)"
LEFT_OVER = "(left over)"

_lock = threading.Lock()


@dataclass
class _Node:
    construct: Any
    path: str  # construct's raw path: "(parsing) -> queues[2] -> desc"
    start: int
    end: int | None = None
    value: Any = None
    children: list[_Node] = field(default_factory=list)


class _Recorder:
    """Replaces Construct._parsereport for the duration of one parse, in one thread."""

    def __init__(self) -> None:
        self.stack: list[_Node] = []
        self.root: _Node | None = None
        self.subsections: set[str] = set()  # raw paths of Subsections constructs
        self.thread = threading.get_ident()

    def install(self) -> Any:
        original = c.Construct._parsereport
        rec = self

        def _parsereport(sc: Any, stream: Any, context: Any, path: str) -> Any:
            if threading.get_ident() != rec.thread:
                return original(sc, stream, context, path)
            node = _Node(sc, path, stream.tell())
            (rec.stack[-1].children if rec.stack else []).append(node)
            if rec.root is None:
                rec.root = node
            if isinstance(sc, Subsections):
                rec.subsections.add(path)
            rec.stack.append(node)
            obj = original(sc, stream, context, path)  # an exception leaves node.end None
            rec.stack.pop()
            node.end, node.value = stream.tell(), obj
            return obj

        c.Construct._parsereport = _parsereport
        return original


def _segments(path: str) -> list[str]:
    return [p for p in path.split(" -> ") if p and not p.startswith("(")]


def _render(segments: list[str], subsections: set[str]) -> str:
    """`subsections -> virtio/virtqueues -> vqs` as `subsections[virtio/virtqueues].vqs`."""
    sub_segments = {tuple(_segments(p)) for p in subsections}
    out = ""
    for i, seg in enumerate(segments):
        if tuple(segments[:i]) in sub_segments:
            out += f"[{seg}]"
        else:
            out += ("." if out else "") + seg
    return out


def _gap_label(node: _Node, following: _Node | None) -> list[str]:
    """Where bytes read by `node` itself belong: to the child they introduce (one level below node), else node."""
    mine = _segments(node.path)
    if following is not None:
        theirs = _segments(following.path)
        n = len(mine)
        if theirs[:n] == mine and len(theirs) > n:
            return theirs[: n + 1]  # a subsection's header
        if n and theirs[: n - 1] == mine[:-1] and len(theirs) >= n and theirs[n - 1].startswith(mine[-1] + "["):
            return theirs[:n]  # an element's marker: requests[0]
    return mine


def _walk(node: _Node, rec: _Recorder, out: list[Entry]) -> int:
    """Append the leaves and framing bytes of `node`; returns the offset it covered up to."""
    kids = [k for k in node.children if k.end is None or k.end > k.start]
    if not kids:
        if node.end is not None and node.end > node.start:
            out.append((node.start, node.end, _render(_segments(node.path), rec.subsections), node.value))
        return node.end if node.end is not None else node.start
    pos = node.start
    for k in kids:
        if k.start > pos:
            out.append((pos, k.start, _render(_gap_label(node, k), rec.subsections), None))
        pos = max(pos, _walk(k, rec, out))
        if k.end is None:
            return pos  # the parse failed inside k
    if node.end is not None and node.end > pos:
        out.append((pos, node.end, _render(_gap_label(node, None), rec.subsections), None))
        pos = node.end
    return pos


def annotate(layout: Any, data: bytes, **params: Any) -> list[Entry]:
    """(start, end, field path, value) for every byte range of `data` parsed with the (interpreted) construct
    `layout`, in stream order, covering every byte. A value of None marks framing bytes (subsection headers,
    list markers). If the parse fails, the rest is one entry UNDECODED whose value is the error; bytes after
    the layout's end are one entry LEFT_OVER."""
    rec = _Recorder()
    stream = io.BytesIO(data)
    error: str | None = None
    with _lock:
        original = rec.install()
        try:
            layout.parse_stream(stream, **params)
        except _DECODE_ERRORS as e:
            msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            path = _render(_segments(getattr(e, "path", "") or ""), rec.subsections)
            error = f"{path}: {msg.split(': ', 1)[-1]}" if path else msg
        finally:
            c.Construct._parsereport = original
    out: list[Entry] = []
    end = _walk(rec.root, rec, out) if rec.root is not None else 0
    if error is not None:
        out.append((end, len(data), UNDECODED, error))
    elif end < len(data):
        out.append((end, len(data), LEFT_OVER, None))
    return out


# --- the dump ---------------------------------------------------------------------------------------------

SHOW_BYTES = 16  # a range longer than this shows its first bytes and its length
HEAD_BYTES = 8


def _hex(raw: bytes) -> str:
    if len(raw) <= SHOW_BYTES:
        return raw.hex(" ")
    return f"{raw[:HEAD_BYTES].hex(' ')} ... {len(raw)} bytes"


def _scalar(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return str(v) if 0 <= v < 10 else f"{v} ({v:#x})"
    if isinstance(v, tuple):
        return "(" + ", ".join(_scalar(x) if not isinstance(x, int) or x < 10 else hex(x) for x in v) + ")"
    return repr(v)


def format_value(v: Any, limit: int = 4) -> str:
    """A short readable value: integers in decimal and hex, zero runs and long arrays summarised."""
    if v is None:
        return ""
    if isinstance(v, (bytes, bytearray)):
        if not any(v):
            return ("1 zero byte" if len(v) == 1 else f"{len(v)} zero bytes") if v else "empty"
        if len(v) <= SHOW_BYTES:
            text = bytes(v).decode("latin-1")
            return repr(text) if text.isprintable() and text.isascii() else bytes(v).hex()
        nonzero = sum(1 for b in v if b)
        return f"{len(v)} bytes, {nonzero} non-zero"
    if isinstance(v, list):
        zero = (0,) * len(v[0]) if v and isinstance(v[0], tuple) else 0
        set_ = [(i, x) for i, x in enumerate(v) if x != zero]
        if not set_:
            return f"{len(v)} entries, all zero"
        shown = ", ".join(f"[{i}]={_scalar(x)}" for i, x in set_[:limit])
        more = f", ... {len(set_) - limit} more" if len(set_) > limit else ""
        return f"{len(v)} entries, {len(set_)} non-zero: {shown}{more}"
    return _scalar(v)


def _framing(raw: bytes) -> str:
    """Framing bytes, with the name they carry (a subsection header's) when there is one."""
    text = "".join(chr(b) if 32 < b < 127 else " " for b in raw).split()
    names = [t for t in text if len(t) >= 3]
    return "(framing" + (f": {names[0]!r})" if names else ")")


def format_dump(entries: list[Entry], data: bytes, path_width: int = 48) -> str:
    """An annotated hex dump: offset, bytes (abbreviated for long ranges), field path, value; one line a range."""
    width = min(max((len(p) for _, _, p, _ in entries), default=4), path_width)
    lines = [f"{'offset':<8}  {'bytes':<{3 * SHOW_BYTES - 1}}  {'field':<{width}}  value"]
    for start, end, path, value in entries:
        if path == UNDECODED:
            shown = str(value)
        elif value is None and path != LEFT_OVER:
            shown = _framing(data[start:end])
        else:
            shown = format_value(value)
        lines.append(f"{start:08x}  {_hex(data[start:end]):<{3 * SHOW_BYTES - 1}}  {path:<{width}}  {shown}".rstrip())
    return "\n".join(lines)


def _short(v: Any) -> str:
    if isinstance(v, bytes | bytearray) and len(v) > 16:
        return f"<{len(v)} bytes>"
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def tree_diff(a: Any, b: Any, path: str = "", limit: int = 8, names: tuple[str, str] = ("a", "b")) -> list[str]:
    """The paths where two decoded trees differ (`a`'s value, then `b`'s, each side named by `names`), at most
    `limit`. Lists of subsections are matched by name: one sent by one side only is named as such."""
    out: list[str] = []
    na, nb = names
    if isinstance(a, dict) and isinstance(b, dict):
        for k in a:
            if k.startswith("_"):
                continue
            out += tree_diff(a[k], b.get(k), f"{path}.{k}" if path else k, limit - len(out), names)
            if len(out) >= limit:
                break
    elif isinstance(a, list) and isinstance(b, list) and all(isinstance(x, dict) and "name" in x for x in a + b):
        an, bn = [x["name"] for x in a], [x["name"] for x in b]
        if an != bn:
            out.append(f"{path}: {na} sends {an}, {nb} sends {bn}")
        for x in a:
            y = next((y for y in b if y["name"] == x["name"]), None)
            if y is not None and len(out) < limit:
                out += tree_diff(x, y, f"{path}[{x['name']}]", limit - len(out), names)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            out += tree_diff(x, y, f"{path}[{i}]", limit - len(out), names)
            if len(out) >= limit:
                break
    elif a != b:
        out.append(f"{path}: {na} {_short(a)}, {nb} {_short(b)}")
    return out[:limit]
