"""diff's comparison of the load checks that hold (decided by matrix cells: a check is code) and of the device
properties with the values machine types give them."""

from __future__ import annotations

from harness.diff.cells import cells_line, exercises
from harness.diff.context import common_machines
from harness.diff.result import BREAKS, GATE, Diff, Difference, scope_text
from models import core
from models.props import backend_type, proxy_type


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


def compare_checks(d: Diff) -> None:
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
        diff_ = Difference(kind, subject, detail, decided_by="cells", scope=scope_text(scope))
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
            diff_.why.append(f"{src} -> {dst}{hostile}: {cells_line(cells)}")
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


def compare_properties(d: Diff) -> None:
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

