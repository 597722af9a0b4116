"""Out-of-tree schema modules: a device developer describes a format change in a Python module of their own,
with the declarations models/ uses, and load() gives a new registry (models/registry.py) that extends the one it is
loaded on with them, so that the matrix, `check`, `diff` and `replay` all see it without an edit to this package.

A schema module binds DECLARATIONS, a tuple of:

    Release(V("11.2"), after=V("11.1"))              a release (its rules are those of the one it builds on)
    Subsection("virtio-net-device/foo", V("11.2"),    a core ("virtio/...") or device subsection: its fields
               fields=(Field("foo", "uint32"),),      (the wire layout, in vmstate's types) and needed(), in the
               needed=StateField("foo") != 0)         vocabulary of models/conditions.py or any Python callable
    SubsectionVersion("virtio/started", V("11.2"), 2,  a new version of a subsection models/ has, and the fields
                      fields=(...))                   it appends
    DeviceVersion("virtio-net-device", V("11.2"),     fields at the end of a device vmsd's own (VMSTATE_*_V from
                  version=12, fields=(...))           `version`, or VMSTATE_*_TEST with Field(present=...)),
                                                      and its version_id (and the section's) from that release
    Prop(...)                                         a device property (models/props.py)
    Compat(...)                                       a machine type compat entry (models/releases.py)
    Downstream("pc-q35", "rhel", ((V("9.4"), V("8.2")),))   a distribution's machine types
    LoadCheck(...)                                    a new release range for one of models/core.py's load checks
    Device("virtio-foo", Versions(...), 42, code)     a whole device (models/declarations.Device: its ids,
                                                      transports, properties, compat entries and code hooks)

Each is declared once: Subsection alone gives the layout (the registry's harness/wire/virtio.py Extras), the
needed() rule (the registry's core subsections, or the device's subsection list), the state (DeviceState.extra)
and what the matrix draws for it; DeviceVersion the same for device fields and the vmsd versions models/load.py
checks. A mistake is a SchemaError naming the module and the line. The declarations themselves are
models/declarations.py's (and releases.py's, props.py's, core.py's), re-exported here for schema modules.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import re
import sys
import types
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import construct as c

from harness.errors import SchemaError
from harness.wire import virtio as wire
from models import core
from models.conditions import as_condition
from models.core import LoadCheck
from models.declarations import Device, DeviceVersion, Field, Release, Schema, Subsection, SubsectionVersion, Transport
from models.props import Prop
from models.registry import BASE, Registry, with_layout
from models.releases import FAMILIES, Compat, Downstream, Version
from models.state import BalloonState, BlkState, DeviceState, NetState

__all__ = ["Compat", "Device", "DeviceVersion", "Downstream", "Field", "LoadCheck", "Prop", "Release", "Subsection",
           "SubsectionVersion", "Transport", "load", "load_all"]


def load(path: str | Path, base: Registry = BASE) -> Registry:
    """A new registry: `base` extended by the DECLARATIONS of the schema module at `path`, imported in isolation
    (its own namespace, not on sys.path). `base` itself is left as it was; a module it already holds gives it
    back unchanged."""
    p = Path(path)
    resolved = p.resolve()
    if any(s.path == resolved for s in base.schemas):
        return base
    decls, where = _read(p, resolved)
    reg = _apply(base, decls, where)
    return replace(reg, schemas=(*reg.schemas, Schema(resolved, decls)))


def load_all(paths: Iterable[str | Path] | None, base: Registry = BASE) -> Registry:
    """`base` extended by each schema module in turn (--schema MODULE, repeatable)."""
    reg = base
    for p in paths or ():
        reg = load(p, reg)
    return reg


def _read(p: Path, resolved: Path) -> tuple[tuple[Any, ...], Callable[[int], str]]:
    """The module's DECLARATIONS, and where each one is (file:line) for the errors."""
    shown = str(p)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise SchemaError(f"{shown}: no such schema module") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SchemaError(f"{shown}: cannot read the schema module: {getattr(e, 'strerror', None) or e}") from None
    try:
        tree = ast.parse(text, filename=str(resolved))
    except SyntaxError as e:
        raise SchemaError(f"{shown}:{e.lineno}: syntax error: {e.msg}") from None
    stem = re.sub(r"\W", "_", p.stem)
    name = f"virtio_compat_schema_{stem}_{hashlib.sha1(bytes(resolved)).hexdigest()[:8]}"
    module = types.ModuleType(name)
    module.__file__ = str(resolved)
    sys.modules[name] = module  # dataclasses and pickle look a class's module up
    try:
        exec(compile(tree, str(resolved), "exec"), module.__dict__)
    except Exception as e:
        sys.modules.pop(name, None)
        message = str(e) if isinstance(e, SchemaError) else f"{type(e).__name__}: {e}"
        raise SchemaError(f"{shown}:{_line_in(e, str(resolved))}: {message}") from None
    decls = module.__dict__.get("DECLARATIONS")
    if not isinstance(decls, (tuple, list)):
        raise SchemaError(f"{shown}:1: a schema module binds DECLARATIONS, a tuple of Release, Subsection, Prop, "
                          "Compat, Downstream and LoadCheck declarations")
    lines = _declaration_lines(tree, len(decls))
    return tuple(decls), lambda i: f"{shown}:{lines[i]}"


