"""Out-of-tree schema modules: a device developer describes a format change in a Python module of their own,
with the declarations models/ uses, and load_schema() applies it to the registries, so that the matrix,
`check`, `diff` and `replay` all see it without an edit to this package.

A schema module binds DECLARATIONS, a tuple of:

    Release(V("11.2"), after=V("11.1"))              a release (its rules are those of the one it builds on)
    Subsection("virtio-net-device/foo", V("11.2"),    a core ("virtio/...") or device subsection: its fields
               fields=(Field("foo", "uint32"),),      (the wire layout, in vmstate's types) and needed(), in the
               needed=StateField("foo") != 0)         vocabulary of models/conditions.py or any Python callable
    SubsectionVersion("virtio/started", V("11.2"), 2,  a new version of a subsection models/ has, and the fields
                      fields=(...))                   it appends
    DeviceVersion("virtio-net-device", V("11.2"),     fields at the end of a device vmsd's own (VMSTATE_*_V from
                  version=12, fields=(...))           `version`, or VMSTATE_*_TEST with Field(present=...)),
                                                      and its version_id (and the section's) from that release
    Prop(...)                                         a device property (models/props.py)
    Compat(...)                                       a machine type compat entry (models/releases.py)
    Downstream("pc-q35", "rhel", ((V("9.4"), V("8.2")),))   a distribution's machine types
    LoadCheck(...)                                    a new release range for one of models/core.py's load checks

Each is declared once: Subsection alone gives the layout (harness/wire/virtio.py's EXTRA_SUBSECTIONS), the
needed() rule (models/core.py's CORE_SUBSECTIONS, or the device's subsection list), the state (DeviceState.extra)
and what the matrix draws for it; DeviceVersion the same for device fields (EXTRA_DEVICE_FIELDS) and the vmsd
versions models/model.py checks. A mistake is a SchemaError naming the module and the line.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import re
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import construct as c

from harness.errors import SchemaError
from harness.wire import virtio as wire
from harness.wire.primitives import FlatArray, When, be16, be32, be64, sbe32, u8, vbool
from models import config, core, props, releases
from models.conditions import Condition, as_condition
from models.config import Realized
from models.core import LoadCheck
from models.devices import Versions, Vmsd
from models.props import Prop
from models.releases import Compat, Downstream, Version
from models.state import BalloonState, BlkState, DeviceState, NetState

__all__ = ["Compat", "DeviceVersion", "Downstream", "Field", "LoadCheck", "Prop", "Release", "Subsection",
           "SubsectionVersion", "load_schema"]

# vmstate field types (VMSTATE_UINT8 ... VMSTATE_BOOL), by QEMU's names
TYPES: dict[str, Any] = {"uint8": u8, "uint16": be16, "uint32": be32, "uint64": be64, "int8": c.Int8sb,
                         "int16": c.Int16sb, "int32": sbe32, "int64": c.Int64sb, "bool": vbool}


@dataclass(frozen=True)
class Release:
    """A QEMU release to model: the set of declarations up to it, starting from the release it builds on."""

    version: Version
    after: Version
    source: str = ""


@dataclass(frozen=True)
class Field:
    """A vmstate field: VMSTATE_UINT32(name) and its kin, by QEMU's type names; `size` makes a VMSTATE_BUFFER of
    that many bytes (type "buffer"), `count` a VMSTATE_*_ARRAY of that many elements. It is on the wire from the
    vmsd version_id `version` on (VMSTATE_*_V; 1: always), or where `present` holds (VMSTATE_*_TEST: each side
    decides on its own, the destination over its state as loaded so far)."""

    name: str
    type: str  # a key of TYPES, or "buffer"
    reset: Any = 0  # the value after realize and reset (a buffer's or an array's: of each byte or element)
    version: int = 1
    values: tuple[Any, ...] = ()  # the values a device can hold, for the matrix to draw; (): any of the type
    size: int = 0  # a buffer's length in bytes
    count: int = 0  # an array's length; 0: a single value
    present: Condition | Callable[[Realized, DeviceState], Any] | None = None

    def __post_init__(self) -> None:
        if self.type == "buffer":
            if not isinstance(self.size, int) or self.size <= 0:
                raise SchemaError(f"field {self.name!r}: a buffer has a size in bytes: "
                                  "Field(name, \"buffer\", size=16)")
        elif self.type not in TYPES:
            raise SchemaError(f"field {self.name!r} has an unknown type {self.type!r} (known: "
                              f"{', '.join(TYPES)}, buffer)")
        elif self.size:
            raise SchemaError(f"field {self.name!r}: size is a buffer's; an array of {self.type} takes count=")
        if not isinstance(self.count, int) or self.count < 0:
            raise SchemaError(f"field {self.name!r}: count is a number of elements, not {self.count!r}")
        if not isinstance(self.version, int) or self.version < 1:
            raise SchemaError(f"field {self.name!r}: version is a vmsd version_id (1 or more), not {self.version!r}")
        if self.present is not None:
            if self.version > 1:
                raise SchemaError(f"field {self.name!r} is gated by its version or by a test (VMSTATE_*_V or "
                                  "VMSTATE_*_TEST), not both")
            as_condition(self.present)

    @property
    def range(self) -> tuple[int, int]:
        if self.type in ("bool", "buffer"):
            return 0, 1 if self.type == "bool" else 255
        bits = int(self.type.removeprefix("u").removeprefix("int"))
        return (0, (1 << bits) - 1) if self.type.startswith("u") else (-(1 << bits - 1), (1 << bits - 1) - 1)

    def reset_value(self) -> Any:
        if self.type == "buffer":
            return bytes([self.reset]) * self.size if isinstance(self.reset, int) else bytes(self.reset)
        return (self.reset,) * self.count if self.count else self.reset

    def wire_type(self) -> Any:
        if self.type == "buffer":
            return c.Bytes(self.size)
        if not self.count:
            return TYPES[self.type]
        return c.Array(self.count, vbool) if self.type == "bool" else FlatArray(self.count, TYPES[self.type])

    def construct(self, gated: bool) -> Any:
        """Its layout. A gated one (a device vmsd's field, or a test's) is on the wire as the parse or build
        parameter schema_fields says (the model decides it per release and side, see on_wire()); without it, as
        the newest release writes it."""
        sc = self.wire_type()
        if not gated and self.present is None:
            return sc
        name = self.name

        def on_wire(ctx: Any) -> bool:
            decided = _param(ctx, "schema_fields", {}).get(name, True)
            return bool(decided(ctx) if callable(decided) else decided)

        return When(on_wire, sc)

    def condition(self) -> Condition | None:
        return None if self.present is None else as_condition(self.present)

    def describe(self) -> str:
        kind = f"buffer[{self.size}]" if self.type == "buffer" else f"{self.type}[{self.count}]" if self.count \
            else self.type
        gate = f" (where {self.condition().describe()})" if self.present is not None else (  # type: ignore[union-attr]
            f" (from version {self.version})" if self.version > 1 else "")
        return f"{self.name} {kind}{gate}"


def _param(ctx: Any, name: str, default: Any) -> Any:
    params = getattr(ctx, "_params", None) or {}
    value = params.get(name)
    return default if value is None else value


@dataclass(frozen=True)
class Subsection:
    """A vmstate subsection: of vmstate_virtio ("virtio/...") or of a device's vmsd ("virtio-net-device/...")."""

    name: str
    since: Version
    fields: tuple[Field, ...] = ()
    needed: Condition | Callable[[Realized, DeviceState], Any] | None = None
    versions: tuple[tuple[Version, int], ...] = ()  # (release, the version_id it writes from there); default 1
    minimum_version: int = 1  # minimum_version_id: an older incoming version fails the load
    after: str = ""  # a core subsection: the one it follows in vmstate_virtio's list (default: the last)
    source: str = ""

    @property
    def parent(self) -> str:
        return self.name.split("/", 1)[0]

    @property
    def device(self) -> str | None:
        """The device whose vmsd it belongs to; None for a core subsection (every device has it)."""
        return None if self.parent == "virtio" else self.parent.removesuffix("-device")

    def condition(self) -> Condition:
        return as_condition(self.needed)

    def version_in(self, release: Version) -> int:
        return max([v for r, v in self.versions if r <= release], default=1)

    def fields_in(self, version_id: int) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if f.version <= version_id)

    def layout(self) -> Callable[[int], Any]:
        """The body by version_id (one construct per distinct field set, whatever version a stream names)."""
        steps = sorted({1} | {f.version for f in self.fields})
        bodies = {v: c.Struct(*(f.name / f.construct(False) for f in self.fields_in(v))) for v in steps}

        def body(version_id: int) -> Any:
            return bodies[max([v for v in steps if v <= version_id], default=1)]

        return body


