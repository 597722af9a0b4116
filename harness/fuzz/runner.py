"""A run: inputs start, start + 1, ... through the checker; findings saved whole and reported; the address-space cap."""

from __future__ import annotations

import contextlib
import json
import lzma
import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from hashlib import sha1
from pathlib import Path

from harness import interrupt
from harness.errors import UsageError
from harness.fuzz.checker import Checker, Finding
from harness.fuzz.fields import Seed
from harness.fuzz.mutant import Mutant, Mutator
from harness.fuzz.targets import VerdictCall
from models.registry import BASE

# --- a run ----------------------------------------------------------------------------------------------


@dataclass
class Stats:
    inputs: int = 0
    findings: int = 0  # distinct signatures
    seconds: float = 0.0
    interrupted: bool = False
    signum: int = signal.SIGINT  # what interrupted it
    by_signature: dict[str, int] = field(default_factory=dict)  # inputs per signature
    by_mutation: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.inputs / self.seconds if self.seconds > 0 else 0.0


def run(mutator: Mutator, checker: Checker, deadline: float | None = None, count: int | None = None,
        on_finding: Callable[[Finding], None] | None = None, on_progress: Callable[[Stats], None] | None = None,
        start: int = 0) -> Stats:
    """Check inputs start, start + 1, ... until `deadline` (time.monotonic; at least one input) or `count` inputs,
    or Ctrl-C. `on_finding` sees the first input of each new signature; `on_progress` runs at most once a second."""
    stats = Stats()
    by_name = {s.name: s for s in mutator.seeds}
    began = last = time.monotonic()
    i = start
    try:
        while (count is None or stats.inputs < count) and \
                (deadline is None or stats.inputs == 0 or time.monotonic() < deadline):
            interrupt.check()  # a signal whose raise Python dropped (in a finalizer of the decoder's garbage)
            m = mutator.mutant(i)
            i += 1
            seed = by_name.get(m.seed)
            found = checker.check(m, seed)
            stats.inputs += 1
            stats.by_mutation[m.mutation] = stats.by_mutation.get(m.mutation, 0) + 1
            if found is not None:
                new = found.signature not in stats.by_signature
                stats.by_signature[found.signature] = stats.by_signature.get(found.signature, 0) + 1
                if new:
                    stats.findings += 1
                    if on_finding is not None:
                        on_finding(_as_stream(found, checker, seed))
            now = time.monotonic()
            stats.seconds = now - began
            if on_progress is not None and now - last >= 1.0:
                last = now
                on_progress(stats)
    except KeyboardInterrupt as e:
        stats.interrupted = True
        stats.signum = getattr(e, "signum", signal.SIGINT)
    stats.seconds = time.monotonic() - began
    return stats


def _as_stream(found: Finding, checker: Checker, seed: Seed | None) -> Finding:
    """A payload input's finding as the whole stream it was embedded in, when that stream reproduces it."""
    if found.mutant.payload is None:
        return found
    m = found.mutant
    again = checker.check(Mutant(found.stream, m.mutation, m.seed, f"{m.note} (embedded in {m.seed})"), seed)
    if again is not None and again.kind == found.kind:
        return again
    return Finding(found.kind, f"{found.summary} (found by decode_payload as {m.device} on {m.transport}; the "
                   "saved stream may not reproduce it)", found.signature, m, found.stream, found.seconds, found.peak)


def save_finding(found: Finding, out: Path) -> tuple[Path, bool]:
    """Write the finding's stream as `<out>/<kind>-<sha1[:12]>.bin`, and for one that `verdict` reproduces, how
    (release, destination) in the `.json` of that name, first. Each file atomically: a temporary file in `out`,
    then a hard link, which fails rather than replace a file of that name. (path, whether it was written now)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{found.kind}-{sha1(found.stream).hexdigest()[:12]}.bin"
    if path.exists():
        return path, False
    with interrupt.deferred():  # a signal waits until the files are in place and the temporary ones gone
        if found.verdict is not None:
            meta = {"kind": found.kind, "summary": found.summary, "signature": found.signature,
                    "release": str(found.verdict.release), "dest": found.verdict.dest,
                    "reproduce": f"virtio-compat verdict {path.name} {found.verdict.args()}"}
            _write_new(path.with_suffix(".json"), json.dumps(meta, indent=1).encode() + b"\n")
        return path, _write_new(path, found.stream)


def _write_new(path: Path, data: bytes) -> bool:
    """Write a file that does not exist yet (False, and nothing written, when it does)."""
    fd, tmp = tempfile.mkstemp(prefix=".fuzz-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def read_finding(path: Path) -> tuple[bytes, VerdictCall | None]:
    """A saved finding (`.bin`, or `.bin.xz` as tests/data keeps them): its stream, and the verdict that reproduces
    it when its `.json` says one does."""
    data = lzma.decompress(path.read_bytes()) if path.suffix == ".xz" else path.read_bytes()
    meta_path = path.parent / (path.name.split(".")[0] + ".json")
    if not meta_path.exists():
        return data, None
    meta = json.loads(meta_path.read_text())
    return data, VerdictCall(BASE.release_of(meta["release"]), meta.get("dest"))


def report(found: Finding, out: Path) -> None:
    """Save a new finding in `out` and say what it is and how to reproduce it (stdout)."""
    try:
        path, _ = save_finding(found, out)
    except OSError as e:
        print(f"fuzz: {found.kind}: {found.summary}; could not save it in {out}: {e.strerror or e}", flush=True)
        return
    m = found.mutant
    print(f"fuzz: {found.kind}: {found.summary} [{m.mutation} on {m.seed}: {m.note[:160]}]", flush=True)
    command = f"verdict {path} {found.verdict.args()}" if found.verdict is not None else f"decode {path}"
    print(f"  reproduce: virtio-compat {command}", flush=True)


@contextlib.contextmanager
def address_space_cap(extra: int) -> Iterator[None]:
    """Cap the address space at what the process uses now + `extra` while fuzzing, so that a decode that
    allocates by a hostile length fails with MemoryError (reported as a finding) instead of exhausting the
    machine. A no-op where the limit cannot be read or set."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        with open("/proc/self/status") as f:
            vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
        cap = vm + extra if hard == resource.RLIM_INFINITY else min(vm + extra, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (ImportError, OSError, ValueError, StopIteration):
        yield
        return
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def make_dir(path: Path, option: str, what: str) -> None:
    """`path` as a directory, made if need be; anything else is one line (UsageError)."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path}: not a directory ({option})")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{path}: cannot create the {what} directory: {e.strerror or e}") from None
