"""The rules of DESIGN.md, each a function over (source, destination, state) that returns None when
it holds and a Violation (what was expected, what happened) when it does not."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from harness import reference_load as ref
from harness.annotate import tree_diff
from harness.errors import StreamError
from harness.projection import projection, sent_subsections
from harness.wire.payload import decode_payload
from models import core, declared
from models.config import Realized, realize
from models.model import ACCEPTED, ACCEPTED_BROKEN, REJECTED, LoadResult, load, save, section_version
from models.save import save_params
from models.state import DeviceState

BROKEN_SINCE = next(s.since for s in core.CORE_SUBSECTIONS if s.name == "virtio/broken")


@dataclass(frozen=True)
class Violation:
    rule: str
    expected: str
    got: str
    details: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.rule}: expected {self.expected}; got {self.got}"


@dataclass
class Run:
    """One source state saved by one release and loaded by another."""

    src: Realized
    dst: Realized
    state: DeviceState
    data: bytes
    result: LoadResult
    _decoded: Any = None

    @property
    def decoded(self) -> Any:
        """The saved payload decoded once (rules R5-R7 read it)."""
        if self._decoded is None:
            self._decoded = decode_payload(self.data, self.src.config.transport, self.src.device.section,
                                           extras=self.src.registry.wire,
                                           schema_fields=declared.on_wire(self.src, self.state),
                                           **save_params(self.src, self.state))
        return self._decoded

    @classmethod
    def of(cls, src: Realized, dst: Realized, state: DeviceState) -> Run:
        data = save(src, state)
        rings = [(q.avail_idx, q.used_idx) for q in state.queues]
        return cls(src, dst, state, data, load(dst, data, rings, f"{src.config.device}",
                                                version_id=section_version(src)))


def _diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {k: (a[k], b.get(k)) for k in a if a[k] != b.get(k)}


def _preserved_diff(run: Run, loaded: DeviceState) -> dict[str, Any]:
    """Where the loaded state differs from the saved one, as the pair migrates it (harness/projection.py)."""
    sent = sent_subsections(run.decoded)
    d = _diff(projection(run.src, run.dst, run.state, sent), projection(run.src, run.dst, loaded, sent))
    d.update(_declared_diff(run))
    return d


def _declared_diff(run: Run) -> dict[str, Any]:
    """Fields of schema modules (models/schema.py) that the stream carried: the loaded state keeps them. One in a
    subsection not sent is not migrated (the projection leaves it out; R5 checks that needed() decided that)."""
    if not run.dst.registry.subsections or run.result.state is None:
        return {}
    carried, loaded = declared.sent(run.dst.registry, run.decoded), dict(run.result.state.extra)
    return {k: (v, loaded.get(k)) for k, v in carried.items() if loaded.get(k) != v}


def _accepted(run: Run) -> DeviceState | None:
    """The loaded state if the load was accepted; a device saved broken (virtio/broken) is loaded broken, which is
    its state preserved."""
    want = ACCEPTED_BROKEN if run.state.broken and run.dst.release >= BROKEN_SINCE else ACCEPTED
    return run.result.state if run.result.outcome == want else None


def r1_round_trip(run: Run) -> Violation | None:
    loaded = _accepted(run)
    if loaded is None:
        return Violation("R1", "accepted", f"{run.result.outcome}: {run.result.error}")
    d = _preserved_diff(run, loaded)
    return Violation("R1", "the loaded state equals the saved one", f"differs in {sorted(d)}", d) if d else None


def r2_fixed_point(run: Run) -> Violation | None:
    loaded = _accepted(run)
    if loaded is None:
        return None  # R1 reports it
    again = save(run.dst, loaded)
    if again != run.data:
        at = next((i for i, (x, y) in enumerate(zip(again, run.data, strict=False)) if x != y),
                  min(len(again), len(run.data)))
        return Violation("R2", "save(load(save(s))) == save(s)", f"bytes differ from offset {at}",
                         {"first_difference": at})
    return None


def r34_migration(run: Run, rule: str) -> Violation | None:
    """R3 (forward) / R4 (backward): accepted and state preserved."""
    loaded = _accepted(run)
    if loaded is None:
        return Violation(rule, "accepted", f"{run.result.outcome}: {run.result.error}",
                         {"lines": list(run.result.lines)})
    d = _preserved_diff(run, loaded)
    return Violation(rule, "state preserved", f"differs in {sorted(d)}", d) if d else None


def r5_subsection_presence(run: Run) -> Violation | None:
    v = run.decoded
    got = [s.name for s in v.subsections]
    want = [s.name for s in run.src.registry.known_core_subsections(run.src.release)
            if s.is_needed(run.src, run.state)]
    if got != want:
        return Violation("R5", f"subsections {want}", f"{got}")
    # device subsections that schema modules declare (the devices' own are written by their code alone)
    got = [s.name for s in getattr(v.device, "subsections", None) or [] if run.src.registry.declared(s.name)]
    want = [e["name"] for e in declared.device_wire(run.src, run.state)]
    return None if got == want else Violation("R5", f"device subsections {want}", f"{got}")


def r6_unknown_subsection(run: Run) -> Violation | None:
    v = run.decoded
    known = {s.name for s in run.dst.registry.known_core_subsections(run.dst.release)}
    unknown = [s.name for s in v.subsections if s.name not in known]
    if unknown and run.result.outcome != REJECTED:
        return Violation("R6", f"rejected: {unknown[0]} is unknown to {run.dst.release}", run.result.outcome)
    return None


def r7_endianness(run: Run) -> Violation | None:
    if run.result.state is None:
        return None
    v = run.decoded
    sent = next((s.body.device_endian for s in v.subsections if s.name == "virtio/device_endian"), None)
    want = sent if sent is not None else core.default_endian(run.dst)
    got = run.result.state.device_endian
    return None if got == want else Violation("R7", f"device_endian {want}", f"{got}")


def r8_features(run: Run) -> Violation | None:
    st = run.result.state
    if st is not None and st.guest_features & ~run.dst.host_features:
        return Violation("R8", "guest features within the destination's host features",
                         f"{st.guest_features:#x} vs host {run.dst.host_features:#x}")
    return None


def r9_load_order(run: Run) -> Violation | None:
    """R9: the loaded state equals the reference that harness/reference_load.py computes from the stream alone in
    QEMU's load order (device data before the core subsections, endianness after them, the features checked and
    masked against the destination's host features after everything), never from the model's own load steps."""
    res = run.result
    if res.outcome not in (ACCEPTED, ACCEPTED_BROKEN, REJECTED):
        return None
    try:
        decoded = run.decoded
    except StreamError:
        decoded = None
    payload = ref.decode_as_destination(run.dst, run.data, declared.on_wire(run.src, run.state), decoded)
    if payload is None:
        return None  # the destination cannot read it: the model's verdict (R1/R3/R4) judges that
    want = ref.reference_load(run.dst, payload)
    if res.outcome == REJECTED:
        if want.refused is None and res.error and res.error.startswith("Features 0x"):
            return Violation("R9", "the feature step lets the features through", f"rejected: {res.error}")
        return None  # rejected by a step the reference does not model
    if want.refused is not None:
        return Violation("R9", f"rejected at the feature step: {want.refused}", res.outcome, {"refused": want.refused})
    assert res.state is not None
    d = ref.differences(want, res.state)
    return Violation("R9", "the loaded state of QEMU's load order", f"differs in {sorted(d)}", d) if d else None


# what realize derives that a guest sees; on one machine type two releases must agree on each
REALIZED = ("host_features", "queue_sizes", "config_len", "vectors", "modern", "legacy")


def r13_machine_compat(run: Run) -> Violation | None:
    """R13: on a machine type both releases have, the same configuration realizes alike in both, and the same
    state is written as the same bytes (the promise QEMU's compat properties keep; bug-history entry 21). Each
    release's own layout and needed() decide, so this holds the releases to each other, not to the rules that
    wrote them."""
    a, b = run.src, run.dst
    if a.release == b.release:
        return None
    if b.config.netdev != a.config.netdev:  # the promise is about the same configuration: the source's backend
        b = realize(replace(a.config, release=b.release), b.registry)
    for name in REALIZED:
        if getattr(a, name) != getattr(b, name):
            show = (lambda v: f"{v:#x}") if name == "host_features" else repr
            return Violation("R13", f"{name} as {a.release} realizes it on {a.config.machine}: "
                             f"{show(getattr(a, name))}", f"{b.release}: {show(getattr(b, name))}", {"realized": name})
    # fields only the newer release declares hold their reset values (what realize gives a device that never
    # set them), so that both releases write the very same device
    state = replace(run.state, extra=tuple(sorted({**dict(declared.reset_values(b)), **dict(run.state.extra)}.items())))
    mine = run.data
    theirs = save(b, state)
    if mine == theirs:
        return None
    at = next((i for i, (x, y) in enumerate(zip(mine, theirs, strict=False)) if x != y), min(len(mine), len(theirs)))
    try:
        diffs = tree_diff(run.decoded, decode_payload(theirs, b.config.transport, b.device.section,
                                                      **save_params(b, state),
                                                      extras=b.registry.wire,
                                                      schema_fields=declared.on_wire(b, state)),
                          names=(str(a.release), str(b.release)), limit=3)
    except StreamError:
        diffs = []
    return Violation("R13", f"{b.release} writes the state as {a.release} does on {a.config.machine}",
                     f"bytes differ from offset {at} ({len(mine)} B, {len(theirs)} B)"
                     + (": " + "; ".join(diffs) if diffs else ""), {"first_difference": at, "fields": diffs})


RULES = {
    "R1": r1_round_trip, "R2": r2_fixed_point, "R5": r5_subsection_presence, "R6": r6_unknown_subsection,
    "R7": r7_endianness, "R8": r8_features, "R9": r9_load_order, "R13": r13_machine_compat,
}


def check_all(run: Run, same_release: bool) -> list[Violation]:
    """Every rule that applies to the run."""
    out: list[Violation] = []
    if same_release:
        for rule in ("R1", "R2"):
            v = RULES[rule](run)
            if v:
                out.append(v)
    else:
        rule = "R3" if run.src.release < run.dst.release else "R4"
        for v in (r34_migration(run, rule), r13_machine_compat(run)):
            if v:
                out.append(v)
    for rule in ("R5", "R6", "R7", "R8", "R9"):
        v = RULES[rule](run)
        if v:
            out.append(v)
    return out
