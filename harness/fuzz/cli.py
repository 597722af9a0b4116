"""`virtio-compat fuzz`: the structure-aware run from the command line."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness import samples
from harness.fuzz.checker import Checker, Finding
from harness.fuzz.mutant import Mutator
from harness.fuzz.runner import Stats, run, save_finding
from harness.fuzz.seeds import default_seed_paths, load_seeds


@contextlib.contextmanager
def _address_space_cap(extra: int) -> Iterator[None]:
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


def run_cli(args: Any) -> int:
    """`virtio-compat fuzz [--minutes N] [--seed S] [--seeds DIR] [--out DIR]`: 1 if anything was found, else 0;
    interrupted: Kept (the findings so far are whole files in DIR), exit 130 or 143."""
    from harness.errors import UsageError
    from harness.interrupt import Kept

    began = time.monotonic()
    minutes = float(args.minutes)
    if not 0 < minutes < float("inf"):
        raise UsageError(f"--minutes must be a positive number, not {args.minutes}")
    if args.seed < 0:
        raise UsageError(f"--seed must be 0 or more, not {args.seed}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: not a directory (--out)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{out}: cannot create the output directory: {e.strerror or e}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"{out}: cannot write there (--out)")
    paths = samples.streams_in(args.seeds) if getattr(args, "seeds", None) else default_seed_paths()
    if not paths:
        raise UsageError("no seed streams: the package's samples are missing (a broken install)")
    mutator = Mutator(load_seeds(paths), args.seed)
    tty = sys.stderr.isatty()
    last_line = [0.0]

    def on_finding(found: Finding) -> None:
        try:
            path, _ = save_finding(found, out)
        except OSError as e:
            print(f"fuzz: {found.kind}: {found.summary}; could not save it in {out}: {e.strerror or e}", flush=True)
            return
        m = found.mutant
        print(f"fuzz: {found.kind}: {found.summary} [{m.mutation} on {m.seed}: {m.note[:160]}]", flush=True)
        print(f"  reproduce: virtio-compat decode {path}", flush=True)

    def on_progress(stats: Stats) -> None:
        # a line a second on a terminal (rewritten in place), one every 10 s into a log
        if not tty and stats.seconds - last_line[0] < 10:
            return
        last_line[0] = stats.seconds
        text = (f"fuzz: {stats.seconds:.0f} s, {stats.inputs} inputs, {stats.rate:.0f}/s, "
                f"{stats.findings} finding(s)")
        print(f"\r{text}" if tty else text, end="" if tty else "\n", file=sys.stderr, flush=True)

    deadline = began + minutes * 60
    with _address_space_cap(4 << 30), Checker() as checker:
        stats = run(mutator, checker, deadline=deadline, on_finding=on_finding, on_progress=on_progress,
                    start=0)
    inputs_found = sum(stats.by_signature.values())
    if tty:  # the progress line ends, or makes way for the one line that says what was kept
        sys.stderr.write("\r" + " " * 70 + "\r" if stats.interrupted else "\n")
    if stats.interrupted:  # one line (cli prints it): what the run kept
        kept = f"{stats.findings} finding(s) kept in {out}" if stats.findings else "no finding"
        raise Kept(stats.signum, f"fuzz interrupted after {stats.inputs} inputs in {stats.seconds:.1f} s (seed "
                                 f"{args.seed}); {kept}")
    print(f"fuzz: seed {args.seed}: {stats.inputs} inputs in {stats.seconds:.1f} s ({stats.rate:.0f}/s), "
          f"{stats.findings} finding(s) from {inputs_found} input(s)" + (f", saved in {out}" if stats.findings else ""),
          file=sys.stderr, flush=True)
    return 1 if stats.findings else 0