def _line_in(e: BaseException, filename: str) -> int:
    """The line of the schema module where an exception rose (its innermost frame in that file)."""
    line = getattr(e, "lineno", None) if isinstance(e, SyntaxError) else None
    tb = e.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line or 1


def _declaration_lines(tree: ast.Module, n: int) -> list[int]:
    """The line of each entry of DECLARATIONS (of the assignment itself when it is not a literal tuple)."""
    line, elts = 1, None
    for node in tree.body:
        target = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == "DECLARATIONS" for t in target):
            value = node.value  # type: ignore[attr-defined]
            line = node.lineno
            elts = value.elts if isinstance(value, (ast.Tuple, ast.List)) else None
    if elts is not None and len(elts) == n and not any(isinstance(e, ast.Starred) for e in elts):
        return [e.lineno for e in elts]
    return [line] * n


# --- validation and application: each declaration gives a new registry --------------------------------------------

KINDS = (Release, Downstream, Device, Prop, Compat, Subsection, SubsectionVersion, DeviceVersion, LoadCheck)


@dataclass
class _Applying:
    """What applying one schema module keeps between its declarations."""

    replaced: set[str] = field(default_factory=set)  # the checks whose ranges it has declared so far


def _apply(base: Registry, decls: Sequence[Any], where: Callable[[int], str]) -> Registry:
    for i, d in enumerate(decls):
        if not isinstance(d, KINDS):
            raise SchemaError(f"{where(i)}: {d!r} is not a declaration (expected "
                              f"{', '.join(k.__name__ for k in KINDS)})")
    # releases first, in version order, so that the rest may name them
    order = sorted((i for i, d in enumerate(decls) if isinstance(d, Release)), key=lambda i: decls[i].version)
    steps: list[tuple[int, Callable[[Registry, Any, _Applying], Registry]]] = [(i, _release) for i in order]
    appliers: tuple[tuple[type, Callable[[Registry, Any, _Applying], Registry]], ...] = (
        (Downstream, _downstream), (Device, _device), (Prop, _prop), (Compat, _compat), (Subsection, _subsection),
        (SubsectionVersion, _subsection_version), (DeviceVersion, _device_version), (LoadCheck, _check))
    for kind, apply in appliers:
        steps += [(i, apply) for i, d in enumerate(decls) if isinstance(d, kind)]
    reg, applying = base, _Applying()
    for i, fn in steps:
        try:
            reg = fn(reg, decls[i], applying)
        except SchemaError as e:
            raise SchemaError(f"{where(i)}: {e}") from None
        except (TypeError, ValueError, AttributeError) as e:
            raise SchemaError(f"{where(i)}: {type(e).__name__}: {e}") from None
    _steps_checked(reg, [(i, d) for i, d in enumerate(decls) if isinstance(d, LoadCheck)], where)
    return reg


def _release(reg: Registry, d: Release, _: _Applying) -> Registry:
    rel = reg.releases
    if not isinstance(d.version, Version) or not isinstance(d.after, Version):
        raise SchemaError("Release takes versions: Release(V(\"11.2\"), after=V(\"11.1\"))")
    if d.version <= d.after:
        raise SchemaError(f"release {d.version} is placed before {d.after}, the release it builds on")
    if d.after not in rel:
        raise SchemaError(f"release {d.version} builds on {d.after}, which is not modelled "
                          f"(releases: {', '.join(map(str, rel))})")
    if d.version in rel:
        raise SchemaError(f"release {d.version} is already modelled")
    between = [r for r in rel if d.after < r < d.version]
    if between:
        raise SchemaError(f"release {d.version} builds on {d.after}, but {between[-1]} lies between them "
                          f"(build on {between[-1]})")
    all_versions = reg.all_versions  # its machine types
    if d.version not in all_versions:
        all_versions = tuple(sorted((*all_versions, d.version)))
    return replace(reg, releases=tuple(sorted((*rel, d.version))), all_versions=all_versions)


