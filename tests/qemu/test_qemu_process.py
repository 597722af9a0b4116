"""QemuProcess: the lifecycle state machine, failures, and cleanup of processes and scratch folders."""

from __future__ import annotations

import os
import re

import pytest

from harness.errors import QemuError
from harness.qemu.process import QemuProcess, QemuState, find_qemu, live_processes, scratch_root

MACHINE = "pc-i440fx-7.2"


def _gone(pid: int | None) -> bool:
    """True when `pid` is no longer a process (we reap our children, so no zombie either)."""
    assert pid is not None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _state(qemu: QemuProcess) -> QemuState:
    return qemu.state  # read through a call: the state changes under mypy's narrowing


def test_find_qemu_explains_what_is_missing() -> None:
    with pytest.raises(QemuError, match="qemu-system-nosucharch not found on PATH"):
        find_qemu(None, "nosucharch")
    with pytest.raises(QemuError, match="does not exist"):
        find_qemu("/nonexistent/qemu-system-x86_64")


@pytest.mark.qemu
def test_find_qemu_on_path(qemu_binary: str) -> None:
    assert find_qemu(None) == qemu_binary
    assert find_qemu(qemu_binary) == qemu_binary


@pytest.mark.qemu
def test_lifecycle_and_wrong_state_calls(qemu_binary: str) -> None:
    qemu = QemuProcess(MACHINE, ["-m", "4"], binary=qemu_binary, qtest=True)
    try:
        assert _state(qemu) is QemuState.NEW
        for call in (
            qemu.connect,
            lambda: qemu.qmp("query-status"),
            lambda: qemu.qtest,
            lambda: qemu.migrate("fd:x"),
        ):
            with pytest.raises(QemuError, match="in state NEW"):
                call()

        qemu.start()
        assert _state(qemu) is QemuState.STARTED
        assert qemu.scratch is not None and qemu.scratch.parent == scratch_root()
        with pytest.raises(QemuError, match="cannot start a QEMU process in state STARTED"):
            qemu.start()
        with pytest.raises(QemuError, match="in state STARTED"):
            qemu.qmp("query-status")

        qemu.connect()
        assert _state(qemu) is QemuState.CONNECTED
        assert qemu in live_processes()
        with pytest.raises(QemuError, match="in state CONNECTED"):
            qemu.connect()
        assert qemu.qmp("query-status")["status"] == "prelaunch"  # paused by -S, never run
        assert re.match(r"\d+\.\d+\.\d+", qemu.version)
        assert qemu.qtest.inl(0xCFC) is not None
        with pytest.raises(QemuError, match="incoming=True"):
            qemu.migrate_incoming("fd:x")
        with pytest.raises(QemuError, match="has not been found"):
            qemu.qmp("no-such-command")
        assert _state(qemu) is QemuState.CONNECTED  # an error reply is not a failure of the process

        scratch, pid = qemu.scratch, qemu.pid
        qemu.close()
        assert _state(qemu) is QemuState.STOPPED
        assert qemu.returncode == 0 and not qemu.killed  # ended by QMP quit
        assert _gone(pid) and not scratch.exists()
        assert qemu not in live_processes()
        qemu.close()  # idempotent
        assert _state(qemu) is QemuState.STOPPED
        for call in (qemu.start, qemu.connect, lambda: qemu.qmp("query-status")):
            with pytest.raises(QemuError, match="in state STOPPED"):
                call()

    finally:
        qemu.close()  # a failed assert must not leave QEMU to the hygiene test


@pytest.mark.qemu
def test_close_before_connect_kills(qemu_binary: str) -> None:
    qemu = QemuProcess(MACHINE, binary=qemu_binary)
    qemu.start()
    pid = qemu.pid
    qemu.close()
    assert _state(qemu) is QemuState.STOPPED and _gone(pid)


@pytest.mark.qemu
def test_qtest_needs_to_be_asked_for(qemu_binary: str) -> None:
    with QemuProcess(MACHINE, binary=qemu_binary) as qemu:
        with pytest.raises(QemuError, match="without qtest"):
            _ = qemu.qtest


@pytest.mark.qemu
def test_bad_command_line_fails_with_stderr(qemu_binary: str) -> None:
    qemu = QemuProcess(MACHINE, ["-device", "no-such-device"], binary=qemu_binary)
    with pytest.raises(QemuError, match="'no-such-device' is not a valid device model name"):
        with qemu:
            pass
    assert _state(qemu) is QemuState.FAILED
    assert qemu.returncode == 1 and _gone(qemu.pid)
    assert qemu.scratch is None
    qemu.close()
    assert _state(qemu) is QemuState.FAILED


def test_missing_binary_raises_before_anything_starts() -> None:
    with pytest.raises(QemuError, match="does not exist"):
        QemuProcess(MACHINE, binary="/nonexistent/qemu")


@pytest.mark.qemu
@pytest.mark.parametrize("exc_type", [RuntimeError, KeyboardInterrupt])
def test_exception_in_block_ends_qemu(qemu_binary: str, exc_type: type[BaseException]) -> None:
    with pytest.raises(exc_type):
        with QemuProcess(MACHINE, binary=qemu_binary, qtest=True) as qemu:
            pid, scratch = qemu.pid, qemu.scratch
            assert scratch is not None and (scratch / "qmp.sock").exists()
            raise exc_type("boom")
    assert _state(qemu) is QemuState.STOPPED
    assert scratch is not None
    assert _gone(pid) and not scratch.exists()


@pytest.mark.qemu
def test_scratch_root_names_the_worker(qemu_binary: str) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    assert scratch_root().name.startswith(f"virtio-compat-{worker}-")


@pytest.mark.qemu
def test_migration_errors(qemu_binary: str) -> None:
    with QemuProcess(MACHINE, ["-m", "4"], binary=qemu_binary) as qemu:
        with pytest.raises(QemuError, match="QMP migrate failed"):
            qemu.migrate("nosuchscheme:x")
        assert _state(qemu) is QemuState.CONNECTED  # QEMU refused the command; nothing started
        with pytest.raises(QemuError, match="migration failed"):
            qemu.migrate("exec:exec cat > /nonexistent/dir/stream")  # the channel breaks mid-way
        assert _state(qemu) is QemuState.FAILED
        with pytest.raises(QemuError, match="in state FAILED"):
            qemu.migrate("exec:cat > /dev/null")
        pid = qemu.pid
    assert _state(qemu) is QemuState.FAILED and _gone(pid)


@pytest.mark.qemu
def test_incoming_needs_incoming(qemu_binary: str) -> None:
    with QemuProcess(MACHINE, ["-m", "4"], binary=qemu_binary, incoming=True) as qemu:
        with pytest.raises(QemuError, match="cannot migrate out"):
            qemu.migrate("exec:cat > /dev/null")
        assert qemu.qmp("query-status")["status"] == "inmigrate"
