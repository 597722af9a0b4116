"""`virtio-compat qemu`: the rules against two real QEMUs, with the model held to both (R12).

One example: drive the devices of the source QEMU (one of each kind, or several of one, on consecutive slots) into
random reachable states (drawn.py: a legacy or a modern driver's steps, BARs, MSI-X, tap backends), save them,
load the stream into the destination QEMU (same command line) and let it save again; each device is one state
under test, and a QEMU pair start-up serves them all. Then: the destination must accept it
with the state preserved (R1 same release, R3 forward, R4 backward: a reachable state on a machine
type both binaries have), and the model of the destination's release must predict QEMU's verdict,
loaded state and re-saved bytes (R12).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import random
import re
import resource
import shutil
import signal
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from harness import interrupt
from harness.errors import StreamError, UsageError
from harness.known import KnownIncompatibility, known_for
from harness.qemu import oracle, presence, release, scsi_requests, tap
from harness.qemu.backend import PCI_DRIVERS, DeviceConfig, QemuConfig, save
from harness.qemu.drawn import MEM_MB, SLOT, random_drives, random_netdev, random_props, random_vm_args, vm_args
from harness.qemu.drive import DEVICE_KINDS, DriveSpec
from harness.qemu.loaded import qom_path
from harness.qemu.process import find_qemu, live_processes, scratch_root
from harness.rules import Violation
from harness.wire.stream import Stream, decode_stream, encode_stream
from models.config import realize
from models.model import guest_rings, state_from_wire
from models.model import load as model_load
from models.model import save as model_save
from models.registry import BASE
from models.releases import MachineType, Version


@dataclass(frozen=True)
class Side:
    binary: str
    version: Version
    release: Version  # the modelled release whose rules it follows
    machines: frozenset[str] = frozenset()  # what `-machine help` lists
    given: str = ""  # as named on the command line: a fleet release name (e.g. 7.2) replays on another machine


def side(binary: str, target: str = "x86_64") -> Side:
    """One binary of the pair, for `target`: a fleet release name gives that release's qemu-system-TARGET."""
    path = find_qemu(release.for_target(binary, target), target)
    version = oracle.qemu_version(path)
    return Side(path, version, oracle.modelled_release(path), release.machine_names(path), binary)


def common_machines(src: Side, dst: Side, family: str) -> list[MachineType]:
    """The versioned machine types of `family` both binaries have and both models know, oldest first."""
    transport = release.transport_of(family)
    known = set(BASE.machine_types(src.release, transport)) & set(BASE.machine_types(dst.release, transport))
    return sorted((m for m in known if m.family == family and m.name in src.machines & dst.machines),
                  key=lambda m: m.version)


def default_machine(src: Side, dst: Side, family: str = "pc-i440fx") -> str:
    """The newest machine type of `family` both binaries have (11.1 starts at pc-i440fx-5.2, 5.2 ends there)."""
    both = common_machines(src, dst, family)
    if not both:
        raise UsageError(f"QEMU {src.version} ({src.binary}) and QEMU {dst.version} ({dst.binary}) have no "
                         f"{family} machine type in common")
    return both[-1].name


def qemu_config(machine: str, kinds: Sequence[str], props: Sequence[tuple[tuple[str, str], ...]] = (),
                netdevs: Sequence[str] = ()) -> QemuConfig:
    """The command line of one example: `kinds` on consecutive slots, device i with props[i] and netdevs[i] (if
    given)."""
    # Machine types up to 2.2 suppress the JSON description the decoder walks the stream by; the
    # option changes nothing else in the stream.
    if MachineType.parse(machine).version < Version(2, 3):
        machine += ",suppress-vmdesc=off"
    transport = release.transport_of(machine)
    first = SLOT if transport == "pci" else 0
    devices = tuple(DeviceConfig(kind, first + i, props[i] if i < len(props) else (), transport=transport,
                                 netdev=netdevs[i] if i < len(netdevs) else "hubport")
                    for i, kind in enumerate(kinds))
    return QemuConfig(machine, devices, smp=1, mem_mb=MEM_MB[transport])


