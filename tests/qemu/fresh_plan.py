"""Fresh QEMU 7.2 streams for the tests of this folder: which machine types, which devices, and the
state each device is driven into (issue 2's list: pc-i440fx-2.2, 2.3, 2.6, 4.2, 5.2 with -smp 4,
7.2 and pc-q35-7.2, each with virtio-net, virtio-blk, virtio-balloon and virtio-rng).

A stream is made once per process (lru_cache) and shared by test_fresh_streams, test_edit_roundtrip
and test_model_fidelity. The states differ from machine to machine (features, configured queues,
blk requests, status, queue_sel, MAC), so that no value is the same everywhere by accident.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from harness.qemu.backend import DeviceConfig, save_stream
from harness.qemu.drive import DriveSpec, QueueSpec, queue_pages


@dataclass(frozen=True)
class Machine:
    machine: str  # the -machine value (may carry machine properties)
    k: int  # variation index: which state the devices are driven into
    smp: int = 1


MACHINES: dict[str, Machine] = {
    "2.2": Machine("pc-i440fx-2.2", 0),
    # the same machine type and state, with the JSON description QEMU 7.2 can be asked for
    "2.2-vmdesc": Machine("pc-i440fx-2.2,suppress-vmdesc=off", 0),
    "2.3": Machine("pc-i440fx-2.3", 1),
    "2.6": Machine("pc-i440fx-2.6", 2),
    "4.2": Machine("pc-i440fx-4.2", 3),
    "5.2-smp4": Machine("pc-i440fx-5.2", 4, smp=4),
    "7.2": Machine("pc-i440fx-7.2", 5),
    "q35-7.2": Machine("pc-q35-7.2", 6),
}

SLOTS = {"virtio-net": 3, "virtio-blk": 4, "virtio-balloon": 5, "virtio-rng": 6}
# legacy feature bits (virtio spec): what the driver asks for; it gets host & mask
NET_MASK = 1 << 5 | 1 << 15 | 1 << 16 | 1 << 17 | 1 << 18 | 1 << 28 | 1 << 29  # MAC MRG_RXBUF STATUS CTRL_VQ/RX ...
CTRL_GUEST_OFFLOADS = 1 << 2
RNG_MASK = 1 << 28  # INDIRECT_DESC
ALL = 0xFFFFFFFF
FIRST_PFN = 0x100  # rings from 1 MiB up; -m 4 leaves room for 0x300 pages


def mac_of(k: int) -> str:
    return f"52:54:00:c0:00:{k + 1:02x}"


def blk_queue_count(m: Machine) -> int:
    # hw_compat_5_1 num-queues=1 stops at 5.2: from there virtio-blk-pci takes one queue per vCPU
    major, minor = m.machine.split(",")[0].rsplit("-", 1)[1].split(".")
    return m.smp if (int(major), int(minor)) >= (5, 2) else 1


def plan(key: str) -> tuple[Machine, list[DeviceConfig], list[DriveSpec]]:
    """The devices on the command line and the state each one is driven into."""
    m = MACHINES[key]
    k = m.k
    devices = [
        DeviceConfig("virtio-net", SLOTS["virtio-net"], (("mac", mac_of(k)),)),
        DeviceConfig("virtio-blk", SLOTS["virtio-blk"]),
        DeviceConfig("virtio-balloon", SLOTS["virtio-balloon"]),
        DeviceConfig("virtio-rng", SLOTS["virtio-rng"]),
    ]
    pfn = FIRST_PFN

    def queues(*wanted: tuple[int, int]) -> tuple[QueueSpec, ...]:
        nonlocal pfn
        out = []
        for index, requests in wanted:
            out.append(QueueSpec(index, pfn, requests))
            pfn += queue_pages(256, requests)  # sized for the largest ring here
        return tuple(out)

    nblk = blk_queue_count(m)
    blk_queues = queues((0, 1), (2, 2), (3, 0)) if nblk == 4 else queues((0, 1 + k % 3))
    drive = [
        DriveSpec("virtio-net", SLOTS["virtio-net"], NET_MASK | (CTRL_GUEST_OFFLOADS if k % 2 == 0 else 0),
                  queues((0, 0), (1, 0), *([(2, 0)] if k % 2 == 0 else [])), status=7, queue_sel=k % 3),
        DriveSpec("virtio-blk", SLOTS["virtio-blk"], ALL, blk_queues, status=7, queue_sel=nblk - 1),
        DriveSpec("virtio-balloon", SLOTS["virtio-balloon"], ALL, queues((0, 0), (1, 0), (2, 0)),
                  status=0x0F if k % 2 else 7, queue_sel=1),
        # queue_sel past the last queue is legal (below 1024) and migrates as it is
        DriveSpec("virtio-rng", SLOTS["virtio-rng"], RNG_MASK, queues((0, 0)), status=3 if k % 3 == 0 else 7,
                  queue_sel=999 if k % 3 == 1 else 0),
    ]
    return m, devices, drive


@functools.cache
def fresh_stream(key: str, binary: str) -> tuple[bytes, dict[str, Any]]:
    """(stream, truth) of one machine type, made once per process. Callers must not change the truth."""
    m, devices, drive = plan(key)
    return save_stream(m.machine, devices, drive, smp=m.smp, binary=binary)
