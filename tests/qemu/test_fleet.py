"""The backend with every release of the fleet (5.2, 7.2, 10.0, 11.1): save and load on each transport,
the 12 ordered pairs through `virtio-compat qemu`, and bad input. A release that is not installed
skips its tests, saying which (`virtio-compat fleet install` installs it)."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest

from harness import fleet
from harness.cli import main
from harness.errors import QemuError
from harness.qemu import oracle, release
from harness.qemu.backend import DeviceConfig, QemuConfig, load_into, load_stream, save
from harness.qemu.drive import DriveSpec, QueueSpec
from harness.qemu.drive_mmio import RING_BASE_PFN
from harness.qemu.loaded import QUERY, RESAVE, RESAVE_AND_QUEUES, from_resave
from harness.qemu.process import live_processes, started_pids
from harness.wire.stream import decode_stream, encode_stream

pytestmark = pytest.mark.qemu

RELEASES = fleet.RELEASES
PAIRS = [(a, b) for a in RELEASES for b in RELEASES if a != b]
# A machine type of each transport every fleet release has (11.1 starts at 5.2, 5.2 ends there).
MACHINES = {"pci": "pc-i440fx-5.2", "q35": "pc-q35-5.2", "mmio": "virt-5.2", "ccw": "s390-ccw-virtio-5.2"}
TARGETS = {"pci": "x86_64", "q35": "x86_64", "mmio": "aarch64", "ccw": "s390x"}


def fleet_binary(name: str, target: str = "x86_64") -> str:
    try:
        return str(fleet.binary(name, target))
    except QemuError as exc:
        pytest.skip(f"fleet release {name} ({target}) missing: {exc}")


def blk_config(transport: str, binary: str) -> tuple[QemuConfig, list[DriveSpec]]:
    """One virtio-blk with two completed requests (none on ccw, which qtest cannot drive)."""
    machine = MACHINES[transport]
    kind = "mmio" if transport == "mmio" else "ccw" if transport == "ccw" else "pci"
    slot = 4 if kind == "pci" else 0
    config = QemuConfig(machine, (DeviceConfig("virtio-blk", slot, transport=kind),), mem_mb=4 if kind == "pci" else 64,
                        binary=binary)
    if kind == "ccw":
        return config, []
    pfn = 0x300 if kind == "pci" else RING_BASE_PFN
    return config, [DriveSpec("virtio-blk", slot, queues=(QueueSpec(0, pfn, requests=2),), transport=kind)]


@pytest.mark.parametrize("transport", ["pci", "q35", "mmio", "ccw"])
@pytest.mark.parametrize("name", RELEASES)
def test_save_and_load_with_each_release(name: str, transport: str) -> None:
    """A driven device saved by a release loads back into it, and what the destination holds is read the
    release's way: x-query-virtio where it exists and is safe, else the destination's re-save."""
    binary = fleet_binary(name, TARGETS[transport])
    config, drives = blk_config(transport, binary)
    data, truth = save(config, drives)
    version = release.binary_version(binary)
    verdict = load_stream(truth["qemu_cmdline"], data, binary=binary)
    assert verdict.outcome == "accepted", verdict.error
    [(path, dev)] = verdict.devices.items()
    assert path.startswith("/machine/peripheral/vblk0")
    assert dev.source == (QUERY if release.x_query_status_safe(version) else RESAVE_AND_QUEUES
                          if release.has_x_query_virtio(version) else RESAVE)
    assert dev.error is None
    if drives:
        [q] = truth["devices"][0]["queues"]
        assert (dev.status, dev.broken) == (7, False)
        assert (dev.queues[0].desc, dev.queues[0].last_avail_idx, dev.queues[0].used_idx) == (q["desc"], 2, 2)
    else:
        assert (dev.status, dev.queues[0].desc) == (0, 0)


def test_which_release_takes_which_way() -> None:
    v = release.parse_version
    assert [release.file_uri(v(x)) for x in ("5.2", "8.1", "8.2", "11.1")] == [False, False, True, True]
    assert [release.x_query_status_safe(v(x)) for x in ("5.2", "7.2", "10.0", "11.1")] == [False, True, True, False]
    assert release.target_of("virt-7.2") == "aarch64" and release.transport_of("s390-ccw-virtio-7.2") == "ccw"


@pytest.mark.parametrize(("src", "dst"), PAIRS, ids=[f"{a}-to-{b}" for a, b in PAIRS])
def test_pair_through_the_cli(src: str, dst: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The run completes (exit 0 or 1: a disagreement with the model is counted, other engineers fix
    the models) on the newest pc-i440fx both have, each device state loaded and compared."""
    fleet_binary(src)
    fleet_binary(dst)
    code = main(["qemu", "--src-binary", src, "--dst-binary", dst, "--examples", "4", "--seed", "1", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code in (0, 1)
    assert out["machine"] == f"pc-i440fx-{min(release.parse_version(src), release.parse_version(dst))}"
    assert sum(len(e["devices"]) for e in out["examples"]) == 4
    assert all(e["qemu"]["outcome"] in ("accepted", "accepted-broken", "rejected") for e in out["examples"])
    print(f"{src} -> {dst}: {out['failed']} of {len(out['examples'])} QEMU pairs with a disagreement or violation")


@pytest.mark.parametrize("machine", ["virt-7.2", "s390-ccw-virtio-7.2"])
def test_other_transports_through_the_cli(machine: str, capsys: pytest.CaptureFixture[str]) -> None:
    target = release.target_of(machine)
    fleet_binary("10.0", target)
    fleet_binary("7.2", target)
    code = main(["qemu", "--src-binary", "10.0", "--dst-binary", "7.2", "--machine", machine, "--examples", "4",
                 "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code in (0, 1)
    assert out["destination"]["binary"].endswith(f"qemu-system-{target}")
    assert [e["qemu"]["outcome"] for e in out["examples"]] == ["accepted"], out["examples"][0]["violations"]


def _no_qemu_left(before: list[int]) -> None:
    assert not live_processes()
    for pid in started_pids()[len(before):]:
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower()


@pytest.mark.parametrize(("args", "says"), [
    (["--src-binary", "9.9", "--dst-binary", "7.2"], "QEMU 9.9 is not a fleet release"),
    (["--src-binary", "/bin/true", "--dst-binary", "7.2"], "/bin/true is not a QEMU that starts"),
    (["--src-binary", "7.2", "--dst-binary", "11.1", "--machine", "pc-i440fx-2.4"],
     "--machine pc-i440fx-2.4: QEMU 11.1"),
    (["--src-binary", "7.2", "--dst-binary", "5.2", "--machine", "virt-7.2"], "--machine virt-7.2: QEMU 5.2"),
    (["--src-binary", "7.2", "--dst-binary", "5.2", "--machine", "foo-1.0"], "not one virtio-compat drives"),
    (["--src-binary", "7.2", "--dst-binary", "5.2", "--machine", "pc-i440fx-1.4"],
     "--machine pc-i440fx-1.4: the model of QEMU 7.2 has no such pci machine type"),
])  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(args: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("5.2", "7.2", "11.1"):
        fleet_binary(name)
    before = started_pids()
    assert main(["qemu", *args, "--examples", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err and "Traceback" not in err, err
    _no_qemu_left(before)


@pytest.mark.parametrize("transport", ["pci", "mmio"])
def test_resave_reads_what_x_query_reports(transport: str) -> None:
    """Where both ways exist (7.2), the destination's re-save decoded gives what x-query-virtio reports:
    the re-save is a sound stand-in on 5.2 and 11.1."""
    binary = fleet_binary("7.2", TARGETS[transport])
    config, drives = blk_config(transport, binary)
    config = QemuConfig(config.machine, (*config.devices, DeviceConfig("virtio-net", 5 if transport == "pci" else 1,
                                                                         transport=transport)), mem_mb=config.mem_mb,
                        binary=binary)
    data, truth = save(config, drives)
    with oracle.destination(truth["qemu_cmdline"], binary) as qemu:
        loaded = load_into(qemu, data, "fd", resave=True)
        argv = list(qemu.argv)
    assert loaded.completed and loaded.resaved is not None
    by_resave = from_resave(loaded.resaved, argv, release.binary_version(binary))
    assert set(by_resave) == set(loaded.devices) and len(by_resave) == 2
    for path, dev in loaded.devices.items():
        assert dev.source == QUERY
        assert replace(by_resave[path], source=QUERY) == dev, path


@pytest.mark.parametrize("name", ["11.1", "10.0"])
def test_a_device_broken_by_the_load_is_seen_either_way(name: str) -> None:
    """A ring index past the guest's marks the device broken (6.0 on): 10.0 says so through x-query-virtio,
    11.1 through the `virtio/broken` subsection of its re-save; its queues still come from the queue query."""
    binary = fleet_binary(name)
    config, drives = blk_config("pci", binary)
    data, truth = save(config, drives)
    s = decode_stream(data)
    [p] = s.devices
    p.value.queues[0].last_avail_idx = 0x8000
    verdict = load_stream(truth["qemu_cmdline"], encode_stream(s), binary=binary)
    assert verdict.outcome == "accepted-broken", verdict.error
    assert verdict.error is not None and verdict.error.startswith("VQ 0 size 0x100 Guest index 0x2 inconsistent")
    [dev] = verdict.devices.values()
    assert dev.broken and dev.queues[0].last_avail_idx == 0x8000
    assert dev.source == (QUERY if name == "10.0" else RESAVE_AND_QUEUES)
