"""diff's layout introspection: the subsections a release knows for a device on a transport, with their construct
layouts (fields, types, sizes) and needed() rules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import construct as c

from harness.wire.primitives import FlatArray, Subsections
from harness.wire.virtio import core_subsections, device_data
from models import core
from models.conditions import And, as_condition
from models.registry import BASE, Registry
from models.releases import Version


@dataclass(frozen=True)
class SubInfo:
    """A subsection as one release writes it for one device and transport."""

    name: str
    version: int
    minimum: int
    fields: tuple[tuple[str, str, int | None], ...]  # (name, type, size in bytes or None when it varies)
    test: Any  # a Condition, a Python callable, or None: the device's own code decides (models/devices/)
    text: str


def _unwrap(sc: Any) -> Any:
    while isinstance(sc, c.Renamed):
        sc = sc.subcon
    return sc


def type_name(sc: Any) -> str:
    sc = _unwrap(sc)
    if isinstance(sc, c.FormatField):
        order, code = sc.fmtstr[0], sc.fmtstr[1:]
        base = {"B": "uint8", "H": "uint16", "I": "uint32", "L": "uint32", "Q": "uint64", "b": "int8",
                "h": "int16", "i": "int32", "l": "int32", "q": "int64"}.get(code, code)
        return str(base) + (" (little-endian)" if order == "<" else "")
    if isinstance(sc, FlatArray) or (hasattr(sc, "count") and hasattr(sc, "subcon")):  # the array types
        count = sc.count if isinstance(sc.count, int) else "n"
        return f"{type_name(sc.subcon)}[{count}]"
    if isinstance(sc, c.Bytes):
        return f"buffer[{sc.length if isinstance(sc.length, int) else 'n'}]"
    if isinstance(sc, c.Struct):
        return "struct {" + ", ".join(f"{s.name} {type_name(s)}" for s in sc.subcons) + "}"
    if isinstance(sc, Subsections):
        return "subsections"
    return type(sc).__name__


def size_of(sc: Any) -> int | None:
    try:
        return int(_unwrap(sc).sizeof())
    except (c.SizeofError, c.ConstructError, KeyError, AttributeError, TypeError):
        return None


def fields_of(body: Any) -> tuple[tuple[str, str, int | None], ...]:
    body = _unwrap(body)
    if isinstance(body, c.Struct):
        return tuple((sc.name, type_name(sc), size_of(sc)) for sc in body.subcons)
    return (("", type_name(body), size_of(body)),)


def _transport_bodies(transport: str) -> dict[str, Any]:
    """The bodies of the transport's subsections inside virtio/extra_state, nested ones included, by name."""
    out: dict[str, Any] = {}

    def walk(body: Any) -> None:
        for sc in getattr(_unwrap(body), "subcons", []):
            if isinstance(_unwrap(sc), Subsections):
                for name, inner in _unwrap(sc).known.items():
                    out[name] = inner
                    walk(inner)

    layout = core_subsections(transport)
    if "virtio/extra_state" in layout.known:
        walk(layout.body("virtio/extra_state", 1))
    return out


def _device_list(device: str, registry: Registry) -> Subsections | None:
    data = device_data(registry.device(device).section, registry.wire)
    return next((_unwrap(sc) for sc in data.subcons if sc.name == "subsections"), None)


def subsections_of(release: Version, device: str, transport: str, registry: Registry = BASE) -> dict[str, SubInfo]:
    """The subsections `release` knows for a device on a transport, with their layout and needed()."""
    out: dict[str, SubInfo] = {}
    layout = core_subsections(transport, registry.wire)
    for sub in registry.known_core_subsections(release):
        if sub.name not in layout.known:
            continue  # virtio/extra_state on ccw: the bus saves no extra state
        version, minimum = registry.subsection_version(sub.name, release)
        rule = sub.rule(release)
        out[sub.name] = SubInfo(sub.name, version, minimum, fields_of(layout.body(sub.name, version)),
                                rule.test if rule else None, rule.describe() if rule else "")
    nested = _transport_bodies(transport)
    extra = next((s for s in registry.known_core_subsections(release) if s.name == "virtio/extra_state"), None)
    extra_rule = extra.rule(release) if extra is not None else None
    tsubs = {t.name: t for t in core.known_transport_subsections(release, transport)}
    for tsub in tsubs.values():
        # sent only where the subsections it sits in are: virtio/extra_state, and its parent vmsd's own test
        chain, parent = [tsub.needed.test], tsubs.get(tsub.parent)
        while parent is not None:
            chain.append(parent.needed.test)
            parent = tsubs.get(parent.parent)
        if extra_rule is not None:
            chain.append(extra_rule.test)
        out[tsub.name] = SubInfo(tsub.name, 1, 1, fields_of(nested[tsub.name]),
                                 And(*(as_condition(x) for x in reversed(chain))),
                                 f"{tsub.needed.describe()} (in {tsub.parent})")
    listed = _device_list(device, registry)
    if listed is not None:
        own = {s.name: s for s in getattr(registry.device(device).code, "SUBSECTIONS", ()) if s.known(release)}
        for name in sorted(own) + sorted(registry.known_device_subsections(device, release)):
            if name not in listed.known:
                continue
            version, minimum = registry.subsection_version(name, release)
            decl = registry.declared(name)
            rule = own[name].rule(release) if name in own else None
            if decl is not None:
                test: Any = decl.condition()
                text = test.describe()
            else:
                test, text = (rule.test, rule.describe()) if rule is not None else (None, "")
            out[name] = SubInfo(name, version, minimum, fields_of(listed.body(name, version)), test, text)
    return out

