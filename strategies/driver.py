"""Reachable device states: what a guest driver can make of a device after reset. The steps are
the ones a driver takes (negotiate features within the host features, set up queues, make requests
and complete some, change config, pick a queue), applied to the model's reset state, so that every
state drawn is one a real guest can produce."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import strategies as st
from hypothesis import target

from models import core, declared
from models import features as F
from models.config import Realized
from models.declarations import Field
from models.devices import net
from models.endian import BiEndianTarget
from models.model import reset_state
from models.reset import local_config_space
from models.state import (
    ENDIAN_BIG,
    ENDIAN_LITTLE,
    NO_VECTOR,
    BalloonState,
    BlkRequest,
    BlkState,
    DeviceState,
    NetState,
    PciState,
    QueueState,
)
from models.transports import pci_regs as regs
from models.transports.pci import PciConfigSpace, guest_write

PAGE = 4096
RING_BASE = 0x100000  # guest-physical area for the rings, 64 KiB per queue

# built once: a strategy made per draw is validated per draw, which was a third of an example's time
_BOOL = st.booleans()
_BIT = st.sampled_from((0, 1))
_BIT_SET = st.sampled_from((1, 0))  # a flag whose reset value is 1: shrinking goes to the reset value
# a running driver (DRIVER_OK) most of the time: the states most subsections need; shrinking still goes to 0
_STATUS = st.sampled_from((0, 1, 3, 7, 7, 7, 0xB, 0xF, 0xF))
_QUARTER = st.integers(0, 3).map(lambda x: x == 3)  # shrinks to False
_DONE = st.integers(0, 0xFFFF) | st.sampled_from((0, 1, 0xFFFE, 0xFFFF))
_MACS = st.lists(st.binary(min_size=6, max_size=6), max_size=64)
# the core subsections' fields that the steps below set with the state they go with: virtio_error (broken, with
# NEEDS_RESET), a bus-master clear (disabled, without DRIVER_OK)
_STEPPED = frozenset({"broken", "disabled"})
_BI_ENDIAN = BiEndianTarget()
_ENDIANS = {ENDIAN_LITTLE: st.sampled_from((ENDIAN_LITTLE, ENDIAN_BIG)),
            ENDIAN_BIG: st.sampled_from((ENDIAN_BIG, ENDIAN_LITTLE))}  # by the target's default, drawn first


def _legacy_rings(desc: int, num: int, align: int = PAGE) -> tuple[int, int]:
    avail = desc + 16 * num
    return avail, (avail + 4 + 2 * num + align - 1) & ~(align - 1)


def guest_features(draw: st.DrawFn, r: Realized) -> int:
    """A driver acks a subset of what the host offers, never VIRTIO_F_BAD_FEATURE; a legacy
    driver (the only kind the legacy BAR allows) sees the low 32 bits only."""
    offered = r.host_features & ~F.bit(F.BAD_FEATURE)
    modern = r.modern and draw(_BOOL)
    if not modern:
        offered &= 0xFFFFFFFF
    picked = draw(st.integers(0, (1 << max(offered.bit_length(), 1)) - 1)) & offered
    if modern:
        picked |= F.bit(F.VERSION_1)
        if F.has(offered, F.RING_PACKED) and draw(_BOOL):
            # a driver with packed-ring support takes it when offered (Linux does); the wide draw above rarely
            # sets a bit that high
            picked |= F.bit(F.RING_PACKED)
    return picked


def queue(draw: st.DrawFn, i: int, q: QueueState, modern: bool, in_flight_ok: bool, resizable: bool = False
          ) -> QueueState:
    if not draw(_BOOL):
        return q  # queue left unconfigured
    if resizable and q.num > 1 and draw(_QUARTER):
        # the driver writes a smaller ring size before enabling the queue (modern pci's queue_size, mmio's
        # QueueNum): a power of two, as virtio_queue_set_num takes any size up to 1024 but drivers pick these
        q = replace(q, num=q.num >> draw(st.integers(1, min(3, q.num.bit_length() - 1))))
    desc = RING_BASE + i * 0x10000
    avail, used = _legacy_rings(desc, q.num)
    if modern and draw(_BOOL):
        avail, used = desc + 0x4000, desc + 0x8000  # a modern driver places the rings itself
    # completed requests move all three indices together; the u16 wrap is fair game
    done = draw(_DONE)
    target(-float(min(done, 0x10000 - done)), label=f"queue {i} index near the u16 wrap")
    inflight = draw(st.integers(0, min(q.num, 3))) if in_flight_ok else 0
    pending = draw(st.integers(0, q.num - inflight))  # made available, not yet taken by the device
    last_avail = (done + inflight) & 0xFFFF
    return replace(q, desc=desc, avail=avail, used=used, last_avail_idx=last_avail,
                   avail_idx=(last_avail + pending) & 0xFFFF, used_idx=done & 0xFFFF)


@st.composite
def device_states(draw: st.DrawFn, r: Realized) -> DeviceState:
    s = reset_state(r)
    # the driver's reset (status 0) gives the device the CPU's data endianness on a bi-endian target: a big-endian
    # aarch64 guest makes it big (virtio_reset); shrinking goes to the target's default, the reset value
    endian = draw(_ENDIANS[s.device_endian]) if _BI_ENDIAN(r, s) else s.device_endian
    features = guest_features(draw, r)
    modern = F.has(features, F.VERSION_1)
    status = draw(_STATUS)
    if modern and status & 4:
        status |= 8  # FEATURES_OK comes before DRIVER_OK for a virtio 1.0 driver
    # a running device that hit virtio_error, where the release migrates it (virtio/broken): broken, and NEEDS_RESET
    # for a virtio 1.0 driver
    known = core.state_fields(r.registry.known_core_subsections(r.release))
    broken = bool(status & 4) and any(f.name == "broken" for f in known) and draw(_BOOL)
    if broken and modern:
        status |= 0x40
    negotiated = features if status & 2 else 0
    packed_ring = F.has(negotiated, F.RING_PACKED)
    blk_inflight = r.config.device == "virtio-blk" and not packed_ring
    # a modern virtio-pci driver (common configuration) or a virtio-mmio one may resize a ring: core.RESIZABLE
    resizable = (r.config.transport == "pci" and modern and r.modern) or r.config.transport == "mmio"
    base, num_default = s.queues, s.num_default
    if r.config.device == "virtio-net" and status & 2 and len(base) > 3:
        # the driver's features lay the queues out (virtio_net_set_multiqueue): every pair with MQ, else one
        num_default = net.layout_sizes(r, F.has(negotiated, F.NET_MQ))
        base = tuple(QueueState(n) for n in num_default)
    queues = tuple(queue(draw, i, q, modern, blk_inflight, resizable) if status & 2 and q.num else q
                   for i, q in enumerate(base))
    packed = s.packed
    if packed_ring and packed:
        # a packed ring's indices run from 0 to num - 1, the wrap counter flipping at each pass; completed requests
        # move the device's avail and used positions together (virtio/packed_virtqueues; the queue list's
        # last_avail_idx is the same index)
        rows = list(packed)
        qs = list(queues)
        for i, q in enumerate(queues):
            if q.desc:
                done = draw(_DONE)
                idx, wrap = done % q.num, 1 ^ (done // q.num & 1)
                rows[i] = (idx, wrap, idx, wrap, 0)
                qs[i] = replace(q, last_avail_idx=idx, avail_idx=idx, used_idx=idx)
        packed, queues = tuple(rows), tuple(qs)
    device = s.device
    if r.config.device == "virtio-net":
        assert isinstance(device, NetState)
        macs = draw(_MACS)
        target(float(len(macs)), label="MAC table toward its 64 entries")
        device = replace(device, mergeable_rx_bufs=int(F.has(negotiated, F.NET_MRG_RXBUF)),
                         promisc=draw(_BIT_SET if device.promisc else _BIT), allmulti=draw(_BIT),
                         mac_table=b"".join(macs), tx_waiting=tuple(draw(_BIT) for _ in device.tx_waiting),
                         curr_queue_pairs=draw(st.integers(1, device.max_queue_pairs))
                         if F.has(negotiated, F.NET_MQ) else 1,
                         has_vnet_hdr=int(r.config.netdev.vnet_hdr))
        if status & 2:  # the driver wrote its features
            device = net.set_features(device, r.release, 0, negotiated)
    elif r.config.device == "virtio-blk":
        reqs = []
        for i, q in enumerate(queues):
            for k in range((q.last_avail_idx - q.used_idx) & 0xFFFF):
                head = 3 * k
                reqs.append(BlkRequest(i, head, ((0x200000 + 0x1000 * k, 16), (0x300000 + 0x1000 * k, 512)),
                                       ((0x400000 + k, 1),)))
        device = BlkState(tuple(reqs))
    elif r.config.device == "virtio-balloon":
        pages = draw(st.integers(0, 1 << 20))
        device = BalloonState(num_pages=pages, actual=draw(st.integers(0, pages)))
    pci = s.pci
    if pci is not None and status:
        cfg = bytearray(pci.config)
        cfg[4] = 0x05 if not modern else 0x07  # command: I/O (memory for modern) + bus master
        pci = replace(pci, config=bytes(cfg))
        if modern and r.modern:  # a modern driver programs the queues through the common config
            regs = [(q.num, 0, 1, q.desc & 0xFFFFFFFF, q.desc >> 32, q.avail & 0xFFFFFFFF, q.avail >> 32,
                     q.used & 0xFFFFFFFF, q.used >> 32) if q.desc else (q.num, 0, 0, 0, 0, 0, 0, 0, 0)
                    for q in queues]
            pci = replace(pci, modern_guest_features=(features & 0xFFFFFFFF, features >> 32 & 0xFFFFFFFF),
                          modern_queues=tuple(regs))
    config_vector = s.config_vector
    if pci is not None and status and draw(_BOOL):
        pci, config_vector, queues = firmware(draw, r, pci, queues)
    disabled = False
    if pci is not None and status & 4 and draw(_QUARTER):
        # the guest then cleared bus mastering (virtio_write_config): DRIVER_OK goes, and the device is disabled
        # where the release migrates it (virtio/disabled) and use-disabled-flag is on
        cfg = bytearray(pci.config)
        cfg[4] &= ~0x04
        pci = replace(pci, config=bytes(cfg))
        status &= ~4
        disabled = any(f.name == "disabled" for f in known) and bool(r.props.get("use-disabled-flag", False))
    config = draw(st.binary(min_size=r.config_len, max_size=r.config_len)) if r.config_len else b""
    queue_sel = draw(st.integers(0, max(len(queues) - 1, 0)))
    # fields of schema modules (models/schema.py), drawn last: without a schema the draws are as they were
    extra = tuple(sorted((f.name, draw(declared_value(f))) for f in declared.known_fields(r)))
    s = replace(s, status=status, guest_features=negotiated, queues=queues, num_default=num_default, device=device,
                pci=pci, packed=packed, device_endian=endian,
                config_vector=config_vector,
                broken=broken, disabled=disabled, config=config, queue_sel=queue_sel, isr=draw(_BIT), extra=extra)
    # the declared fields of the core subsections r knows (models/core.py): set by the steps above, or by the device
    # from the rest of its state (virtio/started follows DRIVER_OK), or else drawn from their declaration
    # (its per-queue arrays and the parts of other fields, the feature words, are the steps' too)
    plain = [f for f in known if f.plain]
    s = s.with_(**{f.name: draw(declared_value(f)) for f in plain if f.derived is None and f.name not in _STEPPED})
    return s.with_(**{f.name: derived_value(f, r, s) for f in plain if f.derived is not None})


def derived_value(f: Field, r: Realized, s: DeviceState) -> Any:
    """A derived field's value: a term's own (device_endian: the target's), a condition's truth (started)."""
    assert f.derived is not None
    term = getattr(f.derived, "value", None)
    return term(r, s) if callable(term) else f.derived(r, s)


def _bars(space: PciConfigSpace) -> list[tuple[int, int, bool]]:
    """(config offset, size, 64-bit) of each BAR the device has, from its write mask (the size's low bits are
    read-only)."""
    out = []
    reg = regs.PCI_BASE_ADDRESS_0
    while reg < regs.PCI_BASE_ADDRESS_0 + 24:
        low = int.from_bytes(space.wmask[reg:reg + 4], "little")
        io = bool(space.config[reg] & 1)
        is64 = not io and bool(space.config[reg] & 4)
        mask = low | (int.from_bytes(space.wmask[reg + 4:reg + 8], "little") << 32 if is64 else 0)
        bits = 64 if is64 else 32 if not io else 16
        mask &= (1 << bits) - 1
        if mask:
            out.append((reg, (~mask + 1) & ((1 << bits) - 1), is64))
        reg += 8 if is64 else 4
    return out


_VECTOR_PICK = st.integers(0, 9)


def _vector(draw: st.DrawFn, vectors: int) -> int:
    """What a driver leaves in a vector register: one of the table's, or none (QEMU turns one past the table
    into VIRTIO_NO_VECTOR)."""
    pick = draw(_VECTOR_PICK)
    return NO_VECTOR if pick >= 8 or not vectors else draw(st.integers(0, vectors - 1))


def firmware(draw: st.DrawFn, r: Realized, pci: PciState, queues: tuple[QueueState, ...]
             ) -> tuple[PciState, int, tuple[QueueState, ...]]:
    """What firmware and a driver do before the driver proper: every BAR mapped at an address aligned to its size
    (guest config writes, so only what the write mask lets through), memory decoding on; then, where the device
    has MSI-X, sometimes the table enabled with an entry per vector used, and the config and queue vectors
    assigned. Returns the PCI state, the config vector and the queues."""
    space = local_config_space(r)
    cfg = pci.config
    io_next, mem_next = 0xC000, 0xC0000000
    for reg, size, is64 in _bars(space):
        io = bool(space.config[reg] & 1)
        base = io_next if io else mem_next
        addr = (base + size - 1) & ~(size - 1)
        if io:
            io_next = addr + size
        else:
            mem_next = addr + size
        cfg = guest_write(space, cfg, reg, (addr & 0xFFFFFFFF).to_bytes(4, "little"))
        if is64:
            cfg = guest_write(space, cfg, reg + 4, (addr >> 32).to_bytes(4, "little"))
    cfg = guest_write(space, cfg, regs.PCI_COMMAND, bytes((cfg[regs.PCI_COMMAND] | 0x07, cfg[5])))
    pci = replace(pci, config=cfg)
    cap = _msix_cap(cfg)
    if not r.vectors or cap is None or not draw(_BOOL):
        return pci, NO_VECTOR, queues
    cfg = guest_write(space, cfg, cap + 3, bytes((cfg[cap + 3] | 0x80,)))  # MSI-X enable
    config_vector = _vector(draw, r.vectors)
    queues = tuple(replace(q, vector=_vector(draw, r.vectors)) if q.desc else q for q in queues)
    table = bytearray(pci.msix_table)
    for v in {config_vector, *(q.vector for q in queues)} - {NO_VECTOR}:
        table[16 * v:16 * v + 16] = (0xFEE00000).to_bytes(4, "little") + bytes(4) + (0x20 + v).to_bytes(4, "little") \
            + bytes(4)
    return replace(pci, config=cfg, msix_table=bytes(table)), config_vector, queues


def _msix_cap(cfg: bytes) -> int | None:
    pos = cfg[regs.PCI_CAPABILITY_LIST] & 0xFC
    for _ in range(48):
        if pos < 0x40:
            return None
        if cfg[pos] == 0x11:  # PCI_CAP_ID_MSIX
            return pos
        pos = cfg[pos + 1] & 0xFC
    return None


def declared_value(f: Field) -> st.SearchStrategy[Any]:
    """Its declared values, else its reset value or any value of its type (shrinking towards the reset value);
    a buffer's bytes, an array's elements."""
    if f.values:  # the reset value first, where it is one of them: sampled_from shrinks to its first element
        reset = f.reset_value()
        return st.sampled_from(sorted(f.values, key=lambda v: v != reset))
    if f.type == "buffer":
        return st.just(f.reset_value()) | st.binary(min_size=f.size, max_size=f.size)
    lo, hi = f.range
    element = st.just(f.reset) | st.integers(lo, hi)
    if f.count:
        return st.just(f.reset_value()) | st.lists(element, min_size=f.count, max_size=f.count).map(tuple)
    return element
