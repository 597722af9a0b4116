"""The matrix on real pairs (`--real`): a cell whose two releases are in the fleet also runs a sample of
driven device states through the real source and destination QEMU (realcase.run_example), and the
model is held to both (R12). QEMU rejecting a reachable state, or not preserving it, is a failure unless
a declared known incompatibility (harness.known.KNOWN) covers that device's state."""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from harness import fleet
from harness.errors import QemuError
from harness.matrix import Cell
from harness.qemu import crosscheck, realcase, release
from models.registry import BASE
from models.releases import MachineType

FAMILY = {"pci": ("pc-i440fx", "pc-q35"), "mmio": ("virt",), "ccw": ("s390-ccw-virtio",)}
TARGET = {"pci": "x86_64", "mmio": "aarch64", "ccw": "s390x"}


def missing(cell: Cell) -> str | None:
    """Why a cell cannot run on real QEMU, or None when both its releases are installed in the fleet."""
    for r in (cell.src, cell.dst):
        if str(r) not in fleet.SOURCES:
            return f"QEMU {r} is not a fleet release"
        try:
            fleet.binary(str(r), TARGET[cell.transport])
        except QemuError as exc:
            return str(exc)
    return None


@dataclass
class RealResult:
    machines: list[str] = field(default_factory=list)  # one per QEMU pair
    states: int = 0  # device states compared
    r5_states: int = 0  # source payloads whose subsections R5 held to the real binary's stream
    r9_loads: int = 0  # the model's loads of the real streams R9 held to the reference
    pairs: int = 0  # QEMU pairs they took
    failures: list[str] = field(default_factory=list)  # one line each
    expected: dict[str, str] = field(default_factory=dict)  # known incompatibility name -> reason
    files: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)  # release -> package version


def _machine(cell: Cell, seed: int, pair: int) -> str:
    """A machine type both binaries list and both models know: the first QEMU pair of a cell takes the newest
    (where a migration between the two releases most likely happens), later ones draw from the cell's id."""
    target = TARGET[cell.transport]
    listed = [set(next(b.machines for b in fleet.installed() if b.release == str(r) and b.target == target))
              for r in (cell.src, cell.dst)]
    known = {m.name for m in BASE.machine_types(cell.src, cell.transport)} & {
        m.name for m in BASE.machine_types(cell.dst, cell.transport)}
    common = sorted(listed[0] & listed[1] & known)
    common = [m for m in common if release.family(m) in FAMILY[cell.transport]]
    if not common:
        raise QemuError(f"no {cell.transport} machine type both QEMU {cell.src} and {cell.dst} have")
    if pair == 0:
        return max(common, key=lambda m: (MachineType.parse(m).version, m))
    return random.Random(zlib.crc32(f"{cell.id}/{seed}/{pair}".encode())).choice(common)


def run_real_cell(cell: Cell, examples: int, seed: int = 0, failures: Path | None = None) -> RealResult:
    """`examples` device states of the cell's device through the real pair, `crosscheck.PER_VM` to a QEMU pair
    (one: QEMU supports one balloon device)."""
    target = TARGET[cell.transport]
    src = crosscheck.side(str(fleet.binary(str(cell.src), target)), target)
    dst = crosscheck.side(str(fleet.binary(str(cell.dst), target)), target)
    out = RealResult(versions={str(b.release): b.package_version for b in fleet.installed()
                                        if b.target == target and b.release in (str(cell.src), str(cell.dst))})
    rng = random.Random(zlib.crc32(f"{cell.id}/{seed}/states".encode()))
    per_vm = 1 if cell.device == "virtio-balloon" else crosscheck.PER_VM
    for i in range(0, examples, per_vm):
        kinds = [cell.device] * min(per_vm, examples - i)
        machine = _machine(cell, seed, out.pairs)
        out.machines.append(machine)
        ex = realcase.run_example(out.pairs, rng, src, dst, machine, kinds, failures=failures)
        out.pairs += 1
        out.states += len(kinds)
        out.files += ex.failures
        out.r5_states += ex.presence_checked
        out.r9_loads += ex.load_order_checked
        out.failures += [d if d.startswith(("R5: ", "R9: ")) else f"R12: {d}" for d in ex.disagreements]
        if ex.violations:
            if ex.expected:
                out.expected.update(ex.expected)
            else:
                out.failures += ex.violations
    return out