def _device(reg: Registry, d: Device, applying: _Applying) -> Registry:
    if d.name in reg.device_names:
        raise SchemaError(f"device {d.name!r} is already declared")
    for p in d.props:
        reg = _prop(reg, p, applying)
    reg = replace(reg, devices=(*reg.devices, d))
    for x in d.compat:
        reg = _compat(reg, x, applying)
    return reg


def _downstream(reg: Registry, d: Downstream, _: _Applying) -> Registry:
    if d.family not in FAMILIES:
        raise SchemaError(f"downstream machine types extend an upstream family, not {d.family!r} "
                          f"(families: {', '.join(FAMILIES)})")
    if not re.fullmatch(r"[a-z]+", d.line):
        raise SchemaError(f"a downstream line is named in lower-case letters (rhel), not {d.line!r}")
    if any(x.family == d.family and x.line == d.line for x in reg.downstream):
        raise SchemaError(f"the machine types {d.family}-{d.line}* are already declared")
    if not d.machines:
        raise SchemaError(f"{d.family}-{d.line}: no machine types")
    for mine, upstream in d.machines:
        if upstream not in reg.all_versions:
            raise SchemaError(f"{d.family}-{d.line}{mine}.0 is cut from {upstream}, which is not a QEMU release")
    return replace(reg, downstream=(*reg.downstream, d))


def _qom_types() -> set[str]:
    out = {"virtio-device", "virtio-pci", "virtio-mmio"}
    for dev in wire.DEVICE_DATA:
        out |= {f"{dev}-device", f"{dev}-pci", f"{dev}-ccw"}
    return out


def _prop(reg: Registry, p: Prop, _: _Applying) -> Registry:
    if p.qom_type not in _qom_types():
        raise SchemaError(f"property {p.name}: unknown QOM type {p.qom_type!r} "
                          f"(known: {', '.join(sorted(_qom_types()))})")
    for q in reg.props:
        overlap = (q.until is None or p.since < q.until) and (p.until is None or q.since < p.until)
        if q.qom_type == p.qom_type and q.name == p.name and overlap:
            raise SchemaError(f"property {p.name} of {p.qom_type} clashes with the one models declare from {q.since}")
    return replace(reg, props=(*reg.props, p))


def _compat(reg: Registry, entry: Compat, _: _Applying) -> Registry:
    if entry.driver not in _qom_types() | {"migration"}:
        raise SchemaError(f"compat entry {entry.driver}.{entry.prop}: unknown QOM type {entry.driver!r}")
    if entry.line and not any(d.line == entry.line for d in reg.downstream):
        raise SchemaError(f"compat entry {entry.driver}.{entry.prop}: no downstream line {entry.line!r} is declared")
    if entry.driver != "migration" and not any(p.name == entry.prop for p in reg.props):
        raise SchemaError(f"compat entry {entry.driver}.{entry.prop}: {entry.prop} is not a property "
                          "(declare it with Prop)")
    return replace(reg, compat=(*reg.compat, entry))


def _own_subsections(device: str) -> Any:
    """A device vmsd's own subsection list (harness/wire/virtio.py), None where its data has no vmsd."""
    return next((sc.subcon for sc in wire.device_data(device).subcons if sc.name == "subsections"), None)


def _subsection_owners(reg: Registry) -> dict[str, str]:
    """Every subsection name already taken, and by whom."""
    out = {}
    for transport in wire.TRANSPORTS:  # the transports' subsections inside virtio/extra_state
        out.update({n: "models (harness/wire/virtio.py)" for n in _transport_names(transport)})
    # the core subsections this registry declares (a registry without one may be given it again: the walkthrough of
    # README's "Adding a release or a device version" does so with virtio/started)
    out.update({s.name: "models/core.py" for s in reg.core_subsections})
    for dev in wire.DEVICE_DATA:
        subs = _own_subsections(dev)
        out.update({n: "models (harness/wire/virtio.py)" for n in (subs.known if subs is not None else ())})
    out.update({s.name: f"an earlier schema declaration (since {s.since})" for s in reg.subsections})
    return out


