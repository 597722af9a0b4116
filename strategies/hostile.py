"""Hostile states for R10 and R11: a reachable state with one value pushed out of range in a field a
load check guards (../shared/reference/bug-history.md). Each class carries the verdict the
reference gives per release, declared here as the test's own expectation, so that a model that lost
a check (or gained one) disagrees with it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from hypothesis import strategies as st

from models import core
from models import features as F
from models.config import Realized
from models.model import load, save, saved_queue_count, section_version
from models.releases import Version
from models.state import NO_VECTOR, BlkState, DeviceState, NetState, QueueState

V = Version.parse
ACCEPTED, BROKEN, REJECTED, CRASHED = "accepted", "accepted-broken", "rejected", "crashed"


@dataclass(frozen=True)
class Hostile:
    name: str
    rule: str  # R10 (ring indices) or R11 (other hostile input)
    applies: Callable[[Realized, DeviceState], bool]
    mutate: Callable[[Realized, DeviceState, int], DeviceState]  # the int is a drawn value
    verdict: Callable[[Version], str]  # the outcome the reference gives for the destination release
    message: str  # a fragment of the first error line ("" when QEMU prints none of its own)
    source: str
    checks: tuple[str, ...] = ()  # the load checks (models/core.py CHECKS) it provokes: `diff` blames a failure on them


def _first_ring(s: DeviceState) -> int | None:
    """The first queue with a split ring: virtio_load checks no index of a packed ring (RING_PACKED negotiated)."""
    if F.has(s.guest_features, F.RING_PACKED):
        return None
    return next((i for i, q in enumerate(s.queues) if q.desc and q.num), None)


def _with_queue(s: DeviceState, i: int, **changes: int) -> DeviceState:
    qs = list(s.queues)
    qs[i] = replace(qs[i], **changes)
    return replace(s, queues=tuple(qs))


def _bad_guest_index(r: Realized, s: DeviceState, k: int) -> DeviceState:
    i = _first_ring(s)
    assert i is not None
    q = s.queues[i]
    delta = q.num + 1 + k % (0x10000 - q.num - 1)  # more heads than the ring holds
    return _with_queue(s, i, avail_idx=(q.last_avail_idx + delta) & 0xFFFF, used_idx=q.last_avail_idx)


def _inuse_overflow(r: Realized, s: DeviceState, k: int) -> DeviceState:
    i = _first_ring(s)
    assert i is not None
    q = s.queues[i]
    used = (q.last_avail_idx - (q.num + 1 + k % 0x100)) & 0xFFFF  # more in use than the ring holds
    return _with_queue(s, i, avail_idx=q.last_avail_idx, used_idx=used)


HOSTILE: tuple[Hostile, ...] = (
    Hostile("bad-guest-index", "R10", lambda r, s: _first_ring(s) is not None, _bad_guest_index,
            lambda v: REJECTED if v < V("5.2") else ACCEPTED if v < V("6.0") else BROKEN,
            "inconsistent with Host index",
            "§4 step 14: fatal up to 5.1, only logged by 5.2 (its source and binary), virtio_error (broken) from 6.0",
            checks=("avail_idx", "avail_idx_broken")),
    Hostile("inuse-overflow", "R10", lambda r, s: _first_ring(s) is not None, _inuse_overflow,
            lambda v: REJECTED if v >= V("2.7") else ACCEPTED, "< last_avail_idx",
            "§4 step 14: the in-use check arrived in 2.7 (bccdef6b1a)", checks=("inuse", "inuse_modular")),
    Hostile("desc-zero-index", "R11", lambda r, s: bool(s.queues),
            lambda r, s, k: _with_queue(s, 0, desc=0, last_avail_idx=1 + k % 0xFFFF),
            lambda v: REJECTED, "address 0x0 inconsistent with Host index", "§4 step 7 (1abeb5a65d)",
            checks=("desc_zero",)),
    Hostile("queue-sel", "R11", lambda r, s: True, lambda r, s, k: replace(s, queue_sel=1024 + k % 64511),
            lambda v: REJECTED, "", "CVE-2013-6399: queue_sel < VIRTIO_QUEUE_MAX, -1 without a message",
            checks=("queue_sel",)),
    Hostile("guest-feature-not-offered", "R11", lambda r, s: (~r.host_features & 0xFFFFFFFF & ~(1 << 30)) != 0,
            lambda r, s, k: replace(s, guest_features=s.guest_features | _unoffered_bit(r, k)),
            lambda v: REJECTED, "unsupported. Allowed features", "§4 step 12 / bug-history 11",
            checks=("features_early", "features", "features128")),
    Hostile("mac-table-overflow", "R11", lambda r, s: isinstance(s.device, NetState),
            lambda r, s, k: replace(s, device=replace(s.device, mac_table=bytes(6) * (65 + k % 64))),
            lambda v: ACCEPTED, "", "CVE-2013-4148/4149: skipped and emptied, the stream stays aligned"),
)


# --- one class per load bound, around the bound (issue 16 item 2) ------------------------------------------------

def _queue_count_over_max(r: Realized, s: DeviceState, k: int) -> DeviceState:
    """More queues than virtio_load takes (VIRTIO_QUEUE_MAX, 64 before 2.4): the saved ones, then 1-entry queues."""
    n = core.queue_limit(r.release) + 1 + k % 8
    saved = s.queues[: saved_queue_count(s)]
    return replace(s, queues=saved + (QueueState(1),) * (n - len(saved)))


def _curr_queue_pairs_over_max(r: Realized, s: DeviceState, k: int) -> DeviceState:
    dev = s.device
    assert isinstance(dev, NetState)
    curr = 0xFFFF if k % 5 == 0 else dev.max_queue_pairs + 1 + k % 64  # the pre_load check reads no further
    return replace(s, device=replace(dev, curr_queue_pairs=curr))


def _msix(r: Realized, s: DeviceState) -> bool:
    """The state carries MSI-X vectors (virtio_pci_save_config writes them when MSI-X is present)."""
    return r.config.transport == "pci" and r.vectors > 0 and s.pci is not None


def _past_the_table(r: Realized, k: int) -> int:
    return r.vectors + k % (NO_VECTOR - r.vectors)  # from the table size up to 0xfffe (0xffff is "no vector")


def _queue_vector(r: Realized, s: DeviceState, k: int) -> DeviceState:
    return _with_queue(s, 0, vector=_past_the_table(r, k))


def _config_longer(r: Realized, s: DeviceState, k: int) -> DeviceState:
    return replace(s, config=s.config + bytes([0xAA]) * (1 + k % 64))


def _config_shorter(r: Realized, s: DeviceState, k: int) -> DeviceState:
    return replace(s, config=s.config[: k % len(s.config)])


def _in_use(value: int) -> Callable[[Realized, DeviceState, int], DeviceState]:
    def mutate(r: Realized, s: DeviceState, k: int) -> DeviceState:
        assert isinstance(s.device, NetState)
        return replace(s, device=replace(s.device, mac_table=b"", mac_table_in_use=value + k % (1 << 20)))
    return mutate


def _guest_index_at_ring_size(r: Realized, s: DeviceState, k: int) -> DeviceState:
    i = _first_ring(s)
    assert i is not None
    q = s.queues[i]
    return _with_queue(s, i, avail_idx=(q.last_avail_idx + q.num) & 0xFFFF, used_idx=q.last_avail_idx)


def _inuse_at_ring_size(r: Realized, s: DeviceState, k: int) -> DeviceState:
    i = _first_ring(s)
    assert i is not None
    q = s.queues[i]
    return _with_queue(s, i, avail_idx=q.last_avail_idx, used_idx=(q.last_avail_idx - q.num) & 0xFFFF)


def _inuse_exact(r: Realized, s: DeviceState) -> bool:
    """2.7 and 2.8 compute the in-use count in unsigned int: exactly the ring size only where it does not wrap."""
    i = _first_ring(s)
    return i is not None and (not V("2.7") <= r.release < V("2.9") or s.queues[i].last_avail_idx >= s.queues[i].num)


def _element_counts(r: Realized, s: DeviceState, k: int) -> DeviceState:
    dev = s.device
    assert isinstance(dev, BlkState) and dev.requests
    req = dev.requests[0]
    counts = (len(req.out_sg), 1025 + k % 64) if k % 2 else (1025 + k % 64, len(req.in_sg))
    return replace(s, device=BlkState((replace(req, counts=counts), *dev.requests[1:])))


BOUNDS: tuple[Hostile, ...] = (
    Hostile("queue-count-over-max", "R11", lambda r, s: True, _queue_count_over_max,
            lambda v: REJECTED, "Invalid number of",
            "virtio_load: num > VIRTIO_QUEUE_MAX (64 until b829c2a98f, 2.4; 'PCI queues' until 8a1be662a6, 2.6)",
            checks=("num_queues", "num_queues_pci")),
    Hostile("curr-queue-pairs-over-max", "R11",
            lambda r, s: isinstance(s.device, NetState) and s.device.max_queue_pairs > 1, _curr_queue_pairs_over_max,
            lambda v: REJECTED, "> max_queue",
            "CVE-2013-4150: the tx_waiting tmp's pre_load, 'curr_queues %x > max_queues %x' up to 6.1 (5.2 source)"),
    Hostile("config-vector-out-of-table", "R11", _msix,
            lambda r, s, k: replace(s, config_vector=_past_the_table(r, k)), lambda v: REJECTED, "",
            "virtio_pci_load_config: msix_vector_use's -EINVAL up to 7.1 (hw/pci/msix.c; the 5.2 binary), its own "
            "range check from 7.2 (-EINVAL, no message)", checks=("msix_vector", "msix_vector_use")),
    # before 7.2 virtio_queue_set_vector indexes vector_queues[vector] before msix_vector_use refuses it: the 5.2
    # binary dies of SIGSEGV at nvectors and nvectors + 5 and rejects 0xfffe, so there is no verdict to hold it to
    Hostile("queue-vector-out-of-table", "R11",
            lambda r, s: _msix(r, s) and r.release >= V("7.2") and saved_queue_count(s) > 0, _queue_vector,
            lambda v: REJECTED, "", "virtio_pci_load_queue's range check (7.2, 'msix: Assert that specified vector "
            "is in range'); -EINVAL, no message", checks=("msix_vector",)),
    Hostile("config-len-longer", "R11", lambda r, s: True, _config_longer,
            lambda v: REJECTED if v < V("2.1") else ACCEPTED, "Unexpected config length",
            "bug-history 6: the excess is skipped from 2.1 (2f5732e964), fatal before (a890a2f913)",
            checks=("config_len",)),
    Hostile("config-len-shorter", "R11", lambda r, s: bool(s.config), _config_shorter,
            lambda v: REJECTED if v < V("2.1") else ACCEPTED, "Unexpected config length",
            "bug-history 6: the rest keeps the destination's own bytes from 2.1 (2f5732e964), fatal before",
            checks=("config_len",)),
    Hostile("mac-in-use-huge", "R11", lambda r, s: isinstance(s.device, NetState), _in_use(0x100000),
            lambda v: REJECTED, "",
            "CVE-2013-4148/4149: in_use x 6 bytes are skipped, which the stream does not hold (EIO at its end)"),
    # the conversion of virtio-net to vmstate is before 5.2 (its source has VMSTATE_UNUSED_VARRAY_UINT32); older
    # releases' own loader is not verified here
    Hostile("mac-in-use-negative", "R11",
            lambda r, s: isinstance(s.device, NetState) and V("5.2") <= r.release, _in_use(0x80000000),
            lambda v: REJECTED if v >= V("11.0") else ACCEPTED, "stream error",
            "VMSTATE_UNUSED_VARRAY_UINT32 keeps the count in an int: from 2^31 nothing is skipped and the table is "
            "emptied (the 7.2 binary, `virtio-compat mutate`); from 11.0 it runs off the stream like a smaller "
            "one (the 11.1 binary: 'stream error: -5'; models/devices/net.py in_use_unsigned)"),
    Hostile("guest-index-at-ring-size", "R10", lambda r, s: _first_ring(s) is not None, _guest_index_at_ring_size,
            lambda v: ACCEPTED, "", "§4 step 14: nheads > vring.num fails, vring.num heads are fine",
            checks=("avail_idx", "avail_idx_broken")),
    Hostile("inuse-at-ring-size", "R10", _inuse_exact, _inuse_at_ring_size, lambda v: ACCEPTED, "",
            "§4 step 14: inuse > vring.num fails (bccdef6b1a, 2.7; modular from e66bcc4081, 2.9)",
            checks=("inuse", "inuse_modular")),
    Hostile("element-count-over-max", "R11",
            lambda r, s: isinstance(s.device, BlkState) and bool(s.device.requests) and r.release >= V("2.6"),
            _element_counts, lambda v: CRASHED, "Assertion",
            "CVE-2013-4535/4536: qemu_get_virtqueue_element (ab281c1781, 2.6) asserts in_num/out_num <= 1024"),
)
HOSTILE += BOUNDS  # appended: the classes above keep their place in the draws


def _unoffered_bit(r: Realized, k: int) -> int:
    bits = [b for b in range(32) if not r.host_features >> b & 1 and b != 30]
    return 1 << bits[k % len(bits)]


def _loads(r: Realized, s: DeviceState) -> bool:
    """Whether the release loads the state it saved: a state whose load already fails for a known reason (in-flight
    requests across the wrap on 2.7 and 2.8, page-poison on 5.1 to 6.1) has no hostile variant to judge."""
    rings = [(q.avail_idx, q.used_idx) for q in s.queues]
    outcome = load(r, save(r, s), rings, r.config.device, version_id=section_version(r)).outcome
    return outcome in (ACCEPTED, BROKEN)


@st.composite
def hostile_states(draw: st.DrawFn, r: Realized, base: DeviceState) -> tuple[Hostile | None, DeviceState]:
    """A hostile class and the base state pushed past its bound; (None, base) when the base does not load."""
    if not _loads(r, base):
        return None, base
    options = [h for h in HOSTILE if h.applies(r, base)]
    h = draw(st.sampled_from(options), label="hostile class")
    return h, h.mutate(r, base, draw(st.integers(0, 1 << 16), label="hostile value"))
