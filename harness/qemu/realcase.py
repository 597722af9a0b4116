"""`virtio-compat qemu` over a real pair, and its failures: shrunk over real QEMU, written with all a re-run
needs, replayed.

A disagreement found on a whole driven VM (four devices) is first shrunk to one device and the fewest driven
fields that still fail, re-running the real pair for each candidate (bounded in runs and seconds). The file
records the binaries (fleet release names where they came from the fleet), the machine type, the devices, the
original and the minimal drive specs; `virtio-compat replay` re-runs the minimal one on both sides.
"""

from __future__ import annotations

import dataclasses
import random
import re
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from harness import interrupt
from harness.errors import HarnessError, QemuError, UsageError
from harness.failures import FAILURES
from harness.interrupt import Kept
from harness.qemu import crosscheck, oracle, release
from harness.qemu.drive import DriveSpec, QueueSpec
from models.releases import FAMILIES, Version

MAX_RUNS, MAX_SECONDS = 60, 30.0  # per failure: each run is a real QEMU pair
MINIMAL_STATUSES = (0, 1, 3, 7)  # reset, ACK, ACK|DRIVER, ... DRIVER_OK: the shrink tries lower ones first

Case = tuple[list[str], list[DriveSpec]]  # the devices on the command line, the drive of each


# -- drive specs to and from JSON ------------------------------------------------------------------------------


def drive_json(d: DriveSpec) -> dict[str, Any]:
    out = dataclasses.asdict(d)
    out["queues"] = [dataclasses.asdict(q) for q in d.queues]
    return out


def drive_from_json(j: dict[str, Any]) -> DriveSpec:
    return DriveSpec(**{**j, "queues": tuple(QueueSpec(**q) for q in j["queues"]),
                        "props": tuple(tuple(p) for p in j.get("props", ()))})


def summary(kinds: Sequence[str], drives: Sequence[DriveSpec]) -> str:
    """One line, like the matrix's `minimized_state`."""
    if not drives:
        return ", ".join(f"{k} (reset state)" for k in kinds)
    def queues(d: DriveSpec) -> str:
        return ", ".join(f"{q.index}" + (f"+{q.requests}req" if q.requests else "") + (f"/{q.num}" if q.num else "")
                         + (f"@v{q.vector}" if d.msix else "") for q in d.queues)

    def how(d: DriveSpec) -> str:
        return "".join([" firmware BARs" * d.firmware, f" msix config_vector={d.config_vector}" * d.msix,
                        " modern" * d.modern, "".join(f" {k}={v}" for k, v in d.props),
                        f" netdev={d.netdev}" * (d.netdev != "hubport"),
                        f" reset by a {d.reset_endian}-endian guest" * (d.reset_endian is not None)])

    return "; ".join(f"{d.kind}: guest_features={d.guest_features:#x} status={d.status:#x} queue_sel={d.queue_sel} "
                     f"queues=[{queues(d)}]{how(d)}" for d in drives)


# -- shrinking over real QEMU ----------------------------------------------------------------------------------


def candidates(kinds: list[str], drives: list[DriveSpec], first_slot: int) -> Iterator[Case]:
    """Smaller cases, the biggest steps first: one device, fewer queues and requests, fewer guest features
    (toward the reset value 0, bit by bit from the top), a lower status, queue_sel 0, mmio selectors 0, then a
    legacy driver on a plain device (drawn.py's wider draws undone one by one)."""
    if len(kinds) > 1:
        for i, kind in enumerate(kinds):
            yield [kind], [dataclasses.replace(drives[i], slot=first_slot)] if drives else []
    for i, d in enumerate(drives):
        def with_(**kw: Any) -> Case:
            return kinds, [*drives[:i], dataclasses.replace(d, **kw), *drives[i + 1:]]  # noqa: B023

        for j in range(len(d.queues)):
            yield with_(queues=d.queues[:j] + d.queues[j + 1:])
        for j, q in enumerate(d.queues):
            if q.requests:
                yield with_(queues=(*d.queues[:j], dataclasses.replace(q, requests=0), *d.queues[j + 1:]))
        if d.guest_features:
            yield with_(guest_features=0)
            for bit in reversed(range(d.guest_features.bit_length())):
                if d.guest_features >> bit & 1:
                    yield with_(guest_features=d.guest_features & ~(1 << bit))
        for status in MINIMAL_STATUSES:
            if status < d.status:
                yield with_(status=status)
        if d.queue_sel:
            yield with_(queue_sel=0)
        if d.host_features_sel or d.guest_features_sel:
            yield with_(host_features_sel=0, guest_features_sel=0)
        # toward a legacy driver on a plain device: no modern interface, no MSI-X, no firmware BARs, no properties
        if d.modern and d.transport == "pci":  # a modern virtio-mmio device (force-legacy=off) has no legacy
            yield with_(modern=False)
        if d.msix:
            yield with_(msix=False, config_vector=0xFFFF)
        if d.firmware and not d.msix and not d.modern:
            yield with_(firmware=False)
        if d.reset_endian is not None:  # toward qtest's reset (the target's endianness, no guest CPU)
            yield with_(reset_endian=None)
        if d.netdev != "hubport":
            yield with_(netdev="hubport", props=tuple(p for p in d.props if p[0] != "mq"))
        kept = tuple(p for p in d.props if p[0] == "mq" and d.netdev != "hubport")
        if kept != d.props:
            yield with_(props=kept)


