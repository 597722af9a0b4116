"""save_stream / load_stream against real QEMU: round trips, corrupted streams, the fixtures."""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path
from typing import Any

import pytest
from qemu_streams import virtio_blob

from harness.errors import QemuError
from harness.qemu.backend import DeviceConfig, QemuConfig, load_stream, save, save_stream
from harness.qemu.drive import DriveSpec, QueueSpec
from harness.qemu.process import find_qemu

MACHINE = "pc-i440fx-7.2"
BLK = [DeviceConfig("virtio-blk", 4)]
BLK_3_REQUESTS = [DriveSpec("virtio-blk", 4, queues=(QueueSpec(0, 0x300, requests=3),))]
BLK_SECTION = "0000:00:04.0/virtio-blk"

# The real streams in shared/fixtures/qemu-7.2, wherever this checkout keeps them.
_ROOT = Path(__file__).resolve().parents[2]
FIXTURE_DIRS = [
    Path(os.environ.get("VIRTIO_COMPAT_QEMU_FIXTURES", _ROOT / "tests" / "data" / "qemu-7.2")),
    _ROOT.parent / "shared" / "fixtures" / "qemu-7.2",
]
FIXTURES = next((d for d in FIXTURE_DIRS if (d / "README.md").is_file()), None)
needs_fixtures = pytest.mark.skipif(FIXTURES is None, reason="QEMU 7.2 fixture streams not found")

# Keys of a driven device's truth in the fixture JSON (pci_config_size and expect_subsections come
# from decoding the stream, which the driver never does).
DEVICE_KEYS = {
    "section", "device", "transport", "msix_vectors", "status", "queue_sel", "guest_features_lo",
    "host_features_lo", "num_queues", "queues", "pci_command", "notes",
}  # fmt: skip


@pytest.fixture(scope="module")
def blk_stream(qemu_binary: str) -> tuple[bytes, dict[str, Any]]:
    return save_stream(MACHINE, BLK, BLK_3_REQUESTS, binary=qemu_binary)


@pytest.mark.qemu
def test_blk_with_3_requests_loads_back(blk_stream: tuple[bytes, dict[str, Any]]) -> None:
    data, truth = blk_stream
    assert set(truth) == {"machine", "qemu_cmdline", "qemu_version", "devices"}
    [device] = truth["devices"]
    assert DEVICE_KEYS <= set(device) <= DEVICE_KEYS | {"bar0"}
    assert device["queues"] == [
        {"index": 0, "num": 256, "desc": 0x300000, "last_avail_idx": 3, "avail_idx": 3, "used_idx": 3}
    ]
    assert data.startswith(b"QEVM")

    verdict = load_stream(truth["qemu_cmdline"], data)
    assert verdict.outcome == "accepted" and verdict.accepted
    assert verdict.error is None and verdict.returncode == 0
    [(path, status)] = verdict.virtio_status.items()
    assert path == "/machine/peripheral/vblk0/virtio-backend"
    assert not status["broken"] and status["queue-sel"] == device["queue_sel"]
    [queue] = verdict.virtio_queues[path]
    assert (queue["last-avail-idx"], queue["used-idx"], queue["vring-desc"]) == (3, 3, 0x300000)


@pytest.mark.qemu
def test_the_same_config_object_loads_too(blk_stream: tuple[bytes, dict[str, Any]], qemu_binary: str) -> None:
    data, _ = blk_stream
    verdict = load_stream(QemuConfig(MACHINE, tuple(BLK), binary=qemu_binary), data, channel="exec")
    assert verdict.outcome == "accepted"


@pytest.mark.qemu
def test_corrupt_pci_device_id_is_rejected(blk_stream: tuple[bytes, dict[str, Any]]) -> None:
    data, truth = blk_stream
    start, _ = virtio_blob(data, BLK_SECTION)
    # The blob opens with the PCIDevice vmstate: version_id (be32), then config[256].
    device_id_low = start + 4 + 2
    assert data[device_id_low] == 0x01  # transitional virtio-blk is 1af4:1001
    bad = bytearray(data)
    bad[device_id_low] = 0x41
    verdict = load_stream(truth["qemu_cmdline"], bytes(bad))
    assert verdict.outcome == "rejected" and verdict.returncode == 1
    assert verdict.error is not None
    assert verdict.error.startswith("get_pci_config_device: Bad config data: i=0x2 read: 41 device: 1 ")
    assert any("Failed to load PCIDevice:config" in line for line in verdict.stderr)
    assert verdict.virtio_status == {}


