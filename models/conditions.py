"""The small vocabulary of conditions that schema modules (models/schema.py) declare a subsection's needed() in.

A condition is a callable (realized, state) -> bool, as models/core.py's Rule.test is, that tools can also read:
describe() is its text; static() decides it for a configuration without a device state (release, machine type,
device, transport) where that alone decides it: True, False, or None when it depends on the state, the guest,
the backend or arbitrary Python (Python(...), or a plain callable), which no tool can see into.

    Property("x-foo") & (StateField("foo") != 0)    # QEMU's usual gate: a compat property, then the state
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from models.configuration import TARGET_BIG_ENDIAN, Derived
from models.releases import MachineType, Version
from models.state import ENDIAN_BIG, ENDIAN_LITTLE, DeviceState


@dataclass(frozen=True)
class Static:
    """What static() knows: a configuration without a state. `props` are the effective property values
    (defaults and the machine type's compat entries); those in `varied` a user may set, so they decide nothing."""

    release: Version
    machine: MachineType
    device: str
    transport: str
    props: Mapping[str, Any]
    varied: frozenset[str] = frozenset()
    # what realize derives from every configuration a user can make of it (the varied properties' values, the
    # backends): a condition over realize alone is decided when all agree; () where nobody enumerated them
    variants: tuple[Derived, ...] = ()


def _on(value: Any) -> bool:
    return value is True or value == "on" or (isinstance(value, int) and not isinstance(value, bool) and value != 0)


class Condition:
    """Base of the vocabulary; `a & b`, `a | b` and `~a` combine conditions."""

    def __call__(self, r: Derived, s: DeviceState) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def static(self, ctx: Static) -> bool | None:
        return None

    def python(self) -> bool:
        """Whether arbitrary Python decides it somewhere (then static() cannot rule it out)."""
        return False

    def properties(self) -> set[str]:
        """The properties it reads (the machine-type gates a tool can name)."""
        return set()

    def parts(self) -> tuple[Condition, ...]:
        return ()

    def __and__(self, other: Condition | Callable[..., Any]) -> Condition:
        return And(self, as_condition(other))

    def __or__(self, other: Condition | Callable[..., Any]) -> Condition:
        return Or(self, as_condition(other))

    def __invert__(self) -> Condition:
        return Not(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


class _Term(Condition):
    """A value (a state field, a property); alone it is true when on or non-zero; compared, a Compare."""

    name: str

    def value(self, r: Derived, s: DeviceState) -> Any:
        raise NotImplementedError

    def static_value(self, ctx: Static) -> tuple[bool, Any]:
        return False, None

    def __call__(self, r: Derived, s: DeviceState) -> bool:
        return _on(self.value(r, s))

    def static(self, ctx: Static) -> bool | None:
        known, value = self.static_value(ctx)
        return _on(value) if known else None

    def describe(self) -> str:
        return self.name

    # comparisons build conditions (as in SQLAlchemy): StateField("foo") != 0
    def __eq__(self, other: object) -> Compare:  # type: ignore[override]
        return Compare(self, "==", other)

    def __ne__(self, other: object) -> Compare:  # type: ignore[override]
        return Compare(self, "!=", other)

    def __lt__(self, other: object) -> Compare:
        return Compare(self, "<", other)

    def __le__(self, other: object) -> Compare:
        return Compare(self, "<=", other)

    def __gt__(self, other: object) -> Compare:
        return Compare(self, ">", other)

    def __ge__(self, other: object) -> Compare:
        return Compare(self, ">=", other)

    __hash__ = object.__hash__


Term = _Term  # the public name, for terms declared outside this module (models/endian.py)


class StateField(_Term):
    """A field of the device state: one a schema declares, a DeviceState field (broken, started, ...) or a
    device state field (NetState.curr_queue_pairs, ...). The guest drives it, so it is not decided statically,
    except where `settable` says the device never changes it: there it keeps `reset` (a value or a term), e.g.
    StateField("started", settable=Property("use-started")): virtio_set_started sets it only with use_started."""

    def __init__(self, name: str, settable: Condition | None = None, reset: Any = 0) -> None:
        self.name, self.settable, self.reset = name, settable, reset

    def static_value(self, ctx: Static) -> tuple[bool, Any]:
        if self.settable is None or self.settable.static(ctx) is not False:
            return False, None
        return _static_operand(self.reset, ctx)

    def properties(self) -> set[str]:
        return self.settable.properties() if self.settable is not None else set()

    def value(self, r: Derived, s: DeviceState) -> Any:
        declared = dict(s.extra)
        if self.name in declared:
            return declared[self.name]
        if hasattr(s, self.name):
            return getattr(s, self.name)
        return getattr(s.device, self.name, None)


class Property(_Term):
    """A device (or proxy) property's effective value: default, machine type compat entries, user."""

    def __init__(self, name: str) -> None:
        self.name = name

    def value(self, r: Derived, s: DeviceState) -> Any:
        return r.props.get(self.name)

    def static_value(self, ctx: Static) -> tuple[bool, Any]:
        if self.name in ctx.varied:
            return False, None
        return True, ctx.props.get(self.name)

    def properties(self) -> set[str]:
        return {self.name}


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


class Compare(Condition):
    def __init__(self, term: _Term, op: str, value: Any) -> None:
        self.term, self.op, self.value = term, op, value

    # None (a field this release does not have) against a number: only != holds
    def _test_on(self, v: Any, other: Any) -> bool:
        try:
            return bool(_OPS[self.op](v, other))
        except TypeError:
            return self.op == "!="

    def __call__(self, r: Derived, s: DeviceState) -> bool:
        other = self.value.value(r, s) if isinstance(self.value, _Term) else self.value
        return self._test_on(self.term.value(r, s), other)

    def static(self, ctx: Static) -> bool | None:
        known, v = self.term.static_value(ctx)
        known_other, other = _static_operand(self.value, ctx)
        return self._test_on(v, other) if known and known_other else None

    def describe(self) -> str:
        other = self.value.describe() if isinstance(self.value, _Term) else repr(self.value)
        return f"{self.term.describe()} {self.op} {other}"

    def properties(self) -> set[str]:
        return self.term.properties() | (self.value.properties() if isinstance(self.value, _Term) else set())

    def parts(self) -> tuple[Condition, ...]:
        return (self.term,) + ((self.value,) if isinstance(self.value, _Term) else ())


def _static_operand(x: Any, ctx: Static) -> tuple[bool, Any]:
    return x.static_value(ctx) if isinstance(x, _Term) else (True, x)


class _OfRealize(Condition):
    """Over what realize derives alone: decided statically where all of Static.variants agree."""

    def of(self, r: Derived) -> bool:
        raise NotImplementedError

    def __call__(self, r: Derived, s: DeviceState) -> bool:
        return self.of(r)

    def static(self, ctx: Static) -> bool | None:
        values = {self.of(r) for r in ctx.variants}
        return values.pop() if len(values) == 1 else None


def _mask(lo: int, hi: int | None) -> int:
    return ((1 << hi) - 1 if hi is not None else -1) & ~((1 << lo) - 1)


class HostFeatures(_OfRealize):
    """The device offers a feature bit in lo..hi-1 (hi None: any from lo): virtio/64bit_features' test."""

    def __init__(self, lo: int, hi: int | None = None) -> None:
        self.lo, self.hi = lo, hi

    def of(self, r: Derived) -> bool:
        return bool(r.host_features & _mask(self.lo, self.hi))

    def describe(self) -> str:
        return f"host offers a feature bit in {self.lo}..{'' if self.hi is None else self.hi - 1}"


class HostFeature(HostFeatures):
    """The device offers feature bit `bit` (realize: properties, backend, transport)."""

    def __init__(self, bit: int) -> None:
        super().__init__(bit, bit + 1)
        self.bit = bit

    def describe(self) -> str:
        return f"host offers feature bit {self.bit}"


class Modern(_OfRealize):
    """The device offers virtio 1.0 (a modern-capable proxy: disable-modern, force-legacy, max_revision)."""

    def of(self, r: Derived) -> bool:
        return r.modern

    def describe(self) -> str:
        return "the device is modern-capable"


class GuestFeatures(Condition):
    """The guest negotiated a feature bit in lo..hi-1 (hi None: any from lo); statically false where no
    configuration offers one (a guest acknowledges only what the device offers)."""

    def __init__(self, lo: int, hi: int | None = None) -> None:
        self.lo, self.hi = lo, hi

    def __call__(self, r: Derived, s: DeviceState) -> bool:
        return bool(s.guest_features & _mask(self.lo, self.hi))

    def static(self, ctx: Static) -> bool | None:
        mask = _mask(self.lo, self.hi)
        return False if ctx.variants and not any(r.host_features & mask for r in ctx.variants) else None

    def describe(self) -> str:
        return f"guest negotiated a feature bit in {self.lo}..{'' if self.hi is None else self.hi - 1}"


class GuestFeature(GuestFeatures):
    """The guest negotiated feature bit `bit`."""

    def __init__(self, bit: int) -> None:
        super().__init__(bit, bit + 1)
        self.bit = bit

    def describe(self) -> str:
        return f"guest negotiated feature bit {self.bit}"


class Status(Condition):
    """The driver set status bit(s) `bits` (VIRTIO_CONFIG_S_DRIVER_OK = 4, ...): all of them."""

    def __init__(self, bits: int) -> None:
        self.bits = bits

    def __call__(self, r: Derived, s: DeviceState) -> bool:
        return s.status & self.bits == self.bits

    def describe(self) -> str:
        return f"status has {self.bits:#x}"


class TargetEndian(_Term):
    """virtio_default_endian(): the target's endianness (big on s390x), a value to compare with."""

    name = "target default endianness"

    def value(self, r: Derived, s: DeviceState) -> Any:
        return ENDIAN_BIG if r.big_endian_target else ENDIAN_LITTLE

    def static_value(self, ctx: Static) -> tuple[bool, Any]:
        return True, ENDIAN_BIG if TARGET_BIG_ENDIAN.get(ctx.transport, False) else ENDIAN_LITTLE


class QueueResized(Condition):
    """A queue's vring.num is not its num_default (virtio/ringsize); a driver resizes one only where `settable`."""

    def __init__(self, settable: Condition | None = None) -> None:
        self.settable = settable

    def __call__(self, r: Derived, s: DeviceState) -> bool:
        defaults = s.num_default or r.queue_sizes
        return any(q.num != (defaults[i] if i < len(defaults) else 0) for i, q in enumerate(s.queues))

    def static(self, ctx: Static) -> bool | None:
        return False if self.settable is not None and self.settable.static(ctx) is False else None

    def describe(self) -> str:
        return "a queue's num != num_default"


class MachineAtLeast(Condition):
    """The machine type is `version` or newer (a downstream one counts as the upstream version it was cut from)."""

    def __init__(self, version: Version) -> None:
        self.version = version

    def __call__(self, r: Derived, s: DeviceState) -> bool:
        return r.config.machine.version >= self.version

    def static(self, ctx: Static) -> bool | None:
        return ctx.machine.version >= self.version

    def describe(self) -> str:
        return f"machine type >= {self.version}"


class ReleaseAtLeast(Condition):
    """The release is `version` or newer (inside one needed(), where a machine type does not decide)."""

    def __init__(self, version: Version) -> None:
        self.version = version

    def __call__(self, r: Derived, s: DeviceState) -> bool:
        return r.release >= self.version

    def static(self, ctx: Static) -> bool | None:
        return ctx.release >= self.version

    def describe(self) -> str:
        return f"release >= {self.version}"


class Always(Condition):
    """A subsection sent whenever its parent is."""

    def __call__(self, r: Derived, s: DeviceState) -> bool:
        return True

    def static(self, ctx: Static) -> bool | None:
        return True

    def describe(self) -> str:
        return "always"


class Never(Condition):
    """A subsection a release keeps only to load old streams: it never sends it."""

    def __call__(self, r: Derived, s: DeviceState) -> bool:
        return False

    def static(self, ctx: Static) -> bool | None:
        return False

    def describe(self) -> str:
        return "never"


class Transport(Condition):
    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, r: Derived, s: DeviceState) -> bool:
        return r.config.transport == self.name

    def static(self, ctx: Static) -> bool | None:
        return ctx.transport == self.name

    def describe(self) -> str:
        return f"transport is {self.name}"


class And(Condition):
    def __init__(self, *terms: Condition) -> None:
        self.terms = terms

    def __call__(self, r: Derived, s: DeviceState) -> bool:
        return all(t(r, s) for t in self.terms)

    def static(self, ctx: Static) -> bool | None:  # Kleene: one false decides
        values = [t.static(ctx) for t in self.terms]
        return False if False in values else None if None in values else True

    def describe(self) -> str:
        return " and ".join(_paren(t) for t in self.terms)

    def python(self) -> bool:
        return any(t.python() for t in self.terms)

    def properties(self) -> set[str]:
        return set().union(*(t.properties() for t in self.terms))

    def parts(self) -> tuple[Condition, ...]:
        return self.terms


class Or(And):
    def __call__(self, r: Derived, s: DeviceState) -> bool:
        return any(t(r, s) for t in self.terms)

    def static(self, ctx: Static) -> bool | None:  # Kleene: one true decides
        values = [t.static(ctx) for t in self.terms]
        return True if True in values else None if None in values else False

    def describe(self) -> str:
        return " or ".join(_paren(t) for t in self.terms)


class Not(Condition):
    def __init__(self, term: Condition) -> None:
        self.term = term

    def __call__(self, r: Derived, s: DeviceState) -> bool:
        return not self.term(r, s)

    def static(self, ctx: Static) -> bool | None:
        v = self.term.static(ctx)
        return None if v is None else not v

    def describe(self) -> str:
        return f"not {_paren(self.term)}"

    def python(self) -> bool:
        return self.term.python()

    def properties(self) -> set[str]:
        return self.term.properties()

    def parts(self) -> tuple[Condition, ...]:
        return (self.term,)


class Python(Condition):
    """Arbitrary Python over (realized, state): allowed, and opaque to every tool."""

    def __init__(self, fn: Callable[[Derived, DeviceState], Any], text: str = "") -> None:
        self.fn, self.text = fn, text

    def __call__(self, r: Derived, s: DeviceState) -> bool:
        return bool(self.fn(r, s))

    def describe(self) -> str:
        code = getattr(self.fn, "__code__", None)
        where = f" at {code.co_filename.rsplit('/', 1)[-1]}:{code.co_firstlineno}" if code is not None else ""
        return self.text or f"Python {getattr(self.fn, '__qualname__', repr(self.fn))}{where}"

    def python(self) -> bool:
        return True


def state_fields(cond: Condition) -> set[str]:
    """The state fields a condition reads."""
    own = {cond.name} if isinstance(cond, StateField) else set()
    return own.union(*(state_fields(p) for p in cond.parts()))


def as_condition(x: Any) -> Condition:
    if isinstance(x, Condition):
        return x
    if callable(x):
        return Python(x)
    raise TypeError(f"not a condition: {x!r} (use the models.conditions vocabulary or a callable (realized, state))")


def _paren(c: Condition) -> str:
    return f"({c.describe()})" if isinstance(c, And) else c.describe()  # Or is an And
