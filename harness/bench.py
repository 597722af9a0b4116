"""`virtio-compat bench`: the speed figures of DESIGN.md, measured in one process (one core)."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from typing import Any

from harness import interrupt
from harness.errors import UsageError


def rate(fn: Callable[[], Any], seconds: float) -> float:
    """Calls per second of `fn`, after one warm-up call, over about `seconds`."""
    fn()
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        interrupt.check()  # a Ctrl-C whose raise Python dropped (in a finalizer) still stops the run
        fn()
        n += 1
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def run_bench(args: argparse.Namespace) -> int:
    from harness.inputs import read_stream_file
    from harness.samples import NET
    from harness.wire.payload import decode_payload
    from harness.wire.stream import decode_stream

    path = args.stream or str(NET)
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
    process = process_figure(path, len(data), args.seconds)
    model_rows, cpu_rates = model_figures(args.seconds)
    rows += model_rows
    qemu, skipped = qemu_figures(max(args.seconds, QEMU_SECONDS))
    if args.json:
        out: list[dict[str, Any]] = [{"what": w, "input": i, "per_second": round(r, 1), "target": t}
                                     for w, i, r, t in rows]
        for o in out:
            if (o["what"], o["input"]) in cpu_rates:
                o["per_cpu_second"] = round(cpu_rates[(o["what"], o["input"])], 1)
        out.insert(2, process)
        out += qemu if not skipped else [{"what": "real QEMU backend, 2 workers", "skipped": skipped}]
        print(json.dumps(out, indent=1))
    else:
        print(f"one core, {args.seconds:g} s per figure, sample {path}")
        for i, (what, inp, r, target) in enumerate(rows):
            verdict = "ok" if r >= target else "BELOW TARGET"
            print(f"  {what:<28} {inp:>10}  {r:>9.0f}/s  (target >= {target:.0f}/s: {verdict})")
            if i == 1:  # beside the in-process decode figures: the same decode as a command costs
                verdict = "ok" if process["ms"] <= process["target_ms"] else "OVER TARGET"
                print(f"  {process['what']:<28} {process['input']:>10}  {process['ms']:>9.0f} ms  (median of "
                      f"{process['runs']} runs, {process['cpu_ms']:.0f} ms CPU; target <= "
                      f"{process['target_ms']:.0f} ms: {verdict})")
        by_cpu = ", ".join(f"{i} {r:.0f}/s" for (_, i), r in cpu_rates.items())
        print(f"  model figures by CPU time (what an idle core gives): {by_cpu}; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        if skipped:
            print(f"  real QEMU backend: skipped ({skipped})")
        for row in qemu:
            line = f"  {row['what']:<40} {row['per_second']:>9.1f}{row.get('unit', '/s')}"
            if row.get("target"):
                verdict = "ok" if row["per_second"] >= row["target"] else "BELOW TARGET"
                line += f"  (target >= {row['target']:.0f}/s: {verdict})"
            print(line + (f"  {row['note']}" if row.get("note") else ""))
    return 0


# -- decode as a whole process: start-up, imports, parsers, decode and output, as a user runs it --------------

PROCESS_TARGET_MS = 50.0
PROCESS_RUNS = 5  # at least, after one that fills the parser cache (harness/wire/compiled.py)


def process_figure(path: str, size: int, seconds: float) -> dict[str, Any]:
    """`virtio-compat decode --json STREAM` run as a process: the median wall time of the runs that fit in
    `seconds` (PROCESS_RUNS at least), and the median CPU time they took (what an idle core would give)."""
    import statistics
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(sys.executable), "virtio-compat")  # the installed console script
    argv = [script] if os.access(script, os.X_OK) else [sys.executable, "-m", "harness.cli"]
    argv += ["decode", "--json", os.path.abspath(path)]

    def once() -> tuple[float, float]:
        before, start = os.times(), time.perf_counter()
        # a signal kills and reaps the child (subprocess.run) before it reaches the command's handler
        done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall, after = time.perf_counter() - start, os.times()
        if done.returncode:
            interrupt.check()  # a signal to the group ended the child too: the run stops, no error
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise UsageError(f"{path}: decode as a process exited {done.returncode}: {last}")
        return wall, (after.children_user - before.children_user) + (after.children_system - before.children_system)

    once()
    runs: list[tuple[float, float]] = []
    deadline = time.perf_counter() + seconds
    while len(runs) < PROCESS_RUNS or time.perf_counter() < deadline:
        interrupt.check()
        runs.append(once())
    return {"what": "decode --json, whole process", "input": f"{size} B",
            "ms": round(statistics.median(w for w, _ in runs) * 1000, 1),
            "cpu_ms": round(statistics.median(c for _, c in runs) * 1000, 1), "runs": len(runs),
            "target_ms": PROCESS_TARGET_MS, "command": " ".join(argv)}


# -- real QEMU: examples per second with 2 workers, and the model's rate measured in the same run ------------

QEMU_SECONDS = 5.0
QEMU_WORKERS = 2


def qemu_figures(seconds: float) -> tuple[list[dict[str, Any]], str | None]:
    """Rows for the QEMU-backed figure, or the reason it was skipped (no binary)."""
    import os

    from harness.errors import QemuError
    from harness.qemu.crosscheck import bench
    from harness.qemu.process import find_qemu

    try:
        find_qemu(None)
    except QemuError as e:
        return [], str(e)
    f = bench(seconds, QEMU_WORKERS)
    load = os.getloadavg()[0]
    cores = os.cpu_count() or 1
    # CPU per example (QEMU processes and Python) bounds the rate on idle cores, whatever the load now
    cpu = f["cpu_ms_per_qemu_example"]
    note = (f"{f['qemu_examples']:.0f} device states in {f['qemu_pairs']:.0f} QEMU pairs (one device of each kind "
            f"per pair), {f['disagreements']:.0f} pairs disagreeing with the model; {cpu:.0f} ms CPU per state "
            f"(<= {min(cores, QEMU_WORKERS) * 1000 / cpu:.0f}/s on idle cores); load average {load:.1f} on "
            f"{cores} cores")
    return [
        {"what": f"QEMU examples, {QEMU_WORKERS} workers", "input": "drive+save, load, verdict vs model",
         "per_second": round(f["qemu_per_second"], 1), "target": 20.0, "note": note},
        {"what": f"model examples, {QEMU_WORKERS} workers", "input": "model save+load of the same states",
         "per_second": round(f["model_per_second"], 1), "target": None},
        {"what": "model/QEMU ratio", "input": "same run", "per_second": round(f["ratio"], 1), "target": None,
         "unit": "x"},
    ], None


# -- the models: save+load of one device state, and Hypothesis examples end to end ---------------------------

MODEL_MACHINES = ("pc-i440fx-2.6", "pc-i440fx-7.2")
E2E_CHUNK = 200  # examples per Hypothesis run; runs repeat until the time is up


def driven_state(config: Any) -> Any:
    """A deterministic reachable virtio-net state with the driver up and two queues set up (the minimal one)."""
    from hypothesis import HealthCheck, find, settings

    from models.config import realize
    from strategies.driver import device_states

    def driven(s: Any) -> bool:
        return bool(s.status & 4) and sum(q.desc != 0 for q in s.queues) >= 2

    return find(device_states(realize(config)), driven, settings=settings(
        database=None, derandomize=True, max_examples=2000, suppress_health_check=list(HealthCheck)))


def rates(fn: Callable[[], int], seconds: float) -> tuple[float, float]:
    """Units per second of wall time and of this process's CPU time; `fn` returns how many units it did."""
    fn()
    n, wall, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - wall < seconds:
        interrupt.check()
        n += fn()
    return n / (time.perf_counter() - wall), n / max(time.process_time() - cpu, 1e-9)


