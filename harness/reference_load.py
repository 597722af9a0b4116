"""R9's oracle: the state a destination holds after virtio_load, computed from the saved stream alone, step by
step in QEMU's order, without the model's load code (models/load.py) or its trace.

The steps, as QEMU's virtio_load does them (read in /work/qemu-src: qemu-5.2.0 hw/virtio/virtio.c:3000-3205,
qemu-7.2.0 hw/virtio/virtio.c:3508-3720, qemu-10.0.2 hw/virtio/virtio.c:3206-3400, qemu-10.2.2
hw/virtio/virtio.c:3298-3470):
  1. device_endian := UNKNOWN ("poison the endianness ... before subsections have been loaded")
  3. status, isr, queue_sel; the 32-bit features become vdev->guest_features (10.2: guest_features_ex = {lo, 0})
  4. config: MIN(config_len, vdev->config_len) bytes are loaded, the excess skipped
  7. each queue: vring.num, vring.align (variable-alignment transports), vring.desc, last_avail_idx, vector
  9. the device's own data (it sees only the 32-bit features)
 10. the core subsections, in stream order, each overwriting what it carries (virtio/64bit_features the whole
     64-bit guest_features, virtio/128bit_features word 1, virtio/virtqueues every queue's avail and used, ...)
 11. still UNKNOWN: virtio_default_endian(), the target's
 12. virtio_set_features_nocheck(): bad = features & ~host_features (the DESTINATION's), kept = features & host;
     up to 10.1 the 64-bit value only when the destination's virtio_64bit_features_needed() (host bits >= 32),
     else the 32-bit field; from 10.2 the whole guest_features_ex. bad fails the load ("Features ... unsupported")
 14. each queue with a desc: with VERSION_1 negotiated (the features of step 12) the addresses stay as
     virtio/virtqueues loaded them; without it virtio_queue_update_rings() derives avail = desc + 16 * num and
     used = align_up(avail + 4 + 2 * num, align) (qemu-10.2.2 hw/virtio/virtio.c:314-327), a no-op when align is
     0 (a queue virtio_add_queue never set up; it sets align = VIRTIO_PCI_VRING_ALIGN, hw/virtio/virtio.c:2550)

What it leaves alone: the ring checks' verdicts (they read guest RAM), the device's own post_load (device data is
not judged here), a multiqueue virtio-net's queue sizes and the legacy rings derived from them (its set_features
lays the queues out again), num_default past 10.2 (11.1 neither sends nor loads virtio/ringsize, by the model; no
11.x source was read)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.errors import StreamError
from harness.wire.payload import decode_payload
from models.config import Realized
from models.releases import Version

ENDIAN_UNKNOWN, ENDIAN_LITTLE, ENDIAN_BIG = 0, 1, 2  # enum virtio_device_endian
NO_VECTOR = 0xFFFF
VERSION_1 = 32
MASK32, MASK64 = (1 << 32) - 1, (1 << 64) - 1
VRING_ALIGN = 4096  # VIRTIO_PCI_VRING_ALIGN, what virtio_add_queue gives a queue
FEATURES_EX_FROM = Version(10, 2)  # virtio_load checks guest_features_ex whole (qemu-10.2.2 virtio.c:3418-3429)
RINGSIZE_LOADED = (Version(2, 5), Version(10, 2))  # vmstate_virtio_ringsize loads vring.num_default (46c5d0823d;
# qemu-10.2.2 hw/virtio/virtio.c:2860-2880, the same in 5.2.0, 7.2.0 and 10.0.2)
SUBSECTIONS_FROM = Version(2, 4)  # 64-bit features and their check after the subsections (019a3edbb2)


@dataclass(frozen=True)
class Reference:
    """What the destination holds after virtio_load, as far as the stream decides it: `refused` is the feature
    step's refusal (None: it lets the features through), `fields` the loaded values by name."""

    refused: str | None
    fields: dict[str, Any]
    queues: tuple[dict[str, Any], ...]
    broken_sent: bool


def _sent(subsections: Any) -> dict[str, Any]:
    """Each core subsection's body: QEMU loads them in stream order, so a repeated one leaves its last."""
    return {s.name: s.body for s in subsections}


def _features(dst: Realized, lo: int, subs: dict[str, Any]) -> tuple[int, str | None]:
    """Steps 3, 10 and 12: what guest_features holds after the subsections, then checked and masked against the
    destination's host features."""
    host = dst.host_features
    features = lo  # step 3
    if dst.release >= FEATURES_EX_FROM:
        f64, f128 = subs.get("virtio/64bit_features"), subs.get("virtio/128bit_features")
        if f64 is not None:
            features = (features & ~MASK64) | f64.guest_features
        if f128 is not None:
            features = (features & MASK64) | f128.guest_features_ex1 << 64
    elif dst.release >= SUBSECTIONS_FROM and host >> 32 & MASK32:
        f64 = subs.get("virtio/64bit_features")
        if f64 is not None:
            features = f64.guest_features & MASK64
    # else: virtio_64bit_features_needed() is false on the destination; the 32-bit field alone is checked
    bad = features & ~host
    kept = features & host
    return kept, (f"features {features:#x} outside the destination's host features {host:#x}" if bad else None)


