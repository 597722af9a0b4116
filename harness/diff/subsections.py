"""diff's comparison of subsections: those one release knows and the other does not, and those both know with
another version, body or needed()."""

from __future__ import annotations

from collections.abc import Iterable

from harness.diff.cells import cells_line, exercises
from harness.diff.context import common_machines, machine_ranges, undecided
from harness.diff.layout import SubInfo, subsections_of
from harness.diff.result import BREAKS, GATE, SAFE, Diff, Difference, scope_text
from harness.known import KNOWN
from models.conditions import Condition
from models.releases import MachineType, Version


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



def sendable(d: Diff, info: SubInfo, sender: Version, other: Version, device: str, transport: str
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


def gate_text(d: Diff, cond: Condition, sender: Version, other: Version, scope: Iterable[tuple[str, str]]) -> str:
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
                       condition=first.text, scope=scope_text(infos))
    direction = f"{sender} -> {other}"
    machines: list[MachineType] = []
    opens: list[str] = []
    python_scope = []
    for (device, transport), info in infos.items():
        ms, op, python = sendable(d, info, sender, other, device, transport)
        machines += ms
        opens += op
        if python:
            python_scope.append((device, transport))
    if python_scope:
        diff_.decided_by = "cells"
        diff_.cells = d.cells.run(sender, other, python_scope)
        failed = [x for x in diff_.cells if exercises(x, [name, *(f for f, _t, _s in first.fields)])]
        diff_.why.append(f"needed() is Python ({first.text}), which diff cannot read: "
                         f"{cells_line(diff_.cells)} for {direction}")
        machines += [d.registry.machine(x["machine"]) for x in failed]
    names = list(dict.fromkeys(m.name for m in machines))
    fix = sender > other
    if names:
        diff_.verdict, diff_.direction, diff_.machines = (GATE if fix else BREAKS), direction, names
        if opens:
            diff_.why.append(f"needed() can hold on {len(names)} machine types both have "
                             f"({machine_ranges(names, d.registry)}): it depends on {', '.join(dict.fromkeys(opens))}")
        diff_.why.append(f"{direction}: {other} does not know the subsection and fails the load (-ENOENT)")
        diff_.why += [f"known: {k.name} (harness/known.py KNOWN), which the matrix reports as expected"
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
                             f"{gate_text(d, cond, sender, other, infos)}")
    diff_.why.append(f"{other} -> {sender}: safe (a subsection that is not sent leaves what reset set)")
    return diff_


def _changed(d: Diff, name: str, both: dict[tuple[str, str], tuple[SubInfo, SubInfo]]) -> None:
    xa, xb = next(iter(both.values()))
    scope = scope_text(both)
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
        ms, _open, python = sendable(d, info, sender, other, device, transport)
        machines += [m.name for m in ms]
        if python:
            python_scope.append((device, transport))
    direction = f"{sender} -> {other}"
    if python_scope:
        cells = d.cells.run(sender, other, python_scope)
        diff_.cells += cells
        diff_.decided_by = "cells"
        diff_.why.append(f"needed() is Python, which diff cannot read: {cells_line(cells)} for {direction}")
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

