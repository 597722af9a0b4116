"""`virtio-compat diff A B`: the static differences between the virtio formats of two releases, each with its
migration verdict.

Compared per device and transport: the subsections each release knows (core and device), their version and
body (the construct layouts: fields added, removed, moved, resized), their needed() rule, the load checks
that hold (models/core.py CHECKS) and the device properties with the values machine types give them.
A subsection one side sends and the other does not know breaks migration where needed() can hold on a machine
type both have. needed() written in the vocabulary of models/conditions.py is decided statically per machine
type; arbitrary Python (and load checks, which are code) is decided by running the matrix cells of the
direction concerned (harness.matrix.run_cell), and the output says so.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import construct as c

from harness.errors import SchemaError, UsageError
from harness.matrix import DEVICES, KNOWN, TRANSPORTS, Cell, CellResult, run_cell
from harness.wire.primitives import FlatArray, Subsections
from harness.wire.virtio import core_subsections, device_data
from models import core
from models.conditions import And, Condition, Static, as_condition, state_fields
from models.config import realize
from models.configuration import Derived
from models.declarations import Field, Release
from models.devices import DEVICES as DEVICE_MODELS
from models.devices import Versions
from models.props import backend_type, proxy_type
from models.registry import BASE, Registry
from models.releases import MachineType, Version

SAFE, GATE, BREAKS = "safe", "needs-gate", "breaks"
_RANK = {SAFE: 0, GATE: 1, BREAKS: 2}
_SHOWN = {SAFE: "safe", GATE: "NEEDS A MACHINE-TYPE GATE", BREAKS: "BREAKS"}


@dataclass
class Difference:
    kind: str  # subsection-added | subsection-removed | version-changed | field-added | field-removed | field-moved
    # | field-resized | needed-changed | check-added | check-removed | check-changed | property-changed
    # | property-added | property-removed | release-added
    subject: str
    detail: str
    verdict: str = SAFE
    direction: str | None = None  # the direction that breaks, "11.2 -> 11.1" (or both, "both")
    why: list[str] = field(default_factory=list)
    condition: str | None = None  # needed(), when the difference is a subsection's
    decided_by: str = "static"  # static | cells | layout
    scope: list[str] = field(default_factory=list)  # device/transport pairs it concerns
    machines: list[str] = field(default_factory=list)  # where it breaks
    cells: list[dict[str, Any]] = field(default_factory=list)  # the matrix cells run to decide it

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class SubInfo:
    """A subsection as one release writes it for one device and transport."""

    name: str
    version: int
    minimum: int
    fields: tuple[tuple[str, str, int | None], ...]  # (name, type, size in bytes or None when it varies)
    test: Any  # a Condition, a Python callable, or None: the device's own code decides (models/devices/)
    text: str


# --- layouts -------------------------------------------------------------------------------------------------------


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
    return next((_unwrap(sc) for sc in device_data(device, registry.wire).subcons if sc.name == "subsections"), None)


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
        own = {s.name: s for s in getattr(DEVICE_MODELS[device], "SUBSECTIONS", ()) if s.known(release)}
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


# --- machine types and conditions -----------------------------------------------------------------------------------


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


# --- cells ------------------------------------------------------------------------------------------------------------


class CellRunner:
    """The matrix cells diff runs, each once, with the declarations of `registry`."""

    def __init__(self, registry: Registry = BASE) -> None:
        self.registry = registry
        self.results: dict[str, CellResult] = {}

    def run(self, src: Version, dst: Version, scope: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
        out = []
        for device, transport in scope:
            if not common_machines(src, dst, transport, self.registry):
                continue
            cell = Cell(src, dst, transport, device)
            if cell.id not in self.results:
                self.results[cell.id] = run_cell(cell, registry=self.registry)
            res = self.results[cell.id]
            entry: dict[str, Any] = {"cell": cell.id, "status": res.status, "examples": res.examples}
            if res.failure is not None:
                from harness.failures import state_summary

                fsrc, _dst, state, fout, v = res.failure
                lines = list(fout.run.result.lines) if fout.run is not None else []
                entry.update(rule=v.rule, message=str(v), machine=fsrc.machine.name,
                             state=state_summary(fsrc, state, registry=self.registry), hostile=v.details.get("class"),
                             evidence=" ".join([str(v), repr(v.details), *lines]))
            out.append(entry)
        return out


def exercises(cell: dict[str, Any], names: Iterable[str] = (), checks: Iterable[core.LoadCheck] = ()) -> bool:
    """Whether a failing cell exercises a difference: its violation or the destination's error names one of the
    difference's subsections or fields, or, for a load check, the failure is a hostile class that provokes the
    check (strategies/hostile.py) or the destination's error is the check's own message. A cell that fails for
    another reason is not blamed on it."""
    if cell["status"] != "fail":
        return False
    text = cell.get("evidence", "")
    if any(n and n in text for n in names):
        return True
    from strategies.hostile import HOSTILE

    by_class = next((h for h in HOSTILE if h.name == cell.get("hostile")), None)
    for chk in checks:
        if by_class is not None and chk.name in by_class.checks:
            return True
        head = chk.message.split("{")[0]
        if len(head) > 8 and head in text:
            return True
    return False


def _cells_line(cells: list[dict[str, Any]]) -> str:
    if not cells:
        return "no machine type both have: no cell to run"
    failed = [x for x in cells if x["status"] == "fail"]
    if not failed:
        return f"ran {len(cells)} matrix cells ({sum(x['examples'] for x in cells)} examples): all pass"
    first = failed[0]
    return (f"ran {len(cells)} matrix cells: {len(failed)} fail, e.g. {first['cell']} on {first['machine']}: "
            f"{first['message']} (state: {first['state']})")


# --- the comparison -------------------------------------------------------------------------------------------------


@dataclass
class Diff:
    a: Version
    b: Version
    devices: list[str]
    schemas: list[str]
    profile: str
    registry: Registry = BASE
    differences: list[Difference] = field(default_factory=list)
    cells: CellRunner = field(init=False)

    def __post_init__(self) -> None:
        self.cells = CellRunner(self.registry)
        self._statics: dict[Any, Static] = {}

    def static(self, sender: Version, other: Version, machine: MachineType, device: str, transport: str) -> Static:
        key = (sender, other, machine, device, transport)
        if key not in self._statics:
            self._statics[key] = static_context(self.registry, sender, other, machine, device, transport)
        return self._statics[key]

    def scope(self) -> list[tuple[str, str]]:
        return [(d, t) for d in self.devices for t in TRANSPORTS]

    def shared(self) -> int:
        """How many machine types both releases have (none: no migration between them at all)."""
        return sum(len(common_machines(self.a, self.b, t, self.registry)) for t in TRANSPORTS)

    @property
    def breaks(self) -> list[Difference]:
        return [d for d in self.differences if d.verdict != SAFE]

    def as_json(self) -> dict[str, Any]:
        return {"a": str(self.a), "b": str(self.b), "devices": self.devices, "schema": self.schemas,
                "profile": self.profile, "differences": [d.as_json() for d in self.differences],
                "breaks": len(self.breaks), "cells_run": sorted(self.cells.results)}


def diff(a: Version, b: Version, devices: list[str], schemas: list[str] | None = None, profile: str = "ci",
         registry: Registry = BASE) -> Diff:
    """The differences between releases a and b as `registry` declares them; `schemas`: the schema modules it was
    loaded with, as the user named them (for the output)."""
    out = Diff(a, b, devices, schemas or [], profile, registry)
    for decl in (d for s in registry.schemas for d in s.declarations if isinstance(d, Release)):
        if min(a, b) < decl.version <= max(a, b):
            source = f": {decl.source}" if decl.source else ""
            out.differences.append(Difference("release-added", str(decl.version),
                                              f"release {decl.version} (builds on {decl.after})",
                                              why=[f"declared in a schema module{source}"]))
    compare_subsections(out)
    _device_vmsds(out)
    _checks(out)
    _properties(out)
    return out


def compare_subsections(d: Diff) -> None:
    """The subsection differences of d's releases (core, transport and device ones), added to d.differences."""
    per: dict[str, dict[tuple[str, str], tuple[SubInfo | None, SubInfo | None]]] = {}
    for device, transport in d.scope():
        sa, sb = subsections_of(d.a, device, transport, d.registry), subsections_of(d.b, device, transport, d.registry)
        for name in list(sa) + [n for n in sb if n not in sa]:
            per.setdefault(name, {})[(device, transport)] = (sa.get(name), sb.get(name))
    for name, by_scope in per.items():
        only_a = [k for k, (x, y) in by_scope.items() if x is not None and y is None]
        only_b = [k for k, (x, y) in by_scope.items() if x is None and y is not None]
        if only_b:
            d.differences.append(_only_in(d, name, d.b, d.a, {k: by_scope[k][1] for k in only_b}))  # type: ignore[misc]
        if only_a:
            d.differences.append(_only_in(d, name, d.a, d.b, {k: by_scope[k][0] for k in only_a}))  # type: ignore[misc]
        both = {k: v for k, v in by_scope.items() if v[0] is not None and v[1] is not None}
        if both:
            _changed(d, name, both)  # type: ignore[arg-type]


