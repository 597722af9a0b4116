"""virtio_save: the wire tree and the bytes a release writes for a device state, and the state a decoded payload
holds (what the source had)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.wire.virtio import (
    VIRTIO_QUEUE_MAX,
    compiled_payload_layout,
    msix_vectors,
)
from models import core, declared
from models.config import Realized
from models.declarations import Field
from models.devices import blk
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
    """virtio/extra_state: the transport's subsections (models/core.py), nested ones in their parent's list."""
    known = core.known_transport_subsections(r.release, r.config.transport)

    def entries(parent: str) -> list[dict[str, Any]]:
        out = []
        for x in known:
            if x.parent == parent and x.needed.test(r, s):
                body = {f.name: field_value(f, r, s) for f in x.fields}
                if x.name in core.EXTRA_STATE_PARENTS:  # its layout has a list (empty where r knows none)
                    body["subsections"] = entries(x.name)
                out.append({"name": x.name, "version_id": 1, "body": body})
        return out

    return {"subsections": entries(f"virtio_{r.config.transport}")}


def _attribute(s: DeviceState, path: str) -> Any:
    """The state's value at "guest_features" or "pci.dfselect" (None where its transport state is not there)."""
    value: Any = s
    for part in path.split("."):
        value = getattr(value, part) if value is not None else None
    return value


def field_value(f: Field, r: Realized, s: DeviceState) -> Any:
    """A core subsection's declared field as the body takes it, from the state attribute it holds (models/core.py):
    each queue's row, the bits of a feature word, a per-queue array (FlatArray writes zero rows after it)."""
    if f.attribute == "queues":  # a hostile state may hold more queues than the array's rows
        return [tuple(getattr(q, x.name) for x in f.rows) for q in s.queues[: f.count]]
    value = _attribute(s, f.attribute)
    if f.shift is not None:  # a word of a wider value, or an array of them
        width = f.range[1].bit_length()
        words = [(value >> (f.shift + k * width)) & f.range[1] for k in range(max(f.count, 1))]
        return words if f.count else words[0]
    if value is None:  # a transport state the device state does not hold: its reset values
        value = f.initial(r, s)
    if f.count:
        return list(value or f.initial(r, s))[: f.count]
    return f.wire_value(value)


def core_entries(r: Realized, s: DeviceState) -> list[dict[str, Any]]:
    out = []
    for sub in r.registry.known_core_subsections(r.release):
        if sub.is_needed(r, s):
            decl = r.registry.declared(sub.name)  # a schema module's (models/schema.py)
            if decl is not None:
                out.append(declared.wire_entry(decl, r, s))
            else:  # its declared fields, else (virtio/extra_state) the transport's
                body = {f.name: field_value(f, r, s) for f in sub.fields} if sub.fields else _extra_state(r, s)
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
    device = r.device.code.to_wire(s.device, r, s)
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
    data: bytes = compiled_payload_layout(r.config.transport, r.device.section, r.registry.wire).build(
        to_wire(r, s), **save_params(r, s), schema_fields=declared.on_wire(r, s))
    return data


def section_version(r: Realized) -> int:
    """The version_id release r writes in the device's section header (its outer vmsd's)."""
    return r.registry.versions(r.config.device, r.release).section.version


def last_body(subs: Sequence[Any], name: str) -> Any:
    """A subsection's body; when one is repeated the last wins, as QEMU loads each in turn."""
    return next((x.body for x in reversed(subs) if x.name == name), None)


def _core_fields(r: Realized, subs: dict[str, Any], features: int
                 ) -> tuple[dict[str, Any], dict[str, list[Any]], int]:
    """What the core subsections' declared fields (models/core.py) set, from the bodies a payload carries, else
    their values after reset: the DeviceState attributes, each queue's attributes (by name, a column of values),
    and the guest features from the 32-bit field on (each feature word where it is sent)."""
    values: dict[str, Any] = {}
    rows: dict[str, list[Any]] = {}
    for sub in r.registry.core_subsections:
        body = subs.get(sub.name)
        for f in core.state_fields((sub,)):
            sent = body is not None and (f.loaded_until is None or r.release < f.loaded_until)
            value: Any = body[f.name] if sent and body is not None else None
            if f.attribute == "queues":
                if sent:
                    rows.update({x.name: [row[k] for row in value] for k, x in enumerate(f.rows)})
            elif f.shift is not None:
                if sent:
                    mask = f.range[1] << f.shift
                    features = features & ~mask | value << f.shift
            elif f.count:
                if sent and isinstance(f.reset, core.QueueSizes):  # one per queue realize added (num_default)
                    value = value[: len(r.queue_sizes)]
                values[f.attribute] = tuple(value) if sent else f.initial(r, DeviceState())
            else:
                values[f.attribute] = f.state_value(value) if sent else f.initial(r, DeviceState())
    return values, rows, features


