"""virtio_load, step by step in QEMU's order (reference §4): load(realized, data, ...) returns the outcome, the
loaded state and a trace of the steps."""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import construct as c

from harness.wire.ccw import VersionRefused
from harness.wire.primitives import _DECODE_ERRORS, UnknownSubsection
from harness.wire.virtio import (
    VIRTIO_QUEUE_MAX,
    compiled_payload_layout,
    payload_layout,
)
from models import core, declared
from models import features as F
from models import load_errors as le
from models.config import Realized
from models.devices import blk
from models.load_checks import (
    VECTOR_QUEUES_FROM,
    Rejected,
    ccw_checks,
    check_mac_table,
    check_section_version,
    check_transport_subsections,
    check_unknown,
    check_versions,
    check_vmsd_version,
    desync,
    fail,
    footer_error,
    notify_no_vector,
    pci_checks,
    refused,
    rendered,
    sanitize_features,
    section_end_failed,
    stop_at_unprefixed,
    unknown,
    unknown_subsection,
)
from models.releases import Version
from models.reset import reset_state
from models.rings import GuestRam, map_requests, printable_name, ring_indices, vring_align
from models.save import last_body, state_from_wire
from models.state import (
    ENDIAN_UNKNOWN,
    NO_VECTOR,
    Crashed,
    DeviceState,
    QueueState,
    Trace,
    Undefined,
)

ACCEPTED, ACCEPTED_BROKEN, REJECTED, CRASHED = "accepted", "accepted-broken", "rejected", "crashed"


UNDEFINED = "undefined"  # the destination corrupts its memory (state.Undefined): no outcome can be predicted


VIRTIO_CONFIG_S_NEEDS_RESET = 0x40


@dataclass(frozen=True)
class LoadResult:
    outcome: str  # accepted | accepted-broken | rejected
    error: str | None  # the first error line QEMU prints (no program-name prefix)
    lines: tuple[str, ...]
    state: DeviceState | None
    trace: Trace = field(default_factory=Trace)


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
        check_section_version(r, idstr, instance_id, version_id)
        state, broken_lines = _load(r, data, rings, trace, idstr, footer, after, memory, vdev_id)
    except Crashed as e:
        trace.steps.append(f"crashed: {e}")
        return LoadResult(CRASHED, str(e), (str(e),), None, trace)
    except Undefined as e:
        trace.steps.append(f"undefined: {e}")
        return LoadResult(UNDEFINED, str(e), (str(e),), None, trace)
    except Rejected as e:
        lines = rendered(r, e, idstr, instance_id)
        trace.steps.append("rejected: " + (lines[0] if lines else ""))
        return LoadResult(REJECTED, lines[0] if lines else None, tuple(lines), None, trace)
    outcome = ACCEPTED_BROKEN if state.broken else ACCEPTED
    return LoadResult(outcome, broken_lines[0] if broken_lines else None, tuple(broken_lines), state, trace)


def _load(r: Realized, data: bytes, rings: Sequence[tuple[int, int]] | None, trace: Trace, idstr: str,
          footer: bool, after: bytes = b"", memory: GuestRam | None = None, vdev_id: str | None = None
          ) -> tuple[DeviceState, list[str]]:
    """virtio_load's steps, each a method of _Load (numbered as in reference §4)."""
    ld = _Load(r, data, after, trace, idstr, memory, vdev_id)
    trace.steps.append("device_endian := unknown")  # step 1
    t = ld.transport_config()
    ld.core_fields()
    ld.config()
    num = ld.queue_count()
    ld.queues(t, num)
    ld.device_data()
    stopped = ld.core_subsections()
    src = state_from_wire(r, ld.v, rings)
    device_state = ld.device_load(src)
    device_endian = ld.endianness()
    features, device_state = ld.features(src, device_state, num)
    src = ld.queue_layout(src, num)
    broken, broken_lines, queues = ld.ring_checks(src, num, features)
    ld.section_end(broken_lines, stopped, footer)
    status = src.status
    if broken_lines and F.has(features, F.VERSION_1):
        status |= VIRTIO_CONFIG_S_NEEDS_RESET  # virtio_error on a modern device
    config = src.config[: r.config_len] + bytes(max(r.config_len - len(src.config), 0))
    state = replace(src, status=status, guest_features=features, device_endian=device_endian, queues=tuple(queues),
                    config=config, broken=broken, device=device_state, guest_features_lo_field=None)
    trace.steps.append("post_load")
    return state, broken_lines