def save_load(machine: str, seconds: float) -> tuple[tuple[str, str, float, float], float]:
    """save + load of one virtio-net state, QEMU 7.2 on `machine`: the row and the rate by CPU time."""
    from models.config import Config, realize
    from models.model import load, save
    from models.releases import MachineType, Version

    config = Config(Version(7, 2), MachineType.parse(machine), "virtio-net", "pci", props={"romfile": ""})
    r, state = realize(config), driven_state(config)
    rings = [(q.avail_idx, q.used_idx) for q in state.queues]

    def once() -> int:
        load(r, save(r, state), rings)
        return 1

    wall, cpu = rates(once, seconds)
    return (f"model save+load {len(save(r, state))} B", machine[3:], wall, 2000.0), cpu


def model_figures(seconds: float) -> tuple[list[tuple[str, str, float, float]], dict[tuple[str, str], float]]:
    """(what, input, per second, target) of the model figures of DESIGN.md, and their rates by CPU time."""
    from hypothesis import HealthCheck, Phase, settings

    from harness.matrix import Cell, run_cell
    from models.releases import Version

    rows, cpu = [], {}
    for machine in MODEL_MACHINES:
        row, cpu_rate = save_load(machine, seconds)
        rows.append(row)
        cpu[(row[0], row[1])] = cpu_rate
    # the cell function the matrix tests run, without shrinking or a database: generate, save, load, all rules
    previous = settings.default
    settings.register_profile("bench-e2e", max_examples=E2E_CHUNK, deadline=None, database=None,
                              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    settings.load_profile("bench-e2e")
    try:
        cell = Cell(Version(2, 6), Version(7, 2), "pci", "virtio-net")
        e2e, e2e_cpu = rates(lambda: run_cell(cell, ["pc-i440fx-2.6"]).examples, seconds)
    finally:
        settings.register_profile("bench-previous", previous)
        settings.load_profile("bench-previous")
    rows.append(("examples end to end (net pci)", "2.6->7.2", e2e, 500.0))
    cpu[(rows[-1][0], rows[-1][1])] = e2e_cpu
    return rows, cpu
