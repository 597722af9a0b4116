"""Random reachable device states for the real pair (`virtio-compat qemu`, `--real`): what a guest driver and its
host can leave each device in, drawn from a random.Random. A legacy driver on the I/O BAR, or on virtio-pci half
the time BARs mapped as firmware maps them, MSI-X enabled with vectors assigned, a modern driver on the common
configuration (a smaller ring sometimes, RING_PACKED where packed=on offers it); virtio-net on a hubport or a tap
with up to 64 queue pairs; virtio-mmio's legacy registers with a smaller ring sometimes, reset by a big- or
little-endian guest CPU (aarch64 is bi-endian: the device takes the guest's endianness)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace

from harness.errors import QemuError
from harness.qemu import guest, release, tap
from harness.qemu.backend import QemuConfig
from harness.qemu.drive import DriveSpec, QueueSpec, queue_pages
from models.config import Realized, realize
from models.releases import Version

SLOT = 3
RING_BASE_PFN = 0x100  # 1 MiB: rings and blk buffers go above the BIOS area, inside -m 4
RING_BASE_PFN_MMIO = RING_BASE_PFN + (0x40000000 >> 12)  # virt's RAM starts at 1 GiB
# Guest RAM per transport: pc's rings fit in 4 MiB; virt and s390-ccw-virtio want more to start.
MEM_MB = {"pci": 4, "mmio": 64, "ccw": 64}
# Who resets a virtio-mmio device (DriveSpec.reset_endian): a big-endian guest most often (the non-default
# endianness, virtio/device_endian), a little-endian one, or qtest with no CPU (the target's default)
RESET_ENDIANS = ("big", "big", "little", None)
# Final status a legacy driver leaves: DRIVER_OK mostly; ACK, ACK|DRIVER and FAILED|... sometimes.
STATUSES = (7, 7, 7, 3, 1, 0x87)
# A modern driver's: FEATURES_OK before DRIVER_OK (0xF) mostly; ACK, ACK|DRIVER, FEATURES_OK without DRIVER_OK
MODERN_STATUSES = (0xF, 0xF, 0xF, 0xB, 3, 1, 0x8B)


def realized_for(config: QemuConfig, release: Version) -> list[Realized]:
    return [realize(line.config) for line in tap.lines(["-machine", config.machine, *config.args()], release)]


def random_drives(rng: random.Random, config: QemuConfig, release: Version) -> list[DriveSpec]:
    """A random state a legacy guest driver can leave each device in, their rings side by side in guest RAM
    (none on ccw: qtest cannot drive it, its devices stay in their reset state)."""
    if config.transport == "ccw":
        return []
    pfn = RING_BASE_PFN if config.transport == "pci" else RING_BASE_PFN_MMIO
    first, out = pfn, []
    for dev, r in zip(config.devices, realized_for(config, release), strict=True):
        spec, pfn = random_drive(rng, dev.kind, r, dev.slot, pfn, config.transport, dev.props)
        spec = replace(spec, netdev=dev.netdev)
        out.append(spec)
    mem = config.mem_mb or MEM_MB[config.transport]
    reserved = guest.GUEST_RESERVED_PAGES if config.transport == "mmio" else 0  # the guest program's, at RAM's end
    if pfn - first > (mem << 8) - 0x100 - reserved:
        raise QemuError(f"the rings of {len(out)} devices need {pfn - first} guest pages, more than -m {mem} has")
    return out


NET_MQ = 22  # VIRTIO_NET_F_MQ
PACKED_SINCE = Version(4, 2)  # the packed property (RING_PACKED) and virtio/packed_virtqueues
NO_VECTOR = 0xFFFF


# tap queue pairs drawn (mq=on with more than one): up to 64 (129 queues, 130 MSI-X vectors)
TAP_QUEUES = (1, 2, 4, 32, 40, 64)
MAX_DRIVEN_QUEUES = 8  # queues a driver sets up at most: the rings fit the guest's few MiB


TUNNEL_SINCE = Version(10, 2)  # virtio-net's UDP tunnel offloads (host_tunnel, ...: bits 65 to 68)


def random_netdev(rng: random.Random, kind: str, newest: Version = TUNNEL_SINCE) -> str:
    """virtio-net's backend: a hubport, or (where this host can make one) a tap with or without the vnet header
    and with some queues (the kernel's offloads come with it: tap.host_tap). No vnet header where a release of the
    pair (`newest`) offers the tunnel offloads this kernel's tap has: the model does not know them yet."""
    if kind != "virtio-net" or tap.host_tap() is None or rng.random() < 0.5:
        return "hubport"
    queues = rng.choice(TAP_QUEUES)
    vnet = rng.choice(("on", "off"))
    if newest >= TUNNEL_SINCE and tap.host_tap_tunnel():
        vnet = "off"
    return f"tap,vnet_hdr={vnet}" + (f",queues={queues}" if queues > 1 else "")


MODERN_MMIO = ("-global", "virtio-mmio.force-legacy=false")  # every virtio-mmio transport of the VM version 2
MODERN_MMIO_SINCE = Version(4, 2)  # force-legacy


def random_vm_args(rng: random.Random, machine: str, src: Version, dst: Version) -> tuple[str, ...]:
    """What a whole VM is drawn with: on virt, its virtio-mmio transports modern (force-legacy=off) a third of the
    time, where both releases have the property."""
    if release.transport_of(machine) == "mmio" and min(src, dst) >= MODERN_MMIO_SINCE and rng.random() < 0.3:
        return MODERN_MMIO
    return ()


def vm_args(specs: Sequence[DriveSpec], target: str) -> tuple[str, ...]:
    """The command-line options the drives of a VM need: the guest program where a guest CPU resets a device, and
    force-legacy=off where the virtio-mmio drives are modern."""
    out: tuple[str, ...] = ()
    if any(spec.reset_endian is not None for spec in specs):
        out += guest.loader_args(target)
    if any(spec.modern and spec.transport == "mmio" for spec in specs):
        out += MODERN_MMIO
    return out


def random_props(rng: random.Random, kind: str, machine: str, src: Version, dst: Version, netdev: str = "hubport"
                 ) -> tuple[tuple[str, str], ...]:
    """-device properties worth drawing, each known to both releases: packed=on (the host then offers RING_PACKED
    and sends virtio/packed_virtqueues; a modern driver may negotiate it); mq=on with a multiqueue tap."""
    out: tuple[tuple[str, str], ...] = (("mq", "on"),) if "queues=" in netdev else ()
    if release.transport_of(machine) == "pci" and min(src, dst) >= PACKED_SINCE and rng.random() < 0.3:
        out += (("packed", "on"),)
    return out


def _vector(rng: random.Random, vectors: int) -> int:
    """What a driver writes into a vector register: one of the table's, none, or (rarely) one past the table,
    which QEMU answers with VIRTIO_NO_VECTOR."""
    pick = rng.random()
    return NO_VECTOR if pick < 0.2 or not vectors else vectors + rng.randrange(4) if pick < 0.25 \
        else rng.randrange(vectors)


def random_drive(rng: random.Random, kind: str, r: Realized, slot: int = SLOT, pfn: int = RING_BASE_PFN,
                 transport: str = "pci", props: tuple[tuple[str, str], ...] = ()) -> tuple[DriveSpec, int]:
    """A random state a guest driver can leave the device in, and the first page frame after its rings. On pci,
    half the time the BARs are mapped as firmware maps them; then MSI-X may be enabled with vectors assigned,
    and a modern device may be driven through its common configuration (a smaller ring size per queue
    sometimes, RING_PACKED when offered: no requests on a packed ring, this driver makes split ones only)."""
    modern_only = transport == "pci" and not r.legacy  # virtio_pci_force_virtio_1: no legacy BAR to drive
    firmware = transport == "pci" and (modern_only or rng.random() < 0.5)
    msix = firmware and r.vectors > 0 and rng.random() < 0.6
    # virtio-mmio with force-legacy=off is modern only: a virtio 1.0 driver
    modern = (firmware and r.modern and (modern_only or rng.random() < 0.5)) or (transport == "mmio" and r.modern)
    status = rng.choice(MODERN_STATUSES if modern else STATUSES)
    packed_ring = modern and bool(r.host_features >> 34 & 1)
    features = rng.getrandbits(32) | (rng.getrandbits(32) << 32 if modern else 0)
    sizes = list(r.queue_sizes)
    if kind == "virtio-net" and len(sizes) > 3 and not features & r.host_features & 1 << NET_MQ:
        sizes = sizes[:2] + sizes[-1:]  # virtio_net_set_multiqueue: without MQ one pair and the control queue
    queues: list[QueueSpec] = []
    for index, num in enumerate(sizes):
        if rng.random() < 0.3 or (modern and not status & 8) or len(queues) >= MAX_DRIVEN_QUEUES:
            continue  # left unconfigured (a modern driver sets up queues after FEATURES_OK)
        # virtio-mmio's and a modern virtio-pci driver set the ring size: a smaller one sometimes (virtio/ringsize)
        resize = (transport == "mmio" or modern) and num > 1 and rng.random() < 0.3
        if resize:
            num >>= rng.randint(1, min(3, num.bit_length() - 1))
        # blk requests complete while QEMU is paused: non-zero, consistent ring indices
        requests = rng.randint(0, min(3, num // 3)) if kind == "virtio-blk" and status & 2 else 0
        writes = 0
        if kind == "virtio-scsi" and index >= 2 and status & 2:
            # READ(10)s complete, WRITE(10)s stay in flight on the werror disk (drive_scsi.py)
            requests, writes = rng.randint(0, 2), rng.randint(0, 2)
        if transport == "mmio" and not status & 4:
            requests = writes = 0  # a legacy mmio queue is only processed once the driver is ready
        if modern and (not status & 4 or packed_ring):
            requests = writes = 0  # a modern queue is set up once FEATURES_OK is; packed rings are not made here
        vector = _vector(rng, r.vectors) if msix else NO_VECTOR
        queues.append(QueueSpec(index, pfn, requests, num if transport == "mmio" or resize else 0, vector, writes))
        pfn += queue_pages(num, requests + writes + (kind == "virtio-scsi" and requests + writes > 0))
    sel = rng.randrange(max(len(r.queue_sizes), 1))
    if transport == "mmio":
        # aarch64 is bi-endian: the reset is the guest CPU's, big- or little-endian, or (the old path) qtest's
        return DriveSpec(kind, slot, features, tuple(queues), status, sel, transport="mmio",
                         host_features_sel=rng.randrange(2), guest_features_sel=rng.randrange(2), props=props,
                         reset_endian=rng.choice(RESET_ENDIANS), modern=modern), pfn
    return DriveSpec(kind, slot, features, tuple(queues), status, sel, firmware=firmware, msix=msix,
                     config_vector=_vector(rng, r.vectors) if msix else NO_VECTOR, modern=modern,
                     props=props), pfn
