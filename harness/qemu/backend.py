"""Real QEMU as a backend: save a driven device state to a migration stream, load a stream back.

save_stream() starts QEMU paused with qtest, drives the devices (drive.py), migrates to a file
(`file:PATH` from 8.2, which refuses `fd:` to a file from 11.x; before 8.2 an `fd:` passed over QMP,
or `exec:cat > FILE`), and returns the bytes with the ground truth. load_stream() starts the same
command line with `-incoming defer`, loads the bytes with `migrate-incoming`, and returns QEMU's
verdict: QEMU exits by itself with rc 1 on a failed load, and marks a device broken (rc 0) for
inconsistent ring indices. What the destination then holds is read as loaded.py says.
"""

from __future__ import annotations

import os
import re
import shlex
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from harness.errors import QemuError
from harness.qemu import guest, release
from harness.qemu.drive import DEVICE_KINDS, MMIO_STRIDE, MMIO_TOP, DriveSpec, drive_devices
from harness.qemu.drive_mmio import drive_mmio_devices
from harness.qemu.loaded import RESAVE_AND_QUEUES, LoadedDevice, from_query, from_resave
from harness.qemu.process import POLL, QemuProcess
from models.registry import BASE
from models.releases import Version

# -device driver per transport; the id prefix the fixtures use (vnet0, vblk0, ...) is the device's declaration's.
DRIVER_SUFFIX = {"pci": "pci", "mmio": "device", "ccw": "ccw"}
PCI_DRIVERS = {kind: f"{kind}-pci" for kind in DEVICE_KINDS}
MMIO_SLOTS = 32
# What each target's board needs besides the devices: aarch64 `virt` defaults to a 32-bit CPU.
TARGET_ARGS = {"x86_64": (), "aarch64": ("-cpu", "cortex-a57"), "s390x": ()}
NULL_BLOCK_SIZE = 1048576
STREAM_WAIT_TIMEOUT = 10.0

Outcome = Literal["accepted", "accepted-broken", "rejected", "crashed"]
# How the stream reaches the file: "fd" has QEMU open it itself (`file:PATH` from 8.2; before, an open
# file passed over SCM_RIGHTS + getfd, `fd:` URI); "exec" is `exec:cat > FILE` / `exec:cat FILE` as the
# fixtures were made. Same bytes; fd is ~6 ms faster per migration here because QEMU forks no shell.
Channel = Literal["fd", "exec"]
# virtio_error() text for a ring index that does not fit the guest's: the load goes on, the device is broken.
_VQ_INCONSISTENT = re.compile(r"^VQ \d+ .*inconsistent")


@dataclass(frozen=True)
class DeviceConfig:
    """One virtio device on the command line: its kind, where it sits, extra -device properties.

    slot: pci, its slot on bus 0 (1..31); ccw, its devno fe.0.SLOT; mmio, its place among the devices
    (0 first: virt gives it the top virtio-mmio transport), which must follow the command line's order."""

    kind: str
    slot: int
    props: tuple[tuple[str, str], ...] = ()
    transport: str = "pci"
    # virtio-net's -netdev: "hubport" (no host network), or "tap" with its options (vnet_hdr=on|off, queues=N;
    # QEMU names and creates the tap device itself, and it goes with QEMU)
    netdev: str = "hubport"

    def __post_init__(self) -> None:
        if self.kind not in DEVICE_KINDS:
            raise QemuError(f"unknown virtio device kind {self.kind!r} (known: {', '.join(DEVICE_KINDS)})")
        if self.transport not in DRIVER_SUFFIX:
            raise QemuError(f"unknown virtio transport {self.transport!r} (known: {', '.join(DRIVER_SUFFIX)})")
        low, high = {"pci": (1, 31), "mmio": (0, MMIO_SLOTS - 1), "ccw": (0, 0xFFFF)}[self.transport]
        if not low <= self.slot <= high:
            raise QemuError(f"{self.transport} slot {self.slot} out of range {low}..{high}")

    @property
    def driver(self) -> str:
        return f"{self.kind}-{DRIVER_SUFFIX[self.transport]}"

    @property
    def section(self) -> str:
        vmsd = BASE.device(self.kind).section
        if self.transport == "ccw":
            return f"/fe.0.{self.slot:04x}/{vmsd}"
        if self.transport == "mmio":
            return f"virtio-mmio@{self.mmio_base:016x}/{vmsd}"
        return f"0000:00:{self.slot:02x}.0/{vmsd}"

    @property
    def mmio_base(self) -> int:
        return MMIO_TOP - MMIO_STRIDE * self.slot