@dataclass(frozen=True)
class SubsectionVersion:
    """A new version of a subsection models/ already has ("virtio/started", "virtio-net-device/rss"): its
    version_id from release `since`, and the fields that version appends to its body (Field(..., version=N))."""

    name: str
    since: Version
    version: int
    fields: tuple[Field, ...] = ()
    minimum_version: int | None = None  # None: unchanged
    source: str = ""


@dataclass(frozen=True)
class DeviceVersion:
    """Fields appended to a device vmsd ("virtio-net-device"), after its own and before its subsections, from
    release `since`; and its version_id from there, which VMSTATE_*_V fields need raised. virtio-net's outer vmsd
    takes the same macro (VIRTIO_NET_VM_VERSION), so the section's version_id follows `version` unless
    `section_version` says otherwise."""

    vmsd: str
    since: Version
    fields: tuple[Field, ...] = ()
    version: int | None = None  # the device vmsd's version_id from `since`; None: unchanged
    minimum_version: int | None = None
    section_version: int | None = None  # the outer vmsd's, in the section header; None: follows `version`
    section_minimum_version: int | None = None
    source: str = ""

    @property
    def device(self) -> str:
        return self.vmsd.removesuffix("-device")


@dataclass(frozen=True)
class Schema:
    path: Path
    declarations: tuple[Any, ...]

    @property
    def releases(self) -> tuple[Version, ...]:
        return tuple(sorted(d.version for d in self.declarations if isinstance(d, Release)))


# --- the registry: what the applied schema modules declared -----------------------------------------------------

