"""QEMU 7.2's x-query-virtio-status shows features and status as decoded names: back to numbers."""

from __future__ import annotations

from typing import Any

# Feature names as QEMU 7.2's x-query-virtio-status prints them (before the colon), and their bits
# (virtio spec; QEMU names bit 30 VHOST_USER_F_PROTOCOL_FEATURES, which is virtio-pci's BAD_FEATURE).
FEATURE_BITS = {
    "VIRTIO_F_NOTIFY_ON_EMPTY": 24, "VHOST_F_LOG_ALL": 26, "VIRTIO_F_ANY_LAYOUT": 27,
    "VIRTIO_RING_F_INDIRECT_DESC": 28, "VIRTIO_RING_F_EVENT_IDX": 29, "VHOST_USER_F_PROTOCOL_FEATURES": 30,
    "VIRTIO_F_VERSION_1": 32, "VIRTIO_F_IOMMU_PLATFORM": 33, "VIRTIO_F_RING_PACKED": 34, "VIRTIO_F_IN_ORDER": 35,
    "VIRTIO_F_ORDER_PLATFORM": 36, "VIRTIO_F_SR_IOV": 37,
    "VIRTIO_NET_F_CSUM": 0, "VIRTIO_NET_F_GUEST_CSUM": 1, "VIRTIO_NET_F_CTRL_GUEST_OFFLOADS": 2,
    "VIRTIO_NET_F_MTU": 3, "VIRTIO_NET_F_MAC": 5, "VIRTIO_NET_F_GSO": 6, "VIRTIO_NET_F_GUEST_TSO4": 7,
    "VIRTIO_NET_F_GUEST_TSO6": 8, "VIRTIO_NET_F_GUEST_ECN": 9, "VIRTIO_NET_F_GUEST_UFO": 10,
    "VIRTIO_NET_F_HOST_TSO4": 11, "VIRTIO_NET_F_HOST_TSO6": 12, "VIRTIO_NET_F_HOST_ECN": 13,
    "VIRTIO_NET_F_HOST_UFO": 14, "VIRTIO_NET_F_MRG_RXBUF": 15, "VIRTIO_NET_F_STATUS": 16,
    "VIRTIO_NET_F_CTRL_VQ": 17, "VIRTIO_NET_F_CTRL_RX": 18, "VIRTIO_NET_F_CTRL_VLAN": 19,
    "VIRTIO_NET_F_CTRL_RX_EXTRA": 20, "VIRTIO_NET_F_GUEST_ANNOUNCE": 21, "VIRTIO_NET_F_MQ": 22,
    "VIRTIO_NET_F_CTRL_MAC_ADDR": 23, "VHOST_NET_F_VIRTIO_NET_HDR": 27, "VIRTIO_NET_F_HASH_REPORT": 57,
    "VIRTIO_NET_F_RSS": 60, "VIRTIO_NET_F_RSC_EXT": 61, "VIRTIO_NET_F_STANDBY": 62, "VIRTIO_NET_F_SPEED_DUPLEX": 63,
    "VIRTIO_BLK_F_BARRIER": 0, "VIRTIO_BLK_F_SIZE_MAX": 1, "VIRTIO_BLK_F_SEG_MAX": 2, "VIRTIO_BLK_F_GEOMETRY": 4,
    "VIRTIO_BLK_F_RO": 5, "VIRTIO_BLK_F_BLK_SIZE": 6, "VIRTIO_BLK_F_SCSI": 7, "VIRTIO_BLK_F_FLUSH": 9,
    "VIRTIO_BLK_F_TOPOLOGY": 10, "VIRTIO_BLK_F_CONFIG_WCE": 11, "VIRTIO_BLK_F_MQ": 12,
    "VIRTIO_BLK_F_DISCARD": 13, "VIRTIO_BLK_F_WRITE_ZEROES": 14,
    "VIRTIO_BALLOON_F_MUST_TELL_HOST": 0, "VIRTIO_BALLOON_F_STATS_VQ": 1, "VIRTIO_BALLOON_F_DEFLATE_ON_OOM": 2,
    "VIRTIO_BALLOON_F_FREE_PAGE_HINT": 3, "VIRTIO_BALLOON_F_PAGE_POISON": 4, "VIRTIO_BALLOON_F_REPORTING": 5,
}  # fmt: skip
STATUS_BITS = {
    "VIRTIO_CONFIG_S_ACKNOWLEDGE": 1, "VIRTIO_CONFIG_S_DRIVER": 2, "VIRTIO_CONFIG_S_DRIVER_OK": 4,
    "VIRTIO_CONFIG_S_FEATURES_OK": 8, "VIRTIO_CONFIG_S_NEEDS_RESET": 0x40, "VIRTIO_CONFIG_S_FAILED": 0x80,
}


def qmp_host_features(status: dict[str, Any]) -> int:
    """x-query-virtio-status's decoded host features back to a number (unknown bits are given as one)."""
    hf = status["host-features"]
    out = int(hf.get("unknown-dev-features", 0))
    for text in [*hf.get("transports", []), *hf.get("dev-features", [])]:
        out |= 1 << FEATURE_BITS[text.split(":")[0]]
    return out


def qmp_status(status: dict[str, Any]) -> int:
    """The device status byte from x-query-virtio-status (names before the colon)."""
    return sum(STATUS_BITS[text.split(":")[0]] for text in status["status"]["statuses"])
