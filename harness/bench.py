"""`virtio-compat bench`: the speed figures of DESIGN.md, measured in one process (one core)."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import UsageError

SAMPLE = Path(__file__).resolve().parent.parent / "tests" / "data" / "pc-i440fx-7.2-virtio-net-driven.bin"


def rate(fn: Callable[[], Any], seconds: float) -> float:
    """Calls per second of `fn`, after one warm-up call, over about `seconds`."""
    fn()
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        fn()
        n += 1
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def run_bench(args: argparse.Namespace) -> int:
    from harness.cli import read_stream_file
    from harness.wire.stream import decode_payload, decode_stream

    path = args.stream or str(SAMPLE)
    data = read_stream_file(path)
    stream = decode_stream(data)
    nets = [d for d in stream.devices if d.device == "virtio-net"]
    if not nets:
        raise UsageError(f"{path}: no virtio-net device to measure")
    net = nets[0]
    payload = data[net.offset : net.offset + net.size]
    rows = [
        ("decode virtio-net payload", f"{net.size} B", rate(
            lambda: decode_payload(payload, net.transport, net.device), args.seconds), 5000.0),
        ("decode whole stream", f"{len(data)} B", rate(lambda: decode_stream(data), args.seconds), 200.0),
    ]
    if args.json:
        print(json.dumps([{"what": w, "input": i, "per_second": round(r, 1), "target": t}
                          for w, i, r, t in rows], indent=1))
    else:
        print(f"one core, {args.seconds:g} s per figure, sample {path}")
        for what, inp, r, target in rows:
            verdict = "ok" if r >= target else "BELOW TARGET"
            print(f"  {what:<28} {inp:>10}  {r:>9.0f}/s  (target >= {target:.0f}/s: {verdict})")
    return 0
