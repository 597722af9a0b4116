"""Where something changes for a pair of releases: the machine types at each compat boundary, and the edges of the
terms that a declared needed() or present= names (models/conditions.py). The matrix runs these on every cell, besides
its random draws (strategies/boundaries.py), so that a compat entry or a MachineAtLeast one release off is seen on the
exact machine types it breaks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from models import core
from models.conditions import (
    Compare,
    Condition,
    GuestFeatures,
    HostFeatures,
    MachineAtLeast,
    Property,
    StateField,
    as_condition,
)
from models.config import Config, realize
from models.registry import Registry
from models.releases import FAMILIES, MachineType, Version
from models.reset import reset_state


@dataclass
class Terms:
    """What a condition reads, each term with the values on both sides of its edge."""

    machines: set[Version] = field(default_factory=set)  # MachineAtLeast(v): the first machine version it holds on
    properties: set[str] = field(default_factory=set)
    host_bits: set[int] = field(default_factory=set)  # HostFeature(s): the lowest bit of each range
    guest_bits: set[int] = field(default_factory=set)
    # a state field: the values for which each of its comparisons holds, and those for which it does not
    fields: dict[str, tuple[list[Any], list[Any]]] = field(default_factory=dict)

    def holding(self) -> list[tuple[tuple[str, Any], ...]]:
        """Assignments of the state fields that make their comparisons hold: one per value a field holds at (the
        i-th takes each field's i-th such value, or its last), so that every comparison's edge is reached."""
        n = max((len(h) for h, _ in self.fields.values()), default=0)
        return [tuple(sorted((name, h[min(i, len(h) - 1)]) for name, (h, _) in self.fields.items() if h))
                for i in range(n)]


def _edge(op: str, value: Any) -> tuple[Any, Any]:
    """(a value for which `x op value` holds, one for which it does not), next to `value`."""
    if isinstance(value, bool) or not isinstance(value, int):
        return (value, None) if op in ("==", "<=", ">=") else (None, value)
    return {"==": (value, value + 1), "!=": (value + 1, value), "<": (value - 1, value), "<=": (value, value + 1),
            ">": (value + 1, value), ">=": (value, value - 1)}[op]


def terms(cond: Condition | Any, out: Terms | None = None) -> Terms:
    """The terms of a condition (a plain callable has none a tool can see)."""
    out = Terms() if out is None else out
    c = as_condition(cond)
    if isinstance(c, MachineAtLeast):
        out.machines.add(c.version)
    elif isinstance(c, Property):
        out.properties.add(c.name)
    elif isinstance(c, HostFeatures):
        out.host_bits.add(c.lo)
    elif isinstance(c, GuestFeatures):
        out.guest_bits.add(c.lo)
    elif isinstance(c, StateField):
        _add(out, c.name, 1, 0)
    elif isinstance(c, Compare) and isinstance(c.term, StateField) and not isinstance(c.value, StateField):
        other = c.value if not isinstance(c.value, Condition) else None
        if other is not None:
            _add(out, c.term.name, *_edge(c.op, other))
        if isinstance(c.term.settable, Condition):
            terms(c.term.settable, out)
        if isinstance(c.value, Condition):
            terms(c.value, out)
        return out
    for p in c.parts():
        terms(p, out)
    if isinstance(c, StateField) and c.settable is not None:
        terms(c.settable, out)
    return out


def _add(out: Terms, name: str, holds: Any, fails: Any) -> None:
    h, f = out.fields.setdefault(name, ([], []))
    if holds is not None and holds not in h:
        h.append(holds)
    if fails is not None and fails not in f:
        f.append(fails)


def declared_conditions(registry: Registry, device: str, release: Version) -> Iterator[Condition]:
    """The needed() of every schema subsection `release` knows for `device`, and every field test (present=)."""
    for sub in registry.known(release, device):
        if sub.needed is not None:
            yield sub.condition()
        yield from (as_condition(f.present) for f in sub.fields if f.present is not None)
    for f in registry.device_fields(device, release):
        if f.present is not None:
            yield as_condition(f.present)


def declared_terms(registry: Registry, device: str, src: Version, dst: Version) -> Terms:
    """The terms of the conditions either release declares for the device."""
    out = Terms()
    for release in dict.fromkeys((src, dst)):
        for cond in declared_conditions(registry, device, release):
            terms(cond, out)
    return out


def common_machines(registry: Registry, src: Version, dst: Version, transport: str) -> list[MachineType]:
    dst_names = {m.name for m in registry.machine_types(dst, transport)}
    return [m for m in registry.machine_types(src, transport) if m.name in dst_names]


def condition_properties(registry: Registry, device: str) -> frozenset[str]:
    """The properties any condition reads for the device: the core, transport and device subsections' needed(), the
    core fields a device derives, the schema modules' needed() and present=."""
    conds: list[Any] = [rule.test for sub in registry.core_subsections for rule in sub.needed]
    conds += [f.derived for sub in registry.core_subsections for f in sub.fields if f.derived is not None]
    conds += [t.needed.test for t in core.TRANSPORT_SUBSECTIONS]
    conds += [rule.test for sub in getattr(registry.device(device).code, "SUBSECTIONS", ()) for rule in sub.needed]
    conds += [sub.needed for sub in registry.subsections if sub.needed is not None]
    conds += [f.present for sub in registry.subsections for f in sub.fields if f.present is not None]
    conds += [f.present for d in registry.device_versions for f in d.fields if f.present is not None]
    return frozenset(p for c in conds if isinstance(c, Condition) for p in c.properties())


def seen(c: Config, registry: Registry, props: frozenset[str]) -> tuple[Any, ...]:
    """What an example on configuration `c` sees of it: what realize derives (host features, queues, config length,
    vectors, modern, legacy, the migration globals), the properties that conditions read, and the state after reset
    (the PCI config space and the transport's own state that the machine type's properties shape)."""
    r = realize(c, registry)
    s = reset_state(r)
    return (r.host_features, r.queue_sizes, r.config_len, r.vectors, r.modern, r.legacy, r.express,
            r.big_endian_target, r.send_footer, r.send_configuration,
            tuple(sorted((k, repr(r.props.get(k))) for k in props)), repr(replace(s, device=None)), repr(s.device))


def boundary_machines(registry: Registry, src: Version, dst: Version, transport: str, device: str,
                      extra_versions: set[Version] | frozenset[Version] = frozenset(),
                      config_of: Callable[[Version, MachineType], Config] | None = None
                      ) -> list[tuple[MachineType, str]]:
    """The machine types where something changes for the pair, each with why: in each family, both sides of every
    change in what an example on the machine type sees (`seen`: its compat entries on either release, through the
    configuration `config_of` gives, by default the device alone), the newest machine type both releases have, both
    sides of each version in `extra_versions` (a MachineAtLeast's), and the newest one of each downstream line."""
    common = common_machines(registry, src, dst, transport)
    releases = tuple(dict.fromkeys((src, dst)))
    out: dict[str, tuple[MachineType, str]] = {}
    props = condition_properties(registry, device)
    make = config_of or (lambda release, m: Config(release, m, device, transport))

    def add(m: MachineType, why: str) -> None:
        out.setdefault(m.name, (m, why))

    for family in (f for f, (tr, _) in FAMILIES.items() if tr == transport):
        mine = sorted((m for m in common if m.family == family and not m.line), key=lambda m: m.version)
        if not mine:
            continue
        add(mine[-1], "the newest machine type both releases have")
        sigs = [tuple(seen(make(r, m), registry, props) for r in releases) for m in mine]
        for i in range(1, len(mine)):
            if sigs[i] != sigs[i - 1]:
                add(mine[i - 1], f"a compat boundary: {mine[i - 1]} keeps what {mine[i]} changes")
                add(mine[i], f"a compat boundary: the first machine type past {mine[i - 1]}")
        for v in sorted(extra_versions):
            below = [m for m in mine if m.version < v]
            at = [m for m in mine if m.version >= v]
            if below:
                add(below[-1], f"the last machine type before a declared machine type >= {v}")
            if at:
                add(at[0], f"the first machine type of a declared machine type >= {v}")
    for d in registry.downstream:
        line = sorted((m for m in common if m.line == d.line and m.family == d.family),
                      key=lambda m: m.downstream or m.version)
        if line:
            add(line[-1], f"the newest {d.family}-{d.line} machine type both releases have")
    return sorted(out.values(), key=lambda x: (x[0].family, x[0].line, x[0].version, x[0].downstream or x[0].version))

