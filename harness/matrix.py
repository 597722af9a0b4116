"""The compatibility matrix: its cells, and what one example of a cell runs (the known real incompatibilities it
reports as expected are harness/known.py's). A cell is (source release, destination release, transport, device);
the machine type and the rest of the configuration are drawn inside it."""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.known import KnownIncompatibility, known_for
from harness.rules import BROKEN_SINCE, Run, Violation, check_all
from models.config import Config, Realized, realize
from models.registry import BASE, Registry
from models.releases import Version
from models.state import DeviceState

DEVICES = BASE.device_names  # models/devices declares them
TRANSPORTS = ("pci", "mmio", "ccw")


@dataclass(frozen=True, order=True)
class Cell:
    src: Version
    dst: Version
    transport: str
    device: str

    @property
    def id(self) -> str:
        return f"{self.src}-{self.dst}-{self.transport}-{self.device}"

    @property
    def direction(self) -> str:
        return "same" if self.src == self.dst else "forward" if self.src < self.dst else "backward"


def release_pairs(releases: tuple[Version, ...]) -> list[tuple[Version, Version]]:
    """Each release with itself, with its neighbours both ways, and with 7.2 (the live oracle) and
    the newest release both ways."""
    pairs: set[tuple[Version, Version]] = set()
    anchors = [r for r in (Version(7, 2), releases[-1]) if r in releases]
    for i, r in enumerate(releases):
        pairs.add((r, r))
        if i + 1 < len(releases):
            pairs |= {(r, releases[i + 1]), (releases[i + 1], r)}
        for a in anchors:
            pairs |= {(r, a), (a, r)}
    return sorted(pairs)


def cells(releases: tuple[Version, ...] | None = None, devices: tuple[str, ...] = DEVICES,
          transports: tuple[str, ...] = TRANSPORTS, machines: list[str] | None = None,
          registry: Registry = BASE) -> list[Cell]:
    """The cells of `releases` (default: every release the registry models)."""
    out = []
    for src, dst in release_pairs(releases or registry.releases):
        for tr in transports:
            common = {m.name for m in registry.machine_types(src, tr)} & {
                m.name for m in registry.machine_types(dst, tr)}
            if machines:
                common = {m for m in common if any(m == x or m.startswith(x + "-") for x in machines)}
            if not common:
                continue
            offered = set(registry.devices_on(tr, src)) & set(registry.devices_on(tr, dst))
            out += [Cell(src, dst, tr, dev) for dev in devices if dev in offered]
    return out




@dataclass
class Outcome:
    violations: list[Violation]
    expected: list[tuple[Violation, KnownIncompatibility]]
    run: Run | None  # None when the model raised before the load gave a result (rule EXCEPTION)


# the rule id of an exception inside the model or the rules: a failure of its own, reported, counted and replayed
# like any rule's (the harness must give a verdict on every state, R11)
EXCEPTION = "exception"
_PACKAGE = Path(__file__).resolve().parent.parent


def raised(e: BaseException) -> Violation:
    """An exception as a violation: where it rose (the innermost frame in this package) and its traceback."""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename.startswith(str(_PACKAGE))]
    at = f" at {Path(frames[-1].filename).relative_to(_PACKAGE)}:{frames[-1].lineno}" if frames else ""
    text = str(e).splitlines()[0] if str(e) else ""
    return Violation(EXCEPTION, "a verdict (the model and the rules never raise)",
                     f"{type(e).__name__}{': ' + text if text else ''}{at}",
                     {"traceback": "".join(traceback.format_exception(e)).rstrip()})


def run_example(src_config: Config, dst_config: Config, state: DeviceState, hostile: Any = None,
                registry: Registry = BASE) -> Outcome:
    """One example: save with the source, load with the destination (both realized with `registry`), every rule
    that applies; a hostile state (strategies/hostile.py) is judged by its class's verdict instead (R10/R11). An
    exception inside the model or a rule is the violation EXCEPTION, never lost."""
    try:
        return _run_example(src_config, dst_config, state, hostile, registry)
    except Exception as e:
        v = raised(e)
        if hostile is not None:
            v.details["class"] = hostile.name  # so that replay loads the state as the same hostile class
        return Outcome([v], [], None)


