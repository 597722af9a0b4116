"""Driving each virtio-pci device over qtest reads back what was written, and QEMU agrees."""

from __future__ import annotations

from typing import Any

import pytest

from harness.errors import QemuError
from harness.qemu.backend import DeviceConfig, QemuConfig
from harness.qemu.drive import VIRTIO_F_BAD_FEATURE, DriveSpec, QueueSpec, drive_device, queue_pages
from harness.qemu.process import QemuProcess

MACHINE = "pc-i440fx-7.2"
# On pc-i440fx-7.2: queue sizes and MSI-X vectors of each device with default properties.
DEFAULTS = {
    "virtio-net": ([256, 256, 64], 4),
    "virtio-blk": ([256], 2),
    "virtio-balloon": ([128, 128, 128], 0),
    "virtio-rng": ([8], 2),
}
ALL_FEATURES = 0xFFFFFFFF


def _queue_status(qemu: QemuProcess, path: str, index: int) -> dict[str, Any]:
    result: dict[str, Any] = qemu.qmp("x-query-virtio-queue-status", path=path, queue=index)
    return result


def _spec(kind: str, slot: int, sizes: list[int]) -> DriveSpec:
    """Every queue but the last set up (so an unconfigured one is covered when there are several);
    blk gets 3 requests; queue_sel left on the last queue."""
    queues, pfn = [], 0x100
    configured = range(max(len(sizes) - 1, 1))
    for index in configured:
        requests = 3 if kind == "virtio-blk" else 0
        queues.append(QueueSpec(index, pfn, requests))
        pfn += queue_pages(sizes[index], requests)
    return DriveSpec(kind, slot, ALL_FEATURES, tuple(queues), status=7, queue_sel=len(sizes) - 1)


@pytest.mark.qemu
@pytest.mark.parametrize("kind", list(DEFAULTS))
def test_drive_reads_back_what_was_written(qemu_binary: str, kind: str) -> None:
    sizes, vectors = DEFAULTS[kind]
    props = (("mac", "52:54:00:ab:cd:ef"),) if kind == "virtio-net" else ()
    config = QemuConfig(MACHINE, (DeviceConfig(kind, 3, props),))
    spec = _spec(kind, 3, sizes)
    with QemuProcess(MACHINE, config.args(), binary=qemu_binary, qtest=True) as qemu:
        truth = drive_device(qemu.qtest, spec)
        [device] = qemu.qmp("x-query-virtio")
        status = qemu.qmp("x-query-virtio-status", path=device["path"])
        queues = [_queue_status(qemu, device["path"], i) for i in range(len(sizes))]

    assert truth["section"] == f"0000:00:03.0/{kind}"
    assert (truth["device"], truth["transport"], truth["pci_command"]) == (kind, "pci", 0x5)
    assert truth["bar0"] == 0xC301  # 0xc000 + 0x100 * slot, bit 0: I/O space
    assert truth["msix_vectors"] == vectors
    assert truth["status"] == 7 and truth["queue_sel"] == len(sizes) - 1
    assert truth["guest_features_lo"] == truth["host_features_lo"] & ~(1 << VIRTIO_F_BAD_FEATURE)
    assert truth["guest_features_lo"] != 0
    assert truth["num_queues"] == len(sizes)
    assert [q["num"] for q in truth["queues"]] == sizes
    configured = {q.index: q for q in spec.queues}
    for entry in truth["queues"]:
        q = configured.get(entry["index"])
        assert entry["desc"] == (q.pfn << 12 if q else 0)
        requests = q.requests if q else 0
        assert entry["last_avail_idx"] == requests
        if q:
            assert entry["avail_idx"] == entry["used_idx"] == requests
    if kind == "virtio-net":
        assert truth["mac"] == "52:54:00:ab:cd:ef"
    else:
        assert "mac" not in truth

    # QEMU's own view of the device agrees with the register read-backs.
    assert status["queue-sel"] == truth["queue_sel"]
    assert status["num-vqs"] == truth["num_queues"]
    assert not status["broken"]
    assert len(status["status"]["statuses"]) == 3  # ACKNOWLEDGE, DRIVER, DRIVER_OK
    for entry, seen in zip(truth["queues"], queues, strict=True):
        assert seen["vring-desc"] == entry["desc"]
        assert seen["vring-num"] == entry["num"]
        assert seen["last-avail-idx"] == entry["last_avail_idx"]
        assert seen["used-idx"] == entry.get("used_idx", 0)


@pytest.mark.qemu
def test_final_status_and_feature_mask_are_as_asked(qemu_binary: str) -> None:
    config = QemuConfig(MACHINE, (DeviceConfig("virtio-rng", 4),))
    spec = DriveSpec("virtio-rng", 4, guest_features=0x10000000 | 1 << VIRTIO_F_BAD_FEATURE, status=3)
    with QemuProcess(MACHINE, config.args(), binary=qemu_binary, qtest=True) as qemu:
        truth = drive_device(qemu.qtest, spec)
    assert truth["guest_features_lo"] == 0x10000000  # INDIRECT_DESC; bit 30 is never written
    assert truth["status"] == 3
    assert truth["queues"] == [{"index": 0, "num": 8, "desc": 0, "last_avail_idx": 0}]


@pytest.mark.qemu
def test_drive_refuses_what_it_cannot_do(qemu_binary: str) -> None:
    config = QemuConfig(MACHINE, (DeviceConfig("virtio-net", 3),))
    with QemuProcess(MACHINE, config.args(), binary=qemu_binary, qtest=True) as qemu:
        with pytest.raises(QemuError, match="expected virtio-blk"):
            drive_device(qemu.qtest, DriveSpec("virtio-blk", 3))
        with pytest.raises(QemuError, match="has 3 queues, no queue 5"):
            drive_device(qemu.qtest, DriveSpec("virtio-net", 3, queues=(QueueSpec(5, 0x100),)))
        with pytest.raises(QemuError, match="expected virtio-net"):
            drive_device(qemu.qtest, DriveSpec("virtio-net", 9))  # empty slot reads 0xffff


def test_drive_spec_validation() -> None:
    with pytest.raises(QemuError, match="PFN 0x0 must be non-zero"):
        DriveSpec("virtio-blk", 4, queues=(QueueSpec(0, 0),))
    with pytest.raises(QemuError, match="only be made on virtio-blk"):
        DriveSpec("virtio-net", 4, queues=(QueueSpec(0, 0x100, requests=1),))
    with pytest.raises(QemuError, match="unknown virtio device kind"):
        DriveSpec("virtio-gpu", 4)
    with pytest.raises(QemuError, match="listed twice"):
        DriveSpec("virtio-net", 4, queues=(QueueSpec(0, 0x100), QueueSpec(0, 0x104)))


@pytest.mark.qemu
def test_final_status_0_resets_and_the_truth_says_so(qemu_binary: str) -> None:
    config = QemuConfig(MACHINE, (DeviceConfig("virtio-blk", 4),))
    with QemuProcess(MACHINE, config.args(), binary=qemu_binary, qtest=True) as qemu:
        truth = drive_device(qemu.qtest, DriveSpec("virtio-blk", 4, queues=(QueueSpec(0, 0x100),), status=0))
        assert truth["status"] == 0
        assert truth["queues"] == [{"index": 0, "num": 256, "desc": 0, "last_avail_idx": 0}]
        with pytest.raises(QemuError, match="no ring after writing status 0x0"):
            drive_device(qemu.qtest, DriveSpec("virtio-blk", 4, queues=(QueueSpec(0, 0x100, 1),), status=0))
