"""The 11.1 model against the fleet's real QEMU 11.1 (11.1.3, Debian sid).

1. Streams saved by 11.1 on pc-i440fx-11.1, pc-q35-11.1 and an older machine type (pc-i440fx-7.2), with
   virtio-net, blk, balloon and rng, untouched and driven (fresh_plan's 7.2 states): the stream decodes with
   nothing left over, realize() of its command line (models.cmdline.parse(argv, 11.1)) gives the queue sizes,
   config length and MSI-X vectors the payload shows and the host features the device's registers show, and
   save(realize, state_from_wire) equals QEMU's payload byte for byte.
2. The machine types of each target's `-machine help` are the registry's machine_types(11.1).
3. Every compat property 11.1's machine types give a modelled virtio type and property (query-machines
   compat-props) is the model's BASE.compat_values(), and no other.
4. virtio-mmio queue sizes (x-query-virtio-queue-status) on virt-11.1 and virt-11.0: hw_compat_11_0's
   x-override-queue-size.

11.1 refuses `fd:` migration to a file, so the streams go through a `file:` URI; and its x-query-virtio-status
aborts (qapi-visit-core.c visit_start_struct assertion), so host features are read from the legacy register
(low word) and the modern common config (high word), in a QEMU of their own (the reads change dfselect).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fresh_plan import plan
from hypothesis import HealthCheck, event, given, note, seed, settings
from hypothesis import strategies as st
from test_fresh_streams import payload_size_in_vmdesc
from test_model_fidelity import check_payloads, device_props, legacy_host_features

from harness.decode import stream_summary
from harness.errors import HarnessError, QemuError
from harness.fleet import FleetError, binary
from harness.qemu.backend import DeviceConfig, QemuConfig
from harness.qemu.drive import PCI_BASE_ADDRESS_0, PCI_COMMAND, PCI_COMMAND_IO, PciConfig, drive_devices
from harness.qemu.process import QemuProcess
from harness.wire.stream import Stream, decode_stream, encode_stream
from models.cmdline import DeviceLine, parse
from models.config import realize
from models.model import ACCEPTED, guest_rings, load, state_from_wire
from models.props import PROPS
from models.registry import BASE
from models.releases import V as Ver

pytestmark = pytest.mark.qemu

RELEASE = Ver("11.1")
MACHINES = ["pc-i440fx-11.1", "pc-q35-11.1", "pc-i440fx-7.2"]
FAMILIES = {"x86_64": ("pc-i440fx", "pc-q35"), "aarch64": ("virt",), "s390x": ("s390-ccw-virtio",)}
PCI_CAP_ID_VNDR = 0x09
VIRTIO_PCI_CAP_COMMON_CFG = 1
PCI_COMMAND_MEMORY = 0x2
# QEMU's abstract types that the model names by the type it reaches (hw_compat_5_2's vectors=3 on
# virtio-net-pci-base; hw_compat_9_1's x-pcie-ext-tag on every PCI device)
ALIASES = {"virtio-net-pci-base": "virtio-net-pci", "pci-device": "virtio-pci"}
MODERN_BAR = 0xE0000000  # where the high-word read maps the modern BAR (x86: free MMIO below 4 GiB)


def fleet_binary(target: str = "x86_64") -> str:
    try:
        return str(binary("11.1", target))
    except FleetError:
        pytest.skip("QEMU 11.1 of the fleet is not installed")


@pytest.fixture(scope="module")
def qemu111() -> str:
    return fleet_binary()


def qemu_config(machine: str, path: str) -> QemuConfig:
    _, devices, _ = plan("7.2")
    return QemuConfig(machine, tuple(devices), 1, 4, path)


def save111(path: str, machine: str, driven: bool) -> tuple[bytes, list[str], list[dict[str, Any]]]:
    """(stream, argv, drive truth) of the four devices on `machine`, untouched or driven as fresh_plan's 7.2."""
    cfg = qemu_config(machine, path)
    with QemuProcess(cfg.machine, cfg.args(), binary=path, qtest=True, name="save111") as q:
        truth = drive_devices(q.qtest, plan("7.2")[2]) if driven else []
        assert q.scratch is not None
        stream = q.scratch / "stream.bin"
        q.migrate(f"file:{stream}")
        return stream.read_bytes(), list(q.argv), truth


