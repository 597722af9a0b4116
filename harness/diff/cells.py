"""The matrix cells diff runs for what it cannot decide statically (needed() in Python, load checks), and whether
a failing cell is to blame on a difference."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from harness.diff.context import common_machines
from harness.matrix import Cell, CellResult, run_cell
from models import core
from models.registry import BASE, Registry
from models.releases import Version


class CellRunner:
    """The matrix cells diff runs, each once, with the declarations of `registry`."""

    def __init__(self, registry: Registry = BASE) -> None:
        self.registry = registry
        self.results: dict[str, CellResult] = {}

    def run(self, src: Version, dst: Version, scope: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
        out = []
        for device, transport in scope:
            offered = self.registry.device(device).offered
            if not common_machines(src, dst, transport, self.registry) or not (
                    offered(src, transport) and offered(dst, transport)):
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


def cells_line(cells: list[dict[str, Any]]) -> str:
    if not cells:
        return "no machine type both have: no cell to run"
    failed = [x for x in cells if x["status"] == "fail"]
    if not failed:
        return f"ran {len(cells)} matrix cells ({sum(x['examples'] for x in cells)} examples): all pass"
    first = failed[0]
    return (f"ran {len(cells)} matrix cells: {len(failed)} fail, e.g. {first['cell']} on {first['machine']}: "
            f"{first['message']} (state: {first['state']})")

