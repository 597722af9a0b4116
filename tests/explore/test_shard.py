"""--shard i/n: disjoint parts whose union is the whole collection, balanced by recorded durations (issue 16.7)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import UsageError
from harness.shard import load_durations, parse_shard, partition, shard_of

ROOT = Path(__file__).resolve().parents[2]
NARROW = ("--releases", "7.2,10.0,11.1", "--devices", "virtio-net,virtio-blk")


def collect(reports: Path, *extra: str) -> list[str]:
    p = subprocess.run([sys.executable, "-m", "pytest", "tests/matrix/test_matrix.py", "--collect-only", "-q",
                        "-p", "no:randomly", "--reports", str(reports), *NARROW, *extra],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    return [ln for ln in p.stdout.splitlines() if "::test_cell[" in ln]


def test_partition_is_disjoint_complete_and_balanced_by_duration() -> None:
    ids = [f"t{i}" for i in range(10)]
    durations = {"t0": 9.0, **{f"t{i}": 1.0 for i in range(1, 10)}}
    parts = partition(ids, durations, 2)
    assert sorted(parts[0] + parts[1]) == sorted(ids) and not set(parts[0]) & set(parts[1])
    assert parts[0] == ["t0"]  # the long one alone balances the nine short ones
    # no durations: by count, the parts differ by at most one test
    sizes = sorted(len(p) for p in partition(ids, {}, 3))
    assert sizes == [3, 3, 4]
    # a test the file does not know counts as the median of those it knows
    assert [len(p) for p in partition(ids + ["new"], durations, 2)] == [2, 9]  # 9 + 1 against 9 x 1


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/0", ""])
def test_bad_shard_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="--shard"):
        parse_shard(text)


def test_slow_subprocess_pytest_shards_union_is_the_collection(tmp_path: Path) -> None:
    whole = collect(tmp_path)
    assert len(whole) == 54  # 9 release pairs x 3 transports x 2 devices
    # durations recorded by an earlier run: one cell ten times longer than the rest
    slow = next(i for i in whole if "11.1-11.1" in i)
    (tmp_path / "durations.json").write_text(json.dumps(
        {"seed": 1, "written": 1.0, "durations": {i: 10.0 if i == slow else 1.0 for i in whole}}))
    shards = [collect(tmp_path, "--shard", f"{k}/3") for k in (1, 2, 3)]
    assert sorted(sum(shards, [])) == sorted(whole)
    assert sum(len(s) for s in shards) == len(whole)  # disjoint
    # the slow cell's shard has fewer cells: balanced by time, not count
    mine = next(s for s in shards if slow in s)
    assert len(mine) < min(len(s) for s in shards if slow not in s)
    assert set(mine) == shard_of(whole, load_durations(tmp_path), 1 + shards.index(mine), 3)


def test_slow_subprocess_shards_of_one_round_ignore_each_others_files(tmp_path: Path) -> None:
    whole = collect(tmp_path)
    (tmp_path / "durations.json").write_text(json.dumps(
        {"seed": 1, "written": 1.0, "durations": dict.fromkeys(whole, 1.0)}))
    # shard 1 of this round (seed 5) wrote its file; shard 2 with the same seed must see the same partition
    (tmp_path / "durations-1of2.json").write_text(json.dumps(
        {"seed": 5, "written": 2.0, "durations": {whole[0]: 500.0}}))
    first = collect(tmp_path, "--shard", "1/2", "--hypothesis-seed", "5")
    second = collect(tmp_path, "--shard", "2/2", "--hypothesis-seed", "5")
    assert sorted(first + second) == sorted(whole) and not set(first) & set(second)
    # the next round (another seed) reads it: the 500 s cell is then alone in its shard with the fewest cells
    nxt = [collect(tmp_path, "--shard", f"{k}/2", "--hypothesis-seed", "6") for k in (1, 2)]
    assert sorted(sum(nxt, [])) == sorted(whole)
    assert [whole[0] in s for s in nxt].count(True) == 1
    assert min(len(s) for s in nxt) < len(whole) // 2


def test_pytest_shard_option_rejects_a_bad_value(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "pytest", "tests/matrix/test_matrix.py", "--collect-only", "-q",
                        "--reports", str(tmp_path), "--shard", "4/3"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 4 and "--shard: expected I/N" in p.stderr + p.stdout
    assert "Traceback" not in p.stderr + p.stdout
