"""Device properties and their defaults by release; with the machine compat globals (releases.py)
and the user's `-device` properties they give the effective values realize works from (models/registry.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.releases import Version

V = Version.parse
UNSPECIFIED = "unspecified"  # DEV_NVECTORS_UNSPECIFIED and num-queues "auto": realize decides


@dataclass(frozen=True)
class Prop:
    """A QEMU property with its default from `since` (until `until`, exclusive)."""

    qom_type: str
    name: str
    default: Any
    since: Version = V("2.0")
    until: Version | None = None
    source: str = ""

    def exists(self, release: Version) -> bool:
        return release >= self.since and (self.until is None or release < self.until)


PROPS: tuple[Prop, ...] = (
    # DEFINE_VIRTIO_COMMON_FEATURES and virtio-device properties (§7 "Default device properties")
    Prop("virtio-device", "indirect_desc", True),
    Prop("virtio-device", "event_idx", True),
    Prop("virtio-device", "notify_on_empty", True),
    # ANY_LAYOUT: virtio-net offered it from the start, the other devices from 2.4 (hw_compat_2_3)
    Prop("virtio-net-device", "any_layout", True),
    Prop("virtio-device", "any_layout", True, V("2.4"), source="hw_compat_2_3"),
    Prop("virtio-device", "iommu_platform", False, V("2.9")),
    Prop("virtio-device", "packed", False, V("4.2"), source="86044b24e8"),
    Prop("virtio-device", "queue_reset", True, V("7.2"), source="hw_compat_7_1"),
    Prop("virtio-device", "use-started", True, V("4.1"), source="badaf79cfd"),
    Prop("virtio-device", "use-disabled-flag", True, V("5.0"), source="9d7bd0826f"),
    Prop("virtio-device", "x-disable-legacy-check", False, V("5.1")),
    # virtio-pci proxies (§6.1); modern (virtio 1.0) arrived in 2.5, default on from 2.7
    Prop("virtio-pci", "disable-modern", True, V("2.5"), V("2.7"), source="2.5: modern off by default"),
    Prop("virtio-pci", "disable-modern", False, V("2.7"), source="hw_compat_2_6"),
    Prop("virtio-pci", "disable-legacy", "auto", V("2.5")),
    Prop("virtio-pci", "migrate-extra", True, V("2.5"), V("10.1"), source="a6df8adf3e; fce42ccb51f1"),
    # gone with the machine types that set them: x-disable-pcie is in 10.0.2, not in 10.2.2 (UNVERIFIED: 10.1, with
    # migrate-extra); the x-pcie-*-init bits, x-ignore-backend-features, x-mtu-bypass-backend and
    # qemu-4-0-config-size are in 10.2.2, not in the 11.1 binary (UNVERIFIED: 11.0). Each had its default on every
    # machine type that remains, so only a user's -device setting notices.
    Prop("virtio-pci", "x-disable-pcie", False, V("2.5"), V("10.1")),
    Prop("virtio-pci", "page-per-vq", False, V("2.8"), source="hw_compat_2_7"),
    Prop("virtio-pci", "modern-pio-notify", False, V("2.7")),
    Prop("virtio-pci", "x-ignore-backend-features", False, V("2.8"), V("11.0")),
    Prop("virtio-pci", "ats", False, V("2.9")),
    Prop("virtio-pci", "x-pcie-deverr-init", True, V("2.9"), V("11.0")),
    Prop("virtio-pci", "x-pcie-lnkctl-init", True, V("2.9"), V("11.0")),
    Prop("virtio-pci", "x-pcie-pm-init", True, V("2.9"), V("11.0")),
    Prop("virtio-pci", "x-pcie-flr-init", True, V("4.2")),
    Prop("virtio-pci", "x-pcie-ext-tag", True, V("9.2"), source="hw/pci/pci.c (TYPE_PCI_DEVICE); hw_compat_9_1"),
    Prop("virtio-pci", "x-ats-page-aligned", True, V("5.2")),
    # off by default (hw/virtio/virtio-pci.c, 10.2.2; the 11.1 binary); hw_compat_9_0 sets it off all the same
    Prop("virtio-pci", "x-pcie-pm-no-soft-reset", False, V("9.1")),
    # MSI-X vector counts (§6.1, §11): fixed defaults, later "unspecified" (realize computes them)
    Prop("virtio-net-pci", "vectors", 3, V("2.0"), V("6.0")),
    Prop("virtio-net-pci", "vectors", UNSPECIFIED, V("6.0"), source="hw_compat_5_2: 2 * queue pairs + 2"),
    Prop("virtio-blk-pci", "vectors", 2, V("2.0"), V("2.12")),
    Prop("virtio-blk-pci", "vectors", UNSPECIFIED, V("2.12"), source="hw_compat_2_11: num-queues + 1"),
    Prop("virtio-balloon-pci", "vectors", 0, V("2.0"), V("10.0")),
    Prop("virtio-balloon-pci", "vectors", UNSPECIFIED, V("10.0"), source="hw_compat_9_2: 2"),
    Prop("virtio-rng-pci", "vectors", 0, V("2.0"), V("7.2")),
    Prop("virtio-rng-pci", "vectors", UNSPECIFIED, V("7.2"), source="hw_compat_7_1: 2"),
    # virtio-mmio (§6.2)
    Prop("virtio-mmio", "format_transport_address", True, V("2.7")),
    # virtio-ccw: revision 1 and up offer VERSION_1 (virtio_ccw_pre_plugged); virtio 1.0 came to ccw in 2.5
    Prop("virtio-ccw", "max_revision", 2, V("2.5"), source="VIRTIO_CCW_MAX_REV"),
    # the s390x machine's bridge: before 2.7 (and on s390-ccw-virtio-2.6) no devno in the section idstr
    Prop("virtual-css-bridge", "css_dev_path", True, V("2.7"), source="hw/s390x/css-bridge.c"),
    Prop("virtio-mmio", "force-legacy", True, V("4.2"), source="44e687a4d9ab"),
    # 0: each queue keeps the size its device gives it; else every queue gets this size (hw_compat_11_0)
    Prop("virtio-mmio", "x-override-queue-size", 0, V("11.1"), source="11.1 binary: qom-list-properties"),
    # virtio-net (hw/net/virtio-net.c)
    Prop("virtio-net-device", "mq", False),
    Prop("virtio-net-device", "csum", True),
    Prop("virtio-net-device", "guest_csum", True),
    Prop("virtio-net-device", "gso", True),
    Prop("virtio-net-device", "guest_tso4", True),
    Prop("virtio-net-device", "guest_tso6", True),
    Prop("virtio-net-device", "guest_ecn", True),
    Prop("virtio-net-device", "guest_ufo", True),
    Prop("virtio-net-device", "host_tso4", True),
    Prop("virtio-net-device", "host_tso6", True),
    Prop("virtio-net-device", "host_ecn", True),
    Prop("virtio-net-device", "host_ufo", True),
    Prop("virtio-net-device", "mrg_rxbuf", True),
    Prop("virtio-net-device", "status", True),
    Prop("virtio-net-device", "ctrl_vq", True),
    Prop("virtio-net-device", "ctrl_rx", True),
    Prop("virtio-net-device", "ctrl_vlan", True),
    Prop("virtio-net-device", "ctrl_rx_extra", True),
    Prop("virtio-net-device", "ctrl_mac_addr", True),
    Prop("virtio-net-device", "ctrl_guest_offloads", True),
    Prop("virtio-net-device", "guest_announce", True),
    Prop("virtio-net-device", "x-mtu-bypass-backend", True, V("2.10"), V("11.0")),
    Prop("virtio-net-device", "host_mtu", 0, V("2.9"), source="MTU support (2.9, UNVERIFIED): set, it offers NET_MTU"),
    Prop("virtio-net-device", "host_uso", True, V("8.2")),
    Prop("virtio-net-device", "guest_uso4", True, V("8.2")),
    Prop("virtio-net-device", "guest_uso6", True, V("8.2")),
    Prop("virtio-net-device", "host_tunnel", True, V("10.2")),
    Prop("virtio-net-device", "host_tunnel_csum", True, V("10.2")),
    Prop("virtio-net-device", "guest_tunnel", True, V("10.2")),
    Prop("virtio-net-device", "guest_tunnel_csum", True, V("10.2")),
    Prop("virtio-net-device", "rx_queue_size", 256, V("2.9")),
    Prop("virtio-net-device", "tx_queue_size", 256, V("2.10")),
    Prop("virtio-net-device", "mac", None),
    # virtio-blk (hw/block/virtio-blk.c)
    Prop("virtio-blk-device", "num-queues", 1, V("2.7"), V("5.2")),
    Prop("virtio-blk-device", "num-queues", UNSPECIFIED, V("5.2"), source="hw_compat_5_1: one per vCPU"),
    Prop("virtio-blk-device", "queue-size", 128, V("2.12"), V("5.0")),
    Prop("virtio-blk-device", "queue-size", 256, V("5.0"), source="hw_compat_4_2"),
    Prop("virtio-blk-device", "config-wce", True),
    # 9.1 removed SCSI passthrough and the property (UNVERIFIED: a downstream note of the 9.1.0 removal; the 7.2
    # binary has it, 10.0 has not); legacy-only devices still offer VIRTIO_BLK_F_SCSI (the 10.0 binary, pc-i440fx-2.4)
    Prop("virtio-blk-device", "scsi", False, V("2.5"), V("9.1"), source="hw_compat_2_4 scsi=true"),
    Prop("virtio-blk-device", "discard", True, V("4.0"), source="hw_compat_3_1"),
    Prop("virtio-blk-device", "write-zeroes", True, V("4.0"), source="hw_compat_3_1"),
    Prop("virtio-blk-device", "seg-max-adjust", True, V("5.0")),
    Prop("virtio-blk-device", "report-discard-granularity", True, V("6.0")),
    # virtio-balloon (hw/virtio/virtio-balloon.c)
    Prop("virtio-balloon-device", "deflate-on-oom", False, V("2.7")),
    Prop("virtio-balloon-device", "free-page-hint", False, V("4.0"), source="c13c4153f7"),
    # 4.0 sized the config for all its fields; 4.1 made that a compat property (§5.3)
    Prop("virtio-balloon-device", "qemu-4-0-config-size", True, V("4.0"), V("4.1")),
    Prop("virtio-balloon-device", "qemu-4-0-config-size", False, V("4.1"), V("11.0")),
    Prop("virtio-balloon-device", "page-poison", True, V("5.1"), source="hw_compat_5_0"),
    Prop("virtio-balloon-device", "free-page-reporting", False, V("5.1")),
)


def proxy_type(device: str, transport: str) -> str:
    """QOM type of the device a user adds: virtio-net-pci, virtio-blk-device (mmio), ..."""
    return {"pci": f"{device}-pci", "ccw": f"{device}-ccw", "mmio": f"{device}-device"}[transport]


def backend_type(device: str) -> str:
    return f"{device}-device"