def host_features(path: str, machine: str) -> dict[int, int]:
    """Slot -> the 64-bit host features a device shows: legacy register (low word), modern device_feature
    (select 1: the high word)."""
    cfg = qemu_config(machine, path)
    out = {}
    with QemuProcess(cfg.machine, cfg.args(), binary=path, qtest=True, name="features111") as q:
        qt = q.qtest
        for dev in cfg.devices:
            pci = PciConfig(qt, dev.slot)
            io = 0xC000 + 0x100 * dev.slot
            pci.writel(PCI_BASE_ADDRESS_0, io)
            pci.writew(PCI_COMMAND, PCI_COMMAND_IO | PCI_COMMAND_MEMORY)
            lo = qt.inl(io)
            common = next(pos for pos in capabilities(pci) if pci.readb(pos) == PCI_CAP_ID_VNDR
                          and pci.readb(pos + 3) == VIRTIO_PCI_CAP_COMMON_CFG)
            bar, offset = pci.readb(common + 4), pci.readl(common + 8)
            base = MODERN_BAR + 0x100000 * dev.slot
            pci.writel(PCI_BASE_ADDRESS_0 + 4 * bar, base)
            pci.writel(PCI_BASE_ADDRESS_0 + 4 * bar + 4, 0)
            qt.writel(base + offset, 1)  # device_feature_select
            out[dev.slot] = lo | qt.readl(base + offset + 4) << 32
    return out


def capabilities(pci: PciConfig) -> Iterator[int]:
    pos = pci.readb(0x34) & 0xFC
    while pos >= 0x40:
        yield pos
        pos = pci.readb(pos + 1) & 0xFC


def lines_of(argv: list[str]) -> dict[str, DeviceLine]:
    return {line.section: line for line in parse(argv, RELEASE)}


@pytest.mark.parametrize("machine", MACHINES)
@pytest.mark.parametrize("driven", [False, True], ids=["reset", "driven"])
def test_stream_of_11_1_is_the_model_byte_for_byte(qemu111: str, machine: str, driven: bool) -> None:
    data, argv, truth = save111(qemu111, machine, driven)
    s: Stream = decode_stream(data)
    summary = stream_summary(s)
    assert summary["stream"]["not_understood"] == [] and summary["machine"] == machine
    assert [p.section for p in s.devices] == [f"0000:00:{slot:02x}.0/{kind}" for kind, slot in
                                              (("virtio-net", 3), ("virtio-blk", 4), ("virtio-balloon", 5),
                                               ("virtio-rng", 6))]
    lines = lines_of(argv)
    by_section = {t["section"]: t for t in truth}
    problems: list[str] = []
    for p in s.devices:
        r = realize(lines[p.section].config)
        where = f"11.1 {machine} {p.section}"
        assert p.size == payload_size_in_vmdesc(s, p.section), where  # decoded to the last byte QEMU described
        seen = {"queue sizes": [q.num for q in p.value.queues] if not driven else list(r.queue_sizes),
                "config_len": p.value.config_len, "vectors": p.value.transport.msix_vectors}
        model = {"queue sizes": list(r.queue_sizes), "config_len": r.config_len, "vectors": r.vectors}
        problems += [f"{where}: {k}: model {model[k]}, QEMU {v}" for k, v in seen.items() if model[k] != v]
        if p.section in by_section:  # the legacy register the driver read
            lo = by_section[p.section]["host_features_lo"]
            if lo != r.host_features & 0xFFFFFFFF:
                problems.append(f"{where}: host features (low word): model {r.host_features:#x}, QEMU {lo:#x}")
        problems += check_payloads(r, data[p.offset : p.offset + p.size], p.value, where, reset=not driven)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("machine", ["pc-i440fx-11.1", "pc-i440fx-5.2"])
def test_host_features_of_11_1(qemu111: str, machine: str) -> None:
    seen = host_features(qemu111, machine)
    cfg = qemu_config(machine, qemu111)
    model = {dev.slot: realize(line.config).host_features
             for dev, line in zip(cfg.devices, parse([qemu111, "-machine", machine, *cfg.args()], RELEASE),
                                  strict=True)}
    assert seen == model, {k: (hex(seen[k]), hex(model[k])) for k in seen if seen[k] != model[k]}


