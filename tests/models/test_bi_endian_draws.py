"""device_endian is the guest's on a bi-endian target (aarch64 virt): the driver strategy draws both endiannesses
there, and keeps the target's default elsewhere; `diff`'s static reading of virtio/device_endian's needed() follows
(undecided on virt, never sent on pc, whatever the guest)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings

from models import core
from models.conditions import Static
from models.config import realize
from models.configuration import Config
from models.releases import MachineType, V
from models.state import ENDIAN_BIG, ENDIAN_LITTLE
from strategies.driver import device_states

MACHINES = (("virt-7.2", "mmio"), ("pc-i440fx-7.2", "pci"), ("s390-ccw-virtio-7.2", "ccw"))


def _drawn(machine: str, transport: str) -> set[int]:
    r = realize(Config(V("7.2"), MachineType.parse(machine), "virtio-rng", transport, mem_mb=64))
    got: set[int] = set()

    @settings(max_examples=60, database=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(device_states(r))
    def draw(state: Any) -> None:
        got.add(state.device_endian)

    draw()
    return got


def test_both_endiannesses_are_drawn_only_on_the_bi_endian_target() -> None:
    assert {m: _drawn(m, t) for m, t in MACHINES} == {
        "virt-7.2": {ENDIAN_LITTLE, ENDIAN_BIG}, "pc-i440fx-7.2": {ENDIAN_LITTLE},
        "s390-ccw-virtio-7.2": {ENDIAN_BIG}}


def test_device_endian_needed_is_decided_statically_off_the_bi_endian_target() -> None:
    sub = next(s for s in core.CORE_SUBSECTIONS if s.name == "virtio/device_endian")
    rule = sub.needed[-1].test
    decided = {m: rule.static(Static(V("7.2"), MachineType.parse(m), "virtio-rng", t, {})) for m, t in MACHINES}
    # s390x sends it for a VERSION_1 device (big is not little): the guest's features decide there
    assert decided == {"virt-7.2": None, "pc-i440fx-7.2": False, "s390-ccw-virtio-7.2": None}
