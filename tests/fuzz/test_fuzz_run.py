"""A brief, deterministic fuzz run over every fixture and every mutation kind, and the engine's own properties:
inputs depend only on (seed, index), mutations find their fields from the decoded structure."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from harness import fuzz
from harness.fuzz import mutators as fuzz_mutators
from harness.wire.stream import decode_stream
from tests.conftest import SAMPLES, fixture_streams

SEED = 20240805
SAMPLE = SAMPLES / "pc-i440fx-7.2-virtio-net-driven.bin"


@pytest.fixture(scope="module")
def sample_seeds() -> list[fuzz.Seed]:
    return fuzz.load_seeds([SAMPLE])


@pytest.mark.parametrize("path", fixture_streams(), ids=lambda p: p.stem)
def test_brief_run_keeps_the_contract(path: Path) -> None:
    """Every mutation kind on the slim or rich variant of the fixture, and a few on the fixture as it is (a full
    stream costs several times more per input). A failure names the input to make it again."""
    seeds = fuzz.load_seeds([path])
    mutator = fuzz.Mutator(seeds, SEED)
    full = [s for s in seeds if "~" not in s.name]
    light = [s for s in seeds if "~" in s.name]
    plan = [(kind, light[i % 2]) for i, kind in enumerate(fuzz.MUTATIONS)]
    plan += [(kind, full[0]) for kind in ("length", "vmdesc", "duplicate")]
    findings = []
    with fuzz.Checker() as checker:
        for i, (kind, seed) in enumerate(plan):
            m = mutator.mutant(i, kind, seed)
            found = checker.check(m, seed)
            if found is not None:
                findings.append(f"input {i} ({kind} on {seed.name}: {m.note}): {found.kind}: {found.summary}")
    assert not findings, "\n".join(findings)


def test_inputs_depend_only_on_seed_and_index(sample_seeds: list[fuzz.Seed]) -> None:
    a = fuzz.Mutator(sample_seeds, 7)
    b = fuzz.Mutator(fuzz.load_seeds([SAMPLE]), 7)
    firsts = [a.mutant(i) for i in range(40)]
    assert [m.data for m in firsts] == [b.mutant(i).data for i in range(40)]
    assert [m.data for m in reversed(firsts)] == [a.mutant(i).data for i in reversed(range(40))]
    assert [m.data for m in firsts] != [fuzz.Mutator(sample_seeds, 8).mutant(i).data for i in range(40)]
    assert {m.mutation for m in (a.mutant(i) for i in range(300))} == set(fuzz.MUTATIONS)


@pytest.mark.parametrize("kind", fuzz.MUTATIONS)
def test_every_mutation_kind_changes_its_input(kind: str, sample_seeds: list[fuzz.Seed]) -> None:
    mutator = fuzz.Mutator(sample_seeds, SEED)
    seeds = {s.name: s.data for s in sample_seeds}
    changed = 0
    for i in range(20):
        m = mutator.mutant(i, kind, sample_seeds[i % len(sample_seeds)])
        original = seeds.get(m.seed)
        if m.payload is not None:
            original = original[m.payload.offset : m.payload.offset + m.payload.size] if original else None
        changed += m.data != original
    assert changed >= 16


def test_field_map_comes_from_the_decoded_structure(sample_seeds: list[fuzz.Seed]) -> None:
    full, _slim, rich = sample_seeds
    stream = decode_stream(full.data)
    net = next(d for d in stream.devices if d.device == "virtio-net")
    by_path = {f.path: f for f in full.view.fields}
    num_queues = by_path[f"{net.section} > virtio > num_queues"]
    config_len = by_path[f"{net.section} > virtio > config_len"]
    assert (num_queues.value, config_len.value) == (net.value.num_queues, net.value.config_len)
    for f in (num_queues, config_len):
        assert int.from_bytes(full.data[f.offset : f.offset + f.size], "big") == f.value
        assert f.count and f.limit == net.offset + net.size
    counts = {f.path for f in full.view.counts}
    wanted = [f"{net.section} > virtio > device.mac_table_in_use", "ram > blocks > blocks.idstr.length",
              f"{net.section} > header > idstr.length", "vmdesc > length", "configuration > len",
              f"{net.section} > virtio > subsections.virtio/started.name_length"]
    assert [w for w in wanted if w not in counts] == []
    assert any(p.endswith("pages[0].block.length") for p in counts)
    # the rich variant carries what QEMU 7.2 did not send: rss, a second queue pair, a command record
    rich_counts = {f.path for f in rich.view.counts}
    assert any(p.endswith("virtio-net-device/rss.indirections_len") for p in rich_counts)
    assert any(p.endswith("device.curr_queue_pairs") for p in rich_counts)
    assert "command > len" in rich_counts
    # the JSON description's length field is where the file says
    vm = by_path["vmdesc > length"]
    assert struct.unpack(">I", full.data[vm.offset : vm.offset + 4])[0] == len(full.data) - vm.offset - 4


def test_blk_request_markers_are_fields() -> None:
    path = SAMPLES / "f07-i440fx-7.2-blk-inflight-werror.bin"
    seed = fuzz.load_seeds([path], variants=("full",))[0]
    markers = [f for f in seed.view.counts if f.path.endswith(".more") or f.path.endswith("requests.end")]
    assert [seed.data[f.offset] for f in markers] == [1, 0]


def test_int_values_reach_past_what_remains() -> None:
    import random

    f = fuzz.Field("x > num_queues", offset=10, size=4, kind="int", value=3, limit=110, count=True)
    seen: set[int] = set()
    rng = random.Random(1)
    for _ in range(30):
        seen.update(fuzz_mutators.int_values(rng, f, (1, 16)))
    assert {0, 0xFFFFFFFF, 96, 97, 96 // 16 + 1} <= seen


def test_edits_apply_from_the_end() -> None:
    data = bytes(range(10))
    assert fuzz.apply_edits(data, [(2, 1, b"AB"), (5, 2, b""), (9, 0, b"Z")]) == bytes([0, 1]) + b"AB" + \
        bytes([3, 4, 7, 8]) + b"Z" + bytes([9])
    assert fuzz.apply_edits(data, [(2, 4, b""), (3, 1, b"X")]) == bytes([0, 1, 2]) + b"X" + bytes(range(4, 10))
