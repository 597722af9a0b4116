"""What "state preserved" means for R1/R3/R4 (DESIGN.md, the projection): every field of the device state, of its
queues and of its transport's state is compared as the destination holds it, except the ones DROPPED names, each
with why. The tables below cover every dataclass field of models/state.py (checked at import): a field added to the
state is compared or dropped on purpose, never forgotten."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from models import core
from models import features as F
from models.config import Realized
from models.state import DeviceState, MmioState, NetState, PciState, QueueState

# what the projection leaves out, and why (a field of the state: "name"; of each queue: "queues[].name"; of a
# transport's state: "pci.name", "mmio.name")
DROPPED: Mapping[str, str] = {
    "guest_features_lo_field": "the 32-bit field where a hostile stream makes it differ from guest_features; the "
                               "load folds it into guest_features, which is compared (R8 judges the fold)",
    "extra": "schema modules' fields, compared by name where the stream carried them (rules._declared_diff)",
    "queues[].avail_idx": "guest RAM, not the section: the ring checks read it (R10)",
    "queues[].used_idx": "guest RAM, not the section: the ring checks read it (R10)",
}


def _rows(rows: Iterable[tuple[int, ...]]) -> tuple[tuple[int, ...], ...]:
    """A 1024-entry per-queue array as far as it holds anything: the wire pads it with zero rows, a drawn state
    holds the device's queues only."""
    out = list(rows)
    while out and not any(out[-1]):
        out.pop()
    return tuple(out)


def _plain(x: Any) -> Any:
    """A decoded tree as nested tuples, equal where construct's Container equality holds (its "_" keys left out):
    compared at C speed (Container's own equality is a Python walk, a third of an example's time on ccw)."""
    if isinstance(x, dict):
        return tuple((k, _plain(v)) for k, v in sorted(x.items()) if not (isinstance(k, str) and k.startswith("_")))
    if isinstance(x, list | tuple):
        return tuple(_plain(v) for v in x)
    return x


def sent_subsections(decoded: Any) -> frozenset[str]:
    """The core subsections a decoded payload carries, and the transport's inside virtio/extra_state."""
    names = {x.name for x in decoded.subsections}
    for extra in (x.body for x in decoded.subsections if x.name == "virtio/extra_state"):
        for x in extra.subsections:
            names.add(x.name)
            names.update(y.name for y in getattr(x.body, "subsections", None) or ())
    return frozenset(names)


def device_projection(dev: Any, features: int) -> Any:
    """Device data as far as it migrates: virtio-net sends tx_waiting of the active queue pairs only,
    and curr_guest_offloads only when CTRL_GUEST_OFFLOADS was negotiated (else post_load derives it)."""
    if isinstance(dev, NetState):
        offloads = dev.curr_guest_offloads if F.has(features, F.NET_CTRL_GUEST_OFFLOADS) else -1
        return replace(dev, tx_waiting=dev.tx_waiting[: max(dev.curr_queue_pairs, 1)], curr_guest_offloads=offloads)
    return dev


class _Pair:
    """The pair a projection is taken for, and what the source's stream carried."""

    def __init__(self, src: Realized, dst: Realized, sent: frozenset[str]) -> None:
        self.src, self.dst, self.sent = src, dst, sent


Project = Callable[[_Pair, DeviceState], Any]


def _queues(p: _Pair, s: DeviceState) -> list[tuple[Any, ...]]:
    modern = F.has(s.guest_features & p.dst.host_features, F.VERSION_1)
    out = []
    for q in s.queues:
        if q.num == 0:  # virtio_save stops at the first queue without a ring: none after it is migrated
            break
        out.append((q.num, q.desc, q.last_avail_idx,
                    # legacy: the destination computes the rings from desc (virtio_queue_update_rings)
                    (q.avail, q.used) if modern and q.desc else None,
                    q.vector if p.dst.vectors else None,  # only a transport with vectors migrates them
                    q.align if p.dst.config.transport == "mmio" else None))  # only virtio-mmio migrates align
    return out