def _opt(value: str) -> str:
    return value.replace(",", ",,")  # QEMU's option syntax escapes a comma by doubling it


@dataclass(frozen=True)
class QemuConfig:
    """Everything on a QEMU command line except what QemuProcess adds itself (-machine's accel,
    -nodefaults, -display none, -S, the QMP and qtest sockets, -incoming)."""

    machine: str
    devices: tuple[DeviceConfig, ...] = ()
    smp: int | None = 1
    mem_mb: int | None = 4
    binary: str | None = None
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        slots = [dev.slot for dev in self.devices]
        if len(set(slots)) != len(slots):
            raise QemuError(f"two devices share a {'PCI ' if self.transport == 'pci' else ''}slot: {slots}")
        transports = {dev.transport for dev in self.devices}
        if transports - {self.transport}:
            raise QemuError(f"{self.machine} takes {self.transport} devices, not {', '.join(sorted(transports))}")
        if self.transport == "mmio" and slots != list(range(len(slots))):
            raise QemuError(f"virtio-mmio devices take their transport by order: slots must be 0..n-1, not {slots}")

    @property
    def target(self) -> str:
        """The QEMU target the machine type is for: x86_64, aarch64 or s390x."""
        return release.target_of(self.machine)

    @property
    def transport(self) -> str:
        return release.TRANSPORT_OF_TARGET[self.target]

    def args(self) -> list[str]:
        args = [] if self.mem_mb is None else ["-m", str(self.mem_mb)]
        args += [] if self.smp is None else ["-smp", str(self.smp)]
        counts: Counter[str] = Counter()
        for dev in self.devices:
            decl = BASE.device(dev.kind)
            dev_id = f"{decl.qdev_id}{counts[dev.kind]}"
            counts[dev.kind] += 1
            props = "".join(f",{key}={_opt(value)}" for key, value in dev.props)
            device = f"{dev.driver},id={dev_id}"
            if decl.backend is not None:  # the backend it needs: -netdev, -blockdev, -chardev, -object ...
                option, arg, link = (x.replace("{id}", dev_id) for x in decl.backend)
                if option == "-netdev" and dev.netdev.startswith("tap"):  # a tap drawn for it (drawn.random_netdev)
                    arg = f"tap,id=nd_{dev_id},script=no,downscript=no{dev.netdev[3:]}"
                args += [option, arg]
                device += f",{link}" if link else ""
            if dev.transport == "pci":
                device += f",addr={dev.slot:#x}"
                # romfile= drops the NIC option ROM: 240 KB less stream for nothing we look at.
                device += ",romfile=" if decl.romfile else ""
            elif dev.transport == "ccw":
                device += f",devno=fe.0.{dev.slot:04x}"
            args += ["-device", device + props]
            for option, arg in decl.attached:  # what sits on its bus (virtio-scsi's disk)
                args += [option, arg.replace("{id}", dev_id)]
        if self.devices:  # a config from a whole argv (from_argv) has its board options in extra_args
            args += TARGET_ARGS[self.target]
        return args + list(self.extra_args)

    @classmethod
    def from_argv(cls, argv: Sequence[str]) -> QemuConfig:
        """A config from a full command line (like a fixture's `qemu_cmdline`): the options
        QemuProcess sets itself are dropped, everything else is kept as is."""
        if not argv:
            raise QemuError("empty QEMU command line")
        machine: str | None = None
        rest: list[str] = []
        dropped_with_value = {"-qmp", "-qtest", "-qtest-log", "-display", "-incoming"}
        i = 1
        while i < len(argv):
            arg = argv[i]
            if arg in dropped_with_value:
                i += 2
                continue
            if arg in ("-S", "-nodefaults"):
                i += 1
                continue
            if arg in ("-machine", "-M") and i + 1 < len(argv):
                parts = [p for p in argv[i + 1].split(",") if not p.startswith("accel=")]
                machine = ",".join(parts)
                i += 2
                continue
            rest.append(arg)
            i += 1
        if machine is None:
            raise QemuError("the command line has no -machine")
        # -m, -smp and the devices stay in extra_args, in their order.
        return cls(machine=machine, smp=None, mem_mb=None, binary=argv[0], extra_args=tuple(rest))


