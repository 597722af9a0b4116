"""The known real incompatibilities: QEMU's own breaks, each as narrow as the fact behind it, which the matrix
reports as expected and `diff` names beside the subsections they are about."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from harness.rules import BROKEN_SINCE, Violation
from models import features as F
from models.config import Config
from models.core import RINGSIZE_IGNORED_FROM
from models.devices import balloon, net
from models.releases import Version
from models.state import DeviceState, NetState


@dataclass(frozen=True)
class KnownIncompatibility:
    """A real incompatibility, as narrow as the fact behind it."""

    name: str
    rule: str  # a rule id, several joined by "/", or "*"
    applies: Callable[[Config, Config, DeviceState], bool]
    reason: str
    source: str
    # what the violation itself must show (default: anything the rule reports)
    shows: Callable[[Violation], bool] = lambda v: True
    subsections: tuple[str, ...] = ()  # the subsections it is about (diff names the entry beside them)


def _inuse_wraps(st: DeviceState) -> bool:
    return any(q.desc and q.last_avail_idx < q.used_idx for q in st.queues)


def _page_poison_misspelt(s: Config, d: Config, st: DeviceState) -> bool:
    return (s.device == "virtio-balloon" and F.has(st.guest_features, F.BALLOON_PAGE_POISON)
            and min(s.release, d.release) < balloon.PAGE_POISON_NAMED)


def _vlans_rewritten(s: Config, d: Config, st: DeviceState) -> bool:
    dev = st.device
    return (isinstance(dev, NetState)
            and net.set_features(dev, d.release, st.guest_features, st.guest_features).vlans != dev.vlans)


def _only_vlans_differ(v: Violation) -> bool:
    """R2's bytes differ (the table is all R2 can see), or R1/R3/R4 found the device state alone changed, and
    only in its VLAN table."""
    if v.rule == "R2":
        return True
    diff = v.details
    if set(diff) != {"device"}:
        return False
    sent, loaded = diff["device"]
    return isinstance(sent, NetState) and isinstance(loaded, NetState) and replace(sent, vlans=loaded.vlans) == loaded


def _backend_lacks(s: Config, d: Config, st: DeviceState) -> bool:
    """The destination's network backend lacks what the source's gave the state: a feature the guest negotiated
    that the destination does not offer, the vnet header or UFO the device data says the source had, or another
    number of queue pairs."""
    dev = st.device
    if not isinstance(dev, NetState) or s.netdev == d.netdev:
        return False
    peer = d.netdev
    # the destination's backend withdraws a feature the source's offered (realize needs the cell's registry: the
    # peer's own effect on the features is what differs)
    lost = net.withdrawn(peer) & ~net.withdrawn(s.netdev)
    return (bool(st.guest_features & lost) or (bool(dev.has_vnet_hdr) and not peer.vnet_hdr)
            or (bool(dev.has_ufo) and not (peer.vnet_hdr and peer.ufo))
            or max(s.netdev.queues, 1) != max(peer.queues, 1))


def _net_queues_without_mq(st: DeviceState) -> bool:
    """A multiqueue virtio-net holding more than one pair's queues with neither MQ nor RSS among its features: a
    guest negotiated MQ and then reset the device, on a release whose reset does not set the features."""
    dev = st.device
    count = next((i for i, q in enumerate(st.queues) if q.num == 0), len(st.queues))
    return (isinstance(dev, NetState) and dev.max_queue_pairs > 1 and count > 3
            and not (F.has(st.guest_features, F.NET_MQ) or F.has(st.guest_features, F.NET_RSS)))


def _net_one_pair_of_many(st: DeviceState) -> bool:
    """A multiqueue virtio-net whose guest set features without MQ: one pair and the control queue (2.7 on)."""
    dev = st.device
    count = next((i for i, q in enumerate(st.queues) if q.num == 0), len(st.queues))
    return (isinstance(dev, NetState) and dev.max_queue_pairs > 1 and count == 3
            and not F.has(st.guest_features, F.NET_MQ))


def _control_queue_re_added(s: Config, d: Config, st: DeviceState) -> bool:
    """The destination lays the queues out only after loading them (no pre_load_queues), so set_features re-adds
    the control queue at index 2 with its own 64 entries over a size the guest chose."""
    no_pre_load = d.release < net.PRE_LOAD_QUEUES_FROM and not net.pre_load_takes_count(d.release)
    return (no_pre_load and d.release >= net.CHANGE_NUM_QUEUES_FROM and _net_one_pair_of_many(st)
            and st.queues[2].num != 64)


def _inflight_on_packed_host(s: Config, d: Config, st: DeviceState) -> bool:
    """Requests in flight (popped, not used) on a virtio-scsi or virtio-blk whose host offers RING_PACKED on both
    sides: the element save writes ndescs before it and the load reads ndescs after it."""
    packed = all(str(c.props.get("packed", False)).lower() in ("true", "on") for c in (s, d))
    return s.device in ("virtio-scsi", "virtio-blk") and packed and any(
        q.desc and q.last_avail_idx != q.used_idx for q in st.queues)


KNOWN: tuple[KnownIncompatibility, ...] = (
    KnownIncompatibility(
        "net-queue-layout-2.7", "R3/R4",
        lambda s, d, st: (min(s.release, d.release) < net.CHANGE_NUM_QUEUES_FROM <= max(s.release, d.release)
                          and isinstance(st.device, NetState) and st.device.max_queue_pairs > 1
                          and not F.has(st.guest_features, F.NET_MQ)),
        "From 2.7 a multiqueue virtio-net whose guest did not negotiate MQ holds one pair and the control queue at "
        "index 2; before, it kept every pair and the control queue last. Across 2.7 the control queue's ring lands "
        "on another queue (an rx queue before 2.7, the control queue after) and the queue count changes.",
        "f9d6dbf0bf 'virtio-net: remove virtio queues if the guest doesn't support multiqueue' (2.7, UNVERIFIED)"),
    KnownIncompatibility(
        "net-control-queue-re-added-on-load", "R1/R2/R3/R4", _control_queue_re_added,
        "Before pre_load_queues (9.2; Debian's 7.2 has it) the destination lays a virtio-net's queues out after "
        "loading them: set_features deletes the pairs past the first and re-adds the control queue at index 2 with "
        "64 entries, over the size a virtio-mmio or modern virtio-pci guest gave it (the ring address stays).",
        "hw/net/virtio-net.c virtio_net_change_num_queue(s|_pairs); hw/virtio/virtio.c virtio_add_queue"),
    KnownIncompatibility(
        "net-queues-collapse-on-load", "R1/R2/R3/R4",
        lambda s, d, st: d.release >= net.CHANGE_NUM_QUEUES_FROM and _net_queues_without_mq(st),
        "virtio_load ends with set_features, and virtio-net's lays the queues out by MQ: a multiqueue device whose "
        "guest negotiated MQ and then reset it (its release's reset leaves the queues, 5.2) saves every pair's "
        "queues with no features, and the destination keeps one pair and the control queue. Nothing a driver uses "
        "is lost (a reset device has no rings). Seen on the 5.2 binary (5.2 -> 5.2, 5.2 -> 7.2: 9 queues -> 3).",
        "hw/net/virtio-net.c virtio_net_set_features -> virtio_net_set_multiqueue"),
    KnownIncompatibility(
        "net-pre-load-queues-use-after-free", "R3/R4",
        lambda s, d, st: (net.PRE_LOAD_QUEUES_FROM <= d.release and not net.pre_load_takes_count(d.release)
                          and _net_queues_without_mq(st)),
        "QEMU 9.2 to 10.0 lay a virtio-net's queues out before loading them from the stream's 32-bit features "
        "(virtio_net_pre_load_queues): one pair without MQ. The stream's queues past it load anyway, and "
        "set_features then deletes those pairs a second time (qemu_bh_delete, timer_free on freed memory): the "
        "destination goes on or dies of SIGSEGV, run to run. Seen on the fleet's 10.0.2 with a 5.2 stream of a "
        "4-pair device whose guest had reset it.",
        "hw/net/virtio-net.c virtio_net_pre_load_queues (9379ea9db3c0), virtio_net_change_num_queue_pairs"),
    KnownIncompatibility(
        "netdev-lacks-capability", "R1/R3/R4",
        _backend_lacks,
        "The destination host's network backend lacks what the source's had (a tap without vnet_hdr, UFO or USO, "
        "a hubport, other queues): QEMU refuses the features the guest negotiated that the destination does not "
        "offer ('Features ... unsupported'), 'saved image requires vnet_hdr=on' / 'TUN_F_UFO support', and a "
        "max_queue_pairs that is not the destination's. Management must give both sides the same backend.",
        "hw/net/virtio-net.c virtio_net_get_features, virtio_net_vnet_post_load, virtio_net_ufo_post_load; "
        "vmstate_virtio_net_device max_queue_pairs (uint16_equal)"),
    KnownIncompatibility(
        "inuse-not-modular-2.7", "*",
        lambda s, d, st: Version(2, 7) <= d.release < Version(2, 9) and _inuse_wraps(st),
        "QEMU 2.7 and 2.8 compute a queue's in-use count as last_avail_idx - used_idx in int arithmetic, so "
        "in-flight requests across the u16 wrap of the indices read as a huge count and fail the load "
        "('VQ %d size 0x%x < last_avail_idx 0x%x - used_idx 0x%x'); 2.9 made it modular.",
        "reference §4 step 14 (bccdef6b1a in 2.7; e66bcc4081 in 2.9); bug-history.md entry 17"),
    KnownIncompatibility(
        "guest-announce-pc-2.0", "R3",
        lambda s, d, st: (s.release == Version(2, 0) and d.release >= Version(2, 1) and s.device == "virtio-net"
                          and s.machine.version == Version(2, 0) and s.machine.family.startswith("pc-")
                          and F.has(st.guest_features, F.NET_GUEST_ANNOUNCE)),
        "pc_compat_2_0 turns virtio-net-pci guest_announce off for pc-*-2.0 from 2.1 on; QEMU 2.0 itself "
        "offered GUEST_ANNOUNCE there (the model takes the property's 2.0 default), so a guest that negotiated "
        "it fails the destination's feature check. UNVERIFIED against a QEMU 2.0 binary.",
        "reference §7 row 2_0 (pc_compat_2_0, 5.0 tree hw/i386/pc.c); §10.1 row 2.0 (no bit 21 on 7.2)"),
    KnownIncompatibility(
        "guest-announce-offered-on-pc-2.0", "R13",
        lambda s, d, st: (min(s.release, d.release) == Version(2, 0) < max(s.release, d.release)
                          and s.device == "virtio-net" and s.machine.version == Version(2, 0)
                          and s.machine.family.startswith("pc-")),
        "QEMU 2.0 offers GUEST_ANNOUNCE on pc-*-2.0, and 2.1's pc_compat_2_0 turns it off there: the two releases "
        "realize different host features on the same machine type (the compat entry came one release late). "
        "UNVERIFIED against a QEMU 2.0 binary.",
        "reference §7 row 2_0 (pc_compat_2_0)", lambda v: v.details.get("realized") == "host_features"),
    KnownIncompatibility(
        "broken-to-2.7", "R4/R13",
        lambda s, d, st: min(s.release, d.release) < BROKEN_SINCE <= max(s.release, d.release) and st.broken,
        "virtio/broken (2.8) has no machine-type gate: a device that hit virtio_error sends it, and 2.7 and older "
        "do not know it (-ENOENT).",
        "reference §3 virtio/broken (791b1daf72)", subsections=("virtio/broken",)),
    KnownIncompatibility(
        "balloon-page-poison-misspelt", "*",
        _page_poison_misspelt,
        "QEMU 5.1 to 6.1 name the page-poison subsection 'vitio-balloon-device/page-poison': no loader reads it, "
        "so a balloon whose guest negotiated PAGE_POISON cannot migrate from them at all (Missing section "
        "footer), and 6.2's 'virtio-balloon-device/page-poison' is unknown to them (-ENOENT). Verified on the "
        "5.2, 7.2 and 10.0 binaries.",
        "7483cbbaf82 (5.1); 'virtio-balloon: Fix page-poison subsection name' (6.2)",
        subsections=(balloon.PAGE_POISON_MISSPELT, balloon.PAGE_POISON)),
    KnownIncompatibility(
        "vlans-rewritten-on-load", "R1/R2/R3/R4", _vlans_rewritten,
        "virtio_load sets the features last, and virtio_net_set_features rewrites the VLAN filter table it loaded "
        "(up to 8.1 always, from 8.2 without CTRL_VLAN; 10.1 only when the CTRL_VLAN bit changes): the destination "
        "loses a table that is not what set_features makes of it (virtio_net_reset empties it; reset calls "
        "set_features(0) only in 7.2.18+, 10.0.2+ and 10.1), the guest's VLAN filter among them. The 7.2 binary "
        "empties the open table a 10.0 source sends with CTRL_VLAN.",
        "hw/net/virtio-net.c virtio_net_set_features; 06b636a1e2ad (8.2), 6071d13c6a (10.1), 0caed25cd1",
        _only_vlans_differ),
    KnownIncompatibility(
        "balloon-config-size-4.0", "R13",
        lambda s, d, st: (s.device == "virtio-balloon" and (s.release == Version(4, 0)) != (d.release == Version(4, 0))
                          and s.machine.version != Version(4, 0)),
        "QEMU 4.0 grew virtio-balloon's config space to 16 bytes (free-page-hint and poison) on every machine type; "
        "4.1 made its size depend on the features again, and kept 16 for the 4.0 machine types alone "
        "(qemu-4-0-config-size): 4.0 and any other release realize different config_len on the same older machine "
        "type, and the config bytes differ.",
        "bug-history.md entry 20 ('virtio-balloon: fix QEMU 4.0 config size migration incompatibility', 4.1)",
        lambda v: v.details.get("realized") == "config_len"),
    KnownIncompatibility(
        "mmio-queue-size-11.1", "R13",
        lambda s, d, st: (s.transport == "mmio" and (s.release >= Version(11, 1)) != (d.release >= Version(11, 1))
                          and s.machine.version <= Version(11, 0)),
        "QEMU 11.1 sizes a virtio-mmio device's queues by the device and refuses a larger QueueNum; on the older "
        "virt machine types it keeps the QueueNumMax of 1024 a guest saw by allocating every queue with 1024 "
        "entries (hw_compat_11_0 x-override-queue-size), so 11.1 realizes and saves 1024-entry queues where every "
        "older release has the device's own sizes. Seen on the 11.1 binary (x-query-virtio-queue-status on "
        "virt-7.2, virt-11.0).",
        "hw_compat_11_0 virtio-mmio x-override-queue-size (11.1 binary)",
        lambda v: v.details.get("realized") == "queue_sizes"),
    KnownIncompatibility(
        "ringsize-dropped-11.1", "R13",
        lambda s, d, st: ((s.release >= RINGSIZE_IGNORED_FROM) != (d.release >= RINGSIZE_IGNORED_FROM)
                          and any(q.num != n for q, n in zip(st.queues, st.num_default, strict=False))),
        "QEMU 11.1 no longer sends virtio/ringsize on any machine type: a queue the guest resized (a modern "
        "virtio-pci driver's queue_size, a virtio-mmio QueueNum) is written without it, where 11.0 and older send "
        "it on the same machine type. The loads still succeed (vring.num travels in the queue list). Seen on the "
        "7.2, 10.0 and 11.1 binaries (pc-i440fx-5.2, a modern driver resizing virtio-rng's queue to 4).",
        "models/core.py RINGSIZE_IGNORED_FROM (11.1 binary)",
        lambda v: any("virtio/ringsize" in str(f) for f in v.details.get("fields", ())) or "ringsize" in v.got,
        subsections=("virtio/ringsize",)),
    KnownIncompatibility(
        "disabled-on-4.2-from-5.x", "R4/R13",
        lambda s, d, st: (Version(5, 0) <= s.release < Version(6, 0) and d.release < Version(5, 0)
                          and s.machine.version == Version(4, 2) and st.disabled),
        "QEMU 5.0-5.2 kept use-disabled-flag on for pc-*-4.2 (the compat entry sat in hw_compat_4_1), so a "
        "device whose guest cleared bus mastering sends virtio/disabled, which 4.2 does not know.",
        "reference §3 virtio/disabled, correction 1 (9d7bd0826f; fixed in 6.0)", subsections=("virtio/disabled",)),
    KnownIncompatibility(
        "inflight-element-packed", "R1/R3/R4",
        _inflight_on_packed_host,
        "With packed=on (the host offers RING_PACKED, whatever ring the guest uses), qemu_put_virtqueue_element "
        "writes ndescs before the element and qemu_get_virtqueue_element reads it after: every field of an "
        "in-flight request's element is read 4 bytes early, and the destination exits with 'virtio: unexpected "
        "memory split' (or fails to map it). A QEMU release cannot load its own stream. Seen on the 7.2 binary "
        "(virtio-scsi-pci,packed=on with a WRITE(10) parked by werror=stop).",
        "reference §2.6 packed-ring asymmetry (86044b24e8, 4.2)"),
)


def known_for(v: Violation, src: Config, dst: Config, st: DeviceState) -> KnownIncompatibility | None:
    for k in KNOWN:
        if (k.rule == "*" or v.rule in k.rule.split("/")) and k.applies(src, dst, st) and k.shows(v):
            return k
    return None
