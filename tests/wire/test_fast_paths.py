"""The fast paths agree with the plain construct declarations they are derived from."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import construct as c
from hypothesis import given
from hypothesis import strategies as st

from harness.wire.primitives import FlatArray
from harness.wire.ram import RamPages, ZeroRun, ram_record
from harness.wire.stream import decode_stream
from harness.wire.virtio import ModernQueueState, PackedQueueState, VirtQueueElement
from tests.conftest import SAMPLES, truth_of

LAYOUTS = [ModernQueueState, PackedQueueState, c.Struct("avail" / c.Int64ub, "used" / c.Int64ub), c.Int32ub,
           c.Int16ub, c.Int64ul]


def _plain(values: Any, sc: Any) -> Any:
    return [tuple(v[n] for n in FlatArray(0, sc).names) if isinstance(v, dict) else v for v in values]


@given(st.sampled_from(LAYOUTS), st.data())
def test_flat_array_agrees_with_construct_array(sc: Any, data: st.DataObject) -> None:
    flat = FlatArray(c.this.n, sc)
    n = data.draw(st.integers(0, 40))
    # sparse bytes, like QEMU's 1024-entry arrays: zero runs with values here and there
    raw = bytearray(n * flat.itemsize)
    for _ in range(data.draw(st.integers(0, 6))):
        if raw:
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(1, 255))
    raw = bytes(raw)
    plain = c.Array(c.this.n, sc)
    got = flat.parse(raw, n=n)
    want = plain.parse(raw, n=n)
    assert got == _plain(want, sc)
    assert flat.build(got, n=n) == raw == plain.build(want, n=n)


def test_virtqueue_element_agrees_with_plain_construct() -> None:
    data = (SAMPLES / "f07-i440fx-7.2-blk-inflight-werror.bin").read_bytes()
    blk = decode_stream(data).devices[0]
    elem = blk.value.device.requests[0].elem
    raw = VirtQueueElement.build(elem)
    assert len(raw) == 49168
    plain = c.Struct(*[s if not isinstance(s.subcon, FlatArray) else s.name / c.Array(1024, s.subcon.subcon)
                       for s in VirtQueueElement.subcons])
    p = plain.parse(raw)
    assert p.index == elem.index == 6 and (p.out_num, p.in_num) == (2, 1)
    assert [x.iov_len for x in p.out_sg[:2]] == [sg[1] for sg in elem.out_sg[:2]] == [16, 1024]
    assert plain.build(p) == raw


def test_ram_fast_loop_agrees_with_the_record_declaration() -> None:
    data = (SAMPLES / "pc-i440fx-7.2-virtio-net-driven.bin").read_bytes()
    s = decode_stream(data)
    record = ram_record(s.page_size)
    plain = c.RepeatUntil(lambda obj, lst, ctx: obj.flags & 0x10, record)
    checked = 0
    for sec in s.records:
        if getattr(sec, "idstr", "") != "ram" or not isinstance(sec.body, tuple):
            continue
        fast = sec.body[1]
        raw = RamPages(s.page_size).build(fast)
        slow = plain.parse(raw)
        expanded: list[tuple[int, int, Any, Any]] = []
        for rec in fast:
            if isinstance(rec, ZeroRun):
                expanded += [(a, 0x22, None, 0) for a in rec.addrs()]
            else:
                expanded.append(rec)
        assert [(r.addr_flags & ~0xFFF, r.flags, r.block, r.fill if r.fill is not None else r.page)
                for r in slow] == expanded
        assert RamPages(s.page_size).parse_stream(io.BytesIO(raw)) == fast
        checked += len(slow)
    assert checked > 8000


def test_ring_indices_of_every_fixture_equal_ground_truth(fixture_stream: Path) -> None:
    """Each queue's avail and used idx, read from the stream's own RAM pages at the legacy ring
    layout (avail = desc + 16 num, used = align(avail + 4 + 2 num)), equal what was driven."""
    s = decode_stream(fixture_stream.read_bytes())
    assert s.memory is not None
    devices = {d.section: d for d in s.devices}
    checked = 0
    for t in truth_of(fixture_stream)["devices"]:
        for tq in t.get("queues", []):
            if "avail_idx" not in tq:
                continue
            q = devices[t["section"]].value.queues[tq["index"]]
            align = q.get("align") or 4096
            avail = q.desc + 16 * q.num
            used = (avail + 4 + 2 * q.num + align - 1) & ~(align - 1)
            assert s.memory.read_u16_phys(s.machine, avail + 2) == tq["avail_idx"]
            if "used_idx" in tq:
                assert s.memory.read_u16_phys(s.machine, used + 2) == tq["used_idx"]
            checked += 1
    if "blk" in fixture_stream.stem and "reset" not in fixture_stream.stem:
        assert checked


def test_ring_indices_read_from_guest_ram_equal_ground_truth() -> None:
    """f07: avail idx 3, used idx 2 (one request in flight); legacy ring layout from the desc."""
    data = (SAMPLES / "f07-i440fx-7.2-blk-inflight-werror.bin").read_bytes()
    s = decode_stream(data)
    assert s.memory is not None
    q = s.devices[0].value.queues[0]
    avail = q.desc + 16 * q.num
    used = (avail + 4 + 2 * q.num + 4095) & ~4095
    assert s.memory.read_u16_phys(s.machine, avail + 2) == 3
    assert s.memory.read_u16_phys(s.machine, used + 2) == 2
    # the same addresses as the virtio/virtqueues subsection carries
    vqs = next(x.body for x in s.devices[0].value.subsections if x.name == "virtio/virtqueues").vqs
    assert vqs[0] == (avail, used)
