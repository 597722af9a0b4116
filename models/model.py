"""save() and load() of one virtio device payload, for any modelled release.

save(realized, state) gives the bytes virtio_save writes; load(realized, data, ...) replays
virtio_load's steps in QEMU's order (§4) and returns the outcome, the loaded state and a trace.
"""

from __future__ import annotations

import errno
import functools
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import construct as c

from harness.wire.ccw import VersionRefused
from harness.wire.primitives import _DECODE_ERRORS, QEMU_VM_SUBSECTION, UnknownSubsection, field_path
from harness.wire.stream import QEMU_VM_SECTION_FOOTER
from harness.wire.virtio import (
    PCI_CAP_ID_MSIX,
    VIRTIO_QUEUE_MAX,
    compiled_payload_layout,
    msix_vectors,
    payload_layout,
    pci_capabilities,
)
from models import core, declared
from models import features as F
from models import load_errors as le
from models.config import DEVICE_IDS, Config, Realized, realize
from models.devices import DEVICES, net
from models.registry import Registry
from models.releases import Version
from models.state import (
    ENDIAN_UNKNOWN,
    NO_VECTOR,
    CcwState,
    Crashed,
    DeviceState,
    MmioState,
    PciState,
    QueueState,
    Trace,
    Undefined,
)
from models.transports.ccw import VIRTUAL_CSSID, reset_tree
from models.transports.pci import PciConfigSpace, bad_config_data, virtio_pci_config_space

ACCEPTED, ACCEPTED_BROKEN, REJECTED, CRASHED = "accepted", "accepted-broken", "rejected", "crashed"
UNDEFINED = "undefined"  # the destination corrupts its memory (state.Undefined): no outcome can be predicted
MASK64 = (1 << 64) - 1
VIRTIO_CONFIG_S_NEEDS_RESET = 0x40


# --- state <-> wire tree ----------------------------------------------------------------------------


def saved_queue_count(state: DeviceState) -> int:
    """virtio_save: the index of the first queue with vring.num == 0."""
    for i, q in enumerate(state.queues):
        if q.num == 0:
            return i
    return len(state.queues)


def _pad(values: Sequence[Any], zero: Any, n: int = VIRTIO_QUEUE_MAX) -> list[Any]:
    """The first entries of a fixed 1024-entry array; FlatArray writes the rest as zeros."""
    return list(values[:n])


def _extra_state(r: Realized, s: DeviceState) -> dict[str, Any]:
    tr = r.config.transport
    if tr == "pci":
        subs = []
        p = s.pci
        known = {x.name: x for x in core.known_transport_subsections(r.release, tr)}
        if "virtio_pci/modern_state" in known and known["virtio_pci/modern_state"].needed.test(r, s) and p is not None:
            gf = (s.guest_features >> 64) & MASK64
            inner = []
            features128 = known.get("virtio_pci/modern_state/features128")
            if features128 is not None and features128.needed.test(r, s):
                inner.append({"name": features128.name, "version_id": 1,
                              "body": {"guest_features_ex": [gf & 0xFFFFFFFF, gf >> 32 & 0xFFFFFFFF]}})
            subs.append({"name": "virtio_pci/modern_state", "version_id": 1, "body": {
                "dfselect": p.dfselect, "gfselect": p.gfselect, "guest_features": list(p.modern_guest_features),
                "vqs": _pad(p.modern_queues, (0,) * 9), "subsections": inner}})
        return {"subsections": subs}
    m = s.mmio or MmioState()
    return {"subsections": [{"name": "virtio_mmio/state", "version_id": 1, "body": {
        "guest_features": list(m.modern_guest_features), "vqs": _pad(m.modern_queues, (0,) * 8)}}]}


def _core_subsections(r: Realized, s: DeviceState) -> list[dict[str, Any]]:
    nq = len(s.queues)
    bodies: dict[str, Callable[[], dict[str, Any]]] = {
        "virtio/device_endian": lambda: {"device_endian": s.device_endian},
        "virtio/128bit_features": lambda: {"guest_features_ex1": (s.guest_features >> 64) & MASK64},
        "virtio/64bit_features": lambda: {"guest_features": s.guest_features & MASK64},
        "virtio/virtqueues": lambda: {"vqs": _pad([(q.avail, q.used) for q in s.queues], (0, 0))},
        "virtio/ringsize": lambda: {"num_default": _pad(list(s.num_default or r.queue_sizes)[:nq], 0)},
        "virtio/broken": lambda: {"broken": int(s.broken)},
        "virtio/extra_state": lambda: _extra_state(r, s),
        "virtio/started": lambda: {"started": int(s.started)},
        "virtio/packed_virtqueues": lambda: {"vqs": _pad(s.packed, (0, 0, 0, 0, 0))},
        "virtio/disabled": lambda: {"disabled": int(s.disabled)},
    }
    out = []
    for sub in r.registry.known_core_subsections(r.release):
        if sub.is_needed(r, s):
            decl = r.registry.declared(sub.name)  # a schema module's (models/schema.py)
            out.append(declared.wire_entry(decl, r, s) if decl is not None else
                       {"name": sub.name, "version_id": 1, "body": bodies[sub.name]()})
    return declared.extend_entries(r, s, out)


def to_wire(r: Realized, s: DeviceState) -> dict[str, Any]:
    tr = r.config.transport
    if tr == "pci":
        p = s.pci
        if p is None:
            raise ValueError("a virtio-pci device state needs its PCI state")
        vec = msix_vectors(p.config)
        transport: dict[str, Any] = {
            "pci": {"version_id": p.version_id, "config": p.config, "irq_state": list(p.irq_state)},
            "msix_table": p.msix_table if vec else None, "msix_pba": p.msix_pba if vec else None,
            "config_vector": s.config_vector if vec else None}
    elif tr == "mmio":
        m = s.mmio or MmioState()
        transport = {"host_features_sel": m.host_features_sel, "guest_features_sel": m.guest_features_sel,
                     "guest_page_shift": m.guest_page_shift}
    else:
        if s.ccw is None:
            raise ValueError("a virtio-ccw device state needs its ccw transport state")
        transport = s.ccw.tree
    nq = saved_queue_count(s)
    queues = []
    for q in s.queues[:nq]:
        entry: dict[str, Any] = {"num": q.num, "desc": q.desc, "last_avail_idx": q.last_avail_idx}
        if tr == "mmio":
            entry["align"] = q.align
        entry["vector"] = q.vector
        queues.append(entry)
    lo = s.guest_features & 0xFFFFFFFF if s.guest_features_lo_field is None else s.guest_features_lo_field
    device = DEVICES[r.config.device].to_wire(s.device, r, s.guest_features)
    if "subsections" in device:  # a device vmsd's: its own (as schema modules version them), then those they add
        device["subsections"] = declared.extend_entries(r, s, list(device["subsections"])) + declared.device_wire(r, s)
    device.update(declared.device_values(r, s))  # device vmsd fields of schema modules
    return {
        "transport": transport, "status": s.status, "isr": s.isr, "queue_sel": s.queue_sel, "guest_features_lo": lo,
        "config_len": len(s.config), "config": s.config, "num_queues": nq, "queues": queues,
        "device": device,
        "subsections": _core_subsections(r, s),
    }


