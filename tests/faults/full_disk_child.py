"""The writer side of tests/faults/test_full_disk.py, run in a subprocess whose file-size limit
(RLIMIT_FSIZE, with SIGXFSZ ignored so that a write past it fails with EFBIG) stands for a full disk:
`python -m tests.faults.full_disk_child SCENARIO FOLDER`. Everything is prepared before the limit is set;
it prints one JSON object: what the writer raised."""

from __future__ import annotations

import json
import resource
import signal
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any


def _limit(size: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def failure(folder: Path) -> dict[str, Any]:
    """A failure file larger than the limit (a state QEMU 2.7 rejects: the guest index is 0x8000 ahead)."""
    from harness.failures import failure_record, write_failure
    from harness.matrix import run_example
    from models.config import Config, realize
    from models.model import reset_state
    from models.releases import MachineType, V

    src = Config(V("2.7"), MachineType.parse("pc-i440fx-2.7"), "virtio-net", "pci", 1, 128, {"romfile": ""})
    s = reset_state(realize(src))
    q0 = replace(s.queues[0], desc=0x100000, last_avail_idx=0x8000)
    bad = replace(s, status=7, queues=(q0, *s.queues[1:]))
    out = run_example(src, src, bad)
    v = out.violations[0]
    size = len(json.dumps(failure_record(None, src, src, bad, out, v), indent=1))
    _limit(size // 2)
    try:
        write_failure(None, src, src, bad, out, v, folder)
    except Exception as e:
        return {"raised": type(e).__name__, "message": str(e), "size": size}
    return {"raised": None, "size": size}


def reports(folder: Path) -> dict[str, Any]:
    """The three matrix reports, the JSON one larger than the limit, over an earlier run's reports."""
    from harness.report import to_html, to_markdown, write_reports

    base = {"src": "7.2", "dst": "7.2", "transport": "pci", "device": "virtio-net", "expected": None,
            "examples": 12, "machines": ["pc-i440fx-7.2"], "qemu": False, "failure": None, "outcome": "pass"}
    entries = [{**base, "src": f"{major}.{minor}", "rule": f"R{rule}"}
               for major in range(2, 11) for minor in range(3) for rule in range(1, 10)]
    sizes = {"json": len(json.dumps(entries, indent=1)), "md": len(to_markdown(entries)),
             "html": len(to_html(entries))}
    _limit(sizes["json"] // 2)
    try:
        write_reports(entries, folder)
    except Exception as e:
        return {"raised": type(e).__name__, "message": str(e), "sizes": sizes}
    return {"raised": None, "sizes": sizes}


def parts(folder: Path) -> dict[str, Any]:
    """Result lines appended to a part until the limit cuts one."""
    from harness.pytest_plugin import record

    config = SimpleNamespace(_virtio_compat_parts=folder / ".parts")
    entry = {"src": "7.2", "dst": "7.2", "transport": "pci", "device": "virtio-net", "outcome": "pass",
             "failure": None}
    line = len(json.dumps({**entry, "rule": "R1"}, sort_keys=True)) + 1
    _limit(2 * line + line // 2)
    for i in range(1, 10):
        try:
            record(config, {**entry, "rule": f"R{i}"})  # type: ignore[arg-type]
        except Exception as e:
            return {"raised": type(e).__name__, "message": str(e), "written": i - 1}
    return {"raised": None}


if __name__ == "__main__":
    scenario, folder = sys.argv[1], Path(sys.argv[2])
    print(json.dumps({"failure": failure, "reports": reports, "parts": parts}[scenario](folder)))
