"""`virtio-compat fuzz --engine atheris`: the same checks under libFuzzer's coverage guidance (atheris).

libFuzzer ends its process when it is done (no Python clean-up runs), so the run is a child process: the command
starts it, forwards a signal to it, reads libFuzzer's log (coverage, corpus) and says what the run did. The child
imports the decoder and the models instrumented (every branch a libFuzzer counter; construct too, which does the
decoder's branching), seeds libFuzzer's corpus with the seed streams (each as it is, slimmed and enriched, as the
structure-aware run mutates them), and mutates with both: an input whose field map is known (a seed, or one that
decodes) gets the structure-aware mutations most of the time, anything else libFuzzer's own byte mutations. Each
input goes through the Checker (the decoder's contract, then `verdict`); a finding is saved in `--out` as the
structure-aware run saves it and the run goes on, so libFuzzer itself never sees a crash.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from hashlib import sha1
from pathlib import Path
from typing import Any

from harness import interrupt
from harness.errors import HarnessError, UsageError
from harness.fuzz.checker import Checker
from harness.fuzz.fields import Seed, field_map
from harness.fuzz.mutant import MUTATIONS, Mutant, Mutator, embed
from harness.fuzz.runner import address_space_cap, make_dir, report
from harness.fuzz.seeds import load_seeds
from harness.fuzz.targets import Verdicts
from harness.interrupt import Kept

# what the child imports instrumented: the decoder, the models, and construct (whose code makes the decoder's
# branches); never the fuzzer itself, whose counters would only be noise
INSTRUMENTED = ("harness", "models", "construct")
NOT_INSTRUMENTED = ("harness.fuzz", "harness.interrupt")
# the signals run_parent blocked are let in first: until child_main handles them, one ends the child at once
_CHILD = ("import signal\n"
          "signal.pthread_sigmask(signal.SIG_UNBLOCK, {{signal.SIGINT, signal.SIGTERM}})\n"
          "import atheris, sys\n"
          "with atheris.instrument_imports(include={include!r}, exclude={exclude!r}):\n"
          "    import harness.decode, harness.verdict, harness.wire.stream, harness.wire.virtio, models.model\n"
          "from harness.fuzz.guided import child_main\n"
          "child_main(sys.argv[1])\n")
STRUCTURED = 0.7  # how often an input with a field map gets a structure-aware mutation (else libFuzzer's own)
FROM_SEED = 0.1  # how often an input without one is replaced by a structure-aware mutation of a seed
MAP_TRY = 0.2  # how often the field map of a new input is made (a strict decode, then a recorded one)
MAP_CACHE = 512
# the memory of one input in 4 is measured (tracemalloc): the traced run costs 10-20 decodes, and what libFuzzer
# learns from is the number of inputs it runs; a blow-up that a length drives recurs on many inputs
MEMORY_EVERY = 4
STATUS_EVERY = 1.0  # seconds between the child's status files
_COV = re.compile(r"^#(\d+)\s+(\w+)\s+cov: (\d+) ft: (\d+)(?: corp: (\d+)/)?")


@dataclass
class Status:
    """What the child did so far (written to a file the command reads: libFuzzer's exit skips Python's)."""

    inputs: int = 0
    findings: int = 0
    seconds: float = 0.0
    mapped: int = 0  # inputs whose field map was made
    structured: int = 0  # mutations that were structure-aware
    by_signature: dict[str, int] = field(default_factory=dict)
    ended: str = ""  # "deadline", "signal N"


def available() -> bool:
    return importlib.util.find_spec("atheris") is not None


# --- the command ------------------------------------------------------------------------------------------


def run_parent(args: Any, paths: list[Path], minutes: float, out: Path, target: str) -> int:
    if not available():
        raise UsageError("--engine atheris needs atheris (pip install atheris, or the test extra: "
                         "pip install 'virtio-compat[test]', which installs it where it has a binary wheel: "
                         "CPython <= 3.11 on Linux x86_64)")
    corpus = Path(args.corpus) if getattr(args, "corpus", None) else None
    if corpus is not None:
        make_dir(corpus, "--corpus", "corpus")
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="virtio-compat-atheris-") as tmp:
        work = Path(tmp)
        seconds = minutes * 60
        config = {"seeds": [str(p) for p in paths], "out": str(out), "target": target, "seed": args.seed,
                  "seconds": seconds, "status": str(work / "status.json"), "seed_dir": str(work / "seeds"),
                  "corpus": str(corpus or work / "corpus")}
        (work / "config.json").write_text(json.dumps(config))
        code = _CHILD.format(include=list(INSTRUMENTED), exclude=list(NOT_INSTRUMENTED))
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        tty = sys.stderr.isatty()
        log: deque[str] = deque(maxlen=40)
        cov: dict[str, int] = {}
        signum = 0
        last = 0.0
        child: subprocess.Popen[str] | None = None
        try:
            # SIGINT and SIGTERM wait until the child is there to be told (else it could start after the signal)
            with interrupt.blocked():
                child = subprocess.Popen([sys.executable, "-c", code, str(work / "config.json")],
                                         stderr=subprocess.PIPE, env=env, text=True, errors="replace")
            assert child.stderr is not None
            for line in child.stderr:
                log.append(line.rstrip("\n"))
                m = _COV.match(line)
                if m:
                    cov = {"execs": int(m[1]), "cov": int(m[3]), "ft": int(m[4]), "corpus": int(m[5] or 0)}
                now = time.monotonic() - began
                if cov and (now - last >= (1 if tty else 10)):
                    last = now
                    text = (f"fuzz: atheris {now:.0f} s, {cov['execs']} inputs, {cov['execs'] / now:.0f}/s, "
                            f"coverage {cov['cov']} ({cov['ft']} features), corpus {cov['corpus']}")
                    print(f"\r{text}" if tty else text, end="" if tty else "\n", file=sys.stderr, flush=True)
            child.wait()
        except KeyboardInterrupt as e:
            signum = getattr(e, "signum", signal.SIGINT)
            if child is not None:
                _stop(child, signum)
        if tty:
            sys.stderr.write("\r" + " " * 90 + "\r")
        status = _read_status(work / "status.json")
        if corpus is None:
            shutil.rmtree(work / "corpus", ignore_errors=True)
    seconds_run = status.seconds or time.monotonic() - began
    rate = status.inputs / seconds_run if seconds_run > 0 else 0.0
    found_in = sum(status.by_signature.values())
    kept = f"{status.findings} finding(s) kept in {out}" if status.findings else "no finding"
    coverage = f", coverage {cov['cov']} ({cov['ft']} features), corpus {cov['corpus']}" if cov else ""
    if signum or status.ended.startswith("signal"):
        raise Kept(signum or int(status.ended.split()[-1]), f"fuzz interrupted after {status.inputs} inputs in "
                   f"{seconds_run:.1f} s (atheris, seed {args.seed}{coverage}); {kept}")
    if status.ended != "deadline":
        print("\n".join(log), file=sys.stderr)
        code_ = child.returncode if child is not None else None
        print(f"fuzz: the atheris run ended unexpectedly (exit {code_}) after {status.inputs} inputs; "
              f"libFuzzer's last lines are above, what it kept is in {out}", file=sys.stderr, flush=True)
        return 1
    print(f"fuzz: atheris, seed {args.seed}, {target}: {status.inputs} inputs in {seconds_run:.1f} s ({rate:.0f}/s)"
          f"{coverage}, {status.mapped} mapped, {status.structured} structure-aware mutations; "
          f"{status.findings} finding(s) from {found_in} input(s)" + (f", saved in {out}" if status.findings else ""),
          file=sys.stderr, flush=True)
    return 1 if status.findings else 0


def _stop(child: subprocess.Popen[str], signum: int) -> None:
    """Tell the child (a terminal's Ctrl-C reached it already) and wait for it: it ends after the input it is on."""
    if child.poll() is None:
        child.send_signal(signum)
    try:
        child.wait(timeout=1.5)  # what it still writes fits in the pipe
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    assert child.stderr is not None
    child.stderr.read()


def _read_status(path: Path) -> Status:
    try:
        return Status(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return Status()


# --- the child --------------------------------------------------------------------------------------------


class _Child:
    def __init__(self, config: dict[str, Any]) -> None:

        self.config = config
        self.seeds = load_seeds([Path(p) for p in config["seeds"]])
        self.mutator = Mutator(self.seeds, config["seed"])
        self.maps: dict[bytes, Seed | None] = {sha1(s.data).digest(): s for s in self.seeds}
        verdicts = Verdicts(self.seeds) if config["target"] == "verdict" else None
        self.checker = Checker(verdicts=verdicts, memory_every=MEMORY_EVERY)
        self.out = Path(config["out"])
        self.status = Status()
        self.began = time.monotonic()
        self.deadline = self.began + float(config["seconds"])
        self.last_status = 0.0
        self.notes: tuple[bytes, str] = (b"", "")  # the last mutation: its output's digest and what it did

    def write_status(self, ended: str = "") -> None:
        self.status.seconds = time.monotonic() - self.began
        self.status.ended = ended
        path = Path(self.config["status"])
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self.status)))
        os.replace(tmp, path)

    def end(self, ended: str, code: int) -> None:
        """libFuzzer has no way to stop from inside an input: say what was done and leave (no Python clean-up
        is needed: the findings are whole files, the command removes the temporary folder)."""
        self.write_status(ended)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    def one(self, data: bytes) -> None:

        try:
            interrupt.check()
            if time.monotonic() >= self.deadline:
                self.end("deadline", 0)
            digest = sha1(data).digest()
            note = self.notes[1] if self.notes[0] == digest else "libFuzzer's input"
            found = self.checker.check(Mutant(bytes(data), "atheris", "-", note))
            self.status.inputs += 1
            if found is not None:
                new = found.signature not in self.status.by_signature
                self.status.by_signature[found.signature] = self.status.by_signature.get(found.signature, 0) + 1
                if new:
                    self.status.findings += 1
                    report(found, self.out)
                    self.write_status()
            now = time.monotonic()
            if now - self.last_status >= STATUS_EVERY:
                self.last_status = now
                self.write_status()
        except KeyboardInterrupt as e:
            self.end(f"signal {getattr(e, 'signum', signal.SIGINT)}", 0)

    def mutate(self, data: bytes, max_size: int, seed: int) -> bytes:
        try:
            with interrupt.deferred():  # a signal here is raised by the next input, where the run ends cleanly
                return self._mutate(data, max_size, seed)
        except KeyboardInterrupt:
            return bytes(data[:max_size])

    def _mutate(self, data: bytes, max_size: int, seed: int) -> bytes:
        import atheris


        rng = random.Random(seed)
        s = self._mapped(data, rng)
        if s is None and rng.random() < FROM_SEED:
            s = rng.choice(self.seeds)
        if s is None or rng.random() >= STRUCTURED:
            return bytes(atheris.Mutate(data, max_size))
        m = self.mutator.make(rng, rng.choice(MUTATIONS), s)
        self.status.structured += 1
        out = (m.data if m.payload is None else embed(s, m.payload, m.data))[:max_size]
        self.notes = (sha1(out).digest(), f"{m.mutation} on {s.name}: {m.note}")
        return out

    def _mapped(self, data: bytes, rng: random.Random) -> Seed | None:
        """The input's Seed (its field map) when it is known or made now, else None."""

        digest = sha1(data).digest()
        if digest in self.maps:
            return self.maps[digest]
        if rng.random() >= MAP_TRY:
            return None
        try:
            view, payloads, vmdesc_at = field_map(bytes(data))
            seed: Seed | None = Seed(f"input {digest.hex()[:12]}", view, payloads, vmdesc_at)
            self.status.mapped += 1
        except (HarnessError, RecursionError, ValueError, MemoryError):  # does not decode: libFuzzer's mutations
            seed = None
        if len(self.maps) >= MAP_CACHE + len(self.seeds):
            self.maps.pop(next(k for k, v in self.maps.items() if v is None or v not in self.seeds))
        self.maps[digest] = seed
        return seed


