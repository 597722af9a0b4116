"""Whole inputs: a Mutant, and the Mutator that makes input `i` of a run from the seeds."""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from harness.fuzz.fields import PayloadRef, Seed, View
from harness.fuzz.mutators import STRUCTURAL, Edit, apply_edits, m_flip, m_vmdesc, pick_field
from harness.wire.virtio import TRANSPORTS
from models.registry import BASE

MUTATIONS = ("flip", "insert", "delete", "duplicate", "length", "vmdesc", "truncate", "splice", "payload", "stack",
             "random", "header")

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


def embed(seed: Seed, ref: PayloadRef, payload: bytes) -> bytes:
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
                transport, device = rng.choice(TRANSPORTS), rng.choice(BASE.wire.sections())
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
            edits, note = self._edits(rng, kind if kind in STRUCTURAL else "flip", s.view)
        return Mutant(apply_edits(s.data, edits), kind, s.name, note)

    @staticmethod
    def _edits(rng: random.Random, kind: str, view: View) -> tuple[list[Edit], str]:
        return STRUCTURAL[kind](rng, view)

    def _splice(self, rng: random.Random, s: Seed) -> tuple[list[Edit], str]:
        """Swap two groups of this seed, or put one from another seed in place of one of this seed."""
        a = pick_field(rng, s.view, "group")
        other = rng.choice(self.seeds)
        b = pick_field(rng, other.view, "group")
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
