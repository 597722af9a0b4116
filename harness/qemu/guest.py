"""A guest CPU that runs, for the one store qtest cannot make: a device reset by the guest.

virtio_reset() takes the device's endianness from the CPU that wrote the status register (current_cpu: its data
endianness at that moment, virtio_current_cpu_endian()); a qtest write has no CPU, so the device keeps the target's
default (a system reset). On a bi-endian target a big-endian guest is what makes the non-default endianness, and
with it the virtio/device_endian subsection. So the VM is started with `-device loader,addr=CODE,cpu-num=0` (the
generic loader sets vCPU 0's PC), a few instructions are written to guest RAM over qtest, and each guest store goes:
the client fills a mailbox in guest RAM (register address, value, wanted endianness) and bumps its request number,
QMP `cont` lets the CPU run, the guest program sees the request, switches its data endianness, makes the store,
switches back and copies the request number into the done word, which the client polls over qtest; QMP `stop`
pauses the VM again. Everything else stays qtest.

The machine code is encoded here, one instruction a line with what it does; nothing is loaded from a binary.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from harness import interrupt
from harness.errors import QemuError
from harness.qemu.qtest import QtestClient

GUEST_TIMEOUT = 5.0  # a guest store is a few instructions: longer means the CPU never ran the program
POLL = 0.0005

# The mailbox, little-endian words (the program reads it with its data endianness little):
#   +0 request number (client)  +4 done number (guest)  +8 address (u64)  +16 value (u32)  +24 endianness word
MBOX_REQUEST, MBOX_DONE, MBOX_ADDR, MBOX_VALUE, MBOX_ENDIAN = 0, 4, 8, 16, 24

# aarch64: SCTLR_EL1.EE (bit 25) is the data endianness of EL1, where `virt` starts the CPU without EL2/EL3;
# arm_cpu_virtio_is_big_endian() reads it.
SCTLR_EE = 1 << 25


def _movz(rd: int, imm16: int, hw: int = 0) -> int:  # MOVZ Xd, #imm16, LSL #(16*hw)
    return 0xD2800000 | hw << 21 | imm16 << 5 | rd


def _movk(rd: int, imm16: int, hw: int) -> int:  # MOVK Xd, #imm16, LSL #(16*hw)
    return 0xF2800000 | hw << 21 | imm16 << 5 | rd


def _ldr_w(rt: int, rn: int, off: int) -> int:  # LDR Wt, [Xn, #off] (unsigned offset, scaled by 4)
    return 0xB9400000 | (off // 4) << 10 | rn << 5 | rt


def _ldr_x(rt: int, rn: int, off: int) -> int:  # LDR Xt, [Xn, #off] (scaled by 8)
    return 0xF9400000 | (off // 8) << 10 | rn << 5 | rt


def _str_w(rt: int, rn: int, off: int) -> int:  # STR Wt, [Xn, #off]
    return 0xB9000000 | (off // 4) << 10 | rn << 5 | rt


def _b(delta: int) -> int:  # B <pc + 4*delta>
    return 0x14000000 | (delta & 0x3FFFFFF)


def _b_eq(delta: int) -> int:  # B.EQ <pc + 4*delta>
    return 0x54000000 | (delta & 0x7FFFF) << 5


def aarch64_program(mbox: int) -> bytes:
    """The guest loop for aarch64 (EL1, MMU off), at any address: wait for a request, store, report."""
    if mbox >> 32:
        raise QemuError(f"the guest mailbox {mbox:#x} must be below 4 GiB")
    words = [
        _movz(0, mbox & 0xFFFF),  # x0 = mailbox (low half)
        _movk(0, mbox >> 16, 1),  # x0 |= mailbox's high half << 16
        _movz(8, SCTLR_EE >> 16, 1),  # x8 = SCTLR_EL1.EE
        _ldr_w(1, 0, MBOX_REQUEST),  # loop: w1 = request number
        _ldr_w(2, 0, MBOX_DONE),  # w2 = done number
        0x6B02003F,  # CMP w1, w2 (SUBS wzr, w1, w2)
        _b_eq(-3),  # equal: nothing asked yet, back to loop
        _ldr_x(3, 0, MBOX_ADDR),  # x3 = register address
        _ldr_w(4, 0, MBOX_VALUE),  # w4 = value
        _ldr_w(5, 0, MBOX_ENDIAN),  # w5 = 0 (little) or SCTLR_EL1.EE (big)
        0xD5381006,  # MRS x6, SCTLR_EL1
        0x8A2800C6,  # BIC x6, x6, x8: the same with little-endian data
        0xAA0500C7,  # ORR x7, x6, x5: the same with the wanted endianness
        0xD5181007,  # MSR SCTLR_EL1, x7: switch the data endianness
        0xD5033FDF,  # ISB: later instructions see it
        0xB9000064,  # STR w4, [x3]: the store (a register write: the device sees this CPU)
        0xD5033F9F,  # DSB SY: the store is done
        0xD5181006,  # MSR SCTLR_EL1, x6: little-endian data again, for the mailbox
        0xD5033FDF,  # ISB
        _str_w(1, 0, MBOX_DONE),  # done number = request number
        _b(-17),  # back to loop
    ]
    return struct.pack(f"<{len(words)}I", *words)


@dataclass(frozen=True)
class GuestLayout:
    """Where the program and its mailbox go in guest RAM (a page each, kept clear of the rings)."""

    code: int
    mbox: int


# virt's RAM starts at 1 GiB; the program sits in the last 64 KiB of the -m the harness gives it (drawn.MEM_MB).
AARCH64 = GuestLayout(code=0x40000000 + (64 << 20) - 0x10000, mbox=0x40000000 + (64 << 20) - 0x8000)
GUEST_RESERVED_PAGES = 16  # what those take at the end of RAM: rings stay below
LAYOUTS = {"aarch64": AARCH64}
BIG_ENDIAN_WORD = {"aarch64": SCTLR_EE}


def loader_args(target: str) -> tuple[str, ...]:
    """The -device that points vCPU 0 at the program (generic loader: addr + cpu-num, no file, sets the PC)."""
    layout = LAYOUTS.get(target)
    if layout is None:
        raise QemuError(f"no guest program for target {target} (a guest-endian reset runs on: "
                        f"{', '.join(sorted(LAYOUTS))})")
    return ("-device", f"loader,addr={layout.code:#x},cpu-num=0")


class GuestCpu:
    """vCPU 0 running the store loop of `target`; `qmp` runs one QMP command (stop, cont)."""

    def __init__(self, qt: QtestClient, qmp: Callable[[str], object], target: str) -> None:
        if target not in LAYOUTS:
            loader_args(target)  # raises, saying where it runs
        self.qt, self.qmp, self.target, self.layout = qt, qmp, target, LAYOUTS[target]
        self.request = 0
        self.loaded = False

    def _load(self) -> None:
        self.qt.memwrite(self.layout.code, aarch64_program(self.layout.mbox))
        self.qt.memwrite(self.layout.mbox, bytes(32))
        self.loaded = True

    def store32(self, addr: int, value: int, big_endian: bool) -> None:
        """vCPU 0 stores the 32-bit `value` at `addr` with big- or little-endian data, then the VM is paused."""
        if not self.loaded:
            self._load()
        self.request += 1
        mbox = self.layout.mbox
        self.qt.writeq(mbox + MBOX_ADDR, addr)
        self.qt.writel(mbox + MBOX_VALUE, value)
        self.qt.writel(mbox + MBOX_ENDIAN, BIG_ENDIAN_WORD[self.target] if big_endian else 0)
        self.qt.writel(mbox + MBOX_REQUEST, self.request)
        self.qt.sync()
        self.qmp("cont")
        try:
            deadline = time.monotonic() + GUEST_TIMEOUT
            while self.qt.readl(mbox + MBOX_DONE) != self.request:
                interrupt.check()
                if time.monotonic() > deadline:
                    raise QemuError(f"the guest program at {self.layout.code:#x} did not make its store to "
                                    f"{addr:#x} within {GUEST_TIMEOUT} s (vCPU 0 never reached it)")
                time.sleep(POLL)
        finally:
            self.qmp("stop")
