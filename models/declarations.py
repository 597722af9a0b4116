"""The vocabulary schema modules and models/ declare format changes in (models/schema.py explains it): a
release, a vmstate field, a subsection, a new version of a subsection or of a device vmsd. Plain frozen values;
models/registry.py holds them, models/schema.py checks and applies a schema module's."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import construct as c

from harness.errors import SchemaError
from harness.wire.primitives import FlatArray, When, be16, be32, be64, sbe32, u8, vbool
from harness.wire.virtio import DEVICE_DATA
from models.conditions import Condition, as_condition
from models.configuration import Derived
from models.releases import Version
from models.state import DeviceState
from models.vmsd import Versions

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
    decides on its own, the destination over its state as loaded so far).

    A field of models/core.py's subsections holds a DeviceState attribute: its own name's, or `of`'s; with `shift`,
    the bits of `of` from there on (a feature word); with `rows` (type "struct"), a per-queue array: one row of
    these fields per queue, `count` rows on the wire (zero rows after the device's queues), each row the queue's own
    attributes when `of` is "queues", else the rows of a DeviceState tuple. Its `reset` may be a term (a value the
    realized device gives: TargetEndian(), QUEUE_SIZES)."""

    name: str
    type: str  # a key of TYPES, or "buffer"
    reset: Any = 0  # the value after realize and reset (a buffer's or an array's: of each byte or element)
    version: int = 1
    values: tuple[Any, ...] = ()  # the values a device can hold, for the matrix to draw; (): any of the type
    size: int = 0  # a buffer's length in bytes
    count: int = 0  # an array's length; 0: a single value
    present: Condition | Callable[[Derived, DeviceState], Any] | None = None
    # a field the device sets from the rest of its state (VirtIODevice.started follows DRIVER_OK where use_started
    # is on): the matrix gives it this value instead of drawing one
    derived: Condition | None = None
    rows: tuple[Field, ...] = ()  # a per-queue array's row (type "struct")
    of: str = ""  # the state attribute it holds (part of); "": its own name's
    shift: int | None = None  # it holds the bits of `of` from this one on (its type's width)
    loaded_until: Any = None  # a Version from which destinations ignore it (virtio/ringsize's num_default, 11.1)

    def __post_init__(self) -> None:
        if self.type == "struct":
            if not self.rows or not self.count:
                raise SchemaError(f"field {self.name!r}: a struct is a per-queue array's row: "
                                  "Field(name, \"struct\", count=1024, rows=(Field(...), ...))")
        elif self.rows:
            raise SchemaError(f"field {self.name!r}: rows make a per-queue array of type \"struct\"")
        elif self.type == "buffer":
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
    def attribute(self) -> str:
        return self.of or self.name

    @property
    def plain(self) -> bool:
        """A value of the state attribute of its own name, which the matrix draws and the rules compare as it is
        (not a part of another attribute, nor a per-queue array)."""
        return not self.of and self.shift is None and not self.count

    def initial(self, r: Derived, s: DeviceState) -> Any:
        """Its value after realize and reset (a core subsection's; a per-queue array without a term holds no rows)."""
        term = getattr(self.reset, "value", None)
        if callable(term):
            return term(r, s)
        return () if self.rows or self.count and self.reset is None else self.reset_value()

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

    def wire_value(self, value: Any) -> Any:
        """A state's value as the layout takes it (vmstate's bool is a byte)."""
        return int(value) if self.type == "bool" and not self.count else value

    def state_value(self, value: Any) -> Any:
        """A decoded value as the state holds it."""
        return bool(value) if self.type == "bool" and not self.count else value

    def wire_type(self) -> Any:
        if self.type == "buffer":
            return c.Bytes(self.size)
        if self.rows:
            return FlatArray(self.count, c.Struct(*(x.name / x.wire_type() for x in self.rows)))
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
        if self.rows:
            return f"{self.name} {{{', '.join(x.describe() for x in self.rows)}}}[{self.count}] (one per queue)"
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
    needed: Condition | Callable[[Derived, DeviceState], Any] | None = None
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


@dataclass(frozen=True)
class Transport:
    """Where QEMU offers a device: `name` ("pci", "mmio", "ccw") from release `since` (until `until`, exclusive)."""

    name: str
    since: Version
    until: Version | None = None

    def offered(self, release: Version) -> bool:
        return release >= self.since and (self.until is None or release < self.until)


# the code hooks a Device's `code` has (its docstring says what each does)
HOOKS = ("host_features", "get_features", "queue_sizes", "config_len", "default_vectors", "reset_state", "to_wire",
         "from_wire", "load_device")


def offered(since: Version, *names: str) -> tuple[Transport, ...]:
    """The transports `names`, each from release `since`."""
    return tuple(Transport(n, since) for n in names)