def _scope_text(keys: Iterable[tuple[str, str]]) -> list[str]:
    return [f"{dev}/{tr}" for dev, tr in keys]


def _sendable(d: Diff, info: SubInfo, sender: Version, other: Version, device: str, transport: str
              ) -> tuple[list[MachineType], list[str], bool]:
    """Where `sender` can send the subsection on a machine type both releases have, statically: (machine types,
    what leaves it open there, whether the condition is opaque Python: then the caller runs cells)."""
    test = info.test
    if not isinstance(test, Condition) or test.python():
        return [], [], True
    where, open_ = [], []
    for m in common_machines(sender, other, transport, d.registry):
        ctx = d.static(sender, other, m, device, transport)
        if test.static(ctx) is not False:
            where.append(m)
            open_ += undecided(test, ctx)
    return where, list(dict.fromkeys(open_)), False


def _gate_text(d: Diff, cond: Condition, sender: Version, other: Version, scope: Iterable[tuple[str, str]]) -> str:
    """Which properties keep it from being sent on the machine types both have, and the compat entries that do."""
    parts = []
    for prop in sorted(cond.properties()):
        sources = sorted({e.source or f"hw_compat_{e.upto}" for e in d.registry.compat if e.prop == prop
                          for _dev, tr in scope for m in common_machines(sender, other, tr, d.registry)
                          if e.applies(sender, m, d.registry.downstream)})
        parts.append(f"{prop}" + (f" ({', '.join(sources)})" if sources else ""))
    return ("gated by " + ", ".join(parts)) if parts else "needed() is false there"


