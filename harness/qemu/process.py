"""One QEMU process with an explicit lifecycle: command line, scratch folder, QMP, qtest, migration.

QEMU always runs paused (`-S`) on TCG with no default devices: Debian's build has no qtest
accelerator, and a running guest (SeaBIOS) would reprogram the devices we drive.

Lifecycle (every call checks it; a call in the wrong state raises QemuError):

    NEW --start()--> STARTED --connect()--> CONNECTED <--migrate()/migrate_incoming()--> MIGRATING
    STARTED, CONNECTED, MIGRATING --(QEMU exits on its own, migration fails)--> FAILED
    any --close()--> STOPPED (a FAILED process stays FAILED; close() is idempotent)
"""

from __future__ import annotations

import asyncio
import enum
import os
import re
import shutil
import subprocess
import tempfile
import time
import warnings
from collections.abc import Coroutine, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from qemu.qmp import ExecuteError, QMPClient, QMPError

from harness import fleet, interrupt
from harness.errors import QemuError
from harness.qemu import reaper
from harness.qemu.qtest import QtestClient
from harness.qemu.reaper import live_processes, scratch_root, started_pids

# Poll interval for sockets, migration status and process exit: short, a whole cycle takes tens of ms.
POLL = 0.002
# Generous limits: they only matter when QEMU is stuck, and CI machines can be slow.
CONNECT_TIMEOUT = 15.0
COMMAND_TIMEOUT = 15.0
MIGRATE_TIMEOUT = 60.0
QUIT_TIMEOUT = 2.0

# Debian package that provides qemu-system-ARCH, for the "not found" message.
_DEBIAN_PACKAGE = {"x86_64": "qemu-system-x86", "aarch64": "qemu-system-arm", "arm": "qemu-system-arm",
                   "ppc64": "qemu-system-ppc"}

_T = TypeVar("_T")
# A signal during qemu.qmp's own disconnect can leave the coroutine it scheduled unstarted once our loop is closed;
# Python then warns at exit, a second line after the command's one-line "interrupted" (QEMU is ended all the same).
warnings.filterwarnings("ignore", "coroutine 'QMPClient._bh_disconnect' was never awaited", RuntimeWarning)
__all__ = ["QemuProcess", "QemuState", "find_qemu", "live_processes", "scratch_root", "started_pids"]


def find_qemu(binary: str | None = None, arch: str = "x86_64") -> str:
    """Return the path of the QEMU binary: `binary` if given (a path, a name on PATH, or a release of the
    fleet such as `5.2`), else qemu-system-ARCH from PATH."""
    name = binary or f"qemu-system-{arch}"
    if re.fullmatch(r"\d+\.\d+", name):
        return str(fleet.binary(name, arch))
    if os.sep in name:
        if os.path.isfile(name) and os.access(name, os.X_OK):
            return os.path.abspath(name)
        raise QemuError(f"QEMU binary {name} does not exist or is not executable")
    found = shutil.which(name)
    if found is None:
        package = _DEBIAN_PACKAGE.get(arch, "qemu-system-misc")
        raise QemuError(
            f"{name} not found on PATH (install it, e.g. `apt-get install --no-install-recommends "
            f"{package}`, or pass the binary's path)"
        )
    return found


class QemuState(enum.Enum):
    NEW = "new"
    STARTED = "started"
    CONNECTED = "connected"
    MIGRATING = "migrating"
    STOPPED = "stopped"
    FAILED = "failed"


