"""How the matrix explores over time: the run's seed (from the commit under test, printed, given again with one
option), the example database that the cells keep what they find in (a folder, a Redis server shared by shards and
machines, or none), and what a run drew (a digest per example, compared with the previous run's).

The `ci` profile is not derandomized: each commit draws new examples, the same commit draws the same ones (every
cell's seed follows from the run's seed and the cell), and failures found before are replayed first from the
database. Failure files never need the database or the seed: they hold the whole case."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from hypothesis.database import ExampleDatabase

from harness.errors import UsageError

SEED_ENV = "VIRTIO_COMPAT_SEED"
DB_ENV = "VIRTIO_COMPAT_EXAMPLE_DB"
ORIGIN_ENV = "VIRTIO_COMPAT_SEED_ORIGIN"
# the commit a CI job tests, where its checkout may be shallow or detached (GitLab, GitHub)
COMMIT_ENVS = ("CI_COMMIT_SHA", "GITHUB_SHA")
REDIS_PREFIX = b"virtio-compat:"  # keys of the shared Redis database (Hypothesis' own prefix names no project)
EXPLORED = "explored.json"


@dataclass(frozen=True)
class RunSeed:
    value: int
    origin: str  # where it came from, printed beside it

    def __str__(self) -> str:
        return f"seed {self.value} ({self.origin})"


def parse_seed(text: str, where: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise UsageError(f"{where}: expected a seed (a whole number >= 0), not {text!r}") from None
    if value < 0:
        raise UsageError(f"{where}: expected a seed >= 0, not {value}")
    return value


@lru_cache(maxsize=4)
def commit(cwd: str) -> tuple[str, str] | None:
    """The commit under test and where it was read: CI's variable, else `git rev-parse HEAD` in `cwd`."""
    for name in COMMIT_ENVS:
        sha = os.environ.get(name, "").strip()
        if len(sha) >= 8 and all(c in "0123456789abcdefABCDEF" for c in sha):
            return sha.lower(), name
    try:
        p = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None  # no git here
    sha = p.stdout.strip()
    return (sha, "git HEAD") if p.returncode == 0 and len(sha) >= 8 else None


def run_seed() -> RunSeed:
    """The run's seed: --hypothesis-seed (pytest; `check --seed` gives it), else $VIRTIO_COMPAT_SEED, else the
    commit under test (its first 32 bits), else 0 outside a git checkout. Every process of a run (xdist workers,
    shards) finds the same one."""
    from hypothesis import core

    forced = core.global_force_seed
    if forced is not None:
        if isinstance(forced, int):  # `check` gives its seed this way, and says where it came from
            return RunSeed(forced, os.environ.get(ORIGIN_ENV) or "--hypothesis-seed")
        digest = hashlib.sha256(str(forced).encode()).digest()
        return RunSeed(int.from_bytes(digest[:4], "big"), f"--hypothesis-seed {forced!r}")
    text = os.environ.get(SEED_ENV, "").strip()
    if text:
        return RunSeed(parse_seed(text, SEED_ENV), SEED_ENV)
    found = commit(os.getcwd())
    if found is None:
        return RunSeed(0, "no git commit here: a fixed seed")
    sha, where = found
    return RunSeed(int(sha[:8], 16), f"commit {sha[:10]}" + ("" if where == "git HEAD" else f", ${where}"))