def _only_in(d: Diff, name: str, sender: Version, other: Version, infos: dict[tuple[str, str], SubInfo]
             ) -> Difference:
    """A subsection `sender` knows and `other` does not: sender -> other breaks where sender sends it."""
    first = next(iter(infos.values()))
    layout = ", ".join(f"{n} {t}" for n, t, _ in first.fields)
    kind = "subsection-added" if sender > other else "subsection-removed"
    diff_ = Difference(kind, name, f"{sender} knows it, {other} does not (version {first.version}: {layout})",
                       condition=first.text, scope=_scope_text(infos))
    direction = f"{sender} -> {other}"
    machines: list[MachineType] = []
    opens: list[str] = []
    python_scope = []
    for (device, transport), info in infos.items():
        ms, op, python = _sendable(d, info, sender, other, device, transport)
        machines += ms
        opens += op
        if python:
            python_scope.append((device, transport))
    if python_scope:
        diff_.decided_by = "cells"
        diff_.cells = d.cells.run(sender, other, python_scope)
        failed = [x for x in diff_.cells if exercises(x, [name, *(f for f, _t, _s in first.fields)])]
        diff_.why.append(f"needed() is Python ({first.text}), which diff cannot read: "
                         f"{_cells_line(diff_.cells)} for {direction}")
        machines += [d.registry.machine(x["machine"]) for x in failed]
    names = list(dict.fromkeys(m.name for m in machines))
    fix = sender > other
    if names:
        diff_.verdict, diff_.direction, diff_.machines = (GATE if fix else BREAKS), direction, names
        if opens:
            diff_.why.append(f"needed() can hold on {len(names)} machine types both have "
                             f"({machine_ranges(names, d.registry)}): it depends on {', '.join(dict.fromkeys(opens))}")
        diff_.why.append(f"{direction}: {other} does not know the subsection and fails the load (-ENOENT)")
        diff_.why += [f"known: {k.name} (harness/matrix.py KNOWN), which the matrix reports as expected"
                      for k in KNOWN if name in k.subsections]
        lines = sorted({m.line for m in machines})
        if fix and all(m.line for m in machines):  # only a downstream line's machine types: its own array misses it
            diff_.why.append(f"fix: the {', '.join(lines)} machine types take only their line's compat entries: add "
                             f"one that turns the gating property off there (Compat(..., line=\"{lines[0]}\"))")
        elif fix:
            diff_.why.append(f"fix: gate needed() with a property that a hw_compat_{other.major}_{other.minor} entry "
                             f"turns off for machine types <= {other}, e.g. Property(\"x-...\") & (...)")
        else:
            diff_.why.append(f"{other} must keep knowing the subsection while {sender} can send it")
    else:
        cond = first.test
        if isinstance(cond, Condition) and not cond.python():
            diff_.why.append(f"{direction}: never sent on a machine type both have: "
                             f"{_gate_text(d, cond, sender, other, infos)}")
    diff_.why.append(f"{other} -> {sender}: safe (a subsection that is not sent leaves what reset set)")
    return diff_


