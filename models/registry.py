"""The registry: every declaration the models judge a release by, as one frozen value.

BASE holds the in-tree declarations (models/releases.py, props.py, core.py, devices/). A schema module
(models/schema.py) never changes it: loading one gives a new Registry that extends the one it was loaded on.
realize() (models/config.py) takes a registry and the Realized it returns carries it, so that everything the
model derives from a configuration is judged by the same declarations; a Registry hashes by identity, so the
caches of realize, of the layouts and of the machine types key on it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from harness.errors import SchemaError
from harness.wire.virtio import NO_EXTRAS, TRANSPORTS, Extras, core_subsections
from models import core, props, releases
from models.conditions import Static
from models.core import CoreSubsection, LoadCheck
from models.declarations import Device, DeviceVersion, Field, Schema, Subsection, SubsectionVersion
from models.devices import DECLARED, net
from models.props import Prop, backend_type, proxy_type
from models.releases import Compat, Downstream, MachineType, Version
from models.vmsd import Versions, Vmsd


@dataclass(frozen=True, eq=False)
class Registry:
    """The declarations, in-tree and from schema modules. Equal only to itself (hashed by identity)."""

    releases: tuple[Version, ...]  # the modelled releases, in order
    all_versions: tuple[Version, ...]  # every QEMU release, for machine type names
    downstream: tuple[Downstream, ...]
    compat: tuple[Compat, ...]
    props: tuple[Prop, ...]
    core_subsections: tuple[CoreSubsection, ...]  # in vmstate_virtio's list order
    checks: tuple[LoadCheck, ...]
    subsections: tuple[Subsection, ...] = ()  # schema modules' own subsections, core and device ones
    device_versions: tuple[DeviceVersion, ...] = ()  # in release order
    subsection_versions: tuple[SubsectionVersion, ...] = ()  # in release order
    schemas: tuple[Schema, ...] = ()  # the schema modules applied, in order
    wire: Extras = NO_EXTRAS  # what they add to the layouts (harness/wire/virtio.py)
    devices: tuple[Device, ...] = ()  # models/devices' and schema modules', in their declared order

    def __post_init__(self) -> None:
        """A core subsection of models/core.py that harness/wire/virtio.py does not lay out (a new one) is laid out
        from its declared fields, and those DeviceState does not hold are kept as a schema module's are (by name,
        in DeviceState.extra): adding one is one declaration in models/core.py."""
        wire, subsections = self.wire, self.subsections
        for s in self.core_subsections:
            if not s.fields or s.name in _wire_core_names() or any(x.name == s.name for x in subsections):
                continue
            extra = tuple(f for f in s.fields if f.attribute not in core.STATE_FIELDS)
            decl = Subsection(s.name, s.since, extra, needed=s.needed[0].test, source=s.source)
            wire = with_layout(wire, "virtio", s.name, decl.layout() if extra else Subsection(
                s.name, s.since, s.fields).layout())
            if extra:
                subsections = (*subsections, decl)
        data = {d.section: d.data for d in self.devices if d.data is not None}
        if any(wire.devices.get(k) is not v for k, v in data.items()):
            wire = Extras(wire.subsections, wire.device_fields, MappingProxyType({**wire.devices, **data}))
        object.__setattr__(self, "wire", wire)
        object.__setattr__(self, "subsections", subsections)

    # --- devices ------------------------------------------------------------------------------------------------

    def device(self, name: str) -> Device:
        """A device by name, with an error that lists them."""
        found = self._devices.get(name)
        if found is None:
            raise SchemaError(f"unknown device {name!r} (known: {', '.join(self._devices)})")
        return found

    @property
    def device_names(self) -> tuple[str, ...]:
        return tuple(self._devices)

    def devices_on(self, transport: str, release: Version | None = None) -> tuple[str, ...]:
        """The devices QEMU offers on `transport` (in `release`; None: in any)."""
        return tuple(d.name for d in self.devices if any(
            t.name == transport and (release is None or t.offered(release)) for t in d.transports))

    def section_devices(self, vmsd: str) -> tuple[Device, ...]:
        """The devices whose migration section has vmsd name `vmsd` (the four virtio-input types share one)."""
        return tuple(d for d in self.devices if d.section == vmsd)

    @functools.cached_property
    def _devices(self) -> dict[str, Device]:
        return {d.name: d for d in self.devices}

    @functools.cached_property
    def type_parents(self) -> dict[str, tuple[str, ...]]:
        """Which QEMU types a compat global for a device's type reaches (the proxy and its backend device)."""
        out: dict[str, tuple[str, ...]] = {}
        for d in self.devices:
            out.update(d.type_parents())
        return out

    # --- releases and machine types --------------------------------------------------------------------------

    def release_of(self, text: str) -> Version:
        """A modelled release by name, with an error that lists them."""
        v = Version.parse(text)
        if v not in self.releases:
            raise ValueError(f"release {v} is not modelled (releases: {', '.join(map(str, self.releases))})")
        return v

    def latest_release_at(self, version: Version) -> Version:
        """The modelled release whose rules a QEMU of `version` follows (the newest one <= version)."""
        older = [r for r in self.releases if r <= version]
        if not older:
            raise ValueError(f"QEMU {version} is older than the oldest modelled release {self.releases[0]}")
        return older[-1]

    def machine_types(self, release: Version, transport: str | None = None) -> tuple[MachineType, ...]:
        """The versioned machine types a release has (for one transport's families, or all)."""
        return _machine_types(self, release, transport)

    def machine(self, name: str) -> MachineType:
        """A machine type by name (a downstream line's too)."""
        return MachineType.parse(name, self.downstream)

    def schema_paths(self) -> list[str]:
        """The schema modules applied (failure files record them; `replay` loads them again)."""
        return [str(s.path) for s in self.schemas]

    # --- properties ------------------------------------------------------------------------------------------

    def compat_values(self, release: Version, machine: MachineType, qom_type: str) -> dict[str, Any]:
        """Property values the machine's compat globals give an object of `qom_type`."""
        return dict(_compat_values(self, release, machine, qom_type))

    def migration_values(self, release: Version, machine: MachineType) -> dict[str, bool]:
        """send-configuration and send-section-footer (§1.3): on from machine type 2.4."""
        out = {"send-configuration": True, "send-section-footer": True}
        out.update(self.compat_values(release, machine, "migration"))
        return out

    def known_props(self, release: Version, qom_type: str) -> dict[str, Prop]:
        reach = {qom_type, *self.type_parents.get(qom_type, ())}
        return {p.name: p for p in self.props if p.qom_type in reach and p.exists(release)}

    def machine_object_props(self, release: Version, machine: MachineType, qom_type: str) -> dict[str, Any]:
        """The properties of an object no -device names (a bus bridge, the virtio-mmio transport): default, or
        before a property existed the value its compat entry keeps old machine types at; then compat globals."""
        out = {p.name: p.default for p in self.props if p.qom_type == qom_type and p.exists(release)}
        for p in self.props:
            if p.qom_type == qom_type and p.since > release:
                out.setdefault(p.name, next((e.value for e in self.compat if e.driver == qom_type
                                             and e.prop == p.name and e.before), p.default))
        out.update(self.compat_values(release, machine, qom_type))
        return out

    def effective_props(self, release: Version, machine: MachineType, device: str, transport: str,
                        user: Mapping[str, Any]) -> dict[str, Any]:
        """Default, then machine compat globals, then the user's `-device` properties, for the proxy
        and its backend together (QEMU forwards the backend's properties through the proxy)."""
        out: dict[str, Any] = {}
        types = [backend_type(device), "virtio-mmio" if transport == "mmio" else proxy_type(device, transport)]
        known: dict[str, Prop] = {}
        for qom_type in types:
            known.update(self.known_props(release, qom_type))
        out.update({name: p.default for name, p in known.items()})
        # before a property existed, QEMU behaved as the compat entry that later keeps old machine types
        # behaving so (x-pcie-lnkctl-init, queue_reset, ...): take that value
        for entry in self.compat:
            if entry.before and entry.prop not in known and any(
                    p.since > release for p in self._props_by_name.get(entry.prop, ())) and any(
                    entry.driver in {t, *self.type_parents.get(t, ())} for t in types):
                out.setdefault(entry.prop, entry.value)
        # a global on the proxy reaches the backend's properties too (the proxy aliases them)
        for qom_type in types:
            out.update({k: v for k, v in self.compat_values(release, machine, qom_type).items() if k in known})
        out.update(user)
        return out

    @functools.cached_property
    def _props_by_name(self) -> dict[str, tuple[Prop, ...]]:
        out: dict[str, tuple[Prop, ...]] = {}
        for p in self.props:
            out[p.name] = (*out.get(p.name, ()), p)
        return out

    def static(self, release: Version, machine: MachineType, device: str, transport: str,
               varied: frozenset[str] = frozenset()) -> Static:
        """What a condition's static() knows of a configuration without a state (models/conditions.py)."""
        return Static(release, machine, device, transport,
                      self.effective_props(release, machine, device, transport, {}), varied)

    # --- the core's subsections and load checks ----------------------------------------------------------------

    def known_core_subsections(self, release: Version) -> list[CoreSubsection]:
        return [s for s in self.core_subsections if release >= s.since]

    def check(self, name: str, release: Version) -> LoadCheck | None:
        """The load check `name` as `release` makes it, None where it makes none."""
        return next((c for c in self.checks if c.name == name and c.holds(release)), None)

    # --- vmsd versions and the schema modules' subsections and fields -------------------------------------------

    def declared(self, name: str) -> Subsection | None:
        """A schema module's subsection by name."""
        return next((s for s in self.subsections if s.name == name), None)

    def known(self, release: Version, device: str) -> list[Subsection]:
        """The schema modules' subsections a release of `device` knows (core ones first, in declaration order)."""
        return [s for s in self.subsections if s.since <= release and s.device in (None, device)]

    def known_device_subsections(self, device: str, release: Version) -> set[str]:
        return {s.name for s in self.known(release, device) if s.device is not None}

    def added_fields(self, name: str, release: Version | None = None) -> list[Field]:
        """The fields SubsectionVersion declarations append to a subsection of models/ (up to `release`)."""
        return [f for d in self.subsection_versions if d.name == name and (release is None or d.since <= release)
                for f in d.fields]

    def device_fields(self, device: str, release: Version) -> list[Field]:
        """The fields schema modules append to a device vmsd that `release` knows, in wire order."""
        return [f for d in self.device_versions if d.device == device and d.since <= release for f in d.fields]

    def versions(self, device: str, release: Version) -> Versions:
        """The device's vmsd versions in `release`: models/devices' own, as DeviceVersion declarations change
        them."""
        v: Versions = self.device(device).versions
        for d in self.device_versions:
            if d.device != device or d.since > release:
                continue
            dev = v.device
            if dev is not None:
                dev = Vmsd(dev.name, d.version or dev.version, d.minimum_version or dev.minimum)
            sec = v.section
            v = Versions(Vmsd(sec.name, d.section_version or d.version or sec.version,
                              d.section_minimum_version or sec.minimum), dev)
        return v

    def subsection_version(self, name: str, release: Version) -> tuple[int, int]:
        """(version_id, minimum_version_id) of a subsection in a release: 1/1 but virtio-net-device/rss's, a
        schema module's own as it declares them, and as SubsectionVersion declarations change models/'s."""
        sub = self.declared(name)
        if sub is not None:
            return sub.version_in(release), sub.minimum_version
        own = (net.rss_version(release), 1) if name == net.RSS and release >= net.RSS_VERSIONS[0][0] else (1, 1)
        for d in self.subsection_versions:
            if d.name == name and d.since <= release:
                own = (d.version, d.minimum_version or own[1])
        return own