def _transport_names(transport: str) -> set[str]:
    known = wire.core_subsections(transport).known
    extra = known.get("virtio/extra_state")
    out: set[str] = set()
    stack = [extra] if extra is not None else []
    while stack:
        body = stack.pop()
        for sc in getattr(body, "subcons", ()):
            inner: Any = getattr(getattr(sc, "subcon", None), "known", None)
            if isinstance(inner, dict):
                out.update(inner)
                stack.extend(inner.values())
    return out


def _held(reg: Registry, fields: Sequence[Field]) -> bool:
    """The fields are DeviceState's own values that no core subsection of reg carries (virtio/started's `started`
    in a registry without it): the subsection declaring them binds them, as models/core.py's do."""
    held = {f.attribute for f in core.state_fields(reg.core_subsections)}
    return bool(fields) and all(f.plain and f.name in core.STATE_FIELDS and f.name not in held for f in fields)


def _state_names() -> set[str]:
    return {f.name for cls in (DeviceState, NetState, BlkState, BalloonState) for f in dataclasses.fields(cls)}


def _subsection(reg: Registry, sub: Subsection, _: _Applying) -> Registry:
    if "/" not in sub.name:
        raise SchemaError(f"subsection {sub.name!r}: its name starts with its parent vmsd's name "
                          "(virtio/..., virtio-net-device/...)")
    parents = ["virtio"] + [f"{d}-device" for d in wire.DEVICE_DATA]
    if sub.parent not in parents:
        raise SchemaError(f"subsection {sub.name}: unknown parent vmsd {sub.parent!r} (known: {', '.join(parents)})")
    if sub.device is not None and _own_subsections(sub.device) is None:
        raise SchemaError(f"subsection {sub.name}: {sub.parent}'s data is written by its save_device function, "
                          "without a vmsd, so it has no subsections")
    owner = _subsection_owners(reg).get(sub.name)
    if owner:
        raise SchemaError(f"subsection {sub.name} clashes with the one in {owner}")
    if sub.since not in reg.releases:
        raise SchemaError(f"subsection {sub.name}: release {sub.since} is not modelled (declare it with Release)")
    if sub.needed is None:
        raise SchemaError(f"subsection {sub.name}: needed() is missing (a condition, e.g. StateField(\"foo\") != 0)")
    as_condition(sub.needed)
    bound = sub.device is None and not sub.versions and _held(reg, sub.fields)
    if not bound:
        _check_fields(reg, f"subsection {sub.name}", sub.fields)
    versions = [v for _, v in sub.versions]
    if [r for r, _ in sub.versions] != sorted(r for r, _ in sub.versions) or versions != sorted(versions) or any(
            r < sub.since or r not in reg.releases for r, _ in sub.versions):
        raise SchemaError(f"subsection {sub.name}: versions are (release, version_id) pairs in release order, "
                          f"from {sub.since}, of modelled releases")
    if max([1] + versions) < max([1] + [f.version for f in sub.fields]):
        raise SchemaError(f"subsection {sub.name}: a field needs version {max(f.version for f in sub.fields)}, "
                          "which no release writes")
    # after="virtio" (the parent vmsd itself): first in the list, where virtio/device_endian is
    if sub.after and (sub.device is not None or sub.after not in ["virtio", *(s.name for s in reg.core_subsections)]):
        raise SchemaError(f"subsection {sub.name}: after={sub.after!r} is not a core subsection")
    core_subsections = reg.core_subsections
    if sub.device is None:
        entry = core.CoreSubsection(sub.name, sub.since, (core.Rule(sub.since, sub.condition()),),
                                    sub.source or "schema module", fields=sub.fields if bound else ())
        subs = list(core_subsections)
        at = 0 if sub.after == "virtio" else next((i + 1 for i, s in enumerate(subs) if s.name == sub.after),
                                                   len(subs))
        core_subsections = tuple(subs[:at] + [entry] + subs[at:])
    if bound:  # a core subsection of DeviceState's values: models/core.py's kind, whose fields the model follows
        return replace(reg, core_subsections=core_subsections,
                       wire=with_layout(reg.wire, sub.parent, sub.name, sub.layout()(1)))
    return replace(reg, subsections=(*reg.subsections, sub), core_subsections=core_subsections,
                   wire=with_layout(reg.wire, sub.parent, sub.name, sub.layout()))


