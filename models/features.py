"""Virtio feature bit numbers (include/standard-headers/linux/virtio_*.h) and helpers."""

from __future__ import annotations

# transport / core (virtio_config.h, virtio_ring.h)
MASK64 = (1 << 64) - 1  # one 64-bit word of a feature set

NOTIFY_ON_EMPTY = 24
ANY_LAYOUT = 27
RING_INDIRECT_DESC = 28
RING_EVENT_IDX = 29
BAD_FEATURE = 30  # legacy virtio-pci: a guest must never set it
VERSION_1 = 32
ACCESS_PLATFORM = 33  # iommu_platform
RING_PACKED = 34
IN_ORDER = 35
RING_RESET = 40

# virtio-net
NET_CSUM, NET_GUEST_CSUM, NET_CTRL_GUEST_OFFLOADS, NET_MTU = 0, 1, 2, 3
NET_MAC, NET_GSO = 5, 6
NET_GUEST_TSO4, NET_GUEST_TSO6, NET_GUEST_ECN, NET_GUEST_UFO = 7, 8, 9, 10
NET_HOST_TSO4, NET_HOST_TSO6, NET_HOST_ECN, NET_HOST_UFO = 11, 12, 13, 14
NET_MRG_RXBUF, NET_STATUS, NET_CTRL_VQ, NET_CTRL_RX, NET_CTRL_VLAN = 15, 16, 17, 18, 19
NET_CTRL_RX_EXTRA, NET_GUEST_ANNOUNCE, NET_MQ, NET_CTRL_MAC_ADDR = 20, 21, 22, 23
NET_GUEST_USO4, NET_GUEST_USO6, NET_HOST_USO = 54, 55, 56
NET_HASH_REPORT, NET_RSS = 57, 60

# virtio-blk
BLK_SIZE_MAX, BLK_SEG_MAX, BLK_GEOMETRY, BLK_RO, BLK_BLK_SIZE, BLK_SCSI = 1, 2, 4, 5, 6, 7
BLK_FLUSH, BLK_TOPOLOGY, BLK_CONFIG_WCE, BLK_MQ, BLK_DISCARD, BLK_WRITE_ZEROES = 9, 10, 11, 12, 13, 14

# virtio-balloon
BALLOON_STATS_VQ, BALLOON_DEFLATE_ON_OOM, BALLOON_FREE_PAGE_HINT = 1, 2, 3
BALLOON_PAGE_POISON, BALLOON_REPORTING = 4, 5

# virtio-scsi (QEMU offers HOTPLUG and CHANGE, by its hotplug and param_change properties)
SCSI_INOUT, SCSI_HOTPLUG, SCSI_CHANGE, SCSI_T10_PI = 0, 1, 2, 3


def bit(n: int) -> int:
    return 1 << n


def bits(*ns: int) -> int:
    out = 0
    for n in ns:
        out |= 1 << n
    return out


def has(features: int, n: int) -> bool:
    return bool(features >> n & 1)