def _argv_for_truth(qemu: QemuProcess) -> list[str]:
    """The command line with the scratch sockets replaced by the fixtures' placeholders."""
    out = [os.path.basename(qemu.argv[0])]
    for arg in qemu.argv[1:]:
        if arg.startswith("unix:") and "qmp.sock" in arg:
            arg = "unix:QMP.sock,server=on,wait=off"
        elif arg.startswith("unix:") and "qtest.sock" in arg:
            arg = "unix:QTEST.sock,server=on,wait=off"
        out.append(arg)
    return out


def version_of(qemu: QemuProcess) -> Version:
    """MAJOR.MINOR of a connected QEMU, from its QMP greeting."""
    return release.parse_version(qemu.version)


def _save_to_file(qemu: QemuProcess, path: Path, channel: Channel) -> None:
    if channel == "fd" and release.file_uri(version_of(qemu)):
        qemu.migrate(f"file:{path}")
        return
    if channel == "fd":
        # QEMU writes the file itself: complete once `completed` is reported, and no fork of QEMU.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            qemu.add_fd("stream", fd)
        finally:
            os.close(fd)
        qemu.migrate("fd:stream")
        return
    # QEMU reports `completed` before its cleanup closes the pipe and reaps the shell, so the
    # shell touches a marker once cat has written everything.
    done = path.with_suffix(".done")
    qemu.migrate(f"exec:cat > {shlex.quote(str(path))} && : > {shlex.quote(str(done))}")
    deadline = time.monotonic() + STREAM_WAIT_TIMEOUT
    while not done.exists():
        if time.monotonic() > deadline:
            raise QemuError("migration completed but the stream file was never finished")
        time.sleep(POLL)


def migrate_to_bytes(qemu: QemuProcess, channel: Channel = "fd") -> bytes:
    """Migrate a running QEMU into a file of its scratch folder and return the stream."""
    assert qemu.scratch is not None
    path = qemu.scratch / "stream.bin"
    _save_to_file(qemu, path, channel)
    return path.read_bytes()


def _load_from_file(qemu: QemuProcess, path: Path, channel: Channel) -> bool:
    if channel == "fd" and release.file_uri(version_of(qemu)):
        return qemu.migrate_incoming(f"file:{path}")
    if channel == "fd":
        fd = os.open(path, os.O_RDONLY)
        try:
            qemu.add_fd("stream", fd)
        finally:
            os.close(fd)
        return qemu.migrate_incoming("fd:stream")
    return qemu.migrate_incoming(f"exec:cat {shlex.quote(str(path))}")


def save_stream(
    machine: str,
    devices: Sequence[DeviceConfig],
    drive: Sequence[DriveSpec] = (),
    smp: int = 1,
    mem_mb: int = 4,
    binary: str | None = None,
    channel: Channel = "fd",
) -> tuple[bytes, dict[str, Any]]:
    """Start QEMU with `devices`, drive the ones in `drive`, migrate to a file, quit.

    Returns the stream and its ground truth: {machine, qemu_cmdline, qemu_version, devices: [...]},
    one device entry per configured device, in order (keys as in the fixture JSON; a device that
    is not driven has only section, device, transport and notes)."""
    return save(QemuConfig(machine, tuple(devices), smp, mem_mb, binary), drive, channel=channel)