@dataclass(frozen=True)
class Device:
    """One virtio device, as QEMU has it: the one declaration that adds a device (models/devices/*.py hold one
    each, or several: the virtio-input types; a schema module may declare one too). Everything that lists
    devices (the command line, the PCI ids, the compat globals, the matrix, the decoder, the real backend, the CLI)
    derives from the registry's devices.

    Identity: `name` is the harness's name and QEMU's type stem ("virtio-net": -device virtio-net-pci,
    virtio-net-device on virtio-mmio, virtio-net-ccw); `versions` its outer vmsd (whose name is its migration
    section's, "virtio-input" for all four input types) and its device vmsd; `virtio_id` VIRTIO_ID_*;
    `pci_device_id` PCI_DEVICE_ID_VIRTIO_* (transitional 0x1000 + n; a modern-only device 0x1040 + virtio_id),
    `pci_class` PCIDeviceClass.class_id, `pci_vectors` the proxy's default `vectors` where fixed (None: realize
    derives it), `romfile` the proxy's default option ROM; `transports` where and from which release QEMU offers
    it; `parents` the abstract QOM stems between the type and virtio-pci/virtio-device/virtio-ccw that compat
    globals may name ("virtio-input-hid", "virtio-input"); `force_virtio_1`: the PCI proxy forces virtio 1.0
    (virtio_pci_force_virtio_1: modern, no legacy).

    Properties and compat entries: `props` and `compat` are the device's own Prop and Compat declarations
    (the registry adds them to models/props.py's and models/releases.py's); `drawn` the properties the matrix
    draws, with the values worth drawing.

    Command line: `qdev_id` the id prefix the real backend gives it (vnet0, ...); `backend` the option it needs
    beside -device, as ("-blockdev", "driver=null-co,node-name=bd_{id},size=1048576", "drive=bd_{id}") for a
    block device: the option, its argument and the -device property naming it, {id} the device's qdev id;
    `attached` the options after its -device for what sits on its bus (virtio-scsi's scsi-hd).
    `order`: where it stands in lists (issue 13's order, how often a migrating VM carries it).

    Behaviour: `code` holds QEMU's save/load code as hooks (the device's module): host_features(ctx),
    get_features(ctx, features), queue_sizes(ctx), config_len(ctx, host_features), default_vectors(ctx, nqueues),
    reset_state(realized), to_wire(dev, realized, state), from_wire(value), load_device(dev, realized,
    features_lo, lines); optional: SUBSECTIONS (its device vmsd's, models/core.DeviceSubsection), VMSD_FIELDS,
    known_subsections(release), num_default_for, reset_queue_sizes, check_field, set_features,
    change_num_queues_crash, multiqueue. `data` is its device data's layout (a construct) where harness/wire has
    none for its section's vmsd (None: harness/wire/virtio.py's)."""

    name: str
    versions: Versions
    virtio_id: int
    code: Any
    pci_device_id: int = 0
    pci_class: int = 0x00FF
    pci_vectors: int | None = None
    romfile: str = ""
    transports: tuple[Transport, ...] = ()
    parents: tuple[str, ...] = ()
    force_virtio_1: bool = False
    props: tuple[Any, ...] = ()  # models.props.Prop
    compat: tuple[Any, ...] = ()  # models.releases.Compat
    drawn: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    qdev_id: str = "vdev"
    backend: tuple[str, str, str] | None = None
    # options the real backend adds after its -device, {id} its qdev id: what sits on a bus it provides (virtio-scsi's
    # disk, whose own section carries the device's in-flight requests)
    attached: tuple[tuple[str, str], ...] = ()
    order: int = 100  # where it stands in lists (the matrix, help texts, the real backend's VMs): lower first
    data: Any = None
    source: str = ""

    def __post_init__(self) -> None:
        if not self.name.startswith(("virtio-", "vhost-")):
            raise SchemaError(f"device {self.name!r}: a QEMU type stem like \"virtio-input\"")
        if not self.transports:
            raise SchemaError(f"device {self.name!r} declares no transport (Transport(\"pci\", V(\"2.4\")), ...)")
        for t in self.transports:
            if t.name not in ("pci", "mmio", "ccw"):
                raise SchemaError(f"device {self.name!r}: unknown transport {t.name!r} (known: pci, mmio, ccw)")
        missing = [h for h in HOOKS if not callable(getattr(self.code, h, None))]
        if missing:
            raise SchemaError(f"device {self.name!r}: its code has no {', '.join(missing)} (see Device's docstring)")
        if self.data is None and self.section not in DEVICE_DATA:
            raise SchemaError(f"device {self.name!r}: harness/wire lays out no {self.section!r} section: give its "
                              "device data's layout (Device(..., data=construct.Struct(...)))")

    @property
    def section(self) -> str:
        """Its migration section's vmsd name (the idstr's last part)."""
        return self.versions.section.name

    def qom_type(self, transport: str) -> str:
        """The type a user adds: virtio-net-pci, virtio-net-device (on virtio-mmio), virtio-net-ccw."""
        return f"{self.name}-{ {'pci': 'pci', 'mmio': 'device', 'ccw': 'ccw'}[transport] }"

    def offered(self, release: Version, transport: str) -> bool:
        return any(t.name == transport and t.offered(release) for t in self.transports)

    def type_parents(self) -> dict[str, tuple[str, ...]]:
        """Which QEMU types a compat global for each of its types reaches (its abstract parents, then the
        transport's base type)."""
        out: dict[str, tuple[str, ...]] = {}
        for suffix, base in (("pci", "virtio-pci"), ("device", "virtio-device"), ("ccw", "virtio-ccw")):
            out[f"{self.name}-{suffix}"] = (*(f"{p}-{suffix}" for p in self.parents), base)
        return out