@pytest.mark.parametrize("target", list(FAMILIES))
def test_machine_types_of_11_1(target: str) -> None:
    path = fleet_binary(target)
    out = subprocess.run([path, "-machine", "help"], capture_output=True, text=True, timeout=60, check=True).stdout
    names = {line.split()[0] for line in out.splitlines()[1:] if line.strip()}
    real = sorted(n for n in names if any(n.startswith(f + "-") and n[len(f) + 1 : len(f) + 2].isdigit()
                                          for f in FAMILIES[target]))
    model = sorted(m.name for m in BASE.machine_types(RELEASE) if m.family in FAMILIES[target])
    assert real == model


def _same(model: Any, qemu: str) -> bool:
    if isinstance(model, bool):
        return qemu in (("on", "true") if model else ("off", "false"))
    return str(model) == qemu


@pytest.mark.parametrize("target", list(FAMILIES))
def test_compat_props_of_11_1_are_the_models(target: str) -> None:
    path = fleet_binary(target)
    with QemuProcess({"x86_64": "pc", "aarch64": "virt", "s390x": "s390-ccw-virtio"}[target], [], binary=path,
                     arch=target, name="compat111") as q:
        machines = {m["name"]: m.get("compat-props", []) for m in q.qmp("query-machines", **{"compat-props": True})}
    props = {p.name for p in PROPS}
    problems = []
    for m in BASE.machine_types(RELEASE):
        if m.family not in FAMILIES[target]:
            continue
        # the QOM types a device of the family's transport is made of (s390x's virtio-pci globals, such as
        # 11.1's disable-legacy=on, reach no device the model puts on s390-ccw-virtio)
        parents = BASE.type_parents
        modelled = {t for t in {*parents, *(t for ts in parents.values() for t in ts), "virtio-mmio"}
                    if not t.endswith("-pci") or m.transport == "pci"}
        modelled -= {"virtio-mmio"} if m.transport != "mmio" else set()
        real = {(ALIASES.get(c["qom-type"], c["qom-type"]), c["property"]): c["value"] for c in machines[m.name]
                if ALIASES.get(c["qom-type"], c["qom-type"]) in modelled and c["property"] in props}
        for (qom_type, prop), value in sorted(real.items()):
            got = BASE.compat_values(RELEASE, m, qom_type).get(prop, "(none)")
            if not _same(got, value):
                problems.append(f"{m}: {qom_type}.{prop}: QEMU {value}, model {got}")
        for qom_type in modelled:
            for prop, value in BASE.compat_values(RELEASE, m, qom_type).items():
                if prop in props and not any(p == prop and t in {qom_type, *BASE.type_parents.get(qom_type, ())}
                                             for t, p in real):
                    problems.append(f"{m}: the model has {qom_type}.{prop}={value}, QEMU has no such entry")
    assert not problems, "\n".join(sorted(set(problems)))


@pytest.mark.parametrize("machine", ["virt-11.1", "virt-11.0"])
def test_mmio_queue_sizes_of_11_1(machine: str) -> None:
    path = fleet_binary("aarch64")
    args = ["-cpu", "cortex-a57", "-m", "64", "-netdev", "hubport,id=nd_vnet0,hubid=0",
            "-device", "virtio-net-device,netdev=nd_vnet0,id=vnet0",
            "-blockdev", "driver=null-co,node-name=bd_vblk0,size=1048576",
            "-device", "virtio-blk-device,drive=bd_vblk0,id=vblk0"]  # fmt: skip
    with QemuProcess(machine, args, binary=path, arch="aarch64", name="mmio111") as q:
        seen = {}
        for d in q.qmp("x-query-virtio"):
            name = d["name"]
            r = realize(next(line.config for line in parse([path, "-machine", machine, *args], RELEASE)
                             if line.config.device == name))
            seen[name] = ([q.qmp("x-query-virtio-queue-status", path=d["path"], queue=i)["vring-num-default"]
                           for i in range(r.num_queues)], list(r.queue_sizes))
    assert set(seen) == {"virtio-net", "virtio-blk"} and all(real == model for real, model in seen.values()), seen


