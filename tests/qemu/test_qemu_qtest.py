"""The qtest client against a scripted peer (no QEMU needed): replies, IRQ lines, errors, pipelining."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from harness.errors import QemuError
from harness.qemu.qtest import QtestClient

Script = Callable[[str], str | None]


@pytest.fixture
def fake_qtest() -> Iterator[Callable[[Script], tuple[QtestClient, list[str]]]]:
    """A QtestClient whose peer answers each received line with script(line); None hangs up."""
    threads: list[threading.Thread] = []
    clients: list[QtestClient] = []

    def make(script: Script) -> tuple[QtestClient, list[str]]:
        ours, theirs = socket.socketpair()
        seen: list[str] = []

        def serve() -> None:
            with theirs, theirs.makefile("rb") as lines:
                for raw in lines:
                    line = raw.decode().rstrip("\n")
                    seen.append(line)
                    reply = script(line)
                    if reply is None:
                        return
                    theirs.sendall(reply.encode())

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        threads.append(thread)
        client = QtestClient(ours)
        clients.append(client)
        return client, seen

    yield make
    for client in clients:
        client.close()
    for thread in threads:
        thread.join(timeout=5)


def test_values_are_parsed_and_irq_lines_skipped(
    fake_qtest: Callable[[Script], tuple[QtestClient, list[str]]],
) -> None:
    def script(line: str) -> str:
        if line.startswith("inl"):
            return "IRQ raise 11\nOK 0x10001af4\n"
        if line.startswith("readq"):
            return "OK 0x0000000000001234\nIRQ lower 11\n"
        return "OK\n"

    qt, seen = fake_qtest(script)
    assert qt.inl(0xCFC) == 0x10001AF4
    assert qt.readq(0x1000) == 0x1234
    qt.outb(0xC012, 7)  # the IRQ line left over from readq must not be taken as outb's reply
    qt.sync()
    assert seen == ["inl 0xcfc", "readq 0x1000", "outb 0xc012 0x7"]


def test_memory_ranges(fake_qtest: Callable[[Script], tuple[QtestClient, list[str]]]) -> None:
    qt, seen = fake_qtest(lambda line: "OK 0x0102ff\n" if line.startswith("read ") else "OK\n")
    assert qt.memread(0x2000, 3) == b"\x01\x02\xff"
    qt.memwrite(0x3000, b"\xab\xcd")
    qt.sync()
    assert seen == ["read 0x2000 0x3", "write 0x3000 0x2 0xabcd"]


@pytest.mark.parametrize("reply", ["FAIL Unknown command 'bogus'\n", "ERR bad\n", "what?\n"])
def test_error_replies_raise(
    fake_qtest: Callable[[Script], tuple[QtestClient, list[str]]], reply: str
) -> None:
    qt, _ = fake_qtest(lambda line: reply)
    with pytest.raises(QemuError, match="bogus 1"):
        qt.command("bogus 1")


def test_closed_socket_raises(fake_qtest: Callable[[Script], tuple[QtestClient, list[str]]]) -> None:
    qt, _ = fake_qtest(lambda line: None)
    with pytest.raises(QemuError, match="closed"):
        qt.inb(0x60)


def test_pipelined_write_error_surfaces_at_next_read(
    fake_qtest: Callable[[Script], tuple[QtestClient, list[str]]],
) -> None:
    qt, seen = fake_qtest(lambda line: "FAIL nope\n" if line.startswith("outw") else "OK 0x1\n")
    qt.outw(0xC00E, 1)  # pipelined: no round trip yet
    with pytest.raises(QemuError, match="outw 0xc00e 0x1.*FAIL nope"):
        qt.inw(0xC00C)