@dataclass
class Example:
    index: int
    machine: str
    drives: list[DriveSpec]  # one per device, in slot order (none on ccw: reset states)
    outcome: str = ""  # the destination QEMU's
    error: str | None = None
    model_outcome: str = ""
    model_error: str | None = None
    disagreements: list[str] = field(default_factory=list)  # R12
    violations: list[str] = field(default_factory=list)  # R1 / R3 / R4
    expected: dict[str, str] = field(default_factory=dict)  # known incompatibilities covering every violation
    failures: list[str] = field(default_factory=list)  # failure files written
    data: bytes = field(default=b"", repr=False)  # the source's stream
    argv: list[str] = field(default_factory=list, repr=False)  # its command line
    kinds: list[str] = field(default_factory=list)  # the devices, driven or not
    model_verdict: Any = field(default=None, repr=False)  # oracle.ModelVerdict, for the failure file
    qemu_verdict: Any = field(default=None, repr=False)  # oracle.Verdict
    presence_checked: int = 0  # source payloads whose subsections R5 held to the model (harness/qemu/presence.py)
    load_order_checked: int = 0  # the model's loads of them R9 held to the reference from the stream alone
    scsi_disks_checked: int = 0  # SCSI disk sections whose in-flight requests were held to the model (scsi_requests)
    scsi_inflight: int = 0  # the in-flight requests they carried

    @property
    def devices(self) -> list[str]:
        return self.kinds or [d.kind for d in self.drives]

    def as_json(self) -> dict[str, Any]:
        return {"index": self.index, "machine": self.machine, "devices": self.devices,
                "drives": [{"device": d.kind, "slot": d.slot, "guest_features": d.guest_features,
                            "status": d.status, "queue_sel": d.queue_sel,
                            "queues": [[q.index, q.pfn, q.requests] for q in d.queues],
                            "firmware": d.firmware, "msix": d.msix, "config_vector": d.config_vector,
                            "modern": d.modern, "props": dict(d.props), "netdev": d.netdev,
                            "reset_endian": d.reset_endian,
                            "sizes": {q.index: q.num for q in d.queues if q.num},
                            "vectors": {q.index: q.vector for q in d.queues if d.msix}} for d in self.drives],
                "qemu": {"outcome": self.outcome, "error": self.error},
                "model": {"outcome": self.model_outcome, "error": self.model_error},
                "agrees": not self.disagreements, "disagreements": self.disagreements,
                "r5_payloads": self.presence_checked, "r9_loads": self.load_order_checked,
                "scsi_disks": self.scsi_disks_checked, "scsi_inflight": self.scsi_inflight,
                "violations": self.violations, "expected": self.expected, "failures": self.failures}


def migration_rule(src: Version, dst: Version) -> str:
    return "R1" if src == dst else "R3" if src < dst else "R4"


def preserved(s: Stream, src: Side, dst: Side, argv: Sequence[str], verdict: Any) -> list[str]:
    """The source's state against what the destination QEMU reports after the load (features masked by
    the destination's host features; used idx read from the stream's RAM, as the destination reads it)."""
    out = []
    src_lines = {line.key: line for line in tap.lines(oracle.dest_line(argv), src.release)}
    dst_lines = {line.key: line for line in tap.lines(oracle.dest_line(argv), dst.release)}
    for p in s.devices:
        if p.value is None:
            out.append(f"{p.section}: not checked, the source's payload does not decode: {p.error}")
            continue
        r = realize(src_lines[p.key].config)
        rings = guest_rings(s.memory, s.machine, state_from_wire(r, p.value)) if s.memory else None
        state = state_from_wire(r, p.value, rings)
        host = realize(dst_lines[p.key].config).host_features
        state = state.with_(guest_features=state.guest_features & host)
        path = qom_path(dst_lines[p.key])
        out += oracle.state_differences(p.section, state, path, verdict, "source")
    return out


# aarch64 TCG does not migrate its CPU across releases (the cpreg lists differ: `Failed to load
# cpu:cpreg_vmstate_array_len` backward, `handle_cpreg_only_in_incoming_stream` forward, on every CPU
# model tried). The CPU is not under test and the paused guest never ran: across releases the
# destination loads the stream without the `cpu` sections and keeps its own reset CPU.
UNMIGRATABLE_ACROSS_RELEASES = {"aarch64": ("cpu",)}


def without_sections(data: bytes, names: Sequence[str]) -> bytes:
    """The stream without the sections whose idstr is in `names`; QEMU loads what a stream holds."""
    try:
        s = decode_stream(data, strict=False, extras=BASE.wire)
    except StreamError:
        return data  # QEMU then says what it makes of the whole stream
    s.records = [rec for rec in s.records if getattr(rec, "idstr", None) not in names]
    return encode_stream(s)


