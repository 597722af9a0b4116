"""Shards: `--shard i/n` runs the i-th of n disjoint parts of the collected tests, so that n CI runners (each with
`-n auto`) cover the matrix once between them. The parts are balanced by the durations a previous run recorded
(`durations.json` in the reports folder: test id -> seconds), else by count, and depend only on the collected ids
and that file: every shard computes the same partition, with no coordinator."""

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


def load_durations(path: Path) -> dict[str, float]:
    """A durations file; a missing or unreadable one is no durations (count balancing), never an error."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): float(v) for k, v in data.items() if isinstance(v, (int, float)) and v >= 0}


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


def merged(previous: dict[str, float], measured: dict[str, float]) -> dict[str, float]:
    """The durations to record: this run's where it ran a test, the previous file's for the rest (another
    shard's tests), so that every shard keeps a full file."""
    return dict(sorted({**previous, **{k: round(v, 4) for k, v in measured.items()}}.items()))
