"""A device configuration (everything QEMU derives device state from) and what realize derives
from it: host features, queues and their sizes, config length, MSI-X vectors, modern or legacy,
PCI Express, the PCI config space. Values follow from the properties that cause them."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from harness.errors import SchemaError
from models import features as F
from models.props import UNSPECIFIED, effective_props
from models.releases import MachineType, Version, machine_types, migration_values

DEVICE_IDS = {"virtio-net": 1, "virtio-blk": 2, "virtio-rng": 4, "virtio-balloon": 5}
TARGET_BIG_ENDIAN = {"ccw": True}  # s390x; x86 (pci) and aarch64 virt (mmio) are little-endian


@dataclass(frozen=True)
class NetBackend:
    """The -netdev peer of a virtio-net device, as far as it changes the device's host features."""

    kind: str = "hubport"  # hubport | user | tap
    vnet_hdr: bool = False  # tap's vnet header (offloads need it)
    ufo: bool = False  # the tap kernel supports UFO
    uso: bool = False  # the tap kernel supports USO (8.2+ devices offer USO then)
    vhost: bool = False  # vhost-net: the kernel masks the bits it does not support
    queues: int = 1
    # what a vhost-net kernel offers among the bits vhost masks (no packed ring, no ring reset)
    vhost_kernel: frozenset[int] = frozenset({F.NOTIFY_ON_EMPTY, F.ANY_LAYOUT, F.RING_INDIRECT_DESC,
                                              F.RING_EVENT_IDX, F.NET_MRG_RXBUF, F.VERSION_1,
                                              F.ACCESS_PLATFORM})

    def describe(self) -> str:
        if self.kind != "tap":
            return self.kind
        opts = [f"vnet_hdr={'on' if self.vnet_hdr else 'off'}"] + (["vhost=on"] if self.vhost else [])
        return "tap," + ",".join(opts + [f"queues={self.queues}"] * (self.queues > 1))


@dataclass(frozen=True)
class Config:
    release: Version
    machine: MachineType
    device: str  # virtio-net | virtio-blk | virtio-balloon | virtio-rng
    transport: str = "pci"
    smp: int = 1
    mem_mb: int = 128
    props: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    netdev: NetBackend = NetBackend()
    express: bool = False  # on a PCI Express root port (q35)
    ccw_devno: int = 0  # virtio-ccw: the device number css gives it (`devno=fe.0.XXXX`, else the first free one)
    ccw_schid: int | None = None  # virtio-ccw: its subchannel (the first free one; None: the same as ccw_devno)

    def __post_init__(self) -> None:
        if self.device not in DEVICE_IDS:
            raise SchemaError(f"unknown device {self.device!r}")
        if self.machine.transport != self.transport:
            raise SchemaError(f"{self.transport} devices do not go on {self.machine}")
        if self.machine not in machine_types(self.release, self.transport):
            raise SchemaError(f"QEMU {self.release} has no machine type {self.machine}")
        if self.express and self.machine.family != "pc-q35":
            raise SchemaError("a PCI Express root port needs a q35 machine type")
        object.__setattr__(self, "props", MappingProxyType(dict(self.props)))

    def __hash__(self) -> int:
        return hash((self.release, self.machine, self.device, self.transport, self.smp, self.mem_mb,
                     tuple(sorted(self.props.items())), self.netdev, self.express, self.ccw_devno, self.ccw_schid))

    def describe(self) -> str:
        props = ",".join(f"{k}={v}" for k, v in sorted(self.props.items()))
        extra = f" -netdev {self.netdev.describe()}" if self.device == "virtio-net" else ""
        return (f"QEMU {self.release} -machine {self.machine} -smp {self.smp} -m {self.mem_mb}{extra} -device "
                f"{self.device}-{self.transport}{',' + props if props else ''}"
                f"{' (on a pcie-root-port)' * self.express}")