def cell_seed(seed: int, key: str) -> int:
    """A cell's own seed: cells of one run draw independently, and the same cell with the same run seed draws
    the same examples on any number of workers and shards."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big")


# --- the example database --------------------------------------------------------------------------------------


def example_database(spec: str, where: str) -> ExampleDatabase | None:
    """`none`, a folder, or `redis://host:port/db` (a Redis server shared by shards and machines). A Redis server
    that does not answer is a usage error here, not a traceback in every cell."""
    from hypothesis.database import DirectoryBasedExampleDatabase

    spec = spec.strip()
    if spec.lower() == "none":
        return None
    if spec.startswith(("redis://", "rediss://", "unix://")):
        try:
            import redis
            from hypothesis.extra.redis import RedisExampleDatabase
        except ImportError:
            raise UsageError(f"{where}: {spec} needs the redis package (pip install 'virtio-compat[nightly]')"
                             ) from None
        try:
            client = redis.Redis.from_url(spec, socket_connect_timeout=5, socket_timeout=30)
            client.ping()
        except ValueError as e:
            raise UsageError(f"{where}: {spec}: {e}") from None
        except redis.RedisError as e:
            raise UsageError(f"{where}: cannot reach Redis at {spec}: {e}") from None
        return without_pareto(RedisExampleDatabase(client, key_prefix=REDIS_PREFIX))
    if "://" in spec:
        raise UsageError(f"{where}: {spec!r} is neither none, a folder nor redis://HOST:PORT/DB")
    folder = Path(spec)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{where}: {spec} is not a directory")
    return without_pareto(DirectoryBasedExampleDatabase(str(folder)))


class WithoutPareto(ExampleDatabase):
    """A database less Hypothesis' pareto front of target() scores (keys ending .pareto): every cell would replay
    two of them before drawing (12 examples become 14) and write them back after, a fifth more time for the ci
    profile; failures (the primary and .secondary keys) and HypoFuzz's entries are kept."""

    def __init__(self, inner: ExampleDatabase) -> None:
        super().__init__()
        self.inner = inner

    def __repr__(self) -> str:
        return f"without_pareto({self.inner!r})"

    def __eq__(self, other: object) -> bool:  # HypoFuzz compares a test's database with the default one
        return isinstance(other, WithoutPareto) and other.inner == self.inner

    def __hash__(self) -> int:
        return hash(repr(self.inner))

    def save(self, key: bytes, value: bytes) -> None:
        if not key.endswith(b".pareto"):
            self.inner.save(key, value)

    def fetch(self, key: bytes) -> Iterable[bytes]:
        return () if key.endswith(b".pareto") else self.inner.fetch(key)

    def delete(self, key: bytes, value: bytes) -> None:
        if not key.endswith(b".pareto"):
            self.inner.delete(key, value)


def without_pareto(db: ExampleDatabase) -> ExampleDatabase:
    return WithoutPareto(db)


def default_database() -> ExampleDatabase:
    """Hypothesis' own default folder (.hypothesis/examples, or under $HYPOTHESIS_STORAGE_DIRECTORY), relative to
    where the run is; named here without asking Hypothesis (that, at plugin import, makes it warn)."""
    from hypothesis.database import DirectoryBasedExampleDatabase

    base = os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY") or ".hypothesis"
    return without_pareto(DirectoryBasedExampleDatabase(str(Path(base) / "examples")))


def describe_database(db: ExampleDatabase | None) -> str:
    db = getattr(db, "inner", db)
    if db is None:
        return "no example database"
    conn = getattr(getattr(db, "redis", None), "connection_pool", None)
    if conn is not None:
        kw = conn.connection_kwargs
        return f"example database redis://{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}"
    path = getattr(db, "path", None)
    return f"example database {path}" if path is not None else f"example database {db!r}"


# --- what a run explored ---------------------------------------------------------------------------------------


def example_digest(*parts: Any) -> str:
    """A short digest of one drawn example (configurations and state): equal examples, equal digests, in any
    process. Their reprs, not their JSON (20 times faster, a few microseconds an example): the values are frozen
    dataclasses, tuples, bytes, ints and insertion-ordered mappings, whose reprs do not depend on the process's
    hash seed (the only sets are of feature bits, ints, which hash to themselves)."""
    return hashlib.blake2b(repr(parts).encode(), digest_size=8).hexdigest()


def explored_record(cells: dict[str, list[str]], seed: str, previous: Path | None) -> dict[str, Any]:
    """The run's digests per cell, and how many of its distinct examples the previous run (its file) did not
    draw. Same cells only: a cell the previous run did not have counts all its examples as new."""
    before: dict[str, list[str]] = {}
    before_seed = None
    if previous is not None and previous.is_file():
        try:
            old = json.loads(previous.read_text())
            before, before_seed = dict(old.get("cells", {})), old.get("seed")
        except (ValueError, AttributeError, OSError):
            before = {}
    distinct = new = 0
    for cell, digests in cells.items():
        now, then = set(digests), set(before.get(cell, ()))
        distinct += len(now)
        new += len(now - then)
    return {"seed": seed, "previous_seed": before_seed, "examples": distinct, "new": new,
            "cells": {k: sorted(set(v)) for k, v in sorted(cells.items())},
            "previous_examples": sum(len(set(v)) for v in before.values()) if before else None}


def explored_line(record: dict[str, Any]) -> str:
    if record.get("previous_examples") is None:
        return f"explored {record['examples']} distinct examples (no previous run to compare with)"
    return (f"explored {record['examples']} distinct examples, {record['new']} of them not drawn by the previous "
            f"run, {record['previous_seed']}")