class _Qmp:
    """A synchronous face on qemu.qmp's QMPClient, with its own event loop and a timeout on every call."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(self._unretrieved)
        self._client = QMPClient(name)

    @staticmethod
    def _unretrieved(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if interrupt.pending() is None:  # after a signal, tasks it cancelled are no news
            loop.default_exception_handler(context)

    def _run(self, coro: Coroutine[Any, Any, _T], timeout: float) -> _T:
        # A signal must not raise inside qemu.qmp's tasks (its clean-up then fails its own asserts, "Task
        # exception was never retrieved"): it cancels the call, which qemu.qmp unwinds, then it is raised.
        task = self._loop.create_task(asyncio.wait_for(coro, timeout))
        with interrupt.deferred(lambda: self._loop.call_soon_threadsafe(task.cancel)):
            return self._loop.run_until_complete(task)

    def connect(self, path: Path, timeout: float) -> None:
        self._run(self._client.connect(str(path)), timeout)

    @property
    def greeting(self) -> dict[str, Any]:
        greeting = self._client.greeting
        return dict(greeting._asdict()) if greeting is not None else {}

    def execute(self, command: str, arguments: dict[str, Any] | None, timeout: float) -> Any:
        return self._run(self._client.execute(command, arguments), timeout)

    def send_fd(self, fd: int) -> None:
        self._client.send_fd_scm(fd)

    def close(self) -> None:
        try:
            self._run(self._client.disconnect(), QUIT_TIMEOUT)
        except (TimeoutError, QMPError, OSError, EOFError):
            pass  # the peer is gone already; disconnect re-raises what ended the connection
        finally:
            # what a cancelled call left running ends before the loop does ("Task was destroyed but it is pending")
            rest = asyncio.all_tasks(self._loop)
            for task in rest:
                task.cancel()
            if rest:
                self._loop.run_until_complete(asyncio.wait(rest, timeout=QUIT_TIMEOUT))
            self._loop.close()


class QemuProcess:
    """One QEMU process. Use it as a context manager: leaving the block (normally, by an exception
    or by KeyboardInterrupt) ends QEMU and removes the scratch folder."""

    def __init__(
        self,
        machine: str,
        args: Sequence[str] = (),
        *,
        binary: str | None = None,
        arch: str = "x86_64",
        qtest: bool = False,
        incoming: bool = False,
        name: str = "qemu",
    ) -> None:
        self.binary = find_qemu(binary, arch)
        self.machine = machine
        self.args = list(args)
        self.qtest_enabled = qtest
        self.incoming = incoming
        self.name = name
        self.state = QemuState.NEW
        self.scratch: Path | None = None
        self.argv: list[str] = []
        self.returncode: int | None = None
        self.stderr = ""  # filled in when the process ends
        self.killed = False  # True when close() had to SIGKILL it
        self._proc: subprocess.Popen[bytes] | None = None
        self._qmp: _Qmp | None = None
        self._qtest: QtestClient | None = None
        self._closed = False
        self.command_timeout = COMMAND_TIMEOUT  # a mutation campaign gives up sooner on a QEMU that stopped answering

    def __repr__(self) -> str:
        return f"<QemuProcess {self.name} {self.state.value} pid={self.pid}>"

    # -- state checks -------------------------------------------------------------------------------------

    def _require(self, action: str, *states: QemuState) -> None:
        if self.state not in states:
            allowed = ", ".join(s.name for s in states)
            raise QemuError(f"cannot {action} a QEMU process in state {self.state.name} (needs {allowed})")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def prefix(self) -> str:
        """How QEMU starts its error lines: the program name and a colon."""
        return f"{os.path.basename(self.binary)}: "

    # -- start and connect ----------------------------------------------------------------------------

    def start(self) -> None:
        """Launch QEMU (NEW -> STARTED); it creates its sockets and waits, paused."""
        self._require("start", QemuState.NEW)
        interrupt.check()  # no new QEMU once a signal came
        self.scratch = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir=scratch_root()))
        self.argv = [
            self.binary,
            "-machine", f"{self.machine},accel=tcg",
            "-nodefaults",
            "-display", "none",
            "-S",
            "-qmp", f"unix:{self.scratch / 'qmp.sock'},server=on,wait=off",
        ]  # fmt: skip
        if self.qtest_enabled:
            self.argv += ["-qtest", f"unix:{self.scratch / 'qtest.sock'},server=on,wait=off"]
            self.argv += ["-qtest-log", "/dev/null"]
        if self.incoming:
            self.argv += ["-incoming", "defer"]
        self.argv += self.args
        # a Ctrl-C is raised once the process is known, so that close() ends it
        with interrupt.deferred():
            try:
                with open(self.scratch / "stderr", "wb") as stderr:
                    # stdout to /dev/null: a QEMU that inherits our stdout pipe keeps it open after we die.
                    self._proc = subprocess.Popen(
                        self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
                    )
            except OSError as exc:
                self.state = QemuState.FAILED
                self._cleanup_scratch()
                raise QemuError(f"cannot run {self.binary}: {exc}") from exc
            reaper.register(self, self._proc.pid)
            self.state = QemuState.STARTED

    def connect(self, timeout: float = CONNECT_TIMEOUT) -> None:
        """Connect QMP (and qtest if enabled) as soon as QEMU's sockets accept (STARTED -> CONNECTED)."""
        self._require("connect to", QemuState.STARTED)
        assert self.scratch is not None
        deadline = time.monotonic() + timeout
        qmp_path = self.scratch / "qmp.sock"
        while not qmp_path.exists():
            interrupt.check()
            self._check_alive("starting")
            if time.monotonic() > deadline:
                self._fail()
                raise QemuError(f"QEMU did not create its QMP socket within {timeout} s{self._stderr_tail()}")
            time.sleep(POLL)
        qmp = _Qmp(self.name)
        self._qmp = qmp
        while True:
            interrupt.check()
            try:
                qmp.connect(qmp_path, max(deadline - time.monotonic(), POLL))
                break
            except (TimeoutError, QMPError, OSError) as exc:
                self._check_alive("connecting to QMP")
                if time.monotonic() > deadline:
                    self._fail()
                    raise QemuError(f"cannot connect to QMP: {exc}{self._stderr_tail()}") from exc
                time.sleep(POLL)
        if self.qtest_enabled:
            try:
                self._qtest = QtestClient.connect(
                    self.scratch / "qtest.sock", max(deadline - time.monotonic(), 1)
                )
            except QemuError:
                self._check_alive("connecting to qtest")
                self._fail()
                raise
        self.state = QemuState.CONNECTED

    def __enter__(self) -> QemuProcess:
        try:
            if self.state is QemuState.NEW:
                self.start()
            if self.state is QemuState.STARTED:
                self.connect()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- talking to QEMU ------------------------------------------------------------------------------

    @property
    def version(self) -> str:
        """QEMU's version as the fixtures write it, e.g. `7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)`."""
        self._require("read the version of", QemuState.CONNECTED, QemuState.MIGRATING)
        assert self._qmp is not None
        info = self._qmp.greeting.get("QMP", {}).get("version", {})
        number = info.get("qemu", {})
        text = f"{number.get('major')}.{number.get('minor')}.{number.get('micro')}"
        package = str(info.get("package", "")).strip()
        return f"{text} ({package})" if package else text

    @property
    def qtest(self) -> QtestClient:
        self._require("drive", QemuState.CONNECTED)
        if self._qtest is None:
            raise QemuError("this QEMU process was started without qtest")
        return self._qtest

    def qmp(self, command: str, **arguments: Any) -> Any:
        """Run one QMP command and return its result; an error reply raises QemuError."""
        self._require(f"run QMP {command} on", QemuState.CONNECTED, QemuState.MIGRATING)
        return self._execute(command, arguments)

    def _execute(self, command: str, arguments: dict[str, Any]) -> Any:
        assert self._qmp is not None
        interrupt.check()  # the polls of a migration and a start-up end here after a signal
        try:
            return self._qmp.execute(command, arguments or None, self.command_timeout)
        except ExecuteError as exc:
            raise QemuError(f"QMP {command} failed: {exc}") from exc
        except (TimeoutError, QMPError, OSError, EOFError) as exc:
            # A dropped connection usually means QEMU is exiting: give it a moment to finish.
            if not isinstance(exc, TimeoutError):
                self._wait_exit(QUIT_TIMEOUT)
            self._check_alive(f"running QMP {command}")
            raise QemuError(f"QMP {command}: {type(exc).__name__}: {exc}") from exc

    def add_fd(self, name: str, fd: int) -> None:
        """Hand QEMU a copy of an open file descriptor under `name` (SCM_RIGHTS, then QMP getfd),
        for `fd:NAME` migration URIs. The caller keeps and closes its own descriptor."""
        self._require("pass a file descriptor to", QemuState.CONNECTED)
        assert self._qmp is not None
        try:
            self._qmp.send_fd(fd)
        except (QMPError, OSError) as exc:
            self._check_alive("passing a file descriptor")
            raise QemuError(f"cannot pass fd {fd} to QEMU: {exc}") from exc
        self._execute("getfd", {"fdname": name})

    def migrate(self, uri: str, timeout: float = MIGRATE_TIMEOUT) -> None:
        """Outgoing migration (CONNECTED -> MIGRATING -> CONNECTED); a failed migration raises
        QemuError with QEMU's reason and leaves the process FAILED."""
        self._require("migrate", QemuState.CONNECTED)
        if self.incoming:
            raise QemuError("a QEMU started with -incoming cannot migrate out")
        self._execute("migrate", {"uri": uri})  # an error reply leaves the state as it was
        self.state = QemuState.MIGRATING
        info = self._wait_migration(timeout)
        if info.get("status") != "completed":
            self._fail()
            reason = info.get("error-desc", "no reason given")
            raise QemuError(f"migration {info.get('status')}: {reason}{self._stderr_tail()}")
        self.state = QemuState.CONNECTED

    def migrate_incoming(self, uri: str, timeout: float = MIGRATE_TIMEOUT) -> bool:
        """Incoming migration (CONNECTED -> MIGRATING). True when the load completed (back to
        CONNECTED); False when it failed, in which case QEMU 7.2 exits by itself (state FAILED) and
        the reason is on stderr. Anything else (an error reply, a timeout) raises QemuError."""
        self._require("load into", QemuState.CONNECTED)
        if not self.incoming:
            raise QemuError("QEMU must be started with incoming=True to load a stream")
        try:
            self._execute("migrate-incoming", {"uri": uri})
            self.state = QemuState.MIGRATING
            info = self._wait_migration(timeout)
        except QemuError:
            if self._exited():
                return False  # the load failed and QEMU said why on stderr
            raise
        if info.get("status") == "completed":
            self.state = QemuState.CONNECTED
            return True
        self._wait_exit(QUIT_TIMEOUT)  # a failed load ends QEMU 7.2: let it finish writing stderr
        self._fail()
        return False

    def _exited(self) -> bool:
        return self._proc is not None and self._proc.poll() is not None

    def _wait_migration(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            info: dict[str, Any] = self._execute("query-migrate", {})
            if info.get("status") in ("completed", "failed", "cancelled"):
                return info
            if time.monotonic() > deadline:
                self._fail()
                raise QemuError(f"migration did not finish within {timeout} s (status {info.get('status')})")
            time.sleep(POLL)

    # -- ending ------------------------------------------------------------------------------------------

    def _check_alive(self, doing: str) -> None:
        """If QEMU has exited, mark FAILED and raise with its stderr."""
        if self._exited():
            assert self._proc is not None
            self._fail()
            raise QemuError(
                f"QEMU exited with code {self._proc.returncode} while {doing}{self._stderr_tail()}"
            )

    def _wait_exit(self, timeout: float) -> int | None:
        assert self._proc is not None
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def _fail(self) -> None:
        self.state = QemuState.FAILED
        if self._proc is not None and self._proc.poll() is not None:
            self.returncode = self._proc.returncode

    def _read_stderr(self) -> str:
        if self.scratch is None:
            return self.stderr
        try:
            return (self.scratch / "stderr").read_bytes().decode("utf-8", "replace")
        except OSError:
            return self.stderr

    def _stderr_tail(self) -> str:
        lines = [line for line in self._read_stderr().splitlines() if line.strip()]
        return ("; stderr: " + " | ".join(lines[-5:])) if lines else ""

    def stderr_lines(self) -> list[str]:
        """QEMU's stderr so far (all of it once the process has ended), one entry per line."""
        return self._read_stderr().splitlines()

    def close(self) -> None:
        """End QEMU (QMP quit, then SIGKILL after a short wait; SIGKILL at once after a Ctrl-C), drop the
        connections, remove the scratch folder. Safe to call in any state, any number of times."""
        with interrupt.deferred():  # a Ctrl-C now is raised once QEMU is reaped and its folder gone
            self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._qtest is not None:
                self._qtest.close()
                self._qtest = None
            if interrupt.pending() is not None and self._proc is not None and self._proc.poll() is None:
                self._kill()  # a Ctrl-C: no time for a polite quit, and nothing to read from QEMU
            if self._proc is not None and self._proc.poll() is None and self._qmp is not None:
                try:
                    self._qmp.execute("quit", None, QUIT_TIMEOUT)
                except (TimeoutError, QMPError, OSError, EOFError):
                    pass  # it may exit before answering; the wait below decides
            if self._qmp is not None:
                self._qmp.close()
                self._qmp = None
            if self._proc is not None:
                if self._wait_exit(QUIT_TIMEOUT if self.state is not QemuState.STARTED else 0) is None:
                    self._kill()
                self.returncode = self._proc.returncode
        finally:
            if self._proc is not None and self._proc.poll() is None:
                self._kill()  # an exception (even KeyboardInterrupt) above must not leave QEMU behind
                self.returncode = self._proc.returncode
            self.stderr = self._read_stderr()
            self._cleanup_scratch()
            reaper.unregister(self, self._proc.pid if self._proc is not None else None)
            if self.state is not QemuState.FAILED:
                self.state = QemuState.STOPPED

    def _kill(self) -> None:
        assert self._proc is not None
        self.killed = True
        self._proc.kill()
        self._proc.wait()

    def _cleanup_scratch(self) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None
