"""What a destination starts from: the device state right after realize and reset, and its PCI config space with
the read-only masks the load checks an incoming one against (cached per configuration and registry)."""

from __future__ import annotations

import functools
import os

from models import core, declared
from models import features as F
from models.config import Config, Realized, realize
from models.registry import Registry
from models.releases import Version
from models.state import (
    CcwState,
    DeviceState,
    MmioState,
    PciState,
    QueueState,
)
from models.transports.ccw import reset_tree
from models.transports.pci import PciConfigSpace, virtio_pci_config_space
from models.transports.pci_regs import VIRTIO_QUEUE_MAX


def local_config_space(r: Realized) -> PciConfigSpace:
    """The destination's PCI config space and masks (models/transports/pci.py)."""
    return _local_config_space(r.config, r.registry)


@functools.lru_cache(maxsize=1024)
def _local_config_space(config: Config, registry: Registry) -> PciConfigSpace:
    r = realize(config, registry)
    props = dict(r.props)
    props["vectors"] = r.vectors
    romfile = props.get("romfile", r.device.romfile)
    if romfile and "romsize" not in props:
        props["romsize"] = rom_bar_size(str(romfile))
    return virtio_pci_config_space(r.device, props, express=r.express, config_len=r.config_len)


def reset_state(r: Realized) -> DeviceState:
    """The state right after realize and reset (what a destination starts from)."""
    return _reset_state(r.config, r.registry)


@functools.lru_cache(maxsize=1024)
def _reset_state(config: Config, registry: Registry) -> DeviceState:
    r = realize(config, registry)
    dev = r.device.code
    reset_sizes = getattr(dev, "reset_queue_sizes", None)  # virtio-net: reset may lay its queues out anew
    sizes = tuple(reset_sizes(r)) if reset_sizes is not None else tuple(r.queue_sizes)
    queues = tuple(QueueState(n) for n in sizes)
    pci = None
    if r.config.transport == "pci":
        n = r.vectors
        pci = PciState(local_config_space(r).config, msix_table=_msix_reset_table(n), msix_pba=bytes((n + 7) // 8))
    ccw = None
    if r.config.transport == "ccw":
        migration = r.config.machine.version >= Version(2, 10)
        schid = r.config.ccw_devno if r.config.ccw_schid is None else r.config.ccw_schid
        ccw = CcwState(reset_tree(r.device.virtio_id, r.config.ccw_devno, migration, schid))
    # __virtio_queue_reset: every one of the 1024 queues starts with both packed-ring wrap counters set (what
    # virtio/packed_virtqueues carries wherever the host offers RING_PACKED; the 7.2 binary's stream)
    packed = ((0, 1, 0, 1, 0),) * VIRTIO_QUEUE_MAX if F.has(r.host_features, F.RING_PACKED) else ()
    return DeviceState(config=bytes(r.config_len), queues=queues, num_default=sizes, packed=packed,
                       device_endian=core.default_endian(r), pci=pci,
                       mmio=MmioState() if r.config.transport == "mmio" else None, ccw=ccw, device=dev.reset_state(r),
                       extra=declared.reset_values(r))


def _msix_reset_table(n: int) -> bytes:
    # msix_init: every entry masked (vector control bit 0 set)
    return b"".join(bytes(12) + b"\x01\x00\x00\x00" for _ in range(n))


ROM_DIRS = ("/usr/share/qemu", "/usr/lib/ipxe/qemu", "/usr/share/ipxe/qemu")


def rom_bar_size(romfile: str) -> int:
    """pci_add_option_rom: the ROM BAR is the file's size rounded up to a power of two. The file is
    the destination host's; without it, Debian 12's efi-virtio.rom (249344 bytes: 256 KiB)."""
    for d in ROM_DIRS:
        path = os.path.join(d, romfile)
        if os.path.isfile(path):
            size = os.path.getsize(path)
            return 1 << max(size - 1, 0).bit_length()
    return 0x40000