def _transport_fields(r: Realized, extra: Any) -> dict[str, Any]:
    """The transport state's fields that virtio/extra_state's subsections carry (models/core.py), else their reset
    values; a repeated subsection: the last wins. Parts of the device's own fields (the feature words past 64) are
    the transport's copy: the device's come from the core subsections."""
    bodies: dict[str, Any] = {}
    stack = [list(extra.subsections)] if extra is not None else []
    while stack:
        for x in stack.pop(0):
            bodies[x.name] = x.body
            if isinstance(x.body, dict) and x.body.get("subsections"):
                stack.append(list(x.body["subsections"]))
    out: dict[str, Any] = {}
    for sub in core.known_transport_subsections(r.release, r.config.transport):
        body = bodies.get(sub.name)
        for f in sub.fields:
            if f.shift is None:
                value = body[f.name] if body is not None else f.initial(r, DeviceState())
                out[f.attribute.split(".", 1)[1]] = tuple(value) if f.count else value
    return out


def state_from_wire(r: Realized, v: Any, rings: Sequence[tuple[int, int]] | None = None) -> DeviceState:
    """The device state a decoded payload holds (what the source had), read as release r saved it."""
    subs = {x.name: x.body for x in v.subsections}  # a repeated one: the last wins, as QEMU loads each in turn
    values, rows, features = _core_fields(r, subs, v.guest_features_lo)
    layout = getattr(r.device.code, "num_default_for", None)
    if layout is not None and (subs.get("virtio/ringsize") is None or r.release >= core.RINGSIZE_IGNORED_FROM):
        # what the device's queues hold where no loaded ringsize says: the layout the saved queue count shows (a
        # multiqueue virtio-net whose guest did not negotiate MQ holds one pair and the control queue)
        values["num_default"] = tuple(layout(r, len(v.queues)))
    queues = []
    for i, q in enumerate(v.queues):
        align = q.get("align")
        align = 4096 if align is None else align  # mmio migrates it: 0 is a value (no rings then)
        if q.desc:  # virtio_queue_update_rings, where virtio/virtqueues does not say
            avail = q.desc + 16 * q.num
            used = vring_align(avail + 4 + 2 * q.num, align)
        else:
            avail = used = 0
        ring = {k: col[i] for k, col in rows.items() if i < len(col)}
        ai, ui = rings[i] if rings is not None and i < len(rings) else (0, 0)
        vector = q.get("vector")
        queues.append(QueueState(q.num, q.desc, ring.get("avail", avail), ring.get("used", used), align,
                                 q.last_avail_idx, NO_VECTOR if vector is None else vector, ai, ui))
    queues += [QueueState(0)] * max(len(r.queue_sizes) - len(queues), 0)

    t = v.transport
    pci = mmio = ccw = None
    config_vector = NO_VECTOR
    extra = _transport_fields(r, subs.get("virtio/extra_state"))
    if r.config.transport == "pci":
        pci = PciState(bytes(t.pci.config), tuple(t.pci.irq_state), bytes(t.msix_table or b""),
                       bytes(t.msix_pba or b""), t.pci.version_id, **extra)
        config_vector = NO_VECTOR if t.config_vector is None else t.config_vector
    elif r.config.transport == "mmio":
        mmio = MmioState(t.host_features_sel, t.guest_features_sel, t.guest_page_shift, **extra)
    else:
        ccw = CcwState(t, t.tmp.config_vector)
        config_vector = t.tmp.config_vector
    lo_field = None if (features & 0xFFFFFFFF) == v.guest_features_lo else v.guest_features_lo
    return DeviceState(
        status=v.status, isr=v.isr, queue_sel=v.queue_sel, guest_features=features, config=bytes(v.config),
        queues=tuple(queues), config_vector=config_vector, pci=pci, mmio=mmio, ccw=ccw,
        device=r.device.code.from_wire(declared.without_added_fields(r.registry, v.device)),
        guest_features_lo_field=lo_field, extra=declared.values_from_wire(r, v), **values)