def loaded_edit(path: str, tmp_path: Path, device: str, edit: Any) -> tuple[bool, list[str], Any]:
    """An untouched pc-i440fx-11.1 stream with `edit` applied to `device`'s payload: 11.1's verdict (accepted, its
    error lines) and the model's load of the edited payload."""
    data, argv, _ = save111(path, "pc-i440fx-11.1", False)
    s = decode_stream(data)
    edit(next(x for x in s.devices if x.device == device).value)
    edited = encode_stream(s)
    (tmp_path / "edited.bin").write_bytes(edited)
    cfg = qemu_config("pc-i440fx-11.1", path)
    with QemuProcess(cfg.machine, cfg.args(), binary=path, incoming=True, name="load111") as q:
        accepted = q.migrate_incoming(f"file:{tmp_path / 'edited.bin'}")
        errors = [line for line in q.stderr_lines() if "warning" not in line]
    s = decode_stream(edited)
    p = next(x for x in s.devices if x.device == device)
    r = realize(lines_of(argv)[p.section].config)
    res = load(r, edited[p.offset : p.offset + p.size], guest_rings(s.memory, s.machine, state_from_wire(r, p.value)),
               p.section)
    return accepted, errors, res


@pytest.mark.parametrize(("device", "queue", "num"), [("virtio-net", 0, 512), ("virtio-blk", 0, 257),
                                                      ("virtio-net", 2, 256), ("virtio-rng", 0, 8)])
def test_vring_num_past_the_allocated_size(qemu111: str, tmp_path: Path, device: str, queue: int, num: int) -> None:
    """11.1 refuses a queue size above the one the device allocated ('VQ %d vring.num %d exceeds allocated max
    %d'), before any other queue check; the model's load says the same (and accepts what QEMU accepts)."""
    accepted, errors, res = loaded_edit(qemu111, tmp_path, device, lambda v: setattr(v.queues[queue], "num", num))
    assert (res.outcome == ACCEPTED) == accepted, (res.outcome, res.error, errors)
    if not accepted:
        assert res.error and errors and res.error in errors[0], (res.error, errors)


def _desc_zero(v: Any) -> None:
    v.queues[1].last_avail_idx = 5  # desc 0 (never set up) with a host index


@pytest.mark.parametrize(("edit", "message"), [(lambda v: setattr(v, "queue_sel", 1024), None),
                                               (_desc_zero, "VQ 1 address 0x0 inconsistent with Host index 0x5")],
                         ids=["queue_sel-1024", "desc-zero"])
def test_older_load_checks_hold_in_11_1(qemu111: str, tmp_path: Path, edit: Any, message: str | None) -> None:
    """Two of virtio_load's older checks, unchanged in 11.1: both fail the load, the model's with QEMU's line."""
    accepted, errors, res = loaded_edit(qemu111, tmp_path, "virtio-net", edit)
    assert not accepted and res.outcome != ACCEPTED, (res.outcome, errors)
    if message is not None:
        assert res.error == message and errors and message in errors[0], (res.error, errors)


@pytest.mark.parametrize(("machine", "modern"), [("virt-11.1", False), ("virt-11.1", True), ("virt-11.0", True),
                                                 ("virt-7.2", False), ("s390-ccw-virtio-11.1", False),
                                                 ("s390-ccw-virtio-7.2", False)])
def test_mmio_and_ccw_reset_streams_of_11_1(machine: str, modern: bool) -> None:
    """virtio-net and virtio-blk untouched on virtio-mmio (legacy and modern personality) and virtio-ccw: the
    model's save of reset_state() and of the decoded state equal 11.1's payloads (queues of 1024 on virt <= 11.0)."""
    from test_mmio_ccw import ccw_args, mmio_args

    arch = "s390x" if machine.startswith("s390") else "aarch64"
    path = fleet_binary(arch)
    args = ccw_args() if arch == "s390x" else mmio_args(modern)
    with QemuProcess(machine, args, binary=path, arch=arch, name="transport111") as q:
        assert q.scratch is not None
        q.migrate(f"file:{q.scratch / 'stream.bin'}")
        data, argv = (q.scratch / "stream.bin").read_bytes(), list(q.argv)
    s = decode_stream(data)
    assert s.notes == [] and sorted(p.device for p in s.devices) == ["virtio-blk", "virtio-net"]
    lines = lines_of(argv)
    problems = []
    for p in s.devices:
        r = realize(lines[p.section].config)
        assert [q.num for q in p.value.queues] == list(r.queue_sizes), p.section
        problems += check_payloads(r, data[p.offset : p.offset + p.size], p.value, f"{machine} {p.section}", reset=True)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("release", ["7.2", "10.0"])
