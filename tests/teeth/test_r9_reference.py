"""R9 has teeth: its reference (harness/reference_load.py) is computed from the stream alone in QEMU's load order,
so a model whose feature step runs at the wrong time, or against the wrong host features, is caught even where
the rules that read the model's own result (R1..R8) see nothing wrong. And R9 holds on the real QEMU 7.2
fixtures' streams, the reference agreeing with what the fixtures' drivers wrote."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from harness import reference_load as ref
from harness.matrix import Cell, run_cell
from harness.rules import Run, check_all, r9_load_order
from models import features as F
from models import load
from models.config import Config, Realized, realize
from models.configuration import NetBackend
from models.model import ACCEPTED, REJECTED, guest_rings, state_from_wire
from models.model import load as model_load
from models.registry import BASE
from models.releases import V
from models.reset import reset_state
from models.state import DeviceState
from tests.conftest import fixture_devices

pytestmark = pytest.mark.usefixtures("ci_profile")

MASK32 = (1 << 32) - 1
HUBPORT = NetBackend()


def _features_before_the_subsections(r: Realized, v: Any, incoming: int) -> tuple[int, list[str] | None]:
    """A feature step run at step 3, before the core subsections: it checks the 32-bit field it has then, and
    the high word virtio/64bit_features brings later is only masked, never checked."""
    lo = v.guest_features_lo
    if lo & ~r.host_features & MASK32:
        return lo & r.host_features, [f"Features {lo:#x} unsupported. Allowed features: {r.host_features:#x}"]
    return incoming & r.host_features, None


def _against_the_source(src: Realized) -> Any:
    """A feature step that checks and masks against the source's host features (as if they travelled)."""
    def sanitize(r: Realized, v: Any, incoming: int) -> tuple[int, list[str] | None]:
        host = src.host_features
        if incoming & ~host:
            return incoming & host, [f"Features {incoming:#x} unsupported. Allowed features: {host:#x}"]
        return incoming & host, None
    return sanitize


def _driven(r: Realized, features: int) -> DeviceState:
    """A device the guest drove to DRIVER_OK with `features` (reset otherwise)."""
    return replace(reset_state(r), status=0xF, guest_features=features)


def _config(release: str, machine: str, netdev: NetBackend = HUBPORT) -> Config:
    return Config(V(release), BASE.machine(machine), "virtio-net", netdev=netdev)


def test_a_feature_step_before_the_subsections_is_caught_by_r9_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """7.2 -> 10.0 on pc-i440fx-7.2 (a real fleet pair): the guest features carry ACCESS_PLATFORM (bit 33), which
    the device does not offer. QEMU's feature step, after virtio/64bit_features, refuses it; a model that checks
    at step 3 sees only the low word and accepts. R1..R8 and R13 judge the model's own loaded state (features
    masked by the destination: nothing lost, nothing outside the host features) and pass."""
    src, dst = realize(_config("7.2", "pc-i440fx-7.2")), realize(_config("10.0", "pc-i440fx-7.2"))
    assert not F.has(dst.host_features, F.ACCESS_PLATFORM)
    state = _driven(src, (src.host_features & 0x30020020) | F.bit(F.VERSION_1) | F.bit(F.ACCESS_PLATFORM))

    good = Run.of(src, dst, state)
    assert good.result.outcome == REJECTED and "unsupported" in (good.result.error or "")
    assert r9_load_order(good) is None  # the model refuses where the reference refuses

    monkeypatch.setattr(load, "sanitize_features", _features_before_the_subsections)
    bad = Run.of(src, dst, state)
    assert bad.result.outcome == ACCEPTED
    violations = check_all(bad, same_release=False)
    assert [v.rule for v in violations] == ["R9"], violations
    assert "rejected at the feature step" in violations[0].expected


def test_a_feature_step_against_the_source_host_features_is_caught_by_r9(monkeypatch: pytest.MonkeyPatch) -> None:
    """10.0, the USO case (bug history 11): the source's tap has USO, the destination's has not. The guest
    negotiated GUEST_USO4; QEMU refuses it against the destination's host features. A model that sanitizes against
    the source's accepts it. R9 fires (R8, which reads the loaded features, fires too)."""
    tap = NetBackend("tap", vnet_hdr=True, uso=True)
    src = realize(_config("10.0", "pc-i440fx-10.0", tap))
    dst = realize(_config("10.0", "pc-i440fx-10.0", replace(tap, uso=False)))
    assert F.has(src.host_features, F.NET_GUEST_USO4) and not F.has(dst.host_features, F.NET_GUEST_USO4)
    state = _driven(src, F.bit(F.VERSION_1) | F.bit(F.NET_GUEST_USO4) | F.bit(F.NET_MAC))
    state = replace(state, device=replace(state.device, has_vnet_hdr=1))

    good = Run.of(src, dst, state)
    assert good.result.outcome == REJECTED and r9_load_order(good) is None

    monkeypatch.setattr(load, "sanitize_features", _against_the_source(src))
    bad = Run.of(src, dst, state)
    assert bad.result.outcome == ACCEPTED
    rules = {v.rule for v in check_all(bad, same_release=True)}
    assert "R9" in rules and "R8" in rules


