"""The reference models against a real QEMU 7.2 on the virtio-mmio (aarch64 `virt`) and virtio-ccw
(s390x `s390-ccw-virtio`) transports.

1. virtio-mmio, legacy personality: virtio-net-device and virtio-blk-device driven over qtest through
   their memory-mapped registers by the backend's driver (harness/qemu/drive_mmio.py), saved; the
   model's save of each decoded state equals QEMU's payload byte for byte, and the model's load of each
   payload (ring indices from the stream's RAM) agrees with QEMU's load of the stream. Modern personality
   (`-global virtio-mmio.force-legacy=false`), reset state: the model's save equals the payload.
2. virtio-ccw, reset state (virtio-net-ccw with a MAC, virtio-blk-ccw): the model's save equals the
   payload, and the stream loads back accepted in QEMU and in the model.
3. One mutated stream per transport (queue_sel 1024): QEMU and the model give the same outcome and the
   same first error line.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from harness.errors import QemuError
from harness.qemu.backend import Verdict, load_stream, migrate_to_bytes
from harness.qemu.drive import DriveSpec, QueueSpec
from harness.qemu.drive_mmio import drive_mmio_devices
from harness.qemu.process import QemuProcess, find_qemu
from harness.wire.stream import Stream, VirtioPayload, decode_stream, encode_stream
from models.cmdline import DeviceLine, parse
from models.config import realize
from models.model import ACCEPTED, LoadResult, guest_rings, load, reset_state, save, state_from_wire
from models.releases import V

pytestmark = pytest.mark.qemu

RELEASE = V("7.2")
NULL_BLOCK_SIZE = 1048576

RAM_BASE = 0x40000000  # virt: mach-virt.ram at 1 GiB
RING_AREA = RAM_BASE + 0x100000  # each queue gets its own 64 KiB here
RING_STRIDE = 0x10000
# blk's queue gets a size other than its default: the payload then carries a virtio/ringsize subsection
BLK_QUEUE_SIZE = 128


def _binary(arch: str) -> str:
    try:
        return find_qemu(None, arch)
    except QemuError as exc:
        pytest.skip(f"real-QEMU test skipped: {exc}")


@pytest.fixture(scope="module")
def aarch64() -> str:
    return _binary("aarch64")


@pytest.fixture(scope="module")
def s390x() -> str:
    return _binary("s390x")


def mmio_args(modern: bool = False) -> list[str]:
    args = ["-cpu", "cortex-a57", "-m", "64",
            "-netdev", "hubport,id=nd_vnet0,hubid=0", "-device", "virtio-net-device,netdev=nd_vnet0,id=vnet0",
            "-blockdev", f"driver=null-co,node-name=bd_vblk0,size={NULL_BLOCK_SIZE}",
            "-device", "virtio-blk-device,drive=bd_vblk0,id=vblk0"]  # fmt: skip
    return args + (["-global", "virtio-mmio.force-legacy=false"] if modern else [])


def ccw_args() -> list[str]:
    return ["-m", "64",
            "-netdev", "hubport,id=nd_vnet0,hubid=0",
            "-device", "virtio-net-ccw,netdev=nd_vnet0,id=vnet0,mac=52:54:00:ab:cd:01",
            "-blockdev", f"driver=null-co,node-name=bd_vblk0,size={NULL_BLOCK_SIZE}",
            "-device", "virtio-blk-ccw,drive=bd_vblk0,id=vblk0"]  # fmt: skip


@dataclass(frozen=True)
class Saved:
    argv: list[str]  # the full command line (what the model parses and the destination runs)
    data: bytes
    stream: Stream
    queues: dict[str, list[dict[str, Any]]]  # x-query-virtio-queue-status on the source, by QOM path


# --- driving virtio-mmio ----------------------------------------------------------------------------


def drive_mmio_legacy(qemu: QemuProcess) -> list[dict[str, Any]]:
    """Bring both devices up the legacy way with the backend's driver (drive_mmio.py): every offered
    feature, each queue its own 64 KiB ring, blk's at a non-default size with two completed requests,
    the selectors left at the last queue, host features 1, guest features 0."""
    qt = qemu.qtest
    net_queues = 3
    net = DriveSpec("virtio-net", 0, 0xFFFFFFFF,
                    tuple(QueueSpec(i, (RING_AREA + RING_STRIDE * (i + 1)) // 4096) for i in range(net_queues)),
                    queue_sel=net_queues - 1, transport="mmio", host_features_sel=1)
    blk = DriveSpec("virtio-blk", 1, 0xFFFFFFFF, (QueueSpec(0, RING_AREA // 4096, 2, BLK_QUEUE_SIZE),),
                    queue_sel=0, transport="mmio", host_features_sel=1)
    return drive_mmio_devices(qt, [net, blk])


# --- saving and comparing -------------------------------------------------------------------------------


def full_argv(qemu: QemuProcess) -> list[str]:
    """QemuProcess's command line as it ran (parse() skips the sockets and -qtest, load_stream drops them)."""
    return list(qemu.argv)