SUBSECTIONS: tuple[Subsection, ...] = ()
DEVICE_VERSIONS: tuple[DeviceVersion, ...] = ()  # in release order
SUBSECTION_VERSIONS: tuple[SubsectionVersion, ...] = ()  # in release order
LOADED: tuple[Schema, ...] = ()


def loaded_paths() -> list[str]:
    """The applied schema modules (failure files record them; `replay` loads them again)."""
    return [str(s.path) for s in LOADED]


def declared(name: str) -> Subsection | None:
    return next((s for s in SUBSECTIONS if s.name == name), None)


def known(release: Version, device: str) -> list[Subsection]:
    """The declared subsections a release of `device` knows (core ones first, in declaration order)."""
    return [s for s in SUBSECTIONS if s.since <= release and s.device in (None, device)]


def known_device_subsections(device: str, release: Version) -> set[str]:
    return {s.name for s in known(release, device) if s.device is not None}


def subsection_versions(name: str, release: Version, own: tuple[int, int]) -> tuple[int, int]:
    """(version_id, minimum_version_id) of a subsection in a release: a declared one's, or `own` (models/'s) as
    SubsectionVersion declarations change it."""
    sub = declared(name)
    if sub is not None:
        return sub.version_in(release), sub.minimum_version
    for d in SUBSECTION_VERSIONS:
        if d.name == name and d.since <= release:
            own = (d.version, d.minimum_version or own[1])
    return own


def added_fields(name: str, release: Version | None = None) -> list[Field]:
    """The fields SubsectionVersion declarations append to a subsection of models/ (up to `release`)."""
    return [f for d in SUBSECTION_VERSIONS if d.name == name and (release is None or d.since <= release)
            for f in d.fields]


