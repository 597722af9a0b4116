"""The virtio payload of a device section: what virtio_save() writes, declared once in construct.

Order (reference §2.2): transport config, core fields, queues (+ transport queue data), device data,
core subsections. This module holds the union of the layouts QEMU has written; which release
writes or knows which piece is the models' business (models/), not the codec's.
Values that decide the layout are read from the payload itself: the MSI-X vector count and PCI
Express from the saved config space, net's queue-pair fields from the queue count (> 3 means
max_queue_pairs > 1), blk's vq index from the queue count (> 1). QEMU's loader takes the last two
from the destination's own device instead; a model destination passes them as parse parameters
(`net_multiqueue`, `blk_multiqueue`), see `local()`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import construct as c
from construct import this

from harness.wire.primitives import (
    Array,
    Derived,
    FlatArray,
    NonZeroList,
    Peeked,
    Subsections,
    When,
    be16,
    be32,
    be64,
    local,
    sbe32,
    u8,
    vbool,
)

VIRTIO_QUEUE_MAX = 1024
TRANSPORTS = ("pci", "mmio", "ccw")

# --- PCI config space (hw/pci/pci.c, hw/pci/msix.c) -----------------------------------------------

PCI_CAP_ID_MSIX = 0x11
PCI_CAP_ID_EXP = 0x10


def pci_capabilities(config: bytes) -> dict[int, int]:
    """Capability id -> offset, walking the list from 0x34 (bounded: a hostile list may loop)."""
    caps: dict[int, int] = {}
    if len(config) < 0x40 or not config[0x06] & 0x10:  # status bit 4: capability list present
        return caps
    ptr = config[0x34] & 0xFC
    for _ in range(48):
        if ptr < 0x40 or ptr + 1 >= len(config):
            break
        caps.setdefault(config[ptr], ptr)
        ptr = config[ptr + 1] & 0xFC
    return caps


def pci_config_size(head: bytes) -> int:
    # pci_config_size(): 4096 for a PCI Express device (it carries the express capability)
    return 4096 if PCI_CAP_ID_EXP in pci_capabilities(head) else 256


def msix_vectors(config: bytes) -> int:
    """MSI-X table size from the capability's message control (0 = no MSI-X)."""
    off = pci_capabilities(config).get(PCI_CAP_ID_MSIX)
    if off is None or off + 4 > len(config):
        return 0
    return (int.from_bytes(config[off + 2 : off + 4], "little") & 0x7FF) + 1


# PCIDevice vmsd v2 (hw/pci/pci.c vmstate_pci_device / vmstate_pcie_device)
PCIDevice = c.Struct(
    "version_id" / sbe32,
    "config" / Peeked(256, pci_config_size),
    "irq_state" / Array(4, sbe32),
)

