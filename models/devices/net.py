"""virtio-net (hw/net/virtio-net.c, §5.1): features by property and backend, queues, config size,
the device vmsd (virtio-net-device v11) and its load checks."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from harness.errors import SchemaError
from models import features as F
from models import load_errors as le
from models.conditions import Compare, HostFeature, StateField
from models.configuration import NetBackend, RealizeContext
from models.core import DeviceSubsection, Rule
from models.declarations import Device, offered
from models.releases import Compat, Version
from models.state import DeviceState, NetState, QueueState, Undefined
from models.vmsd import Versions, Vmsd

RSS = "virtio-net-device/rss"  # 5.1, e41b711485e5; v2 in 10.1 (7b6e7e49905d)
RSS_VERSIONS = ((Version(5, 1), 1), (Version(10, 1), 2))  # (release, the version_id it writes from there)
MAC_TABLE_ENTRIES = 64
# VIRTIO_NET_VM_VERSION sets both; the outer minimum is 11 from 2.8 at least (snapshot 2.8.0; before 2.7
# virtio_net_load took 2..11, which no modelled source writes)
VERSIONS = Versions(Vmsd("virtio-net", 11, 11), Vmsd("virtio-net-device", 11, 11))
TX_QUEUE_MAX = 256  # VIRTIO_NET_TX_QUEUE_DEFAULT_SIZE: the tx size cap unless the peer is vhost-user (2.10)
# realize refuses a tx_queue_size above the peer's maximum where 7.2 clamped it (10.0.2 source; the 11.1 binary;
# UNVERIFIED: which release between 7.2 and 10.0, so 8.2 is taken to clamp)
TX_QUEUE_SIZE_CHECKED = Version(10, 0)

_PROP_BITS = (
    ("csum", F.NET_CSUM), ("guest_csum", F.NET_GUEST_CSUM), ("gso", F.NET_GSO),
    ("guest_tso4", F.NET_GUEST_TSO4), ("guest_tso6", F.NET_GUEST_TSO6), ("guest_ecn", F.NET_GUEST_ECN),
    ("guest_ufo", F.NET_GUEST_UFO), ("host_tso4", F.NET_HOST_TSO4), ("host_tso6", F.NET_HOST_TSO6),
    ("host_ecn", F.NET_HOST_ECN), ("host_ufo", F.NET_HOST_UFO), ("mrg_rxbuf", F.NET_MRG_RXBUF),
    ("status", F.NET_STATUS), ("ctrl_vq", F.NET_CTRL_VQ), ("ctrl_rx", F.NET_CTRL_RX),
    ("ctrl_vlan", F.NET_CTRL_VLAN), ("ctrl_rx_extra", F.NET_CTRL_RX_EXTRA), ("ctrl_mac_addr", F.NET_CTRL_MAC_ADDR),
    ("ctrl_guest_offloads", F.NET_CTRL_GUEST_OFFLOADS), ("guest_announce", F.NET_GUEST_ANNOUNCE),
    ("mq", F.NET_MQ), ("host_uso", F.NET_HOST_USO), ("guest_uso4", F.NET_GUEST_USO4),
    ("guest_uso6", F.NET_GUEST_USO6),
)
_NEEDS_VNET_HDR = (F.NET_CSUM, F.NET_HOST_TSO4, F.NET_HOST_TSO6, F.NET_HOST_ECN, F.NET_GUEST_CSUM,
                   F.NET_GUEST_TSO4, F.NET_GUEST_TSO6, F.NET_GUEST_ECN, F.NET_HASH_REPORT)
_UFO = (F.NET_GUEST_UFO, F.NET_HOST_UFO)
_USO = (F.NET_HOST_USO, F.NET_GUEST_USO4, F.NET_GUEST_USO6)
# the bits vhost_net_get_features passes through the kernel's feature set (hw/net/vhost_net.c)
_VHOST_MASKED = (F.NOTIFY_ON_EMPTY, F.RING_INDIRECT_DESC, F.RING_EVENT_IDX, F.NET_MRG_RXBUF, F.VERSION_1,
                 F.NET_MTU, F.ACCESS_PLATFORM, F.RING_PACKED, F.RING_RESET, F.ANY_LAYOUT, F.NET_HASH_REPORT,
                 F.NET_HOST_USO, F.NET_GUEST_USO4, F.NET_GUEST_USO6)


VIRTIO_QUEUE_MAX = 1024
# realize's message says "queue pairs" in the 7.2 source, "queues" in 5.2's (the max_queues -> max_queue_pairs rename
# between them; UNVERIFIED: taken to be 6.2's)
QUEUE_PAIRS_NAMED = Version(6, 2)


def queue_max(release: Version) -> int:
    """VIRTIO_QUEUE_MAX: 64 (VIRTIO_PCI_QUEUE_MAX) until b829c2a98f raised it to 1024 in 2.4 (reference §2); the
    check's wording before 2.4 UNVERIFIED."""
    return VIRTIO_QUEUE_MAX if release >= Version(2, 4) else 64