def query_queues(qemu: QemuProcess) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for dev in qemu.qmp("x-query-virtio"):
        st = qemu.qmp("x-query-virtio-status", path=dev["path"])
        out[dev["path"]] = [
            qemu.qmp("x-query-virtio-queue-status", path=dev["path"], queue=i) for i in range(st["num-vqs"])
        ]
    return out


def save_mmio(binary: str, *, driven: bool, modern: bool = False) -> Saved:
    with QemuProcess("virt-7.2", mmio_args(modern), binary=binary, arch="aarch64", qtest=True, name="mmio") as qemu:
        if driven:
            drive_mmio_legacy(qemu)
        queues = query_queues(qemu)
        data = migrate_to_bytes(qemu)
        return Saved(full_argv(qemu), data, decode_stream(data), queues)


def save_ccw(binary: str) -> Saved:
    with QemuProcess("s390-ccw-virtio-7.2", ccw_args(), binary=binary, arch="s390x", qtest=True, name="ccw") as qemu:
        queues = query_queues(qemu)
        data = migrate_to_bytes(qemu)
        return Saved(full_argv(qemu), data, decode_stream(data), queues)


def lines_by_section(saved: Saved) -> dict[str, DeviceLine]:
    return {line.section: line for line in parse(saved.argv, RELEASE)}


def payload_of(saved: Saved, p: VirtioPayload) -> bytes:
    return saved.data[p.offset : p.offset + p.size]


def save_problems(
    saved: Saved, *, reset: bool, only: str | None = None, extra_props: dict[str, Any] | None = None
) -> list[str]:
    """The model's save of each decoded state (and of reset_state() when `reset`) against QEMU's payload."""
    lines = lines_by_section(saved)
    problems = []
    assert sorted(p.device for p in saved.stream.devices) == ["virtio-blk", "virtio-net"]
    for p in saved.stream.devices:
        if only is not None and p.section != only:
            continue
        line = lines.get(p.section)
        if line is None:
            problems.append(f"{p.section}: no device of the command line maps to it (model: {sorted(lines)})")
            continue
        config = line.config
        if extra_props:
            config = replace(config, props={**config.props, **extra_props})
        r = realize(config)
        payload = payload_of(saved, p)
        got = save(r, state_from_wire(r, p.value))
        if got != payload:
            problems.append(
                f"{p.section}: save(state_from_wire) differs ({len(got)} vs {len(payload)} bytes, "
                f"first difference at {first_difference(got, payload)})"
            )
        if reset:
            got = save(r, reset_state(r))
            if got != payload:
                problems.append(
                    f"{p.section}: save(reset_state) differs ({len(got)} vs {len(payload)} bytes, "
                    f"first difference at {first_difference(got, payload)})"
                )
    return problems


def first_difference(a: bytes, b: bytes) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def model_loads(saved: Saved, stream: Stream, data: bytes) -> list[tuple[str, LoadResult]]:
    lines = lines_by_section(saved)
    out = []
    for p in stream.devices:
        r = realize(lines[p.section].config)
        src = state_from_wire(r, p.value)
        rings = guest_rings(stream.memory, stream.machine, src)
        out.append((p.section, load(r, data[p.offset : p.offset + p.size], rings, p.section, p.instance_id)))
    return out


def model_verdict(results: list[tuple[str, LoadResult]]) -> tuple[str, str | None]:
    """The whole stream's outcome as the model sees it: the first device that is not accepted decides."""
    for _section, res in results:
        if res.outcome != ACCEPTED:
            return res.outcome, res.error
    return ACCEPTED, None


def qemu_load(saved: Saved, data: bytes) -> Verdict:
    return load_stream(saved.argv, data)


@pytest.fixture(scope="module")
def mmio_driven(aarch64: str) -> Iterator[Saved]:
    yield save_mmio(aarch64, driven=True)


@pytest.fixture(scope="module")
def ccw_reset(s390x: str) -> Iterator[Saved]:
    yield save_ccw(s390x)


# --- 1. virtio-mmio ------------------------------------------------------------------------------------


def test_mmio_driven_save_equals_qemu(mmio_driven: Saved) -> None:
    assert {p.transport for p in mmio_driven.stream.devices} == {"mmio"}
    problems = save_problems(mmio_driven, reset=False)
    assert not problems, "\n".join(problems)


def test_mmio_driven_stream_holds_the_driven_state(mmio_driven: Saved) -> None:
    """The drive took: DRIVER_OK, the rings where they were put, blk's two requests completed (isr 1) on a
    non-default ring size, the selectors written last."""
    lines = lines_by_section(mmio_driven)
    got = {}
    for p in mmio_driven.stream.devices:
        st = state_from_wire(realize(lines[p.section].config), p.value)
        queues = [(q.desc, q.num, q.last_avail_idx) for q in st.queues if q.desc]
        got[p.device] = (st.status, st.isr, st.queue_sel, queues)
    assert got["virtio-blk"] == (7, 1, 0, [(RING_AREA, BLK_QUEUE_SIZE, 2)])
    status, _isr, queue_sel, queues = got["virtio-net"]
    assert (status, queue_sel) == (7, len(queues) - 1)
    assert [(desc, last) for desc, _num, last in queues] == [
        (RING_AREA + RING_STRIDE * (i + 1), 0) for i in range(len(queues))
    ]


