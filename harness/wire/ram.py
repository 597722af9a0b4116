"""RAM section pages (migration/ram.c, default capabilities only) and the guest memory they carry.

A record is `be64 addr | flags`, then the RAM block name unless RAM_SAVE_FLAG_CONTINUE, then a fill
byte (ZERO) or a whole target page (PAGE). EOS ends the records of one START/PART/END section.
The START section opens with `be64 total | MEM_SIZE` and the list of RAM blocks.
Pages are kept sparse: nothing is allocated for a block length or a fill byte, only for page bytes
that are in the stream.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import construct as c
from construct import this

from harness.wire.primitives import be64, u8

RAM_SAVE_FLAG_ZERO = 0x02
RAM_SAVE_FLAG_MEM_SIZE = 0x04
RAM_SAVE_FLAG_PAGE = 0x08
RAM_SAVE_FLAG_EOS = 0x10
RAM_SAVE_FLAG_CONTINUE = 0x20
UNSUPPORTED_FLAGS = {
    0x01: "RAM_SAVE_FLAG_FULL (obsolete)",
    0x40: "RAM_SAVE_FLAG_XBZRLE (xbzrle capability)",
    0x80: "RAM_SAVE_FLAG_HOOK (rdma)",
    0x100: "RAM_SAVE_FLAG_COMPRESS_PAGE (compress capability)",
    0x200: "RAM_SAVE_FLAG_MULTIFD_FLUSH (multifd)",
}

BlockName = c.PascalString(u8, "latin-1")


def _all_blocks_listed(block: Any, blocks: list[Any], ctx: Any) -> bool:
    """ram_load's MEM_SIZE loop: blocks until their lengths add up to the total. A running sum, restarted at the
    first block (summing the whole list after every block made a long hostile list quadratic)."""
    ctx._listed = (0 if ctx._index == 0 else ctx._listed) + block.used_length
    return bool(ctx._listed >= ctx.total & ~0xFFF)


# The RAM block list of the START section (ram_save_setup)
RamBlockList = c.Struct(
    "total" / be64,  # ram_bytes_total() | RAM_SAVE_FLAG_MEM_SIZE
    "blocks" / c.RepeatUntil(_all_blocks_listed, c.Struct("idstr" / BlockName, "used_length" / be64)),
)


def ram_record(page_size: int) -> Any:
    """One page record, the plain declaration the fast loop below is held to (tests/wire)."""
    return c.Struct(
        "addr_flags" / be64,
        "flags" / c.Computed(this.addr_flags & (page_size - 1)),
        "block" / c.If(lambda ctx: not ctx.flags & (RAM_SAVE_FLAG_CONTINUE | RAM_SAVE_FLAG_EOS), BlockName),
        "fill" / c.If(this.flags & RAM_SAVE_FLAG_ZERO, u8),
        "page" / c.If(this.flags & RAM_SAVE_FLAG_PAGE, c.Bytes(page_size)),
    )


@dataclass
class RamBlock:
    idstr: str
    used_length: int
    pages: dict[int, bytes | int] = field(default_factory=dict)  # offset -> page bytes or fill byte


class GuestMemory:
    """Guest RAM as the stream carries it: by RAM block and offset, and for pc/q35 by address."""

    def __init__(self, page_size: int) -> None:
        self.page_size = page_size
        self.blocks: dict[str, RamBlock] = {}

    def read(self, block: str, offset: int, size: int) -> bytes:
        b = self.blocks.get(block)
        if b is None:
            raise KeyError(f"no RAM block {block!r} in the stream")
        if offset < 0 or offset + size > b.used_length:
            raise KeyError(f"{offset:#x}+{size} is outside RAM block {block!r} ({b.used_length:#x} bytes)")
        out = bytearray()
        while size > 0:
            base = offset - offset % self.page_size
            within = offset - base
            n = min(size, self.page_size - within)
            page = b.pages.get(base, 0)
            out += page[within : within + n] if isinstance(page, bytes) else bytes([page]) * n
            offset, size = offset + n, size - n
        return bytes(out)

    def read_phys(self, machine: str | None, gpa: int, size: int) -> bytes:
        """Read guest-physical memory: pc (i440fx) and q35 map pc.ram below the PCI hole and from
        4 GiB (hw/i386/pc_piix.c, pc_q35.c: lowmem 3 GiB / 2 GiB once RAM reaches the hole), arm
        `virt` maps mach-virt.ram at 1 GiB, s390-ccw-virtio maps s390.ram at 0."""
        m = machine or ""
        if m.startswith("virt"):
            return self.read("mach-virt.ram", gpa - 0x40000000, size) if gpa >= 0x40000000 else self._miss(gpa)
        if m.startswith("s390"):
            return self.read("s390.ram", gpa, size)
        b = self.blocks.get("pc.ram")
        ram = b.used_length if b else 0
        limit, lowmem = (0xB0000000, 0x80000000) if "q35" in m else (0xE0000000, 0xC0000000)
        low = lowmem if ram >= limit else ram
        if gpa + size <= low:
            return self.read("pc.ram", gpa, size)
        if gpa >= 1 << 32 and gpa - (1 << 32) + size <= ram - low:
            return self.read("pc.ram", low + gpa - (1 << 32), size)
        return self._miss(gpa)

    @staticmethod
    def _miss(gpa: int) -> bytes:
        raise KeyError(f"guest address {gpa:#x} is not in the RAM this tool maps")

    def read_u16_phys(self, machine: str | None, gpa: int) -> int:
        """A little-endian u16 (a ring index of a little-endian guest)."""
        return int.from_bytes(self.read_phys(machine, gpa, 2), "little")


_BE64 = struct.Struct(">" + be64.fmtstr[1:])
_ZERO_CONTINUE = RAM_SAVE_FLAG_ZERO | RAM_SAVE_FLAG_CONTINUE
_RUN_RECORD = struct.Struct(">" + be64.fmtstr[1:] + "x")  # be64 addr|flags, fill byte 0
_LOW_NIBBLE_SET = bytes(1 if b & 0x0F else 0 for b in range(256))


@dataclass(frozen=True)
class ZeroRun:
    """Consecutive zero-page records that continue the current block (`addr | ZERO | CONTINUE`, fill
    0), the bulk of every stream, kept as their 9-byte records and read by address on demand."""

    raw: bytes

    @property
    def count(self) -> int:
        return len(self.raw) // _RUN_RECORD.size

    def addrs(self) -> list[int]:
        return [w & ~0xFFF for (w,) in _RUN_RECORD.iter_unpack(self.raw)]

    def span(self) -> tuple[int, int]:
        """(first, last) address; the run is contiguous when last - first == (count - 1) pages."""
        first = _BE64.unpack_from(self.raw, 0)[0] & ~0xFFF
        last = _BE64.unpack_from(self.raw, len(self.raw) - _RUN_RECORD.size)[0] & ~0xFFF
        return first, last


def _zero_run_length(data: Any, pos: int) -> int:
    """How many zero-page CONTINUE records (4 KiB pages) start at `pos`: strided slices and strips, so the bulk of
    a stream is measured at C speed, over a window that doubles while the run goes on (one window over all the
    rest of the data made a stream of many short runs quadratic)."""
    limit = (len(data) - pos) // 9
    total, step = 0, 16
    while total < limit:
        n = min(step, limit - total)
        at = pos + 9 * total
        got = _run_in(bytes(data[at : at + 9 * n]), n)
        total += got
        if got < n:
            break
        step *= 2
    return total


def _run_in(window: bytes, n: int) -> int:
    """How many of the `n` 9-byte records in `window` are, from its start, zero-page CONTINUE records."""
    flags = window[7::9]
    n = min(n, len(flags) - len(flags.lstrip(b"\x22")))
    fills = window[8 : n * 9 : 9]
    n = min(n, len(fills) - len(fills.lstrip(b"\0")))
    high = window[6 : n * 9 : 9].translate(_LOW_NIBBLE_SET)
    return min(n, len(high) - len(high.lstrip(b"\0")))


class RamPages(c.Construct):  # type: ignore[misc]
    """The page records of one section up to EOS: the fast loop over `ram_record`.

    Value: a list of (addr, flags, block or None, fill or page bytes or None) tuples.
    """

    def __init__(self, page_size: int) -> None:
        super().__init__()
        self.page_size = page_size

    def _parse(self, stream: Any, context: Any, path: str) -> Any:
        data: bytes = stream.getbuffer() if hasattr(stream, "getbuffer") else b""
        pos = stream.tell()
        out: list[Any] = []
        end, mask = len(data), self.page_size - 1
        unpack = _BE64.unpack_from
        runs = self.page_size == 4096
        while True:
            if runs and data[pos + 7 : pos + 9] == b"\x22\x00" and not data[pos + 6] & 0x0F:
                n = _zero_run_length(data, pos)
                if n > 1:
                    out.append(ZeroRun(bytes(data[pos : pos + 9 * n])))
                    pos += 9 * n
                    continue
            if pos + 8 > end:
                stream.seek(pos)
                raise c.StreamError("stream ends inside a RAM record", path=f"{path}[{len(out)}]")
            (word,) = unpack(data, pos)
            flags, addr = word & mask, word & ~mask
            pos += 8
            if flags & RAM_SAVE_FLAG_EOS:
                out.append((addr, flags, None, None))
                break
            bad = flags & ~(RAM_SAVE_FLAG_ZERO | RAM_SAVE_FLAG_PAGE | RAM_SAVE_FLAG_CONTINUE)
            if bad:
                stream.seek(pos - 8)
                what = UNSUPPORTED_FLAGS.get(bad & -bad, f"unknown flag {bad:#x}")
                raise c.ExplicitError(f"RAM record with {what}: only the default migration "
                                      "capabilities are supported", path=f"{path}[{len(out)}]")
            block = None
            if not flags & RAM_SAVE_FLAG_CONTINUE:
                if pos >= end or pos + 1 + data[pos] > end:
                    stream.seek(pos)
                    raise c.StreamError("stream ends inside a RAM block name", path=f"{path}[{len(out)}]")
                n = data[pos]
                block = bytes(data[pos + 1 : pos + 1 + n]).decode("latin-1")
                pos += 1 + n
            if flags & RAM_SAVE_FLAG_ZERO:
                if pos >= end:
                    stream.seek(pos)
                    raise c.StreamError("stream ends inside a RAM record", path=f"{path}[{len(out)}]")
                out.append((addr, flags, block, data[pos]))
                pos += 1
            elif flags & RAM_SAVE_FLAG_PAGE:
                if pos + self.page_size > end:
                    stream.seek(pos)
                    raise c.StreamError("stream ends inside a RAM page", path=f"{path}[{len(out)}]")
                out.append((addr, flags, block, bytes(data[pos : pos + self.page_size])))
                pos += self.page_size
            else:
                out.append((addr, flags, block, None))
        stream.seek(pos)
        return out

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        parts = []
        for rec in obj:
            if isinstance(rec, ZeroRun):
                parts.append(rec.raw)
                continue
            addr, flags, block, payload = rec
            parts.append(_BE64.pack(addr | flags))
            if block is not None:
                raw = block.encode("latin-1")
                parts.append(bytes([len(raw)]) + raw)
            if isinstance(payload, int):
                parts.append(bytes([payload]))
            elif payload is not None:
                parts.append(payload)
        data = b"".join(parts)
        c.stream_write(stream, data, len(data), path)
        return obj


def apply_pages(memory: GuestMemory, records: list[Any], current: list[str | None]) -> None:
    """Record the pages of one section in `memory`; `current` holds the block of CONTINUE records."""
    for rec in records:
        if isinstance(rec, ZeroRun):
            b = memory.blocks.get(current[0] or "")
            if b is None or not b.pages:
                continue
            first, last = rec.span()
            if last - first == (rec.count - 1) * 4096:
                drop: Any = [a for a in b.pages if first <= a <= last and not a & 0xFFF]
            else:
                drop = set(b.pages).intersection(rec.addrs())
            for a in drop:
                del b.pages[a]
            continue
        addr, flags, block, payload = rec
        if block is not None:
            current[0] = block
        if payload is None or current[0] is None:
            continue
        b = memory.blocks.get(current[0])
        if b is None:
            b = memory.blocks[current[0]] = RamBlock(current[0], 0)
        if isinstance(payload, int) and payload == 0:
            b.pages.pop(addr, None)
        else:
            b.pages[addr] = payload
