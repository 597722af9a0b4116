"""Device configurations that are real for a (source release, destination release) pair: a machine
type both releases have, properties both know, a backend, -smp and -m."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from hypothesis import strategies as st

from models.config import Config, NetBackend
from models.devices import net
from models.props import proxy_type
from models.registry import BASE, Registry
from models.releases import MachineType, Version


def device_draws(device: str, registry: Registry = BASE) -> dict[str, list[Any]]:
    """The properties drawn for a device, with the values worth drawing (each must exist in both releases): its
    declaration's (models/declarations.Device.drawn)."""
    return {name: list(values) for name, values in registry.device(device).drawn}


DRAWN_PROPS: dict[str, dict[str, list[Any]]] = {d: device_draws(d) for d in BASE.device_names}


_BOOL = st.booleans()
_SMP = st.sampled_from((1, 2, 4))
_KIND = st.sampled_from(("hubport", "user", "tap"))
# tap queues (virtio-net's max_queue_pairs with mq): one, two and 32 pairs (65 queues, 66 vectors); realize refuses
# more than 511 (models/devices/net.py); the real backend (harness/qemu/drawn.py) goes up to 64
QUEUE_COUNTS = (1, 2, 32)
# the queue pairs both releases can realize (2 x pairs + 1 queues: 64 before 2.4, 1024 after)
_QUEUES_UP_TO = {m: st.sampled_from(tuple(q for q in QUEUE_COUNTS if 2 * q + 1 <= m)) for m in (64, 1024)}
_SAME_BACKEND = st.integers(0, 3).map(lambda x: x != 3)  # the destination's backend is the source's 3 times in 4


def common_machines(src: Version, dst: Version, transport: str, registry: Registry = BASE) -> list[MachineType]:
    dst_names = {m.name for m in registry.machine_types(dst, transport)}
    return [m for m in registry.machine_types(src, transport) if m.name in dst_names]


@st.composite
def configs(draw: st.DrawFn, src: Version, dst: Version, transport: str, device: str,
            machines: list[str] | None = None, registry: Registry = BASE) -> tuple[Config, Config]:
    """A (source, destination) pair of the same device configuration on the two releases (as `registry`
    declares them: its machine types and properties)."""
    options = list(common_machines(src, dst, transport, registry))
    if machines:
        options = [m for m in options if m.name in machines or m.family in machines]
    if not options:
        raise ValueError(f"no machine type common to {src} and {dst} for {transport}")
    machine = draw(st.sampled_from(tuple(options)))  # cached by Hypothesis, as its argument is hashable
    smp = draw(_SMP)
    props: dict[str, Any] = {}
    known_src = registry.known_props(src, proxy_type(device, transport)) | registry.known_props(src, f"{device}-device")
    known_dst = registry.known_props(dst, proxy_type(device, transport)) | registry.known_props(dst, f"{device}-device")
    for name, values in device_draws(device, registry).items():
        if name in known_src and name in known_dst and draw(_BOOL):
            props[name] = draw(st.sampled_from(tuple(values)))
    if device == "virtio-net" and transport == "pci":
        props["romfile"] = ""
    netdev = dst_netdev = NetBackend()
    if device == "virtio-net":
        netdev = _backend(draw, bool(props.get("mq")), min(src, dst))
        # the destination's backend and its capabilities are its own host's: the same one mostly, else drawn on
        # their own (a tap with or without vnet_hdr, UFO or USO, a hubport); what QEMU then does with a capability
        # the source used and the destination lacks is the model's to follow (net.field_errors, the feature check)
        dst_netdev = netdev if draw(_SAME_BACKEND) else _backend(draw, bool(props.get("mq")), min(src, dst))
        if netdev.kind != "tap":
            props.pop("mq", None)
    express = transport == "pci" and machine.family == "pc-q35" and src >= Version(2, 7) and draw(_BOOL)
    if express:
        props["disable-legacy"] = False  # keep the legacy BAR the driver uses
    return (Config(src, machine, device, transport, smp, 128, props, netdev, express),
            Config(dst, machine, device, transport, smp, 128, props, dst_netdev, express))


def _backend(draw: st.DrawFn, mq: bool, oldest: Version) -> NetBackend:
    kind = draw(_KIND)
    if kind != "tap":
        return NetBackend(kind)
    vnet = draw(_BOOL)
    return NetBackend("tap", vnet_hdr=vnet, ufo=vnet and draw(_BOOL), uso=vnet and draw(_BOOL),
                      queues=draw(_QUEUES_UP_TO[net.queue_max(oldest)]) if mq else 1)


def drawn_props(src: Version, dst: Version, transport: str, device: str, registry: Registry = BASE
                ) -> tuple[str, ...]:
    """The properties configs() draws for the pair: those of DRAWN_PROPS both releases know."""
    known = [{**registry.known_props(r, proxy_type(device, transport)), **registry.known_props(r, f"{device}-device")}
             for r in (src, dst)]
    return tuple(name for name in device_draws(device, registry) if name in known[0] and name in known[1])


BACKENDS = (NetBackend(), NetBackend("user"), NetBackend("tap"), NetBackend("tap", vnet_hdr=True),
            NetBackend("tap", vnet_hdr=True, ufo=True), NetBackend("tap", vnet_hdr=True, uso=True),
            NetBackend("tap", vnet_hdr=True, ufo=True, uso=True))


def config_variants(src: Version, dst: Version, transport: str, device: str, machine: MachineType,
                    registry: Registry = BASE) -> Iterator[Config]:
    """Every source configuration configs() can draw on `machine`, as far as realize derives anything from it
    (host features, queues, modern or legacy): each value of the properties both releases know, each backend
    (mq only with tap, whose queues it decides), -smp for virtio-blk (its queue count follows it). The PCI
    Express port is left out: it changes the config space alone. What diff decides statically from (Static)."""
    names = drawn_props(src, dst, transport, device, registry)
    drawn = [(name, [None, *values]) for name, values in device_draws(device, registry).items() if name in names]
    smps = (1, 2, 4) if device == "virtio-blk" else (1,)
    for picked in itertools.product(*(values for _, values in drawn)):
        props = {name: v for (name, _), v in zip(drawn, picked, strict=True) if v is not None}
        if device == "virtio-net" and transport == "pci":
            props["romfile"] = ""
        backends: list[tuple[dict[str, Any], NetBackend]] = [(props, NetBackend())]
        if device == "virtio-net":
            plain = {k: v for k, v in props.items() if k != "mq"}
            backends = [(plain, b) for b in BACKENDS if b.kind != "tap"] + [
                (props, NetBackend(b.kind, b.vnet_hdr, b.ufo, b.uso, queues=q)) for b in BACKENDS if b.kind == "tap"
                for q in (tuple(q for q in QUEUE_COUNTS if 2 * q + 1 <= net.queue_max(src)) if props.get("mq")
                          else (1,))]
        for (p, netdev), smp in itertools.product(backends, smps):
            yield Config(src, machine, device, transport, smp, 128, p, netdev)
