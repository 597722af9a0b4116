"""The matrix reports: compat-matrix.json (one entry per cell and rule), and for people
compat-matrix.md and compat-matrix.html (per device and transport, a source x destination grid)."""

from __future__ import annotations

import html
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from harness.failures import write_atomic, write_files_atomic

MARK = {"pass": "ok", "expected": "expected", "fail": "FAIL", None: "-"}
REAL = " (real)"  # the cell also ran on the real QEMU pair (pytest --real / check --real) and held


def _version_key(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def _grid(entries: list[dict[str, Any]]) -> dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]]:
    """(device, transport) -> (src, dst) -> worst outcome of the cell and its entries."""
    grids: dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]] = defaultdict(dict)
    rank = {"pass": 0, "expected": 1, "fail": 2}
    for e in entries:
        cell = grids[(e["device"], e["transport"])].setdefault((e["src"], e["dst"]),
                                                               {"outcome": "pass", "rules": [], "real": False})
        cell["rules"].append(e)
        cell["real"] |= bool(e.get("qemu")) and e["outcome"] != "fail"
        if rank[e["outcome"]] > rank[cell["outcome"]]:
            cell["outcome"] = e["outcome"]
    return grids


def summary(entries: list[dict[str, Any]]) -> dict[str, int]:
    out = {"pass": 0, "expected": 0, "fail": 0}
    for e in entries:
        out[e["outcome"]] += 1
    return out


def real_qemu(entries: list[dict[str, Any]]) -> str | None:
    """One line on the cells verified on real QEMU: how many, the driven states, the packages."""
    real = [e for e in entries if e.get("qemu")]
    if not real:
        return None
    held = [e for e in real if e["outcome"] != "fail"]
    packages = sorted({p.strip() for e in real for p in (e.get("packages") or "").split(",") if p.strip()},
                      key=lambda p: _version_key(p.split()[1]))
    r5, r9 = (sum(e.get(k) or 0 for e in real) for k in ("r5_payloads", "r9_loads"))
    return (f"Verified on real QEMU: {len(held)} of {len(real)} cells held ({sum(e['examples'] for e in real)} "
            f"driven states, R12; R5 on {r5} source payloads, R9 on {r9} loads); packages: {', '.join(packages)}.")


def _mark(cell: dict[str, Any]) -> str:
    return MARK[cell["outcome"]] + (REAL if cell["real"] else "")


def to_markdown(entries: list[dict[str, Any]]) -> str:
    s = summary(entries)
    lines = ["# virtio-compat: compatibility matrix", "",
             f"{len(entries)} results: {s['pass']} pass, {s['expected']} expected incompatibilities, "
             f"{s['fail']} failures. Rows: source release; columns: destination release. "
             "`ok` pass, `expected` a declared real incompatibility, `FAIL` see the failure file; "
             f"`{REAL.strip()}`: the cell also ran on the real QEMU pair and held.", ""]
    real = real_qemu(entries)
    if real:
        lines += [real, ""]
    for (device, transport), grid in sorted(_grid(entries).items()):
        srcs = sorted({k[0] for k in grid}, key=_version_key)
        dsts = sorted({k[1] for k in grid}, key=_version_key)
        lines += [f"## {device} on {transport}", "", "| src \\ dst | " + " | ".join(dsts) + " |",
                  "|---|" + "---|" * len(dsts)]
        for src in srcs:
            row = [_mark(grid[(src, d)]) if (src, d) in grid else "" for d in dsts]
            lines.append(f"| {src} | " + " | ".join(row) + " |")
        notes = [(k, e) for k, c in sorted(grid.items()) for e in c["rules"] if e["outcome"] != "pass"]
        if notes:
            lines.append("")
            for (src, dst), e in notes:
                what = e["expected"] if e["outcome"] == "expected" else (e["failure"] or "").splitlines()[0]
                lines.append(f"- {src} -> {dst} {e['rule']}: {e['outcome']}: {what}")
        machines = sorted({m for c in grid.values() for e in c["rules"] for m in e["machines"]})
        lines += ["", f"Machine types covered: {', '.join(machines)}", ""]
    return "\n".join(lines)


def to_html(entries: list[dict[str, Any]]) -> str:
    colour = {"pass": "#cfc", "expected": "#ffd", "fail": "#fcc"}
    out = ["<!doctype html><meta charset=utf-8><title>virtio-compat matrix</title>",
           "<style>td,th{border:1px solid #999;padding:2px 6px;font:12px monospace}table{border-collapse:collapse}"
           "</style><h1>virtio-compat: compatibility matrix</h1>"]
    s = summary(entries)
    out.append(f"<p>{len(entries)} results: {s['pass']} pass, {s['expected']} expected, {s['fail']} fail</p>")
    real = real_qemu(entries)
    if real:
        out.append(f"<p>{html.escape(real)} Cells marked {REAL.strip()} ran on the real pair too.</p>")
    for (device, transport), grid in sorted(_grid(entries).items()):
        srcs = sorted({k[0] for k in grid}, key=_version_key)
        dsts = sorted({k[1] for k in grid}, key=_version_key)
        out.append(f"<h2>{html.escape(device)} on {html.escape(transport)}</h2><table><tr><th>src \\ dst</th>"
                   + "".join(f"<th>{d}</th>" for d in dsts) + "</tr>")
        for src in srcs:
            out.append(f"<tr><th>{src}</th>")
            for d in dsts:
                c = grid.get((src, d))
                if c is None:
                    out.append("<td></td>")
                    continue
                tip = html.escape("\n".join(f"{e['rule']}: {e['outcome']} ({e['examples']} examples) "
                                            + (f"on real {e['packages']} " if e.get("qemu") else "")
                                            + f"{e['expected'] or e['failure'] or ''}" for e in c["rules"]))
                out.append(f"<td style='background:{colour[c['outcome']]}' title='{tip}'>{_mark(c)}</td>")
            out.append("</tr>")
        out.append("</table>")
    return "\n".join(out)


def write_reports(entries: list[dict[str, Any]], folder: Path) -> list[Path]:
    """The three reports, all replaced together or none (a reader never sees half of one); a file that
    cannot be written raises WriteError with one line and leaves no temporary file."""
    entries = sorted(entries, key=lambda e: (e["device"], e["transport"], _version_key(e["src"]),
                                             _version_key(e["dst"]), e["rule"]))
    return write_files_atomic([(folder / "compat-matrix.json", json.dumps(entries, indent=1)),
                               (folder / "compat-matrix.md", to_markdown(entries)),
                               (folder / "compat-matrix.html", to_html(entries))])


__all__ = ["write_reports", "write_atomic"]
