"""diff's comparison of the device vmsds: the section's and the device vmsd's version_id, and the fields schema
modules append to a device vmsd."""

from __future__ import annotations

from harness.diff.cells import cells_line, exercises
from harness.diff.context import common_machines, machine_ranges, undecided
from harness.diff.result import BREAKS, GATE, SAFE, Diff, Difference, mark
from harness.diff.subsections import gate_text
from harness.matrix import TRANSPORTS
from harness.wire.virtio import device_data
from models.conditions import Condition, Static, state_fields
from models.declarations import Field
from models.devices import Versions
from models.releases import Version


def _all_common(d: Diff, x: Version, y: Version) -> list[str]:
    return list(dict.fromkeys(m.name for t in TRANSPORTS for m in common_machines(x, y, t, d.registry)))


def compare_device_vmsds(d: Diff) -> None:
    """The section's and the device vmsd's version_id, and device vmsd fields: virtio_load reads the device vmsd
    with the destination's own outer version_id (virtio_device_get), so the version a source writes is never
    seen: a field gated by version is read by what the destination's version says, not the stream's."""
    for device in d.devices:
        va, vb = d.registry.versions(device, d.a), d.registry.versions(device, d.b)
        fa, fb = d.registry.device_fields(device, d.a), d.registry.device_fields(device, d.b)
        scope = [f"{device}/{t}" for t in d.transports(device)]
        if va.section != vb.section:
            x = Difference("version-changed", va.section.name, f"section version_id {va.section.version} ({d.a}) -> "
                           f"{vb.section.version} ({d.b}), minimum {va.section.minimum} -> {vb.section.minimum}",
                           decided_by="layout", scope=scope)
            for sender, other, vs, vo in ((d.b, d.a, vb, va), (d.a, d.b, va, vb)):
                direction, machines = f"{sender} -> {other}", _all_common(d, sender, other)
                if vs.section.version > vo.section.version:
                    mark(x, BREAKS, direction, machines, f"{direction}: 'unsupported version "
                          f"{vs.section.version} for ... v{vo.section.version}' on every machine type both have; a "
                          "machine type cannot gate a section's version: virtio devices add state in subsections")
                elif vs.section.version < vo.section.minimum:
                    mark(x, BREAKS, direction, machines, f"{direction}: incoming version_id {vs.section.version} is "
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
                mark(x, BREAKS, f"{release} -> {release}", _all_common(d, release, release),
                      f"{release} -> {release}: '{dev.name}: incoming version_id {v.section.version} is too "
                      f"{'new' if v.section.version > dev.version else 'old'}': every load fails")
                d.differences.append(x)
        order = list(dict.fromkeys([f.name for f in fa] + [f.name for f in fb]))
        by_name = {f.name: f for f in fa + fb}
        data = device_data(d.registry.device(device).section, d.registry.wire)
        own = {sc.name for sc in data.subcons if sc.name and sc.name != "subsections"}
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
                   decided_by="layout", scope=[f"{device}/{t}" for t in d.transports(device)],
                   condition=f.condition().describe() if f.present is not None else None)  # type: ignore[union-attr]
    known = {d.a: (in_a, va), d.b: (in_b, vb)}
    cond = f.condition()
    python = cond is not None and cond.python()
    tests_state = False
    for sender, other in ((d.b, d.a), (d.a, d.b), (d.b, d.b), (d.a, d.a)):
        direction = f"{sender} -> {other}"
        if python:
            if sender != other:
                cells = d.cells.run(sender, other, [(device, t) for t in d.transports(device)])
                x.cells += cells
                x.decided_by = "cells"
                x.why.append(f"its test is Python, which diff cannot read: {cells_line(cells)} for {direction}")
                failed = [c["machine"] for c in cells if exercises(c, [f.name])]
                if failed:
                    mark(x, BREAKS, direction, failed, f"{direction}: the matrix fails")
            continue
        bad, open_ = [], []
        for t in d.transports(device):
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
        mark(x, verdict, direction, bad, f"{direction}: {how}, so the stream desynchronizes "
              f"({machine_ranges(bad, d.registry)})")
        tests_state |= bool(open_)
    if x.verdict == SAFE:
        x.why.append("each side writes it exactly where the other reads it" + (
            f" ({gate_text(d, cond, max(d.a, d.b), min(d.a, d.b), [(device, t) for t in d.transports(device)])})"
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

