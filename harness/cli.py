"""The `virtio-compat` command. Exit codes: 0 success, 1 a rule was violated, 2 bad input, bad usage
or a missing QEMU binary (one line on stderr, never a traceback)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from harness import interrupt
from harness.errors import HarnessError, StreamError, UsageError
from harness.inputs import load_schemas, read_stream_file
from harness.interrupt import Interrupted, Kept

__all__ = ["Interrupted", "Kept", "main"]

EXIT_OK, EXIT_RULE, EXIT_BAD_INPUT = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def cmd_decode(args: argparse.Namespace) -> int:
    from harness.decode import format_text, stream_summary
    from harness.wire.stream import decode_stream
    from harness.wire.virtio import NO_EXTRAS

    # a payload a schema module changes decodes with its layout; without one, harness/wire's layouts need no model,
    # unless the stream has a virtio section they do not lay out (a device whose declaration brings its layout)
    registry = load_schemas(args.schema) if args.schema else None
    data = read_stream_file(args.stream)
    try:
        # a payload that does not decode is reported, and the rest of the stream still shown
        stream = decode_stream(data, strict=False, extras=registry.wire if registry is not None else NO_EXTRAS)
        if registry is None and _undeclared_virtio(stream):
            registry = load_schemas(None)
            stream = decode_stream(data, strict=False, extras=registry.wire)
    except HarnessError as e:
        raise type(e)(f"{args.stream}: {e}") from None
    summary = stream_summary(stream, registry)
    if args.json:
        json.dump(summary, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(format_text(summary))
    bad = [p for p in stream.devices if p.error is not None]
    if bad:
        sys.stdout.flush()
        raise StreamError(f"{args.stream}: {bad[0].error}" + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))
    return EXIT_OK


def _undeclared_virtio(stream: Any) -> bool:
    """Whether a section looks like a virtio device (its vmsd name) that harness/wire alone does not decode."""
    from harness.wire.virtio import DEVICE_DATA

    names = {str(getattr(r, "idstr", "")).rsplit("/", 1)[-1] for r in stream.records}
    return any(n.startswith(("virtio-", "vhost-")) and n not in DEVICE_DATA for n in names)


def cmd_verdict(args: argparse.Namespace) -> int:
    from harness.verdict import verdict
    from harness.wire.stream import decode_stream

    registry = load_schemas(args.schema)  # --release may name a release a schema module declares
    try:
        release = registry.release_of(args.release)
    except ValueError as e:
        raise UsageError(str(e)) from None
    data = read_stream_file(args.stream)
    try:
        # a payload this tool cannot read still gets a verdict
        stream = decode_stream(data, strict=False, extras=registry.wire)
    except HarnessError as e:
        raise type(e)(f"{args.stream}: {e}") from None
    v = verdict(stream, release, args.dest, data, registry)
    if args.json:
        json.dump(v.as_json(), sys.stdout, indent=1)
        sys.stdout.write("\n")
        return EXIT_OK
    print(f"destination: QEMU {release}" + (f", {args.dest}" if args.dest else " like the source (inferred)"))
    for a in v.assumptions:
        print(f"  assumed: {a}")
    if v.error:
        print(f"stream rejected: {v.error}")
    for d in v.devices:
        print(f"{d['section']}: {d['outcome']}" + (f": {d['error']}" if d["error"] else ""))
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    with interrupt.saying("bench interrupted; no figures printed, nothing written, no QEMU or worker left"):
        from harness.bench import run_bench

        return run_bench(args)


def cmd_fuzz(args: argparse.Namespace) -> int:
    with interrupt.saying(f"fuzz interrupted before its first input; nothing written in {args.out}"):
        from harness.fuzz.cli import run_cli

        return run_cli(args)


def cmd_replay(args: argparse.Namespace) -> int:
    from harness.replay import run_cli

    return run_cli(args.file)


def cmd_check(args: argparse.Namespace) -> int:
    from harness.check import run_check

    registry = load_schemas(args.schema)  # a mistake is one line and exit 2; --releases may name its releases
    with interrupt.saying(f"check interrupted; no reports written (those in {args.reports} are as they were)"):
        return run_check(args, registry)


def cmd_diff(args: argparse.Namespace) -> int:
    from harness.diff import run_cli

    return run_cli(args)


def cmd_qemu(args: argparse.Namespace) -> int:
    if args.examples < 1:
        raise UsageError("--examples must be at least 1")
    if not 1 <= args.per_vm <= 16:
        raise UsageError("--per-vm must be between 1 and 16 (PCI slots 3..18; their rings share -m 4)")
    with interrupt.saying("qemu interrupted before its first QEMU pair; no failure file written"):
        from harness.qemu.realcase import run

        head, examples = run(args.src_binary, args.dst_binary, args.machine, args.device, args.examples, args.seed,
                             per_vm=args.per_vm)
    bad = [e for e in examples if e.disagreements or (e.violations and not e.expected)]
    if args.json:
        json.dump({**head, "examples": [e.as_json() for e in examples], "failed": len(bad)}, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return EXIT_RULE if bad else EXIT_OK
    src, dst = head["source"], head["destination"]
    print(f"source {src['binary']} (QEMU {src['version']}, model {src['release']}) -> destination {dst['binary']} "
          f"(QEMU {dst['version']}, model {dst['release']}), {head['machine']}, seed {head['seed']}")
    for e in examples:
        said = f"QEMU {e.outcome}" + (f" ({e.error})" if e.error else "")
        agree = "model agrees" if not e.disagreements else f"MODEL DISAGREES ({e.model_outcome}: {e.model_error})"
        drives = ", ".join(f"{d.kind} status={d.status:#x} queues={len(d.queues)} "
                           f"requests={sum(q.requests for q in d.queues)}"
                           + (f" writes={sum(q.writes for q in d.queues)}" if d.kind == "virtio-scsi" else "")
                           for d in e.drives) \
            or ", ".join(f"{kind} reset" for kind in e.devices)
        print(f"#{e.index} {drives}: {said}; {agree}")
        for line in e.disagreements + e.violations:
            print(f"    {line}")
        for name, reason in e.expected.items():
            print(f"    expected: known incompatibility {name}: {reason}")
        for path in e.failures:
            print(f"    failure file: {path}")
    states = sum(len(e.devices) for e in examples)
    expected = sum(1 for e in examples if e.expected and not e.disagreements)
    disks = sum(e.scsi_disks_checked for e in examples)
    scsi = f"; {disks} SCSI disk sections with {sum(e.scsi_inflight for e in examples)} in-flight requests" \
        if disks else ""
    print(f"{states} device states in {len(examples)} QEMU pairs, {len(bad)} with a disagreement or a rule "
          f"violation ({head['rule']})" + (f", {expected} with a known incompatibility only" if expected else "")
          + scsi)
    return EXIT_RULE if bad else EXIT_OK


def cmd_mutate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from harness.failures import write_files_atomic
    from harness.qemu.mutate import Tally, campaign

    if args.mutants < 1:
        raise UsageError("--mutants must be at least 1")
    if args.per_stream < 1:
        raise UsageError("--per-stream must be at least 1")
    log = open(args.log, "a", buffering=1) if args.log else None  # noqa: SIM115 (closed below)

    def progress(line: str) -> None:
        print(line, file=log or sys.stderr, flush=True)

    kept: list[Tally] = []

    def summarize(tally: Tally, interrupted: bool = False) -> tuple[dict[str, object], Path]:
        summary = {**tally.as_json(), "interrupted": interrupted}
        Path(args.out).mkdir(parents=True, exist_ok=True)
        # an interrupted run leaves a finished one's summary of the same seed as it was
        cut = "-interrupted" if interrupted else ""
        path = Path(args.out) / f"summary-{tally.release}-{tally.transport}-seed{args.seed}{cut}.json"
        write_files_atomic([(path, json.dumps(summary, indent=1) + "\n")])
        return summary, path

    try:
        tally = campaign(args.binary, args.machine, args.mutants, args.seed, args.per_stream, Path(args.out),
                         progress, kept.append)
    except KeyboardInterrupt as e:
        if not kept:
            raise
        _, path = summarize(kept[0], interrupted=True)
        raise Kept(e, f"mutate interrupted after {kept[0].mutants} mutants ({kept[0].disagreements} disagreements); "
                      f"their summary is in {path}") from None
    finally:
        if log is not None:
            log.close()
    summary, _ = summarize(tally)
    if args.json:
        json.dump(summary, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(f"QEMU {tally.release} {tally.machine} ({tally.transport}): {tally.mutants} mutants of {tally.streams} "
              f"streams in {tally.seconds:.0f} s ({summary['per_second']}/s); QEMU said {dict(tally.outcomes)}")
        print(f"{tally.disagreements} disagreements with the model ({tally.unpredicted} of them crashes it did not "
              f"predict); findings against QEMU {tally.release}: {tally.crashes} crashes, {tally.hangs} hangs, "
              f"{tally.undefined} mutants on which it corrupts its memory; cases in "
              f"{args.out}/{tally.release}/{tally.transport}/")
        for ex in tally.examples[:10]:
            print(f"  {ex['name']}: QEMU {ex['qemu']['outcome']} ({ex['qemu']['error']}); model "
                  f"{ex['model']['outcome']} ({ex['model']['error']})")
    return EXIT_RULE if tally.disagreements else EXIT_OK


def cmd_fleet(args: argparse.Namespace) -> int:
    from harness import fleet

    if args.fleet_command == "install":
        releases = fleet.parse_list(args.releases, fleet.RELEASES, "release")
        targets = fleet.parse_list(args.targets, fleet.TARGETS, "target")
        print(f"fleet: {fleet.cache_dir()}", flush=True)
        for release in releases:
            try:
                r = fleet.install(release, targets, progress=lambda text: print(f"  {text}", flush=True))
            except KeyboardInterrupt as e:
                done = [b.release for b in fleet.installed()]
                state = "installed" if release in done else "not installed, nothing half-installed"
                raise Kept(e, f"fleet install interrupted; QEMU {release} {state} "
                              f"(installed: {', '.join(dict.fromkeys(done)) or 'none'})") from None
            size = f"{r.download_bytes / 1e6:.0f} MB"
            what = "already installed" if r.already else f"installed in {r.seconds:.1f} s ({size})"
            print(f"QEMU {release} ({', '.join(r.targets)}): {what}", flush=True)
        return EXIT_OK
    if args.fleet_command == "path":
        print(fleet.binary(args.release, args.target))
        return EXIT_OK
    rows = fleet.installed()
    if args.json:
        json.dump([{"release": b.release, "target": b.target, "package": b.package,
                    "package_version": b.package_version, "path": str(b.path), "version": b.version_output,
                    "machines": list(b.machines)} for b in rows], sys.stdout, indent=1)
        sys.stdout.write("\n")
        return EXIT_OK
    print(f"fleet: {fleet.cache_dir()}")
    if not rows:
        print("  nothing installed (`virtio-compat fleet install`)")
    for b in rows:
        print(f"  {b.release:5} {b.target:8} {b.package} {b.package_version}  {b.path}")
    return EXIT_OK


def seed_arg(text: str) -> int:
    """argparse type of --seed: a whole number >= 0."""
    from harness.explore import parse_seed

    try:
        return parse_seed(text, "--seed")
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--seed: ")) from None


def schema_option(parser: argparse.ArgumentParser, what: str) -> None:
    """--schema MODULE, repeatable; load_schemas() applies what it collects."""
    parser.add_argument("--schema", action="append", metavar="MODULE",
                        help=f"{what} (models/schema.py); repeatable")


def _decode_args(d: argparse.ArgumentParser) -> None:
    d.add_argument("stream", metavar="STREAM", help="a migration stream file (e.g. from migrate exec:cat>FILE)")
    d.add_argument("--json", action="store_true", help="print one JSON object with fixed key names")
    schema_option(d, "decode with a schema module's layouts")
    d.set_defaults(func=cmd_decode)


def _verdict_args(v: argparse.ArgumentParser) -> None:
    v.add_argument("stream", metavar="STREAM", help="a migration stream file")
    v.add_argument("--release", default="7.2", help="the destination's QEMU release (default 7.2)")
    v.add_argument("--dest", metavar="ARGS", help="the destination's command line in QEMU syntax "
                   "(-machine, -smp, -m, -netdev, -device ...); default: like the source, inferred")
    v.add_argument("--json", action="store_true", help="print one JSON object with fixed key names")
    schema_option(v, "apply a schema module: its layouts, releases and rules")
    v.set_defaults(func=cmd_verdict)


def _bench_args(b: argparse.ArgumentParser) -> None:
    b.add_argument("--stream", metavar="STREAM",
                   help="the stream to decode (default: the virtio-net sample the package ships)")
    b.add_argument("--seconds", type=float, default=2.0, help="time per measurement (default 2)")
    b.add_argument("--json", action="store_true", help="print the figures as JSON")
    b.set_defaults(func=cmd_bench)


def _fuzz_args(f: argparse.ArgumentParser) -> None:
    f.add_argument("--minutes", type=float, default=1.0, help="how long to run (default 1)")
    f.add_argument("--seed", type=int, default=0, help="the run's seed: input i depends only on it and i (default 0)")
    f.add_argument("--seeds", action="append", metavar="DIR",
                   help="mutate the *.bin streams of DIR, e.g. ../shared/fixtures/qemu-7.2 (repeatable; default: "
                   "the sample streams shipped with the package)")
    f.add_argument("--out", default="reports/fuzz", metavar="DIR",
                   help="where to save crashing inputs (default reports/fuzz/)")
    f.add_argument("--engine", choices=("mutate", "atheris"), default="mutate",
                   help="mutate: the structure-aware mutations, input i a function of the seed and i (default); "
                   "atheris: libFuzzer's coverage guidance with those mutations and its own (needs atheris)")
    f.add_argument("--target", choices=("decode", "verdict"),
                   help="decode: the decoder's contract; verdict: that, then `verdict` (the model's load, no QEMU) "
                   "of each whole stream (default: decode, verdict under atheris)")
    f.add_argument("--corpus", metavar="DIR",
                   help="atheris: keep libFuzzer's corpus in DIR and start from what it holds (default: a "
                   "temporary folder)")
    f.add_argument("--replay", action="append", metavar="PATH",
                   help="check each input of PATH once (a file, findings or a corpus folder; repeatable) instead "
                   "of fuzzing; a finding's .json names the verdict that reproduces it")
    f.set_defaults(func=cmd_fuzz)


def _replay_args(r: argparse.ArgumentParser) -> None:
    r.add_argument("file", metavar="FILE", help="a failure file, reports/failures/<rule>-<hash>.json")
    r.set_defaults(func=cmd_replay)


def _check_args(k: argparse.ArgumentParser) -> None:
    from harness.check import PROFILES, workers

    k.add_argument("--releases", help="comma-separated releases, e.g. 2.6,7.2 (default: all)")
    k.add_argument("--devices", help="comma-separated devices, e.g. virtio-net,virtio-blk (default: all)")
    k.add_argument("--transports", help="comma-separated transports: pci,mmio,ccw (default: all)")
    k.add_argument("--machines", help="comma-separated machine types or families, e.g. pc-q35 (default: all)")
    k.add_argument("--profile", choices=PROFILES, default="ci", help="Hypothesis profile (default ci; nightly: hours, "
                   "for shards sharing a Redis database)")
    k.add_argument("-n", type=workers, default="auto", metavar="N|auto", help="pytest-xdist workers (default auto)")
    k.add_argument("--reports", default="reports", metavar="DIR", help="where the reports go (default reports/)")
    k.add_argument("--real", action="store_true",
                   help="cells whose two releases are in the fleet also run a sample on the real QEMU pair")
    k.add_argument("--real-examples", type=int, default=4, metavar="N",
                   help="device states per cell on real QEMU with --real (default 4: one QEMU pair)")
    k.add_argument("--seed", type=seed_arg, metavar="N",
                   help="draw the examples of the run with this seed (default: from the commit under test; "
                   "printed at the start)")
    k.add_argument("--shard", metavar="I/N", help="run the I-th of N disjoint parts of the cells, balanced by the "
                   "durations in the reports folder (durations.json), else by count")
    k.add_argument("--example-db", metavar="DB", help="Hypothesis' example database: redis://HOST:PORT/DB (shared by "
                   "shards and machines), a folder, or none (default $VIRTIO_COMPAT_EXAMPLE_DB, else "
                   ".hypothesis/examples)")
    k.add_argument("--fuzz", type=float, metavar="MINUTES",
                   help="first run HypoFuzz over the cells for MINUTES (coverage-guided, adaptive across cells; "
                   "needs the nightly extra), then the matrix, which replays its findings from the database")
    schema_option(k, "run the matrix with a schema module's changes")
    k.set_defaults(func=cmd_check)


def _diff_args(df: argparse.ArgumentParser) -> None:
    from harness.check import PROFILES

    df.add_argument("a", metavar="A", help="a release, e.g. 11.1")
    df.add_argument("b", metavar="B", help="a release, or a schema module (then the newest release it declares)")
    df.add_argument("--device", help="one device the models declare, e.g. virtio-net (default all; a wrong name "
                    "lists them)")
    schema_option(df, "a schema module to apply first")
    df.add_argument("--profile", choices=PROFILES, default="ci",
                    help="Hypothesis profile of the matrix cells diff runs for arbitrary Python (default ci)")
    df.add_argument("--json", action="store_true", help="print one JSON object")
    df.set_defaults(func=cmd_diff)


def _qemu_args(q: argparse.ArgumentParser) -> None:
    q.add_argument("--src-binary", required=True, metavar="A",
                   help="the source QEMU: a path, a name on PATH, or a fleet release such as 5.2")
    q.add_argument("--dst-binary", required=True, metavar="B", help="the destination QEMU")
    q.add_argument("--machine", help="machine type; a family alone (pc-i440fx, pc-q35, virt, s390-ccw-virtio) takes "
                   "its newest both binaries have (default pc-i440fx); virt and s390-ccw-virtio run the release's "
                   "qemu-system-aarch64 / -s390x")
    q.add_argument("--device", help="a device the models declare, e.g. virtio-net (default: each in turn; a wrong "
                   "name lists them)")
    q.add_argument("--examples", type=int, default=8, help="random reachable device states to try (default 8)")
    q.add_argument("--per-vm", type=int, default=4, help="device states per QEMU pair (one balloon at most), on "
                   "consecutive slots (default 4: a pair's start-up serves them all)")
    q.add_argument("--seed", type=int, default=0, help="the run's seed (default 0)")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(func=cmd_qemu)


def _mutate_args(mu: argparse.ArgumentParser) -> None:
    mu.add_argument("--binary", default="qemu-system-x86_64", metavar="B",
                    help="the QEMU that saves the streams and loads the mutants: a path, a name on PATH, or a fleet "
                    "release such as 7.2 (default qemu-system-x86_64)")
    mu.add_argument("--machine", help="machine type or family (pc-i440fx, pc-q35, virt, s390-ccw-virtio; default "
                    "pc-i440fx): virt and s390-ccw-virtio run the release's qemu-system-aarch64 / -s390x")
    mu.add_argument("--mutants", type=int, default=200, help="mutants to load (default 200)")
    mu.add_argument("--per-stream", type=int, default=400, help="mutants of each source stream (default 400)")
    mu.add_argument("--seed", type=int, default=0, help="the run's seed (default 0)")
    mu.add_argument("--out", default="reports/mutate", help="where cases and the summary go (default reports/mutate)")
    mu.add_argument("--log", metavar="FILE", help="append progress lines here (default stderr)")
    mu.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    mu.set_defaults(func=cmd_mutate)


def _fleet_args(fl: argparse.ArgumentParser) -> None:
    from harness.fleet import RELEASES, TARGETS

    fsub = fl.add_subparsers(dest="fleet_command", metavar="ACTION", parser_class=_Parser, required=True)
    fi = fsub.add_parser("install", help="download, unpack and check the fleet's binaries (idempotent)")
    fi.add_argument("--releases", help=f"comma-separated, e.g. 5.2,11.1 (default all: {','.join(RELEASES)})")
    fi.add_argument("--targets", help=f"comma-separated (default all: {','.join(TARGETS)})")
    fl_list = fsub.add_parser("list", help="what is installed: release, target, package version, wrapper path")
    fl_list.add_argument("--json", action="store_true", help="print one JSON list")
    fp = fsub.add_parser("path", help="the wrapper of one release's binary, for scripts")
    fp.add_argument("release", metavar="RELEASE")
    fp.add_argument("--target", default="x86_64", choices=TARGETS, help="default x86_64")
    fl.set_defaults(func=cmd_fleet)


# name: (the line `--help` shows, what adds its arguments); only the command being run gets its arguments,
# so that a command imports only what it needs (decode neither the matrix nor the fleet)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "decode": ("show the virtio devices inside a QEMU migration stream", _decode_args),
    "verdict": ("predict what a destination QEMU does with a stream", _verdict_args),
    "bench": ("measure decode speed against the targets of DESIGN.md", _bench_args),
    "fuzz": ("fuzz the stream decoder (and verdict) with mutations of the sample streams (or --seeds)", _fuzz_args),
    "replay": ("re-run the case of a failure file and show why it fails", _replay_args),
    "check": ("run the compatibility matrix (the tests of `pytest -n auto`) with progress", _check_args),
    "diff": ("the static differences between the virtio formats of two releases, each with its migration verdict",
             _diff_args),
    "qemu": ("run the rules against two real QEMU binaries, the model predicting both", _qemu_args),
    "mutate": ("load boundary mutations of real streams in real QEMU and in the model, and compare verdicts",
               _mutate_args),
    "fleet": ("real QEMU releases from Debian's archive, side by side in a cache folder", _fleet_args),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; given a command's name, of that command alone (given another word, of every
    command by name and help line, for the error that lists them)."""
    p = _Parser(prog="virtio-compat", description="Compatibility test harness for QEMU virtio migration.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (help_, add_args) in COMMANDS.items():
        if command in COMMANDS and name != command:
            continue  # each parser costs argparse's gettext look-ups: a short command should not pay for all
        sp = sub.add_parser(name, help=help_)
        if command is None or command == name:
            add_args(sp)
    return p


def _command_of(argv: Sequence[str]) -> str | None:
    """The command argv names (the first word that is not an option: the top level has no option with a value)."""
    return next((a for a in argv if not a.startswith("-")), None)


def _interrupted(e: KeyboardInterrupt) -> int:
    """One line, what the command kept when it says so, and 128 + the signal (130 SIGINT, 143 SIGTERM)."""
    print(f"virtio-compat: {e.kept}" if isinstance(e, Kept) else "virtio-compat: interrupted", file=sys.stderr)
    return 128 + getattr(e, "signum", signal.SIGINT)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(_command_of(sys.argv[1:] if argv is None else argv))
    main_thread = threading.current_thread() is threading.main_thread()
    old = interrupt.install() if main_thread else {}
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            raise UsageError("a command is needed: decode, verdict, check, diff, replay, bench, fuzz, qemu, mutate, "
                             "fleet (see `virtio-compat --help`)")
        code: int = args.func(args)
        interrupt.check()  # a signal whose raise Python dropped (in a __del__, a callback) still counts
        return code
    except HarnessError as e:
        if interrupt.pending() is not None:  # e.g. a QEMU that the same Ctrl-C (to the group) ended first
            return _interrupted(Interrupted(interrupt.pending() or signal.SIGINT))
        print(f"virtio-compat: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as e:
        return _interrupted(e)
    except BrokenPipeError:
        return EXIT_OK
    finally:
        if old:
            interrupt.restore(old)


if __name__ == "__main__":
    sys.exit(main())
