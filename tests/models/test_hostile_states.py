"""Hostile states (issue 5, "Load hardening"; R11): each hostile-state class of
../shared/reference/bug-history.md that applies to the modelled devices, loaded by the models. The model
must reject it with the release's error or accept it exactly as that release does, never raise, and
never allocate beyond a small multiple of the input. Expected messages and verdicts are literals from the
reference (bug-history.md, qemu-virtio-migration.md §1-§5, real-qemu.md §6), not from the models.

tests/models/test_load_checks.py already provokes each load check once (in_use 65, curr_queue_pairs 3,
num_queues 65/1025, queue_sel 1024, config_len 12 vs 8 on 2.0/2.1, in_num 2000, vq index 5, the guest
index 0x8000 and 0xfffc cases, in-use 1 - 0xffff, config_vector == nvectors, started to 4.0); this file
takes the values those tests do not: negative-as-signed and huge counts, the boundaries, the other
transports and releases, and the subsection and endianness cases. Values the state cannot hold (a count
that disagrees with its list) are written into the encoded payload: the wire tree, or raw bytes.
"""

from __future__ import annotations

import struct
import tracemalloc
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.wire.virtio import compiled_payload_layout
from models import features as F
from models.config import Config, NetBackend, Realized, realize
from models.devices import net
from models.model import (
    ACCEPTED,
    ACCEPTED_BROKEN,
    CRASHED,
    REJECTED,
    UNDEFINED,
    LoadResult,
    load,
    reset_state,
    save,
    to_wire,
)
from models.releases import MachineType, V
from models.state import BlkRequest, BlkState, DeviceState, QueueState

IDSTR = "0000:00:03.0/virtio-net"
EPERM = "load of migration failed: Operation not permitted"  # virtio_load's -1
EINVAL = "load of migration failed: Invalid argument"
EIO = "load of migration failed: Input/output error"  # the stream ends (real-qemu.md §6, truncated stream)
ENOENT = "load of migration failed: No such file or directory"  # an unknown subsection (§1.5)
HOST_72 = 0x10179BF8064  # virtio-net-pci host features on pc-i440fx-7.2 .. 10.2 (§10.1; real-qemu.md §6)
MACHINES = {"pci": "pc-i440fx-{}", "mmio": "virt-{}", "ccw": "s390-ccw-virtio-{}"}
HUBPORT = NetBackend()


def _r(release: str, device: str = "virtio-net", transport: str = "pci", machine: str | None = None, smp: int = 1,
       netdev: NetBackend = HUBPORT, **props: object) -> Realized:
    name = machine or MACHINES[transport].format(release)
    if transport == "pci" and device == "virtio-net":
        props = {"romfile": "", **props}
    return realize(Config(V(release), MachineType.parse(name), device, transport, smp, 128, props, netdev))


def _driven(r: Realized, **changes: Any) -> DeviceState:
    """A state after a legacy driver set up queue 0 at 0x100000 (status 7)."""
    s = reset_state(r)
    q0 = replace(s.queues[0], desc=0x100000, avail=0x101000, used=0x102000)
    return replace(s, status=7, queues=(q0, *s.queues[1:]), **changes)


def _q0(s: DeviceState, **changes: int) -> DeviceState:
    return replace(s, queues=(replace(s.queues[0], **changes), *s.queues[1:]))


def _load(r: Realized, data: bytes, s: DeviceState | None = None) -> LoadResult:
    """The model's load, which must return (never raise) and stay within a small multiple of the input."""
    rings = [(q.avail_idx, q.used_idx) for q in s.queues] if s is not None else None
    load(r, data, rings, IDSTR)  # once, so that the bound below does not count the layouts' first compile
    tracemalloc.start()
    try:
        res = load(r, data, rings, IDSTR)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert res.outcome in (ACCEPTED, ACCEPTED_BROKEN, REJECTED, CRASHED, UNDEFINED)
    assert peak < 32 * len(data) + (2 << 20), f"the load of {len(data)} bytes allocated {peak} bytes"
    return res


def _build(r: Realized, s: DeviceState, edit: Any) -> bytes:
    """save(), with the wire tree edited before it is encoded (what no reachable state makes a source send)."""
    tree = to_wire(r, s)
    edit(tree)
    net = s.device.max_queue_pairs > 1 if r.config.device == "virtio-net" else None
    blk = r.release >= V("2.7") and r.num_queues > 1 if r.config.device == "virtio-blk" else None
    data: bytes = compiled_payload_layout(r.config.transport, r.config.device).build(
        tree, net_multiqueue=net, blk_multiqueue=blk)
    return data


def _add_subsection(name: str, body: dict[str, Any], first: bool = False) -> Any:
    def edit(tree: dict[str, Any]) -> None:
        tree["subsections"].insert(0 if first else len(tree["subsections"]), {"name": name, "version_id": 1,
                                                                              "body": body})
    return edit