def max_queue_pairs(ctx: RealizeContext) -> int:
    return max(ctx.config.netdev.queues, 1)


def host_features(ctx: RealizeContext) -> int:
    """n->host_features: the property bits, and MAC (realize always adds it)."""
    out = F.bit(F.NET_MAC)
    for prop, b in _PROP_BITS:
        if ctx.on(prop):
            out |= F.bit(b)
    if int(ctx.props.get("host_mtu") or 0):  # realize offers MTU when host_mtu is set (2.9)
        out |= F.bit(F.NET_MTU)
    return out


def withdrawn(peer: NetBackend) -> int:
    """The feature bits virtio_net_get_features withdraws for what `peer` cannot do (vhost's mask aside)."""
    clear: list[int] = []
    if not peer.vnet_hdr:
        clear += _NEEDS_VNET_HDR + _USO
    if not peer.vnet_hdr or not peer.ufo:
        clear += _UFO
    if not peer.uso:
        clear += _USO
    return sum(F.bit(b) for b in set(clear))


def get_features(ctx: RealizeContext, features: int) -> int:
    """virtio_net_get_features: withdraw what the peer cannot do."""
    peer = ctx.config.netdev
    features &= ~withdrawn(peer)
    if peer.vhost:
        for b in _VHOST_MASKED:
            if b not in peer.vhost_kernel:
                features &= ~F.bit(b)
    return features


def queue_sizes(ctx: RealizeContext) -> list[int]:
    rx = int(ctx.props.get("rx_queue_size", 256))
    # virtio_net_max_tx_queue_size: above 256 only for vhost-user/vdpa peers, none of the modelled backends
    tx = int(ctx.props.get("tx_queue_size", 256))
    if tx > TX_QUEUE_MAX and ctx.release >= TX_QUEUE_SIZE_CHECKED:
        raise SchemaError(f"Invalid tx_queue_size (= {tx}), must be a power of 2 between 256 and {TX_QUEUE_MAX}")
    tx = min(tx, TX_QUEUE_MAX)
    pairs = max_queue_pairs(ctx)
    if pairs * 2 + 1 > queue_max(ctx.release):  # virtio_net_device_realize: the control queue must fit as well
        what = "queue pairs" if ctx.release >= QUEUE_PAIRS_NAMED else "queues"
        raise SchemaError(f"Invalid number of {what} (= {pairs}), must be a positive integer less than "
                          f"{(queue_max(ctx.release) - 1) // 2}.")
    return [rx, tx] * pairs + [64]  # the control queue is always added


def pre_load_takes_count(release: Version) -> bool:
    """virtio_net_pre_load_queues gives the device the stream's queue count, unchecked, from 10.1 (virtio-net: Add
    queues before loading them) and in Debian's 7.2 (the stable backport in 7.2.20, debian/patches/v7.2.20.diff;
    the fleet's 7.2.22 dies like 11.1 on a count of 0); 9.2 to 10.0 take the count from the features instead.
    10.1 UNVERIFIED."""
    return release == Version(7, 2) or release >= Version(10, 1)


def pre_load_queues(realized: Any, num: int) -> None:
    """virtio_net_change_num_queues(n, num) before the queues load: it writes n->vqs (max_queue_pairs long) past
    its end for a count above 2 x max_queue_pairs + 1, and for 0 deletes queue pair 0 twice. The 11.1 binary dies
    of SIGSEGV for some such counts and goes on for others (0x80 dies, 0x100 does not, with one pair)."""
    if not pre_load_takes_count(realized.release):
        return
    pairs = max(realized.config.netdev.queues, 1)
    if num == 0:
        raise Undefined("virtio_net_change_num_queues(n, 0) deletes queue pair 0 twice (a double free)")
    if num > 2 * pairs + 1:
        raise Undefined(f"virtio_net_change_num_queues(n, {num}) writes n->vqs[{pairs}..{(num - 2) // 2}] past its "
                        f"{pairs} queue pair(s) (a heap overflow)")