# virtio_pci_save_config: PCI device, then MSI-X table + PBA and config_vector when MSI-X is present
VirtioPciConfig = c.Struct(
    "pci" / PCIDevice,
    "msix_vectors" / Derived(lambda ctx: msix_vectors(ctx.pci.config)),
    "msix_table" / c.If(this.msix_vectors > 0, c.Bytes(this.msix_vectors * 16)),
    "msix_pba" / c.If(this.msix_vectors > 0, c.Bytes((this.msix_vectors + 7) // 8)),
    "config_vector" / c.If(this.msix_vectors > 0, be16),
)

# virtio_mmio_save_config (hw/virtio/virtio-mmio.c)
VirtioMmioConfig = c.Struct(
    "host_features_sel" / be32,
    "guest_features_sel" / be32,
    "guest_page_shift" / be32,
)


def _ccw_config() -> Any:
    from harness.wire.ccw import VirtioCcwConfig

    return VirtioCcwConfig


# --- transport extra state (virtio/extra_state) ---------------------------------------------------

# virtio_pci/modern_state (hw/virtio/virtio-pci.c): register values of the modern interface
ModernQueueState = c.Struct(
    "num" / be16,
    "unused" / u8,  # VMSTATE_UNUSED(1): 2.5 wrote `enabled` as be16
    "enabled" / vbool,
    "desc_lo" / be32,
    "desc_hi" / be32,
    "avail_lo" / be32,
    "avail_hi" / be32,
    "used_lo" / be32,
    "used_hi" / be32,
)
VirtioPciModernState = c.Struct(
    "dfselect" / be32,
    "gfselect" / be32,
    "guest_features" / Array(2, be32),
    "vqs" / FlatArray(VIRTIO_QUEUE_MAX, ModernQueueState),
    "subsections" / Subsections("virtio_pci/modern_state", {
        # 10.2: feature words 2..3 (Paolo Abeni, "virtio: serialize extended features state")
        "virtio_pci/modern_state/features128": c.Struct("guest_features_ex" / Array(2, be32)),
    }),
)
VirtioPciExtraState = c.Struct(
    "subsections" / Subsections("virtio_pci", {"virtio_pci/modern_state": VirtioPciModernState}),
)

# virtio_mmio/state (hw/virtio/virtio-mmio.c, 4.2): always sent when the device is not legacy
MmioQueueState = c.Struct(
    "num" / be16,
    "enabled" / vbool,
    "desc_lo" / be32,
    "desc_hi" / be32,
    "avail_lo" / be32,
    "avail_hi" / be32,
    "used_lo" / be32,
    "used_hi" / be32,
)
VirtioMmioState = c.Struct(
    "guest_features" / Array(2, be32),
    "vqs" / FlatArray(VIRTIO_QUEUE_MAX, MmioQueueState),
)
VirtioMmioExtraState = c.Struct(
    "subsections" / Subsections("virtio_mmio", {"virtio_mmio/state": VirtioMmioState}),
)

# --- core subsections (vmstate_virtio, hw/virtio/virtio.c) ---------------------------------------

PackedQueueState = c.Struct(
    "last_avail_idx" / be16,
    "last_avail_wrap_counter" / u8,
    "used_idx" / be16,
    "used_wrap_counter" / u8,
    "inuse" / be32,
)


@dataclass(frozen=True, eq=False)
class Extras:
    """What schema modules (models/schema.py) add to the layouts of this file, which stay as QEMU wrote them. A
    value, hashed by identity: each registry of declarations (models/registry.py) holds one, and the layouts below
    are cached per Extras."""

    # subsections by parent vmsd name ("virtio", "virtio-net-device"): body, or function of the version_id giving it
    subsections: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))
    # fields appended to a device vmsd, by device ("virtio-net"): (name, construct, the version_id from which it is
    # on the wire; 0: where a test holds), before its subsections
    device_fields: Mapping[str, tuple[tuple[str, Any, int], ...]] = field(
        default_factory=lambda: MappingProxyType({}))
    # the device data layouts of sections (by vmsd name: "virtio-input") that DEVICE_DATA below does not lay out:
    # the devices' declarations bring them (models/declarations.Device.data)
    devices: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def sections(self) -> tuple[str, ...]:
        """The vmsd names of the virtio sections these layouts decode."""
        return (*DEVICE_DATA, *(d for d in self.devices if d not in DEVICE_DATA))


NO_EXTRAS = Extras()  # the in-tree layouts


def stream_fields(device: str, version_id: int, extras: Extras = NO_EXTRAS) -> list[dict[str, bool]]:
    """The parse parameter schema_fields to try, in order, for a stream decoded without a model: the added device
    fields its section's version_id carries; those a test decides, first all present, then all absent."""
    fields = extras.device_fields.get(device)
    if not fields:
        return [{}]
    tested = [name for name, _, since in fields if since == 0]
    by_version = {name: since <= version_id for name, _, since in fields if since}
    return [{**by_version, **{n: True for n in tested}}] + ([{**by_version, **{n: False for n in tested}}]
                                                           if tested else [])


def core_subsections(transport: str, extras: Extras = NO_EXTRAS) -> Subsections:
    extra: dict[str, Any] = {"pci": VirtioPciExtraState, "mmio": VirtioMmioExtraState}
    known = {
        "virtio/device_endian": c.Struct("device_endian" / u8),
        "virtio/128bit_features": c.Struct("guest_features_ex1" / be64),
        "virtio/64bit_features": c.Struct("guest_features" / be64),
        "virtio/virtqueues": c.Struct(
            "vqs" / FlatArray(VIRTIO_QUEUE_MAX, c.Struct("avail" / be64, "used" / be64))),
        "virtio/ringsize": c.Struct("num_default" / FlatArray(VIRTIO_QUEUE_MAX, be32)),
        "virtio/broken": c.Struct("broken" / vbool),
        "virtio/started": c.Struct("started" / vbool),
        "virtio/packed_virtqueues": c.Struct("vqs" / FlatArray(VIRTIO_QUEUE_MAX, PackedQueueState)),
        "virtio/disabled": c.Struct("disabled" / vbool),
    }
    if transport in extra:
        # the extra_state field's get/put are the bus's load/save_extra_state (ccw has none)
        known["virtio/extra_state"] = extra[transport]
    known.update(extras.subsections.get("virtio", {}))
    return Subsections("virtio", known)


