"""A QEMU command line, as far as it decides virtio device state: `-machine`, `-smp`, `-m`, `-netdev`,
`-blockdev`/`-drive`, `-device`. Gives one Config per virtio device, with the section idstr QEMU
will give it."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from harness.errors import UsageError
from models.config import Config, NetBackend
from models.props import proxy_type
from models.registry import BASE, Registry
from models.releases import MachineType, Version

# options that take no virtio state but an argument (skipped with it)
_IGNORED_WITH_ARG = {"-qmp", "-qtest", "-qtest-log", "-display", "-chardev", "-serial", "-monitor", "-cpu",
                     "-accel", "-name", "-uuid", "-incoming", "-bios", "-L", "-object"}


@dataclass(frozen=True)
class DeviceLine:
    config: Config
    section: str  # the idstr of its migration section (pci: exact; mmio: by order; ccw: its devno)
    qdev_id: str | None
    instance_id: int = 0  # counts devices whose idstr is the same (no transport path on old machine types)

    @property
    def key(self) -> tuple[str, int]:
        """What a stream's section is matched by: QEMU looks sections up by idstr and instance id."""
        return self.section, self.instance_id


def _opts(text: str) -> tuple[str, dict[str, str]]:
    parts = text.split(",")
    head, opts = parts[0], {}
    for p in parts[1:]:
        if "=" in p:
            k, v = p.split("=", 1)
            opts[k] = v
        elif p:
            opts[p] = "on"
    return head, opts


def _value(raw: str) -> object:
    if raw in ("on", "true", "yes"):
        return True
    if raw in ("off", "false", "no"):
        return False
    try:
        return int(raw, 0)
    except ValueError:
        return raw


def parse(argv: Sequence[str] | str, release: Version, default_machine: str | None = None,
          registry: Registry = BASE, tap: NetBackend | None = None) -> list[DeviceLine]:
    """The virtio devices of a QEMU command line, as `release` with the declarations of `registry` realizes them.
    `tap`: what the host's tap devices can do (UFO, USO: the kernel's, which QEMU probes and the command line does
    not say); by default UFO with the vnet header, no USO."""
    args = shlex.split(argv) if isinstance(argv, str) else list(argv)
    if args and not args[0].startswith("-"):
        args = args[1:]  # the program name
    machine_name, smp, mem, netdevs, devices = default_machine, 1, 128, {}, []
    globals_: dict[str, dict[str, str]] = {}
    i = 0
    while i < len(args):
        opt = args[i]
        arg = args[i + 1] if i + 1 < len(args) else None
        if opt in ("-machine", "-M"):
            if arg is None:
                raise UsageError("-machine needs a value")
            head, opts = _opts(arg)
            machine_name = opts.get("type", head) if head != "" else opts.get("type")
        elif opt == "-smp":
            smp = int(_opts(arg or "1")[0] or _opts(arg or "")[1].get("cpus", "1"))
        elif opt == "-m":
            mem = int((arg or "128").rstrip("MmGg")) * (1024 if (arg or "").upper().endswith("G") else 1)
        elif opt == "-netdev":
            head, opts = _opts(arg or "")
            vnet = head == "tap" and opts.get("vnet_hdr", "on") != "off"
            netdevs[opts.get("id", "")] = NetBackend(
                kind=head, vnet_hdr=vnet, ufo=vnet and (tap is None or tap.ufo),
                uso=vnet and tap is not None and tap.uso,
                vhost=opts.get("vhost") == "on", queues=int(opts.get("queues", "1")))
        elif opt == "-device":
            devices.append(_opts(arg or ""))
        elif opt == "-global":
            # -global DRIVER.PROP=VALUE: a property for every object of that type (and its subtypes)
            driver, _, rest = (arg or "").partition(".")
            prop, _, value = rest.partition("=")
            globals_.setdefault(driver, {})[prop] = value
        elif opt in ("-blockdev", "-drive", *_IGNORED_WITH_ARG):
            pass
        else:
            i += 1
            continue
        i += 2
    if machine_name is None:
        raise UsageError("the destination command line has no -machine")
    try:
        machine = registry.machine(_alias(machine_name, release, registry))
    except ValueError as e:
        raise UsageError(str(e)) from None
    if machine not in registry.machine_types(release):
        raise UsageError(f"QEMU {release} has no machine type {machine}")
    ports = {opts.get("id"): opts for head, opts in devices if head == "pcie-root-port"}
    out: list[DeviceLine] = []
    counters: dict[str, int] = {}
    css = _Css()
    nics_without_mac = 0
    types = {d.qom_type(t): (d, t) for d in registry.devices for t in ("pci", "mmio", "ccw")}
    for head, opts in devices:
        if head not in types:
            continue
        decl, transport = types[head]
        device = decl.name
        known = registry.known_props(release, proxy_type(device, transport)) | registry.known_props(
            release, f"{device}-device")
        if transport == "mmio":
            known |= registry.known_props(release, "virtio-mmio")
        reach = {head, f"{device}-device", *registry.type_parents.get(head, ()),
                 *registry.type_parents.get(f"{device}-device", ()),
                 {"pci": "virtio-pci", "mmio": "virtio-mmio", "ccw": "virtio-ccw"}[transport]}
        props = {k: _value(v) for d in reach for k, v in globals_.get(d, {}).items() if k in known}
        props.update({k: _value(v) for k, v in opts.items() if k in known})
        for key in ("mac", "romfile"):  # not migrated themselves, but they shape config bytes and BARs
            if key in opts:
                props[key] = opts[key]
        if device == "virtio-net" and "mac" not in opts:
            # qemu_macaddr_default_if_unset: each NIC without a MAC takes the next 52:54:00:12:34:56+n
            props["mac"] = f"52:54:00:12:34:{0x56 + nics_without_mac:02x}"
            nics_without_mac += 1
        express = opts.get("bus") in ports
        if express and "disable-legacy" in opts:
            props["disable-legacy"] = opts["disable-legacy"]
        nd = netdevs.get(opts.get("netdev", ""), NetBackend()) if device == "virtio-net" else NetBackend()
        n = counters[transport] = counters.get(transport, -1) + 1
        devno, schid = css.create_sch(head, opts.get("devno")) if transport == "ccw" else (0, None)
        try:
            config = Config(release, machine, device, transport, smp, mem, props, nd, express, devno, schid)
        except Exception as e:
            raise UsageError(f"-device {head}: {e}") from None
        dev_path = _has_dev_path(release, machine, transport, registry)
        section = _section(decl.section, transport, opts, ports, n, devno, dev_path)
        same = sum(line.section == section for line in out)  # calculate_new_instance_id
        out.append(DeviceLine(config, section, opts.get("id"), same))
    return out


