"""virtio_save: the wire tree and the bytes a release writes for a device state, and the state a decoded payload
holds (what the source had)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from harness.wire.virtio import (
    VIRTIO_QUEUE_MAX,
    compiled_payload_layout,
    msix_vectors,
)
from models import core, declared
from models.config import Realized
from models.devices import DEVICES, blk
from models.features import MASK64
from models.rings import vring_align
from models.state import (
    NO_VECTOR,
    CcwState,
    DeviceState,
    MmioState,
    PciState,
    QueueState,
)


def saved_queue_count(state: DeviceState) -> int:
    """virtio_save: the index of the first queue with vring.num == 0."""
    for i, q in enumerate(state.queues):
        if q.num == 0:
            return i
    return len(state.queues)


def _pad(values: Sequence[Any], zero: Any, n: int = VIRTIO_QUEUE_MAX) -> list[Any]:
    """The first entries of a fixed 1024-entry array; FlatArray writes the rest as zeros."""
    return list(values[:n])


def _extra_state(r: Realized, s: DeviceState) -> dict[str, Any]:
    tr = r.config.transport
    if tr == "pci":
        subs = []
        p = s.pci
        known = {x.name: x for x in core.known_transport_subsections(r.release, tr)}
        if "virtio_pci/modern_state" in known and known["virtio_pci/modern_state"].needed.test(r, s) and p is not None:
            gf = (s.guest_features >> 64) & MASK64
            inner = []
            features128 = known.get("virtio_pci/modern_state/features128")
            if features128 is not None and features128.needed.test(r, s):
                inner.append({"name": features128.name, "version_id": 1,
                              "body": {"guest_features_ex": [gf & 0xFFFFFFFF, gf >> 32 & 0xFFFFFFFF]}})
            subs.append({"name": "virtio_pci/modern_state", "version_id": 1, "body": {
                "dfselect": p.dfselect, "gfselect": p.gfselect, "guest_features": list(p.modern_guest_features),
                "vqs": _pad(p.modern_queues, (0,) * 9), "subsections": inner}})
        return {"subsections": subs}
    m = s.mmio or MmioState()
    return {"subsections": [{"name": "virtio_mmio/state", "version_id": 1, "body": {
        "guest_features": list(m.modern_guest_features), "vqs": _pad(m.modern_queues, (0,) * 8)}}]}


def core_entries(r: Realized, s: DeviceState) -> list[dict[str, Any]]:
    nq = len(s.queues)
    bodies: dict[str, Callable[[], dict[str, Any]]] = {
        "virtio/device_endian": lambda: {"device_endian": s.device_endian},
        "virtio/128bit_features": lambda: {"guest_features_ex1": (s.guest_features >> 64) & MASK64},
        "virtio/64bit_features": lambda: {"guest_features": s.guest_features & MASK64},
        "virtio/virtqueues": lambda: {"vqs": _pad([(q.avail, q.used) for q in s.queues], (0, 0))},
        "virtio/ringsize": lambda: {"num_default": _pad(list(s.num_default or r.queue_sizes)[:nq], 0)},
        "virtio/extra_state": lambda: _extra_state(r, s),
        "virtio/packed_virtqueues": lambda: {"vqs": _pad(s.packed, (0, 0, 0, 0, 0))},
    }
    out = []
    for sub in r.registry.known_core_subsections(r.release):
        if sub.is_needed(r, s):
            decl = r.registry.declared(sub.name)  # a schema module's (models/schema.py)
            if decl is not None:
                out.append(declared.wire_entry(decl, r, s))
            else:  # its declared fields (DeviceState's, by name), else its body here
                body = {f.name: f.wire_value(getattr(s, f.name)) for f in sub.fields} if sub.fields else \
                    bodies[sub.name]()
                out.append({"name": sub.name, "version_id": 1, "body": body})
    return declared.extend_entries(r, s, out)


def to_wire(r: Realized, s: DeviceState) -> dict[str, Any]:
    tr = r.config.transport
    if tr == "pci":
        p = s.pci
        if p is None:
            raise ValueError("a virtio-pci device state needs its PCI state")
        vec = msix_vectors(p.config)
        transport: dict[str, Any] = {
            "pci": {"version_id": p.version_id, "config": p.config, "irq_state": list(p.irq_state)},
            "msix_table": p.msix_table if vec else None, "msix_pba": p.msix_pba if vec else None,
            "config_vector": s.config_vector if vec else None}
    elif tr == "mmio":
        m = s.mmio or MmioState()
        transport = {"host_features_sel": m.host_features_sel, "guest_features_sel": m.guest_features_sel,
                     "guest_page_shift": m.guest_page_shift}
    else:
        if s.ccw is None:
            raise ValueError("a virtio-ccw device state needs its ccw transport state")
        transport = s.ccw.tree
    nq = saved_queue_count(s)
    queues = []
    for q in s.queues[:nq]:
        entry: dict[str, Any] = {"num": q.num, "desc": q.desc, "last_avail_idx": q.last_avail_idx}
        if tr == "mmio":
            entry["align"] = q.align
        entry["vector"] = q.vector
        queues.append(entry)
    lo = s.guest_features & 0xFFFFFFFF if s.guest_features_lo_field is None else s.guest_features_lo_field
    device = DEVICES[r.config.device].to_wire(s.device, r, s)
    if "subsections" in device:  # a device vmsd's: its own (as schema modules version them), then those they add
        device["subsections"] = declared.extend_entries(r, s, list(device["subsections"])) + declared.device_wire(r, s)
    device.update(declared.device_values(r, s))  # device vmsd fields of schema modules
    return {
        "transport": transport, "status": s.status, "isr": s.isr, "queue_sel": s.queue_sel, "guest_features_lo": lo,
        "config_len": len(s.config), "config": s.config, "num_queues": nq, "queues": queues,
        "device": device,
        "subsections": core_entries(r, s),
    }


def save_params(r: Realized, s: DeviceState) -> dict[str, Any]:
    """The layout decisions QEMU's save, like its load, takes from the device itself."""
    net = s.device.max_queue_pairs > 1 if r.config.device == "virtio-net" else None
    return {"net_multiqueue": net, "blk_multiqueue": blk.queue_index(r) if r.config.device == "virtio-blk" else None}


