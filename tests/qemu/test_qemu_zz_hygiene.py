"""Runs last in this folder: no QEMU started by this session is left running, none is left
unreaped, and no scratch folder is left, even after a test raised while QEMU was running."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.qemu.process import QemuProcess, live_processes, scratch_root, started_pids

pytestmark = pytest.mark.qemu


def _children() -> list[tuple[int, str]]:
    """(pid, command) of every process whose parent is this one."""
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # it ended while we looked
        # The command name in stat is in parentheses and may hold spaces: the ppid follows the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == me:
            found.append((int(entry.name), cmdline))
    return found


def test_a_test_that_raises_while_qemu_runs_leaves_nothing(qemu_binary: str) -> None:
    with pytest.raises(ZeroDivisionError):
        with QemuProcess("pc-i440fx-7.2", binary=qemu_binary, qtest=True) as qemu:
            pid, scratch = qemu.pid, qemu.scratch
            qemu.qtest.outl(0xCF8, 0x80000000)
            _ = 1 / 0
    assert pid is not None and scratch is not None
    assert not Path(f"/proc/{pid}").exists()
    assert not scratch.exists()


def test_nothing_is_left_behind(qemu_binary: str) -> None:
    assert live_processes() == []
    # Our own children only: a pid number alone could have been reused by another process.
    children = _children()
    leftover = sorted({pid for pid, _ in children} & set(started_pids()))
    assert leftover == [], f"QEMU processes of this session still running or unreaped: {leftover}"
    assert [cmd for _, cmd in children if "qemu-system" in cmd] == []
    assert list(scratch_root().iterdir()) == []