def test_an_endianness_default_taken_before_the_subsections_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """A load that fixes device_endian before the core subsections (and so never takes virtio/device_endian's
    value): R9's reference takes the subsection, as step 11 only fills an endianness still unknown."""
    r = realize(_config("7.2", "pc-i440fx-7.2"))
    state = replace(_driven(r, F.bit(F.NET_MAC)), device_endian=2)  # a big-endian legacy guest's device
    assert r9_load_order(Run.of(r, r, state)) is None
    monkeypatch.setattr(load._Load, "endianness", lambda self: 1)
    v = r9_load_order(Run.of(r, r, state))
    assert v is not None and v.details["device_endian"] == (2, 1)


def test_the_unbroken_model_passes_r9_in_matrix_cells() -> None:
    """Cells of the fleet's releases, both directions, every transport: R9 judged and passed on every example."""
    for cell in (Cell(V("7.2"), V("7.2"), "pci", "virtio-net"), Cell(V("7.2"), V("10.0"), "mmio", "virtio-blk"),
                 Cell(V("11.1"), V("10.0"), "ccw", "virtio-net"), Cell(V("5.2"), V("7.2"), "pci", "virtio-balloon")):
        result = run_cell(cell)
        assert result.status == "pass" and "R9" not in result.failures, cell.id
        assert result.examples > 0


def test_r9_holds_on_the_real_72_streams(fixture_stream: Path) -> None:
    """Every device of every real 7.2 stream: the reference from the stream alone equals what the fixture's
    driver wrote (status, queue_sel, the features it read back, each queue's size and address), and the model's
    load of the stream equals the reference."""
    judged = 0
    for s, p, payload, r, truth in fixture_devices(fixture_stream):
        v = ref.decode_as_destination(r, payload, None)
        assert v is not None, p.section
        want = ref.reference_load(r, v)
        assert want.refused is None, p.section
        if truth is not None:
            assert want.fields["status"] == truth["status"] and want.fields["queue_sel"] == truth["queue_sel"]
            if "guest_features_lo" in truth:
                assert want.fields["guest_features"] & MASK32 == truth["guest_features_lo"], p.section
            for q in truth.get("queues", []):
                got = want.queues[q["index"]]
                assert (got["num"], got["desc"], got["last_avail_idx"]) == (q["num"], q["desc"], q["last_avail_idx"])
        res = model_load(r, payload, guest_rings(s.memory, s.machine, state_from_wire(r, p.value)), p.section)
        assert res.state is not None, p.section
        assert ref.differences(want, res.state) == {}, p.section
        judged += 1
    assert judged > 0


def test_a_load_that_ignores_virtio_ringsize_is_caught() -> None:
    """The source's rx queue is 512 (rx_queue_size=512) and its mmio driver set it to 256, the destination's
    default is 256: 7.2 sends virtio/ringsize and the destination loads num_default 512 from it. A model whose
    loader drops the subsection (its 11.1 behaviour, moved back to 2.0) keeps 256; R1 does not compare
    num_default, R9's reference (10.2 and older load it) does."""

    def mmio(props: dict[str, Any]) -> Realized:
        return realize(Config(V("7.2"), BASE.machine("virt-7.2"), "virtio-net", transport="mmio", props=props))

    src, dst = mmio({"rx_queue_size": 512}), mmio({})
    base = _driven(src, F.bit(F.NET_MAC))
    queues = (replace(base.queues[0], num=256, desc=0x40000000), *base.queues[1:])
    state = replace(base, queues=queues)
    good = Run.of(src, dst, state)
    assert "virtio/ringsize" in [s.name for s in good.decoded.subsections]
    assert good.result.state is not None and good.result.state.num_default[0] == 512
    assert r9_load_order(good) is None
    # the declaration of virtio/ringsize's field says where destinations load it (models/core.py)
    subs = tuple(replace(s, fields=tuple(replace(f, loaded_until=V("2.0")) for f in s.fields))
                 if s.name == "virtio/ringsize" else s for s in BASE.core_subsections)
    dst = realize(dst.config, replace(BASE, core_subsections=subs))
    v = r9_load_order(Run.of(src, dst, state))
    assert v is not None and v.details["num_default"][0][0] == 512 and v.details["num_default"][1][0] == 256, v
