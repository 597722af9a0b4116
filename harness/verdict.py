"""`virtio-compat verdict`: what a destination QEMU would do with a real stream, device by device.

The destination is a QEMU command line (`--dest`), or inferred from the stream with every inferred
value reported as an assumption. Ring indices come from the stream's own RAM pages, as for QEMU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.errors import HarnessError, UsageError
from harness.wire import scsi as wire_scsi
from harness.wire.ram import GuestMemory
from harness.wire.stream import Section, Stream, VirtioPayload
from models.cmdline import DeviceLine, parse
from models.config import Config, NetBackend, realize
from models.devices import scsi
from models.model import (
    ACCEPTED,
    ACCEPTED_BROKEN,
    CRASHED,
    REJECTED,
    UNDEFINED,
    Rejected,
    guest_rings,
    load,
    rings_big_endian,
    state_from_wire,
)
from models.registry import BASE, Registry
from models.releases import MachineType, Version
from models.rings import map_requests
from models.state import Crashed, DeviceState, Undefined
from models.transports.pci import PciConfigError

NOT_REACHED = "not-reached"


@dataclass
class Verdict:
    release: Version
    machine: str | None
    devices: list[dict[str, Any]] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)
    error: str | None = None  # a stream-level rejection (machine type, unknown section)
    states: dict[str, DeviceState] = field(default_factory=dict)  # what each device loaded, by section

    def overall(self) -> tuple[str, str | None]:
        """The whole load as QEMU reports it, and its first error line: the stream's own rejection, else the
        devices in stream order (a rejected or crashed one ends the load, a broken one goes on)."""
        if self.error:
            return REJECTED, self.error
        outcome, error = ACCEPTED, None
        for d in self.devices:
            if d["outcome"] in (REJECTED, CRASHED, UNDEFINED):
                return d["outcome"], error or d["error"]
            if d["outcome"] == ACCEPTED_BROKEN:
                outcome, error = ACCEPTED_BROKEN, error or d["error"]
        return outcome, error

    def as_json(self) -> dict[str, Any]:
        outcome, first = self.overall()
        return {"release": str(self.release), "machine": self.machine, "outcome": outcome, "first_error": first,
                "error": self.error, "devices": self.devices, "assumptions": self.assumptions}


def infer_destination(s: Stream, release: Version, assumptions: list[str], registry: Registry = BASE
                      ) -> list[DeviceLine]:
    """A destination like the source: the same machine type and devices, with the properties the
    stream shows (MSI-X vectors, queue counts, ring sizes, PCI Express, option ROMs)."""
    machine_name = s.machine
    if machine_name is None:
        raise UsageError("the stream names no machine type (no configuration section): give --dest")
    if s.machine_source == "inferred":
        assumptions.append(f"machine type {machine_name}: inferred, the stream has no configuration section")
    try:
        machine = registry.machine(machine_name)
    except ValueError as e:  # a name the stream carries, any bytes: the user's input, not a bug
        raise UsageError(f"the stream's machine type: {e}; give the destination with --dest") from None
    assumptions.append(f"destination machine type {machine} (from the stream)")
    lines = []
    blocks = set(s.memory.blocks) if s.memory else set()
    for p in s.devices:
        if p.value is None:
            raise UsageError(f"cannot infer a destination for {p.section}: its payload does not decode "
                             f"({p.error}); give the destination with --dest")
        props: dict[str, Any] = {}
        v = p.value
        netdev = NetBackend()
        express = p.transport == "pci" and p.section.count(":") > 2
        if p.transport == "pci":
            if p.value.transport.msix_vectors is not None:
                props["vectors"] = p.value.transport.msix_vectors
            dev_id = int.from_bytes(bytes(v.transport.pci.config[2:4]), "little")
            if dev_id >= 0x1040:
                props["disable-legacy"] = True
            elif express:
                props["disable-legacy"] = False
            if p.device == "virtio-net" and f"{p.section}-pci.rom" not in blocks:
                props["romfile"] = ""
        if p.device == "virtio-blk":
            props["num-queues"] = v.num_queues
            ringsize = next((x.body for x in v.subsections if x.name == "virtio/ringsize"), None)
            props["queue-size"] = ringsize.num_default[0] if ringsize is not None else v.queues[0].num
        if p.device == "virtio-net":
            pairs = max((v.num_queues - 1) // 2, 1)
            vnet = bool(v.device.has_vnet_hdr)
            if pairs > 1 or vnet:
                netdev = NetBackend("tap", vnet_hdr=vnet, ufo=bool(v.device.has_ufo), queues=pairs)
                props["mq"] = pairs > 1
            mac = ":".join(f"{b:02x}" for b in bytes(v.device.mac))
            props["mac"] = mac
            assumptions.append(f"{p.section}: -netdev {netdev.describe()}")
        devno, schid = 0, None
        if p.transport == "ccw":  # the subchannel the source gave it (devno= on its command line, or css's own)
            sch = v.transport.parent_obj.sch
            devno, schid = sch.devno, sch.migrated_schid
        try:
            device = _device_type(p, registry, release, machine, props)
            config = Config(release, machine, device, p.transport, 1, 128, props, netdev, express, devno, schid)
            if machine not in registry.machine_types(release, p.transport):
                raise ValueError(f"QEMU {release} has no machine type {machine}")
        except Exception as e:
            raise UsageError(f"cannot build a {release} destination for {p.section}: {e}") from None
        shown = ",".join(f"{k}={v}" for k, v in sorted(props.items()))
        assumptions.append(f"{p.section}: -device {device}-{p.transport}{',' + shown if shown else ''}"
                           f"{' on a pcie-root-port' if express else ''}")
        lines.append(DeviceLine(config, p.section, None, p.instance_id))
    return lines


def _device_type(p: VirtioPayload, registry: Registry, release: Version, machine: MachineType,
                 props: dict[str, Any]) -> str:
    """The device a section's vmsd stands for: itself, or (several types sharing a vmsd: virtio-input) the first
    whose config length and PCI class are the stream's (virtio-tablet and virtio-multitouch save alike)."""
    types = registry.section_devices(p.device)
    if len(types) <= 1:
        return p.device
    v = p.value
    cls = int.from_bytes(bytes(v.transport.pci.config[0x0A:0x0C]), "little") if p.transport == "pci" else None
    for d in types:
        if not d.offered(release, p.transport) or cls is not None and d.pci_class != cls:
            continue
        try:
            r = realize(Config(release, machine, d.name, p.transport, props=props), registry)
        except HarnessError:
            continue
        if r.config_len == v.config_len:
            return d.name
    raise ValueError(f"no {p.device} type of QEMU {release} saves a config of {v.config_len} bytes"
                     + (f" with PCI class {cls:#06x}" if cls is not None else ""))