@dataclasses.dataclass
class Shrunk:
    kinds: list[str]
    drives: list[DriveSpec]
    example: crosscheck.Example  # the last failing run, of the minimal case
    runs: int
    seconds: float
    complete: bool  # no candidate left: not cut short by the bounds


def shrink(ex: crosscheck.Example, src: crosscheck.Side, dst: crosscheck.Side,
           fails: Callable[[crosscheck.Example], bool], max_runs: int = MAX_RUNS,
           max_seconds: float = MAX_SECONDS) -> Shrunk:
    """Greedy: take the first smaller case that still fails, start again from it, until none does or the bounds."""
    begin, runs = time.monotonic(), 0
    kinds, drives, best = list(ex.devices), list(ex.drives), ex
    first_slot = crosscheck.qemu_config(ex.machine, kinds[:1]).devices[0].slot
    progress = True
    while progress:
        progress = False
        for cand_kinds, cand_drives in candidates(kinds, drives, first_slot):
            if runs >= max_runs or time.monotonic() - begin > max_seconds:
                return Shrunk(kinds, drives, best, runs, time.monotonic() - begin, False)
            runs += 1
            try:
                got = crosscheck.run_specs(ex.index, src, dst, ex.machine, cand_kinds, cand_drives)
            except QemuError:
                continue  # a state the driver cannot produce (e.g. requests on a queue of a stopped driver)
            if fails(got):
                kinds, drives, best, progress = cand_kinds, cand_drives, got, True
                break
    return Shrunk(kinds, drives, best, runs, time.monotonic() - begin, True)


# -- `virtio-compat qemu` -------------------------------------------------------------------------------------


def run_example(index: int, rng: random.Random, src: crosscheck.Side, dst: crosscheck.Side, machine: str,
                kinds: Sequence[str], failures: Path | None = None, seed: int | None = None) -> crosscheck.Example:
    """crosscheck.run_example, and the failure files of what it found (each shrunk over real QEMU first)."""
    ex = crosscheck.run_example(index, rng, src, dst, machine, kinds)
    if ex.disagreements or (ex.violations and not ex.expected):
        ex.failures += [str(p) for p in write_failures(ex, src, dst, failures, seed)]
    return ex


def run(src_binary: str, dst_binary: str, machine: str | None, device: str | None, examples: int, seed: int,
        failures: Path | None = None, per_vm: int = crosscheck.PER_VM
        ) -> tuple[dict[str, Any], list[crosscheck.Example]]:
    """`examples` device states, `per_vm` to a QEMU pair (one of each kind in turn, or all of `device`)."""
    try:
        target = release.target_of(machine or "pc")
    except QemuError as exc:
        raise UsageError(f"--machine {machine}: {exc}") from None
    src, dst = crosscheck.side(src_binary, target), crosscheck.side(dst_binary, target)
    aliases = {"pc": "pc-i440fx", "q35": "pc-q35"}
    if machine is None or machine in FAMILIES or machine in aliases:  # a family: its newest type both binaries have
        machine = crosscheck.default_machine(src, dst, aliases.get(machine or "pc", machine or ""))
    crosscheck.check_choices(machine, device, src, dst)
    rng = random.Random(seed)
    done: list[crosscheck.Example] = []
    folder = failures or FAILURES
    before = set(folder.glob("*.json"))
    try:
        for vm in crosscheck.vm_kinds(examples, per_vm, device, crosscheck.kinds_for(src, dst, machine)):
            interrupt.check()  # no new QEMU pair after a signal, even one whose raise Python dropped
            done.append(run_example(len(done), rng, src, dst, machine, vm, failures=failures, seed=seed))
    except KeyboardInterrupt as e:  # the QEMUs are gone: each is closed by the `with` that started it
        written = sorted(set(folder.glob("*.json")) - before)  # whole files: written, then renamed
        kept = f"{len(written)} failure file{'s' * (len(written) != 1)} kept in {folder}" if written \
            else "no failure file written"
        raise Kept(e, f"qemu interrupted after {len(done)} QEMU pairs ({sum(len(x.devices) for x in done)} "
                      f"device states); {kept}; no QEMU left") from None
    head = {"source": {"binary": src.binary, "version": str(src.version), "release": str(src.release)},
            "destination": {"binary": dst.binary, "version": str(dst.version), "release": str(dst.release)},
            "machine": machine, "seed": seed, "rule": crosscheck.migration_rule(src.release, dst.release),
            "per_vm": per_vm}
    return head, done



# -- failure files -----------------------------------------------------------------------------------------------