# --- device data --------------------------------------------------------------------------------

# virtio-net-device v11 (hw/net/virtio-net.c)


def virtio_net_rss(version_id: int) -> Any:
    """virtio-net-device/rss (5.1); version 2 adds supported_hash_types (10.1)."""
    return _virtio_net_rss(version_id >= 2)


@functools.cache
def _virtio_net_rss(supported_hash_types: bool) -> Any:
    # cached by layout, not by the stream's version_id: one layout per version a hostile stream names grew the
    # cache without bound
    return c.Struct(
        "enabled" / vbool,
        "redirect" / vbool,
        "populate_hash" / vbool,
        "hash_types" / be32,
        *(["supported_hash_types" / be32] if supported_hash_types else []),
        "indirections_len" / be16,
        "default_queue" / be16,
        "key" / c.Bytes(40),  # VIRTIO_NET_RSS_MAX_KEY_SIZE
        "indirections_table" / FlatArray(this.indirections_len, be16),
    )


VirtioNetDevice = c.Struct(
    "mac" / c.Bytes(6),
    "tx_waiting" / be32,  # vqs[0] through virtio-net-queue-tx_waiting
    "mergeable_rx_bufs" / be32,
    "status" / be16,
    "promisc" / u8,
    "allmulti" / u8,
    "mac_table_in_use" / be32,
    # loaded when in_use <= 64, else skipped as UNUSED: the same in_use * 6 bytes either way, but the UNUSED
    # VARRAY's element count is an int: from 2^31 it is negative and nothing is read (vmstate_load_state)
    "mac_table_macs" / c.Bytes(this.mac_table_in_use * 6 * (this.mac_table_in_use < 0x80000000)),
    "vlans" / c.Bytes(512),  # MAX_VLAN >> 3, a host-endian uint32_t bitmap
    "has_vnet_hdr" / be32,
    "multi_overflow" / u8,
    "uni_overflow" / u8,
    "alluni" / u8,
    "nomulti" / u8,
    "nouni" / u8,
    "nobcast" / u8,
    "has_ufo" / u8,
    # only when the local max_queue_pairs > 1: 2 * pairs + ctrl vq > 3 queues
    "max_queue_pairs" / When(local("net_multiqueue", lambda ctx: ctx._root.num_queues > 3), be16),
    "curr_queue_pairs" / When(local("net_multiqueue", lambda ctx: ctx._root.num_queues > 3), be16),
    "tx_waiting_more" / FlatArray(
        lambda ctx: max((ctx.curr_queue_pairs or 1) - 1, 0), be32),  # vqs[1 .. curr - 1]
    # VIRTIO_NET_F_CTRL_GUEST_OFFLOADS (bit 2), judged from the 32-bit features as the loader does
    "curr_guest_offloads" / c.If(this._root.guest_features_lo & 4, be64),
    "subsections" / Subsections("virtio-net-device", {
        "virtio-net-device/rss": virtio_net_rss,
    }),
)

# VirtQueueElementOld as x86_64 Linux lays it out (qemu_put_virtqueue_element, 2.6): raw host memory
VIRTQUEUE_MAX_SIZE = 1024
VirtQueueElement = c.Struct(
    "index" / c.Int32ul,
    "out_num" / c.Int32ul,
    "in_num" / c.Int32ul,
    "padding" / c.Int32ul,
    "in_addr" / FlatArray(VIRTQUEUE_MAX_SIZE, c.Int64ul),
    "out_addr" / FlatArray(VIRTQUEUE_MAX_SIZE, c.Int64ul),
    "in_sg" / FlatArray(VIRTQUEUE_MAX_SIZE, c.Struct("iov_base" / c.Int64ul, "iov_len" / c.Int64ul)),
    "out_sg" / FlatArray(VIRTQUEUE_MAX_SIZE, c.Struct("iov_base" / c.Int64ul, "iov_len" / c.Int64ul)),
)