def verdict(s: Stream, release: Version, dest: str | None, data: bytes | None = None,
            registry: Registry = BASE, tap: NetBackend | None = None) -> Verdict:
    """`data`: the stream's bytes, so that each payload is loaded as QEMU reads it (else as decoded); `registry`:
    the declarations the destination is judged by; `tap`: the destination host's tap offloads (cmdline.parse)."""
    out = Verdict(release, s.machine)
    lines = parse(dest, release, registry=registry, tap=tap) if dest else infer_destination(s, release, out.assumptions,
                                                                                    registry)
    by_section = {line.key: line for line in lines}
    if dest and lines and s.configuration is not None:
        local = lines[0].config.machine.name
        received = s.machine or ""
        if not local.startswith(received):  # QEMU compares over the received length only
            out.error = f"Machine type received is '{received}' and local is '{local}'"
    failed = out.error is not None
    # the SCSI disks' sections (virtio-scsi's in-flight requests) load where they are in the stream
    disks = [rec for rec in s.records if isinstance(rec, Section) and wire_scsi.is_disk_section(rec.idstr)]
    items: list[VirtioPayload | Section] = sorted([*s.devices, *disks], key=lambda x: x.offset)
    for p in items:
        entry: dict[str, Any]
        if isinstance(p, Section):
            entry = {"section": p.idstr, "outcome": NOT_REACHED, "error": None}
            out.devices.append(entry)
            if not failed:
                entry.update(_disk_verdict(s, p, lines, release))
                failed = entry["outcome"] in (REJECTED, CRASHED, UNDEFINED)
            continue
        entry = {"section": p.section, "outcome": NOT_REACHED, "error": None}
        out.devices.append(entry)
        if failed:
            continue
        line = by_section.get(p.key)
        if line is None:
            entry.update(outcome=REJECTED, error=f"Unknown savevm section or instance '{p.section}' "
                         f"{p.instance_id}. Make sure that your current VM setup matches your saved VM setup, "
                         "including any hotplugged devices")
            failed = True
            continue
        entry.update(_device_verdict(s, p, line.config, registry, data, out.states, line.qdev_id))
        failed = entry["outcome"] in (REJECTED, CRASHED, UNDEFINED)
    return out