def save(r: Realized, s: DeviceState) -> bytes:
    """The payload (the vmsd field "virtio") release r writes for state s."""
    # QEMU's save, like its load, takes these layout decisions from the device itself
    net = s.device.max_queue_pairs > 1 if r.config.device == "virtio-net" else None
    blk = r.release >= Version(2, 7) and r.num_queues > 1 if r.config.device == "virtio-blk" else None
    data: bytes = compiled_payload_layout(r.config.transport, r.config.device, r.registry.wire).build(
        to_wire(r, s), net_multiqueue=net, blk_multiqueue=blk, schema_fields=declared.on_wire(r, s))
    return data


def section_version(r: Realized) -> int:
    """The version_id release r writes in the device's section header (its outer vmsd's)."""
    return r.registry.versions(r.config.device, r.release).section.version


def _sub(subs: Sequence[Any], name: str) -> Any:
    """A subsection's body; when one is repeated the last wins, as QEMU loads each in turn."""
    return next((x.body for x in reversed(subs) if x.name == name), None)


def state_from_wire(r: Realized, v: Any, rings: Sequence[tuple[int, int]] | None = None) -> DeviceState:
    """The device state a decoded payload holds (what the source had), read as release r saved it."""
    subs = {x.name: x.body for x in v.subsections}  # a repeated one: the last wins, as QEMU loads each in turn
    f64, f128 = subs.get("virtio/64bit_features"), subs.get("virtio/128bit_features")
    features = f64.guest_features if f64 is not None else v.guest_features_lo
    if f128 is not None:
        features |= f128.guest_features_ex1 << 64
    vqs = subs.get("virtio/virtqueues")
    ringsize = subs.get("virtio/ringsize")
    if ringsize is None or r.release >= core.RINGSIZE_IGNORED_FROM:
        nd = r.queue_sizes
    else:
        nd = tuple(ringsize.num_default[: len(r.queue_sizes)])
    queues = []
    for i, q in enumerate(v.queues):
        align = q.get("align")
        align = 4096 if align is None else align  # mmio migrates it: 0 is a value (no rings then)
        if vqs is not None and i < len(vqs.vqs):
            avail, used = vqs.vqs[i]
        elif q.desc:
            avail = q.desc + 16 * q.num
            used = vring_align(avail + 4 + 2 * q.num, align)
        else:
            avail = used = 0
        ai, ui = rings[i] if rings is not None and i < len(rings) else (0, 0)
        vector = q.get("vector")
        queues.append(QueueState(q.num, q.desc, avail, used, align, q.last_avail_idx,
                                 NO_VECTOR if vector is None else vector, ai, ui))
    queues += [QueueState(0)] * max(len(r.queue_sizes) - len(queues), 0)
    endian = subs.get("virtio/device_endian")

    def flag(name: str, attr: str) -> bool:
        return bool(getattr(subs.get(name), attr, 0))

    t = v.transport
    pci = mmio = ccw = None
    config_vector = NO_VECTOR
    extra = subs.get("virtio/extra_state")
    if r.config.transport == "pci":
        ms = _sub(extra.subsections, "virtio_pci/modern_state") if extra is not None else None
        pci = PciState(bytes(t.pci.config), tuple(t.pci.irq_state), bytes(t.msix_table or b""),
                       bytes(t.msix_pba or b""), t.pci.version_id,
                       ms.dfselect if ms else 0, ms.gfselect if ms else 0,
                       tuple(ms.guest_features) if ms else (0, 0), tuple(ms.vqs) if ms else ())
        config_vector = NO_VECTOR if t.config_vector is None else t.config_vector
    elif r.config.transport == "mmio":
        st = _sub(extra.subsections, "virtio_mmio/state") if extra is not None else None
        mmio = MmioState(t.host_features_sel, t.guest_features_sel, t.guest_page_shift,
                         tuple(st.guest_features) if st else (0, 0), tuple(st.vqs) if st else ())
    else:
        ccw = CcwState(t, t.tmp.config_vector)
        config_vector = t.tmp.config_vector
    packed = subs.get("virtio/packed_virtqueues")
    lo_field = None if (features & 0xFFFFFFFF) == v.guest_features_lo else v.guest_features_lo
    return DeviceState(
        status=v.status, isr=v.isr, queue_sel=v.queue_sel, guest_features=features, config=bytes(v.config),
        queues=tuple(queues), num_default=tuple(nd), config_vector=config_vector,
        device_endian=endian.device_endian if endian is not None else core.default_endian(r),
        broken=flag("virtio/broken", "broken"), started=flag("virtio/started", "started"),
        disabled=flag("virtio/disabled", "disabled"), pci=pci, mmio=mmio, ccw=ccw,
        device=DEVICES[r.config.device].from_wire(declared.without_added_fields(r.registry, v.device)),
        packed=tuple(packed.vqs) if packed else (),
        guest_features_lo_field=lo_field, extra=declared.values_from_wire(r, v))


# --- load ----------------------------------------------------------------------------------------------


class Rejected(Exception):
    """A failed load: what was printed on the way (`lines`: strings and load_errors frames, innermost first) and
    the code virtio_load returned (`err`; 0: the frames already end with the migration's own line). `outer`: how
    the section's vmsd reports it (default: its "virtio" field's get() failed)."""

    def __init__(self, lines: Sequence[Any], err: int, outer: le.Frame | None = None) -> None:
        super().__init__(str(lines[0]) if lines else "")
        self.lines = list(lines)
        self.err = err
        self.outer = outer


@dataclass(frozen=True)
class LoadResult:
    outcome: str  # accepted | accepted-broken | rejected
    error: str | None  # the first error line QEMU prints (no program-name prefix)
    lines: tuple[str, ...]
    state: DeviceState | None
    trace: Trace = field(default_factory=Trace)


def _fail(lines: Sequence[Any], err: int = errno.EPERM, outer: le.Frame | None = None) -> Rejected:
    return Rejected(lines, err, outer)