class _Load:
    """One load in progress: the destination, the stream as QEMUFile reads it, what was read so far (`v`), and the
    trace. Each step method is one of virtio_load's steps, in QEMU's order; a failed check raises Rejected."""

    def __init__(self, r: Realized, data: bytes, after: bytes, trace: Trace, idstr: str, memory: GuestRam | None,
                 vdev_id: str | None) -> None:
        self.r, self.reg, self.release, self.tr = r, r.registry, r.release, r.config.transport
        self.dev = r.device.code
        self.data, self.after, self.trace, self.idstr, self.memory, self.vdev_id = data, after, trace, idstr, memory, \
            vdev_id
        self.subcons = {sc.name: sc for sc in payload_layout(self.tr, r.device.section, self.reg.wire).subcons}
        self.stream = _Tail(data + after)
        local_pairs = max(r.config.netdev.queues, 1) if r.config.device == "virtio-net" else 1
        blk_index = blk.queue_index(r)
        # virtio_load reads the device vmsd with the local outer version_id, whatever the section header said
        self.versions = self.reg.versions(r.config.device, self.release)
        fields = declared.on_wire(r, reset_state(r), self.versions.section.version, loading=True)
        self.ctx = c.Container(_params=c.Container(net_multiqueue=local_pairs > 1, blk_multiqueue=blk_index,
                                                   schema_fields=fields),
                               _parsing=True, _building=False, _sizing=False, _io=self.stream, _index=None)
        self.ctx._root = self.ctx
        self.v = c.Container()
        # fast path: one compiled parse of the whole payload; the steps below then read from it. Only a
        # payload that does not parse is read step by step, so that the checks before the bad bytes win.
        self.full: Any = None
        self.full_end = 0
        try:
            fs = io.BytesIO(data + after)  # what QEMU reads: a subsection name past the payload's end included
            self.full = compiled_payload_layout(self.tr, r.device.section, self.reg.wire).parse_stream(
                fs, **self.ctx._params)
            self.full_end = fs.tell()
        except _DECODE_ERRORS:
            self.full = None
        self.eof_before_device = False
        self.device_start = 0
        self.end = 0  # where virtio_load stopped reading (after the core subsections)

    def read(self, name: str, sc: Any = None, path: str | None = None) -> Any:
        """The next field, from the fast path's parse or from the stream."""
        v, ctx = self.v, self.ctx
        if self.full is not None:
            value = self.full[name] if sc is None else self.full["queues"][ctx._index]
            if sc is None:
                v[name] = ctx[name] = value
            return value
        try:
            value = (sc or self.subcons[name])._parsereport(self.stream, ctx, f"(parsing) -> {path or name}")
        except VersionRefused as e:
            raise fail(refused(e.name, e.version_id, 1, 1), errno.EINVAL) from None
        except UnknownSubsection as e:
            raise unknown_subsection(e, self.release) from None
        except _DECODE_ERRORS as e:
            raise desync(e, self.idstr) from None
        if sc is None:
            v[name] = ctx[name] = value
        return value

    def transport_config(self) -> Any:
        """Step 2: the transport's load_config and its checks."""
        t = self.read("transport")
        self.trace.steps.append("transport config")
        if self.tr == "pci":
            pci_checks(self.r, t, self.trace)
        elif self.tr == "ccw":
            ccw_checks(self.r, t)
        return t

    def core_fields(self) -> None:
        """Step 3: status, isr, queue_sel, the 32-bit features."""
        r, v, reg, release = self.r, self.v, self.reg, self.release
        for name in ("status", "isr", "queue_sel", "guest_features_lo"):
            self.read(name)
        if v.queue_sel >= VIRTIO_QUEUE_MAX and reg.check("queue_sel", release):
            raise fail([])  # returns -1 without a message
        early = reg.check("features_early", release)
        if early and v.guest_features_lo & ~r.host_features & 0xFFFFFFFF:
            raise fail([early.message.format(features=v.guest_features_lo, host=r.host_features & 0xFFFFFFFF)])
        self.trace.steps.append("core fields; guest features := 32-bit field")

    def config(self) -> None:
        """Step 4: config_len and the config bytes."""
        r, v, stream = self.r, self.v, self.stream
        self.read("config_len")
        if self.reg.check("config_len", self.release) and v.config_len != r.config_len:
            raise fail([f"Unexpected config length {v.config_len:#x}, expected {r.config_len:#x}"])
        if self.full is None and v.config_len > stream.left():
            # the excess is skipped a byte at a time: past the end of the file each read gives 0 and sets its error
            self.ctx.config = v.config = stream.read(stream.left())
            stream.eof = True
        else:
            self.read("config")

    def queue_count(self) -> int:
        """Step 5: the queue count, against the release's limit; step 6: the device's pre_load_queues."""
        num: int = self.read("num_queues")
        if num > core.queue_limit(self.release):
            chk = self.reg.check("num_queues", self.release) or self.reg.check("num_queues_pci", self.release)
            assert chk is not None
            raise fail([chk.message.format(num=num)])
        pre_load = getattr(self.dev, "pre_load_queues", None)
        if pre_load is not None:
            pre_load(self.r, num)
        return num

    def queues(self, t: Any, num: int) -> None:
        """Step 7: each queue and the transport's load_queue; step 8: virtio_notify_vector."""
        r, reg, release, tr = self.r, self.reg, self.release, self.tr
        queue_sc = self.subcons["queues"].subcon.subcon  # Renamed(Array(element))
        queues = []
        vring_num = reg.check("vring_num", release)
        allocated = getattr(self.dev, "allocated_sizes", None)
        sizes = list(allocated(r, num) if allocated else r.queue_sizes)
        for i in range(num):
            self.ctx._index = i
            q = self.read("queue", queue_sc, f"queues[{i}]")
            limit_i = sizes[i] if i < len(sizes) else 0  # a queue the device does not have: 0
            if vring_num is not None and q.num > limit_i:
                raise fail([vring_num.message.format(i=i, num=q.num, max=limit_i)], errno.EINVAL)
            if q.desc == 0 and q.last_avail_idx != 0:
                chk = reg.check("desc_zero", release)
                assert chk is not None
                raise fail([chk.message.format(i=i, last=q.last_avail_idx)], errno.EPERM)
            vec = q.get("vector")
            if tr == "pci" and vec is not None and vec != NO_VECTOR and vec >= t.msix_vectors:
                if reg.check("msix_vector", release):
                    raise fail([], errno.EINVAL)
                if release >= VECTOR_QUEUES_FROM:
                    # before 7.2 virtio_pci_load_queue sets the vector first: virtio_queue_set_vector links the queue
                    # into vdev->vector_queues[vec], past its end (5.2's source; the 5.2 binary dies or rejects by
                    # the value)
                    raise Undefined(f"virtio_queue_set_vector writes vdev->vector_queues[{vec:#x}] past its "
                                    f"{t.msix_vectors} entries (a heap overflow)")
            queues.append(q)
        if self.stream.eof and reg.check("file_error_after_queues", release):
            raise fail([], errno.EIO)
        if tr == "pci":
            notify_no_vector(bytes(t.pci.config))
        self.v.queues = self.ctx.queues = c.ListContainer(queues)
        self.trace.steps.append(f"{num} queues")

    def device_data(self) -> None:
        """Step 9: the device data and the device subsections (it sees only the 32-bit features; endianness still
        unknown)."""
        r, v, stream, release, dev, versions = self.r, self.v, self.stream, self.release, self.dev, self.versions
        if versions.device is not None:
            check_vmsd_version(versions.device, versions.section.version)
        check_field = getattr(dev, "check_field", None)
        self.eof_before_device = stream.eof
        self.device_start = stream.tell()
        if self.full is None and (check_field is not None or stream.eof or versions.device is not None):
            # field by field, so that a check QEMU makes on a field wins over the bad bytes after it, and a field
            # read past the end of the file is the one QEMU names
            ctx = self.ctx
            dctx = c.Container(_=ctx, _params=ctx._params, _root=ctx, _parsing=True, _building=False, _sizing=False,
                               _io=stream, _index=None)
            dv = c.Container()
            vmsd_fields = getattr(dev, "VMSD_FIELDS", {})
            for sc in self.subcons["device"].subcon.subcons:
                if sc.name == "mac_table_macs":
                    check_mac_table(dctx.mac_table_in_use, stream.left(), release)
                try:
                    value = sc._parsereport(stream, dctx, f"(parsing) -> device -> {sc.name}")
                except UnknownSubsection as e:
                    raise unknown_subsection(e, release) from None
                except _DECODE_ERRORS as e:
                    raise desync(e, self.idstr) from None
                if stream.eof and sc.name in vmsd_fields:  # vmstate_load_state checks the file after each field
                    raise fail([le.StreamError(*vmsd_fields[sc.name].split(":")), le.Printed()], errno.EIO)
                if sc.name:
                    dv[sc.name] = dctx[sc.name] = value
                    if check_field is not None and (lines := check_field(sc.name, value, r)):
                        raise fail(lines, errno.EINVAL)
            v["device"] = ctx["device"] = dv
        else:
            self.read("device")
            if "mac_table_in_use" in v.device:  # the layout skips nothing from 2^31, as 7.2 to 10.x do
                check_mac_table(v.device.mac_table_in_use, len(self.data) + len(self.after), release)
            if check_field is not None:
                for name, value in v.device.items():
                    if not name.startswith("_") and (lines := check_field(name, value, r)):
                        raise fail(lines, errno.EINVAL)
        self.trace.steps.append("device data and device subsections")
        if r.config.device == "virtio-net" and release >= Version(2, 4):
            self.trace.early_reads.append("virtio-net post_load reads VERSION_1 from the 32-bit features before "
                                          "virtio/64bit_features loads (recomputed by set_features at the feature "
                                          "step)")

    def core_subsections(self) -> int:
        """Step 10: vmstate_virtio's subsections. Returns QEMU_VM_SUBSECTION where the device's list stopped at a
        name without its prefix (0 otherwise)."""
        r, v, release = self.r, self.v, self.release
        # vmstate_subsection_load stops quietly at a name without the vmsd's prefix: there the loaders of the core
        # subsections and of the outer vmsd stop too, and the section ends early (Missing section footer, later)
        stopped = stop_at_unprefixed(v.device, f"{r.config.device}-device")
        check_unknown(self.dev, v.device, r)
        self.read("subsections")
        if stopped:
            v.subsections = self.ctx.subsections = c.ListContainer()
        if release < Version(2, 1) and v.subsections:
            # no core subsection loader: the main loop reads the 0x05 as a section type
            raise fail(["Unknown savevm section type 5", f"load of migration failed: {os.strerror(errno.EINVAL)}"], 0)
        check_versions(v, r)
        known = {s.name for s in self.reg.known_core_subsections(release)}
        for sub in v.subsections:
            if sub.name not in known:
                raise unknown(sub.name, "virtio", release)  # vmstate_subsection_load: exact lookup fails, -ENOENT
        for extra in (x.body for x in v.subsections if x.name == "virtio/extra_state"):
            check_transport_subsections(extra, release, self.tr)
        self.end = self.full_end if self.full is not None else self.stream.tell()
        self.trace.steps.append("core subsections: " + ", ".join(s.name for s in v.subsections))
        return stopped

    def device_load(self, src: DeviceState) -> Any:
        """The device's own load code over what step 9 read (its checks; virtio-blk's requests one by one)."""
        r, dev, lines = self.r, self.dev, list[str]()
        features_lo = self.v.guest_features_lo
        if r.config.device == "virtio-blk":
            # request by request, as virtio_blk_load_device reads them: its queue index, its element (asserts on the
            # counts), then virtqueue_map
            reqs = src.device.requests
            head = 1 + (4 if self.ctx._params.blk_multiqueue else 0)  # the list's marker byte, the queue index
            for k, req in enumerate(reqs):
                if self.stream.eof and not self.eof_before_device and k == len(reqs) - 1:
                    # the end of the file cuts the last element: virtio_load runs on, the file's error ends it later
                    start = self.device_start + k * (head + dev.ELEMENT_SIZE) + head
                    dev.element_cut(self.stream.size - start)
                one = replace(src.device, requests=(req,))
                if dev.load_device(one, r, features_lo, lines) is None or lines:
                    raise fail(lines, errno.EINVAL)
                if self.memory is not None:
                    map_requests(self.memory, (req,))
        device_state = dev.load_device(src.device, r, features_lo, lines)
        if lines:  # a device check failed
            raise fail(lines, errno.EINVAL)
        return device_state

    def endianness(self) -> int:
        """Step 11: still unknown after the subsections (absent, or sent as 0): the target's default."""
        endian = last_body(self.v.subsections, "virtio/device_endian")
        sent = endian.device_endian if endian is not None else ENDIAN_UNKNOWN
        device_endian: int = sent if sent != ENDIAN_UNKNOWN else core.default_endian(self.r)
        self.trace.steps.append(f"device_endian := {device_endian} ({'subsection' if sent else 'default'})")
        return device_endian

    def features(self, src: DeviceState, device_state: Any, num: int) -> tuple[int, Any]:
        """Step 12: the guest features against the destination's host features, then the device's set_features."""
        r, dev, release = self.r, self.dev, self.release
        features, refused = sanitize_features(r, self.v, src.guest_features)
        set_features = getattr(dev, "set_features", None)
        if set_features is not None:  # the device's set_features runs on what the device data loaded
            device_state = set_features(device_state, release, src.guest_features, features)
        crash = getattr(dev, "change_num_queues_crash", None)
        if crash is not None:
            incoming = src.guest_features if release >= Version(2, 4) else self.v.guest_features_lo
            line = crash(r, [q.num for q in src.queues[:num]], dev.multiqueue(release, incoming, r.host_features))
            if line is not None:
                raise Crashed(line)
        if refused is not None:  # virtio_set_features_nocheck reports the features after the device's set_features
            raise fail(refused)
        self.trace.steps.append(f"guest features := {features:#x}")
        return features, device_state

    def queue_layout(self, src: DeviceState, num: int) -> DeviceState:
        """The queues the device holds once set_features ran, with their num_default (virtio-net lays them out by
        its queue pairs: net.loaded_queues)."""
        layout = getattr(self.dev, "loaded_queues", None)
        if layout is None:
            return src
        r, release = self.r, self.release
        incoming = src.guest_features if release >= Version(2, 4) else self.v.guest_features_lo
        ringsize = last_body(self.v.subsections, "virtio/ringsize") is not None and release < core.RINGSIZE_IGNORED_FROM
        queues, defaults = layout(r, src.queues, src.num_default, num, self.v.guest_features_lo,
                                  self.dev.multiqueue(release, incoming, r.host_features), ringsize)
        return replace(src, queues=queues, num_default=defaults)

    def ring_checks(self, src: DeviceState, num: int, features: int) -> tuple[bool, list[str], list[QueueState]]:
        """Step 14: each queue's rings and indices in guest RAM. (broken, the virtio_error lines, the queues)."""
        r, reg, release, tr, memory = self.r, self.reg, self.release, self.tr, self.memory
        broken = src.broken
        broken_lines: list[str] = []
        loaded_queues = list(src.queues)
        migrated_rings = last_body(self.v.subsections, "virtio/virtqueues") is not None
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
                name = printable_name(r, self.idstr, self.vdev_id)
                ai, ui, lines = (ring_indices(memory, q.num, q.desc, avail, used, features, name)
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
                if chk.fatal:  # after the virtio_error lines of the queues before it
                    raise fail([*broken_lines, line])
                broken, broken_lines = True, broken_lines + [line]
                loaded_queues[i] = replace(q, avail=avail, used=used, used_idx=0)
                continue
            chk = reg.check("inuse", release) or reg.check("inuse_modular", release)
            if chk is not None:
                inuse = (q.last_avail_idx - ui) & (0xFFFF if chk.name == "inuse_modular" else 0xFFFFFFFF)
                if inuse > q.num:
                    raise fail([*broken_lines, chk.message.format(i=i, num=q.num, last=q.last_avail_idx, used=ui)])
            loaded_queues[i] = replace(q, avail=avail, used=used)
        self.trace.steps.append("ring checks" + (" (device marked broken)" if broken and broken_lines else ""))
        return broken, broken_lines, loaded_queues

    def section_end(self, broken_lines: list[str], stopped: int, footer: bool) -> None:
        """After virtio_load: the file's error, then the section footer where virtio_load stopped reading."""
        data, after, end, idstr = self.data, self.after, self.end, self.idstr
        if self.stream.eof:  # virtio_load ran on with zeros; the "virtio" field's get then finds the file's error
            raise fail(broken_lines, errno.EIO, le.StreamError(self.r.config.device, "virtio"))
        first = None
        if after and not stopped:
            first = footer_error(data + after, end, idstr, footer, after, end != len(data))
        elif stopped or end != len(data):
            # qemu_loadvm_section_start_full checks the footer once virtio_load is done; the bytes left are not one
            first = (f"Missing section footer for {idstr}" if footer else
                     f"Unknown savevm section type {stopped or data[end]}")
        if first is not None:
            raise fail(section_end_failed(broken_lines, first, after, self.release), 0)


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