def _disk_verdict(s: Stream, sec: Section, lines: list[DeviceLine], release: Version) -> dict[str, Any]:
    """get_scsi_requests at the destination: the disk's in-flight requests on its virtio-scsi (models/devices/scsi.py).
    Where the destination's command line has no virtio-scsi there, QEMU knows no such section."""
    prefix = wire_scsi.hba_prefix(sec.idstr)
    hba = next((line for line in lines if line.config.device == "virtio-scsi"
                and line.section.rsplit("/", 1)[0] == prefix), None)
    if hba is None:
        return {"outcome": REJECTED, "error": f"Unknown savevm section or instance '{sec.idstr}' {sec.instance_id}. "
                "Make sure that your current VM setup matches your saved VM setup, including any hotplugged devices"}
    r = realize(hba.config)
    body = sec.body if isinstance(sec.body, bytes) else b""
    memory = StreamRam(s.memory, s.machine, r.big_endian_target) if s.memory is not None else None
    try:
        _, errors = scsi.load_body(body, r, scsi.emulated_requests(release, r.config.machine), sec.idstr,
                                   (lambda req: map_requests(memory, (req,))) if memory is not None else None)
    except Crashed as e:
        return {"outcome": CRASHED, "error": str(e)}
    except Undefined as e:
        return {"outcome": UNDEFINED, "error": str(e)}
    except Rejected as e:
        return {"outcome": REJECTED, "error": str(e.lines[0])}
    return {"outcome": REJECTED, "error": errors[0]} if errors else {"outcome": ACCEPTED, "error": None}