def extend_entries(r: Realized, s: DeviceState, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Subsection entries of models/ as release r writes them with SubsectionVersion declarations: their
    version_id and the values of the fields it appends."""
    if not SUBSECTION_VERSIONS:
        return entries
    values, out = dict(s.extra), []
    for e in entries:
        fields = added_fields(e["name"], r.release)
        if fields:
            version = subsection_versions(e["name"], r.release, (e["version_id"], 1))[0]
            e = {**e, "version_id": version, "body": {**e["body"], **{
                f.name: values.get(f.name, f.reset_value()) for f in fields if f.version <= version}}}
        out.append(e)
    return out


def without_added_fields(device: Any) -> Any:
    """A decoded device value with the fields SubsectionVersion declarations add taken out of its subsections'
    bodies (they are DeviceState.extra's; models/devices/ keeps the bodies it knows)."""
    names = {f.name for d in SUBSECTION_VERSIONS for f in d.fields}
    subs = getattr(device, "subsections", None)
    if not names or not subs:
        return device
    stripped = c.ListContainer(c.Container(name=x.name, version_id=x.version_id, body=c.Container(
        {k: v for k, v in x.body.items() if k not in names}) if isinstance(x.body, dict) else x.body) for x in subs)
    return c.Container({**device, "subsections": stripped})


def device_fields(device: str, release: Version) -> list[Field]:
    """The fields schema modules append to a device vmsd that `release` knows, in wire order."""
    return [f for d in DEVICE_VERSIONS if d.device == device and d.since <= release for f in d.fields]


def versions(device: str, release: Version) -> Versions:
    """The device's vmsd versions in `release`: models/devices' own, as DeviceVersion declarations change them."""
    from models.devices import DEVICES

    v: Versions = DEVICES[device].VERSIONS
    for d in DEVICE_VERSIONS:
        if d.device != device or d.since > release:
            continue
        dev = v.device
        if dev is not None:
            dev = Vmsd(dev.name, d.version or dev.version, d.minimum_version or dev.minimum)
        sec = v.section
        v = Versions(Vmsd(sec.name, d.section_version or d.version or sec.version,
                          d.section_minimum_version or sec.minimum), dev)
    return v


def known_fields(r: Realized) -> list[Field]:
    return [f for sub in known(r.release, r.config.device) for f in sub.fields_in(sub.version_in(r.release))] + \
        device_fields(r.config.device, r.release) + [
            f for d in SUBSECTION_VERSIONS if d.since <= r.release and _of_device(d.name, r.config.device)
            for f in d.fields]


def _of_device(name: str, device: str) -> bool:
    parent = name.split("/", 1)[0]
    return parent == "virtio" or parent == f"{device}-device"


def reset_values(r: Realized) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((f.name, f.reset_value()) for f in known_fields(r)))


def on_wire(r: Realized, s: DeviceState, version: int | None = None, loading: bool = False
            ) -> dict[str, Any] | None:
    """The build/parse parameter schema_fields: which gated fields release r writes for state s, or (`loading`)
    reads, with `version`, the device vmsd version_id it loads with, and over s, its state before the load, with
    the fields read so far in place, as QEMU's field_exists sees it. None when no schema module gates a field."""
    tested = [f for sub in SUBSECTIONS for f in sub.fields if f.present is not None]
    if not DEVICE_VERSIONS and not tested:
        return None
    if version is None:
        dev = versions(r.config.device, r.release).device
        version = dev.version if dev is not None else 0

    def holds(f: Field) -> Any:
        test = as_condition(f.present)
        return _read_so_far(test, r, s) if loading else bool(test(r, s))

    # a subsection's field: its test decides (its version, the subsection's own version_id)
    out: dict[str, Any] = {f.name: holds(f) for f in tested}
    mine = {id(f) for f in device_fields(r.config.device, r.release)}
    for f in (f for d in DEVICE_VERSIONS for f in d.fields):
        # another device's, or a later release's, is not in this one's layout
        out[f.name] = False if id(f) not in mine else holds(f) if f.present is not None else f.version <= version
    return out


def _read_so_far(test: Condition, r: Realized, before: DeviceState) -> Callable[[Any], bool]:
    """The test as the destination evaluates it while loading: over its state with the values read so far (this
    struct's and its parents') in place of the ones before the load."""
    device_names = {f.name for f in dataclasses.fields(before.device)} if before.device is not None else set()
    declared_names = {f.name for f in known_fields(r)}

    def decide(ctx: Any) -> bool:
        read: dict[str, Any] = {}
        while ctx is not None:
            for k, v in ctx.items():
                if not k.startswith("_") and k not in read and v is not None:
                    read[k] = _value(v)
            ctx = ctx.get("_")
        extra = {**dict(before.extra), **{k: v for k, v in read.items() if k in declared_names}}
        device = before.device
        if device is not None:
            device = dataclasses.replace(device, **{k: v for k, v in read.items() if k in device_names})
        state = dataclasses.replace(before, extra=tuple(sorted(extra.items())), device=device)
        return bool(test(r, state))

    return decide


def wire_entry(sub: Subsection, r: Realized, s: DeviceState) -> dict[str, Any]:
    version = sub.version_in(r.release)
    values = dict(s.extra)
    return {"name": sub.name, "version_id": version,
            "body": {f.name: values.get(f.name, f.reset_value()) for f in sub.fields_in(version)}}


def device_wire(r: Realized, s: DeviceState) -> list[dict[str, Any]]:
    """The declared device subsections release r sends for state s, in declaration order."""
    return [wire_entry(sub, r, s) for sub in known(r.release, r.config.device)
            if sub.device is not None and sub.condition()(r, s)]


def device_values(r: Realized, s: DeviceState) -> dict[str, Any]:
    """The values of the device vmsd fields schema modules declare (the layout decides which go on the wire)."""
    values = dict(s.extra)
    return {f.name: values.get(f.name, f.reset_value()) for d in DEVICE_VERSIONS for f in d.fields}


def _value(x: Any) -> Any:
    return tuple(x) if isinstance(x, list) else x


def sent(decoded: Any) -> dict[str, Any]:
    """The declared fields a decoded payload carries, by name."""
    out: dict[str, Any] = {}
    for sub in list(decoded.subsections) + list(getattr(decoded.device, "subsections", None) or []):
        decl = declared(sub.name)
        fields = decl.fields if decl is not None else tuple(added_fields(sub.name))
        if fields and isinstance(sub.body, dict):
            out.update({f.name: _value(sub.body[f.name]) for f in fields if sub.body.get(f.name) is not None})
    device = decoded.device
    for f in (f for d in DEVICE_VERSIONS for f in d.fields):
        if device.get(f.name) is not None:
            out[f.name] = _value(device[f.name])
    return out


def values_from_wire(r: Realized, decoded: Any) -> tuple[tuple[str, Any], ...]:
    """DeviceState.extra of a decoded payload as release r loads it: what it carries, else the reset values."""
    if not SUBSECTIONS and not DEVICE_VERSIONS and not SUBSECTION_VERSIONS:
        return ()
    known = {f.name for f in known_fields(r)}
    return tuple(sorted({**dict(reset_values(r)), **{k: v for k, v in sent(decoded).items() if k in known}}.items()))


# --- loading a schema module -------------------------------------------------------------------------------------


def load_schema(path: str | Path) -> Schema:
    """Import a schema module in isolation (its own namespace, not on sys.path) and apply its DECLARATIONS.
    Loading the same file again returns the schema already applied."""
    global LOADED
    p = Path(path)
    resolved = p.resolve()
    for s in LOADED:
        if s.path == resolved:
            return s
    shown = str(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise SchemaError(f"{shown}: no such schema module") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SchemaError(f"{shown}: cannot read the schema module: {getattr(e, 'strerror', None) or e}") from None
    try:
        tree = ast.parse(text, filename=str(resolved))
    except SyntaxError as e:
        raise SchemaError(f"{shown}:{e.lineno}: syntax error: {e.msg}") from None
    stem = re.sub(r"\W", "_", p.stem)
    name = f"virtio_compat_schema_{stem}_{hashlib.sha1(bytes(resolved)).hexdigest()[:8]}"
    module = types.ModuleType(name)
    module.__file__ = str(resolved)
    sys.modules[name] = module  # dataclasses and pickle look a class's module up
    try:
        exec(compile(tree, str(resolved), "exec"), module.__dict__)
    except Exception as e:
        sys.modules.pop(name, None)
        message = str(e) if isinstance(e, SchemaError) else f"{type(e).__name__}: {e}"
        raise SchemaError(f"{shown}:{_line_in(e, str(resolved))}: {message}") from None
    decls = module.__dict__.get("DECLARATIONS")
    if not isinstance(decls, (tuple, list)):
        raise SchemaError(f"{shown}:1: a schema module binds DECLARATIONS, a tuple of Release, Subsection, Prop, "
                          "Compat, Downstream and LoadCheck declarations")
    lines = _declaration_lines(tree, len(decls))
    before = _Snapshot.take()
    try:
        _apply(tuple(decls), lambda i: f"{shown}:{lines[i]}")
    except BaseException:
        before.restore()
        raise
    schema = Schema(resolved, tuple(decls))
    LOADED = LOADED + (schema,)
    clear_caches()
    return schema


@contextmanager
def applied(*paths: str | Path) -> Iterator[list[Schema]]:
    """Apply schema modules for the duration of a block, then restore the registries as they were."""
    before = _Snapshot.take()
    try:
        yield [load_schema(p) for p in paths]
    finally:
        before.restore()


def clear_caches() -> None:
    """Everything cached from the registries: layouts, realize, reset states, PCI spaces, machine types."""
    from models import model

    wire.payload_layout.cache_clear()
    wire.compiled_payload_layout.cache_clear()
    config.realize.cache_clear()
    model._reset_state.cache_clear()
    model._local_config_space.cache_clear()
    releases.machine_types.cache_clear()


@dataclass
class _Snapshot:
    """The registries' values. Applying a schema rebinds them (never mutates), so references are a snapshot."""

    values: list[tuple[Any, str, Any]]

    @classmethod
    def take(cls) -> _Snapshot:
        here = sys.modules[__name__]
        where = [(releases, "RELEASES"), (releases, "ALL_VERSIONS"), (releases, "DOWNSTREAM"), (releases, "COMPAT"),
                 (props, "PROPS"), (core, "CORE_SUBSECTIONS"), (core, "CHECKS"), (wire, "EXTRA_SUBSECTIONS"),
                 (wire, "EXTRA_DEVICE_FIELDS"), (here, "SUBSECTIONS"), (here, "DEVICE_VERSIONS"),
                 (here, "SUBSECTION_VERSIONS"), (here, "LOADED")]
        return cls([(m, a, getattr(m, a)) for m, a in where])

    def restore(self) -> None:
        for module, attr, value in self.values:
            setattr(module, attr, value)
        clear_caches()


def _line_in(e: BaseException, filename: str) -> int:
    """The line of the schema module where an exception rose (its innermost frame in that file)."""
    line = getattr(e, "lineno", None) if isinstance(e, SyntaxError) else None
    tb = e.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line or 1


def _declaration_lines(tree: ast.Module, n: int) -> list[int]:
    """The line of each entry of DECLARATIONS (of the assignment itself when it is not a literal tuple)."""
    line, elts = 1, None
    for node in tree.body:
        target = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == "DECLARATIONS" for t in target):
            value = node.value  # type: ignore[attr-defined]
            line = node.lineno
            elts = value.elts if isinstance(value, (ast.Tuple, ast.List)) else None
    if elts is not None and len(elts) == n and not any(isinstance(e, ast.Starred) for e in elts):
        return [e.lineno for e in elts]
    return [line] * n


# --- validation and application ----------------------------------------------------------------------------------

KINDS = (Release, Downstream, Prop, Compat, Subsection, SubsectionVersion, DeviceVersion, LoadCheck)


def _apply(decls: Sequence[Any], where: Callable[[int], str]) -> None:
    for i, d in enumerate(decls):
        if not isinstance(d, KINDS):
            raise SchemaError(f"{where(i)}: {d!r} is not a declaration (expected "
                              f"{', '.join(k.__name__ for k in KINDS)})")
    # releases first, in version order, so that the rest may name them
    order = sorted((i for i, d in enumerate(decls) if isinstance(d, Release)), key=lambda i: decls[i].version)
    steps: list[tuple[int, Callable[[Any], None]]] = [(i, _release) for i in order]
    appliers: tuple[tuple[type, Callable[[Any], None]], ...] = (
        (Downstream, _downstream), (Prop, _prop), (Compat, _compat), (Subsection, _subsection),
        (SubsectionVersion, _subsection_version), (DeviceVersion, _device_version), (LoadCheck, _check))
    for kind, apply in appliers:
        steps += [(i, apply) for i, d in enumerate(decls) if isinstance(d, kind)]
    _replaced.clear()
    for i, fn in steps:
        try:
            fn(decls[i])
        except SchemaError as e:
            raise SchemaError(f"{where(i)}: {e}") from None
        except (TypeError, ValueError, AttributeError) as e:
            raise SchemaError(f"{where(i)}: {type(e).__name__}: {e}") from None
    _steps_checked([(i, d) for i, d in enumerate(decls) if isinstance(d, LoadCheck)], where)


def _release(d: Release) -> None:
    rel = releases.RELEASES
    if not isinstance(d.version, Version) or not isinstance(d.after, Version):
        raise SchemaError("Release takes versions: Release(V(\"11.2\"), after=V(\"11.1\"))")
    if d.version <= d.after:
        raise SchemaError(f"release {d.version} is placed before {d.after}, the release it builds on")
    if d.after not in rel:
        raise SchemaError(f"release {d.version} builds on {d.after}, which is not modelled "
                          f"(releases: {', '.join(map(str, rel))})")
    if d.version in rel:
        raise SchemaError(f"release {d.version} is already modelled")
    between = [r for r in rel if d.after < r < d.version]
    if between:
        raise SchemaError(f"release {d.version} builds on {d.after}, but {between[-1]} lies between them "
                          f"(build on {between[-1]})")
    releases.RELEASES = tuple(sorted(rel + (d.version,)))
    if d.version not in releases.ALL_VERSIONS:  # its machine types
        releases.ALL_VERSIONS = tuple(sorted(releases.ALL_VERSIONS + (d.version,)))


def _downstream(d: Downstream) -> None:
    if d.family not in releases.FAMILIES:
        raise SchemaError(f"downstream machine types extend an upstream family, not {d.family!r} "
                          f"(families: {', '.join(releases.FAMILIES)})")
    if not re.fullmatch(r"[a-z]+", d.line):
        raise SchemaError(f"a downstream line is named in lower-case letters (rhel), not {d.line!r}")
    if any(x.family == d.family and x.line == d.line for x in releases.DOWNSTREAM):
        raise SchemaError(f"the machine types {d.family}-{d.line}* are already declared")
    if not d.machines:
        raise SchemaError(f"{d.family}-{d.line}: no machine types")
    for mine, upstream in d.machines:
        if upstream not in releases.ALL_VERSIONS:
            raise SchemaError(f"{d.family}-{d.line}{mine}.0 is cut from {upstream}, which is not a QEMU release")
    releases.DOWNSTREAM = releases.DOWNSTREAM + (d,)


def _qom_types() -> set[str]:
    out = {"virtio-device", "virtio-pci", "virtio-mmio"}
    for dev in wire.DEVICE_DATA:
        out |= {f"{dev}-device", f"{dev}-pci", f"{dev}-ccw"}
    return out


def _prop(p: Prop) -> None:
    if p.qom_type not in _qom_types():
        raise SchemaError(f"property {p.name}: unknown QOM type {p.qom_type!r} "
                          f"(known: {', '.join(sorted(_qom_types()))})")
    for q in props.PROPS:
        overlap = (q.until is None or p.since < q.until) and (p.until is None or q.since < p.until)
        if q.qom_type == p.qom_type and q.name == p.name and overlap:
            raise SchemaError(f"property {p.name} of {p.qom_type} clashes with the one models declare from {q.since}")
    props.PROPS = props.PROPS + (p,)


def _compat(entry: Compat) -> None:
    if entry.driver not in _qom_types() | {"migration"}:
        raise SchemaError(f"compat entry {entry.driver}.{entry.prop}: unknown QOM type {entry.driver!r}")
    if entry.line and not any(d.line == entry.line for d in releases.DOWNSTREAM):
        raise SchemaError(f"compat entry {entry.driver}.{entry.prop}: no downstream line {entry.line!r} is declared")
    if entry.driver != "migration" and not any(p.name == entry.prop for p in props.PROPS):
        raise SchemaError(f"compat entry {entry.driver}.{entry.prop}: {entry.prop} is not a property "
                          "(declare it with Prop)")
    releases.COMPAT = releases.COMPAT + (entry,)


def _subsection_owners() -> dict[str, str]:
    """Every subsection name already taken, and by whom."""
    out = {}
    for transport in wire.TRANSPORTS:
        out.update({n: "models (harness/wire/virtio.py)" for n in wire.core_subsections(transport).known})
    for dev in wire.DEVICE_DATA:
        subs = _device_subsections(dev)
        out.update({n: "models (harness/wire/virtio.py)" for n in (subs.known if subs is not None else ())})
    out.update({s.name: f"an earlier schema declaration (since {s.since})" for s in SUBSECTIONS})
    return out


def _device_subsections(device: str) -> Any:
    return next((sc.subcon for sc in wire.device_data(device).subcons if sc.name == "subsections"), None)


def _state_names() -> set[str]:
    return {f.name for cls in (DeviceState, NetState, BlkState, BalloonState) for f in dataclasses.fields(cls)}


def _subsection(sub: Subsection) -> None:
    global SUBSECTIONS
    if "/" not in sub.name:
        raise SchemaError(f"subsection {sub.name!r}: its name starts with its parent vmsd's name "
                          "(virtio/..., virtio-net-device/...)")
    parents = ["virtio"] + [f"{d}-device" for d in wire.DEVICE_DATA]
    if sub.parent not in parents:
        raise SchemaError(f"subsection {sub.name}: unknown parent vmsd {sub.parent!r} (known: {', '.join(parents)})")
    if sub.device is not None and _device_subsections(sub.device) is None:
        raise SchemaError(f"subsection {sub.name}: {sub.parent}'s data is written by its save_device function, "
                          "without a vmsd, so it has no subsections")
    owner = _subsection_owners().get(sub.name)
    if owner:
        raise SchemaError(f"subsection {sub.name} clashes with the one in {owner}")
    if sub.since not in releases.RELEASES:
        raise SchemaError(f"subsection {sub.name}: release {sub.since} is not modelled (declare it with Release)")
    if sub.needed is None:
        raise SchemaError(f"subsection {sub.name}: needed() is missing (a condition, e.g. StateField(\"foo\") != 0)")
    as_condition(sub.needed)
    _check_fields(f"subsection {sub.name}", sub.fields)
    versions = [v for _, v in sub.versions]
    if [r for r, _ in sub.versions] != sorted(r for r, _ in sub.versions) or versions != sorted(versions) or any(
            r < sub.since or r not in releases.RELEASES for r, _ in sub.versions):
        raise SchemaError(f"subsection {sub.name}: versions are (release, version_id) pairs in release order, "
                          f"from {sub.since}, of modelled releases")
    if max([1] + versions) < max([1] + [f.version for f in sub.fields]):
        raise SchemaError(f"subsection {sub.name}: a field needs version {max(f.version for f in sub.fields)}, "
                          "which no release writes")
    if sub.after and (sub.device is not None or sub.after not in [s.name for s in core.CORE_SUBSECTIONS]):
        raise SchemaError(f"subsection {sub.name}: after={sub.after!r} is not a core subsection")
    SUBSECTIONS = SUBSECTIONS + (sub,)
    old = wire.EXTRA_SUBSECTIONS
    wire.EXTRA_SUBSECTIONS = {**old, sub.parent: {**old.get(sub.parent, {}), sub.name: sub.layout()}}
    if sub.device is None:
        entry = core.CoreSubsection(sub.name, sub.since, (core.Rule(sub.since, sub.condition()),),
                                    sub.source or "schema module")
        subs = list(core.CORE_SUBSECTIONS)
        at = next((i + 1 for i, s in enumerate(subs) if s.name == sub.after), len(subs))
        core.CORE_SUBSECTIONS = tuple(subs[:at] + [entry] + subs[at:])


def _check_fields(what: str, fields: Any) -> None:
    if not isinstance(fields, tuple) or not all(isinstance(f, Field) for f in fields):
        raise SchemaError(f"{what}: fields are a tuple of Field(name, type) declarations")
    names = [f.name for f in fields]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise SchemaError(f"{what}: field {sorted(dup)[0]!r} is declared twice")
    taken = _state_names() | {f.name for s in SUBSECTIONS for f in s.fields} | {
        f.name for d in DEVICE_VERSIONS + SUBSECTION_VERSIONS for f in d.fields}
    clash = [n for n in names if n in taken]
    if clash:
        raise SchemaError(f"{what}: field {clash[0]!r} clashes with a state field of the same name")


_OWN_BODIES: dict[str, tuple[str, Any]] = {}  # models/'s own bodies of the subsections SubsectionVersion extends


def _own_subsection(name: str) -> tuple[str, Any] | None:
    """(parent vmsd, body) of a subsection of models/ (harness/wire/virtio.py) as models/ lays it out, None if it
    has no such one."""
    if name in _OWN_BODIES:
        return _OWN_BODIES[name]
    lists = [wire.core_subsections(t) for t in wire.TRANSPORTS]
    lists += [s for s in (_device_subsections(dev) for dev in wire.DEVICE_DATA) if s is not None]
    for subs in lists:
        if name in subs.known and declared(name) is None:
            _OWN_BODIES[name] = (subs.parent, subs.known[name])  # before any SubsectionVersion wraps it
            return _OWN_BODIES[name]
    return None


def _subsection_version(d: SubsectionVersion) -> None:
    global SUBSECTION_VERSIONS
    from models.model import subsection_versions as current

    if declared(d.name) is not None:
        raise SchemaError(f"subsection version {d.name}: a schema module's subsection takes versions= in its "
                          "Subsection declaration")
    own = _own_subsection(d.name)
    if own is None:
        raise SchemaError(f"subsection version {d.name}: models/ has no such subsection (a new one is a Subsection)")
    if d.since not in releases.RELEASES:
        raise SchemaError(f"subsection version {d.name}: release {d.since} is not modelled (declare it with Release)")
    before = current(d.name, d.since)[0]
    if not isinstance(d.version, int) or isinstance(d.version, bool) or d.version <= before:
        raise SchemaError(f"subsection version {d.name}: version {d.version!r} is not above {before}, the version "
                          f"{d.since} writes without it")
    _check_fields(f"subsection version {d.name}", d.fields)
    old_fields = [f for f in d.fields if not before < f.version <= d.version]
    if old_fields:
        f = old_fields[0]
        raise SchemaError(f"subsection version {d.name}: field {f.name!r} must come with a version above {before} "
                          f"and up to {d.version} (Field(..., version={d.version})), not {f.version}")
    parent, base = own
    SUBSECTION_VERSIONS = tuple(sorted(SUBSECTION_VERSIONS + (d,), key=lambda x: x.since))
    fields = added_fields(d.name)

    def body(version_id: int) -> Any:
        inner = base(version_id) if callable(base) and not isinstance(base, c.Construct) else base
        return c.Struct(*inner.subcons, *(f.name / f.construct(False) for f in fields if f.version <= version_id))

    old = wire.EXTRA_SUBSECTIONS
    wire.EXTRA_SUBSECTIONS = {**old, parent: {**old.get(parent, {}), d.name: functools.lru_cache(maxsize=8)(body)}}


def _device_version(d: DeviceVersion) -> None:
    global DEVICE_VERSIONS
    from models.devices import DEVICES

    vmsds = {m.VERSIONS.device.name: dev for dev, m in DEVICES.items() if m.VERSIONS.device is not None}
    if d.vmsd not in vmsds:
        others = [f"{dev} has none ({'save_device/load_device' if wire.DEVICE_DATA[dev].subcons else 'no device data'})"
                  for dev, m in DEVICES.items() if m.VERSIONS.device is None]
        raise SchemaError(f"device version {d.vmsd!r}: not a device vmsd (known: {', '.join(vmsds)}; "
                          f"{'; '.join(others)})")
    if d.since not in releases.RELEASES:
        raise SchemaError(f"device version {d.vmsd}: release {d.since} is not modelled (declare it with Release)")
    if any(x.vmsd == d.vmsd and x.since == d.since for x in DEVICE_VERSIONS):
        raise SchemaError(f"device version {d.vmsd}: {d.since} is declared twice (one declaration per release)")
    for name in ("version", "minimum_version", "section_version", "section_minimum_version"):
        value = getattr(d, name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 1 <= value < 2**31):
            raise SchemaError(f"device version {d.vmsd}: {name} is a version_id (a positive int32), not {value!r}")
    _check_fields(f"device version {d.vmsd}", d.fields)
    before = versions(d.device, d.since)
    DEVICE_VERSIONS = tuple(sorted(DEVICE_VERSIONS + (d,), key=lambda x: x.since))
    after_ = versions(d.device, d.since)
    dev = after_.device
    assert dev is not None and before.device is not None
    if dev.version < before.device.version or after_.section.version < before.section.version:
        raise SchemaError(f"device version {d.vmsd}: a version_id goes down in {d.since} "
                          f"({before.device.version} -> {dev.version}, section {before.section.version} -> "
                          f"{after_.section.version})")
    for v in (after_.section, after_.device):
        if v is not None and v.minimum > v.version:
            raise SchemaError(f"device version {d.vmsd}: {v.name}'s minimum_version_id {v.minimum} is above its "
                              f"version_id {v.version}")
    high = [f for f in d.fields if f.version > dev.version]
    if high:
        raise SchemaError(f"device version {d.vmsd}: field {high[0].name!r} is on the wire from version "
                          f"{high[0].version}, above the vmsd's version_id {dev.version} in {d.since}")
    old = wire.EXTRA_DEVICE_FIELDS
    fields = [f for x in DEVICE_VERSIONS if x.device == d.device for f in x.fields]
    wire.EXTRA_DEVICE_FIELDS = {**old, d.device: tuple(
        (f.name, f.construct(True), 0 if f.present is not None else f.version) for f in fields)}


_replaced: set[str] = set()  # the checks whose ranges the schema being applied has declared so far


def _check(chk: LoadCheck) -> None:
    """A schema's LoadCheck declarations of one name replace the ranges models/core.py gives it, together: one
    declaration per range."""
    names = [x.name for x in core.CHECKS]
    if chk.name not in names:
        raise SchemaError(f"load check {chk.name!r}: the model has no load step for it (known: "
                          f"{', '.join(dict.fromkeys(names))}); a schema changes the releases where one holds")
    if not isinstance(chk.since, Version) or not (chk.until is None or isinstance(chk.until, Version)):
        raise SchemaError(f"load check {chk.name!r}: since and until are releases (V(\"11.2\")), until may be None")
    if chk.until is not None and chk.until <= chk.since:
        raise SchemaError(f"load check {chk.name!r}: its range {chk.since} to {chk.until} is empty")
    at = names.index(chk.name)
    if chk.name in _replaced:
        mine = [x for x in core.CHECKS if x.name == chk.name]
        clash = next((x for x in mine if _overlap(x, chk)), None)
        if clash is not None:
            raise SchemaError(f"load check {chk.name!r}: its range {_range(chk)} overlaps the one declared before "
                              f"({_range(clash)})")
        end = at + len(mine)  # the schema's ranges of the check sit together, where the first one went
        core.CHECKS = (*core.CHECKS[:end], chk, *core.CHECKS[end:])
        return
    _replaced.add(chk.name)
    rest = [x for x in core.CHECKS if x.name != chk.name]
    core.CHECKS = tuple(rest[:at] + [chk] + rest[at:])


def _range(chk: LoadCheck) -> str:
    return f"{chk.since} to {chk.until}" if chk.until else f"{chk.since} on"


def _overlap(a: LoadCheck, b: LoadCheck) -> bool:
    return (a.until is None or b.since < a.until) and (b.until is None or a.since < b.until)


def _steps_checked(decls: list[tuple[int, LoadCheck]], where: Callable[[int], str]) -> None:
    """A load step that models/model.py always checks (core.STEP_CHECKS) keeps a check on every release: a schema
    that ends a step's only check names the declaration that ended it."""
    for names, since, until in core.STEP_CHECKS:
        mine = [(i, d) for i, d in decls if d.name in names]
        if not mine:
            continue
        for release in releases.RELEASES:
            if release < since or (until is not None and release >= until):
                continue
            if any(core.check(n, release) for n in names):
                continue
            ended = [(i, d) for i, d in mine if d.until is not None and d.until <= release]
            i, d = max(ended, key=lambda x: x[1].until or release) if ended else mine[0]
            raise SchemaError(f"{where(i)}: load check {d.name!r} ({_range(d)}) leaves QEMU {release} without a "
                              f"{' or '.join(repr(n) for n in names)} check, which that load step always makes; "
                              "declare its range on the releases that keep it")
