"""Seeds: the sample streams (or `--seeds DIR`), each as it is, slimmed, and enriched with every subsection the
layouts know."""

from __future__ import annotations

import io
import json
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import construct as c
from construct import Container, ListContainer

from harness import samples
from harness.fuzz.fields import Seed, field_map
from harness.wire import stream as wire_stream
from harness.wire.primitives import Subsections
from harness.wire.virtio import payload_layout

# --- seeds: the sample streams, slimmed, and enriched with every subsection the layouts know ---------------------


def default_seed_paths() -> list[Path]:
    """The sample streams shipped with the package (tests put their own here)."""
    return samples.streams()


def slim(data: bytes) -> bytes:
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
        slimmed = slim(full)
        made = {"full": full, "slim": slimmed}
        if "rich" in variants:
            made["rich"] = _rich(slimmed)
        dest = source_command_line(path)
        for variant in variants:
            view, payloads, vmdesc_at = field_map(made[variant])
            name = path.stem if variant == "full" else f"{path.stem}~{variant}"
            seeds.append(Seed(name, view, payloads, vmdesc_at, dest))
    return seeds


def source_command_line(path: Path) -> str | None:
    """The command line that saved a stream, from the `.json` beside it (the samples' and fixtures' `qemu_cmdline`),
    or None where there is none (a folder of bare streams)."""
    try:
        meta = json.loads(path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None
    argv = meta.get("qemu_cmdline") if isinstance(meta, dict) else None
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        return None
    return shlex.join(argv)