class StreamRam:
    """The guest RAM a stream carries, as the destination's address_space_memory shows it to virtio_load: where
    the flat view has a section boundary (the end of RAM, the legacy BIOS areas of pc, 4 GiB, 2^64), a ring
    across it does not map (address_space_cache_init gives less than asked); outside RAM an index reads 0."""

    def __init__(self, memory: GuestMemory, machine: str | None, big_endian: bool) -> None:
        self.memory, self.machine, self.big = memory, machine, big_endian
        self.bounce = False
        m = machine or ""
        self.ones: list[tuple[int, int]] = []  # where a read gives all ones
        self.ram: list[tuple[int, int]] = []  # where DMA reaches RAM directly
        self.flash: list[tuple[str, int]] = []
        self.rom: list[tuple[int, int]] = []  # ... for reads only
        if m.startswith("virt"):
            ram = memory.blocks.get("mach-virt.ram")
            self.ram = [(0x40000000, 0x40000000 + (ram.used_length if ram else 0))]
            self.rom = [(0, 0x4000000), (0x4000000, 0x8000000)]
            # hw/arm/virt.c's map: two 64 MiB flash banks from 0 (RAM blocks of the stream), the PCIe MMIO window,
            # RAM from 1 GiB; high up the PCIe ECAM and MMIO windows (no device: a PCI master abort reads all ones)
            self.ones = [(0x10000000, 0x3F000000), (0x4010000000, 0x4020000000), (0x8000000000, 0x10000000000)]
            self.flash = [("virt.flash0", 0), ("virt.flash1", 0x4000000)]
            self.bounds = [0x4000000, 0x40000000, 0x40000000 + (ram.used_length if ram else 0),
                           *(b for r in self.ones for b in r)]
        elif m.startswith("s390"):
            ram = memory.blocks.get("s390.ram")
            self.bounds = [ram.used_length if ram else 0]
            self.ram = [(0, self.bounds[0])]
        else:
            ram = memory.blocks.get("pc.ram")
            size = ram.used_length if ram else 0
            limit, lowmem = (0xB0000000, 0x80000000) if "q35" in m else (0xE0000000, 0xC0000000)
            low = lowmem if size >= limit else size
            # VGA window, then the PAM blocks of the option ROM and BIOS areas (16 KiB each), then RAM's end
            self.bounds = [0xA0000, *range(0xC0000, 0x100000 + 1, 0x4000), low, 1 << 32, (1 << 32) + size - low]
            self.ram = [(0, 0xA0000), (0x100000, low), (1 << 32, (1 << 32) + size - low)]
            # the BIOS ROM just below 4 GiB (pc_system_firmware_init: pc.bios): DMA reads reach it directly
            bios = memory.blocks.get("pc.bios")
            if bios is not None:
                self.rom = [((1 << 32) - bios.used_length, 1 << 32)]
                self.bounds.append((1 << 32) - bios.used_length)
        self.bounds.append(1 << 64)

    def mappable(self, gpa: int, size: int) -> bool:
        end = gpa + size
        return end <= 1 << 64 and not any(gpa < b < end for b in self.bounds)

    def direct(self, gpa: int, size: int, write: bool) -> int:
        for lo, hi in self.ram + ([] if write else self.rom):
            if lo <= gpa < hi:
                return min(size, hi - gpa)
        return 0

    def read_u16(self, gpa: int) -> int:
        if any(lo <= gpa and gpa + 2 <= hi for lo, hi in self.ones):
            return 0xFFFF
        for block, base in self.flash:
            if base <= gpa < base + 0x4000000:
                try:
                    return int.from_bytes(self.memory.read(block, gpa - base, 2), "big" if self.big else "little")
                except KeyError:
                    return 0
        try:
            raw = self.memory.read_phys(self.machine, gpa, 2)
        except KeyError:
            return 0
        return int.from_bytes(raw, "big" if self.big else "little")


def _device_verdict(s: Stream, p: VirtioPayload, config: Config, registry: Registry, data: bytes | None = None,
                    states: dict[str, DeviceState] | None = None, qdev_id: str | None = None) -> dict[str, Any]:
    if registry.device(config.device).section != p.device or config.transport != p.transport:
        return {"outcome": REJECTED, "error": f"{p.section} is a {p.device} in the stream but a {config.device} "
                "at the destination"}
    try:
        r = realize(config, registry)
        rings = None
        sent = state_from_wire(r, p.value) if p.value is not None else None
        if sent is not None and s.memory is not None:
            rings = guest_rings(s.memory, s.machine, sent)
        if data is not None:  # the bytes QEMU reads: the payload as it is, then the rest of the stream
            payload, after = data[p.offset : p.offset + p.size], data[p.offset + p.size :]
        else:
            payload, after = p.encode(), b""
        memory = None
        if s.memory is not None:
            # legacy rings are in the target's byte order (s390x: big) or, on a bi-endian one, the loaded
            # device_endian's; VERSION_1 ones little-endian
            big = (rings_big_endian(config.machine, r.big_endian_target, sent.device_endian, sent.guest_features)
                   if sent is not None else r.big_endian_target)
            memory = StreamRam(s.memory, s.machine, big)
        vdev_id = qdev_id if config.transport == "mmio" else None  # pci's and ccw's id= is their proxy's
        res = load(r, payload, rings, p.section, p.instance_id, s.footers, p.version_id, after, memory, vdev_id)
    except PciConfigError as e:
        raise UsageError(f"{p.section}: {e}") from None
    if res.state is not None and states is not None:
        states[p.section] = res.state
    return {"outcome": res.outcome, "error": res.error if res.outcome != ACCEPTED else None}
