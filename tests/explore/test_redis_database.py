"""Shards sharing a Redis example database (a real redis-server): a failure that one shard finds is replayed by
another shard on another run with another seed, first, before it draws anything new (issue 16.7)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from harness.shard import partition

ROOT = Path(__file__).resolve().parents[2]
# 11.2 -> 11.1 fails R4 (foo=1); its needed() is Python, so the boundary phase cannot set foo: drawing finds it
SCHEMA = ROOT / "tests" / "schema" / "schemas" / "net_foo_python.py"
NARROW = ("--schema", str(SCHEMA), "--releases", "11.1,11.2", "--devices", "virtio-net", "--transports", "pci")
FAILING = "test_cell[11.2-11.1-pci-virtio-net]"
CELLS = ["11.1-11.1", "11.1-11.2", "11.2-11.1", "11.2-11.2"]


def shard_with_failing(prefix: str, n: int) -> int:
    """The shard (1-based) of n that holds the failing cell, as --shard computes it (no durations: by count)."""
    ids = [f"{prefix}::test_cell[{c}-pci-virtio-net]" for c in CELLS]
    return next(k + 1 for k, part in enumerate(partition(ids, {}, n)) if f"{prefix}::{FAILING}" in part)


def r4(reports: Path) -> dict[str, object]:
    entries = json.loads((reports / "compat-matrix.json").read_text())
    return next(e for e in entries if (e["src"], e["dst"], e["rule"]) == ("11.2", "11.1", "R4"))


def pytest_run(reports: Path, db: str, seed: int, shard: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "tests/matrix/test_matrix.py", "-p", "no:randomly", "-q",
                           "-n", "0", *NARROW, "--reports", str(reports), "--example-db", db, "--hypothesis-seed",
                           str(seed), "--shard", shard], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "VIRTIO_COMPAT_REPORTS": str(reports)})


def test_slow_subprocess_failure_found_by_one_shard_is_replayed_by_another(redis_url: str, tmp_path: Path) -> None:
    import redis

    # shard k of 2 (`check`, seed 1) holds the failing cell: it finds the failure, shrinks it, and saves it
    k = shard_with_failing("harness/pytest_matrix.py", 2)
    first = tmp_path / "first"
    p = subprocess.run([sys.executable, "-m", "harness.cli", "check", *NARROW, "--reports", str(first), "-n", "0",
                        "--seed", "1", "--shard", f"{k}/2", "--example-db", redis_url], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 1, p.stdout + p.stderr
    assert f"example database {redis_url}" in p.stdout and f"shard {k}/2" in p.stdout
    assert "FAIL virtio-net pci 11.2 -> 11.1 R4" in p.stdout
    found = r4(first)
    keys = redis.Redis.from_url(redis_url).keys(b"virtio-compat:*")
    assert keys, "nothing was saved in Redis"

    # another run: pytest, three shards, another seed; the shard holding the cell replays the saved example first
    j = shard_with_failing("tests/matrix/test_matrix.py", 3)
    second = tmp_path / "second"
    p = pytest_run(second, redis_url, 99, f"{j}/3")
    assert p.returncode == 1, p.stdout + p.stderr
    assert FAILING in p.stdout
    replayed = r4(second)
    assert replayed["outcome"] == "fail" and replayed["failure"] == found["failure"]  # the same minimal state
    assert sorted(p.name for p in (second / "failures").glob("R4-*.json")) == \
        sorted(p.name for p in (first / "failures").glob("R4-*.json"))

    # the same run without the database has to find it by drawing: many more examples than the replay's
    third = tmp_path / "third"
    p = pytest_run(third, "none", 99, f"{j}/3")
    assert p.returncode == 1, p.stdout + p.stderr
    alone = r4(third)
    assert isinstance(replayed["examples"], int) and isinstance(alone["examples"], int)
    drawn = {k: e["examples"] - e["boundaries"] for k, e in (("replayed", replayed), ("alone", alone))}  # type: ignore[operator]
    assert drawn["replayed"] <= 3 < drawn["alone"], drawn