def _changed(d: Diff, name: str, both: dict[tuple[str, str], tuple[SubInfo, SubInfo]]) -> None:
    xa, xb = next(iter(both.values()))
    scope = _scope_text(both)
    if xa.text != xb.text:
        d.differences.append(Difference("needed-changed", name, f"needed(): {xa.text!r} -> {xb.text!r}",
                                        why=["both releases know the subsection: sent or not, it loads"],
                                        condition=xb.text, scope=scope))
    versioned = xa.version != xb.version
    if versioned:
        diff_ = Difference("version-changed", name, f"version {xa.version} ({d.a}) -> {xb.version} ({d.b})",
                           condition=xb.text, scope=scope)
        # X -> Y fails when X's version is above Y's, or below Y's minimum (vmstate_load_state)
        for sender, other, xs, xo in ((d.b, d.a, xb, xa), (d.a, d.b, xa, xb)):
            if xs.version > xo.version or xs.version < xo.minimum:
                _sent_breaks(d, diff_, sender, other, {k: (v[1] if sender == d.b else v[0]) for k, v in both.items()},
                             f"{other} fails an incoming version {xs.version} ("
                             f"{'too new' if xs.version > xo.version else 'too old'} for version {xo.version}, "
                             f"minimum {xo.minimum})")
        if diff_.verdict == SAFE:
            diff_.why.append("each side loads the version the other writes")
        d.differences.append(diff_)
    fa = {n: (i, t, s) for i, (n, t, s) in enumerate(xa.fields)}
    fb = {n: (i, t, s) for i, (n, t, s) in enumerate(xb.fields)}
    changes = []
    for n, (i, t, s) in fb.items():
        if n not in fa:
            changes.append(("field-added", n, f"{n} {t} ({s if s is not None else 'variable'} bytes) at {i}"))
        elif fa[n][1:] != (t, s):
            changes.append(("field-resized", n, f"{n}: {fa[n][1]} ({fa[n][2]} bytes) -> {t} ({s} bytes)"))
        elif fa[n][0] != i and [x for x in fa if x in fb].index(n) != [x for x in fb if x in fa].index(n):
            changes.append(("field-moved", n, f"{n}: position {fa[n][0]} -> {i}"))
    changes += [("field-removed", n, f"{n} {t}") for n, (_, t, _s) in fa.items() if n not in fb]
    for kind, field_name, detail in changes:
        diff_ = Difference(kind, f"{name}.{field_name}", detail, decided_by="layout", scope=scope)
        if versioned:
            diff_.why.append(f"versioned: version {xb.version} has it, version {xa.version} does not; the version "
                             "change above decides")
        else:
            diff_.why.append(f"same version ({xa.version}) with another body: each side misreads what the other sends")
            for sender, other, pick in ((d.a, d.b, 0), (d.b, d.a, 1)):
                _sent_breaks(d, diff_, sender, other, {k: v[pick] for k, v in both.items()},
                             f"{other} reads the body with its own layout")
        d.differences.append(diff_)


def _sent_breaks(d: Diff, diff_: Difference, sender: Version, other: Version, infos: dict[tuple[str, str], SubInfo],
                 reason: str) -> None:
    """sender -> other breaks where sender sends the subsection: mark the difference so (statically or by cells)."""
    machines: list[str] = []
    python_scope = []
    for (device, transport), info in infos.items():
        ms, _open, python = _sendable(d, info, sender, other, device, transport)
        machines += [m.name for m in ms]
        if python:
            python_scope.append((device, transport))
    direction = f"{sender} -> {other}"
    if python_scope:
        cells = d.cells.run(sender, other, python_scope)
        diff_.cells += cells
        diff_.decided_by = "cells"
        diff_.why.append(f"needed() is Python, which diff cannot read: {_cells_line(cells)} for {direction}")
        fields = [f for info in infos.values() for f, _t, _s in info.fields]
        machines += [x["machine"] for x in cells if exercises(x, [diff_.subject, *fields])]
    machines = list(dict.fromkeys(machines))
    if machines:
        diff_.verdict = BREAKS
        diff_.direction = "both" if diff_.direction not in (None, direction) else direction
        diff_.machines = list(dict.fromkeys(diff_.machines + machines))
        diff_.why.append(f"{direction}: {reason}, where {sender} sends it ({machine_ranges(machines, d.registry)})")
    else:
        diff_.why.append(f"{direction}: {sender} never sends it on a machine type both have")


# --- device vmsd versions and the fields schema modules append to them ------------------------------------------------