def test_vring_num_past_the_allocated_size_before_11_1(release: str) -> None:
    """The same edit (virtio-blk queue 0 of 512 entries where the device has 256) loads in the fleet's 7.2 and
    10.0, as their models say: the check is 11.1's."""
    from harness.qemu.backend import load_stream, save_stream

    try:
        path = str(binary(release))
    except FleetError:
        pytest.skip(f"QEMU {release} of the fleet is not installed")
    _, devices, _ = plan("7.2")
    machine = f"pc-i440fx-{release}"
    data, truth = save_stream(machine, devices, (), binary=path)
    s = decode_stream(data)
    p = next(x for x in s.devices if x.device == "virtio-blk")
    p.value.queues[0].num = 512
    edited = encode_stream(s)
    verdict = load_stream(truth["qemu_cmdline"], edited, binary=path)
    s = decode_stream(edited)
    p = next(x for x in s.devices if x.device == "virtio-blk")
    r = realize(next(line.config for line in parse(truth["qemu_cmdline"], Ver(release)) if line.section == p.section))
    res = load(r, edited[p.offset : p.offset + p.size], guest_rings(s.memory, s.machine, state_from_wire(r, p.value)),
               p.section)
    assert (verdict.outcome, res.outcome) == (ACCEPTED, ACCEPTED), (verdict.error, res.error)


# realize decides these (DEV_NVECTORS_UNSPECIFIED, num-queues auto: QEMU shows its sentinel) or the user gives them
DECIDED_AT_REALIZE = {"vectors", "num-queues", "mac"}


@pytest.mark.parametrize("device", ["virtio-net", "virtio-blk", "virtio-balloon", "virtio-rng"])
def test_property_defaults_of_11_1(qemu111: str, device: str) -> None:
    """Every property the model gives 11.1's {device}-pci (proxy and backend) exists there with the model's default."""
    with QemuProcess("pc", [], binary=qemu111, name="props111") as q:
        real = {p["name"]: p.get("default-value") for p in q.qmp("qom-list-properties", typename=f"{device}-pci")}
    model = {**BASE.known_props(RELEASE, f"{device}-device"), **BASE.known_props(RELEASE, f"{device}-pci")}
    problems = [f"{name}: model {p.default!r}, QEMU {real.get(name, '(no such property)')!r}"
                for name, p in sorted(model.items()) if name not in DECIDED_AT_REALIZE
                and (name not in real or not _same(p.default, str(real[name]).lower()))]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("machine", ["pc-q35-11.1", "pc-q35-9.1"])
def test_express_devices_of_11_1(qemu111: str, machine: str) -> None:
    """virtio-blk and virtio-net behind PCI Express root ports (4096-byte config space, PCIe capabilities): the model's
    reset state is 11.1's payload, DEVCAP's Extended Tag bit included from 9.2 machine types (hw_compat_9_1)."""
    args = ["-m", "4", "-smp", "2", "-device", "pcie-root-port,id=rp0,bus=pcie.0,addr=0x5,chassis=1",
            "-blockdev", "driver=null-co,node-name=bd0,size=1048576",
            "-device", "virtio-blk-pci,drive=bd0,bus=rp0,id=vblk0",
            "-device", "pcie-root-port,id=rp1,bus=pcie.0,addr=0x6,chassis=2",
            "-netdev", "hubport,id=n0,hubid=0",
            "-device", "virtio-net-pci,netdev=n0,bus=rp1,id=vnet0,romfile="]  # fmt: skip
    with QemuProcess(machine, args, binary=qemu111, name="express111") as q:
        assert q.scratch is not None
        q.migrate(f"file:{q.scratch / 'stream.bin'}")
        data, argv = (q.scratch / "stream.bin").read_bytes(), list(q.argv)
    s = decode_stream(data)
    lines = lines_of(argv)
    problems = []
    for p in s.devices:
        r = realize(lines[p.section].config)
        assert r.express and len(p.value.transport.pci.config) == 4096, p.section
        problems += check_payloads(r, data[p.offset : p.offset + p.size], p.value, f"{machine} {p.section}", reset=True)
    assert len(s.devices) == 2 and not problems, "\n".join(problems)


