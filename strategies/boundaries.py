"""The boundary examples of a cell: the configurations the matrix runs on every run, besides its random draws
(harness/matrix.py). One per machine type where something changes for the pair (models/edges.py), and on each the
terms a declared needed() or present= names at the side of their edge where the condition holds: the state fields
it compares, the guest feature bits it reads (negotiated by a driver that can), a configuration whose host offers
the feature bits it reads. The drawn state of each example is the driver's (strategies/driver.py), then edited."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, replace
from typing import Any

from models import declared
from models import features as F
from models.config import Config, Realized, realize
from models.devices import net
from models.edges import Terms, boundary_machines, condition_properties, declared_terms, seen
from models.registry import BASE, Registry
from models.releases import MachineType, Version
from models.state import DeviceState, NetState
from strategies.configs import config_variants

ACK_DRIVER, FEATURES_OK = 0x3, 0x8


@dataclass(frozen=True)
class Boundary:
    """One boundary example: the configuration pair, why it is one, and what it sets on the drawn state."""

    src: Config
    dst: Config
    why: str
    fields: tuple[tuple[str, Any], ...] = ()  # state fields (declared ones, the device's) at the holding side
    guest_bits: tuple[int, ...] = ()  # feature bits the driver negotiates where the host offers them

    def apply(self, r: Realized, s: DeviceState) -> DeviceState:
        """The drawn state with the edits, as a driver would make it: bits the host does not offer are left out,
        a bit past 31 only with a modern driver (VERSION_1), features written with DRIVER and FEATURES_OK."""
        return _with_fields(r, _with_guest_bits(r, s, self.guest_bits), self.fields)


def _with_guest_bits(r: Realized, s: DeviceState, bits: tuple[int, ...]) -> DeviceState:
    wanted = 0
    for b in bits:
        if not F.has(r.host_features, b) or b == F.BAD_FEATURE:
            continue
        if b >= 32 and not (r.modern and F.has(r.host_features, F.VERSION_1)):
            continue
        wanted |= F.bit(b) | (F.bit(F.VERSION_1) if b >= 32 else 0)
    if not wanted or s.guest_features & wanted == wanted:
        return s
    old = s.guest_features
    features = old | wanted
    modern = F.has(features, F.VERSION_1)
    status = s.status | ACK_DRIVER | (FEATURES_OK if modern else 0)
    device = s.device
    if isinstance(device, NetState):
        device = net.set_features(replace(device, mergeable_rx_bufs=int(F.has(features, F.NET_MRG_RXBUF))),
                                  r.release, old, features)
    pci = s.pci
    if pci is not None and modern:  # a modern driver writes the features through the common config
        pci = replace(pci, modern_guest_features=(features & 0xFFFFFFFF, features >> 32 & 0xFFFFFFFF))
    return replace(s, guest_features=features, status=status, device=device, pci=pci)


def _with_fields(r: Realized, s: DeviceState, fields: tuple[tuple[str, Any], ...]) -> DeviceState:
    if not fields:
        return s
    ranges = {f.name: f for f in declared.known_fields(r)}
    extra = dict(s.extra)
    device_names = {f.name for f in dataclasses.fields(s.device)} if s.device is not None else set()
    device_changes: dict[str, Any] = {}
    for name, value in fields:
        f = ranges.get(name)
        if f is not None and name in extra:
            lo, hi = f.range
            if not f.count and f.type != "buffer" and lo <= value <= hi:
                extra[name] = f.state_value(value)
        elif name in device_names and isinstance(getattr(s.device, name), int) and value >= 0:
            device_changes[name] = type(getattr(s.device, name))(value)
    device = replace(s.device, **device_changes) if device_changes else s.device
    return replace(s, extra=tuple(sorted(extra.items())), device=device)


def boundaries(src: Version, dst: Version, transport: str, device: str, machines: list[str] | None = None,
               registry: Registry = BASE) -> tuple[Boundary, ...]:
    """The boundary examples of a cell (narrowed to `machines`, names or families, where given)."""
    return _boundaries(src, dst, transport, device, tuple(machines or ()), registry)


@functools.lru_cache(maxsize=4096)
def _boundaries(src: Version, dst: Version, transport: str, device: str, machines: tuple[str, ...],
                registry: Registry) -> tuple[Boundary, ...]:
    t = declared_terms(registry, device, src, dst)
    assignments = t.holding() or [()]
    out: dict[Any, Boundary] = {}
    props = condition_properties(registry, device)

    def config_of(release: Version, m: MachineType) -> Config:
        return replace(_config(src, dst, m, device, transport, t, registry), release=release)

    for m, why in boundary_machines(registry, src, dst, transport, device, t.machines, config_of):
        if machines and m.name not in machines and m.family not in machines:
            continue
        a = config_of(src, m)
        b = replace(a, release=dst)
        # a machine type of another family that the example sees alike on both releases adds nothing (pc-q35-X
        # beside pc-i440fx-X: the same compat entries)
        key = (m.version, m.line, m.downstream, seen(a, registry, props), seen(b, registry, props))
        for i, fields in enumerate(assignments):
            out.setdefault((*key, i), Boundary(a, b, why, fields, tuple(sorted(t.guest_bits))))
    return tuple(out.values())


def _config(src: Version, dst: Version, m: MachineType, device: str, transport: str, t: Terms,
            registry: Registry) -> Config:
    """The configuration of a boundary example: the default one, or where the declared terms read host feature
    bits, the variant (models' config_variants) whose host offers most of them."""
    props = {"romfile": ""} if device == "virtio-net" and transport == "pci" else {}
    default = Config(src, m, device, transport, 1, 128, props)
    if not t.host_bits:
        return default
    best, score = default, -1
    for c in config_variants(src, dst, transport, device, m, registry):
        host = realize(c, registry).host_features
        n = sum(1 for b in t.host_bits if host >> b)  # a bit of a range from b (HostFeatures(lo, hi)) or b itself
        if n > score:
            best, score = c, n
    return best
