"""Shards: `--shard i/n` runs the i-th of n disjoint parts of the collected tests, so that n CI runners (each with
`-n auto`) cover the matrix once between them. The parts are balanced by the durations earlier runs recorded in
the reports folder, else by count, and depend only on the collected ids and those files: every shard computes the
same partition, with no coordinator.

A whole run records `durations.json`, shard i of n `durations-IofN.json` (only the tests it ran, so that the
shards' files can be gathered into one folder, CI artifacts of parallel jobs). A run reads them all, the newest
value of each test winning, except the shard files of its own seed: those are the same round of shards (run one
after another in one folder), which must all see the partition the first one saw."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from harness.errors import UsageError

DURATIONS = "durations.json"


def parse_shard(text: str, where: str = "--shard") -> tuple[int, int]:
    """`i/n` with 1 <= i <= n."""
    index, slash, count = text.strip().partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i = n = 0
    if not slash or n < 1 or not 1 <= i <= n:
        raise UsageError(f"{where}: expected I/N with 1 <= I <= N (e.g. 2/4), not {text!r}")
    return i, n


def _read(path: Path) -> tuple[float, int | None, dict[str, float]]:
    """(written, seed, durations) of one file; a missing or unreadable one has none (never an error)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return 0.0, None, {}
    if not isinstance(data, dict) or not isinstance(data.get("durations"), dict):
        return 0.0, None, {}
    seed = data.get("seed")
    durations = {str(k): float(v) for k, v in data["durations"].items() if isinstance(v, (int, float)) and v >= 0}
    return float(data.get("written") or 0.0), seed if isinstance(seed, int) else None, durations


def load_durations(folder: Path, seed: int | None = None) -> dict[str, float]:
    """The durations recorded in `folder` (durations.json and the shard files), newest first, leaving out the
    shard files written with `seed`."""
    files = [(folder / DURATIONS, True)] + [(p, False) for p in sorted(folder.glob("durations-*of*.json"))]
    found = []
    for path, whole in files:
        written, file_seed, durations = _read(path)
        if durations and (whole or file_seed is None or file_seed != seed):
            found.append((written, str(path), durations))
    out: dict[str, float] = {}
    for _, _, durations in sorted(found):
        out.update(durations)
    return out


def durations_file(shard: tuple[int, int] | None) -> str:
    return DURATIONS if shard is None else f"durations-{shard[0]}of{shard[1]}.json"


def durations_record(durations: dict[str, float], seed: int, written: float) -> str:
    return json.dumps({"seed": seed, "written": written,
                       "durations": {k: round(v, 4) for k, v in sorted(durations.items())}}, indent=0)


def partition(ids: list[str], durations: dict[str, float], n: int) -> list[list[str]]:
    """Split `ids` into n parts of about equal total duration: longest first, each to the part with the least
    so far (ties to the lower part). A test with no recorded duration counts as the median of those recorded
    (1 when none is: then the parts differ by at most one test in count)."""
    known = [durations[i] for i in ids if i in durations]
    default = statistics.median(known) if known else 1.0
    cost = {i: durations.get(i, default) for i in ids}
    parts: list[list[str]] = [[] for _ in range(n)]
    load = [0.0] * n
    for i in sorted(set(ids), key=lambda x: (-cost[x], x)):
        k = min(range(n), key=lambda j: (load[j], j))
        parts[k].append(i)
        load[k] += cost[i]
    return parts


def shard_of(ids: list[str], durations: dict[str, float], index: int, n: int) -> set[str]:
    """The ids of shard `index` (1-based) of n."""
    return set(partition(ids, durations, n)[index - 1])
