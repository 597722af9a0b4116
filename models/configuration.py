"""A device configuration (everything QEMU derives device state from), what realize derives from it, and what
a device's realize code sees of it. Plain values: the declarations they are judged by (models/registry.py) come
with realize (models/config.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from harness.errors import SchemaError
from models import features as F
from models.releases import MachineType, Version

TARGET_BIG_ENDIAN = {"ccw": True}  # s390x; x86 (pci) and aarch64 virt (mmio) are little-endian
# Machine families of a bi-endian target (arm, ppc64: LEGACY_VIRTIO_IS_BIENDIAN): a guest's reset gives the device
# the resetting CPU's data endianness (virtio_reset: virtio_current_cpu_endian), so a big-endian aarch64 guest makes
# device_endian big where the target's default is little; a legacy device's rings then follow device_endian.
BI_ENDIAN_FAMILIES = frozenset({"virt"})


def bi_endian(machine: MachineType | str | None) -> bool:
    """Whether a machine type (or its name, as a stream's configuration section gives it) is of a bi-endian target."""
    if machine is None:
        return False
    if isinstance(machine, str):
        return any(machine == f or machine.startswith(f + "-") or machine.startswith(f + ",")
                   for f in BI_ENDIAN_FAMILIES)
    return machine.family in BI_ENDIAN_FAMILIES


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
    device: str  # a device the registry declares (models/devices): virtio-net, ...; realize() checks it
    transport: str = "pci"
    smp: int = 1
    mem_mb: int = 128
    props: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    netdev: NetBackend = NetBackend()
    express: bool = False  # on a PCI Express root port (q35)
    ccw_devno: int = 0  # virtio-ccw: its device number (devno=fe.0.NNNN, else the first free from its subchannel)
    ccw_schid: int | None = None  # its subchannel, the first free in creation order (None: the same as ccw_devno)

    def __post_init__(self) -> None:
        if self.machine.transport != self.transport:
            raise SchemaError(f"{self.transport} devices do not go on {self.machine}")
        # whether the release has the machine type is the registry's to say (models/config.py realize())
        if self.express and self.machine.family != "pc-q35":
            raise SchemaError("a PCI Express root port needs a q35 machine type")
        object.__setattr__(self, "props", MappingProxyType(dict(self.props)))

    def __hash__(self) -> int:
        return hash((self.release, self.machine, self.device, self.transport, self.smp, self.mem_mb,
                     tuple(sorted(self.props.items())), self.netdev, self.express, self.ccw_devno,
                     self.ccw_schid))

    def describe(self) -> str:
        props = ",".join(f"{k}={v}" for k, v in sorted(self.props.items()))
        extra = f" -netdev {self.netdev.describe()}" if self.device == "virtio-net" else ""
        return (f"QEMU {self.release} -machine {self.machine} -smp {self.smp} -m {self.mem_mb}{extra} -device "
                f"{self.device}-{self.transport}{',' + props if props else ''}"
                f"{' (on a pcie-root-port)' * self.express}")


@dataclass(frozen=True)
class Derived:
    """What QEMU derives at realize time (models/config.py's Realized adds the registry it was realized with)."""

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
