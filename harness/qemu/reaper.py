"""The scratch folders and the QEMU processes alive in this Python process, and what ends them when
we exit: close() at exit, and a watchdog process for when we are killed (SIGTERM, SIGKILL)."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Protocol


class Closable(Protocol):
    def close(self) -> None: ...


_scratch_root: Path | None = None
_live: dict[int, Closable] = {}
_started_pids: list[int] = []


def scratch_root() -> Path:
    """This worker's scratch root: one temporary folder per Python process (and xdist worker);
    each QemuProcess makes its own folder inside it and removes it on close."""
    global _scratch_root
    if _scratch_root is None or not _scratch_root.is_dir():
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        base = tempfile.gettempdir()
        # Unix socket paths must fit in 108 bytes: keep the prefix short.
        if len(base) > 40:
            base = "/tmp"
        _scratch_root = Path(tempfile.mkdtemp(prefix=f"virtio-compat-{worker}-", dir=base))
    return _scratch_root


def started_pids() -> list[int]:
    """The pid of every QEMU started by this Python process, in order (for hygiene checks)."""
    return list(_started_pids)


def live_processes() -> list[Closable]:
    """The QemuProcess objects started and not yet closed."""
    return list(_live.values())


# A helper process that outlives us if we are killed (SIGTERM from a CI timeout, SIGKILL): it reads
# "pid" / "-pid" lines and, when its stdin closes, SIGKILLs the QEMUs still listed and removes the
# scratch root. Normal exits, exceptions and KeyboardInterrupt are handled by close() and the
# atexit hook; this is the backstop.
_WATCHDOG_SCRIPT = """
import os, shutil, signal, sys
live = set()
for line in sys.stdin:
    line = line.strip()
    if line.startswith("-"):
        live.discard(int(line[1:]))
    elif line:
        live.add(int(line))
for pid in live:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"qemu" in f.read():
                os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
shutil.rmtree(sys.argv[1], ignore_errors=True)
"""
_watchdog: subprocess.Popen[bytes] | None = None


def watch(pid: int, alive: bool) -> None:
    global _watchdog
    if _watchdog is None or _watchdog.poll() is not None:
        if not alive or not sys.executable:
            return
        _watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG_SCRIPT, str(scratch_root())],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to our process group must not end it before it acts
        )
    assert _watchdog.stdin is not None
    try:
        _watchdog.stdin.write(f"{'' if alive else '-'}{pid}\n".encode())
        _watchdog.stdin.flush()
    except OSError:
        pass  # the backstop is gone; close() still ends every process


@atexit.register
def _close_all_at_exit() -> None:
    for qemu in list(_live.values()):
        qemu.close()
    if _scratch_root is not None:
        shutil.rmtree(_scratch_root, ignore_errors=True)
    if _watchdog is not None and _watchdog.stdin is not None:
        _watchdog.stdin.close()




def register(qemu: Closable, pid: int) -> None:
    """A QEMU just started: close it at exit, and kill it from the watchdog if we are killed."""
    _live[id(qemu)] = qemu
    _started_pids.append(pid)
    watch(pid, alive=True)


def unregister(qemu: Closable, pid: int | None) -> None:
    _live.pop(id(qemu), None)
    if pid is not None:
        watch(pid, alive=False)
