"""The endianness rules have teeth on the bi-endian target: a load that never takes virtio/device_endian's value
(the target's default always, as a destination that skips the subsection would) is caught on aarch64 virt, where a
big-endian guest's device is now drawn (R1 names device_endian first, R7 says the same); with the same seed the
unbroken model passes the cell."""

from __future__ import annotations

import pytest

from harness.matrix import Cell, run_cell
from models import core, load
from models.releases import V
from models.state import ENDIAN_BIG

pytestmark = pytest.mark.usefixtures("ci_profile")

CELL = Cell(V("7.2"), V("7.2"), "mmio", "virtio-rng")


def test_unbroken_model_passes_the_virt_cell() -> None:
    assert run_cell(CELL).status == "pass"


def test_a_load_that_ignores_device_endian_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    def default_only(self):  # type: ignore[no-untyped-def]
        return core.default_endian(self.r)

    monkeypatch.setattr(load._Load, "endianness", default_only)
    result = run_cell(CELL)
    assert result.failure is not None
    _src, _dst, state, out, v = result.failure
    assert state.device_endian == ENDIAN_BIG  # the big-endian guest's device, the case a qtest reset never makes
    assert v.rule == "R1" and v.details == {"device_endian": (ENDIAN_BIG, 1)}, v
    r7 = [(x.expected, x.got) for x in out.violations if x.rule == "R7"]
    assert r7 == [(f"device_endian {ENDIAN_BIG}", "1")], out.violations