def with_layout(extras: Extras, parent: str, name: str, body: Any) -> Extras:
    """`extras` with a subsection's body (or function of its version_id) added or replaced."""
    subs = {**extras.subsections, parent: MappingProxyType({**extras.subsections.get(parent, {}), name: body})}
    return Extras(MappingProxyType(subs), extras.device_fields, extras.devices)


@functools.cache
def _wire_core_names() -> frozenset[str]:
    """The core subsections harness/wire/virtio.py lays out (the decoder's own, without a model)."""
    return frozenset(n for t in TRANSPORTS for n in core_subsections(t).known)


@functools.lru_cache(maxsize=1024)
def _machine_types(registry: Registry, release: Version, transport: str | None) -> tuple[MachineType, ...]:
    return releases.machine_types(release, transport, registry.all_versions, registry.downstream)


@functools.lru_cache(maxsize=8192)
def _compat_values(registry: Registry, release: Version, machine: MachineType, qom_type: str
                   ) -> tuple[tuple[str, Any], ...]:
    return tuple(releases.compat_values(release, machine, qom_type, registry.compat, registry.downstream,
                                        registry.type_parents).items())


BASE = Registry(releases=releases.RELEASES, all_versions=releases.ALL_VERSIONS, downstream=(),
                # the devices' own (several devices may share theirs: each entry once)
                compat=tuple(dict.fromkeys((*releases.COMPAT, *(x for d in DECLARED for x in d.compat)))),
                props=tuple(dict.fromkeys((*props.PROPS, *(p for d in DECLARED for p in d.props)))),
                core_subsections=core.CORE_SUBSECTIONS, checks=core.CHECKS, devices=DECLARED)
