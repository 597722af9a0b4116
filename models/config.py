"""What QEMU derives from a device configuration at realize time (host features, queues and their sizes, config
length, MSI-X vectors, modern or legacy, PCI Express), judged by a registry of declarations (models/registry.py)
that the result carries. Values follow from the properties that cause them."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import MappingProxyType

from harness.errors import SchemaError
from models import features as F
from models.configuration import TARGET_BIG_ENDIAN, Config, Derived, NetBackend, RealizeContext
from models.declarations import Device
from models.props import UNSPECIFIED
from models.registry import BASE, Registry
from models.releases import Version

__all__ = ["Config", "NetBackend", "RealizeContext", "Realized", "realize"]


@dataclass(frozen=True)
class Realized(Derived):
    """What QEMU derives at realize time, and the registry of declarations it was realized with (everything
    the model does with it afterwards follows the same declarations)."""

    registry: Registry

    @property
    def device(self) -> Device:
        """Its device's declaration (models/devices)."""
        return self.registry.device(self.config.device)


def realize(config: Config, registry: Registry = BASE) -> Realized:
    """What QEMU derives from `config` at realize time, by the declarations of `registry` (pure: cached per
    configuration and registry)."""
    return _realize(config, registry)


@functools.lru_cache(maxsize=4096)
def _realize(config: Config, registry: Registry) -> Realized:

    device = registry.device(config.device)
    dev = device.code
    release, transport = config.release, config.transport
    if not device.offered(release, transport):
        raise SchemaError(f"QEMU {release} has no {device.qom_type(transport)}")
    if config.machine not in registry.machine_types(release, transport):
        raise SchemaError(f"QEMU {release} has no machine type {config.machine}")
    props = registry.effective_props(release, config.machine, config.device, transport, config.props)
    express = modern = legacy = False
    if transport == "pci":
        if device.force_virtio_1:  # virtio_pci_force_virtio_1: modern only, whatever the properties say
            props["disable-modern"], props["disable-legacy"] = False, "on"
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
    else:  # ccw offers virtio 1.0 from revision 1 (not on s390-ccw-virtio-2.4), and legacy
        modern, legacy = int(props.get("max_revision", 0)) >= 1, True
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
    mig = registry.migration_values(release, config.machine)
    return Realized(config, MappingProxyType(props), hf, tuple(sizes), dev.config_len(ctx, hf), vectors, modern,
                    legacy, express, TARGET_BIG_ENDIAN.get(transport, False), mig["send-section-footer"],
                    mig["send-configuration"], registry)


def _common_features(ctx: RealizeContext) -> int:
    """DEFINE_VIRTIO_COMMON_FEATURES: the bits every virtio device offers by its properties."""
    out = 0
    for prop, b in (("indirect_desc", F.RING_INDIRECT_DESC), ("event_idx", F.RING_EVENT_IDX),
                    ("notify_on_empty", F.NOTIFY_ON_EMPTY), ("any_layout", F.ANY_LAYOUT),
                    ("iommu_platform", F.ACCESS_PLATFORM), ("packed", F.RING_PACKED), ("queue_reset", F.RING_RESET)):
        if ctx.on(prop):
            out |= F.bit(b)
    return out