def _run_example(src_config: Config, dst_config: Config, state: DeviceState, hostile: Any,
                 registry: Registry) -> Outcome:
    src, dst = realize(src_config, registry), realize(dst_config, registry)
    run = Run.of(src, dst, state)
    if hostile is not None:
        v = hostile_verdict(run, hostile)
        return Outcome([v] if v else [], [], run)
    bad, expected = [], []
    for v in check_all(run, src_config.release == dst_config.release):
        k = known_for(v, src_config, dst_config, state)
        if k is None:
            bad.append(v)
        else:
            expected.append((v, k))
    return Outcome(bad, expected, run)


def hostile_verdict(run: Run, h: Any) -> Violation | None:
    want = h.verdict(run.dst.release)
    message = h.message if want != "accepted" else ""  # an accepted load has no error to show it
    if want == "accepted" and run.state.broken and run.dst.release >= BROKEN_SINCE:
        want = "accepted-broken"  # the device was saved broken
    got, error = run.result.outcome, run.result.error or ""
    if got != want or (message and message not in error):
        return Violation(h.rule, f"{h.name}: {want}" + (f" with '{message}'" if message else ""),
                         f"{got}: {error}", {"class": h.name, "source": h.source})
    return None


@dataclass
class CellResult:
    cell: Cell
    examples: int
    machines: set[str]
    expected: dict[str, str]  # rule -> known incompatibility name
    failure: tuple[Config, Config, DeviceState, Outcome, Violation] | None  # the minimal failing example
    failures: dict[str, tuple[Config, Config, DeviceState, Outcome, Violation]] = field(default_factory=dict)
    digests: list[str] | None = None  # a digest of each example drawn, when asked for (harness/explore.py)
    boundaries: int = 0  # of `examples`, those of the boundary phase (strategies/boundaries.py)

    @property
    def status(self) -> str:
        return "fail" if self.failure else "pass"