def _desync(e: BaseException, idstr: str) -> Rejected:
    """QEMU reads on past its section; what it meets there decides its message: say what we know."""
    where = field_path(getattr(e, "path", "") or "", "virtio")
    return _fail([f"stream ends or desynchronizes while loading {where} of {idstr}"], errno.EIO)


def _unknown_subsection(e: UnknownSubsection, release: Version) -> Rejected:
    """vmstate_subsection_load: the exact lookup fails, -ENOENT (10.2 also names it and its parent)."""
    return _unknown(e.name, e.parent or e.name.split("/")[0], release)


# virtio-ccw's nested vmsds: the struct field whose vmstate_load_state fails when a subsection of theirs does
_CCW_FIELD_OF = {"s390_subch_dev": "s390_ccw_dev:sch", "s390_adapter_info": "s390_adapter_routes:adapter"}


def _unknown(name: str, parent: str, release: Version) -> Rejected:
    return _fail([le.NoSubsection(name, parent), *_enclosing(parent)], errno.ENOENT)


def _enclosing(parent: str) -> list[le.Frame]:
    """The frames between a failure inside vmsd `parent` and virtio_load's report of it."""
    if parent in core.EXTRA_STATE_PARENTS:  # the extra_state field's get failed (verified on 7.2 and 11.1)
        return [le.Printed(), le.FieldFailed("virtio/extra_state", "extra_state", "virtqueue_extra_state"),
                le.InSubsection("virtio/extra_state", "virtio"), le.Printed()]
    if parent in _CCW_FIELD_OF:  # verified on 7.2
        vmsd, name = _CCW_FIELD_OF[parent].split(":")
        return [le.FieldFailed(vmsd, name, None), le.Printed()]
    return [le.Printed()]


def _refused(name: str, version_id: int, local: int, minimum: int) -> list[le.Frame]:
    """vmstate_load_state's refusal of a subsection's incoming version, up to the report of it."""
    parent = name.split("/")[0]  # QEMU names a subsection "<parent vmsd>/<name>"
    return [le.VersionRefused(name, version_id, local, minimum), le.InSubsection(name, parent), *_enclosing(parent)]


def _rendered(r: Realized, e: Rejected, idstr: str, instance_id: int) -> list[str]:
    if e.err == 0:
        return le.render(e.lines, r.release)
    outer = e.outer or le.FieldFailed(r.config.device, "virtio", "virtio", -e.err)
    return le.section_failed([*e.lines, outer], r.release, e.err, instance_id, idstr)


class GuestRam(Protocol):
    """Guest memory as the destination's virtio_load reaches it (address_space_memory)."""

    def read_u16(self, gpa: int) -> int: ...

    def mappable(self, gpa: int, size: int) -> bool:
        """address_space_cache_init maps all of [gpa, gpa + size): it lies inside one section of the memory map."""
        ...

    bounce: bool  # address_space_map's one bounce buffer is lent out

    def direct(self, gpa: int, size: int, write: bool) -> int:
        """How many bytes from gpa (at most size) address_space_map reaches directly in RAM (0: not RAM)."""
        ...


def load(r: Realized, data: bytes, rings: Sequence[tuple[int, int]] | None = None, idstr: str = "",
         instance_id: int = 0, footer: bool = True, version_id: int | None = None, after: bytes = b"",
         memory: GuestRam | None = None, vdev_id: str | None = None) -> LoadResult:
    """Replay release r's virtio_load over `data` (one payload); `rings` gives each queue's
    (avail idx, used idx) in guest RAM, as the destination would read them; `version_id` is the section
    header's (None: the destination's own). `after`: the stream's bytes after the payload (its section footer
    first), which QEMU reads on into when the payload's counts say so. `memory`: guest RAM, where the ring
    indices are read at the addresses the load leaves (in place of `rings`). `vdev_id`: the virtio device's own
    id= (mmio's -device virtio-*-device carries it; pci's and ccw's is their proxy's), which messages name."""
    trace = Trace()
    idstr = idstr or f"{r.config.device}"
    try:
        _check_section_version(r, idstr, instance_id, version_id)
        state, broken_lines = _load(r, data, rings, trace, idstr, footer, after, memory, vdev_id)
    except Crashed as e:
        trace.steps.append(f"crashed: {e}")
        return LoadResult(CRASHED, str(e), (str(e),), None, trace)
    except Undefined as e:
        trace.steps.append(f"undefined: {e}")
        return LoadResult(UNDEFINED, str(e), (str(e),), None, trace)
    except Rejected as e:
        lines = _rendered(r, e, idstr, instance_id)
        trace.steps.append("rejected: " + (lines[0] if lines else ""))
        return LoadResult(REJECTED, lines[0] if lines else None, tuple(lines), None, trace)
    outcome = ACCEPTED_BROKEN if state.broken else ACCEPTED
    return LoadResult(outcome, broken_lines[0] if broken_lines else None, tuple(broken_lines), state, trace)


def _check_section_version(r: Realized, idstr: str, instance_id: int, version_id: int | None) -> None:
    """qemu_loadvm_section_start_full, then vmstate_load_state of the outer vmsd (verified on 7.2)."""
    local = r.registry.versions(r.config.device, r.release).section
    if version_id is not None and version_id > local.version:
        said = f"unsupported version {version_id} for '{idstr}' v{local.version}"  # error_setg from 10.2
        lines = [f"savevm: {said}"] if r.release < le.CHAIN_FROM else []
        raise _fail(le.migration_failed(lines, r.release, said), 0)
    if version_id is not None and version_id < local.minimum:
        raise _fail([], errno.EINVAL, le.VersionRefused(local.name, version_id, local.version, local.minimum))