def _mark(diff_: Difference, verdict: str, direction: str, machines: Iterable[str], why: str) -> None:
    if _RANK[verdict] > _RANK[diff_.verdict]:
        diff_.verdict = verdict
    diff_.direction = direction if diff_.direction in (None, direction) else "both"
    diff_.machines = list(dict.fromkeys(diff_.machines + list(machines)))
    diff_.why.append(why)


def _all_common(d: Diff, x: Version, y: Version) -> list[str]:
    return list(dict.fromkeys(m.name for t in TRANSPORTS for m in common_machines(x, y, t, d.registry)))


def _device_vmsds(d: Diff) -> None:
    """The section's and the device vmsd's version_id, and device vmsd fields: virtio_load reads the device vmsd
    with the destination's own outer version_id (virtio_device_get), so the version a source writes is never
    seen: a field gated by version is read by what the destination's version says, not the stream's."""
    for device in d.devices:
        va, vb = d.registry.versions(device, d.a), d.registry.versions(device, d.b)
        fa, fb = d.registry.device_fields(device, d.a), d.registry.device_fields(device, d.b)
        scope = [f"{device}/{t}" for t in TRANSPORTS]
        if va.section != vb.section:
            x = Difference("version-changed", va.section.name, f"section version_id {va.section.version} ({d.a}) -> "
                           f"{vb.section.version} ({d.b}), minimum {va.section.minimum} -> {vb.section.minimum}",
                           decided_by="layout", scope=scope)
            for sender, other, vs, vo in ((d.b, d.a, vb, va), (d.a, d.b, va, vb)):
                direction, machines = f"{sender} -> {other}", _all_common(d, sender, other)
                if vs.section.version > vo.section.version:
                    _mark(x, BREAKS, direction, machines, f"{direction}: 'unsupported version "
                          f"{vs.section.version} for ... v{vo.section.version}' on every machine type both have; a "
                          "machine type cannot gate a section's version: virtio devices add state in subsections")
                elif vs.section.version < vo.section.minimum:
                    _mark(x, BREAKS, direction, machines, f"{direction}: incoming version_id {vs.section.version} is "
                          f"too old for {other}'s minimum {vo.section.minimum}")
            if x.verdict == SAFE:
                x.why.append("each side accepts the section version the other writes")
            d.differences.append(x)
        if va.device != vb.device and vb.device is not None and va.device is not None:
            x = Difference("version-changed", vb.device.name, f"device vmsd version_id {va.device.version} ({d.a}) -> "
                           f"{vb.device.version} ({d.b})", decided_by="layout", scope=scope,
                           why=["not on the wire: each side reads the device vmsd with its own section version_id; "
                                "the fields below decide"])
            d.differences.append(x)
        for release, v in ((d.a, va), (d.b, vb)):
            dev = v.device
            if dev is not None and not dev.minimum <= v.section.version <= dev.version:
                x = Difference("version-changed", dev.name, f"{release} loads {dev.name} (version_id {dev.version}, "
                               f"minimum {dev.minimum}) with its section version_id {v.section.version}",
                               decided_by="layout", scope=scope)
                _mark(x, BREAKS, f"{release} -> {release}", _all_common(d, release, release),
                      f"{release} -> {release}: '{dev.name}: incoming version_id {v.section.version} is too "
                      f"{'new' if v.section.version > dev.version else 'old'}': every load fails")
                d.differences.append(x)
        order = list(dict.fromkeys([f.name for f in fa] + [f.name for f in fb]))
        by_name = {f.name: f for f in fa + fb}
        own = {sc.name for sc in device_data(device).subcons if sc.name and sc.name != "subsections"}
        for name in order:
            # the fields both sides have loaded before this one: a test that reads only those agrees on both sides
            before = own | {n for n in order[: order.index(name)] if n in {f.name for f in fa} & {f.name for f in fb}}
            _device_field(d, device, by_name[name], name in {f.name for f in fa}, name in {f.name for f in fb}, va, vb,
                          before)


def _writes(f: Field, known: bool, v: Versions, ctx: Static) -> bool | None:
    """Whether a release's save puts the field on the wire (None: its test depends on the state)."""
    if not known:
        return False
    if f.present is not None:
        return f.condition().static(ctx)  # type: ignore[union-attr]
    return v.device is not None and f.version <= v.device.version


def _reads(f: Field, known: bool, v: Versions, ctx: Static) -> bool | None:
    """Whether a release's load reads it: with its own section version_id (virtio_device_get)."""
    if not known:
        return False
    if f.present is not None:
        return f.condition().static(ctx)  # type: ignore[union-attr]
    return f.version <= v.section.version