def run_cell(cell: Cell, machines: list[str] | None = None, registry: Registry = BASE,
             database_key: bytes | None = None, digests: bool = False) -> CellResult:
    """Run one cell under the current Hypothesis settings profile, with the declarations of `registry`; the
    failing example kept is the minimal one (Hypothesis replays it last).

    A derandomized profile (dev, bench) draws from the test alone. Any other one draws from the run's seed
    (harness/explore.py: the commit, or --hypothesis-seed) mixed with the cell, and keeps what it finds in the
    profile's example database under `database_key` (by default one per cell and --machines narrowing), where
    the next run, another shard or another machine sharing the database replays it first. `digests`: record a
    digest of every example drawn (result.digests)."""
    import hashlib

    from hypothesis import event, given, note, settings
    from hypothesis import strategies as st

    from harness.explore import cell_seed, example_digest, run_seed
    from strategies.boundaries import boundaries
    from strategies.driver import device_states
    from strategies.hostile import hostile_states

    result = CellResult(cell, 0, set(), {}, None, digests=[] if digests else None)
    # check() keeps its source as it was before registries: Hypothesis derives a derandomized run's seed from it
    # (hypothesis.internal.reflection.function_digest), and a cell draws the same examples as it always has
    configs, realize, run_example = _bound(registry)
    if result.digests is not None:  # recorded around run_example, so that check() keeps its source
        run_bound, drawn = run_example, result.digests

        def run_example(src: Config, dst: Config, state: DeviceState, hostile: Any = None) -> Outcome:
            if hostile is None:
                drawn.append(example_digest(src, dst, state))
            return run_bound(src, dst, state, hostile=hostile)

    @given(st.data())
    def check(data: st.DataObject) -> None:
        src, dst = data.draw(configs(cell.src, cell.dst, cell.transport, cell.device, machines), label="config")
        state = data.draw(device_states(realize(src)), label="state")
        note(src.describe())
        out = run_example(src, dst, state)
        result.examples += 1
        result.machines.add(src.machine.name)
        for v, known in out.expected:
            result.expected[v.rule] = known.name
            event(f"expected incompatibility {known.name}")
        if out.violations:
            result.failure = result.failures[out.violations[0].rule] = (src, dst, state, out, out.violations[0])
            raise AssertionError(str(out.violations[0]))
        if cell.src == cell.dst:
            # R10 / R11: the same state with one guarded value out of range, against the reference's verdict
            h, bad = data.draw(hostile_states(realize(src), state), label="hostile")
            out = run_example(src, replace(dst, netdev=src.netdev), bad, hostile=h)  # a class's verdict: one backend
            if out.violations:
                result.failure = result.failures[out.violations[0].rule] = (src, dst, bad, out, out.violations[0])
                raise AssertionError(str(out.violations[0]))
        result.failure = None

    bounds = boundaries(cell.src, cell.dst, cell.transport, cell.device, machines, registry)
    at: list[Any] = [None]  # the boundary example the phase runs now

    # the boundary phase: each boundary example of the cell, its state drawn (so many examples as the profile has for
    # each 12 random ones: one in ci, Hypothesis' simplest state) and edited to the declared terms' holding side
    @settings(max_examples=max(1, settings().max_examples // 12))
    @given(st.data())
    def at_boundary(data: st.DataObject) -> None:
        b = at[0]
        r = realize(b.src)
        state = b.apply(r, data.draw(device_states(r), label="state"))
        note(f"{b.src.describe()} ({b.why})")
        out = run_example(b.src, b.dst, state)
        result.examples += 1
        result.boundaries += 1
        result.machines.add(b.src.machine.name)
        for v, known in out.expected:
            result.expected[v.rule] = known.name
        if out.violations:
            result.failure = result.failures[out.violations[0].rule] = (b.src, b.dst, state, out, out.violations[0])
            raise AssertionError(str(out.violations[0]))
        result.failure = None

    def boundary_phase() -> None:
        for b in bounds:
            at[0] = b
            if not settings().derandomize:
                name = f"{cell.id} boundary {b.src.machine}"
                at_boundary._hypothesis_internal_use_seed = cell_seed(run_seed().value, name)  # type: ignore[attr-defined]
                at_boundary._hypothesis_internal_database_key = hashlib.sha384(  # type: ignore[attr-defined]
                    f"virtio-compat {name} {b.src.describe()}".encode()).digest()
            at_boundary()

    if not settings().derandomize:
        # what hypothesis.seed() sets, without the database=None that seed() adds: these runs keep what they find
        check._hypothesis_internal_use_seed = cell_seed(run_seed().value, cell.id)  # type: ignore[attr-defined]
        # every cell is this one nested function: without a key of its own, all cells would share one entry
        key = database_key or hashlib.sha384(f"virtio-compat cell {cell.id} {machines or ''}".encode()).digest()
        check._hypothesis_internal_database_key = key  # type: ignore[attr-defined]
    for phase in (boundary_phase, check):
        try:
            phase()
        except (AssertionError, ExceptionGroup):
            if not result.failures:
                raise
            break  # the cell fails: the random draws would find and shrink the same break again, at length
    if result.failures:
        # Hypothesis replays each distinct failure's minimal example last; report them by rule order
        order = [EXCEPTION, "R1", "R2", "R3", "R4", "R5", "R6", "R7", "R8", "R9", "R10", "R11"]
        result.failure = result.failures[min(result.failures, key=lambda r: order.index(r) if r in order else 99)]
    return result


def explore_example(cell: Cell, machines: list[str] | None, data: Any, result: CellResult,
                    registry: Registry = BASE) -> None:
    """One example of a cell, as run_cell's check() draws and runs it (the same draws in the same order, so the
    same choice sequences, and one database serves both): the body of the matrix's fuzz target
    (harness/pytest_matrix.py, for HypoFuzz). Raises AssertionError on a violation."""
    from hypothesis import note

    from strategies.driver import device_states
    from strategies.hostile import hostile_states

    configs, realize, run_example = _bound(registry)
    src, dst = data.draw(configs(cell.src, cell.dst, cell.transport, cell.device, machines), label="config")
    state = data.draw(device_states(realize(src)), label="state")
    note(src.describe())
    out = run_example(src, dst, state)
    result.examples += 1
    result.machines.add(src.machine.name)
    if out.violations:
        result.failure = result.failures[out.violations[0].rule] = (src, dst, state, out, out.violations[0])
        raise AssertionError(str(out.violations[0]))
    if cell.src == cell.dst:
        h, bad = data.draw(hostile_states(realize(src), state), label="hostile")
        out = run_example(src, replace(dst, netdev=src.netdev), bad, hostile=h)  # a class's verdict: one backend
        if out.violations:
            result.failure = result.failures[out.violations[0].rule] = (src, dst, bad, out, out.violations[0])
            raise AssertionError(str(out.violations[0]))
    result.failure = None


def _bound(registry: Registry) -> tuple[Callable[..., Any], Callable[[Config], Realized], Callable[..., Outcome]]:
    """The configuration strategy, realize and run_example with the declarations of `registry`."""
    from strategies.configs import configs

    return (functools.partial(configs, registry=registry), functools.partial(realize, registry=registry),
            functools.partial(run_example, registry=registry))