MACHINES_11 = ["pc-i440fx-11.1", "pc-q35-11.1", "pc-i440fx-11.0", "pc-i440fx-10.2", "pc-q35-9.1", "pc-i440fx-8.2",
               "pc-i440fx-7.2", "pc-q35-6.0", "pc-i440fx-5.2"]


@st.composite
def configs_11(draw: st.DrawFn, path: str) -> QemuConfig:
    machine = draw(st.sampled_from(MACHINES_11))
    kinds = draw(st.lists(st.sampled_from(["virtio-net", "virtio-blk", "virtio-balloon", "virtio-rng"]),
                          min_size=1, max_size=3, unique=True))
    devices = tuple(DeviceConfig(kind, 3 + i, draw(device_props(kind, machine))) for i, kind in enumerate(kinds))
    iothread = any(("iothread", "io0") in d.props for d in devices)
    return QemuConfig(machine, devices, smp=draw(st.integers(1, 8)), binary=path,
                      extra_args=("-object", "iothread,id=io0") if iothread else ())


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@seed(20261205)
@given(data=st.data())
def test_realize_equals_what_11_1_shows_for_random_properties(qemu111: str, data: st.DataObject) -> None:
    """Random device properties and -smp on 11.1 and older machine types of 11.1 (test_model_fidelity's
    properties): host features (legacy register), legacy BAR, queue sizes (x-query-virtio-queue-status and the
    stream), MSI-X vectors and config length of the untouched devices, and their payloads; a configuration the
    model refuses is refused by QEMU too."""
    config = data.draw(configs_11(qemu111))
    argv = [qemu111, "-machine", f"{config.machine},accel=tcg", *config.args()]
    note(" ".join(argv))
    try:
        lines = parse(argv, RELEASE)
        realized = [realize(line.config) for line in lines]
    except HarnessError as refused:
        with pytest.raises(QemuError, match="exited with code 1"):
            with QemuProcess(config.machine, config.args(), binary=qemu111, name="refused111") as q:
                q.qmp("query-status")
        event("refused by the model and by QEMU")
        note(f"model: {refused}")
        return
    with QemuProcess(config.machine, config.args(), binary=qemu111, qtest=True, name="probe111") as q:
        assert q.scratch is not None
        q.migrate(f"file:{q.scratch / 'stream.bin'}")
        stream = (q.scratch / "stream.bin").read_bytes()
        paths = {d["path"]: d["name"] for d in q.qmp("x-query-virtio")}
        by_line = {line.section: next(p for p in paths if p.startswith(f"/machine/peripheral/{line.qdev_id}/"))
                   for line in lines}
        num_default = {section: [q.qmp("x-query-virtio-queue-status", path=path, queue=i)["vring-num-default"]
                                 for i in range(r.num_queues)]
                       for (section, path), r in zip(by_line.items(), realized, strict=True)}
        legacy = {dev.slot: legacy_host_features(q.qtest, dev.slot) for dev in config.devices}
    s = decode_stream(stream)
    payloads = {p.section: p for p in s.devices}
    problems: list[str] = []
    for dev, line, r in zip(config.devices, lines, realized, strict=True):
        where = f"{line.section} ({line.config.describe()})"
        p = payloads[line.section]
        seen: dict[str, Any] = {"legacy BAR": legacy[dev.slot] is not None,
                                "queue sizes (QMP num_default)": num_default[line.section],
                                "queue sizes (stream)": [x.num for x in p.value.queues],
                                "vectors": p.value.transport.msix_vectors, "config_len": p.value.config_len}
        model: dict[str, Any] = {"legacy BAR": r.legacy, "queue sizes (QMP num_default)": list(r.queue_sizes),
                                 "queue sizes (stream)": list(r.queue_sizes), "vectors": r.vectors,
                                 "config_len": r.config_len}
        if legacy[dev.slot] is not None:
            seen["host features (legacy register)"] = legacy[dev.slot]
            model["host features (legacy register)"] = r.host_features & 0xFFFFFFFF
        problems += [f"{where}: {k}: model {model[k]!r}, QEMU {v!r}" for k, v in seen.items() if model[k] != v]
        problems += check_payloads(r, stream[p.offset : p.offset + p.size], p.value, where, reset=True)
    event(f"compared: {len(config.devices)} device(s)")
    assert not problems, "\n".join(problems)
