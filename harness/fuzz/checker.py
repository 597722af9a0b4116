"""Checking one input: the decoder's contract (success or a well-formed StreamError, in time, within memory)."""

from __future__ import annotations

import gc
import re
import signal
import threading
import time
import traceback
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.decode import format_text, stream_summary
from harness.errors import StreamError
from harness.fuzz.fields import Seed
from harness.fuzz.mutant import Mutant, embed
from harness.fuzz.targets import VerdictCall, Verdicts
from harness.wire.payload import decode_payload
from harness.wire.stream import decode_stream
from harness.wire.virtio import TRANSPORTS, compiled_payload_layout
from models.registry import BASE

ROOT = Path(__file__).resolve().parents[2]  # the folder that holds the harness package (findings name files by it)
_FUZZER = str(Path(__file__).resolve().parent) + "/"  # the fuzzer's own frames are never where a bug is

# Time allowed for one decode (untraced): a base, and 10 us a byte. The slowest linear decodes measured take 8 us a
# byte: lists of small construct records (RAM block entries, QEMU_VM_COMMAND records), parsed twice, the second time
# to locate an error. A fixture takes 2-6 ms; what is quadratic or unbounded blows far past this.
TIME_LIMIT = 2.0
TIME_PER_BYTE = 10e-6
# tracemalloc makes allocation-heavy code 10-20x slower: the traced run (for the peak) has a limit of its own
TRACED_SLOWDOWN = 20
# Peak traced memory allowed for one decode: MEMORY_FACTOR x input + MEMORY_SLACK. The decoder makes a Python object
# for every field it reads, so its densest inputs cost a constant factor, measured: the real streams 3-6x, RAM
# records of 9 bytes 14x, repeated subsections 19x, JSON description text up to 37x (`[{},{},...]`: a dict per
# 3 bytes), RAM block entries and QEMU_VM_COMMAND records (a construct Container per 5-9 bytes) 45-51x. The slack
# covers fixed costs (compiled layouts, 1024-entry arrays whatever the input). What a length or count field drives
# instead of the bytes that are there grows with the field (up to 4 GiB from 4 bytes), and lands far above the line.
MEMORY_FACTOR = 64
MEMORY_SLACK = 4 << 20
# Memory a decode may leave allocated once it returned (caches filled for the first time, small): more is a cache
# that hostile input grows, which a long run pays again and again
RETAINED_LIMIT = 1 << 20

# --- checking one input ----------------------------------------------------------------------------------


class _Hang(BaseException):
    """Raised by the SIGALRM handler inside a decode that ran past the time limit (a BaseException, so that no
    `except Exception` in the decoder swallows it)."""


@dataclass(frozen=True)
class Finding:
    kind: str  # crash, hang, memory, bad-error
    summary: str  # one line: what happened
    signature: str  # findings with one signature are one bug
    mutant: Mutant
    stream: bytes  # a whole stream to reproduce it with `virtio-compat decode` (the input, or it embedded)
    seconds: float = 0.0
    peak: int = 0
    verdict: VerdictCall | None = None  # it was checked with `verdict` too: how (reproduced by `verdict FILE ...`)


def memory_bound(size: int) -> int:
    return MEMORY_FACTOR * size + MEMORY_SLACK


def _where(tb: Any) -> str:
    """Where an exception was raised, as file:line (function): the innermost frame of the harness (the fuzzer
    itself aside), else the innermost frame."""
    frames = [fr for fr in traceback.extract_tb(tb) if not fr.filename.startswith(_FUZZER)]
    ours = [fr for fr in frames if fr.filename.startswith((str(ROOT / "harness"), str(ROOT / "models")))]
    if not (ours or frames):
        return "?"
    fr = (ours or frames)[-1]
    name = Path(fr.filename)
    return f"{name.relative_to(ROOT) if name.is_relative_to(ROOT) else name}:{fr.lineno} ({fr.name})"