def _load(r: Realized, data: bytes, rings: Sequence[tuple[int, int]] | None, trace: Trace, idstr: str,
          footer: bool, after: bytes = b"", memory: GuestRam | None = None, vdev_id: str | None = None
          ) -> tuple[DeviceState, list[str]]:
    release, tr, dev = r.release, r.config.transport, DEVICES[r.config.device]
    reg = r.registry
    layout = payload_layout(tr, r.config.device, reg.wire)
    subcons = {sc.name: sc for sc in layout.subcons}
    stream = _Tail(data + after)
    local_pairs = max(r.config.netdev.queues, 1) if r.config.device == "virtio-net" else 1
    blk_index = r.release >= Version(2, 7) and r.num_queues > 1
    # virtio_load reads the device vmsd with the local outer version_id, whatever the section header said
    versions = reg.versions(r.config.device, release)
    fields = declared.on_wire(r, reset_state(r), versions.section.version, loading=True)
    ctx = c.Container(_params=c.Container(net_multiqueue=local_pairs > 1, blk_multiqueue=blk_index,
                                          schema_fields=fields),
                      _parsing=True, _building=False, _sizing=False, _io=stream, _index=None)
    ctx._root = ctx
    v = c.Container()

    # fast path: one compiled parse of the whole payload; the steps below then read from it. Only a
    # payload that does not parse is read step by step, so that the checks before the bad bytes win.
    full = None
    try:
        fs = io.BytesIO(data + after)  # what QEMU reads: a subsection name past the payload's end included
        full = compiled_payload_layout(tr, r.config.device, reg.wire).parse_stream(fs, **ctx._params)
        full_end = fs.tell()
    except _DECODE_ERRORS:
        full = None

    def read(name: str, sc: Any = None, path: str | None = None) -> Any:
        if full is not None:
            value = full[name] if sc is None else full["queues"][ctx._index]
            if sc is None:
                v[name] = ctx[name] = value
            return value
        try:
            value = (sc or subcons[name])._parsereport(stream, ctx, f"(parsing) -> {path or name}")
        except VersionRefused as e:
            raise _fail(_refused(e.name, e.version_id, 1, 1), errno.EINVAL) from None
        except UnknownSubsection as e:
            raise _unknown_subsection(e, release) from None
        except _DECODE_ERRORS as e:
            raise _desync(e, idstr) from None
        if sc is None:
            v[name] = ctx[name] = value
        return value

    trace.steps.append("device_endian := unknown")
    # step 2: transport config
    t = read("transport")
    trace.steps.append("transport config")
    if tr == "pci":
        _pci_checks(r, t, trace)
    elif tr == "ccw":
        _ccw_checks(r, t)
    # step 3: core fields
    for name in ("status", "isr", "queue_sel", "guest_features_lo"):
        read(name)
    if v.queue_sel >= VIRTIO_QUEUE_MAX and reg.check("queue_sel", release):
        raise _fail([])  # returns -1 without a message
    early = reg.check("features_early", release)
    if early and v.guest_features_lo & ~r.host_features & 0xFFFFFFFF:
        raise _fail([early.message.format(features=v.guest_features_lo, host=r.host_features & 0xFFFFFFFF)])
    trace.steps.append("core fields; guest features := 32-bit field")
    # step 4: config
    read("config_len")
    if reg.check("config_len", release) and v.config_len != r.config_len:
        raise _fail([f"Unexpected config length {v.config_len:#x}, expected {r.config_len:#x}"])
    if full is None and v.config_len > stream.left():
        # the excess is skipped a byte at a time: past the end of the file each read gives 0 and sets its error
        ctx.config = v.config = stream.read(stream.left())
        stream.eof = True
    else:
        read("config")
    # step 5: queue count
    num = read("num_queues")
    limit = core.queue_limit(release)
    if num > limit:
        chk = reg.check("num_queues", release) or reg.check("num_queues_pci", release)
        assert chk is not None
        raise _fail([chk.message.format(num=num)])
    pre_load = getattr(dev, "pre_load_queues", None)
    if pre_load is not None:
        pre_load(r, num)
    # step 7: queues
    queue_sc = subcons["queues"].subcon.subcon  # Renamed(Array(element))
    queues = []
    vring_num = reg.check("vring_num", release)
    allocated = getattr(DEVICES[r.config.device], "allocated_sizes", None)
    sizes = list(allocated(r, num) if allocated else r.queue_sizes)
    for i in range(num):
        ctx._index = i
        q = read("queue", queue_sc, f"queues[{i}]")
        limit_i = sizes[i] if i < len(sizes) else 0  # a queue the device does not have: 0
        if vring_num is not None and q.num > limit_i:
            raise _fail([vring_num.message.format(i=i, num=q.num, max=limit_i)], errno.EINVAL)
        if q.desc == 0 and q.last_avail_idx != 0:
            chk = reg.check("desc_zero", release)
            assert chk is not None
            raise _fail([chk.message.format(i=i, last=q.last_avail_idx)], errno.EPERM)
        vec = q.get("vector")
        if tr == "pci" and vec is not None and vec != NO_VECTOR and vec >= t.msix_vectors:
            if reg.check("msix_vector", release):
                raise _fail([], errno.EINVAL)
            if release >= VECTOR_QUEUES_FROM:
                # before 7.2 virtio_pci_load_queue sets the vector first: virtio_queue_set_vector links the queue into
                # vdev->vector_queues[vec], past its end (5.2's source; the 5.2 binary dies or rejects by the value)
                raise Undefined(f"virtio_queue_set_vector writes vdev->vector_queues[{vec:#x}] past its "
                                f"{t.msix_vectors} entries (a heap overflow)")
        queues.append(q)
    if stream.eof and reg.check("file_error_after_queues", release):
        raise _fail([], errno.EIO)
    if tr == "pci":
        _notify_no_vector(bytes(t.pci.config))
    v.queues = ctx.queues = c.ListContainer(queues)
    trace.steps.append(f"{num} queues")
    # step 9: device data (it sees only the 32-bit features; endianness still unknown)
    if versions.device is not None:
        _check_vmsd_version(versions.device, versions.section.version)
    check_field = getattr(dev, "check_field", None)
    eof_before_device = stream.eof
    if full is None and (check_field is not None or stream.eof or versions.device is not None):
        # field by field, so that a check QEMU makes on a field wins over the bad bytes after it, and a field
        # read past the end of the file is the one QEMU names
        device_sc = subcons["device"].subcon
        dctx = c.Container(_=ctx, _params=ctx._params, _root=ctx, _parsing=True, _building=False, _sizing=False,
                           _io=stream, _index=None)
        dv = c.Container()
        vmsd_fields = getattr(dev, "VMSD_FIELDS", {})
        for sc in device_sc.subcons:
            if sc.name == "mac_table_macs":
                _check_mac_table(dctx.mac_table_in_use, stream.left(), release)
            try:
                value = sc._parsereport(stream, dctx, f"(parsing) -> device -> {sc.name}")
            except UnknownSubsection as e:
                raise _unknown_subsection(e, release) from None
            except _DECODE_ERRORS as e:
                raise _desync(e, idstr) from None
            if stream.eof and sc.name in vmsd_fields:  # vmstate_load_state checks the file after each field
                raise _fail([le.StreamError(*vmsd_fields[sc.name].split(":")), le.Printed()], errno.EIO)
            if sc.name:
                dv[sc.name] = dctx[sc.name] = value
                if check_field is not None and (lines := check_field(sc.name, value, r)):
                    raise _fail(lines, errno.EINVAL)
        v["device"] = ctx["device"] = dv
    else:
        read("device")
        if "mac_table_in_use" in v.device:  # the layout skips nothing from 2^31, as 7.2 to 10.x do
            _check_mac_table(v.device.mac_table_in_use, len(data) + len(after), release)
        if check_field is not None:
            for name, value in v.device.items():
                if not name.startswith("_") and (lines := check_field(name, value, r)):
                    raise _fail(lines, errno.EINVAL)
    trace.steps.append("device data and device subsections")
    if r.config.device == "virtio-net" and release >= Version(2, 4):
        trace.early_reads.append("virtio-net post_load reads VERSION_1 from the 32-bit features before "
                                 "virtio/64bit_features loads (recomputed by set_features at the feature step)")
    # vmstate_subsection_load stops quietly at a name without the vmsd's prefix: there the loaders of the core
    # subsections and of the outer vmsd stop too, and the section ends early (Missing section footer, below)
    stopped = _stop_at_unprefixed(v.device, f"{r.config.device}-device")
    _check_unknown(dev, v.device, r)
    # step 10: core subsections
    read("subsections")
    if stopped:
        v.subsections = ctx.subsections = c.ListContainer()
    if release < Version(2, 1) and v.subsections:
        # no core subsection loader: the main loop reads the 0x05 as a section type
        raise _fail(["Unknown savevm section type 5", f"load of migration failed: {os.strerror(errno.EINVAL)}"], 0)
    _check_versions(v, r)
    known = {s.name for s in reg.known_core_subsections(release)}
    for sub in v.subsections:
        if sub.name not in known:
            raise _unknown(sub.name, "virtio", release)  # vmstate_subsection_load: exact lookup fails, -ENOENT
    for extra in (x.body for x in v.subsections if x.name == "virtio/extra_state"):
        _check_transport_subsections(extra, release, tr)
    end = full_end if full is not None else stream.tell()
    trace.steps.append("core subsections: " + ", ".join(s.name for s in v.subsections))
    src = state_from_wire(r, v, rings)
    lines = []
    if r.config.device == "virtio-blk":
        # request by request, as virtio_blk_load_device reads them: its queue index, its element (asserts on the
        # counts), then virtqueue_map
        reqs = src.device.requests
        for k, req in enumerate(reqs):
            if stream.eof and not eof_before_device and k == len(reqs) - 1:
                # its element ran past the end of the file: qemu_get_buffer gave it no bytes (seen on 7.2.22), so
                # the asserts see no counts from the stream; the load ends on the file's error
                raise _fail([], errno.EIO)
            one = replace(src.device, requests=(req,))
            if dev.load_device(one, r, v.guest_features_lo, lines) is None or lines:
                raise _fail(lines, errno.EINVAL)
            if memory is not None:
                _map_requests(memory, (req,))
    device_state = dev.load_device(src.device, r, v.guest_features_lo, lines)
    if lines:  # a device check failed
        raise _fail(lines, errno.EINVAL)
    # step 11: endianness
    endian = _sub(v.subsections, "virtio/device_endian")
    sent = endian.device_endian if endian is not None else ENDIAN_UNKNOWN
    # still unknown after the subsections (absent, or sent as 0): the target's default
    device_endian = sent if sent != ENDIAN_UNKNOWN else core.default_endian(r)
    trace.steps.append(f"device_endian := {device_endian} ({'subsection' if sent else 'default'})")
    # step 12: features
    features = _sanitize_features(r, v, src.guest_features)
    trace.steps.append(f"guest features := {features:#x}")
    set_features = getattr(dev, "set_features", None)
    if set_features is not None:  # the device's set_features runs on what the device data loaded
        device_state = set_features(device_state, release, src.guest_features, features)
    crash = getattr(dev, "change_num_queues_crash", None)
    if crash is not None:  # queues the stream does not carry keep the sizes realize gave them
        line = crash(release, [q.num for q in src.queues[:num]] + list(r.queue_sizes[num:]))
        if line is not None:
            raise Crashed(line)
    # step 14: ring checks
    broken = src.broken
    broken_lines: list[str] = []
    loaded_queues = list(src.queues)
    migrated_rings = _sub(v.subsections, "virtio/virtqueues") is not None
    for i, q in enumerate(loaded_queues[:num]):
        if not q.desc:
            continue
        if F.has(features, F.VERSION_1) or (i >= r.num_queues and tr != "mmio"):
            # with VERSION_1 the addresses come from virtio/virtqueues (else they keep their reset 0);
            # virtio_queue_update_rings does nothing for a queue the device never added (align 0)
            avail, used = (q.avail, q.used) if migrated_rings else (0, 0)
        else:  # virtio_queue_update_rings: the legacy layout from desc
            avail = q.desc + 16 * q.num
            used = vring_align(avail + 4 + 2 * q.num, q.align)
        ai, ui = q.avail_idx, q.used_idx
        if memory is not None and not F.has(features, F.RING_PACKED):
            cached = F.has(features, F.VERSION_1) or (i < r.num_queues or tr == "mmio") and q.num and q.align
            ai, ui, lines = (_ring_indices(memory, q.num, q.desc, avail, used, features, _printable(r, idstr, vdev_id))
                             if cached else (0, 0, []))
            if lines:
                broken, broken_lines = True, broken_lines + lines
        if F.has(features, F.RING_PACKED):
            loaded_queues[i] = replace(q, avail=avail, used=used)
            continue
        nheads = (ai - q.last_avail_idx) & 0xFFFF
        chk = reg.check("avail_idx", release) or reg.check("avail_idx_broken", release)
        if nheads > q.num and chk is not None:  # None: the release only logs it
            line = chk.message.format(i=i, num=q.num, avail=ai, last=q.last_avail_idx, delta=nheads)
            if chk.fatal:
                raise _fail([line])
            broken, broken_lines = True, broken_lines + [line]
            loaded_queues[i] = replace(q, avail=avail, used=used, used_idx=0)
            continue
        chk = reg.check("inuse", release) or reg.check("inuse_modular", release)
        if chk is not None:
            inuse = (q.last_avail_idx - ui) & (0xFFFF if chk.name == "inuse_modular" else 0xFFFFFFFF)
            if inuse > q.num:
                raise _fail([chk.message.format(i=i, num=q.num, last=q.last_avail_idx, used=ui)])
        loaded_queues[i] = replace(q, avail=avail, used=used)
    trace.steps.append("ring checks" + (" (device marked broken)" if broken and broken_lines else ""))
    status = src.status
    if broken_lines and F.has(features, F.VERSION_1):
        status |= VIRTIO_CONFIG_S_NEEDS_RESET  # virtio_error on a modern device
    if stream.eof:  # virtio_load ran on with zeros; the "virtio" field's get then finds the file's error
        raise _fail(broken_lines, errno.EIO, le.StreamError(r.config.device, "virtio"))
    first = None
    if after and not stopped:
        first = _footer_error(data + after, end, idstr, footer, after, end != len(data))
    elif stopped or end != len(data):
        # qemu_loadvm_section_start_full checks the footer once virtio_load is done; the bytes left are not one
        first = (f"Missing section footer for {idstr}" if footer else
                 f"Unknown savevm section type {stopped or data[end]}")
    if first is not None:
        raise _fail(_section_end_failed(broken_lines, first, after, release), 0)
    config = src.config[: r.config_len] + bytes(max(r.config_len - len(src.config), 0))
    state = replace(src, status=status, guest_features=features, device_endian=device_endian,
                    queues=tuple(loaded_queues),
                    config=config, broken=broken, device=device_state, guest_features_lo_field=None)
    trace.steps.append("post_load")
    return state, broken_lines


