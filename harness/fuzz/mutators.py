"""The mutations: edits of one View (a seed stream or one of its payloads), found by its field map, and rewrites
of the JSON description."""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from harness.fuzz.fields import Field, Seed, View

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


def pick_field(rng: random.Random, view: View, kinds: str = "any") -> Field | None:
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
    f = pick_field(rng, view)
    if f is None:
        return b"\x00", "a zero byte"
    return view.data[f.offset : f.offset + min(f.size, 1 << 16)], f"a copy of {f.path}"


_SUBSECTION_NAMES = ("virtio/device_endian", "virtio/64bit_features", "virtio/virtqueues", "virtio/ringsize",
                     "virtio/extra_state", "virtio/started", "virtio/broken", "virtio/packed_virtqueues",
                     "virtio/disabled", "virtio/128bit_features", "virtio-net-device/rss", "virtio_pci/modern_state",
                     "virtio_mmio/state", "virtio-balloon-device/page-poison", "s390_subch_dev/orb",
                     "configuration/target-page-bits", "virtio/zzz", "virtio")


def _position(rng: random.Random, view: View) -> tuple[int, str]:
    f = pick_field(rng, view)
    if f is None or rng.random() < 0.2:
        at = rng.randrange(len(view.data) + 1)
        return at, f"byte {at}"
    if rng.random() < 0.5:
        return f.offset, f"the start of {f.path}"
    return f.offset + f.size, f"the end of {f.path}"


def m_flip(rng: random.Random, view: View) -> tuple[list[Edit], str]:
    if not view.data:
        return [], "nothing to flip"
    f = pick_field(rng, view)
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
    f = pick_field(rng, view)
    if f is not None and rng.random() < 0.6:
        return [(f.offset, f.size, b"")], f"delete {f.path}"
    at, where = _position(rng, view)
    n = rng.choice((1, 1, 2, 3, 4, 8, 16))
    return [(at, n, b"")], f"delete {n} byte(s) at {where}"


def m_duplicate(rng: random.Random, view: View) -> tuple[list[Edit], str]:
    f = pick_field(rng, view, "group" if rng.random() < 0.5 else "any")
    if f is not None and rng.random() < 0.7:
        copies = rng.choice((1, 1, 2, 16))
        return [(f.offset + f.size, 0, view.data[f.offset : f.offset + f.size] * copies)], \
            f"duplicate {f.path} x{copies}"
    at, where = _position(rng, view)
    n = rng.choice((1, 2, 4, 8, 16))
    return [(at, 0, view.data[at : at + n])], f"duplicate {n} byte(s) at {where}"


def m_length(rng: random.Random, view: View) -> tuple[list[Edit], str]:
    f = pick_field(rng, view, "count" if rng.random() < 0.7 else "int")
    if f is None:
        return m_flip(rng, view)
    edit, note = _set_int(rng, view, f)
    return [edit], note


def m_truncate(rng: random.Random, view: View) -> tuple[list[Edit], str]:
    at, where = _position(rng, view)
    at = min(max(at + rng.choice((-1, 0, 0, 1)), 0), len(view.data))
    return [(at, len(view.data) - at, b"")], f"truncate at {where}"


STRUCTURAL: dict[str, Callable[[random.Random, View], tuple[list[Edit], str]]] = {
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