@pytest.mark.qemu
def test_inconsistent_ring_index_marks_the_device_broken(blk_stream: tuple[bytes, dict[str, Any]]) -> None:
    data, truth = blk_stream
    [device] = truth["devices"]
    start, _ = virtio_blob(data, BLK_SECTION)
    # PCI config, irq_state[4], MSI-X table + PBA + config_vector; then the virtio core fields.
    pos = start + 4 + 256 + 16
    vectors = device["msix_vectors"]
    pos += vectors * 16 + (vectors + 7) // 8 + 2
    pos += 1 + 1 + 2 + 4  # status, isr, queue_sel, guest_features
    (config_len,) = struct.unpack_from(">I", data, pos)
    pos += 4 + config_len
    num_queues, num, desc, last_avail = struct.unpack_from(">IIQH", data, pos)
    assert (num_queues, num, desc, last_avail) == (1, 256, 0x300000, 3)  # the walk found queue 0
    bad = bytearray(data)
    struct.pack_into(">H", bad, pos + 16, 0x8000)
    verdict = load_stream(truth["qemu_cmdline"], bytes(bad))
    assert verdict.outcome == "accepted-broken" and verdict.returncode == 0
    assert (
        verdict.error == "VQ 0 size 0x100 Guest index 0x3 inconsistent with Host index 0x8000: delta 0x8003"
    )
    [status] = verdict.virtio_status.values()
    assert status["broken"]


@pytest.mark.qemu
def test_truncated_stream_is_rejected(blk_stream: tuple[bytes, dict[str, Any]]) -> None:
    data, truth = blk_stream
    start, _ = virtio_blob(data, BLK_SECTION)
    verdict = load_stream(truth["qemu_cmdline"], data[: start + 500])
    assert verdict.outcome == "rejected" and verdict.returncode == 1
    assert verdict.error is not None and verdict.error.startswith("Failed to load ")


@pytest.mark.qemu
def test_missing_device_on_destination_is_rejected(
    blk_stream: tuple[bytes, dict[str, Any]], qemu_binary: str
) -> None:
    data, _ = blk_stream
    verdict = load_stream(QemuConfig(MACHINE, (), binary=qemu_binary), data)
    assert verdict.outcome == "rejected"
    assert verdict.error is not None
    assert verdict.error.startswith(f"Unknown savevm section or instance '{BLK_SECTION}' 0")


@pytest.mark.qemu
def test_fd_and_exec_channels_write_the_same_stream(
    blk_stream: tuple[bytes, dict[str, Any]], qemu_binary: str
) -> None:
    data, truth = blk_stream
    via_exec, truth_exec = save_stream(MACHINE, BLK, BLK_3_REQUESTS, binary=qemu_binary, channel="exec")
    assert len(via_exec) == len(data)
    start, size = virtio_blob(data, BLK_SECTION)
    assert via_exec[start : start + size] == data[start : start + size]
    assert truth_exec == truth
    assert load_stream(truth_exec["qemu_cmdline"], via_exec, channel="exec").outcome == "accepted"


@pytest.mark.qemu
def test_hub_warning_is_not_an_error(qemu_binary: str) -> None:
    net = [DeviceConfig("virtio-net", 3)]
    data, truth = save_stream(MACHINE, net, [DriveSpec("virtio-net", 3, 0x20, (QueueSpec(0, 0x100),))])
    [device] = truth["devices"]
    assert device["mac"] == "52:54:00:12:34:56"  # QEMU's default for the first NIC
    verdict = load_stream(truth["qemu_cmdline"], data)
    assert verdict.outcome == "accepted"
    assert verdict.stderr == (
        f"{os.path.basename(qemu_binary)}: warning: hub 0 is not connected to host network",
    )


@pytest.mark.qemu
def test_drive_spec_must_match_a_configured_device(qemu_binary: str) -> None:
    with pytest.raises(QemuError, match="no such device configured"):
        save_stream(MACHINE, BLK, [DriveSpec("virtio-net", 4)], binary=qemu_binary)


