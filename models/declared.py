"""What the schema modules' declarations in a registry give one realized device: the values of their fields in a
state, their subsection entries on the wire, and which of their gated fields a release writes or reads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import construct as c

from models.conditions import Condition, as_condition
from models.config import Realized
from models.declarations import Field, Subsection
from models.registry import Registry
from models.state import DeviceState
from models.stream_order import state_so_far


def extend_entries(r: Realized, s: DeviceState, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Subsection entries of models/ as release r writes them with SubsectionVersion declarations: their
    version_id and the values of the fields it appends."""
    if not r.registry.subsection_versions:
        return entries
    values, out = dict(s.extra), []
    for e in entries:
        fields = r.registry.added_fields(e["name"], r.release)
        if fields:
            version = r.registry.subsection_version(e["name"], r.release)[0]
            e = {**e, "version_id": version, "body": {**e["body"], **{
                f.name: values.get(f.name, f.reset_value()) for f in fields if f.version <= version}}}
        out.append(e)
    return out


def without_added_fields(registry: Registry, device: Any) -> Any:
    """A decoded device value with the fields SubsectionVersion declarations add taken out of its subsections'
    bodies (they are DeviceState.extra's; models/devices/ keeps the bodies it knows)."""
    names = {f.name for d in registry.subsection_versions for f in d.fields}
    subs = getattr(device, "subsections", None)
    if not names or not subs:
        return device
    stripped = c.ListContainer(c.Container(name=x.name, version_id=x.version_id, body=c.Container(
        {k: v for k, v in x.body.items() if k not in names}) if isinstance(x.body, dict) else x.body) for x in subs)
    return c.Container({**device, "subsections": stripped})




def known_fields(r: Realized) -> list[Field]:
    reg = r.registry
    return [f for sub in reg.known(r.release, r.config.device) for f in sub.fields_in(sub.version_in(r.release))] + \
        reg.device_fields(r.config.device, r.release) + [
            f for d in reg.subsection_versions if d.since <= r.release and _of_device(d.name, r.config.device)
            for f in d.fields]


def _of_device(name: str, device: str) -> bool:
    parent = name.split("/", 1)[0]
    return parent == "virtio" or parent == f"{device}-device"


def reset_values(r: Realized) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((f.name, f.reset_value()) for f in known_fields(r)))


def on_wire(r: Realized, s: DeviceState, version: int | None = None, loading: bool = False
            ) -> dict[str, Any] | None:
    """The build/parse parameter schema_fields: which gated fields release r writes for state s, or (`loading`)
    reads, with `version`, the device vmsd version_id it loads with, and over s, its state before the load, with
    the fields read so far in place, as QEMU's field_exists sees it. None when no schema module gates a field."""
    reg = r.registry
    tested = [f for sub in reg.subsections for f in sub.fields if f.present is not None]
    if not reg.device_versions and not tested:
        return None
    if version is None:
        dev = reg.versions(r.config.device, r.release).device
        version = dev.version if dev is not None else 0

    def holds(f: Field) -> Any:
        test = as_condition(f.present)
        return _read_so_far(test, r, s) if loading else bool(test(r, s))

    # a subsection's field: its test decides (its version, the subsection's own version_id)
    out: dict[str, Any] = {f.name: holds(f) for f in tested}
    mine = {id(f) for f in reg.device_fields(r.config.device, r.release)}
    for f in (f for d in reg.device_versions for f in d.fields):
        # another device's, or a later release's, is not in this one's layout
        out[f.name] = False if id(f) not in mine else holds(f) if f.present is not None else f.version <= version
    return out


def _read_so_far(test: Condition, r: Realized, before: DeviceState) -> Callable[[Any], bool]:
    """The test as the destination evaluates it while loading: over its state before the load with every value the
    stream loaded so far in place, in stream order (models/stream_order.py)."""
    declared_names = frozenset(f.name for f in known_fields(r))

    def decide(ctx: Any) -> bool:
        return bool(test(r, state_so_far(before, ctx, declared_names)))

    return decide


def wire_entry(sub: Subsection, r: Realized, s: DeviceState) -> dict[str, Any]:
    version = sub.version_in(r.release)
    values = dict(s.extra)
    return {"name": sub.name, "version_id": version,
            "body": {f.name: values.get(f.name, f.reset_value()) for f in sub.fields_in(version)}}


def device_wire(r: Realized, s: DeviceState) -> list[dict[str, Any]]:
    """The declared device subsections release r sends for state s, in declaration order."""
    return [wire_entry(sub, r, s) for sub in r.registry.known(r.release, r.config.device)
            if sub.device is not None and sub.condition()(r, s)]


def device_values(r: Realized, s: DeviceState) -> dict[str, Any]:
    """The values of the device vmsd fields schema modules declare (the layout decides which go on the wire)."""
    values = dict(s.extra)
    return {f.name: values.get(f.name, f.reset_value()) for d in r.registry.device_versions for f in d.fields}


def _value(x: Any) -> Any:
    return tuple(x) if isinstance(x, list) else x


def sent(registry: Registry, decoded: Any) -> dict[str, Any]:
    """The declared fields a decoded payload carries, by name."""
    out: dict[str, Any] = {}
    for sub in list(decoded.subsections) + list(getattr(decoded.device, "subsections", None) or []):
        decl = registry.declared(sub.name)
        fields = decl.fields if decl is not None else tuple(registry.added_fields(sub.name))
        if fields and isinstance(sub.body, dict):
            out.update({f.name: _value(sub.body[f.name]) for f in fields if sub.body.get(f.name) is not None})
    device = decoded.device
    for f in (f for d in registry.device_versions for f in d.fields):
        if device.get(f.name) is not None:
            out[f.name] = _value(device[f.name])
    return out


def values_from_wire(r: Realized, decoded: Any) -> tuple[tuple[str, Any], ...]:
    """DeviceState.extra of a decoded payload as release r loads it: what it carries, else the reset values."""
    reg = r.registry
    if not reg.subsections and not reg.device_versions and not reg.subsection_versions:
        return ()
    known = {f.name for f in known_fields(r)}
    carried = sent(reg, decoded)
    return tuple(sorted({**dict(reset_values(r)), **{k: v for k, v in carried.items() if k in known}}.items()))