@dataclass(frozen=True)
class Realized:
    """What QEMU derives at realize time."""

    config: Config
    props: Mapping[str, Any]
    host_features: int
    queue_sizes: tuple[int, ...]  # vring.num_default of each queue realize added
    config_len: int
    vectors: int  # MSI-X vectors (0: no MSI-X); pci only
    modern: bool  # offers virtio 1.0 (VERSION_1)
    legacy: bool
    express: bool  # PCI Express config space (4096 bytes)
    big_endian_target: bool
    send_footer: bool
    send_configuration: bool

    @property
    def release(self) -> Version:
        return self.config.release

    @property
    def num_queues(self) -> int:
        return len(self.queue_sizes)


@functools.lru_cache(maxsize=4096)
def realize(config: Config) -> Realized:
    """What QEMU derives from `config` at realize time (pure: cached per configuration)."""
    from models.devices import DEVICES

    dev = DEVICES[config.device]
    release, transport = config.release, config.transport
    props = effective_props(release, config.machine, config.device, transport, config.props)
    express = modern = legacy = False
    if transport == "pci":
        modern = release >= Version(2, 5) and not props.get("disable-modern", True)
        express = config.express and modern and not props.get("x-disable-pcie", False)
        dl = props.get("disable-legacy", "off")
        legacy = not (dl is True or dl == "on" or (dl == "auto" and config.express))
        if not modern and not legacy:
            raise SchemaError("device has neither legacy nor modern virtio "
                              "(disable-legacy=on, disable-modern=on)")
        props["disable-legacy"] = not legacy
    elif transport == "mmio":
        modern = not props.get("force-legacy", True)
        legacy = not modern
    else:  # ccw offers virtio 1.0 (revision 1+), and legacy
        modern = legacy = True
    ctx = RealizeContext(config, props, modern, legacy)
    if config.device == "virtio-blk" and transport == "pci" and modern and ctx.on("scsi"):
        # virtio_blk_get_features refuses SCSI passthrough with virtio 1.0 (hw_compat_2_4 scsi=true)
        raise SchemaError("Please set scsi=off for virtio-blk devices in order to use virtio 1.0")
    hf = dev.host_features(ctx)
    hf |= _common_features(ctx)
    if modern:
        hf |= F.bit(F.VERSION_1)
    hf = dev.get_features(ctx, hf)
    if transport == "pci":
        hf |= F.bit(F.BAD_FEATURE)  # virtio_pci_device_plugged
    sizes = dev.queue_sizes(ctx)
    if transport == "mmio" and int(props.get("x-override-queue-size") or 0):
        sizes = [int(props["x-override-queue-size"])] * len(sizes)  # 11.1 on machine types <= 11.0
    vectors = 0
    if transport == "pci":
        v = props.get("vectors", 0)
        vectors = dev.default_vectors(ctx, len(sizes)) if v == UNSPECIFIED else int(v)
        if vectors > 2048:  # msix_init refuses more than PCI_MSIX_FLAGS_QSIZE + 1: the device goes without
            vectors = 0
    mig = migration_values(release, config.machine)
    return Realized(config, MappingProxyType(props), hf, tuple(sizes), dev.config_len(ctx, hf), vectors, modern,
                    legacy, express, TARGET_BIG_ENDIAN.get(transport, False), mig["send-section-footer"],
                    mig["send-configuration"])


@dataclass(frozen=True)
class RealizeContext:
    config: Config
    props: dict[str, Any]
    modern: bool
    legacy: bool

    @property
    def release(self) -> Version:
        return self.config.release

    def on(self, name: str, default: bool = False) -> bool:
        v = self.props.get(name, default)
        return v is True or v == "on"


def _common_features(ctx: RealizeContext) -> int:
    """DEFINE_VIRTIO_COMMON_FEATURES: the bits every virtio device offers by its properties."""
    out = 0
    for prop, b in (("indirect_desc", F.RING_INDIRECT_DESC), ("event_idx", F.RING_EVENT_IDX),
                    ("notify_on_empty", F.NOTIFY_ON_EMPTY), ("any_layout", F.ANY_LAYOUT),
                    ("iommu_platform", F.ACCESS_PLATFORM), ("packed", F.RING_PACKED), ("queue_reset", F.RING_RESET)):
        if ctx.on(prop):
            out |= F.bit(b)
    return out