def version_line(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return f"({e})"
    return out.splitlines()[0] if out else ""


def side_json(s: crosscheck.Side) -> dict[str, Any]:
    fleet_name = s.given if re.fullmatch(r"\d+\.\d+", s.given) else None
    return {"release": fleet_name, "binary": s.binary, "version": str(s.version), "modelled": str(s.release),
            "version_output": version_line(s.binary)}


def write_failures(ex: crosscheck.Example, src: crosscheck.Side, dst: crosscheck.Side, folder: Path | None,
                   seed: int | None) -> list[Path]:
    """The failure files of one example: R12 (the model and QEMU disagree) and the migration rule QEMU broke,
    each with its case shrunk over real QEMU first."""
    rule = crosscheck.migration_rule(src.release, dst.release)
    out = []
    def disagrees(e: crosscheck.Example) -> bool:
        return bool(e.disagreements)

    def violates(e: crosscheck.Example) -> bool:  # a known incompatibility is no failure
        return bool(e.violations) and not crosscheck.known_incompatibilities(e, src.release, dst.release)

    for name, fails in (("R12", disagrees), (rule, violates)):
        if not fails(ex):
            continue
        small = shrink(ex, src, dst, fails)
        m = small.example
        found = m.disagreements if name == "R12" else m.violations
        extra = {
            "real_pair": {"source": side_json(src), "destination": side_json(dst),
                          "target": release.target_of(ex.machine), "machine": ex.machine, "seed": seed,
                          "example": ex.index, "devices": small.kinds,
                          "drives": [drive_json(d) for d in small.drives]},
            "original_state": {"devices": ex.devices, "drives": [drive_json(d) for d in ex.drives],
                               "disagreements" if name == "R12" else "violations":
                                   ex.disagreements if name == "R12" else ex.violations},
            "minimized_state": summary(small.kinds, small.drives),
            "shrink": {"runs": small.runs, "seconds": round(small.seconds, 1), "complete": small.complete},
            "source_binary": src.binary, "destination_binary": dst.binary,
        }
        what = (f"qemu: {', '.join(small.kinds)} on {ex.machine}, source {src.version}, destination {dst.version}"
                if name == "R12" else f"qemu: {rule} on real QEMUs")
        path = oracle.write_disagreement(m.data, m.argv, dst.release, m.model_verdict, m.qemu_verdict, found, what,
                                         folder, extra, rule=name,
                                         key=f"{src.version} {dst.version} {ex.machine} {extra['minimized_state']}")
        # the stream carries the RTC: the minimal case names the file, so a re-found failure keeps it
        record_replay(path)
        out.append(path)
    return out


def record_replay(path: Path) -> None:
    import json

    record = json.loads(path.read_text())
    record["replay"] = f"virtio-compat replay {path}"
    path.write_text(json.dumps(record, indent=2) + "\n")


# -- replay ------------------------------------------------------------------------------------------------------


def replay_side(j: dict[str, Any], target: str, which: str) -> crosscheck.Side:
    """The binary of one side: the fleet release it came from if it did, else the recorded path."""
    name = j.get("release") or j["binary"]
    try:
        s = crosscheck.side(name, target)
    except HarnessError as e:
        raise QemuError(f"the {which} QEMU {name} is not installed: {str(e).splitlines()[0]}"
                        + (f" (`virtio-compat fleet install --releases {name}`)" if j.get("release") else "")) from None
    return s


def replay(path: str, record: dict[str, Any]) -> tuple[int, str]:
    """Re-run the real pair and the model on the recorded (minimal) case: exit 1 while they still fail."""
    pair = record["real_pair"]
    try:
        src = replay_side(pair["source"], pair["target"], "source")
        dst = replay_side(pair["destination"], pair["target"], "destination")
        dst = dataclasses.replace(dst, release=Version.parse(record["release"]))  # the model the file names
        drives = [drive_from_json(d) for d in pair["drives"]]
    except (KeyError, TypeError, ValueError) as e:
        raise UsageError(f"{path}: cannot rebuild the real-pair case: {type(e).__name__}: {e}") from None
    ex = crosscheck.run_specs(0, src, dst, pair["machine"], pair["devices"], drives)
    rule = record["rule"]
    found = ex.disagreements if rule == "R12" else ex.violations
    text = [f"replay {path} (real pair)",
            f"rule:   {rule}: {'; '.join(record.get('disagreements', []))[:300]} (when saved)",
            f"source:      QEMU {src.version} {src.binary}",
            f"destination: QEMU {dst.version} {dst.binary}, model of {dst.release}",
            f"machine: {pair['machine']}; state: {record.get('minimized_state') or summary(pair['devices'], drives)}",
            f"QEMU:  {ex.outcome}" + (f": {ex.error}" if ex.error else ""),
            f"model: {ex.model_outcome}" + (f": {ex.model_error}" if ex.model_error else "")]
    text += [f"  {d}" for d in found]
    code = 1 if found else 0
    text.append(f"exit {code}: " + (f"{rule} still fails" if code else f"{rule} passes: the two sides agree"))
    return code, "\n".join(text)
