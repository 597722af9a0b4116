"""diff's machine types and static conditions: the machine types two releases share, and what a condition's
static() knows of a sender's configuration on one of them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from harness.errors import SchemaError
from models.conditions import Condition, Static
from models.config import realize
from models.configuration import Derived
from models.registry import BASE, Registry
from models.releases import MachineType, Version


def common_machines(a: Version, b: Version, transport: str, registry: Registry = BASE) -> list[MachineType]:
    names = {m.name for m in registry.machine_types(b, transport)}
    return [m for m in registry.machine_types(a, transport) if m.name in names]


def machine_ranges(machines: Iterable[MachineType | str], registry: Registry = BASE) -> str:
    """pc-i440fx-2.6..10.2 (27), pc-q35-..., compactly."""
    groups: dict[str, list[MachineType]] = {}
    for m in machines:
        mt = registry.machine(m) if isinstance(m, str) else m
        key = f"{mt.family}-{mt.line}" if mt.line else mt.family
        groups.setdefault(key, []).append(mt)
    parts = []
    for key, ms in groups.items():
        if ms[0].line:  # a downstream line: few, and named unlike upstream ones
            parts.append(", ".join(sorted({m.name for m in ms})))
            continue
        vs = sorted({m.version for m in ms})
        parts.append(f"{key}-{vs[0]}" if len(vs) == 1 else f"{key}-{vs[0]}..{vs[-1]} ({len(vs)})")
    return ", ".join(parts)


def _varied(device: str) -> frozenset[str]:
    """Properties the matrix (a user, in the field) sets: they decide nothing statically."""
    from strategies.configs import DRAWN_PROPS

    return frozenset(DRAWN_PROPS.get(device, {}))


# the realizations of config_variants, per registry, sender, the drawn properties both releases know, device,
# transport, family and property values (machine types that agree on them realize alike): a few thousand at most
_VARIANTS: dict[Any, tuple[Derived, ...]] = {}


def static_context(registry: Registry, sender: Version, other: Version, machine: MachineType, device: str,
                   transport: str) -> Static:
    """What a condition's static() knows of the sender's configuration on `machine` in a migration to `other`:
    the properties' values, and what realize derives from every configuration the matrix draws there
    (strategies.configs.config_variants), so that a condition over host features or modern decides."""
    from strategies.configs import config_variants, drawn_props

    ctx = registry.static(sender, machine, device, transport, _varied(device))
    key = (registry, sender, drawn_props(sender, other, transport, device, registry), device, transport,
           machine.family, tuple(sorted((k, repr(v)) for k, v in ctx.props.items())))
    variants = _VARIANTS.get(key)
    if variants is None:
        found = []
        for config in config_variants(sender, other, transport, device, machine, registry):
            try:
                found.append(realize(config, registry))
            except SchemaError:
                continue  # a configuration QEMU refuses: nobody migrates it
        variants = _VARIANTS[key] = tuple(found)
    return replace(ctx, variants=variants)


def undecided(cond: Condition, ctx: Static) -> list[str]:
    """What static() could not see through: the state fields, features and properties that leave it open."""
    if cond.static(ctx) is not None:
        return []
    parts = cond.parts()
    if not parts:
        return [cond.describe()]
    return list(dict.fromkeys(p for part in parts for p in undecided(part, ctx)))