def _at(data: bytes, marker: bytes) -> int:
    assert data.count(marker) == 1, "the marker must be unique in the payload"
    return data.index(marker)


def _poke32(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + struct.pack(">I", value) + data[offset + 4 :]


def _subsection(name: bytes) -> bytes:
    return bytes([0x05, len(name)]) + name + struct.pack(">I", 1)


# --- the 2014 CVE batch (bug-history.md §1) ---------------------------------------------------------------------

def _ends(res: Any, line: str) -> bool:
    """The migration's last line: `line` itself, or from 10.2 `line` carrying the Error chain of the section."""
    return bool(res.lines) and (res.lines[-1] == line or res.lines[-1].startswith(line + ": error while loading"))


MAC = bytes.fromhex("0a0b0c0d0e0f")
IN_USE = 6 + 4 + 4 + 2 + 1 + 1  # mac, tx_waiting, mergeable_rx_bufs, status, promisc, allmulti (§5.1)


@pytest.mark.parametrize("release", ["2.4", "7.2", "10.2"])
@pytest.mark.parametrize("in_use", [0x7FFFFFFF, 0x10000000])
def test_mac_table_in_use_huge_is_unsigned_and_runs_off_the_stream(release: str, in_use: int) -> None:
    """CVE-2013-4148/4149: in_use is unsigned (never small) and the overflow path consumes in_use x 6 bytes,
    which the stream does not hold: the load fails at its end, and the bytes are skipped, never allocated."""
    r = _r(release)
    s = _driven(r)
    s = replace(s, device=replace(s.device, mac=MAC))
    data = save(r, s)
    res = _load(r, _poke32(data, _at(data, MAC) + IN_USE, in_use), s)
    assert res.outcome == REJECTED and _ends(res, EIO), res.lines


@pytest.mark.parametrize("release", ["2.4", "7.2", "10.2"])
@pytest.mark.parametrize("in_use", [0x80000000, 0xFFFFFFFF])
def test_mac_table_in_use_from_2_31_skips_nothing(release: str, in_use: int) -> None:
    """The overflow path is VMSTATE_UNUSED_VARRAY_UINT32, whose element count vmstate_load_state keeps in an
    int: from 2^31 it is negative, nothing is skipped, and the table is emptied (QEMU 7.2 accepts such a stream,
    found by `virtio-compat mutate`; bug-history.md's "huge, runs off the stream" holds below 2^31 only)."""
    r = _r(release)
    s = _driven(r)
    s = replace(s, device=replace(s.device, mac=MAC))
    data = save(r, s)
    res = _load(r, _poke32(data, _at(data, MAC) + IN_USE, in_use), s)
    assert res.outcome == ACCEPTED and res.state is not None, res.lines
    assert res.state.device.mac_table == b""


@pytest.mark.parametrize("entries, kept", [(64, True), (65, False), (1000, False)])
def test_mac_table_larger_than_ours_keeps_the_stream_aligned(entries: int, kept: bool) -> None:
    """CVE-2013-4149: a table larger than MAC_TABLE_ENTRIES (64) is skipped byte for byte and emptied; every
    field after it (vlans, has_vnet_hdr, the flags) still loads as sent (vlans as 10.1 keeps it: 7.2's
    set_features, the load's last step, then resets it)."""
    r = _r("7.2")
    s = _driven(r)
    table = b"".join(bytes([0x52, 0x54, 0, 0, i >> 8, i & 0xFF]) for i in range(entries))
    dev = replace(s.device, mac=MAC, mac_table=table, vlans=bytes(range(256)) * 2, multi_overflow=1,
                  uni_overflow=0, alluni=1, nomulti=0, nouni=1, nobcast=1)
    s = replace(s, device=dev)
    res = _load(r, save(r, s), s)
    assert res.outcome == ACCEPTED and res.state is not None, res.lines
    got = res.state.device
    assert (got.mac, got.vlans) == (MAC, b"\0" * 512 if F.has(s.guest_features, F.NET_CTRL_VLAN) else b"\xff" * 512)
    kept_vlans = _load(_r("10.1"), save(_r("10.1"), replace(s, device=dev)), s).state
    assert kept_vlans is not None and kept_vlans.device.vlans == dev.vlans
    assert (got.multi_overflow, got.uni_overflow, got.alluni, got.nomulti, got.nouni, got.nobcast) == (1, 0, 1, 0, 1, 1)
    assert (got.in_use, got.mac_table) == ((entries, table) if kept else (0, b""))
    assert res.state.queues[0].desc == 0x100000


def _mq(release: str, pairs: int, transport: str = "mmio") -> Realized:
    return _r(release, transport=transport, netdev=NetBackend("tap", queues=pairs), mq=True)


def test_curr_queue_pairs_at_the_u16_maximum() -> None:
    """CVE-2013-4150: 1 <= curr_queue_pairs <= the destination's max_queue_pairs (§5.1 tmp pre_load)."""
    r = _mq("7.2", 2, "pci")
    s = _driven(r)
    s = replace(s, device=replace(s.device, curr_queue_pairs=0xFFFF, tx_waiting=(0,) * 0xFFFF))
    res = _load(r, save(r, s), s)
    assert (res.outcome, res.error) == (REJECTED, "virtio-net: curr_queue_pairs ffff > max_queue_pairs 2")
    assert _ends(res, EINVAL)


def test_max_queue_pairs_must_equal_the_destinations() -> None:
    """max_queue_pairs is a uint16_equal field (§1.4, §5.1): a 4-pair source to a 2-pair destination fails
    with "%x != %x" (mmio: no MSI-X table size that differs first). Where virtio_net_pre_load_queues takes the
    stream's queue count (Debian's 7.2.22, 10.1 on) the 9 queues overflow the destination's n->vqs first."""
    for release in ("6.2", "10.0"):
        src, dst = _mq(release, 4), _mq(release, 2)
        s = _driven(src)
        res = _load(dst, save(src, s), s)
        assert (res.outcome, res.error) == (REJECTED, "4 != 2"), release
        assert _ends(res, EINVAL)
    for release in ("7.2", "11.1"):
        src, dst = _mq(release, 4), _mq(release, 2)
        # their reset sets the features to 0, leaving one pair: the guest negotiated MQ for all 9 queues
        full = net.layout_sizes(src, True)
        s = _driven(src)
        s = replace(s, guest_features=F.bit(F.NET_MQ), num_default=full,
                    queues=(s.queues[0], *(QueueState(n) for n in full[1:])))
        res = _load(dst, save(src, s), s)
        assert res.outcome == UNDEFINED and "n->vqs[2..3] past its 2 queue pair(s)" in str(res.error), release


def test_one_queue_pair_source_desynchronizes_a_multiqueue_destination() -> None:
    """§5.1: the queue-pair fields are read when the *local* max_queue_pairs > 1, so a 2-pair destination reads
    the two bytes after has_ufo of a 1-pair stream as max_queue_pairs, and the _EQUAL check fails on them."""
    src, dst = _r("7.2", transport="mmio"), _mq("7.2", 2)
    s = _driven(src)
    s = replace(s, device=replace(s.device, mac=MAC))
    data = save(src, s)
    has_ufo = _at(data, MAC) + IN_USE + 4 + 512 + 4 + 6  # in_use 0: no table; vlans, has_vnet_hdr, 6 flags
    value = struct.unpack(">H", data[has_ufo + 1 : has_ufo + 3])[0]
    res = _load(dst, data, s)
    assert (res.outcome, res.error) == (REJECTED, f"{value:x} != 2")
    assert _ends(res, EINVAL)


def _num_queues_at(data: bytes, config: bytes) -> int:
    return _at(data, config) + len(config)  # num_queues follows the config bytes (§2.2 B6, C1)


CONFIG = bytes.fromhex("a1b2c3d4e5f60718")  # virtio-net's 8 config bytes, unique in the payload


@pytest.mark.parametrize("release, num, message", [
    ("7.2", 0x80000000, "Invalid number of virtqueues: 0x80000000"),
    ("7.2", 0xFFFFFFFF, "Invalid number of virtqueues: 0xffffffff"),
    ("2.4", 0xFFFFFFFF, "Invalid number of PCI queues: 0xffffffff"),
    ("2.1", 0x80000000, "Invalid number of PCI queues: 0x80000000"),
])
def test_num_queues_negative_or_huge(release: str, num: int, message: str) -> None:
    """CVE-2013-4151: num is unsigned and bounded before any queue is read (§4 step 5; "PCI queues" before 2.6)."""
    r = _r(release)
    s = _driven(r, config=CONFIG)
    data = save(r, s)
    res = _load(r, _poke32(data, _num_queues_at(data, CONFIG), num), s)
    assert (res.outcome, res.error) == (REJECTED, message)
    assert _ends(res, EPERM)


@pytest.mark.parametrize("release, n, message", [
    ("2.3", 64, None),  # VIRTIO_PCI_QUEUE_MAX is 64 until 2.4
    ("2.4", 1024, None),  # b829c2a98f: 1024
    ("2.4", 1025, "Invalid number of PCI queues: 0x401"),
    ("2.5", 1025, "Invalid number of PCI queues: 0x401"),
    ("2.6", 1025, "Invalid number of virtqueues: 0x401"),  # 8a1be662a6
    ("7.2", 1024, None),
])
def test_num_queues_at_and_past_the_limit(release: str, n: int, message: str | None) -> None:
    # virtio-balloon: virtio-net asserts on an even queue count once the load sets its features (below)
    r = _r(release, device="virtio-balloon")
    s = _driven(r)
    s = replace(s, queues=(s.queues[0], *(replace(s.queues[1], num=64) for _ in range(n - 1))), num_default=(64,) * n)
    res = _load(r, save(r, s), s)
    if message is None:
        assert res.outcome == ACCEPTED, res.lines
    else:
        assert (res.outcome, res.error, res.lines[-1]) == (REJECTED, message, EPERM)


@pytest.mark.parametrize("transport", ["pci", "mmio", "ccw"])
@pytest.mark.parametrize("release", ["2.6", "7.2"])  # virt machine types begin at 2.6
def test_queue_sel_past_the_queues_on_every_transport(transport: str, release: str) -> None:
    """CVE-2013-6399: queue_sel < VIRTIO_QUEUE_MAX, else virtio_load returns -1 without a message (§4 step 3)."""
    r = _r(release, "virtio-rng", transport)
    s = _driven(r)
    for queue_sel, ok in ((1023, True), (1024, False), (0xFFFF, False)):
        res = _load(r, save(r, replace(s, queue_sel=queue_sel)), s)
        if ok:
            assert res.outcome == ACCEPTED, (queue_sel, res.lines)
        else:
            assert res.lines == ("Failed to load virtio-rng:virtio",
                                 f"error while loading state for instance 0x0 of device '{IDSTR}'", EPERM)


@pytest.mark.parametrize("release", ["2.1", "7.2"])
@pytest.mark.parametrize("sent", [4, 0, 8 + 1000])
def test_config_len_smaller_or_bigger_than_the_destinations(release: str, sent: int) -> None:
    """CVE-2014-0182 (2f5732e964, 2.1): min(config_len, ours) bytes are kept, the excess skipped, a short
    config zero-extended; the stream stays aligned (queue 0 loads as sent)."""
    r = _r(release)
    assert r.config_len == 8
    config = bytes(i % 251 + 1 for i in range(sent))
    s = _driven(r, config=config)
    res = _load(r, save(r, s), s)
    assert res.outcome == ACCEPTED and res.state is not None, res.lines
    assert res.state.config == (config + bytes(8))[:8]
    assert res.state.queues[0].desc == 0x100000


@pytest.mark.parametrize("release", ["2.1", "7.2", "10.2"])
@pytest.mark.parametrize("config_len", [0x7FFFFFFF, 0x10000000])
def test_config_len_huge_is_skipped_to_the_end_of_the_stream(release: str, config_len: int) -> None:
    """CVE-2014-0182: the excess is skipped byte by byte, past the end of this stream: the load fails there
    (EIO), and the bytes are never allocated."""
    r = _r(release)
    s = _driven(r, config=CONFIG)
    data = save(r, s)
    res = _load(r, _poke32(data, _at(data, CONFIG) - 4, config_len), s)
    if release in ("7.2", "10.2"):  # the queue count then reads 0: virtio_net_pre_load_queues frees pair 0 twice
        assert res.outcome == UNDEFINED and "twice" in (res.error or ""), res.lines
        return
    assert res.outcome == REJECTED and _ends(res, EIO), res.lines


@pytest.mark.parametrize("config_len", [0x80000000, 0xFFFFFFFF])
def test_config_len_negative_is_rejected_without_allocating(config_len: int) -> None:
    """CVE-2014-0182: config_len is a signed int32 compared with the size_t config size, so -1 reads as
    huge: only our config size is copied and the skip of the excess runs off the stream (6.2: from Debian's
    7.2.22 on, the queue count then reads 0, test above)."""
    r = _r("6.2")
    s = _driven(r, config=CONFIG)
    data = save(r, s)
    res = _load(r, _poke32(data, _at(data, CONFIG) - 4, config_len), s)
    assert res.outcome == REJECTED and _ends(res, EIO), res.lines


def _blk(queues: int = 1) -> Realized:
    return _r("7.2", "virtio-blk", smp=queues)  # 5.2+: one queue per vCPU (§11)


def _request(queue: int = 0, counts: tuple[int, int] | None = None) -> BlkRequest:
    return BlkRequest(queue, 0, ((0x1000, 16),), ((0x2000, 512), (0x3000, 1)), counts)


@pytest.mark.parametrize("counts, outcome, which", [
    ((1025, 2), CRASHED, "out"),
    ((0xFFFFFFFF, 2), CRASHED, "out"),  # -1 as a signed int: still huge, unsigned
    ((1, 0xFFFFFFFF), CRASHED, "in"),
    ((1024, 2), ACCEPTED, None),  # VIRTQUEUE_MAX_SIZE itself fits the arrays
    ((1, 1024), ACCEPTED, None),
])
def test_element_in_num_out_num_against_the_arrays(counts: tuple[int, int], outcome: str, which: str | None) -> None:
    """CVE-2013-4535/4536: an in-flight element's in_num/out_num <= VIRTQUEUE_MAX_SIZE (1024); 7.2 asserts it
    (qemu_get_virtqueue_element), so a larger count aborts QEMU rather than failing the load."""
    r = _blk()
    s = replace(_driven(r), device=BlkState((_request(0, counts),)))
    res = _load(r, save(r, s), s)
    assert res.outcome == outcome, res.lines
    if which is not None:
        assert f"{which}_num" in (res.error or "")


@pytest.mark.parametrize("queue, ok", [(0xFFFFFFFF, False), (0x80000000, False), (1, True)])
def test_request_vq_index_negative_or_huge(queue: int, ok: bool) -> None:
    """§5.2 (the CVE-2013-4542 class, for virtio-blk): vq_index < num_queues, "%#x" in the message."""
    r = _blk(2)
    s = replace(_driven(r), device=BlkState((_request(queue),)))
    res = _load(r, save(r, s), s)
    if ok:
        assert res.outcome == ACCEPTED, res.lines
    else:
        assert (res.outcome, res.error) == (REJECTED, f"Invalid virtqueue index in request list: {queue:#x}")
        assert _ends(res, EINVAL)


# --- ring indices and in-use accounting (bug-history.md §4) ---------------------------------------------------

def _bad_index(avail: int, last: int) -> str:
    delta = (avail - last) & 0xFFFF
    return f"VQ 0 size 0x100 Guest index 0x{avail:x} inconsistent with Host index 0x{last:x}: delta 0x{delta:x}"


@pytest.mark.parametrize("last, avail, bad", [
    (0xFFFF, 0x0002, False),  # three heads across the wrap
    (0xFF80, 0x0080, False),  # exactly vring.num (0x100) heads across the wrap
    (0xFF80, 0x0081, True),  # one more
    (0x0000, 0xFFFF, True),  # the guest "behind" by one reads as 0xffff heads
    (0x0001, 0x0000, True),  # last_avail_idx ahead of the guest
])
@pytest.mark.parametrize("release, broken", [("2.4", False), ("5.1", False), ("5.2", None), ("6.0", True),
                                             ("7.2", True)])
def test_guest_index_near_0_and_0xffff(release: str, broken: bool | None, last: int, avail: int, bad: bool) -> None:
    """258dc7c96b: nheads = avail idx - last_avail_idx (u16) <= vring.num; fatal up to 5.1, only logged by 5.2
    (None), from 6.0 the device is marked broken, its used idx zeroed, and the load goes on (§4 step 14)."""
    r = _r(release)
    s = _q0(_driven(r), last_avail_idx=last, avail_idx=avail, used_idx=last)
    res = _load(r, save(r, s), s)
    if not bad or broken is None:
        assert res.outcome == ACCEPTED, res.lines
    elif not broken:
        assert (res.outcome, res.error, res.lines[-1]) == (REJECTED, _bad_index(avail, last), EPERM)
    else:
        assert (res.outcome, res.lines) == (ACCEPTED_BROKEN, (_bad_index(avail, last),))
        assert res.state is not None and res.state.broken and res.state.queues[0].used_idx == 0


@pytest.mark.parametrize("release, used, ok", [
    ("7.2", 0xFF80, True),  # (0x80 - 0xff80) mod 2^16 = 0x100 = vring.num
    ("7.2", 0xFF7F, False),
    ("2.9", 0xFF80, True),  # e66bcc4081: modular
    ("2.9", 0xFF7F, False),
    ("2.8", 0xFF80, False),  # bccdef6b1a: unsigned int arithmetic, so any wrap is huge
    ("2.6", 0xFF7F, True),  # no in-use check before 2.7
])
def test_inuse_at_the_ring_size_across_the_wrap(release: str, used: int, ok: bool) -> None:
    """bug-history.md 17: inuse = last_avail_idx - used idx must be <= vring.num, else fatal."""
    r = _r(release)
    s = _q0(_driven(r), last_avail_idx=0x80, avail_idx=0x80, used_idx=used)
    res = _load(r, save(r, s), s)
    if ok:
        assert res.outcome == ACCEPTED, res.lines
    else:
        assert (res.outcome, res.error) == (REJECTED, f"VQ 0 size 0x100 < last_avail_idx 0x80 - used_idx 0x{used:x}")


# --- endianness (bug-history.md 14) ---------------------------------------------------------------------------

def _endian(value: int) -> Any:
    return _add_subsection("virtio/device_endian", {"device_endian": value}, first=True)


@pytest.mark.parametrize("release, transport", [("2.1", "pci"), ("7.2", "pci"), ("7.2", "ccw")])
def test_device_endian_out_of_range_is_kept(release: str, transport: str) -> None:
    """The subsection's u8 is taken as is (1 little, 2 big); nothing checks it, and only UNKNOWN (0) is
    replaced by the default (§3, §4 step 11)."""
    r = _r(release, "virtio-rng", transport)
    s = _driven(r)
    res = _load(r, _build(r, s, _endian(3)), s)
    assert res.outcome == ACCEPTED and res.state is not None and res.state.device_endian == 3, res.lines


@pytest.mark.parametrize("transport, default", [("pci", 1), ("ccw", 2)])
def test_device_endian_unknown_becomes_the_targets_default(transport: str, default: int) -> None:
    r = _r("7.2", "virtio-rng", transport)
    s = _driven(r)
    res = _load(r, _build(r, s, _endian(0)), s)
    assert res.outcome == ACCEPTED and res.state is not None and res.state.device_endian == default


def test_device_endian_subsection_to_20_is_an_unknown_section() -> None:
    """§3: QEMU 2.0 has no core subsection loader; the main loop reads 0x05 as a section type."""
    r = _r("2.0")
    s = _driven(r)
    res = _load(r, _build(r, s, _endian(2)), s)
    assert (res.outcome, res.error) == (REJECTED, "Unknown savevm section type 5")


# --- feature bits (bug-history.md 9, 11, 12) -------------------------------------------------------------------

def test_feature_bit_63_not_offered() -> None:
    """§4 step 12, pre-10.2 with high host bits: the 64-bit value is checked ("%PRIx64")."""
    r = _r("7.2")
    s = _driven(r, guest_features=(1 << 63) | 0x20)
    res = _load(r, save(r, s), s)
    assert (res.outcome, res.error) == (REJECTED, f"Features 0x8000000000000020 unsupported. Allowed features: "
                                                  f"0x{HOST_72:x}")
    assert _ends(res, EPERM)


def test_feature_bit_64_in_a_128bit_subsection_the_host_does_not_need() -> None:
    """10.2: virtio/128bit_features loads whenever it is sent, and bit 64 is not offered (§4 step 12)."""
    r = _r("10.2")
    s = _driven(r, guest_features=0x20)
    res = _load(r, _build(r, s, _add_subsection("virtio/128bit_features", {"guest_features_ex1": 1}, True)), s)
    # the report shows the bits that are allowed (virtio_set_features_nocheck keeps them first; the 11.1 binary)
    assert (res.outcome, res.error) == (REJECTED, "Features 0x00000000000000000000000000000020 unsupported. "
                                                  f"Allowed features: 0x{0:016x}{HOST_72:016x}")


def test_128bit_subsection_to_72_is_unknown() -> None:
    """Before 10.2 virtio/128bit_features is an unknown subsection: -ENOENT, no message of its own (§1.5)."""
    r = _r("7.2")
    s = _driven(r, guest_features=0x20)
    res = _load(r, _build(r, s, _add_subsection("virtio/128bit_features", {"guest_features_ex1": 0}, True)), s)
    assert res.lines == ("Failed to load virtio-net:virtio",
                         f"error while loading state for instance 0x0 of device '{IDSTR}'", ENOENT)


@pytest.mark.parametrize("low, error", [
    (0x20, None),
    (0x21, "Features 0x21 unsupported. Allowed features: 0x79bf8064"),  # the 32-bit message (§4 step 12)
])
def test_64bit_subsection_to_a_destination_without_high_host_bits(low: int, error: str | None) -> None:
    """Pre-10.2 subtlety: with no host bit >= 32 (a legacy-only device, pc-i440fx-2.6 on 7.2: 79bf8064, §10.1)
    the 64-bit value is discarded and only the 32-bit field is checked."""
    r = _r("7.2", machine="pc-i440fx-2.6")
    assert r.host_features >> 32 == 0
    s = _driven(r, guest_features=low)
    data = _build(r, s, _add_subsection("virtio/64bit_features", {"guest_features": F.bit(F.VERSION_1) | low}))
    res = _load(r, data, s)
    if error is None:
        assert res.outcome == ACCEPTED and res.state is not None and res.state.guest_features == low, res.lines
    else:
        assert (res.outcome, res.error) == (REJECTED, error) and _ends(res, EPERM)


def test_features_are_checked_before_the_queue_count_in_20() -> None:
    """2.0 applies the 32-bit features with virtio_set_features before config and queues (§4 step 12)."""
    r = _r("2.0")
    s = _driven(r, config=CONFIG, guest_features=0x20 | F.bit(F.NET_CSUM))
    data = save(r, s)
    res = _load(r, _poke32(data, _num_queues_at(data, CONFIG), 0xFFFFFFFF), s)
    assert res.outcome == REJECTED and (res.error or "").startswith("Features 0x21 unsupported. Allowed features: 0x")


# --- unknown, missing, repeated and reordered subsections (§1.5; bug-history.md 12, 18) -------------------------

def _core_start(data: bytes) -> int:
    """Where the core subsections begin: the first one of a modern 7.2+ pci device is 64bit_features."""
    return _at(data, _subsection(b"virtio/64bit_features")[:-4])


def test_unknown_core_subsection_on_102_names_itself() -> None:
    r = _r("10.2")
    s = _driven(r)
    res = _load(r, save(r, s) + _subsection(b"virtio/foo"), s)
    assert res.lines[0] == "VM subsection 'virtio/foo' in 'virtio' does not exist"
    assert res.outcome == REJECTED and _ends(res, ENOENT)


def test_device_subsection_name_among_the_core_subsections_on_102() -> None:
    r = _r("10.2")
    s = _driven(r)
    res = _load(r, save(r, s) + _subsection(b"virtio-net-device/foo"), s)
    assert res.lines[0] == "VM subsection 'virtio-net-device/foo' in 'virtio' does not exist"


@pytest.mark.parametrize("device, parent", [("virtio-net", "virtio-net-device"),
                                            ("virtio-balloon", "virtio-balloon-device")])
@pytest.mark.parametrize("release", ["7.2", "10.2"])
def test_unknown_device_subsection(device: str, parent: str, release: str) -> None:
    """An unknown name with the device vmsd's prefix, among the device's subsections: -ENOENT; 10.2 says so."""
    r = _r(release, device)
    s = _driven(r)
    data = save(r, s)
    at = _core_start(data)
    res = _load(r, data[:at] + _subsection(f"{parent}/foo".encode()) + data[at:], s)
    assert res.outcome == REJECTED and _ends(res, ENOENT)
    if release == "10.2":
        assert res.lines[0] == f"VM subsection '{parent}/foo' in '{parent}' does not exist"
    else:
        assert res.lines[0] == f"Failed to load {device}:virtio"


@pytest.mark.parametrize("name", [b"zzz/foo", b"vir"])  # not the parent's prefix; shorter than "virtio" + 1
def test_subsection_without_the_parents_prefix_is_left_to_the_section_footer(name: bytes) -> None:
    """§1.5: the loader stops quietly and leaves the bytes to the enclosing reader: the section footer check
    fails on them (real-qemu.md §6, a desynchronized parse)."""
    r = _r("7.2")
    s = _driven(r)
    res = _load(r, save(r, s) + _subsection(name), s)
    assert (res.outcome, res.error, res.lines[-1]) == (REJECTED, f"Missing section footer for {IDSTR}", EINVAL)


def test_section_footer_error_is_two_lines() -> None:
    r = _r("7.2")
    s = _driven(r)
    res = _load(r, save(r, s) + _subsection(b"zzz/foo"), s)
    assert res.lines == (f"Missing section footer for {IDSTR}", EINVAL)


def test_missing_virtqueues_subsection_leaves_the_reset_ring_addresses() -> None:
    r = _r("7.2")
    s = _q0(_driven(r, guest_features=F.bit(F.VERSION_1) | 0x20), avail=0x200000, used=0x300000)
    data = _build(r, s, lambda t: t.update(subsections=[x for x in t["subsections"]
                                                         if x["name"] != "virtio/virtqueues"]))
    res = _load(r, data, s)
    assert res.outcome == ACCEPTED and res.state is not None
    assert (res.state.queues[0].avail, res.state.queues[0].used) == (0, 0)


def test_missing_extra_state_is_tolerated() -> None:
    """bug-history.md 18: the destination tolerates the absence of virtio/extra_state."""
    r = _r("7.2")
    s = _driven(r)
    data = _build(r, s, lambda t: t.update(subsections=[x for x in t["subsections"]
                                                         if x["name"] != "virtio/extra_state"]))
    assert _load(r, data, s).outcome == ACCEPTED


def test_core_subsections_in_any_order() -> None:
    """§1.5: subsections can arrive in any order; the loaded state is the same."""
    r = _r("7.2")
    s = _driven(r, guest_features=F.bit(F.VERSION_1) | 0x20, started=True, broken=False, device_endian=2)
    straight = _load(r, save(r, s), s)
    reverse = _load(r, _build(r, s, lambda t: t["subsections"].reverse()), s)
    assert straight.outcome == reverse.outcome == ACCEPTED, reverse.lines
    assert reverse.state == straight.state


def test_repeated_subsection_the_last_one_wins() -> None:
    r = _r("7.2")
    s = _driven(r, guest_features=0x20)
    bad = {"guest_features": 0x21}  # CSUM is not offered on a hubport backend
    data = _build(r, s, _add_subsection("virtio/64bit_features", bad, first=True))
    res = _load(r, data, s)
    assert res.outcome == ACCEPTED and res.state is not None and res.state.guest_features == 0x20, res.lines


# --- transport values: MSI-X vectors and the PCI device state (§4 step 2, step 7) -------------------------------

@pytest.mark.parametrize("release, vector, ok", [
    ("7.2", 3, True),  # the last of 4 vectors
    ("7.2", 4, False),  # = nvectors: checked from 7.2 (EINVAL, no message of its own)
    ("7.2", 0xFFFE, False),
    ("7.2", 0xFFFF, True),  # VIRTIO_NO_VECTOR
    ("6.0", 4, None),  # before 7.2 the vector is linked into vector_queues[4] first: a heap overflow
])
def test_queue_vector_out_of_range(release: str, vector: int, ok: bool | None) -> None:
    r = _r(release)
    assert r.vectors == 4
    s = _q0(_driven(r), vector=vector)
    res = _load(r, save(r, s), s)
    if ok is None:
        assert res.outcome == UNDEFINED and "vector_queues[0x4]" in (res.error or ""), res.lines
    elif ok:
        assert res.outcome == ACCEPTED, res.lines
    else:
        assert res.lines == ("Failed to load virtio-net:virtio",
                             f"error while loading state for instance 0x0 of device '{IDSTR}'", EINVAL)


def test_config_vector_no_vector_is_accepted() -> None:
    r = _r("7.2")
    s = _driven(r, config_vector=0xFFFF)
    assert _load(r, save(r, s), s).outcome == ACCEPTED


@pytest.mark.parametrize("release", ["2.4", "7.2"])
@pytest.mark.parametrize("what, value, first", [
    ("irq_state", -1, "irq state -1: must be 0 or 1."),
    ("irq_state", 0x7FFFFFFF, "irq state 2147483647: must be 0 or 1."),
    ("version_id", -1, "Invalid value -1 expecting positive value <= 2"),  # VMSTATE_INT32_POSITIVE_LE
    ("version_id", 0x7FFFFFFF, "Invalid value 2147483647 expecting positive value <= 2"),
])
def test_pci_device_state_negative_or_huge(release: str, what: str, value: int, first: str) -> None:
    r = _r(release)
    s = _driven(r)
    assert s.pci is not None
    pci = replace(s.pci, irq_state=(value, 0, 0, 0)) if what == "irq_state" else replace(s.pci, version_id=value)
    res = _load(r, save(r, replace(s, pci=pci)), s)
    assert (res.outcome, res.error, res.lines[-1]) == (REJECTED, first, EINVAL)


# --- anything else: one field overwritten with an extreme value never makes the model raise ---------------------

SWEEP = [(release, device, transport) for release in ("2.6", "7.2") for transport in ("pci", "mmio", "ccw")
         for device in ("virtio-net", "virtio-blk", "virtio-balloon", "virtio-rng")]


@pytest.mark.parametrize("release, device, transport", SWEEP)
def test_any_field_at_an_extreme_value_gives_a_verdict(release: str, device: str, transport: str) -> None:
    """R11: the load of a payload with one be16/be32 overwritten anywhere with 0, 1, the maximum or the
    negative-as-signed value returns a verdict (never an exception) within a small multiple of its size."""
    r = _r(release, device, transport)
    s = _driven(r)
    if device == "virtio-blk":
        s = replace(s, device=BlkState((_request(),)))
    data = save(r, s)

    @settings(max_examples=40, derandomize=True, database=None, deadline=None)
    # the fields are in the first kilobytes; the rest is mostly the 1024-entry subsection arrays
    @given(st.one_of(st.integers(0, min(len(data), 2048) - 2), st.integers(0, len(data) - 2)), st.sampled_from([2, 4]),
           st.sampled_from([0, 1, 0x7F, 0x80, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]))
    def poke(offset: int, width: int, value: int) -> None:
        value &= (1 << 8 * width) - 1
        _load(r, data[:offset] + value.to_bytes(width, "big") + data[offset + width :], s)

    poke()


DESC1 = 0x1234_5678_9A00  # queue 1's desc: unique in the payload, its be32 num just before it


@pytest.mark.parametrize("release, num1, extra, assertion", [
    ("7.2", 0, 0, "virtio_net_change_num_queues: Assertion `old_num_queues >= 3' failed."),  # the first size 0
    # a fourth queue loaded: an even count (7.2.22 and 11.1 first give the device 4 queues past its one pair)
    ("6.2", 256, 64, "virtio_net_change_num_queue_pairs: Assertion `old_num_queues % 2 == 1' failed."),
    ("7.2", 256, 64, UNDEFINED),
    ("7.2", 256, 0, None),
    ("2.5", 0, 0, None),  # before 2.7 set_multiqueue checks nothing
])
def test_virtio_net_queue_count_assertions(release: str, num1: int, extra: int, assertion: str | None) -> None:
    """virtio_net_set_features -> virtio_net_change_num_queues asserts on the loaded queue count: QEMU 7.2.22
    aborts (found by `virtio-compat mutate`: queues[1].num = 0)."""
    r = _r(release)
    s = _driven(r)
    qs = [s.queues[0], replace(s.queues[1], desc=DESC1), *s.queues[2:]] + ([QueueState(extra)] if extra else [])
    s = replace(s, queues=tuple(qs), num_default=tuple(q.num for q in qs))
    data = save(r, s)
    data = _poke32(data, _at(data, DESC1.to_bytes(8, "big")) - 4, num1)
    res = _load(r, data, s)
    if assertion in (None, UNDEFINED):
        assert res.outcome == (assertion or ACCEPTED), res.lines
    else:
        assert (res.outcome, res.error) == (CRASHED, assertion)
