"""R5 and R9 on real QEMU (harness/qemu/presence.py): the subsections a real source binary's stream carries against what
the model of its release sends for the same state. On the real 7.2 fixtures (no QEMU needed) and on streams the
fleet's 7.2 saves now; a model with a wrong needed() is caught, naming the subsection."""

from __future__ import annotations

import functools
import random
from dataclasses import replace
from pathlib import Path

import pytest

from harness.qemu import crosscheck, presence
from harness.wire.stream import decode_stream
from models import core
from models.config import realize
from models.registry import BASE, Registry
from models.releases import V
from tests.conftest import fixture_streams, truth_of
from tests.qemu.test_fleet import fleet_binary


def _virtqueues_never_needed() -> Registry:
    """The in-tree declarations with virtio/virtqueues' needed() wrong: never sent."""
    subs = tuple(replace(s, needed=(core.Rule(V("2.4"), lambda r, s: False, "never"),))
                 if s.name == "virtio/virtqueues" else s for s in BASE.core_subsections)
    return replace(BASE, core_subsections=subs)


def test_the_real_72_fixtures_carry_the_subsections_the_model_sends(fixture_stream: Path) -> None:
    """Each device of each fixture: the subsections in the real stream are those its driver's notes expect, and
    the model of 7.2 sends the same for the state the stream holds."""
    truth = truth_of(fixture_stream)
    s = decode_stream(fixture_stream.read_bytes())
    checked, lines = presence.check(s, V("7.2"), truth["qemu_cmdline"])
    assert lines == [] and checked == len(s.devices)
    by_section = {t["section"]: t for t in truth["devices"]}
    for p in s.devices:
        want = by_section.get(p.section, {}).get("expect_subsections")
        if want is not None:
            assert [n for n in presence.subsections(p.value) if n.startswith(("virtio/", "virtio_"))] == want


def test_a_wrong_needed_is_caught_on_a_fixture(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real 7.2 stream with virtio-net on pc-i440fx-7.2 (f01 of the shared fixtures, else the package's sample;
    VERSION_1 offered): QEMU sends virtio/virtqueues for each device; a model whose needed() says never is named
    for each."""
    stream = next(p for p in fixture_streams() if "i440fx-7.2" in p.name and "net" in p.name)
    monkeypatch.setattr(presence, "realize", functools.partial(realize, registry=_virtqueues_never_needed()))
    s = decode_stream(stream.read_bytes())
    _checked, lines = presence.check(s, V("7.2"), truth_of(stream)["qemu_cmdline"])
    assert "R5: 0000:00:03.0/virtio-net: QEMU 7.2 sends virtio/virtqueues, the model of 7.2 does not" in lines
    assert lines == [f"R5: {p.section}: QEMU 7.2 sends virtio/virtqueues, the model of 7.2 does not"
                     for p in s.devices]


@pytest.mark.qemu
def test_real_source_streams_hold_r5_and_a_wrong_needed_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fleet's 7.2 drives and saves every device it offers on pc-i440fx-7.2; R5 holds the model to each payload.
    With virtio/virtqueues' needed() broken, the pair's disagreements name it."""
    fleet_binary("7.2")
    side = crosscheck.side("7.2")
    # virtio-scsi's in-flight requests on a packed=on host are rejected (a known incompatibility): R9 counts loads
    kinds = [k for k in crosscheck.kinds_for(side, side, "pc-i440fx-7.2") if k != "virtio-scsi"]
    assert "virtio-net" in kinds and "virtio-keyboard" in kinds and "virtio-multitouch" not in kinds  # 8.0's
    ex = crosscheck.run_example(0, random.Random(3), side, side, "pc-i440fx-7.2", list(kinds))
    n = len(kinds)
    assert ex.presence_checked == n and ex.outcome == "accepted" and ex.load_order_checked == n
    assert not [d for d in ex.disagreements if d.startswith(("R5", "R9"))], ex.disagreements

    monkeypatch.setattr(presence, "realize", functools.partial(realize, registry=_virtqueues_never_needed()))
    ex = crosscheck.run_example(0, random.Random(3), side, side, "pc-i440fx-7.2", ["virtio-net"])
    assert ("R5: 0000:00:03.0/virtio-net: QEMU 7.2 sends virtio/virtqueues, the model of 7.2 does not"
            in ex.disagreements), ex.disagreements


@pytest.mark.qemu
def test_r9_on_a_real_stream_catches_an_endianness_taken_early(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model's load of what the fleet's 7.2 saved, with its endianness step fixed to BIG (as a load that set
    it before the subsections from the wrong side): R9 names device_endian against the reference."""
    from models import load

    fleet_binary("7.2")
    side = crosscheck.side("7.2")
    monkeypatch.setattr(load._Load, "endianness", lambda self: 2)
    ex = crosscheck.run_example(0, random.Random(3), side, side, "pc-i440fx-7.2", ["virtio-rng"])
    assert ex.outcome == "accepted" and ex.load_order_checked == 1
    assert [d for d in ex.disagreements if d.startswith("R9")] == [
        "R9: 0000:00:03.0/virtio-rng: device_endian: reference 1, model 2"], ex.disagreements
