"""SIGINT and SIGTERM in the long commands (`check`, `qemu`, `fuzz`, `bench`, `fleet install`).

The first signal is recorded and raised as Interrupted (a KeyboardInterrupt), so that every `finally` and
context manager cleans up; later signals are ignored, so that a second Ctrl-C cannot cut the clean-up short.
Python drops an exception raised in a weakref callback, a `__del__` or an asyncio callback ("Exception
ignored in ..."): the loops that start QEMUs, run inputs or measure call check(), which raises the recorded
signal again, so a dropped one still stops the run. Inside deferred() a signal is only recorded (a
report's write and rename, a step of qemu.qmp's event loop must not be cut in two) and raised when the
region ends. Nothing here imports the rest of the package: every layer may use it.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_pending: int | None = None  # the first signal received since install()
_worker = False  # in a pool's worker process: see install_worker()
_wakers: list[Callable[[], object]] = []  # one per deferred() region entered, innermost last


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM: unwinds like Ctrl-C; the command exits with 128 + signum."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class Kept(KeyboardInterrupt):
    """An interruption with the one line that says what the command kept."""

    def __init__(self, cause: BaseException | int, kept: str) -> None:
        super().__init__(kept)
        self.kept = kept
        self.signum: int = cause if isinstance(cause, int) else getattr(cause, "signum", pending() or signal.SIGINT)


def _handler(signum: int, frame: FrameType | None) -> None:
    global _pending
    if _pending is not None:
        return  # later signals: the clean-up runs to its end
    _pending = signum
    if _wakers:
        _wakers[-1]()  # a deferred region: it raises when it ends
        return
    # multiprocessing prints a traceback for a KeyboardInterrupt in a worker that waits for work, not for SystemExit
    raise SystemExit(128 + signum) if _worker else Interrupted(signum)


def _unraisable(hook: Any) -> Any:
    def quiet(u: Any) -> None:
        # a KeyboardInterrupt dropped by Python is raised again by check(); after a signal, an object that it cut
        # short in its __init__ failing in its __del__ is no news either
        if not isinstance(u.exc_value, KeyboardInterrupt) and _pending is None:
            hook(u)

    return quiet


def install() -> dict[int, Any]:
    """Handle SIGINT and SIGTERM as above (main thread only); what restore() puts back."""
    global _pending
    _pending = None
    old: dict[int, Any] = {s: signal.signal(s, _handler) for s in SIGNALS}
    old[0] = sys.unraisablehook
    sys.unraisablehook = _unraisable(sys.unraisablehook)
    return old


def install_worker() -> None:
    """The initializer of a pool's worker process (bench's QEMU workers): a signal ends its task (its QEMUs
    closed) or, while it waits for work, the worker, quietly; then the signals that blocked() held are let in."""
    global _worker
    install()
    _worker = True
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)


@contextmanager
def blocked() -> Iterator[None]:
    """Start worker processes in this block: they start with SIGINT and SIGTERM blocked (the mask is inherited),
    so that a Ctrl-C cannot reach one before install_worker() ran; here the signal waits for the block's end."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def restore(old: dict[int, Any]) -> None:
    """The handlers install() replaced (main() called in-process by tests leaves them as it found them). After a
    signal the process is exiting: later signals are ignored (SIG_IGN, which Python's own finalization keeps,
    where it puts back SIG_DFL for a handler), so that a second Ctrl-C cuts short neither the at-exit clean-up
    (harness/qemu/reaper.py) nor the exit code."""
    if _pending is not None:
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        return
    for s, handler in old.items():
        if s:
            signal.signal(s, handler)
    if 0 in old:
        sys.unraisablehook = old[0]


def pending() -> int | None:
    """The signal received, if any (None also when install() was not called: a library use)."""
    return _pending


def check() -> None:
    """Raise Interrupted if a signal came (again, if its first raise was dropped). Not for clean-up code."""
    if _pending is not None:
        raise Interrupted(_pending)


@contextmanager
def deferred(wake: Callable[[], object] | None = None) -> Iterator[None]:
    """A region that a signal must not cut in two: the signal is recorded (and `wake` called, to end a
    wait early) and raised when the outermost region ends. A signal that came before the region (its
    clean-up runs) is not raised again."""
    before = _pending
    _wakers.append(wake or (lambda: None))
    try:
        yield
    finally:
        _wakers.pop()
        if not _wakers and before is None and _pending is not None:
            raise Interrupted(_pending)


@contextmanager
def saying(kept: str) -> Iterator[None]:
    """A signal inside the block ends the command with the line `kept`, unless a deeper level said more."""
    try:
        yield
    except Kept:
        raise
    except KeyboardInterrupt as e:
        raise Kept(e, kept) from None
