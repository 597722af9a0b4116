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

from models.configuration import Derived
from models.releases import MachineType, Version
from models.state import DeviceState


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


class StateField(_Term):
    """A field of the device state: one a schema declares, a DeviceState field (broken, started, ...) or a
    device state field (NetState.curr_queue_pairs, ...). Never decided statically: the guest drives it."""

    def __init__(self, name: str) -> None:
        self.name = name

    def value(self, r: Derived, s: DeviceState) -> Any:
        declared = dict(s.extra)
        if self.name in declared:
            return declared[self.name]
        if hasattr(s, self.name):
            return getattr(s, self.name)
        return getattr(s.device, self.name, None)

    def describe(self) -> str:
        return self.name


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

    def describe(self) -> str:
        return self.name

    def properties(self) -> set[str]:
        return {self.name}


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


class Compare(Condition):
    def __init__(self, term: _Term, op: str, value: Any) -> None:
        self.term, self.op, self.value = term, op, value

    def _test(self, v: Any) -> bool:
        try:
            return bool(_OPS[self.op](v, self.value))
        except TypeError:  # None (a field this release does not have) against a number
            return self.op == "!="

    def __call__(self, r: Derived, s: DeviceState) -> bool:
        return self._test(self.term.value(r, s))

    def static(self, ctx: Static) -> bool | None:
        known, v = self.term.static_value(ctx)
        return self._test(v) if known else None

    def describe(self) -> str:
        return f"{self.term.describe()} {self.op} {self.value!r}"

    def properties(self) -> set[str]:
        return self.term.properties()

    def parts(self) -> tuple[Condition, ...]:
        return (self.term,)


class HostFeature(Condition):
    """The device offers feature bit `bit` (realize: properties, backend, transport)."""

    def __init__(self, bit: int) -> None:
        self.bit = bit

    def __call__(self, r: Derived, s: DeviceState) -> bool:
        return bool(r.host_features >> self.bit & 1)

    def describe(self) -> str:
        return f"host offers feature bit {self.bit}"


class GuestFeature(Condition):
    """The guest negotiated feature bit `bit`."""

    def __init__(self, bit: int) -> None:
        self.bit = bit

    def __call__(self, r: Derived, s: DeviceState) -> bool:
        return bool(s.guest_features >> self.bit & 1)

    def describe(self) -> str:
        return f"guest negotiated feature bit {self.bit}"


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
