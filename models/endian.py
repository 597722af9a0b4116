"""The conditions of a bi-endian target (models/configuration.BI_ENDIAN_FAMILIES), in models/conditions.py's
vocabulary: there a guest's reset gives the device the resetting CPU's data endianness (virtio_reset:
virtio_current_cpu_endian), so device_endian is the guest's to set, and virtio/device_endian is sent for a big-endian
aarch64 guest.

    StateField("device_endian", settable=BiEndianTarget(), reset=TargetEndian())
"""

from __future__ import annotations

from typing import Any

from models.conditions import Condition, Static, TargetEndian, Term
from models.configuration import Derived, bi_endian
from models.state import DeviceState


class BiEndianTarget(Condition):
    """The target is bi-endian (aarch64 virt: models/configuration.BI_ENDIAN_FAMILIES): a guest's reset gives the
    device the resetting CPU's data endianness, so device_endian is the guest's to set there."""

    def __call__(self, r: Derived, s: DeviceState) -> bool:
        return bi_endian(r.config.machine)

    def static(self, ctx: Static) -> bool | None:
        return bi_endian(ctx.machine)

    def describe(self) -> str:
        return "the target is bi-endian"


class GuestEndian(Term):
    """device_endian as the guest's last reset left it: on a bi-endian target the state's own value (the CPU's data
    endianness then), elsewhere the target's default (a guest cannot change it)."""

    name = "the resetting guest's endianness"

    def value(self, r: Derived, s: DeviceState) -> Any:
        return s.device_endian if bi_endian(r.config.machine) else TargetEndian().value(r, s)

    def static_value(self, ctx: Static) -> tuple[bool, Any]:
        return (False, None) if bi_endian(ctx.machine) else TargetEndian().static_value(ctx)