def child_main(config_path: str) -> None:
    import atheris


    config = json.loads(Path(config_path).read_text())
    interrupt.install()
    status = Path(config["status"])
    try:
        child = _Child(config)
    except KeyboardInterrupt as e:  # before the first input: nothing done, nothing kept
        status.write_text(json.dumps(asdict(Status(ended=f"signal {getattr(e, 'signum', signal.SIGINT)}"))))
        os._exit(0)
    seed_dir, corpus = Path(config["seed_dir"]), Path(config["corpus"])
    seed_dir.mkdir(parents=True, exist_ok=True)
    corpus.mkdir(parents=True, exist_ok=True)
    for s in child.seeds:
        # the slimmed and enriched variants: the same structure several times cheaper to check (the whole streams
        # stay seeds of the structure-aware mutations)
        if "~" in s.name or not any("~" in other.name for other in child.seeds):
            (seed_dir / f"{s.name}.bin").write_bytes(s.data)
    argv = [sys.argv[0], f"-seed={config['seed'] + 1}",  # libFuzzer's 0 is a random seed
            f"-max_total_time={int(config['seconds']) + 30}",  # the child ends itself at the deadline; a backstop
            "-timeout=0",  # the Checker times each input (SIGALRM is its)
            "-handle_int=0", "-handle_term=0",  # a signal ends the run between inputs, with the status written
            "-rss_limit_mb=8192", "-reload=0", "-print_final_stats=0",
            f"-artifact_prefix={Path(config['out'])}/libfuzzer-", str(corpus), str(seed_dir)]
    with address_space_cap(4 << 30):
        child.checker.__enter__()
        atheris.Setup(argv, child.one, custom_mutator=child.mutate)
        atheris.Fuzz()
