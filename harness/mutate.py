"""Boundary mutations of a real stream's virtio payloads, field by field (issue 11, hostile streams).

The payloads are decoded once (`fuzz.field_map`, which records where every field is); each integer field gets
the values QEMU's load checks sit on: 0, 1, max-1, max, one off its value, and by its name the destination's
limits (queue sizes, VIRTIO_QUEUE_MAX, the MSI-X table, MAC_TABLE_ENTRIES, features outside the offer).
Subsection names and versions the destination does not know, counts that desynchronize what follows, bytes of
the PCI config space and the stream cut inside each field are mutations too. A mutation is a list of edits of
the whole stream, so it is small to keep and its bytes are made again exactly.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness import fuzz
from harness.fuzz.fields import recording
from harness.wire.primitives import FlatArray, field_path
from harness.wire.virtio import VIRTIO_QUEUE_MAX, VIRTQUEUE_MAX_SIZE, payload_layout
from harness.wire.vmdesc import find_vmdesc
from models.config import Realized
from models.devices.net import MAC_TABLE_ENTRIES

Edit = fuzz.Edit


@dataclass(frozen=True)
class Mutation:
    section: str
    field: str  # the field path, as `decode` names it (`virtio > queues[0].num`)
    what: str  # `= 0x400 (was 0x100)`, `cut after 2 of 4 bytes`, ...
    edits: tuple[Edit, ...]
    resize: tuple[int, int] | None = None  # (instance_id, payload size): the JSON description says the new size

    @property
    def name(self) -> str:
        return f"{self.section} > {self.field.removeprefix('virtio > ')} {self.what}"

    def apply(self, data: bytes) -> bytes:
        out = fuzz.apply_edits(data, self.edits)
        at = find_vmdesc(out) if self.resize else None
        if self.resize and at is not None:  # so that the decoder walks on past the payload, as QEMU reads on
            out = fuzz.with_payload_size(out, at, self.section, *self.resize)
        return out

    def as_json(self) -> dict[str, Any]:
        return {"section": self.section, "field": self.field, "what": self.what,
                "edits": [[at, n, new.hex()] for at, n, new in self.edits],
                **({"resize": list(self.resize)} if self.resize else {})}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Mutation:
        edits = tuple((int(e[0]), int(e[1]), bytes.fromhex(str(e[2]))) for e in d["edits"])
        resize = (int(d["resize"][0]), int(d["resize"][1])) if d.get("resize") else None
        return cls(str(d["section"]), str(d["field"]), str(d["what"]), edits, resize)


def _leaf(path: str) -> str:
    return re.split(r"[.> ]", re.sub(r"\[\d+\]", "", path))[-1]


def int_values(path: str, value: int, size: int, r: Realized | None, num_queues: int) -> list[int]:
    """The boundary values of an integer field, by what it is."""
    top = (1 << (8 * size)) - 1
    out = {0, 1, top - 1, top, value - 1, value + 1}
    leaf = _leaf(path)
    qmax = (VIRTIO_QUEUE_MAX - 1, VIRTIO_QUEUE_MAX, VIRTIO_QUEUE_MAX + 1)
    sizes = list(r.queue_sizes) if r is not None else [256]
    if leaf in ("num", "num_default"):
        out |= {n + d for n in set(sizes) for d in (-1, 0, 1)} | {VIRTQUEUE_MAX_SIZE, VIRTQUEUE_MAX_SIZE + 1}
    elif leaf == "num_queues":
        out |= {num_queues + 1, len(sizes), len(sizes) + 1, *qmax}
    elif leaf == "queue_sel":
        out |= {num_queues, len(sizes), *qmax}
    elif leaf in ("vector", "config_vector"):
        vectors = r.vectors if r is not None else 0
        out |= {vectors - 1, vectors, vectors + 1, 0xFFFE, 0xFFFF}
    elif "features" in leaf and r is not None:
        outside = [b for b in range(8 * size) if not (r.host_features >> b) & 1 and not (value >> b) & 1]
        out |= {value | 1 << b for b in outside[:3] + outside[-2:]}
        out |= {r.host_features & top, value | (r.host_features & top)}
    elif leaf == "last_avail_idx":
        n = sizes[0]
        out |= {n, n + 1, 0x7FFF, 0x8000, value + n, value + n + 1}
    elif leaf == "config_len":
        # virtio_load skips the excess one qemu_get_byte() at a time: 4 G of them keep QEMU busy for minutes
        out = {v for v in out if v <= 0xFFFF} | ({r.config_len - 1, r.config_len + 1} if r is not None else set())
    elif leaf in ("mac_table_in_use", "first_multi"):
        out |= {MAC_TABLE_ENTRIES, MAC_TABLE_ENTRIES + 1, VIRTQUEUE_MAX_SIZE + 1}
    elif leaf in ("in_num", "out_num", "indirections_len", "count", "len", "length"):
        out |= {VIRTQUEUE_MAX_SIZE, VIRTQUEUE_MAX_SIZE + 1}
    elif leaf == "version_id":
        out |= {2, 3}
    elif leaf in ("status", "device_endian", "broken", "started", "disabled"):
        out |= {2, 0x40, 0x80}
    return sorted(v for v in out if 0 <= v <= top and v != value)


def _flat_elements(chunk: bytes, transport: str, device: str, num_queues: int
                   ) -> Iterator[tuple[str, int, int, int]]:
    """The integer fields of the first `num_queues + 1` elements of each fixed 1024-entry array (the queues'
    rows, which field_map keeps whole): (path, offset, size, value)."""
    with recording() as records:
        payload_layout(transport, device).parse(chunk)
    for path, con, start, _end, _obj, _top in records:
        inner = con.subcon if hasattr(con, "subcon") and not isinstance(con, FlatArray) else con
        if not isinstance(inner, FlatArray):
            continue
        name = field_path(path, "virtio") or "virtio"
        codes = re.findall(r"\d*[a-zA-Z?]", inner.codes)
        sizes = [struct.calcsize(inner.order + code) for code in codes]
        names = inner.names or ("",)
        count = min(num_queues + 1, VIRTIO_QUEUE_MAX)
        if "indirections" in name or "addr" in name or "_sg" in name or "tx_waiting" in name:
            count = 1
        for i in range(count):
            at = start + i * inner.itemsize
            for fname, size in zip(names, sizes, strict=False):
                if at + size > len(chunk) or fname == "unused":
                    at += size
                    continue
                value = int.from_bytes(chunk[at : at + size], "big" if inner.order == ">" else "little")
                yield f"{name}[{i}]{'.' + fname if fname else ''}", at, size, value
                at += size


def _unknown_name(raw: bytes) -> list[tuple[bytes, str]]:
    """Names of the same length the destination does not know: the last letter changed (the parent's prefix kept),
    and the first one changed (the prefix lost: QEMU's loader stops before it)."""
    last = raw[:-1] + (b"X" if raw[-1:] != b"X" else b"Y")
    first = (b"X" if raw[:1] != b"X" else b"Y") + raw[1:]
    return [(last, f"named {last.decode('latin-1')!r} (unknown)"), (first, f"named {first.decode('latin-1')!r}")]


def mutations(data: bytes, realized: Mapping[str, Realized] | None = None, *, cuts: bool = True
              ) -> list[Mutation]:
    """Every boundary mutation of every virtio payload field of `data` (a stream that decodes); `realized`, the
    destination's devices by section, gives the limits."""
    _view, payloads, _vmdesc = fuzz.field_map(data)
    out: list[Mutation] = []
    for ref, pview in payloads:
        out += _payload_mutations(ref, pview, (realized or {}).get(ref.section), cuts)
    return out


def _payload_mutations(ref: fuzz.PayloadRef, pview: fuzz.View, r: Realized | None, cuts: bool
                       ) -> list[Mutation]:
    out: list[Mutation] = []
    base, chunk = ref.offset, pview.data
    seen: set[tuple[int, int]] = set()
    nq = next((f.value for f in pview.fields if f.path == "virtio > num_queues" and f.kind == "int"), 1)

    def put(path: str, at: int, size: int, new: bytes, what: str) -> None:
        out.append(Mutation(ref.section, path, what, ((base + at, size, new),)))

    def ints(path: str, at: int, size: int, value: int) -> None:
        if (at, size) in seen:
            return
        seen.add((at, size))
        for v in int_values(path, value, size, r, nq):
            put(path, at, size, v.to_bytes(size, "big"), f"= {v:#x} (was {value:#x})")

    for f in pview.fields:
        if f.kind == "int":
            ints(f.path, f.offset, f.size, f.value)
        elif f.kind == "bytes" and (f.offset, f.size) not in seen:
            seen.add((f.offset, f.size))
            raw = chunk[f.offset : f.offset + f.size]
            if f.path.endswith(".name"):
                for new, what in _unknown_name(raw):
                    put(f.path, f.offset, f.size, new, what)
            elif f.path.endswith("pci.config"):
                for i in range(f.size):  # every byte against the destination's read-only masks
                    put(f"{f.path}[{i:#x}]", f.offset + i, 1, bytes([raw[i] ^ 0xFF]), f"^ 0xff (was {raw[i]:#x})")
            else:
                step = 4 if f.size >= 4 else 1
                for i in range(0, min(f.size, 64), step):
                    new = bytes(b ^ 0xFF for b in raw[i : i + step])
                    put(f"{f.path}[{i}]", f.offset + i, step, new, f"^ {'ff' * step}")
        if cuts and f.kind in ("int", "bytes") and (f.offset, -f.size) not in seen:
            # the section ends inside the field; the stream goes on (QEMU reads the footer and what follows as
            # the rest of the payload)
            seen.add((f.offset, -f.size))
            keep = f.size // 2
            cut = f.offset + keep
            out.append(Mutation(ref.section, f.path, f"section cut after {keep} of {f.size} bytes",
                                ((base + cut, len(chunk) - cut, b""),), (ref.instance_id, cut)))
    for path, at, size, value in _flat_elements(chunk, ref.transport, ref.device, nq):
        ints(path, at, size, value)
    return out


def select(all_: Sequence[Mutation], count: int | None, seed: int = 0) -> list[Mutation]:
    """`count` of them, spread evenly over the list (every field keeps some), in a fixed order."""
    if count is None or count >= len(all_):
        return list(all_)
    step = len(all_) / count
    return [all_[int(i * step + (seed % max(int(step), 1)))] for i in range(count)]