def run_example(index: int, rng: random.Random, src: Side, dst: Side, machine: str, kinds: Sequence[str], *,
                resave: bool = True) -> Example:
    """A random reachable state of each of `kinds` through the pair (realcase.run_example also writes its
    failure files)."""
    netdevs = [random_netdev(rng, kind, max(src.release, dst.release)) for kind in kinds]
    props = [random_props(rng, kind, machine, src.release, dst.release, nd) for kind, nd in zip(kinds, netdevs,
                                                                                             strict=True)]
    config = qemu_config(machine, kinds, props, netdevs)
    config = dataclasses.replace(config, extra_args=random_vm_args(rng, machine, src.release, dst.release))
    specs = random_drives(rng, config, src.release)
    ex = run_specs(index, src, dst, machine, kinds, specs, resave=resave)
    if ex.violations:
        ex.expected = known_incompatibilities(ex, src.release, dst.release)
    return ex


def known_incompatibilities(ex: Example, src: Version, dst: Version) -> dict[str, str]:
    """The declared known incompatibilities (harness.known.KNOWN) that cover every violation of an example, by
    name with their reasons; empty when one is not covered."""
    try:
        s = decode_stream(ex.data, strict=False, extras=BASE.wire)
    except StreamError:
        return {}
    rule = migration_rule(src, dst)
    src_lines = {line.key: line for line in tap.lines(oracle.dest_line(ex.argv), src)}
    dst_lines = {line.key: line for line in tap.lines(oracle.dest_line(ex.argv), dst)}
    covered: dict[str, KnownIncompatibility] = {}
    for p in s.devices:
        if p.value is None or p.key not in src_lines or p.key not in dst_lines:
            continue
        r = realize(src_lines[p.key].config)
        rings = guest_rings(s.memory, s.machine, state_from_wire(r, p.value)) if s.memory else None
        k = known_for(Violation(rule, "accepted", ex.outcome), src_lines[p.key].config, dst_lines[p.key].config,
                      state_from_wire(r, p.value, rings))
        if k is not None:
            covered[p.label] = k
    # a rejection ends the whole load: one covered device explains it; a state difference names its device
    if all(any(sec in line for sec in covered) or (ex.outcome != "accepted" and covered) for line in ex.violations):
        return {k.name: k.reason for k in covered.values()}
    return {}


def run_specs(index: int, src: Side, dst: Side, machine: str, kinds: Sequence[str], specs: Sequence[DriveSpec], *,
              resave: bool = True) -> Example:
    """Drive the source into `specs`, save, load into the destination, re-save, and hold the model to it."""
    config = qemu_config(machine, kinds, [spec.props for spec in specs], [spec.netdev for spec in specs])
    # both sides: the same command line, with what the drives need (the guest program, force-legacy=off)
    config = dataclasses.replace(config, extra_args=config.extra_args + vm_args(specs, config.target))
    # The destination starts while the source is driven and saved: its start-up is most of a load.
    with oracle.destination(config, dst.binary, launch=True) as pending:
        data, truth = save(dataclasses.replace(config, binary=src.binary),
                           list(specs))
        argv = truth["qemu_cmdline"]
        ex = Example(index, machine, list(specs), data=data, argv=argv, kinds=list(kinds))
        # a payload our decoder cannot read is kept as bytes: the model's side reports it, QEMU's still loads
        try:
            s: Stream | None = decode_stream(data, strict=False, extras=BASE.wire)
        except StreamError:
            s = None  # predict() says why, as the model's error
        model = oracle.predict(s or data, dst.release, argv)
        drop = UNMIGRATABLE_ACROSS_RELEASES.get(config.target, ()) if src.version != dst.version else ()
        loaded = without_sections(data, drop) if drop else data
        result = oracle.load_and_save(argv, loaded, resave=resave, started=pending)
    v = result.verdict
    ex.model_verdict, ex.qemu_verdict = model, v
    ex.outcome, ex.error = v.outcome, v.error
    ex.model_outcome, ex.model_error = oracle.overall(model)
    ex.disagreements = oracle.compare(model, v)
    if s is not None:  # R5 on the real source: its subsections against the model's save of the same state
        ex.presence_checked, r5 = presence.check(s, src.release, argv)
        ex.disagreements += r5
    if v.outcome in ("accepted", "accepted-broken") and s is not None:
        loads = oracle.model_loads(s, dst.release, argv)
        ex.disagreements += oracle.compare_state(loads, v)
        ex.load_order_checked, r9 = presence.load_order(loads)
        ex.disagreements += r9
        if result.resaved is not None:
            ex.disagreements += oracle.compare_resave(loads, result.resaved)
    rule = migration_rule(src.release, dst.release)
    if s is not None:  # virtio-scsi's in-flight requests, in the SCSI disks' sections
        ex.scsi_disks_checked, scsi_r12, scsi_rule = scsi_requests.check(
            s, truth, argv, src.release, dst.release, v.outcome, result.resaved, rule)
        ex.scsi_inflight = sum(len(t.get("inflight_requests", [])) for t in truth.get("devices", []))
        ex.disagreements += scsi_r12
        ex.violations += scsi_rule
    if v.outcome != "accepted":
        ex.violations.append(f"{rule}: the destination QEMU {v.outcome} a reachable state: {v.error}")
    elif s is not None:
        ex.violations += [f"{rule}: state not preserved: {d}" for d in preserved(s, src, dst, argv, v)]
    interrupt.check()  # a QEMU ended by the same Ctrl-C (sent to the group) is no verdict to keep
    return ex


