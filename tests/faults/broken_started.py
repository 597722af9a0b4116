"""A deliberately broken model for the fault tests, loaded into a pytest subprocess with
`-p tests.faults.broken_started` (or PYTEST_PLUGINS): virtio/started is sent whenever the release
knows it, ignoring use-started, so every cell from 4.1+ to an older release fails R4 (as in
tests/teeth). It gives the runs failure files to compare; it is never imported by a test module."""

from __future__ import annotations

from models import core
from models.releases import V


def _always_started() -> tuple[core.CoreSubsection, ...]:
    out = []
    for sub in core.CORE_SUBSECTIONS:
        if sub.name == "virtio/started":
            sub = core.CoreSubsection(sub.name, sub.since, (core.Rule(V("4.1"), lambda r, s: True, "always"),),
                                      sub.source)
        out.append(sub)
    return tuple(out)


core.CORE_SUBSECTIONS = _always_started()

# One failing cell is what the fault tests measure (file sizes against a disk limit): the forward cell's
# machine-type promise (R13), which this change breaks too, is left out of these runs.
from harness import rules  # noqa: E402

rules.r13_machine_compat = lambda run: None