class _Tail(io.BytesIO):
    """The payload and the rest of the stream as QEMUFile reads them: past the end of the file a read gives
    zeros and sets the file's error (`eof`), which vmstate_load_state checks after each field."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.size = len(data)
        self.eof = False

    def left(self) -> int:
        return max(self.size - self.tell(), 0)

    def read(self, n: int | None = -1) -> bytes:
        got = super().read(n)
        if n is not None and 0 <= n and len(got) < n:
            if n - len(got) > 1 << 24:
                return got  # construct reports it (the callers bound what QEMU would read of this)
            self.eof = True
            got += bytes(n - len(got))
        return got


TARGET_PAGE_SIZE = 4096


def _map_requests(memory: GuestRam, requests: Sequence[Any]) -> None:
    """qemu_get_virtqueue_element maps each in-flight request (virtqueue_map: in_sg, then out_sg) with
    dma_memory_map; a buffer it cannot map whole makes QEMU exit(1). Outside RAM address_space_map lends its one
    bounce buffer (a page at most), which a load never gives back (`memory.bounce`)."""
    for req in requests:
        for sg, write in ((req.in_sg, True), (req.out_sg, False)):
            for addr, length in sg:
                direct = memory.direct(addr, length, write) if length else 0
                if length and not direct and not memory.bounce:
                    memory.bounce, direct = True, min(length, TARGET_PAGE_SIZE)
                if not direct:
                    raise Rejected(["virtio: error trying to map MMIO memory"], 0)
                if direct < length:
                    raise Rejected(["virtio: unexpected memory split"], 0)


def _ring_indices(memory: GuestRam, num: int, desc: int, avail: int, used: int, features: int, device: str | None
                  ) -> tuple[int, int, list[str]]:
    """virtio_init_region_cache, then vring_avail_idx / vring_used_idx: (avail idx, used idx, virtio_error lines).
    A ring that does not map leaves no caches, and both indices read as 0. `device`: how 10.2 on names the device
    (None: the release says "Cannot map <ring>")."""
    event = 2 if F.has(features, F.RING_EVENT_IDX) else 0
    for name, addr, size in (("desc", desc, 16 * num), ("used", used, 4 + 8 * num + event),
                             ("avail", avail, 4 + 2 * num + event)):
        if not memory.mappable(addr, size):
            return 0, 0, [f"Cannot map {name}" if device is None else _MAP_FAILED[name].format(device=device)]
    return memory.read_u16(avail + 2), memory.read_u16(used + 2), []


# virtio_init_region_cache from 10.2 (virtio: improve virtqueue mapping error messages; "avalaible" sic)
_MAP_FAILED = {
    "desc": "Failed to map descriptor ring for device {device}: invalid guest physical address or corrupted queue "
            "setup",
    "used": "Failed to map used ring for device {device}: possible guest misconfiguration or insufficient memory",
    "avail": "Failed to map avalaible ring for device {device}: possible queue misconfiguration or overlapping memory "
             "region",
}
_BUS_TYPE = {"pci": "virtio-pci-bus", "mmio": "virtio-mmio-bus", "ccw": "virtio-ccw-bus"}


def _printable(r: Realized, idstr: str, vdev_id: str | None) -> str | None:
    """qdev_get_printable_name of the virtio device: its id= if it has one (mmio), else its proxy's dev path, the
    path part of the section's idstr; from 11.0 after its bus type (the 11.1 binary on pci and mmio; ccw and
    11.0 UNVERIFIED)."""
    if r.release < le.CHAIN_FROM:
        return None
    if vdev_id:
        return vdev_id
    path = idstr.rpartition("/")[0] or "<unknown device>"
    return f"{_BUS_TYPE[r.config.transport]} device {path}" if r.release >= le.BOOL_FROM else path


def _check_mac_table(in_use: int, left: int, release: Version) -> None:
    """The MAC table (or the excess skipped) is read up to the end of the file (`left` bytes): a count from 2^31
    skips nothing up to 10.x (an int element count), from 11.0 it runs off too (net.in_use_unsigned)."""
    if (in_use < 1 << 31 or net.in_use_unsigned(release)) and in_use * 6 > left:
        unused = in_use > net.MAC_TABLE_ENTRIES
        raise _fail([le.StreamError("virtio-net-device", "unused" if unused else "mac_table.macs"), le.Printed()],
                    errno.EIO)


def _section_end_failed(printed: list[str], first: str, after: bytes, release: Version) -> list[str]:
    """What the release prints when the section does not end where virtio_load stopped: check_section_footer's
    line (from 10.2 the main loop's "Unknown section type" is an Error of the migration's line instead)."""
    if first.startswith("Unknown savevm section type") and release >= le.CHAIN_FROM:
        return le.migration_failed(printed, release, first.replace("savevm section", "section"))
    if after[:1] != bytes([QEMU_VM_SECTION_FOOTER]) and release >= le.CHAIN_FROM:
        return [*printed, first]  # the migration's line names the section id, which a lone payload does not give
    said = f"Section footer error, section_id: {int.from_bytes(after[1:5], 'big')}"
    return le.migration_failed([*printed, first], release, said)


def _footer_error(buf: bytes, end: int, idstr: str, footer: bool, after: bytes, moved: bool) -> str | None:
    """check_section_footer where virtio_load stopped reading (`end`, in the payload and the bytes after it)."""
    if not footer:
        return f"Unknown savevm section type {buf[end] if end < len(buf) else 0}" if moved else None
    if end >= len(buf):
        return f"check_section_footer: Read section footer failed: {-errno.EIO}"
    if buf[end] != QEMU_VM_SECTION_FOOTER:
        return f"Missing section footer for {idstr}"
    read = int.from_bytes(buf[end + 1 : end + 5], "big")
    expected = int.from_bytes(after[1:5], "big") if after[:1] == bytes([QEMU_VM_SECTION_FOOTER]) else read
    if read != expected:
        return f"Mismatched section id in footer for {idstr} - read {read:#x} expected {expected:#x}"
    return None


def local_config_space(r: Realized) -> PciConfigSpace:
    """The destination's PCI config space and masks (models/transports/pci.py)."""
    return _local_config_space(r.config, r.registry)