# virtio_blk_save_device (hw/block/virtio-blk.c): vq index only when the local num_queues > 1 (2.7)
VirtioBlkDevice = c.Struct(
    "requests" / NonZeroList(c.Struct(
        "vq_index" / When(local("blk_multiqueue", lambda ctx: ctx._root.num_queues > 1), be32),
        "elem" / VirtQueueElement,
    )),
)

# virtio-balloon-device v1 (hw/virtio/virtio-balloon.c)
VirtioBalloonDevice = c.Struct(
    "num_pages" / be32,
    "actual" / be32,
    "subsections" / Subsections("virtio-balloon-device", {
        "virtio-balloon-device/free-page-report": c.Struct(  # 4.0
            "free_page_hint_cmd_id" / be32, "free_page_hint_status" / be32),
        "virtio-balloon-device/page-poison": c.Struct("poison_val" / be32),  # 6.2
        # 5.1 (7483cbbaf82) misspelt the name; "virtio-balloon: Fix page-poison subsection name" (6.2) fixed it
        "vitio-balloon-device/page-poison": c.Struct("poison_val" / be32),
    }),
)

VirtioRngDevice = c.Struct()  # no device fields

# the device data QEMU writes, by the section's vmsd name (the devices declare the rest: Extras.devices)
DEVICE_DATA = {
    "virtio-net": VirtioNetDevice,
    "virtio-blk": VirtioBlkDevice,
    "virtio-balloon": VirtioBalloonDevice,
    "virtio-rng": VirtioRngDevice,
    "virtio-scsi": c.Struct(),  # VMSTATE_VIRTIO_DEVICE only: in-flight requests travel in the SCSI disks' sections
}



def device_data(device: str, extras: Extras = NO_EXTRAS) -> Any:
    """The device data of a section's vmsd `device` (DEVICE_DATA's, else a declared device's), with what schema
    modules add: fields at the end and subsections to its list."""
    base = DEVICE_DATA[device] if device in DEVICE_DATA else extras.devices[device]
    added = extras.subsections.get(f"{device}-device")
    fields = extras.device_fields.get(device, ())
    if not added and not fields:
        return base
    subcons = []
    for sc in base.subcons:
        if sc.name == "subsections":
            subcons += [name / field for name, field, _ in fields]
            sc = sc.name / Subsections(sc.subcon.parent, {**sc.subcon.known, **(added or {})})
        subcons.append(sc)
    return c.Struct(*subcons)


# --- the whole payload --------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def payload_layout(transport: str, device: str, extras: Extras = NO_EXTRAS) -> Any:
    """The construct of one virtio payload (virtio_save) for a transport and a device."""
    if transport not in TRANSPORTS or device not in DEVICE_DATA and device not in extras.devices:
        raise KeyError(f"no layout for {device} on {transport}")
    config = {"pci": VirtioPciConfig, "mmio": VirtioMmioConfig, "ccw": None}[transport]
    if config is None:
        config = _ccw_config()
    queue_fields: list[Any] = ["num" / be32]
    if transport == "mmio":
        queue_fields.append("align" / be32)  # has_variable_vring_alignment
    queue_fields += ["desc" / be64, "last_avail_idx" / be16]
    if transport == "pci":
        queue_fields.append("vector" / c.If(this._root.transport.msix_vectors > 0, be16))
    elif transport == "ccw":
        queue_fields.append("vector" / be16)
    return c.Struct(
        "transport" / config,
        "status" / u8,
        "isr" / u8,
        "queue_sel" / be16,
        "guest_features_lo" / be32,
        "config_len" / be32,
        "config" / c.Bytes(this.config_len),
        "num_queues" / be32,
        "queues" / Array(this.num_queues, c.Struct(*queue_fields)),
        "device" / device_data(device, extras),
        "subsections" / core_subsections(transport, extras),
    )


def compiled_payload_layout(transport: str, device: str, extras: Extras = NO_EXTRAS) -> Any:
    return _compiled_payload_layout(transport, device, extras)  # one cache entry however it is called


@functools.lru_cache(maxsize=256)
def _compiled_payload_layout(transport: str, device: str, extras: Extras) -> Any:
    layout = payload_layout(transport, device, extras)
    if extras is NO_EXTRAS:  # the in-tree layouts, declared by this package's sources, are kept compiled on disk
        from harness.wire.compiled import compile_cached

        return compile_cached(layout, f"{transport}-{device}")
    return layout.compile()
