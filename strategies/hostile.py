"""Hostile states for R10 and R11: a reachable state with one value pushed out of range in a field a
load check guards (../shared/reference/bug-history.md). Each class carries the verdict the
reference gives per release, declared here as the test's own expectation, so that a model that lost
a check (or gained one) disagrees with it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from hypothesis import strategies as st

from models.config import Realized
from models.releases import Version
from models.state import DeviceState, NetState

V = Version.parse
ACCEPTED, BROKEN, REJECTED = "accepted", "accepted-broken", "rejected"


@dataclass(frozen=True)
class Hostile:
    name: str
    rule: str  # R10 (ring indices) or R11 (other hostile input)
    applies: Callable[[Realized, DeviceState], bool]
    mutate: Callable[[Realized, DeviceState, int], DeviceState]  # the int is a drawn value
    verdict: Callable[[Version], str]  # the outcome the reference gives for the destination release
    message: str  # a fragment of the first error line ("" when QEMU prints none of its own)
    source: str


def _first_ring(s: DeviceState) -> int | None:
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
            lambda v: REJECTED if v < V("6.0") else BROKEN, "inconsistent with Host index",
            "§4 step 14: fatal up to 5.2, virtio_error (broken) from 6.0"),
    Hostile("inuse-overflow", "R10", lambda r, s: _first_ring(s) is not None, _inuse_overflow,
            lambda v: REJECTED if v >= V("2.7") else ACCEPTED, "< last_avail_idx",
            "§4 step 14: the in-use check arrived in 2.7 (bccdef6b1a)"),
    Hostile("desc-zero-index", "R11", lambda r, s: bool(s.queues),
            lambda r, s, k: _with_queue(s, 0, desc=0, last_avail_idx=1 + k % 0xFFFF),
            lambda v: REJECTED, "address 0x0 inconsistent with Host index", "§4 step 7 (1abeb5a65d)"),
    Hostile("queue-sel", "R11", lambda r, s: True, lambda r, s, k: replace(s, queue_sel=1024 + k % 64511),
            lambda v: REJECTED, "", "CVE-2013-6399: queue_sel < VIRTIO_QUEUE_MAX, -1 without a message"),
    Hostile("guest-feature-not-offered", "R11", lambda r, s: (~r.host_features & 0xFFFFFFFF & ~(1 << 30)) != 0,
            lambda r, s, k: replace(s, guest_features=s.guest_features | _unoffered_bit(r, k)),
            lambda v: REJECTED, "unsupported. Allowed features", "§4 step 12 / bug-history 11"),
    Hostile("mac-table-overflow", "R11", lambda r, s: isinstance(s.device, NetState),
            lambda r, s, k: replace(s, device=replace(s.device, mac_table=bytes(6) * (65 + k % 64))),
            lambda v: ACCEPTED, "", "CVE-2013-4148/4149: skipped and emptied, the stream stays aligned"),
)


def _unoffered_bit(r: Realized, k: int) -> int:
    bits = [b for b in range(32) if not r.host_features >> b & 1 and b != 30]
    return 1 << bits[k % len(bits)]


@st.composite
def hostile_states(draw: st.DrawFn, r: Realized, base: DeviceState) -> tuple[Hostile, DeviceState]:
    options = [h for h in HOSTILE if h.applies(r, base)]
    h = draw(st.sampled_from(options), label="hostile class")
    return h, h.mutate(r, base, draw(st.integers(0, 1 << 16), label="hostile value"))
