"""What the checker runs on a whole stream after the decoder, with `--target verdict`: `verdict`, the model's load
of every device (no QEMU), as `virtio-compat verdict STREAM --release R [--dest CMDLINE]` does."""

from __future__ import annotations

import functools
import shlex
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from harness.errors import HarnessError
from harness.fuzz.fields import Seed
from harness.verdict import verdict
from harness.wire.stream import Stream
from models.releases import RELEASES, MachineType, Version, machine_deleted


@dataclass(frozen=True)
class VerdictCall:
    """One `verdict` of a stream: against which release, and which destination (None: inferred from the stream)."""

    release: Version
    dest: str | None = None

    def args(self) -> str:
        """The command-line arguments that make the same verdict again."""
        return f"--release {self.release}" + (f" --dest {shlex.quote(self.dest)}" if self.dest else "")


@functools.cache
def _releases_for(machine: str | None) -> tuple[Version, ...]:
    """The modelled releases that still have the stream's machine type (every release for a name that is not one)."""
    try:
        version = MachineType.parse(machine or "").version
    except ValueError:
        return RELEASES
    return tuple(r for r in RELEASES if r >= version and not machine_deleted(r, version)) or RELEASES[-1:]


class Verdicts:
    """How an input is judged: a release among those that have its machine type, and either the command line of
    the seed with the same virtio sections (the source's own, as `mutate` loads its mutants) or a destination
    inferred from the input, both picked from the input's bytes (so that an input is judged the same way again).
    `call` fixes both (a saved finding's own)."""

    def __init__(self, seeds: Sequence[Seed] = (), call: VerdictCall | None = None) -> None:
        self.fixed = call
        self.by_devices = {frozenset((ref.section, ref.instance_id) for ref, _ in s.payloads): s.dest
                           for s in seeds if s.dest}

    def pick(self, s: Stream, data: bytes) -> VerdictCall:
        if self.fixed is not None:
            return self.fixed
        h = zlib.crc32(data)
        releases = _releases_for(s.machine)
        dest = self.by_devices.get(frozenset(p.key for p in s.devices)) if h & 1 else None
        return VerdictCall(releases[(h >> 1) % len(releases)], dest)

    def run(self, s: Stream, data: bytes, call: VerdictCall) -> None:
        """The verdict, with what `virtio-compat verdict` prints from it; a HarnessError is its clean refusal
        (exit 2: a destination it cannot infer or build), anything else raised is a finding."""
        try:
            v = verdict(s, call.release, call.dest, data)
        except HarnessError:
            return
        v.as_json()