def _check_fields(reg: Registry, what: str, fields: Any) -> None:
    if not isinstance(fields, tuple) or not all(isinstance(f, Field) for f in fields):
        raise SchemaError(f"{what}: fields are a tuple of Field(name, type) declarations")
    bound = [f.name for f in fields if f.of or f.shift is not None or f.rows or f.loaded_until is not None]
    if bound:
        raise SchemaError(f"{what}: field {bound[0]!r}: of=, shift=, rows= and loaded_until= bind a field to the "
                          "device state's own (models/core.py); a schema module's fields hold their own values")
    names = [f.name for f in fields]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise SchemaError(f"{what}: field {sorted(dup)[0]!r} is declared twice")
    taken = _state_names() | {f.name for s in reg.subsections for f in s.fields} | {
        f.name for d in reg.device_versions + reg.subsection_versions for f in d.fields}
    clash = [n for n in names if n in taken]
    if clash:
        raise SchemaError(f"{what}: field {clash[0]!r} clashes with a state field of the same name")


def _own_subsection(reg: Registry, name: str) -> tuple[str, Any] | None:
    """(parent vmsd, body) of a subsection of models/ (harness/wire/virtio.py's in-tree layouts), None if it has
    no such one."""
    lists = [wire.core_subsections(t) for t in wire.TRANSPORTS]
    lists += [s for s in (_own_subsections(dev) for dev in wire.DEVICE_DATA) if s is not None]
    for subs in lists:
        if name in subs.known and reg.declared(name) is None:
            return subs.parent, subs.known[name]
    return None


def _subsection_version(reg: Registry, d: SubsectionVersion, _: _Applying) -> Registry:
    if reg.declared(d.name) is not None:
        raise SchemaError(f"subsection version {d.name}: a schema module's subsection takes versions= in its "
                          "Subsection declaration")
    own = _own_subsection(reg, d.name)
    if own is None:
        raise SchemaError(f"subsection version {d.name}: models/ has no such subsection (a new one is a Subsection)")
    if d.since not in reg.releases:
        raise SchemaError(f"subsection version {d.name}: release {d.since} is not modelled (declare it with Release)")
    before = reg.subsection_version(d.name, d.since)[0]
    if not isinstance(d.version, int) or isinstance(d.version, bool) or d.version <= before:
        raise SchemaError(f"subsection version {d.name}: version {d.version!r} is not above {before}, the version "
                          f"{d.since} writes without it")
    _check_fields(reg, f"subsection version {d.name}", d.fields)
    old_fields = [f for f in d.fields if not before < f.version <= d.version]
    if old_fields:
        f = old_fields[0]
        raise SchemaError(f"subsection version {d.name}: field {f.name!r} must come with a version above {before} "
                          f"and up to {d.version} (Field(..., version={d.version})), not {f.version}")
    parent, base = own
    reg = replace(reg, subsection_versions=tuple(sorted((*reg.subsection_versions, d), key=lambda x: x.since)))
    fields = reg.added_fields(d.name)

    def body(version_id: int) -> Any:
        inner = base(version_id) if callable(base) and not isinstance(base, c.Construct) else base
        return c.Struct(*inner.subcons, *(f.name / f.construct(False) for f in fields if f.version <= version_id))

    return replace(reg, wire=with_layout(reg.wire, parent, d.name, functools.lru_cache(maxsize=8)(body)))