@functools.lru_cache(maxsize=1024)
def _local_config_space(config: Config, registry: Registry) -> PciConfigSpace:
    r = realize(config, registry)
    props = dict(r.props)
    props["vectors"] = r.vectors
    romfile = props.get("romfile", "efi-virtio.rom" if r.config.device == "virtio-net" else "")
    if romfile and "romsize" not in props:
        props["romsize"] = rom_bar_size(str(romfile))
    return virtio_pci_config_space(r.config.device, props, express=r.express, config_len=r.config_len)


def _pci_checks(r: Realized, t: Any, trace: Trace) -> None:
    version = t.pci.version_id
    if not 0 <= version <= 2:  # VMSTATE_INT32_POSITIVE_LE against the local PCIDevice version
        raise _fail([f"Invalid value {version} expecting positive value <= 2", *_pci_field("version_id", "int32 le")],
                    errno.EINVAL)
    # vmstate_pci_device loads config (checked as it loads) before irq_state
    local = local_config_space(r)
    if local is not None:
        bad = bad_config_data(local, bytes(t.pci.config))
        if bad:
            raise _fail([bad, *_pci_field("config", "pci config")], errno.EINVAL)
    for irq in t.pci.irq_state:
        if irq not in (0, 1):
            raise _fail([f"irq state {irq}: must be 0 or 1.", *_pci_field("irq_state", "pci irq state")],
                        errno.EINVAL)
    if t.msix_vectors != r.vectors and local is None:
        # the MSI-X capability's table size is read-only: a count mismatch is a config mismatch
        raise _fail([f"get_pci_config_device: Bad config data: MSI-X table size {t.msix_vectors} != {r.vectors}",
                     *_pci_field("config", "pci config")], errno.EINVAL)
    config_vector_checked = r.registry.check("msix_vector", r.release) or r.registry.check("msix_vector_use",
                                                                                            r.release)
    if config_vector_checked and t.config_vector is not None:
        if t.config_vector != NO_VECTOR and t.config_vector >= t.msix_vectors:
            raise _fail([], errno.EINVAL)
    trace.steps.append("PCI config checked against the local read-only bits")