def in_use_unsigned(release: Version) -> bool:
    """From 11.0 vmstate_n_elems no longer multiplies the element count in an int (VMS_MULTIPLY_ELEMENTS is gone):
    a mac_table.in_use from 2^31 is skipped like a smaller one, running off the stream (the 11.1 binary rejects
    0x80000000 to 0xffffffff with a stream error; 7.2 accepts them). 11.0 UNVERIFIED."""
    return release >= Version(11, 0)


def allocated_sizes(realized: Any, num: int) -> list[int]:
    """The queues virtio_load checks the stream's sizes against: virtio_net_pre_load_queues (9.2, 9379ea9db3c0)
    first gives the device the stream's queue count, rx/tx pairs and the control queue last."""
    rx = int(realized.props.get("rx_queue_size", 256))
    tx = min(int(realized.props.get("tx_queue_size", 256)), TX_QUEUE_MAX)
    sizes = [rx, tx] * max((num - 1) // 2, 0) + [64] if num else []
    override = int(realized.props.get("x-override-queue-size") or 0) if realized.config.transport == "mmio" else 0
    return [override] * len(sizes) if override else sizes  # as realize (models/config.py), UNVERIFIED here


def config_len(ctx: RealizeContext, host_features: int) -> int:
    # virtio_net_set_config_size over n->host_features: mac 6, status 8, max_virtqueue_pairs 10, mtu 12
    size = 6
    for b, end in ((F.NET_STATUS, 8), (F.NET_MQ, 10), (F.NET_MTU, 12)):
        if F.has(host_features, b):
            size = max(size, end)
    return size


def default_vectors(ctx: RealizeContext, nqueues: int) -> int:
    return 2 * max_queue_pairs(ctx) + 2


def reset_sets_features(release: Version) -> bool:
    """virtio_reset calls set_features(0) (0caed25cd1, 10.1; stable 7.2.18 and 10.0.2: the fleet's 7.2.22 and
    10.0.2 have it, their sources and binaries agree; the 8.2.x stable releases are UNVERIFIED and modelled as
    8.2.0)."""
    return release in (Version(7, 2), Version(10, 0)) or release >= Version(10, 1)


# What virtio_net_set_features does to the VLAN filter table, by release: up to 8.1 it resets it (empty with
# CTRL_VLAN, every VLAN let through without), so a load, which sets the features last, throws away the table it
# read; 8.2 only opens it without CTRL_VLAN (06b636a1e2ad); 10.1 resets it only when the CTRL_VLAN bit changes,
# and realize opens it while reset leaves it alone (6071d13c6a; stable 10.0.4, after the fleet's 10.0.2).
VLANS_KEPT_WITH_CTRL_VLAN = Version(8, 2)
VLANS_RESET_ON_CHANGE = Version(10, 1)
VLANS_OPEN, VLANS_EMPTY = b"\xff" * 512, bytes(512)


def set_features(dev: NetState, release: Version, old: int, features: int) -> NetState:
    """virtio_net_set_features' effect on the device state: `old` is vdev->guest_features when it runs. It sets
    mergeable_rx_bufs from MRG_RXBUF (virtio_net_set_mrg_rx_bufs), over what the device data loaded: a device whose
    guest negotiated it and was then reset by a release whose reset does not set the features keeps 1 with no
    features (the 5.2 binary; its stream loads as 0 on 10.0)."""
    dev = replace(dev, mergeable_rx_bufs=int(F.has(features, F.NET_MRG_RXBUF)))
    vlan = F.has(features, F.NET_CTRL_VLAN)
    if release >= VLANS_RESET_ON_CHANGE and vlan == F.has(old, F.NET_CTRL_VLAN):
        return dev
    if VLANS_KEPT_WITH_CTRL_VLAN <= release < VLANS_RESET_ON_CHANGE and vlan:
        return dev
    return replace(dev, vlans=VLANS_EMPTY if vlan else VLANS_OPEN)


# f9d6dbf0bf "virtio-net: remove virtio queues if the guest doesn't support multiqueue" (2.7, UNVERIFIED): before
# it set_multiqueue deleted and re-added the queues after pair 0 by the device's own count, checking nothing
CHANGE_NUM_QUEUES_FROM = Version(2, 7)
PRE_LOAD_QUEUES_FROM = Version(9, 2)  # virtio_net_pre_load_queues (9379ea9db3c0)


def change_num_queues_crash(realized: Any, loaded: Sequence[int], multiqueue: bool) -> str | None:
    """virtio_net_set_features always calls virtio_net_change_num_queue(s|_pairs), even when the features are then
    refused (virtio_set_features_nocheck calls the device first). It asserts on the queue count virtio_get_num_queues
    gives: the index of the first queue whose size is 0. A stream that loads a size 0 into one of the first three
    queues (or leaves an even count) aborts QEMU (found by `virtio-compat mutate` on 7.2.22, whose stable branch has
    the 10.2 name; 6.1 to 10.1 name it ..._pairs, UNVERIFIED from 6.1 to 7.1). A count above the new one deletes
    pairs up to it: past max_queue_pairs that is n->vqs past its end (qemu_bh_delete on what lies there; the fleet's
    7.2.22 dies of SIGSEGV or SIGABRT). `loaded`: the sizes the stream gave the first queues."""
    release, pairs = realized.release, max(realized.config.netdev.queues, 1)
    if release < CHANGE_NUM_QUEUES_FROM:
        return None
    # queues the stream does not carry: none after virtio_net_pre_load_queues gave the device the stream's count,
    # else the sizes realize gave them
    rest = [] if pre_load_takes_count(release) else list(realized.queue_sizes[len(loaded):])
    nums = [*loaded, *rest]
    count = next((i for i, n in enumerate(nums) if n == 0), len(nums))
    named_pairs = Version(6, 1) <= release < Version(10, 2) and release != Version(7, 2)
    func = "virtio_net_change_num_queue_pairs" if named_pairs else "virtio_net_change_num_queues"
    for ok, text in ((count >= 3, "old_num_queues >= 3"), (count % 2 == 1, "old_num_queues % 2 == 1")):
        if not ok:
            return f"{func}: Assertion `{text}' failed."
    new = 2 * pairs + 1 if multiqueue else 3
    if count > new and (count - 2) // 2 >= pairs:
        raise Undefined(f"virtio_net_set_features: {func} deletes queue pairs up to {(count - 2) // 2}, past the "
                        f"{pairs} of n->vqs (a heap overflow)")
    return None


def layout_sizes(realized: Any, multiqueue: bool) -> tuple[int, ...]:
    """The queue sizes virtio_net_set_multiqueue leaves: every pair with MQ, else one pair and the control queue,
    then nothing (0) up to realize's count."""
    if realized.release < CHANGE_NUM_QUEUES_FROM:  # the queues stay as realize added them
        return tuple(realized.queue_sizes)
    pairs = max(realized.config.netdev.queues, 1) if multiqueue else 1
    rx = int(realized.props.get("rx_queue_size", 256))
    tx = min(int(realized.props.get("tx_queue_size", 256)), TX_QUEUE_MAX)
    sizes = [rx, tx] * pairs + [64]
    if realized.config.transport == "mmio" and int(realized.props.get("x-override-queue-size") or 0):
        return tuple(realized.queue_sizes)
    return (*sizes, *[0] * (len(realized.queue_sizes) - len(sizes)))


def reset_queue_sizes(realized: Any) -> tuple[int, ...]:
    """The queues after reset: realize's, or one pair where reset sets the features to 0 (7.2.18+, 10.0.2+, 10.1:
    a 4-pair device of the fleet's 7.2 saves 3 queues before its guest set any feature)."""
    if reset_sets_features(realized.release):
        return layout_sizes(realized, False)
    return tuple(realized.queue_sizes)


def num_default_for(realized: Any, count: int) -> tuple[int, ...]:
    """The queue sizes a device holding `count` queues was given: one pair's layout for 3 queues of a multiqueue
    device (2.7 on), else realize's."""
    if count == 3 and len(realized.queue_sizes) > 3:
        return layout_sizes(realized, False)
    return tuple(realized.queue_sizes)


def loaded_queues(realized: Any, queues: Sequence[QueueState], num_default: Sequence[int], num: int,
                  features_lo: int, multiqueue: bool, ringsize: bool) -> tuple[tuple[QueueState, ...], tuple[int, ...]]:
    """The queues a destination holds after virtio_load's set_features, and their num_default.

    Before the stream's queues load, virtio_net_pre_load_queues lays the device's queues out (Debian's 7.2 and
    10.1 on: from the stream's count; 9.2 to 10.0: one pair without MQ among the stream's 32-bit features, all
    with it); older releases keep realize's. Each queue's num_default is its layout's, unless virtio/ringsize
    carried it. Then set_features (virtio_net_set_multiqueue) changes the layout to one pair, or all of them, with
    MQ: the control queue is deleted, pairs deleted or added, and a fresh control queue (64 entries, no ring) added
    last. A guest without MQ on a multiqueue device thus leaves 3 queues, which pre_load keeps; before pre_load
    (5.2) the destination's 2 x pairs + 1 shrink after the load and the loaded control queue is lost."""
    release, pairs = realized.release, max(realized.config.netdev.queues, 1)
    rx = int(realized.props.get("rx_queue_size", 256))
    tx = min(int(realized.props.get("tx_queue_size", 256)), TX_QUEUE_MAX)

    def layout(n: int) -> list[int]:
        return [rx, tx] * n + [64]

    total = len(realized.queue_sizes)
    if pairs == 1 or realized.config.transport == "mmio" and int(realized.props.get("x-override-queue-size") or 0):
        return tuple(queues), tuple(num_default)
    if pre_load_takes_count(release):
        before = allocated_sizes(realized, num)
    elif release >= PRE_LOAD_QUEUES_FROM:
        before = layout(pairs if F.has(features_lo, F.NET_MQ) else 1)
    else:
        before = list(realized.queue_sizes)
    before += [0] * (total - len(before))
    defaults = list(num_default) if ringsize else list(before)
    qs = list(queues) + [QueueState(0)] * (total - len(queues))
    for i in range(num, total):  # the queues the stream does not carry keep the layout's
        qs[i] = QueueState(before[i])
    if release < CHANGE_NUM_QUEUES_FROM:
        return tuple(qs), tuple(defaults)
    count = next((i for i, q in enumerate(qs) if q.num == 0), len(qs))
    new = 2 * pairs + 1 if multiqueue else 3
    laid_out = next((i for i, n in enumerate(before) if n == 0), len(before))
    if count > laid_out and new < count and not pre_load_takes_count(release):
        # 9.2 to 10.0: pre_load_queues laid out one pair from the 32-bit features, the stream's count then filled
        # the queues past it, and set_features deletes those pairs again: qemu_bh_delete / timer_free on what the
        # first delete freed (the fleet's 10.0.2 goes on or dies of SIGSEGV, run to run, on a 5.2 stream of a
        # 4-pair device whose guest never set features)
        raise Undefined(f"virtio_net_change_num_queue_pairs(n, {(new - 1) // 2}) deletes queue pairs "
                        f"{(laid_out - 1) // 2}..{(count - 3) // 2} that pre_load_queues already deleted "
                        "(a use after free)")
    if count == new or count < 3 or count % 2 == 0 or count > 2 * pairs + 1:
        return tuple(qs), tuple(defaults)  # nothing changes, or change_num_queues_crash said what happens
    after = layout((new - 1) // 2) + [0] * (total - new)
    for i in range(min(count, new) - 1, total):  # the control queue and the pairs past the smaller count
        # virtio_delete_queue / virtio_add_queue set the size, num_default and align alone: a queue re-added at
        # an index keeps the ring addresses and indices that were loaded there
        qs[i] = replace(qs[i], num=after[i], align=4096)
        defaults[i] = after[i]
    return tuple(qs), tuple(defaults)


def multiqueue(release: Version, incoming: int, host: int) -> bool:
    """What virtio_net_set_multiqueue is told: MQ or RSS among the features set_features sees, the allowed ones up
    to 10.1 and, from 10.2 (set_features_ex), the stream's own, before they are checked."""
    seen = incoming if release >= Version(10, 2) else incoming & host
    return F.has(seen, F.NET_MQ) or F.has(seen, F.NET_RSS)


def reset_state(realized: Any) -> NetState:
    mac = realized.props.get("mac") or "52:54:00:12:34:56"
    pairs = max(realized.config.netdev.queues, 1)
    # virtio_net_reset empties the VLAN filter before 10.1 (realize opens it from 10.1); a reset that calls
    # set_features(0) then opens it
    vlans = VLANS_OPEN if reset_sets_features(realized.release) else VLANS_EMPTY
    return NetState(mac=bytes.fromhex(str(mac).replace(":", "")), tx_waiting=(0,) * pairs,
                    vlans=vlans, max_queue_pairs=pairs, curr_queue_pairs=1)


def rss_version(release: Version) -> int:
    return max(v for r, v in RSS_VERSIONS if r <= release)


# virtio_net_rss_needed: rss_data.enabled, which a guest sets only where the device offers RSS or HASH_REPORT
SUBSECTIONS = (
    DeviceSubsection(RSS, RSS_VERSIONS[0][0], (Rule(RSS_VERSIONS[0][0], Compare(
        StateField("rss", settable=HostFeature(F.NET_RSS) | HostFeature(F.NET_HASH_REPORT), reset=None), "!=", None),
        "rss enabled"),), "e41b711485e5"),
)


def known_subsections(release: Version) -> set[str]:
    return {s.name for s in SUBSECTIONS if s.known(release)}


def to_wire(dev: NetState, realized: Any, s: DeviceState) -> dict[str, Any]:
    multi = dev.max_queue_pairs > 1
    extra = max(dev.curr_queue_pairs - 1, 0)
    guest_features = s.guest_features
    subs = [{"name": RSS, "version_id": rss_version(realized.release), "body": dev.rss}
            for sub in SUBSECTIONS if sub.is_needed(realized, s)]
    return {
        "mac": dev.mac, "tx_waiting": dev.tx_waiting[0], "mergeable_rx_bufs": dev.mergeable_rx_bufs,
        "status": dev.status, "promisc": dev.promisc, "allmulti": dev.allmulti, "mac_table_in_use": dev.in_use,
        "mac_table_macs": dev.mac_table, "vlans": dev.vlans, "has_vnet_hdr": dev.has_vnet_hdr,
        "multi_overflow": dev.multi_overflow, "uni_overflow": dev.uni_overflow, "alluni": dev.alluni,
        "nomulti": dev.nomulti, "nouni": dev.nouni, "nobcast": dev.nobcast, "has_ufo": dev.has_ufo,
        "max_queue_pairs": dev.max_queue_pairs if multi else None,
        "curr_queue_pairs": dev.curr_queue_pairs if multi else None,
        "tx_waiting_more": list(dev.tx_waiting[1 : 1 + extra]) + [0] * (extra - len(dev.tx_waiting[1 : 1 + extra])),
        "curr_guest_offloads": dev.curr_guest_offloads if F.has(guest_features, F.NET_CTRL_GUEST_OFFLOADS) else None,
        "subsections": subs,
    }


def from_wire(value: Any) -> NetState:
    pairs = value.max_queue_pairs or 1
    curr = value.curr_queue_pairs or 1
    tx = (value.tx_waiting, *value.tx_waiting_more)
    tx = tx + (0,) * max(pairs - len(tx), 0)
    rss = next((s.body for s in value.subsections if s.name == RSS), None)
    in_use = value.mac_table_in_use
    return NetState(
        mac=bytes(value.mac), tx_waiting=tx, mergeable_rx_bufs=value.mergeable_rx_bufs, status=value.status,
        promisc=value.promisc, allmulti=value.allmulti, mac_table=bytes(value.mac_table_macs),
        mac_table_in_use=None if in_use * 6 == len(value.mac_table_macs) else in_use, vlans=bytes(value.vlans),
        has_vnet_hdr=value.has_vnet_hdr, multi_overflow=value.multi_overflow, uni_overflow=value.uni_overflow,
        alluni=value.alluni, nomulti=value.nomulti, nouni=value.nouni, nobcast=value.nobcast,
        has_ufo=value.has_ufo, max_queue_pairs=pairs, curr_queue_pairs=curr,
        curr_guest_offloads=value.curr_guest_offloads or 0, rss=rss)


# The vmstate field each layout field is, as QEMU names it when its read runs past the end of the file (the
# innermost vmsd first: a WITH_TMP's own vmsd, a STRUCT_POINTER's element vmsd).
VMSD_FIELDS = {
    "mac": "virtio-net-device:mac", "tx_waiting": "virtio-net-queue-tx_waiting:tx_waiting",
    "mergeable_rx_bufs": "virtio-net-device:mergeable_rx_bufs", "status": "virtio-net-device:status",
    "promisc": "virtio-net-device:promisc", "allmulti": "virtio-net-device:allmulti",
    "mac_table_in_use": "virtio-net-device:mac_table.in_use", "vlans": "virtio-net-device:vlans",
    "has_vnet_hdr": "virtio-net-vnet:has_vnet_hdr", "multi_overflow": "virtio-net-device:mac_table.multi_overflow",
    "uni_overflow": "virtio-net-device:mac_table.uni_overflow", "alluni": "virtio-net-device:alluni",
    "nomulti": "virtio-net-device:nomulti", "nouni": "virtio-net-device:nouni", "nobcast": "virtio-net-device:nobcast",
    "has_ufo": "virtio-net-ufo:has_ufo", "max_queue_pairs": "virtio-net-device:max_queue_pairs",
    "curr_queue_pairs": "virtio-net-device:curr_queue_pairs",
    "tx_waiting_more": "virtio-net-queue-tx_waiting:tx_waiting",
    "curr_guest_offloads": "virtio-net-device:curr_guest_offloads",
}


def check_field(name: str, value: Any, realized: Any) -> list[Any]:
    """The load checks QEMU makes as it reads the device vmsd's fields (the WITH_TMP post_loads and
    the uint16_equal of max_queue_pairs), in field order, as load_errors frames; [] when the field passes."""
    peer = realized.config.netdev
    local_pairs = max(peer.queues, 1)
    tmp = [le.FieldFailed("virtio-net-device", "tmp", "tmp"), le.Printed()]
    if name == "has_vnet_hdr" and value and not peer.vnet_hdr:
        return ["virtio-net: saved image requires vnet_hdr=on", *tmp]
    if name == "has_ufo" and value and not (peer.vnet_hdr and peer.ufo):
        return ["virtio-net: saved image requires TUN_F_UFO support", *tmp]
    if name == "max_queue_pairs" and value is not None and value != local_pairs:
        return [f"{value:x} != {local_pairs:x}", le.FieldFailed("virtio-net-device", "max_queue_pairs", "uint16 equal"),
                le.Printed()]
    if name == "curr_queue_pairs" and value is not None and value > local_pairs:
        # "curr_queues %x > max_queues %x" in 5.2 (its source); taken to be renamed with the fields in 6.2, UNVERIFIED
        pairs = "_pairs" if realized.release >= Version(6, 2) else "s"
        return [f"virtio-net: curr_queue{pairs} {value:x} > max_queue{pairs} {local_pairs:x}", *tmp]
    return []


def load_device(dev: NetState, realized: Any, features_lo: int, lines: list[str]) -> NetState | None:
    """The device vmsd's post_load (its field checks ran in check_field)."""
    # a MAC table larger than ours was skipped, so it is emptied (CVE-2013-4149)
    table, in_use = dev.mac_table, dev.in_use
    if in_use > MAC_TABLE_ENTRIES:
        table, in_use = b"", 0
    return NetState(**{**dev.__dict__, "mac_table": table, "mac_table_in_use": None if len(table) == in_use * 6
                       else in_use})


# hw/virtio/virtio-net-pci.c: vectors default 2 * max(queue pairs, 1) + 2, romfile efi-virtio.rom
DEVICE = Device("virtio-net", VERSIONS, 1, sys.modules[__name__], pci_device_id=0x1000, pci_class=0x0200,
                romfile="efi-virtio.rom", transports=offered(Version(2, 0), "pci", "mmio", "ccw"),
                compat=(Compat(Version(2, 4), "virtio-net-ccw", "max_revision", 0, Version(2, 5),
                               source="ccw_machine_2_4_class_options"),),
                drawn=(("mq", (False, True)), ("ctrl_guest_offloads", (True, False)), ("guest_announce", (True, False)),
                       ("packed", (False, True))),
                qdev_id="vnet", backend=("-netdev", "hubport,id=nd_{id},hubid=0", "netdev=nd_{id}"), order=10)