def _agrees(cond: Condition, cs: Static, co: Static, loaded_before: set[str]) -> bool:
    """A test both sides evaluate on the same values: the state fields it reads are loaded before it (QEMU's
    field_exists sees them loaded) and the properties it reads are equal and not set by a user."""
    props = cond.properties()
    return (state_fields(cond) <= loaded_before and not props & (cs.varied | co.varied)
            and all(cs.props.get(p) == co.props.get(p) for p in props))


def _device_field(d: Diff, device: str, f: Field, in_a: bool, in_b: bool, va: Versions, vb: Versions,
                  loaded_before: set[str]) -> None:
    vmsd = next(v.device.name for v in (vb, va) if v.device is not None)
    kind = "field-added" if in_b and not in_a else "field-removed" if in_a and not in_b else "field-changed"
    if kind == "field-changed" and va == vb:
        return  # the same field both sides read and write alike
    where = d.b if in_b else d.a
    x = Difference(kind, f"{vmsd}.{f.name}", f"{f.describe()}, at the end of {vmsd}'s fields ({where})",
                   decided_by="layout", scope=[f"{device}/{t}" for t in TRANSPORTS],
                   condition=f.condition().describe() if f.present is not None else None)  # type: ignore[union-attr]
    known = {d.a: (in_a, va), d.b: (in_b, vb)}
    cond = f.condition()
    python = cond is not None and cond.python()
    tests_state = False
    for sender, other in ((d.b, d.a), (d.a, d.b), (d.b, d.b), (d.a, d.a)):
        direction = f"{sender} -> {other}"
        if python:
            if sender != other:
                cells = d.cells.run(sender, other, [(device, t) for t in TRANSPORTS])
                x.cells += cells
                x.decided_by = "cells"
                x.why.append(f"its test is Python, which diff cannot read: {_cells_line(cells)} for {direction}")
                failed = [c["machine"] for c in cells if exercises(c, [f.name])]
                if failed:
                    _mark(x, BREAKS, direction, failed, f"{direction}: the matrix fails")
            continue
        bad, open_ = [], []
        for t in TRANSPORTS:
            for m in common_machines(sender, other, t, d.registry):
                cs = d.static(sender, other, m, device, t)
                co = d.static(other, sender, m, device, t)
                ws = _writes(f, known[sender][0], known[sender][1], cs)
                ro = _reads(f, known[other][0], known[other][1], co)
                if (ws is None or ro is None) and cond is not None and known[sender][0] and known[other][0] and \
                        _agrees(cond, cs, co, loaded_before):
                    continue
                if ws is None or ro is None or ws != ro:
                    bad.append(m.name)
                    if ws is None or ro is None:
                        open_ += undecided(cond, cs) if cond else []
        bad = list(dict.fromkeys(bad))
        if not bad:
            continue
        depends = f" (it depends on {', '.join(dict.fromkeys(open_))})" if open_ else ""
        ks, ko = known[sender][0], known[other][0]
        if f.present is None and ks and ko:
            how = (f"{sender} writes it from device vmsd version {known[sender][1].device.version}, {other} reads "  # type: ignore[union-attr]
                   f"with its section version {known[other][1].section.version}")
        elif ks and ko:
            how = f"the two sides' tests can disagree{depends}"
        elif ks:
            when = f"where {cond.describe()}{depends}" if cond else \
                f"(its device vmsd is version {known[sender][1].device.version})"  # type: ignore[union-attr]
            how = f"{sender} writes it {when}, and {other} never reads it"
        else:
            when = f"where {cond.describe()}{depends}" if cond else \
                f"(it loads with section version {known[other][1].section.version})"
            how = f"{other} reads it {when}, and {sender} never wrote it"
        verdict = GATE if sender > other and f.present is not None and not open_ else BREAKS
        _mark(x, verdict, direction, bad, f"{direction}: {how}, so the stream desynchronizes "
              f"({machine_ranges(bad, d.registry)})")
        tests_state |= bool(open_)
    if x.verdict == SAFE:
        x.why.append("each side writes it exactly where the other reads it" + (
            f" ({_gate_text(d, cond, max(d.a, d.b), min(d.a, d.b), [(device, t) for t in TRANSPORTS])})"
            if cond is not None and not python else ""))
    elif f.present is None:
        x.why.append("fix: a subsection with needed() gated by a compat property (virtio devices never bump "
                     "version_id: virtio_load reads the device vmsd with the local version), or a "
                     "VMSTATE_*_TEST field whose test is such a property")
    elif tests_state:
        x.why.append("fix: a test that both sides decide alike: a property a compat entry turns off for older machine "
                     "types, or state fields loaded before it")
    else:
        x.why.append(f"fix: test a property that a hw_compat_{min(d.a, d.b).major}_{min(d.a, d.b).minor} entry "
                     f"turns off for machine types <= {min(d.a, d.b)}")
    d.differences.append(x)


