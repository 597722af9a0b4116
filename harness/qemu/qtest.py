"""A client for QEMU's qtest text protocol: port I/O and guest-memory access on a paused VM.

One command per line; QEMU answers each with a line starting "OK" (plus a hex value for reads) or
"FAIL ..." (7.2's word for an error; "ERR" is accepted too). Lines starting with "IRQ" are
asynchronous interrupt notifications and are skipped.

Commands that return nothing (out*, write*) are pipelined: sent at once, their "OK" collected
before the next command that returns a value. QEMU runs commands in order, so this changes
nothing but the number of round trips (a round trip costs ~80 us, a device takes ~70 commands).
"""

from __future__ import annotations

import socket
import time
from collections import deque
from pathlib import Path
from types import TracebackType

from harness.errors import QemuError

# Replies are short; a command that takes longer than this means QEMU is stuck.
REPLY_TIMEOUT = 10.0
# Unread replies must not fill the socket buffers: QEMU blocks writing them and stops reading.
MAX_PIPELINED = 256


def connect_unix(path: str | Path, timeout: float, what: str = "unix") -> socket.socket:
    """A connection to a unix socket QEMU listens on (server=on), retried until QEMU has created it."""
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
            return sock
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            if time.monotonic() > deadline:
                raise QemuError(f"{what} socket {path} did not accept a connection: {exc}") from exc
            time.sleep(0.002)


class QtestClient:
    """One qtest connection; every method is a single request/response round trip."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._sock.settimeout(REPLY_TIMEOUT)
        self._buf = b""
        self._pending: deque[str] = deque()  # commands sent whose "OK" is not read yet

    @classmethod
    def connect(cls, path: str | Path, timeout: float = 10.0) -> QtestClient:
        """Connect to QEMU's `-qtest unix:PATH,server=on` socket, retrying until it accepts."""
        return cls(connect_unix(path, timeout, "qtest"))

    def close(self) -> None:
        """Close the connection (replies still pending are dropped: call sync() first to check them)."""
        self._sock.close()

    def __enter__(self) -> QtestClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- the protocol ---------------------------------------------------------------------------------

    def _readline(self, command: str) -> str:
        while b"\n" not in self._buf:
            try:
                chunk = self._sock.recv(4096)
            except TimeoutError as exc:
                raise QemuError(f"qtest {command!r}: no reply within {REPLY_TIMEOUT} s") from exc
            except OSError as exc:
                raise QemuError(f"qtest {command!r}: socket error: {exc}") from exc
            if not chunk:
                raise QemuError(f"qtest {command!r}: connection closed by QEMU")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode("ascii", "replace")

    def _send(self, command: str) -> None:
        try:
            self._sock.sendall(command.encode("ascii") + b"\n")
        except OSError as exc:
            raise QemuError(f"qtest {command!r}: cannot send: {exc}") from exc

    def _reply(self, command: str) -> str:
        while True:
            line = self._readline(command)
            if line.startswith("IRQ"):
                continue
            if line == "OK" or line.startswith("OK "):
                return line[2:].strip()
            if line.startswith(("FAIL", "ERR")):
                raise QemuError(f"qtest {command!r}: {line}")
            raise QemuError(f"qtest {command!r}: unexpected reply {line!r}")

    def sync(self) -> None:
        """Collect the replies of pipelined commands; raises if any of them failed."""
        while self._pending:
            self._reply(self._pending.popleft())

    def command(self, command: str) -> str:
        """Send one command line and return what follows "OK" in the reply (may be empty)."""
        self._send(command)
        self.sync()  # replies come in order: the pipelined ones first
        return self._reply(command)

    def post(self, command: str) -> None:
        """Send a command whose reply carries no value; its "OK" is checked at the next sync."""
        self._send(command)
        self._pending.append(command)
        if len(self._pending) >= MAX_PIPELINED:
            self.sync()

    def _value(self, command: str) -> int:
        reply = self.command(command)
        try:
            return int(reply, 16)
        except ValueError as exc:
            raise QemuError(f"qtest {command!r}: reply {reply!r} is not a hex value") from exc

    # -- port I/O -------------------------------------------------------------------------------------

    def outb(self, port: int, value: int) -> None:
        self.post(f"outb {port:#x} {value & 0xFF:#x}")

    def outw(self, port: int, value: int) -> None:
        self.post(f"outw {port:#x} {value & 0xFFFF:#x}")

    def outl(self, port: int, value: int) -> None:
        self.post(f"outl {port:#x} {value & 0xFFFFFFFF:#x}")

    def inb(self, port: int) -> int:
        return self._value(f"inb {port:#x}") & 0xFF

    def inw(self, port: int) -> int:
        return self._value(f"inw {port:#x}") & 0xFFFF

    def inl(self, port: int) -> int:
        return self._value(f"inl {port:#x}") & 0xFFFFFFFF

    # -- guest memory (guest-endian integers, as the CPU would see them) -------------------------------

    def readb(self, addr: int) -> int:
        return self._value(f"readb {addr:#x}") & 0xFF

    def readw(self, addr: int) -> int:
        return self._value(f"readw {addr:#x}") & 0xFFFF

    def readl(self, addr: int) -> int:
        return self._value(f"readl {addr:#x}") & 0xFFFFFFFF

    def readq(self, addr: int) -> int:
        return self._value(f"readq {addr:#x}")

    def writeb(self, addr: int, value: int) -> None:
        self.post(f"writeb {addr:#x} {value & 0xFF:#x}")

    def writew(self, addr: int, value: int) -> None:
        self.post(f"writew {addr:#x} {value & 0xFFFF:#x}")

    def writel(self, addr: int, value: int) -> None:
        self.post(f"writel {addr:#x} {value & 0xFFFFFFFF:#x}")

    def writeq(self, addr: int, value: int) -> None:
        self.post(f"writeq {addr:#x} {value & 0xFFFFFFFFFFFFFFFF:#x}")

    def memread(self, addr: int, size: int) -> bytes:
        """Read `size` bytes of guest memory (qtest `read`)."""
        if size <= 0:
            return b""
        reply = self.command(f"read {addr:#x} {size:#x}")
        hexdigits = reply[2:] if reply.startswith("0x") else reply
        try:
            data = bytes.fromhex(hexdigits)
        except ValueError as exc:
            raise QemuError(f"qtest read {addr:#x}: reply is not hex") from exc
        if len(data) != size:
            raise QemuError(f"qtest read {addr:#x}: asked for {size} bytes, got {len(data)}")
        return data

    def memwrite(self, addr: int, data: bytes) -> None:
        """Write bytes to guest memory (qtest `write`)."""
        if data:
            self.post(f"write {addr:#x} {len(data):#x} 0x{data.hex()}")