def _chain(e: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


_DIGITS = re.compile(r"\d+")


def _malformed(e: StreamError, size: int, whole_stream: bool) -> str:
    """What is wrong with a StreamError's offset and path ('' when nothing is)."""
    offset = e.offset
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= size:
        return f"offset {offset!r} not within the {size}-byte input"
    if not isinstance(e.path, str) or not e.path:
        return "empty field path"
    if whole_stream and offset < 8 and not e.path.startswith("header"):
        return f"offset {offset} is in the file header, not in {e.path}"  # an offset lost on the way
    return ""


class Checker:
    """Runs inputs through the decoder under a time limit (SIGALRM) and tracemalloc; use as a context manager."""

    def __init__(self, time_limit: float | None = None, per_byte: float | None = None,
                 bound: Callable[[int], int] | None = None, verdicts: Verdicts | None = None,
                 memory_every: int = 1) -> None:
        self.time_limit = TIME_LIMIT if time_limit is None else time_limit
        self.per_byte = TIME_PER_BYTE if per_byte is None else per_byte
        self.bound = memory_bound if bound is None else bound
        self._armed = False
        self._alarm = False
        self._old_handler: Any = None
        self._outer_tracing = False
        self.verdicts = verdicts  # set: a whole stream that decodes is then given to `verdict` too
        # the traced run (peak and retained memory) costs 10-20 decodes: 1 = every input, n = one input in n,
        # picked by its bytes (the same input is always judged the same way)
        self.memory_every = memory_every
        self._stage = "decode"
        self._call: VerdictCall | None = None

    def __enter__(self) -> Checker:
        for transport in TRANSPORTS:  # compiling a layout takes a while: not inside any input's time limit
            for device in BASE.wire.sections():
                compiled_payload_layout(transport, device, BASE.wire)
        self._alarm = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
        if self._alarm:
            self._old_handler = signal.signal(signal.SIGALRM, self._on_alarm)
        self._outer_tracing = tracemalloc.is_tracing()
        # what exists now (seeds, layouts) is not the decodes' garbage: a collection then walks only theirs
        gc.freeze()
        return self

    def __exit__(self, *exc: object) -> None:
        gc.unfreeze()
        self._armed = False
        if self._alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._old_handler)

    def _on_alarm(self, signum: int, frame: Any) -> None:
        if self._armed:
            self._armed = False
            raise _Hang()

    def _run(self, m: Mutant, kept: list[StreamError]) -> None:
        self._stage, self._call = "decode", None
        if m.payload is None:
            # what `virtio-compat decode`, the reproduction, does: a payload that does not decode is kept with its
            # StreamError (the one a strict decode_stream raises) and the walk goes on; then the summary
            s = decode_stream(m.data, strict=False)
            kept += [p.error for p in s.devices if p.error is not None]
            format_text(stream_summary(s))
            if self.verdicts is not None:
                self._call = self.verdicts.pick(s, m.data)
                self._stage = "verdict"
                self.verdicts.run(s, m.data, self._call)
        else:
            decode_payload(m.data, m.transport, m.device)

    def _timed(self, m: Mutant, limit: float, kept: list[StreamError]) -> tuple[BaseException | None, float]:
        """Decode once under a SIGALRM timer: (the exception, or None; seconds); payload errors a tolerant walk
        kept go to `kept`."""
        start = time.perf_counter()
        try:
            self._armed = True
            if self._alarm:
                signal.setitimer(signal.ITIMER_REAL, limit)
            try:
                self._run(m, kept)
            finally:
                self._armed = False
                if self._alarm:
                    signal.setitimer(signal.ITIMER_REAL, 0)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # judged by the caller; anything but StreamError breaks the contract
            return e, time.perf_counter() - start
        return None, time.perf_counter() - start

    def _traced(self, m: Mutant, limit: float) -> tuple[BaseException | None, int, int]:
        """Decode once under tracemalloc: (the exception, or None; peak bytes allocated by the decode; bytes it
        allocated and still held once it returned and garbage was collected: what a cache kept)."""
        if self._outer_tracing:
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            error, _ = self._timed(m, limit, [])
            return error, tracemalloc.get_traced_memory()[1] - base, 0
        tracemalloc.start()  # traces only what this decode allocates: a small table, and the peak is the decode's
        try:
            error, _ = self._timed(m, limit, [])
            for e in _chain(error) if error is not None else ():
                e.__traceback__ = None  # its frames hold the decode's objects
            current, peak = tracemalloc.get_traced_memory()
            if current > RETAINED_LIMIT:  # decoded values hold cycles (construct contexts): collect them first
                gc.collect()
                current = tracemalloc.get_traced_memory()[0]
            return error, peak, current
        finally:
            tracemalloc.stop()

    def check(self, m: Mutant, seed: Seed | None = None) -> Finding | None:
        """None when the decoder kept its contract for this input, else what went wrong (`seed`: the seed of a
        payload input, to embed it in a stream)."""
        size = len(m.data)
        limit = self.time_limit + size * self.per_byte
        kept: list[StreamError] = []
        error, seconds = self._timed(m, limit, kept)
        stage, call = self._stage, self._call
        # a verdict's finding says so (its signature too); a decoder's reads as it always did
        what, tag = (f"verdict ({call.release}, {'the source' if call.dest else 'inferred'})", "verdict ") \
            if stage == "verdict" and call is not None else ("decode", "")
        peak = 0

        def finding(kind: str, summary: str, signature: str) -> Finding:
            stream = m.data if m.payload is None or seed is None else embed(seed, m.payload, m.data)
            return Finding(kind, summary, signature, m, stream, seconds, peak, call)

        if isinstance(error, _Hang) or (error is None and seconds > limit):
            where = _where(error.__traceback__) if error is not None else "?"
            return finding("hang", f"{what} still running after {limit:.3g} s, in {where}", f"hang {tag}{where}")
        if error is not None and not isinstance(error, StreamError):
            where = _where(error.__traceback__)
            text = f"{type(error).__name__}: {str(error)[:200]}"
            return finding("crash", f"{text} at {where}" + (f", in {what}" if tag else ""),
                           f"crash {tag}{type(error).__name__} {where}")
        for e in ([error] if isinstance(error, StreamError) else []) + kept:
            bad = _malformed(e, size, m.payload is None)
            if bad:
                return finding("bad-error", f"StreamError {e}: {bad}",
                               f"bad-error {_DIGITS.sub('N', e.message)[:80]} {bad[:12]}")
            memory_error = next((x for x in _chain(e) if isinstance(x, MemoryError)), None)
            if memory_error is not None:
                where = _where(memory_error.__traceback__)
                return finding("memory", f"an allocation failed (MemoryError) in {where}, reported as: {e}",
                               f"memory MemoryError {where}")
        del kept
        if self.memory_every > 1 and zlib.crc32(m.data) % self.memory_every:
            return None  # not one of the inputs whose memory is measured
        # tracemalloc makes allocation-heavy code 10-20x slower, so time is judged above, untraced; the traced run
        # gets a limit of its own only so that it cannot hang the fuzzer
        traced_error, peak, retained = self._traced(m, limit * TRACED_SLOWDOWN)
        if isinstance(traced_error, _Hang):
            return finding("hang", f"decode still running after {limit * TRACED_SLOWDOWN:.3g} s under "
                           "tracemalloc", "hang traced")
        outcome = "ok" if error is None else _DIGITS.sub("N", error.path if isinstance(error, StreamError) else "")
        if peak > self.bound(size):
            return finding("memory", f"peak {peak / 2**20:.1f} MiB for a {size}-byte input "
                           f"(bound {self.bound(size) / 2**20:.1f} MiB); outcome: {outcome}", f"memory {outcome}")
        if retained > RETAINED_LIMIT:
            return finding("memory", f"{retained / 2**20:.1f} MiB still held after the decode returned (a cache "
                           f"that hostile input grows); outcome: {outcome}", f"memory retained {outcome}")
        return None