def _check_pairs(d: Diff) -> list[tuple[core.LoadCheck | None, core.LoadCheck | None]]:
    ca = {x.name: x for x in d.registry.checks if x.holds(d.a)}
    cb = {x.name: x for x in d.registry.checks if x.holds(d.b)}
    pairs: list[tuple[core.LoadCheck | None, core.LoadCheck | None]] = []
    only_a = [n for n in ca if n not in cb]
    only_b = [n for n in cb if n not in ca]
    for n in list(only_a):  # one check's successor: avail_idx -> avail_idx_broken, features -> features128
        match = next((m for m in only_b if m.startswith(n) or n.startswith(m)), None)
        if match is not None:
            pairs.append((ca[n], cb[match]))
            only_a.remove(n)
            only_b.remove(match)
    pairs += [(ca[n], None) for n in only_a] + [(None, cb[n]) for n in only_b]
    pairs += [(ca[n], cb[n]) for n in ca if n in cb and ca[n] != cb[n]]
    return pairs


def _checks(d: Diff) -> None:
    scope = d.scope()
    for old, new in _check_pairs(d):
        if old is not None and new is not None:
            kind, subject = "check-changed", old.name if old.name == new.name else f"{old.name} -> {new.name}"
            detail = (f"{_check_text(old)} ({d.a}) -> {_check_text(new)} ({d.b})")
            directions = [(d.a, d.b), (d.b, d.a)]
        elif new is not None:
            kind, subject, detail = "check-added", new.name, f"{d.b} checks {_check_text(new)}; {d.a} does not"
            directions = [(d.a, d.b)]
        else:
            assert old is not None
            kind, subject, detail = "check-removed", old.name, f"{d.a} checks {_check_text(old)}; {d.b} does not"
            directions = [(d.b, d.a)]
        diff_ = Difference(kind, subject, detail, decided_by="cells", scope=_scope_text(scope))
        diff_.why.append("a load check is code (models/load.py), which diff cannot read: the destination's cells "
                         "decide whether a state the source sends fails it")
        # a release that lost the check or narrowed it is judged on hostile states too: the same-release cells
        # draw them (R10/R11), where the hostile classes hold it to the reference's verdict
        if kind == "check-removed":
            losing = [d.b]
        elif kind == "check-added":
            losing = [d.a]
        elif old is not None and new is not None and old.fatal != new.fatal:
            losing = [d.b if old.fatal else d.a]  # the one that only marks the device broken
        else:
            losing = []
        directions = directions + [(r, r) for r in losing]
        checks = [x for x in (old, new) if x is not None]
        for src, dst in directions:
            cells = d.cells.run(src, dst, scope)
            diff_.cells += cells
            hostile = " (hostile states)" if src == dst else ""
            diff_.why.append(f"{src} -> {dst}{hostile}: {_cells_line(cells)}")
            failed = [x for x in cells if exercises(x, checks=checks)]
            if failed:
                direction = f"{src} -> {dst}"
                diff_.verdict = BREAKS
                diff_.direction = "both" if diff_.direction not in (None, direction) else direction
                diff_.machines += [x["machine"] for x in failed]
        d.differences.append(diff_)


def _check_text(chk: core.LoadCheck) -> str:
    return f"{chk.name} ({'fatal' if chk.fatal else 'marks the device broken'}, since {chk.since}" + (
        f", until {chk.until})" if chk.until else ")")