VECTOR_QUEUES_FROM = Version(2, 5)  # virtio: the per-vector queue lists (release UNVERIFIED; 5.2 has them)
PCI_INTERRUPT_PIN = 0x3D
PCI_NUM_PINS = 4


def _notify_no_vector(config: bytes) -> None:
    """virtio_load's virtio_notify_vector(vdev, VIRTIO_NO_VECTOR), after the queues: without MSI-X enabled,
    virtio_pci_notify sets INTx, and pci_irq_handler asserts on the pin the loaded config holds (no config check
    covers it). The 7.2, 10.0 and 11.1 binaries abort on a pin outside 1..4 (found by `virtio-compat mutate`)."""
    cap = pci_capabilities(config).get(PCI_CAP_ID_MSIX)
    if cap is not None and len(config) > cap + 3 and config[cap + 3] & 0x80:  # MSI-X enable: no INTx
        return
    if not 0 <= config[PCI_INTERRUPT_PIN] - 1 < PCI_NUM_PINS:
        raise Crashed("pci_irq_handler: Assertion `0 <= irq_num && irq_num < PCI_NUM_PINS' failed.")


def _pci_field(name: str, info: str) -> list[le.Frame]:
    """A field of vmstate_pci_device failed: pci_device_load reports it (from 10.2, error_report_err)."""
    return [le.FieldFailed("PCIDevice", name, info), le.Printed()]


MAX_ISC = 7  # include/hw/s390x/ioinst.h


def _ccw_checks(r: Realized, t: Any) -> None:
    """vmstate_subch_dev's _EQUAL fields: the subchannel must be the destination's own (hw/s390x/css.c); from
    11.1 the device's post_load refuses an interruption subclass past MAX_ISC (the 11.1 binary: 8 and 0xfe
    refused, 7 taken; 7.2 and 10.2's source take any; 11.0 UNVERIFIED, taken to lack it)."""
    sch = t.parent_obj.sch
    for name, local, hint in (("cssid", VIRTUAL_CSSID, "Bug!"), ("ssid", 0, "Bug!"),
                              ("devno", r.config.ccw_devno, CCW_DEVNO_HINT)):
        if sch[name] != local:  # get_uint8_equal / get_uint16_equal print local != incoming, then the hint
            info = "uint8 equal" if name in ("cssid", "ssid") else "uint16 equal"
            raise _fail([f"{local:x} != {sch[name]:x}", hint, le.FieldFailed("s390_subch_dev", name, info),
                         le.Printed()], errno.EINVAL)
    if t.thinint_isc > MAX_ISC and r.registry.check("thinint_isc", r.release):
        raise _fail(["post load hook failed for: s390_virtio_ccw_dev, version_id: 1, minimum_version: 1, ret: "
                     f"{-errno.EINVAL}"], errno.EINVAL)


CCW_DEVNO_HINT = ("Devno mismatch, tried to load wrong section! Likely reason: some sequences of plug and unplug  "
                  "can break migration for machine versions prior to  2.7 (known design flaw).")


def _check_vmsd_version(vmsd: Any, version_id: int) -> None:
    """vmstate_load_state's version checks (for the device vmsd, the local outer version_id)."""
    if not vmsd.minimum <= version_id <= vmsd.version:
        raise _fail([le.VersionRefused(vmsd.name, version_id, vmsd.version, vmsd.minimum), le.Printed()],
                    errno.EINVAL)


def _check_versions(v: Any, r: Realized) -> None:
    """vmstate_load_state: an incoming version above the local one, or below its minimum, fails."""
    def walk(subs: Any) -> None:
        for sub in subs or []:
            local, minimum = r.registry.subsection_version(sub.name, r.release)
            version = sub.version_id & 0xFF  # vmstate_subsection_load reads the be32 into a uint8_t
            if not minimum <= version <= local:
                raise _fail(_refused(sub.name, version, local, minimum), errno.EINVAL)
            walk(getattr(sub.body, "subsections", None))

    walk(getattr(v.device, "subsections", None))
    walk(v.subsections)