def save(
    config: QemuConfig | Sequence[str], drive: Sequence[DriveSpec] = (), *, channel: Channel = "fd"
) -> tuple[bytes, dict[str, Any]]:
    """save_stream() for a QemuConfig or a full argv (a fixture's `qemu_cmdline`). With an argv,
    the truth lists the driven devices only (the devices are not known one by one)."""
    if not isinstance(config, QemuConfig):
        config = QemuConfig.from_argv(config)
    if drive and config.transport == "ccw":
        raise QemuError("virtio-ccw devices cannot be driven over qtest (a channel program needs the CPU): "
                        "they are saved in their reset state")
    by_slot = {dev.slot: dev for dev in config.devices}
    for spec in drive:
        dev = by_slot.get(spec.slot)
        if config.devices and (dev is None or dev.kind != spec.kind):
            raise QemuError(f"drive spec for {spec.kind} at slot {spec.slot:#x}: no such device configured")
    args = config.args()
    by_guest = any(spec.reset_endian is not None for spec in drive)
    if by_guest and not any(arg.startswith("loader,") for arg in args):
        args += guest.loader_args(config.target)  # vCPU 0 starts at the program that makes the guest's resets
    with QemuProcess(config.machine, args, binary=config.binary, arch=config.target, qtest=True,
                     name="save") as qemu:
        if config.transport == "mmio":
            cpu = guest.GuestCpu(qemu.qtest, qemu.qmp, config.target) if by_guest else None
            driven = drive_mmio_devices(qemu.qtest, drive, cpu)
        else:
            driven = drive_devices(qemu.qtest, drive)
        assert qemu.scratch is not None
        stream = qemu.scratch / "stream.bin"
        _save_to_file(qemu, stream, channel)
        data = stream.read_bytes()
        by_section = {t["section"]: t for t in driven}
        undriven = {"transport": config.transport, "notes": "not driven: reset state"}
        truth: dict[str, Any] = {
            "machine": config.machine,
            "qemu_cmdline": _argv_for_truth(qemu),
            "qemu_version": qemu.version,
            "devices": [
                by_section.get(dev.section) or {"section": dev.section, "device": dev.kind, **undriven}
                for dev in config.devices
            ]
            if config.devices
            else driven,
        }
    return data, truth


@dataclass(frozen=True)
class Verdict:
    """What QEMU made of a stream.

    outcome: accepted; accepted-broken (rc 0, but a device was marked broken: a `VQ ... inconsistent`
    line on stderr or `broken: true`); rejected (QEMU failed the load and exited); crashed (QEMU died
    of a signal it did not get from us).
    error: the first error line, without the `qemu-system-x86_64: ` prefix (None when accepted).
    virtio_status / virtio_queues: when the load completed on a release where x-query-virtio-status is
    safe, it and x-query-virtio-queue-status of every virtio device, keyed by its QOM path.
    devices: when the load completed, every virtio device as the destination holds it, by QOM path
    (from those queries, else from its re-save: loaded.py).
    """

    outcome: Outcome
    error: str | None
    stderr: tuple[str, ...]
    returncode: int | None
    virtio_status: dict[str, dict[str, Any]] = field(default_factory=dict)
    virtio_queues: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    devices: dict[str, LoadedDevice] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return self.outcome == "accepted"


@dataclass(frozen=True)
class Loaded:
    """A load into a running destination: whether it completed, what the destination then holds
    (x-query answers where safe), and its re-save when one was made."""

    completed: bool
    virtio_status: dict[str, dict[str, Any]] = field(default_factory=dict)
    virtio_queues: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    devices: dict[str, LoadedDevice] = field(default_factory=dict)
    resaved: bytes | None = None


# Lines QEMU writes that are neither its verdict nor an error of ours: warnings (the hub one is always
# there; deprecated machine types from 10.0) and GLib's criticals at quit (7.2 and 10.0 print
# `GLib: g_timer_elapsed: assertion 'timer != NULL' failed` on a paused VM).
_NOT_ERRORS = ("warning:", "GLib: ", "GLib-")


def _error_lines(lines: Sequence[str], prefix: str) -> list[str]:
    """QEMU's error lines without the program-name prefix; warnings and GLib's criticals dropped."""
    out = []
    for line in lines:
        text = line[len(prefix) :] if line.startswith(prefix) else line
        if text.strip() and not text.startswith(_NOT_ERRORS):
            out.append(text)
    return out


def load_stream(
    config: QemuConfig | Sequence[str], data: bytes, *, binary: str | None = None, channel: Channel = "fd"
) -> Verdict:
    """Load `data` into a QEMU started from `config` (a QemuConfig, or a full argv such as a
    fixture's or save_stream's `qemu_cmdline`) with -incoming defer, and return the verdict."""
    if not isinstance(config, QemuConfig):
        config = QemuConfig.from_argv(config)
    with QemuProcess(
        config.machine, config.args(), binary=binary or config.binary, arch=config.target, incoming=True, name="load"
    ) as qemu:
        loaded = load_into(qemu, data, channel)
    return read_verdict(qemu, loaded)