def _device_version(reg: Registry, d: DeviceVersion, _: _Applying) -> Registry:
    vmsds = {m.versions.device.name: m.name for m in reg.devices if m.versions.device is not None}
    if d.vmsd not in vmsds:
        coded = {m.name: bool(wire.device_data(m.section, reg.wire).subcons) for m in reg.devices}
        others = [f"{m.name} has none ({'save_device/load_device' if coded[m.name] else 'no device data'})"
                  for m in reg.devices if m.versions.device is None]
        raise SchemaError(f"device version {d.vmsd!r}: not a device vmsd (known: {', '.join(vmsds)}; "
                          f"{'; '.join(others)})")
    if d.since not in reg.releases:
        raise SchemaError(f"device version {d.vmsd}: release {d.since} is not modelled (declare it with Release)")
    if any(x.vmsd == d.vmsd and x.since == d.since for x in reg.device_versions):
        raise SchemaError(f"device version {d.vmsd}: {d.since} is declared twice (one declaration per release)")
    for name in ("version", "minimum_version", "section_version", "section_minimum_version"):
        value = getattr(d, name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 1 <= value < 2**31):
            raise SchemaError(f"device version {d.vmsd}: {name} is a version_id (a positive int32), not {value!r}")
    _check_fields(reg, f"device version {d.vmsd}", d.fields)
    before = reg.versions(d.device, d.since)
    reg = replace(reg, device_versions=tuple(sorted((*reg.device_versions, d), key=lambda x: x.since)))
    after_ = reg.versions(d.device, d.since)
    dev = after_.device
    assert dev is not None and before.device is not None
    if dev.version < before.device.version or after_.section.version < before.section.version:
        raise SchemaError(f"device version {d.vmsd}: a version_id goes down in {d.since} "
                          f"({before.device.version} -> {dev.version}, section {before.section.version} -> "
                          f"{after_.section.version})")
    for v in (after_.section, after_.device):
        if v is not None and v.minimum > v.version:
            raise SchemaError(f"device version {d.vmsd}: {v.name}'s minimum_version_id {v.minimum} is above its "
                              f"version_id {v.version}")
    high = [f for f in d.fields if f.version > dev.version]
    if high:
        raise SchemaError(f"device version {d.vmsd}: field {high[0].name!r} is on the wire from version "
                          f"{high[0].version}, above the vmsd's version_id {dev.version} in {d.since}")
    fields = [f for x in reg.device_versions if x.device == d.device for f in x.fields]
    device_fields = {**reg.wire.device_fields, d.device: tuple(
        (f.name, f.construct(True), 0 if f.present is not None else f.version) for f in fields)}
    return replace(reg, wire=wire.Extras(reg.wire.subsections, MappingProxyType(device_fields), reg.wire.devices))


def _check(reg: Registry, chk: LoadCheck, applying: _Applying) -> Registry:
    """A schema's LoadCheck declarations of one name replace the ranges the registry gives it, together: one
    declaration per range."""
    names = [x.name for x in reg.checks]
    if chk.name not in names:
        raise SchemaError(f"load check {chk.name!r}: the model has no load step for it (known: "
                          f"{', '.join(dict.fromkeys(names))}); a schema changes the releases where one holds")
    if not isinstance(chk.since, Version) or not (chk.until is None or isinstance(chk.until, Version)):
        raise SchemaError(f"load check {chk.name!r}: since and until are releases (V(\"11.2\")), until may be None")
    if chk.until is not None and chk.until <= chk.since:
        raise SchemaError(f"load check {chk.name!r}: its range {chk.since} to {chk.until} is empty")
    at = names.index(chk.name)
    if chk.name in applying.replaced:
        mine = [x for x in reg.checks if x.name == chk.name]
        clash = next((x for x in mine if _overlap(x, chk)), None)
        if clash is not None:
            raise SchemaError(f"load check {chk.name!r}: its range {_range(chk)} overlaps the one declared before "
                              f"({_range(clash)})")
        end = at + len(mine)  # the schema's ranges of the check sit together, where the first one went
        return replace(reg, checks=(*reg.checks[:end], chk, *reg.checks[end:]))
    applying.replaced.add(chk.name)
    rest = [x for x in reg.checks if x.name != chk.name]
    return replace(reg, checks=tuple(rest[:at] + [chk] + rest[at:]))


def _range(chk: LoadCheck) -> str:
    return f"{chk.since} to {chk.until}" if chk.until else f"{chk.since} on"


def _overlap(a: LoadCheck, b: LoadCheck) -> bool:
    return (a.until is None or b.since < a.until) and (b.until is None or a.since < b.until)


def _steps_checked(reg: Registry, decls: list[tuple[int, LoadCheck]], where: Callable[[int], str]) -> None:
    """A load step that models/load.py always checks (core.STEP_CHECKS) keeps a check on every release: a schema
    that ends a step's only check names the declaration that ended it."""
    for names, since, until in core.STEP_CHECKS:
        mine = [(i, d) for i, d in decls if d.name in names]
        if not mine:
            continue
        for release in reg.releases:
            if release < since or (until is not None and release >= until):
                continue
            if any(reg.check(n, release) for n in names):
                continue
            ended = [(i, d) for i, d in mine if d.until is not None and d.until <= release]
            i, d = max(ended, key=lambda x: x[1].until or release) if ended else mine[0]
            raise SchemaError(f"{where(i)}: load check {d.name!r} ({_range(d)}) leaves QEMU {release} without a "
                              f"{' or '.join(repr(n) for n in names)} check, which that load step always makes; "
                              "declare its range on the releases that keep it")