def _declared(p: _Pair, s: DeviceState) -> dict[str, Any]:
    """The core subsections' declared fields (models/core.py), each from its declaration: a value of its own
    (virtio/device_endian, broken, started, disabled) as it is (where its subsection is not sent, each side's reset
    value: R5 holds the source to needed(), R7 the destination's endianness); a per-queue array over the saved
    queues, where the stream carried it and the destination loads it (virtio/ringsize, packed_virtqueues: without
    them each side keeps its own, which R13 holds alike). Parts of other fields (the feature words, each queue's
    ring addresses) are compared with the field they are part of."""
    out: dict[str, Any] = {}
    n = len(_queues(p, s))
    for sub in p.dst.registry.core_subsections:
        for f in core.state_fields((sub,)):
            if f.plain:
                out[f.name] = getattr(s, f.name)
            elif f.count and f.attribute != "queues":
                loaded = sub.name in p.sent and (f.loaded_until is None or p.dst.release < f.loaded_until)
                values = tuple((getattr(s, f.attribute) or f.initial(p.src, s))[:n])
                zero = (0,) * len(f.rows) if f.rows else 0  # the wire's rows past the state's
                out[f.attribute] = values + (zero,) * (n - len(values)) if loaded else None
    return out


def _transport(part: str) -> Project:
    """The transport's state (pci, mmio): the fields its config carries always; those of virtio/extra_state's
    subsections (models/core.py) where the stream carried them (without them a destination keeps its reset
    registers: QEMU's own loss on machine types without migrate-extra, where modern is off by default)."""

    def project(p: _Pair, s: DeviceState) -> Any:
        x = getattr(s, part)
        if x is None:
            return None
        out: dict[str, Any] = {name: getattr(x, name) for name in TRANSPORT_CONFIG[part]}
        for sub in core.known_transport_subsections(p.dst.release, p.dst.config.transport):
            for f in sub.fields:
                if f.attribute.startswith(part + "."):
                    name = f.attribute.split(".", 1)[1]
                    out[name] = (_rows(getattr(x, name)) if f.rows else getattr(x, name)) if sub.name in p.sent \
                        else None
        return out

    return project


# what the transports' load_config reads, always sent
TRANSPORT_CONFIG = {"pci": ("config", "irq_state", "msix_table", "msix_pba", "version_id"),
                    "mmio": ("host_features_sel", "guest_features_sel", "guest_page_shift")}


# each field of DeviceState that is compared, and how
COMPARED: Mapping[str, Project] = {
    "status": lambda p, s: s.status,
    "isr": lambda p, s: s.isr,
    "queue_sel": lambda p, s: s.queue_sel,
    # masked by the destination's host features (R8 judges the rest)
    "guest_features": lambda p, s: s.guest_features & p.dst.host_features,
    # over the shorter length where the releases' config lengths differ (2.1's tolerance)
    "config": lambda p, s: s.config[: min(len(s.config), p.dst.config_len, p.src.config_len)],
    "queues": _queues,
    # only a transport with vectors migrates it (ccw always has one)
    "config_vector": lambda p, s: s.config_vector if p.dst.vectors or p.dst.config.transport == "ccw" else None,
    "pci": _transport("pci"),
    "mmio": _transport("mmio"),
    "ccw": lambda p, s: None if s.ccw is None else (_plain(s.ccw.tree), s.ccw.config_vector),
    "device": lambda p, s: device_projection(s.device, s.guest_features & p.dst.host_features),
}


def _check_coverage() -> None:
    """Every field of the state is compared or dropped with a reason (a new field must be decided on)."""
    covered = {*COMPARED, *DROPPED} | {f.attribute for f in core.state_fields(core.CORE_SUBSECTIONS)}
    tables: list[tuple[str, Any, set[str]]] = [
        ("", DeviceState, covered),
        ("queues[].", QueueState, {"num", "desc", "last_avail_idx", "avail", "used", "vector", "align",
                                   *(k.removeprefix("queues[].") for k in DROPPED)}),
        *((f"{part}.", cls, {*TRANSPORT_CONFIG[part], *(f.attribute.split(".", 1)[1] for sub in
                                                         core.TRANSPORT_SUBSECTIONS for f in sub.fields
                                                         if f.attribute.startswith(part + "."))})
          for part, cls in (("pci", PciState), ("mmio", MmioState))),
    ]
    for prefix, cls, names in tables:
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in names]
        if missing:
            raise AssertionError(f"harness/projection.py neither compares nor drops {prefix}{', '.join(missing)}")


_check_coverage()


def projection(src: Realized, dst: Realized, s: DeviceState, sent: frozenset[str] = frozenset()
               ) -> dict[str, Any]:
    """State s as far as the pair migrates it; `sent`: the subsections the source's stream carried
    (sent_subsections)."""
    p = _Pair(src, dst, sent)
    return {**{name: f(p, s) for name, f in COMPARED.items()}, **_declared(p, s)}