def _has_dev_path(release: Version, machine: MachineType, transport: str, registry: Registry) -> bool:
    """Whether the transport puts its address before the vmsd name in the idstr: on old machine types
    virtio-mmio (format_transport_address) and the virtual css bridge (css_dev_path) leave it out, and
    same-named sections are then told apart by instance id alone."""
    if transport == "pci":
        return True
    qom_type, prop = ("virtio-mmio", "format_transport_address") if transport == "mmio" else \
        ("virtual-css-bridge", "css_dev_path")
    return bool(registry.machine_object_props(release, machine, qom_type)[prop])


class _Css:
    """css_create_sch (hw/s390x/css.c) for the virtual channel subsystem fe, subchannel set 0: each device takes
    the first free subchannel; without `devno=` the first free device number from that subchannel on."""

    def __init__(self) -> None:
        self.devnos: set[int] = set()
        self.schids: set[int] = set()

    def create_sch(self, head: str, text: str | None) -> tuple[int, int]:
        schid = next(i for i in range(0x10000) if i not in self.schids)
        if text is None:
            devno = next((schid + i) % 0xFFFF for i in range(0x10000) if (schid + i) % 0xFFFF not in self.devnos)
        else:
            devno = _css_devid(head, text)
            if devno in self.devnos:
                raise UsageError(f"-device {head}: Device fe.0.{devno:04x} already exists")
        self.schids.add(schid)
        self.devnos.add(devno)
        return devno, schid


def _css_devid(head: str, text: str) -> int:
    """`devno=CSSID.SSID.DEVNO` (hex, as set_css_devid reads it); only fe.0 is modelled."""
    parts = text.split(".")
    try:
        cssid, ssid, devno = (int(x, 16) for x in parts) if len(parts) == 3 else (None, None, None)
    except ValueError:
        cssid = ssid = devno = None
    if cssid is None or ssid is None or devno is None or not 0 <= devno <= 0xFFFF:
        raise UsageError(f"-device {head}: devno={text}: not a device number like fe.0.0007")
    if (cssid, ssid) != (0xFE, 0):
        raise UsageError(f"-device {head}: devno={text}: only the virtual channel subsystem fe, subchannel set 0, "
                         "is modelled")
    return devno


def _alias(name: str, release: Version, registry: Registry) -> str:
    """`pc`, `q35`, `virt`, `s390-ccw-virtio` stand for the release's newest machine type."""
    aliases = {"pc": "pc-i440fx", "q35": "pc-q35", "virt": "virt", "s390-ccw-virtio": "s390-ccw-virtio"}
    if name in aliases:
        family = aliases[name]
        newest = [m for m in registry.machine_types(release) if m.family == family and not m.line]
        if not newest:
            raise UsageError(f"QEMU {release} has no {name} machine type")
        return newest[-1].name
    return name


def _section(device: str, transport: str, opts: dict[str, str], ports: dict[str | None, dict[str, str]],
             n: int, devno: int, dev_path: bool) -> str:
    if transport == "pci":
        addr = int(opts.get("addr", "0").split(".")[0], 16)
        bus = opts.get("bus")
        if bus in ports:
            port_addr = int(ports[bus].get("addr", "0").split(".")[0], 16)
            return f"0000:00:{port_addr:02x}.0:{addr:02x}.0/{device}"
        return f"0000:00:{addr:02x}.0/{device}"
    if transport == "ccw":
        return f"/fe.0.{devno:04x}/{device}" if dev_path else device
    if not dev_path:
        return device
    return f"virtio-mmio@{0x0A003E00 - 0x200 * n:016x}/{device}"  # virt: the first device takes the top slot