def load_into(qemu: QemuProcess, data: bytes, channel: Channel, *, resave: bool = False) -> Loaded:
    """Load `data` into a running destination; when it completed, what the destination holds, read
    with x-query-virtio where the release has it safely, else from a re-save (made anyway with `resave`)."""
    assert qemu.scratch is not None
    version = version_of(qemu)
    stream = qemu.scratch / "stream.bin"
    stream.write_bytes(data)
    if not _load_from_file(qemu, stream, channel):
        return Loaded(False)
    status: dict[str, dict[str, Any]] = {}
    queues: dict[str, list[dict[str, Any]]] = {}
    devices: dict[str, LoadedDevice] = {}
    queried = release.x_query_status_safe(version)
    if queried:
        status, queues = query_virtio(qemu)
        devices = {path: from_query(st, queues[path]) for path, st in status.items()}
    resaved = None
    if resave or not queried:
        # The incoming migration is over: QEMU may migrate out again (process.py refuses any
        # migrate() on a process started with -incoming, so it is told the load is done).
        qemu.incoming = False
        out = qemu.scratch / "resaved.bin"
        _save_to_file(qemu, out, channel)
        resaved = out.read_bytes()
        if not queried:
            devices = from_resave(resaved, qemu.argv, BASE.latest_release_at(version))
        if not queried and release.has_x_query_virtio(version):
            # 11.x: x-query-virtio-status ends QEMU, x-query-virtio-queue-status answers: the queues from it
            devices = {path: query_queues(qemu, path, dev) for path, dev in devices.items()}
    return Loaded(True, status, queues, devices, resaved)


def query_virtio(qemu: QemuProcess) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """x-query-virtio-status and x-query-virtio-queue-status of every virtio device, by QOM path
    (only on a release where they are safe: release.x_query_status_safe)."""
    status: dict[str, dict[str, Any]] = {}
    queues: dict[str, list[dict[str, Any]]] = {}
    for dev in qemu.qmp("x-query-virtio"):
        path = dev["path"]
        status[path] = qemu.qmp("x-query-virtio-status", path=path)
        queues[path] = [qemu.qmp("x-query-virtio-queue-status", path=path, queue=i)
                        for i in range(status[path].get("num-vqs", 0))]
    return status, queues


def query_queues(qemu: QemuProcess, path: str, dev: LoadedDevice) -> LoadedDevice:
    """`dev` (read from a re-save) with its queues as x-query-virtio-queue-status reports them."""
    if dev.error is not None:
        return dev
    queues = [qemu.qmp("x-query-virtio-queue-status", path=path, queue=i) for i in range(dev.num_vqs)]
    return replace(dev, queues=from_query({}, queues).queues, source=RESAVE_AND_QUEUES)


def read_verdict(qemu: QemuProcess, loaded: Loaded) -> Verdict:
    """QEMU's verdict on a load: exit code and stderr, plus the broken flags after a completed load
    (a bad guest index only marks the device broken)."""
    lines = tuple(qemu.stderr.splitlines())
    errors = _error_lines(lines, qemu.prefix)
    rc = qemu.returncode
    if loaded.completed:
        seen = (loaded.virtio_status, loaded.virtio_queues, loaded.devices)
        broken = [line for line in errors if _VQ_INCONSISTENT.match(line)]
        broken_paths = [path for path, dev in loaded.devices.items() if dev.broken]
        if broken or broken_paths:
            # the first error line, as for a rejection (a "Cannot map desc" comes before the VQ line it causes)
            error = (errors or [f"{broken_paths[0]} is marked broken"])[0]
            return Verdict("accepted-broken", error, lines, rc, *seen)
        return Verdict("accepted", None, lines, rc, *seen)
    if rc is not None and rc < 0 and not qemu.killed:
        return Verdict("crashed", errors[0] if errors else f"QEMU died of signal {-rc}", lines, rc)
    return Verdict("rejected", errors[0] if errors else f"QEMU exited with code {rc}", lines, rc)
