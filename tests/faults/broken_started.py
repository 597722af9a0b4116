"""A deliberately broken model for the fault tests, loaded into a pytest subprocess with
`-p tests.faults.broken_started` (or PYTEST_PLUGINS): virtio/started is sent whenever the release
knows it, ignoring use-started, so every cell from 4.1+ to an older release fails R4 (as in
tests/teeth). It gives the runs failure files to compare; it is never imported by a test module."""

from __future__ import annotations

from dataclasses import replace

import pytest

from harness.pytest_plugin import REGISTRY
from models import core
from models.registry import Registry
from models.releases import V


def _always_started(registry: Registry) -> Registry:
    out = []
    for sub in registry.core_subsections:
        if sub.name == "virtio/started":
            sub = replace(sub, needed=(core.Rule(V("4.1"), lambda r, s: True, "always"),))
        out.append(sub)
    return replace(registry, core_subsections=tuple(out))


@pytest.hookimpl(trylast=True)  # after harness.pytest_plugin put the session's registry in the stash
def pytest_configure(config: pytest.Config) -> None:
    config.stash[REGISTRY] = _always_started(config.stash[REGISTRY])


# One failing cell is what the fault tests measure (file sizes against a disk limit): the forward cell's
# machine-type promise (R13), which this change breaks too, is left out of these runs.
from harness import rules  # noqa: E402

rules.r13_machine_compat = lambda run: None