def save(r: Realized, s: DeviceState) -> bytes:
    """The payload (the vmsd field "virtio") release r writes for state s."""
    data: bytes = compiled_payload_layout(r.config.transport, r.config.device, r.registry.wire).build(
        to_wire(r, s), **save_params(r, s), schema_fields=declared.on_wire(r, s))
    return data


def section_version(r: Realized) -> int:
    """The version_id release r writes in the device's section header (its outer vmsd's)."""
    return r.registry.versions(r.config.device, r.release).section.version


def last_body(subs: Sequence[Any], name: str) -> Any:
    """A subsection's body; when one is repeated the last wins, as QEMU loads each in turn."""
    return next((x.body for x in reversed(subs) if x.name == name), None)


def state_from_wire(r: Realized, v: Any, rings: Sequence[tuple[int, int]] | None = None) -> DeviceState:
    """The device state a decoded payload holds (what the source had), read as release r saved it."""
    subs = {x.name: x.body for x in v.subsections}  # a repeated one: the last wins, as QEMU loads each in turn
    f64, f128 = subs.get("virtio/64bit_features"), subs.get("virtio/128bit_features")
    features = f64.guest_features if f64 is not None else v.guest_features_lo
    if f128 is not None:
        features |= f128.guest_features_ex1 << 64
    vqs = subs.get("virtio/virtqueues")
    ringsize = subs.get("virtio/ringsize")
    if ringsize is None or r.release >= core.RINGSIZE_IGNORED_FROM:
        # what the device's queues hold: realize's, or the layout the saved queue count shows (a multiqueue
        # virtio-net whose guest did not negotiate MQ holds one pair and the control queue)
        layout = getattr(DEVICES[r.config.device], "num_default_for", None)
        nd = tuple(layout(r, len(v.queues))) if layout is not None else r.queue_sizes
    else:
        nd = tuple(ringsize.num_default[: len(r.queue_sizes)])
    queues = []
    for i, q in enumerate(v.queues):
        align = q.get("align")
        align = 4096 if align is None else align  # mmio migrates it: 0 is a value (no rings then)
        if vqs is not None and i < len(vqs.vqs):
            avail, used = vqs.vqs[i]
        elif q.desc:
            avail = q.desc + 16 * q.num
            used = vring_align(avail + 4 + 2 * q.num, align)
        else:
            avail = used = 0
        ai, ui = rings[i] if rings is not None and i < len(rings) else (0, 0)
        vector = q.get("vector")
        queues.append(QueueState(q.num, q.desc, avail, used, align, q.last_avail_idx,
                                 NO_VECTOR if vector is None else vector, ai, ui))
    queues += [QueueState(0)] * max(len(r.queue_sizes) - len(queues), 0)
    endian = subs.get("virtio/device_endian")
    # the declared fields of the core subsections: what the stream carries, else their reset values
    fields = {f.name: f.state_value(body[f.name]) if (body := subs.get(sub.name)) is not None else f.reset_value()
              for sub in r.registry.core_subsections for f in core.state_fields((sub,))}

    t = v.transport
    pci = mmio = ccw = None
    config_vector = NO_VECTOR
    extra = subs.get("virtio/extra_state")
    if r.config.transport == "pci":
        ms = last_body(extra.subsections, "virtio_pci/modern_state") if extra is not None else None
        pci = PciState(bytes(t.pci.config), tuple(t.pci.irq_state), bytes(t.msix_table or b""),
                       bytes(t.msix_pba or b""), t.pci.version_id,
                       ms.dfselect if ms else 0, ms.gfselect if ms else 0,
                       tuple(ms.guest_features) if ms else (0, 0), tuple(ms.vqs) if ms else ())
        config_vector = NO_VECTOR if t.config_vector is None else t.config_vector
    elif r.config.transport == "mmio":
        st = last_body(extra.subsections, "virtio_mmio/state") if extra is not None else None
        mmio = MmioState(t.host_features_sel, t.guest_features_sel, t.guest_page_shift,
                         tuple(st.guest_features) if st else (0, 0), tuple(st.vqs) if st else ())
    else:
        ccw = CcwState(t, t.tmp.config_vector)
        config_vector = t.tmp.config_vector
    packed = subs.get("virtio/packed_virtqueues")
    lo_field = None if (features & 0xFFFFFFFF) == v.guest_features_lo else v.guest_features_lo
    return DeviceState(
        status=v.status, isr=v.isr, queue_sel=v.queue_sel, guest_features=features, config=bytes(v.config),
        queues=tuple(queues), num_default=tuple(nd), config_vector=config_vector,
        device_endian=endian.device_endian if endian is not None else core.default_endian(r),
        pci=pci, mmio=mmio, ccw=ccw,
        device=DEVICES[r.config.device].from_wire(declared.without_added_fields(r.registry, v.device)),
        packed=tuple(packed.vqs) if packed else (),
        guest_features_lo_field=lo_field, extra=declared.values_from_wire(r, v), **fields)