def check_choices(machine: str, device: str | None, src: Side, dst: Side) -> None:
    if device is not None and device not in PCI_DRIVERS:
        raise UsageError(f"--device {device}: one of {', '.join(DEVICE_KINDS)}")
    try:
        m = MachineType.parse(machine)
    except ValueError as exc:
        raise UsageError(f"--machine {machine}: {exc}") from None
    transport = release.transport_of(machine)
    for s in (src, dst):
        if machine not in s.machines:
            oldest = sorted((n for n in s.machines if re.fullmatch(rf"{re.escape(m.family)}-\d+\.\d+", n)),
                            key=lambda n: MachineType.parse(n).version)
            raise UsageError(f"--machine {machine}: QEMU {s.version} ({s.binary}) has no such machine type"
                             + (f" (its {m.family} are {oldest[0]} ... {oldest[-1]})" if oldest else ""))
        if m not in BASE.machine_types(s.release, transport):
            raise UsageError(f"--machine {machine}: the model of QEMU {s.release} has no such {transport} "
                             "machine type")


PER_VM = 4  # device states per QEMU pair: its start-up is most of an example's cost


def kinds_for(src: Side, dst: Side, machine: str) -> tuple[str, ...]:
    """The devices both releases offer on the machine's transport (models/devices' declarations), in their order."""
    transport = release.transport_of(machine)
    both = set(BASE.devices_on(transport, src.release)) & set(BASE.devices_on(transport, dst.release))
    return tuple(k for k in DEVICE_KINDS if k in both)


def vm_kinds(examples: int, per_vm: int, device: str | None,
             kinds: Sequence[str] = DEVICE_KINDS) -> list[list[str]]:
    """The devices of each QEMU pair: `per_vm` of them, each kind in turn (or all `device`), and one balloon at
    most (QEMU: `Only one balloon device is supported`): a second balloon waits for the next pair."""
    out: list[list[str]] = []
    vm: list[str] = []
    waiting = 0  # balloons put off
    for i in range(examples):
        kind = device or kinds[i % len(kinds)]
        if kind == "virtio-balloon" and kind in vm:
            waiting += 1
            continue
        vm.append(kind)
        if len(vm) == per_vm:
            out.append(vm)
            vm = []
            if waiting:
                vm, waiting = ["virtio-balloon"], waiting - 1
    return out + ([vm] if vm else []) + [["virtio-balloon"]] * waiting


# -- `virtio-compat bench`: QEMU-backed and model-backed examples per second, in the same run ----------------


@dataclass(frozen=True)
class WorkerFigures:
    qemu_examples: int  # device states
    qemu_pairs: int  # QEMU pairs they took
    qemu_seconds: float
    model_examples: int
    model_seconds: float
    disagreements: int  # QEMU pairs with one
    qemu_cpu_seconds: float  # CPU of this worker and its QEMUs during the QEMU phase