def _check_transport_subsections(extra: Any, release: Version, transport: str) -> None:
    """The transport's subsections (nested ones too) in virtio/extra_state's body that the layout reads but
    `release` does not know."""
    known = {s.name for s in core.known_transport_subsections(release, transport)}

    def walk(subs: Any, parent: str) -> None:
        for sub in subs or []:
            if sub.name not in known:
                raise _unknown(sub.name, parent, release)
            walk(getattr(sub.body, "subsections", None), sub.name)

    walk(extra.subsections, {"pci": "virtio_pci", "mmio": "virtio_mmio"}.get(transport, ""))


def _stop_at_unprefixed(value: Any, parent: str) -> int:
    """Drop the device subsections from the first one whose name lacks the vmsd's prefix on (QEMU's loader
    never reads them); QEMU_VM_SUBSECTION (the byte the main loop then meets) if there was one, else 0."""
    subs = getattr(value, "subsections", None) or []
    for i, sub in enumerate(subs):
        if not sub.name.startswith(parent):
            value["subsections"] = c.ListContainer(subs[:i])
            return QEMU_VM_SUBSECTION
    return 0


def _check_unknown(dev: Any, value: Any, r: Realized) -> None:
    release, device = r.release, r.config.device
    known_fn = getattr(dev, "known_subsections", None)
    subs = getattr(value, "subsections", None)
    if known_fn is None or subs is None:
        return
    known = known_fn(release) | r.registry.known_device_subsections(device, release)
    for sub in subs:
        if sub.name not in known:
            raise _fail([f"VM subsection '{sub.name}' in '{device}-device' does not exist"]
                        if release >= Version(10, 2) else [], errno.ENOENT)


def _sanitize_features(r: Realized, v: Any, incoming: int) -> int:
    """Step 12: guest features against the destination's host features, as the release does."""
    release, host = r.release, r.host_features
    if release < Version(2, 4):
        return incoming & host  # checked early (features_early)
    if release < Version(10, 2):
        if (host >> 32) & 0xFFFFFFFF:
            value = incoming & MASK64  # the 64-bit subsection's value, or the 32-bit field
        else:
            value = v.guest_features_lo  # a 64-bit subsection is discarded: only the low word is checked
        if value & ~host:
            chk = r.registry.check("features", release)
            assert chk is not None
            raise _fail([chk.message.format(features=value, host=host & MASK64)])
        return value & host
    if incoming & ~host:
        chk = r.registry.check("features128", release)
        assert chk is not None
        shown = incoming & host  # virtio_set_features_nocheck keeps the allowed bits before the report
        raise _fail([chk.message.format(features_hi=shown >> 64, features_lo=shown & MASK64,
                                        host_hi=host >> 64, host_lo=host & MASK64)])
    return incoming & host


def reset_state(r: Realized) -> DeviceState:
    """The state right after realize and reset (what a destination starts from)."""
    return _reset_state(r.config, r.registry)


@functools.lru_cache(maxsize=1024)
def _reset_state(config: Config, registry: Registry) -> DeviceState:
    r = realize(config, registry)
    dev = DEVICES[r.config.device]
    queues = tuple(QueueState(n) for n in r.queue_sizes)
    pci = None
    if r.config.transport == "pci":
        n = r.vectors
        pci = PciState(local_config_space(r).config, msix_table=_msix_reset_table(n), msix_pba=bytes((n + 7) // 8))
    ccw = None
    if r.config.transport == "ccw":
        migration = r.config.machine.version >= Version(2, 10)
        schid = r.config.ccw_devno if r.config.ccw_schid is None else r.config.ccw_schid
        ccw = CcwState(reset_tree(DEVICE_IDS[r.config.device], r.config.ccw_devno, migration, schid))
    return DeviceState(config=bytes(r.config_len), queues=queues, num_default=r.queue_sizes,
                       device_endian=core.default_endian(r), pci=pci,
                       mmio=MmioState() if r.config.transport == "mmio" else None, ccw=ccw, device=dev.reset_state(r),
                       extra=declared.reset_values(r))


def _msix_reset_table(n: int) -> bytes:
    # msix_init: every entry masked (vector control bit 0 set)
    return b"".join(bytes(12) + b"\x01\x00\x00\x00" for _ in range(n))


def ring_addresses(q: QueueState, features: int) -> tuple[int, int]:
    """Where the destination reads a queue's rings: the migrated addresses with VERSION_1, else
    virtio_queue_update_rings' legacy layout from desc, num and align."""
    if F.has(features, F.VERSION_1):
        return q.avail, q.used
    avail = q.desc + 16 * q.num
    return avail, vring_align(avail + 4 + 2 * q.num, q.align)


def vring_align(addr: int, align: int) -> int:
    """QEMU_ALIGN_UP, by division: an align migrated on virtio-mmio need not be a power of two."""
    return (addr + align - 1) // align * align if align else addr


def guest_rings(memory: Any, machine: str | None, state: DeviceState) -> list[tuple[int, int]]:
    """(avail idx, used idx) of each queue, read from the guest RAM a stream carries."""
    out = []
    for q in state.queues:
        if not q.desc:
            out.append((0, 0))
            continue
        avail, used = ring_addresses(q, state.guest_features)
        try:
            out.append((memory.read_u16_phys(machine, avail + 2), memory.read_u16_phys(machine, used + 2)))
        except KeyError:
            out.append((0, 0))  # not in RAM this tool maps: reads as zero
    return out


def with_rings(state: DeviceState, rings: Sequence[tuple[int, int]]) -> DeviceState:
    padded = list(rings) + [(0, 0)] * len(state.queues)
    qs = tuple(replace(q, avail_idx=a, used_idx=u) for q, (a, u) in zip(state.queues, padded, strict=False))
    return replace(state, queues=qs)


ROM_DIRS = ("/usr/share/qemu", "/usr/lib/ipxe/qemu", "/usr/share/ipxe/qemu")


def rom_bar_size(romfile: str) -> int:
    """pci_add_option_rom: the ROM BAR is the file's size rounded up to a power of two. The file is
    the destination host's; without it, Debian 12's efi-virtio.rom (249344 bytes: 256 KiB)."""
    for d in ROM_DIRS:
        path = os.path.join(d, romfile)
        if os.path.isfile(path):
            size = os.path.getsize(path)
            return 1 << max(size - 1, 0).bit_length()
    return 0x40000
