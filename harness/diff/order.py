"""diff's judgement of subsection order, where a VMSTATE_*_TEST field's test reads a field of another subsection.

QEMU loads each subsection into the device as it reads it, in stream order (the device vmsd's list, then
vmstate_virtio's), and the destination decides a tested field over the device as loaded so far; the source decides
it over its whole state. A test that reads a field its destination loads later (or never) sees the value from
before the load there, so the two sides can disagree and the stream desynchronizes. Elsewhere the order of
subsections does not matter (they are found by name), which is why only these are judged."""

from __future__ import annotations

from harness.diff.context import common_machines, machine_ranges
from harness.diff.layout import subsections_of
from harness.diff.result import BREAKS, Diff, Difference, mark
from harness.diff.subsections import sendable
from models.conditions import state_fields
from models.registry import Registry
from models.releases import Version


def stream_order(registry: Registry, release: Version, device: str, transport: str) -> list[tuple[str, set[str]]]:
    """The subsections `release` can send for a device on a transport, in stream order, each with its fields'
    names: the device vmsd's own (models/devices/), then the schema modules' device ones, then vmstate_virtio's."""
    infos = subsections_of(release, device, transport, registry)
    own = [s.name for s in getattr(registry.device(device).code, "SUBSECTIONS", ()) if s.known(release)]
    declared = [s.name for s in registry.known(release, device) if s.device is not None]
    core = [s.name for s in registry.known_core_subsections(release)]
    return [(name, {f for f, _t, _s in infos[name].fields}) for name in own + declared + core if name in infos]


def compare_test_order(d: Diff) -> None:
    """Each tested field of a schema module's subsection whose test reads another subsection's field: a break in
    the directions whose destination loads that subsection after it (or does not know it), each release with
    itself included."""
    found: dict[str, Difference] = {}
    late_in: dict[tuple[str, Version, Version], tuple[list[str], list[str]]] = {}  # (field, direction): reads, where
    for device, transport in d.scope():
        orders = {r: stream_order(d.registry, r, device, transport) for r in (d.a, d.b)}
        knows = {r: {n for n, _ in orders[r]} for r in (d.a, d.b)}
        for name in dict.fromkeys(n for r in (d.a, d.b) for n, _ in orders[r]):
            decl = d.registry.declared(name)
            if decl is None:
                continue
            for f in (f for f in decl.fields if f.present is not None):
                cond = f.condition()
                assert cond is not None
                owners = {g: other for r in (d.a, d.b) for other, fields in orders[r] if other != name
                          for g in fields & state_fields(cond)}
                if not owners:
                    continue  # it reads its own fields, the device's or the core fields: loaded before it on both
                key = f"{name}.{f.name}"
                before = {r: {g for g in owners if _loaded_before(orders[r], owners[g], name)} for r in (d.a, d.b)}
                reads = ", ".join(f"{g} ({owners[g]})" for g in sorted(owners))
                for sender, other in ((d.a, d.b), (d.b, d.a), (d.a, d.a), (d.b, d.b)):
                    if name not in knows[sender] or name not in knows[other]:
                        continue
                    # a field the sender does not have either is at its reset value on both sides
                    has = {g for _n, fields in orders[sender] for g in fields}
                    late = sorted((set(owners) - before[other]) & has)
                    if not late and (sender == other or before[sender] == before[other]):
                        continue
                    x = found.setdefault(key, Difference("test-order", key, f"{f.describe()}: its test reads {reads}",
                                                         decided_by="layout", condition=cond.describe()))
                    if f"{device}/{transport}" not in x.scope:
                        x.scope.append(f"{device}/{transport}")
                    if not late:
                        line = (f"{sender} -> {other}: {other} loads {reads} before {name}, as the test needs "
                                "(the two releases order them differently)")
                        if line not in x.why:
                            x.why.append(line)
                        continue
                    info = subsections_of(sender, device, transport, d.registry)[name]
                    machines, _open, python = sendable(d, info, sender, other, device, transport)
                    if python:
                        machines = common_machines(sender, other, transport, d.registry)
                    entry = late_in.setdefault((key, sender, other), ([], []))
                    entry[0].extend(g for g in late if g not in entry[0])
                    entry[1].extend(m.name for m in machines if m.name not in entry[1])
    for (key, sender, other), (late, where) in late_in.items():
        if not where:
            continue  # never sent on a machine type both have
        x = found[key]
        name = key.rsplit(".", 1)[0]
        mark(x, BREAKS, f"{sender} -> {other}", where,
             f"{sender} -> {other}: {other} loads {', '.join(late)} after {name} or not at all (subsections load in "
             f"stream order), so its test sees the value from before the load while {sender} decided over its "
             f"own state: the two sides can disagree and the stream desynchronizes "
             f"({machine_ranges(where, d.registry)})")
    for x in found.values():
        if x.verdict == BREAKS:
            x.why.append("fix: send what the test reads before the subsection (declare that subsection first, or "
                         "after= it), or test a property a compat entry sets")
        d.differences.append(x)


def _loaded_before(order: list[tuple[str, set[str]]], owner: str, name: str) -> bool:
    names = [n for n, _ in order]
    return owner in names and names.index(owner) < names.index(name)