def _cpu_seconds() -> float:
    """CPU time of this process and of its children that ended (its QEMUs)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def bench_worker(binary: str | None, seconds: float, start_at: float, seed: int) -> WorkerFigures:
    """One worker with its own QEMUs: QEMU examples (drive+save, load, verdict against the model) from
    `start_at` (wall clock) for `seconds`, then model examples (save+load of the states QEMU gave) for as long."""
    src = side(binary or "qemu-system-x86_64")
    machine = default_machine(src, src)
    rng = random.Random(seed)
    try:
        return _bench_worker(src, machine, rng, seconds, start_at)
    finally:
        if not live_processes():
            shutil.rmtree(scratch_root(), ignore_errors=True)  # also when a signal ended the worker


def _bench_worker(src: Side, machine: str, rng: random.Random, seconds: float, start_at: float) -> WorkerFigures:
    kinds = kinds_for(src, src, machine)
    run_example(-1, rng, src, src, machine, kinds, resave=False)  # warm-up: imports, page cache
    time.sleep(max(start_at - time.time(), 0))
    examples: list[Example] = []
    begin, cpu_begin = time.time(), _cpu_seconds()
    while time.time() < begin + seconds:
        examples.append(run_example(len(examples), rng, src, src, machine, kinds, resave=False))
    qemu_seconds, qemu_cpu = time.time() - begin, _cpu_seconds() - cpu_begin
    # The same kind of state in the model: each source state saved and loaded by the model of its release.
    cases = []
    for ex in examples:
        s = decode_stream(ex.data, extras=BASE.wire)
        lines = {line.key: line for line in tap.lines(oracle.dest_line(ex.argv), src.release)}
        # each payload's own verdict (a SCSI disk's section after it may fail the load: the payload still loads)
        own = {d["section"]: d["outcome"] for d in ex.model_verdict.devices} if ex.model_verdict else {}
        for p in s.devices:
            if own.get(p.section, ex.outcome) == "not-reached":
                continue
            r = realize(lines[p.key].config)
            state = state_from_wire(r, p.value)
            rings = guest_rings(s.memory, s.machine, state) if s.memory else None
            cases.append((r, state_from_wire(r, p.value, rings), rings, own.get(p.section, ex.outcome)))
    time.sleep(max(begin + seconds + 0.5 - time.time(), 0))  # let the other worker finish its QEMU phase
    n, begin = 0, time.time()
    while cases and time.time() < begin + seconds:
        r, state, rings, outcome = cases[n % len(cases)]
        if model_load(r, model_save(r, state), rings).outcome != outcome:
            raise AssertionError("model verdict changed between the QEMU and the model phase")
        n += 1
    return WorkerFigures(sum(len(e.devices) for e in examples), len(examples), qemu_seconds, n, time.time() - begin,
                         sum(bool(e.disagreements) for e in examples), qemu_cpu)


def _stop_workers(pool: ProcessPoolExecutor, grace: float = 1.0) -> None:
    """After a Ctrl-C: each worker closes its QEMUs and exits (SIGTERM, in case the signal was ours alone);
    one that has not within `grace` seconds is killed (its watchdog ends its QEMUs: reaper.py)."""
    procs = list(getattr(pool, "_processes", {}).values())  # the pool's own handle on its workers
    for p in procs:
        if p.pid is not None and p.is_alive():
            os.kill(p.pid, signal.SIGTERM)
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + grace
    for p in procs:
        p.join(max(deadline - time.monotonic(), 0))
        if p.is_alive():
            p.kill()
            p.join()


def bench(seconds: float, workers: int = 2, binary: str | None = None, lead: float = 4.0) -> dict[str, float]:
    """QEMU-backed and model-backed examples per second with `workers` processes, and their ratio.
    `lead`: seconds for the workers to spawn and warm up before the clock starts (a late one measures alone)."""
    find_qemu(binary)
    start_at = time.time() + lead
    ctx = multiprocessing.get_context("spawn")  # no QEMU state of this process leaks into the workers
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=interrupt.install_worker) as pool:
        try:
            with interrupt.blocked():  # submit() starts the workers
                futures = [pool.submit(bench_worker, binary, seconds, start_at, seed) for seed in range(workers)]
            figures = [f.result() for f in futures]
        except KeyboardInterrupt:
            _stop_workers(pool)
            raise
    qemu = sum(f.qemu_examples / f.qemu_seconds for f in figures)
    model = sum(f.model_examples / f.model_seconds for f in figures)
    return {"qemu_per_second": qemu, "model_per_second": model, "ratio": model / qemu if qemu else 0.0,
            "qemu_examples": sum(f.qemu_examples for f in figures), "qemu_pairs": sum(f.qemu_pairs for f in figures),
            "cpu_ms_per_qemu_example": 1000 * sum(f.qemu_cpu_seconds for f in figures)
            / max(sum(f.qemu_examples for f in figures), 1),
            "disagreements": sum(f.disagreements for f in figures), "workers": workers}