def test_mmio_driven_load_agrees_with_qemu(mmio_driven: Saved) -> None:
    verdict = qemu_load(mmio_driven, mmio_driven.data)
    results = model_loads(mmio_driven, mmio_driven.stream, mmio_driven.data)
    assert model_verdict(results) == (verdict.outcome, verdict.error), [(s, r.outcome, r.error) for s, r in results]
    assert verdict.outcome == "accepted", verdict.error
    # what each device loaded: ring addresses and indices, as QEMU shows them after its load
    lines = lines_by_section(mmio_driven)
    problems = []
    for section, res in results:
        assert res.state is not None
        path = f"/machine/peripheral/{lines[section].qdev_id}"  # virtio-*-device is itself the VirtIODevice
        qmp = verdict.virtio_queues[path]
        got = [(q.desc, q.last_avail_idx, q.used_idx) for q in res.state.queues[: len(qmp)]]
        want = [(q["vring-desc"], q["last-avail-idx"], q["used-idx"]) for q in qmp]
        if got != want:
            problems.append(f"{section}: loaded queues (desc, last_avail_idx, used_idx): model {got}, QEMU {want}")
        if res.state.queue_sel != verdict.virtio_status[path]["queue-sel"]:
            problems.append(
                f"{section}: queue_sel: model {res.state.queue_sel}, QEMU {verdict.virtio_status[path]['queue-sel']}"
            )
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def mmio_modern(aarch64: str) -> Iterator[Saved]:
    yield save_mmio(aarch64, driven=False, modern=True)


def test_mmio_modern_reset_payload_is_modern(mmio_modern: Saved) -> None:
    """The modern personality saves virtio-mmio's own state (the 1024-queue transport block): ~44 KB per device."""
    sizes = [(p.section, p.size) for p in mmio_modern.stream.devices]
    assert all(size > 40000 for _section, size in sizes), sizes


def test_mmio_modern_reset_save_equals_qemu_given_force_legacy_off(mmio_modern: Saved) -> None:
    """The model's save, with force-legacy=off handed to it by hand, equals QEMU's payload."""
    problems = save_problems(mmio_modern, reset=True, extra_props={"force-legacy": False})
    assert not problems, "\n".join(problems)


def test_mmio_modern_reset_save_equals_qemu_from_the_command_line(mmio_modern: Saved) -> None:
    problems = save_problems(mmio_modern, reset=True)
    assert not problems, "\n".join(problems)


# --- 2. virtio-ccw ------------------------------------------------------------------------------------


def test_ccw_reset_save_equals_qemu(ccw_reset: Saved) -> None:
    """save(state_from_wire) of both devices, and save(reset_state) of the first, equal QEMU's payloads."""
    assert {p.transport for p in ccw_reset.stream.devices} == {"ccw"}
    problems = save_problems(ccw_reset, reset=False)
    problems += save_problems(ccw_reset, reset=True, only="/fe.0.0000/virtio-net")
    assert not problems, "\n".join(problems)


def test_ccw_reset_state_of_the_second_device(ccw_reset: Saved) -> None:
    problems = save_problems(ccw_reset, reset=True, only="/fe.0.0001/virtio-blk")
    assert not problems, "\n".join(problems)


def test_ccw_reset_loads_back(ccw_reset: Saved) -> None:
    verdict = qemu_load(ccw_reset, ccw_reset.data)
    assert verdict.outcome == "accepted", verdict.error
    results = model_loads(ccw_reset, ccw_reset.stream, ccw_reset.data)
    assert model_verdict(results) == (ACCEPTED, None), [(s, r.outcome, r.error) for s, r in results]


# --- 3. mutated streams -----------------------------------------------------------------------------------


def mutate_queue_sel(saved: Saved, value: int) -> tuple[Stream, bytes]:
    stream = decode_stream(saved.data)
    target = next(p for p in stream.devices if p.device == "virtio-net")
    target.value.queue_sel = value
    data = encode_stream(stream)
    return decode_stream(data), data


def check_mutated(saved: Saved) -> None:
    stream, data = mutate_queue_sel(saved, 1024)
    verdict = qemu_load(saved, data)
    results = model_loads(saved, stream, data)
    assert model_verdict(results) == (verdict.outcome, verdict.error), (
        f"queue_sel 1024: model {model_verdict(results)}, QEMU {(verdict.outcome, verdict.error)}"
    )


def test_mmio_mutated_queue_sel(mmio_driven: Saved) -> None:
    check_mutated(mmio_driven)


def test_ccw_mutated_queue_sel(ccw_reset: Saved) -> None:
    check_mutated(ccw_reset)
