"""`virtio-compat diff A B`: the differences of two releases, compared part by part, as text or JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.diff.checks import compare_checks, compare_properties
from harness.diff.devices import compare_device_vmsds
from harness.diff.order import compare_test_order
from harness.diff.result import RANK, SHOWN, Diff, Difference
from harness.diff.subsections import compare_subsections
from harness.errors import UsageError
from harness.wire.virtio import TRANSPORTS
from models.declarations import Release
from models.registry import BASE, Registry
from models.releases import Version


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
    older, newer = min(a, b), max(a, b)
    for name in devices:  # a type one release has and the other not: no state of it crosses between them
        d = registry.device(name)
        for t in (t for t in TRANSPORTS if d.offered(newer, t) != d.offered(older, t)):
            has, lacks = (newer, older) if d.offered(newer, t) else (older, newer)
            out.differences.append(Difference(
                "device-added" if has == newer else "device-removed", d.qom_type(t),
                f"{has} has {d.qom_type(t)}, {lacks} does not", scope=[f"{name}/{t}"],
                why=[f"a {has} VM with one cannot migrate to {lacks}: the destination cannot be started with it "
                     f"({d.source or 'its Device declaration'})"]))
    compare_subsections(out)
    compare_device_vmsds(out)
    compare_test_order(out)
    compare_checks(out)
    compare_properties(out)
    return out


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
    if args.device and args.device not in registry.device_names:
        raise UsageError(f"--device: unknown device {args.device!r} (known: {', '.join(registry.device_names)})")
    from hypothesis import settings

    import harness.pytest_plugin  # noqa: F401  (registers the Hypothesis profiles)

    settings.load_profile(args.profile)
    devices = [args.device] if args.device else list(registry.device_names)
    result = diff(a, b, devices, list(dict.fromkeys(paths)), args.profile, registry)
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
    order = sorted(r.differences, key=lambda x: -RANK[x.verdict])
    for x in order:
        head = f"{SHOWN[x.verdict]}: {x.kind} {x.subject}: {x.detail}"
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