def reference_load(dst: Realized, payload: Any) -> Reference:
    """The reference over a payload decoded as the destination reads it."""
    v = payload
    subs = _sent(v.subsections)
    features, refused = _features(dst, v.guest_features_lo, subs)
    endian_body = subs.get("virtio/device_endian")
    endian = endian_body.device_endian if endian_body is not None else ENDIAN_UNKNOWN
    if endian == ENDIAN_UNKNOWN:  # step 11
        endian = ENDIAN_BIG if dst.big_endian_target else ENDIAN_LITTLE
    n = min(v.config_len, dst.config_len)
    t = v.transport
    if dst.config.transport == "pci":
        config_vector = NO_VECTOR if t.config_vector is None else t.config_vector
    elif dst.config.transport == "ccw":
        config_vector = t.tmp.config_vector
    else:
        config_vector = NO_VECTOR
    fields: dict[str, Any] = {
        "status": v.status, "isr": v.isr, "queue_sel": v.queue_sel, "guest_features": features,
        "device_endian": endian, "config": bytes(v.config[:n]), "config_vector": config_vector,
        # the flags a destination resets to false and its subsection sets
        **{name: bool(getattr(body, name)) if (body := subs.get(f"virtio/{name}")) is not None else False
           for name in ("started", "disabled")},
    }
    # a multiqueue virtio-net lays its queues out again in set_features (one pair without MQ, every pair with it,
    # the control queue re-added: models/devices/net.py loaded_queues): the device's doing, not judged here
    relaid = dst.config.device == "virtio-net" and dst.config.netdev.queues > 1
    if RINGSIZE_LOADED[0] <= dst.release <= RINGSIZE_LOADED[1] and not relaid:
        # every queue's num_default from the subsection, else what virtio_add_queue gave it at realize
        ringsize = subs.get("virtio/ringsize")
        nd = dst.queue_sizes if ringsize is None else ringsize.num_default[: len(dst.queue_sizes)]
        fields["num_default"] = tuple(nd)
    vqs = subs.get("virtio/virtqueues")
    modern = bool(features >> VERSION_1 & 1)
    mmio = dst.config.transport == "mmio"
    queues = []
    for i, q in enumerate(v.queues):
        align = q.get("align") if mmio else (VRING_ALIGN if i < len(dst.queue_sizes) else None)
        # virtio/virtqueues loads every queue's addresses (step 10); without it they keep reset's 0
        avail, used = (vqs.vqs[i][0], vqs.vqs[i][1]) if vqs is not None and i < len(vqs.vqs) else (0, 0)
        if q.desc and not modern and align is not None and q.num and align:  # step 14, legacy
            avail = q.desc + 16 * q.num
            used = (avail + 4 + 2 * q.num + align - 1) & ~(align - 1)
        vector = q.get("vector")
        queues.append({"num": None if relaid else q.num, "desc": q.desc, "last_avail_idx": q.last_avail_idx,
                       "vector": NO_VECTOR if vector is None else vector, "align": align if mmio else None,
                       # a queue past the ones the device added: pre_load_queues may add it (9.2 net), not judged
                       "rings": (avail, used) if q.desc and align is not None and not relaid else None})
    broken = subs.get("virtio/broken")
    return Reference(refused, fields, tuple(queues), bool(broken is not None and broken.broken))


def local_layout(dst: Realized) -> dict[str, Any]:
    """The layout decisions the destination's loader takes from its own device: net's queue-pair fields
    (virtio_net_max_queue_pairs_gt_1) and blk's queue index (30d8bf6d17, 2.7: more than one queue)."""
    if dst.config.device == "virtio-net":
        return {"net_multiqueue": max(dst.config.netdev.queues, 1) > 1}
    if dst.config.device == "virtio-blk":
        return {"blk_multiqueue": bool(dst.release >= Version(2, 7) and len(dst.queue_sizes) > 1)}
    return {}


def read_alike(local: dict[str, Any], v: Any) -> bool:
    """Whether a payload decoded with the decisions inferred from the stream itself (harness/wire/virtio.py)
    reads as the destination reads it."""
    inferred = {"net_multiqueue": v.num_queues > 3, "blk_multiqueue": v.num_queues > 1}
    return all(inferred[k] == want for k, want in local.items())


def decode_as_destination(dst: Realized, data: bytes, schema_fields: Any, decoded: Any = None) -> Any | None:
    """The payload as the destination's loader reads it (`decoded`: the same bytes decoded with the decisions
    inferred from the stream, used when they are the destination's). None when it does not decode: the
    destination fails on it, which the model's verdict shows."""
    local = local_layout(dst)
    if decoded is not None and read_alike(local, decoded):
        return decoded
    try:
        return decode_payload(data, dst.config.transport, dst.device.section, extras=dst.registry.wire,
                              schema_fields=schema_fields, **local)
    except StreamError:
        return None


def differences(ref: Reference, loaded: Any) -> dict[str, tuple[Any, Any]]:
    """Where the model's loaded state differs from the reference: {field: (reference, model)}."""
    out: dict[str, tuple[Any, Any]] = {}
    for name, want in ref.fields.items():
        got = getattr(loaded, name)
        if name == "status":  # virtio_error on a modern device adds NEEDS_RESET (a ring check, not judged here)
            want, got = want & ~0x40, got & ~0x40
        elif name == "config":
            got = bytes(got[: len(want)])
        elif name == "num_default":
            got = tuple(got)
        if got != want:
            out[name] = (want, got)
    if ref.broken_sent and not loaded.broken:
        out["broken"] = (True, False)
    for i, q in enumerate(ref.queues):
        mine = loaded.queues[i] if i < len(loaded.queues) else None
        if mine is None:
            out[f"queues[{i}]"] = ("present", None)
            continue
        for name, want in q.items():
            if want is None:
                continue
            got = (mine.avail, mine.used) if name == "rings" else getattr(mine, name)
            if got != want:
                out[f"queues[{i}].{name}"] = (want, got)
    return out