def _properties(d: Diff) -> None:
    """Device properties: one known on both sides must have the same value on every machine type both have
    (a compat entry keeps older machine types as they were); one only on one side is noted."""
    seen: dict[tuple[str, str], Difference] = {}
    for device, transport in d.scope():
        types_ = [backend_type(device), "virtio-mmio" if transport == "mmio" else proxy_type(device, transport)]
        ka = {n for t in types_ for n in d.registry.known_props(d.a, t)}
        kb = {n for t in types_ for n in d.registry.known_props(d.b, t)}
        for prop in sorted(ka ^ kb):
            kind = "property-added" if prop in kb else "property-removed"
            key = (kind, prop)
            if key not in seen:
                side = d.b if prop in kb else d.a
                entries = sorted({e.source or f"hw_compat_{e.upto}" for e in d.registry.compat if e.prop == prop
                                  and e.since <= max(d.a, d.b)})
                seen[key] = Difference(kind, prop, f"{side} has the property, {d.a if side == d.b else d.b} does not",
                                       why=[f"compat entries: {', '.join(entries)}" if entries else
                                            "no compat entry: a guest-visible effect is for the matrix to show"])
            seen[key].scope.append(f"{device}/{transport}")
        values = [(m, d.registry.effective_props(d.a, m, device, transport, {}),
                   d.registry.effective_props(d.b, m, device, transport, {}))
                  for m in common_machines(d.a, d.b, transport, d.registry)]
        for prop in sorted(ka & kb):
            changed = [(m, pa.get(prop), pb.get(prop)) for m, pa, pb in values if pa.get(prop) != pb.get(prop)]
            if not changed:
                continue
            key = ("property-changed", prop)
            if key not in seen:
                m, va, vb = changed[0]
                seen[key] = Difference("property-changed", prop, f"{prop}: {va!r} ({d.a}) -> {vb!r} ({d.b}) on {m}",
                                       verdict=GATE, direction="both",
                                       why=["the same machine type gives the property another value: add a compat "
                                            f"entry (hw_compat_{min(d.a, d.b).major}_{min(d.a, d.b).minor}) that "
                                            "keeps the older value"])
            seen[key].scope.append(f"{device}/{transport}")
            seen[key].machines = list(dict.fromkeys(seen[key].machines + [m.name for m, _, _ in changed]))
    d.differences += list(seen.values())


# --- the command ----------------------------------------------------------------------------------------------------


def _release(text: str, registry: Registry) -> Version:
    try:
        return registry.release_of(text)
    except ValueError as e:
        raise UsageError(str(e)) from None


def run_cli(args: argparse.Namespace) -> int:
    from harness.inputs import load_schemas
    from models.schema import load

    registry = load_schemas(args.schema)
    paths = list(args.schema or [])  # as given, for the output
    ends = []
    for text in (args.a, args.b):
        if text.endswith(".py") or Path(text).is_file():  # a schema module stands for the newest release it declares
            registry = load(text, registry)
            paths.append(text)
            resolved = Path(text).resolve()
            loaded = next(s for s in registry.schemas if s.path == resolved)
            if not loaded.releases:
                raise UsageError(f"{text} declares no release: name the two releases and pass it with --schema")
            ends.append(loaded.releases[-1])
        else:
            ends.append(_release(text, registry))
    a, b = ends
    if a == b:
        raise UsageError(f"A and B are the same release ({a})")
    if args.device and args.device not in DEVICES:
        raise UsageError(f"--device: unknown device {args.device!r} (known: {', '.join(DEVICES)})")
    from hypothesis import settings

    import harness.pytest_plugin  # noqa: F401  (registers the Hypothesis profiles)

    settings.load_profile(args.profile)
    result = diff(a, b, [args.device] if args.device else list(DEVICES), list(dict.fromkeys(paths)), args.profile,
                  registry)
    if args.json:
        json.dump(result.as_json(), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(format_text(result))
    return 1 if result.breaks else 0


def format_text(r: Diff) -> str:
    lines = [f"diff {r.a} -> {r.b}" + (f" (schema: {', '.join(r.schemas)})" if r.schemas else "")
             + f", devices: {', '.join(r.devices)}"]
    if not r.shared():
        lines.append(f"note: {r.a} and {r.b} have no machine type in common, so no migration between them is "
                     "possible: the differences are shown, none can break one")
    if not r.differences:
        lines.append("no differences in the virtio format or its load rules")
    order = sorted(r.differences, key=lambda x: -_RANK[x.verdict])
    for x in order:
        head = f"{_SHOWN[x.verdict]}: {x.kind} {x.subject}: {x.detail}"
        if x.direction:
            head += f" [{x.direction}]"
        lines.append(head)
        if x.condition and x.kind.startswith("subsection"):
            how = "decided by matrix cells" if x.decided_by == "cells" else "decided statically"
            lines.append(f"    needed(): {x.condition} ({how})")
        for w in x.why:
            lines.append(f"    {w}")
        if x.scope and len(set(x.scope)) < len(r.scope()):
            lines.append(f"    concerns: {', '.join(dict.fromkeys(x.scope))}")
    cells = r.cells.results
    if cells:
        lines.append(f"ran {len(cells)} matrix cells for conditions and checks written in Python "
                     f"(profile {r.profile})")
    lines.append(f"{len(r.differences)} differences, {len(r.breaks)} break migration"
                 + ("" if r.breaks else "; exit 0") + ("; exit 1" if r.breaks else ""))
    return "\n".join(lines)