def test_config_args_and_argv_round_trip() -> None:
    config = QemuConfig(
        MACHINE,
        (DeviceConfig("virtio-net", 3, (("mac", "52:54:00:f1:00:01"),)), DeviceConfig("virtio-blk", 4)),
        smp=2,
    )
    args = config.args()
    assert args == [
        "-m", "4", "-smp", "2",
        "-netdev", "hubport,id=nd_vnet0,hubid=0",
        "-device", "virtio-net-pci,id=vnet0,netdev=nd_vnet0,addr=0x3,romfile=,mac=52:54:00:f1:00:01",
        "-blockdev", "driver=null-co,node-name=bd_vblk0,size=1048576",
        "-device", "virtio-blk-pci,id=vblk0,drive=bd_vblk0,addr=0x4",
    ]  # fmt: skip
    argv = ["qemu-system-x86_64", "-machine", f"{MACHINE},accel=tcg", "-nodefaults", "-display", "none"]
    argv += ["-S", "-qmp", "unix:QMP.sock,server=on,wait=off", *args]
    again = QemuConfig.from_argv(argv)
    assert again.machine == MACHINE and again.args() == args
    with pytest.raises(QemuError, match="share a PCI slot"):
        QemuConfig(MACHINE, (DeviceConfig("virtio-rng", 3), DeviceConfig("virtio-blk", 3)))


# -- the fixtures: the driver reproduces them, and their streams load ------------------------------------


def _fixture(name: str) -> dict[str, Any]:
    assert FIXTURES is not None
    result: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return result


def _specs_from_truth(truth: dict[str, Any]) -> list[DriveSpec]:
    """The drive specs that made a fixture, from its truth (features written = the read-back)."""
    specs = []
    for dev in truth["devices"]:
        if "host_features_lo" not in dev:
            continue  # never driven
        match = re.search(r"I/O BAR at (0x[0-9a-f]+)", dev["notes"])
        assert match, dev["notes"]
        queues = tuple(
            QueueSpec(q["index"], q["desc"] >> 12, q.get("used_idx", 0)) for q in dev["queues"] if q["desc"]
        )
        slot = int(dev["section"].split(":")[2].split(".")[0], 16)
        specs.append(
            DriveSpec(
                dev["device"], slot, dev["guest_features_lo"], queues, dev["status"], dev["queue_sel"],
                io_base=int(match.group(1), 16),
            )
        )  # fmt: skip
    return specs


@needs_fixtures
@pytest.mark.parametrize(
    "name",
    [
        "f01-i440fx-7.2-net-mac-ctrlvq",
        "f03-i440fx-2.3-net-blk1",
        "f04-i440fx-2.6-rng-balloon",
        "f05-i440fx-4.2-blk-nq2",
        "f06-i440fx-7.2-net-vec0-reset-rng",
    ],
)
@pytest.mark.qemu
def test_driver_reproduces_fixture(qemu_binary: str, name: str) -> None:
    """Driving as the fixture README says gives the same truth and byte-identical virtio payloads."""
    expected = _fixture(name)
    assert FIXTURES is not None
    fixture_stream = (FIXTURES / f"{name}.bin").read_bytes()
    data, truth = save(expected["qemu_cmdline"], _specs_from_truth(expected))
    assert truth["qemu_version"] == expected["qemu_version"]
    driven = [dev for dev in expected["devices"] if "host_features_lo" in dev]
    assert len(truth["devices"]) == len(driven)
    for want, got in zip(driven, truth["devices"], strict=True):
        for key in sorted(DEVICE_KEYS - {"notes", "queues"}) + (["mac"] if "mac" in want else []):
            assert got[key] == want[key], key
        # The fixtures list avail/used indices only for queues that had requests.
        assert [{k: q[k] for k in w} for q, w in zip(got["queues"], want["queues"], strict=True)] == want[
            "queues"
        ]
    for dev in expected["devices"]:
        start, size = virtio_blob(data, dev["section"])
        f_start, f_size = virtio_blob(fixture_stream, dev["section"])
        assert size == f_size
        assert data[start : start + size] == fixture_stream[f_start : f_start + f_size], dev["section"]


@pytest.mark.qemu
@needs_fixtures
@pytest.mark.parametrize(
    "name", sorted(p.stem for p in FIXTURES.glob("*.json")) if FIXTURES is not None else ["none"]
)
def test_fixture_streams_load(name: str) -> None:
    fixture = _fixture(name)
    try:
        find_qemu(fixture["qemu_cmdline"][0])
    except QemuError as exc:
        pytest.skip(str(exc))
    assert FIXTURES is not None
    verdict = load_stream(fixture["qemu_cmdline"], (FIXTURES / f"{name}.bin").read_bytes())
    assert verdict.outcome == "accepted", verdict.error
    load_back = fixture.get("load_back")
    if load_back and "queues_after_load" in load_back:
        [queues] = verdict.virtio_queues.values()
        for want, got in zip(load_back["queues_after_load"], queues, strict=True):
            assert {k: got[k] for k in want} == want
