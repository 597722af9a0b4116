"""`virtio-compat fuzz`: the structure-aware run from the command line."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import interrupt, samples
from harness.errors import UsageError
from harness.fuzz.checker import Checker
from harness.fuzz.mutant import Mutant, Mutator
from harness.fuzz.runner import Stats, address_space_cap, make_dir, read_finding, report, run
from harness.fuzz.seeds import default_seed_paths, load_seeds
from harness.fuzz.targets import Verdicts
from harness.interrupt import Kept


def run_cli(args: Any) -> int:
    """`virtio-compat fuzz [--engine mutate|atheris] [--target decode|verdict] [--minutes N] [--seed S]
    [--seeds DIR] [--out DIR] [--corpus DIR] [--replay PATH]`: 1 if anything was found, else 0; interrupted: Kept
    (the findings so far are whole files in DIR), exit 130 or 143."""
    began = time.monotonic()
    minutes, out = _validate(args)
    if getattr(args, "corpus", None) and getattr(args, "engine", "mutate") != "atheris":
        raise UsageError("--corpus is libFuzzer's corpus: it goes with --engine atheris")
    if getattr(args, "replay", None):
        return replay(args, out)
    paths = samples.streams_in(args.seeds) if getattr(args, "seeds", None) else default_seed_paths()
    if not paths:
        raise UsageError("no seed streams: the package's samples are missing (a broken install)")
    if getattr(args, "engine", "mutate") == "atheris":
        from harness.fuzz.guided import run_parent

        return run_parent(args, paths, minutes, out, target(args))
    seeds = load_seeds(paths)
    mutator = Mutator(seeds, args.seed)
    tty = sys.stderr.isatty()
    last_line = [0.0]

    def on_progress(stats: Stats) -> None:
        # a line a second on a terminal (rewritten in place), one every 10 s into a log
        if not tty and stats.seconds - last_line[0] < 10:
            return
        last_line[0] = stats.seconds
        text = (f"fuzz: {stats.seconds:.0f} s, {stats.inputs} inputs, {stats.rate:.0f}/s, "
                f"{stats.findings} finding(s)")
        print(f"\r{text}" if tty else text, end="" if tty else "\n", file=sys.stderr, flush=True)

    deadline = began + minutes * 60
    verdicts = Verdicts(seeds) if target(args) == "verdict" else None
    with address_space_cap(4 << 30), Checker(verdicts=verdicts) as checker:
        stats = run(mutator, checker, deadline=deadline, on_finding=lambda found: report(found, out),
                    on_progress=on_progress, start=0)
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


def target(args: Any) -> str:
    """What each input is run through: `decode` (the decoder's contract), or `verdict` (that, then the model's
    verdict on the stream). By default the decoder alone, and both under atheris."""
    chosen = getattr(args, "target", None)
    return str(chosen) if chosen else ("verdict" if getattr(args, "engine", "mutate") == "atheris" else "decode")


def _validate(args: Any) -> tuple[float, Path]:
    """--minutes and --seed in range, --out a folder this process can write: (minutes, out)."""
    minutes = float(args.minutes)
    if not 0 < minutes < float("inf"):
        raise UsageError(f"--minutes must be a positive number, not {args.minutes}")
    if args.seed < 0:
        raise UsageError(f"--seed must be 0 or more, not {args.seed}")
    out = Path(args.out)
    make_dir(out, "--out", "output")
    if not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"{out}: cannot write there (--out)")
    return minutes, out


def replay_paths(folders: Sequence[str]) -> list[Path]:
    """The inputs of each --replay PATH: a file, or every file of a folder (a libFuzzer corpus names them by
    their SHA-1, findings are `*.bin` or `*.bin.xz`; their `.json` and hidden files are not inputs)."""
    paths: list[Path] = []
    for name in folders:
        p = Path(name)
        if p.is_file():
            paths.append(p)
        elif p.is_dir():
            paths += sorted(f for f in p.iterdir() if f.is_file() and f.suffix != ".json"
                            and not f.name.startswith("."))
        else:
            raise UsageError(f"{p}: no such file or directory (--replay)")
    return paths


def replay(args: Any, out: Path) -> int:
    """`fuzz --replay PATH`: each input once through the checker (a saved finding with the verdict its `.json`
    names); what still breaks the contract is reported as the run reports it (not saved again)."""
    seeds = load_seeds(samples.streams_in(args.seeds) if getattr(args, "seeds", None) else default_seed_paths(),
                       variants=("full",))
    checked = found_any = 0
    began = time.monotonic()
    with address_space_cap(4 << 30), Checker(verdicts=Verdicts(seeds)) as checker:
        for path in replay_paths(args.replay):
            interrupt.check()
            data, call = read_finding(path)
            checker.verdicts = Verdicts(seeds, call) if call is not None or target(args) == "verdict" else None
            found = checker.check(Mutant(data, "replay", path.name, str(path)))
            checked += 1
            if found is not None:
                found_any += 1
                print(f"fuzz: {path}: {found.kind}: {found.summary}", flush=True)
    print(f"fuzz: replayed {checked} input(s) in {time.monotonic() - began:.1f} s, {found_any} still break the "
          "contract", file=sys.stderr, flush=True)
    return 1 if found_any else 0

