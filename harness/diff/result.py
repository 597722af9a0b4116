"""diff's result: the differences between two releases, each with its verdict, and what deciding them needs
(cells run once, static contexts cached)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from harness.diff.cells import CellRunner
from harness.diff.context import common_machines, static_context
from harness.matrix import TRANSPORTS
from models.conditions import Static
from models.registry import BASE, Registry
from models.releases import MachineType, Version

SAFE, GATE, BREAKS = "safe", "needs-gate", "breaks"
RANK = {SAFE: 0, GATE: 1, BREAKS: 2}
SHOWN = {SAFE: "safe", GATE: "NEEDS A MACHINE-TYPE GATE", BREAKS: "BREAKS"}


@dataclass
class Difference:
    kind: str  # subsection-added | subsection-removed | version-changed | field-added | field-removed | field-moved
    # | field-resized | needed-changed | check-added | check-removed | check-changed | property-changed
    # | property-added | property-removed | release-added | device-added | device-removed
    subject: str
    detail: str
    verdict: str = SAFE
    direction: str | None = None  # the direction that breaks, "11.2 -> 11.1" (or both, "both")
    why: list[str] = field(default_factory=list)
    condition: str | None = None  # needed(), when the difference is a subsection's
    decided_by: str = "static"  # static | cells | layout
    scope: list[str] = field(default_factory=list)  # device/transport pairs it concerns
    machines: list[str] = field(default_factory=list)  # where it breaks
    cells: list[dict[str, Any]] = field(default_factory=list)  # the matrix cells run to decide it

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)




@dataclass
class Diff:
    a: Version
    b: Version
    devices: list[str]
    schemas: list[str]
    profile: str
    registry: Registry = BASE
    differences: list[Difference] = field(default_factory=list)
    cells: CellRunner = field(init=False)

    def __post_init__(self) -> None:
        self.cells = CellRunner(self.registry)
        self._statics: dict[Any, Static] = {}

    def static(self, sender: Version, other: Version, machine: MachineType, device: str, transport: str) -> Static:
        key = (sender, other, machine, device, transport)
        if key not in self._statics:
            self._statics[key] = static_context(self.registry, sender, other, machine, device, transport)
        return self._statics[key]

    def scope(self) -> list[tuple[str, str]]:
        return [(d, t) for d in self.devices for t in self.transports(d)]

    def transports(self, device: str) -> list[str]:
        """The transports QEMU offers the device on in both releases (where a state of it can cross)."""
        d = self.registry.device(device)
        return [t for t in TRANSPORTS if d.offered(self.a, t) and d.offered(self.b, t)]

    def shared(self) -> int:
        """How many machine types both releases have (none: no migration between them at all)."""
        return sum(len(common_machines(self.a, self.b, t, self.registry)) for t in TRANSPORTS)

    @property
    def breaks(self) -> list[Difference]:
        return [d for d in self.differences if d.verdict != SAFE]

    def as_json(self) -> dict[str, Any]:
        return {"a": str(self.a), "b": str(self.b), "devices": self.devices, "schema": self.schemas,
                "profile": self.profile, "differences": [d.as_json() for d in self.differences],
                "breaks": len(self.breaks), "cells_run": sorted(self.cells.results)}



def scope_text(keys: Iterable[tuple[str, str]]) -> list[str]:
    return [f"{dev}/{tr}" for dev, tr in keys]


def mark(diff_: Difference, verdict: str, direction: str, machines: Iterable[str], why: str) -> None:
    if RANK[verdict] > RANK[diff_.verdict]:
        diff_.verdict = verdict
    diff_.direction = direction if diff_.direction in (None, direction) else "both"
    diff_.machines = list(dict.fromkeys(diff_.machines + list(machines)))
    diff_.why.append(why)

