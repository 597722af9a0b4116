"""The checks virtio_load makes on the way, each as the release makes it, and how a failure is reported (the
frames of models/load_errors.py up to the section's report)."""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import Any

import construct as c

from harness.wire.primitives import QEMU_VM_SUBSECTION, UnknownSubsection, field_path
from harness.wire.stream import QEMU_VM_SECTION_FOOTER
from harness.wire.virtio import (
    PCI_CAP_ID_MSIX,
    pci_capabilities,
)
from models import core
from models import load_errors as le
from models.config import Realized
from models.devices import net
from models.features import MASK64
from models.releases import Version
from models.reset import local_config_space
from models.state import (
    NO_VECTOR,
    Crashed,
    Trace,
)
from models.transports.ccw import VIRTUAL_CSSID
from models.transports.pci import bad_config_data


class Rejected(Exception):
    """A failed load: what was printed on the way (`lines`: strings and load_errors frames, innermost first) and
    the code virtio_load returned (`err`; 0: the frames already end with the migration's own line). `outer`: how
    the section's vmsd reports it (default: its "virtio" field's get() failed)."""

    def __init__(self, lines: Sequence[Any], err: int, outer: le.Frame | None = None) -> None:
        super().__init__(str(lines[0]) if lines else "")
        self.lines = list(lines)
        self.err = err
        self.outer = outer


def fail(lines: Sequence[Any], err: int = errno.EPERM, outer: le.Frame | None = None) -> Rejected:
    return Rejected(lines, err, outer)


def desync(e: BaseException, idstr: str) -> Rejected:
    """QEMU reads on past its section; what it meets there decides its message: say what we know."""
    where = field_path(getattr(e, "path", "") or "", "virtio")
    return fail([f"stream ends or desynchronizes while loading {where} of {idstr}"], errno.EIO)


def unknown_subsection(e: UnknownSubsection, release: Version) -> Rejected:
    """vmstate_subsection_load: the exact lookup fails, -ENOENT (10.2 also names it and its parent)."""
    return unknown(e.name, e.parent or e.name.split("/")[0], release)


# virtio-ccw's nested vmsds: the struct field whose vmstate_load_state fails when a subsection of theirs does
_CCW_FIELD_OF = {"s390_subch_dev": "s390_ccw_dev:sch", "s390_adapter_info": "s390_adapter_routes:adapter"}


def unknown(name: str, parent: str, release: Version) -> Rejected:
    return fail([le.NoSubsection(name, parent), *_enclosing(parent)], errno.ENOENT)


def _enclosing(parent: str) -> list[le.Frame]:
    """The frames between a failure inside vmsd `parent` and virtio_load's report of it."""
    if parent in core.EXTRA_STATE_PARENTS:  # the extra_state field's get failed (verified on 7.2 and 11.1)
        return [le.Printed(), le.FieldFailed("virtio/extra_state", "extra_state", "virtqueue_extra_state"),
                le.InSubsection("virtio/extra_state", "virtio"), le.Printed()]
    if parent in _CCW_FIELD_OF:  # verified on 7.2
        vmsd, name = _CCW_FIELD_OF[parent].split(":")
        return [le.FieldFailed(vmsd, name, None), le.Printed()]
    return [le.Printed()]


def refused(name: str, version_id: int, local: int, minimum: int) -> list[le.Frame]:
    """vmstate_load_state's refusal of a subsection's incoming version, up to the report of it."""
    parent = name.split("/")[0]  # QEMU names a subsection "<parent vmsd>/<name>"
    return [le.VersionRefused(name, version_id, local, minimum), le.InSubsection(name, parent), *_enclosing(parent)]


def rendered(r: Realized, e: Rejected, idstr: str, instance_id: int) -> list[str]:
    if e.err == 0:
        return le.render(e.lines, r.release)
    outer = e.outer or le.FieldFailed(r.config.device, "virtio", "virtio", -e.err)
    return le.section_failed([*e.lines, outer], r.release, e.err, instance_id, idstr)


def check_mac_table(in_use: int, left: int, release: Version) -> None:
    """The MAC table (or the excess skipped) is read up to the end of the file (`left` bytes): a count from 2^31
    skips nothing up to 10.x (an int element count), from 11.0 it runs off too (net.in_use_unsigned)."""
    if (in_use < 1 << 31 or net.in_use_unsigned(release)) and in_use * 6 > left:
        unused = in_use > net.MAC_TABLE_ENTRIES
        raise fail([le.StreamError("virtio-net-device", "unused" if unused else "mac_table.macs"), le.Printed()],
                    errno.EIO)


def section_end_failed(printed: list[str], first: str, after: bytes, release: Version) -> list[str]:
    """What the release prints when the section does not end where virtio_load stopped: check_section_footer's
    line (from 10.2 the main loop's "Unknown section type" is an Error of the migration's line instead)."""
    if first.startswith("Unknown savevm section type") and release >= le.CHAIN_FROM:
        return le.migration_failed(printed, release, first.replace("savevm section", "section"))
    if after[:1] != bytes([QEMU_VM_SECTION_FOOTER]) and release >= le.CHAIN_FROM:
        return [*printed, first]  # the migration's line names the section id, which a lone payload does not give
    said = f"Section footer error, section_id: {int.from_bytes(after[1:5], 'big')}"
    return le.migration_failed([*printed, first], release, said)


def footer_error(buf: bytes, end: int, idstr: str, footer: bool, after: bytes, moved: bool) -> str | None:
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


def pci_checks(r: Realized, t: Any, trace: Trace) -> None:
    version = t.pci.version_id
    if not 0 <= version <= 2:  # VMSTATE_INT32_POSITIVE_LE against the local PCIDevice version
        raise fail([f"Invalid value {version} expecting positive value <= 2", *_pci_field("version_id", "int32 le")],
                    errno.EINVAL)
    # vmstate_pci_device loads config (checked as it loads, the MSI-X table size among the read-only bits) before
    # irq_state
    bad = bad_config_data(local_config_space(r), bytes(t.pci.config))
    if bad:
        raise fail([bad, *_pci_field("config", "pci config")], errno.EINVAL)
    for irq in t.pci.irq_state:
        if irq not in (0, 1):
            raise fail([f"irq state {irq}: must be 0 or 1.", *_pci_field("irq_state", "pci irq state")],
                        errno.EINVAL)
    reg = r.registry
    config_vector_checked = reg.check("msix_vector", r.release) or reg.check("msix_vector_use", r.release)
    if config_vector_checked and t.config_vector is not None:
        if t.config_vector != NO_VECTOR and t.config_vector >= t.msix_vectors:
            raise fail([], errno.EINVAL)
    trace.steps.append("PCI config checked against the local read-only bits")


VECTOR_QUEUES_FROM = Version(2, 5)  # virtio: the per-vector queue lists (release UNVERIFIED; 5.2 has them)


PCI_INTERRUPT_PIN = 0x3D


PCI_NUM_PINS = 4


def notify_no_vector(config: bytes) -> None:
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


def ccw_checks(r: Realized, t: Any) -> None:
    """vmstate_subch_dev's _EQUAL fields: the subchannel must be the destination's own (hw/s390x/css.c); from
    11.1 the device's post_load refuses an interruption subclass past MAX_ISC (the 11.1 binary: 8 and 0xfe
    refused, 7 taken; 7.2 and 10.2's source take any; 11.0 UNVERIFIED, taken to lack it)."""
    sch = t.parent_obj.sch
    for name, local, hint in (("cssid", VIRTUAL_CSSID, "Bug!"), ("ssid", 0, "Bug!"),
                              ("devno", r.config.ccw_devno, CCW_DEVNO_HINT)):
        if sch[name] != local:  # get_uint8_equal / get_uint16_equal print local != incoming, then the hint
            info = "uint8 equal" if name in ("cssid", "ssid") else "uint16 equal"
            raise fail([f"{local:x} != {sch[name]:x}", hint, le.FieldFailed("s390_subch_dev", name, info),
                         le.Printed()], errno.EINVAL)
    if t.thinint_isc > MAX_ISC and r.registry.check("thinint_isc", r.release):
        raise fail(["post load hook failed for: s390_virtio_ccw_dev, version_id: 1, minimum_version: 1, ret: "
                     f"{-errno.EINVAL}"], errno.EINVAL)


CCW_DEVNO_HINT = ("Devno mismatch, tried to load wrong section! Likely reason: some sequences of plug and unplug  "
                  "can break migration for machine versions prior to  2.7 (known design flaw).")


def check_vmsd_version(vmsd: Any, version_id: int) -> None:
    """vmstate_load_state's version checks (for the device vmsd, the local outer version_id)."""
    if not vmsd.minimum <= version_id <= vmsd.version:
        raise fail([le.VersionRefused(vmsd.name, version_id, vmsd.version, vmsd.minimum), le.Printed()],
                    errno.EINVAL)


def check_versions(v: Any, r: Realized) -> None:
    """vmstate_load_state: an incoming version above the local one, or below its minimum, fails."""
    def walk(subs: Any) -> None:
        for sub in subs or []:
            local, minimum = r.registry.subsection_version(sub.name, r.release)
            version = sub.version_id & 0xFF  # vmstate_subsection_load reads the be32 into a uint8_t
            if not minimum <= version <= local:
                raise fail(refused(sub.name, version, local, minimum), errno.EINVAL)
            walk(getattr(sub.body, "subsections", None))

    walk(getattr(v.device, "subsections", None))
    walk(v.subsections)


def check_transport_subsections(extra: Any, release: Version, transport: str) -> None:
    """The transport's subsections (nested ones too) in virtio/extra_state's body that the layout reads but
    `release` does not know."""
    known = {s.name for s in core.known_transport_subsections(release, transport)}

    def walk(subs: Any, parent: str) -> None:
        for sub in subs or []:
            if sub.name not in known:
                raise unknown(sub.name, parent, release)
            walk(getattr(sub.body, "subsections", None), sub.name)

    walk(extra.subsections, {"pci": "virtio_pci", "mmio": "virtio_mmio"}.get(transport, ""))


def stop_at_unprefixed(value: Any, parent: str) -> int:
    """Drop the device subsections from the first one whose name lacks the vmsd's prefix on (QEMU's loader
    never reads them); QEMU_VM_SUBSECTION (the byte the main loop then meets) if there was one, else 0."""
    subs = getattr(value, "subsections", None) or []
    for i, sub in enumerate(subs):
        if not sub.name.startswith(parent):
            value["subsections"] = c.ListContainer(subs[:i])
            return QEMU_VM_SUBSECTION
    return 0


def check_unknown(dev: Any, value: Any, r: Realized) -> None:
    release, device = r.release, r.config.device
    known_fn = getattr(dev, "known_subsections", None)
    subs = getattr(value, "subsections", None)
    if known_fn is None or subs is None:
        return
    known = known_fn(release) | r.registry.known_device_subsections(device, release)
    for sub in subs:
        if sub.name not in known:
            raise fail([f"VM subsection '{sub.name}' in '{device}-device' does not exist"]
                        if release >= Version(10, 2) else [], errno.ENOENT)


def check_section_version(r: Realized, idstr: str, instance_id: int, version_id: int | None) -> None:
    """qemu_loadvm_section_start_full, then vmstate_load_state of the outer vmsd (verified on 7.2)."""
    local = r.registry.versions(r.config.device, r.release).section
    if version_id is not None and version_id > local.version:
        said = f"unsupported version {version_id} for '{idstr}' v{local.version}"  # error_setg from 10.2
        lines = [f"savevm: {said}"] if r.release < le.CHAIN_FROM else []
        raise fail(le.migration_failed(lines, r.release, said), 0)
    if version_id is not None and version_id < local.minimum:
        raise fail([], errno.EINVAL, le.VersionRefused(local.name, version_id, local.version, local.minimum))


def sanitize_features(r: Realized, v: Any, incoming: int) -> tuple[int, list[str] | None]:
    """Step 12: guest features against the destination's host features, as the release does: the features
    set, and the lines of a refusal (None: allowed)."""
    release, host = r.release, r.host_features
    if release < Version(2, 4):
        return incoming & host, None  # checked early (features_early)
    if release < Version(10, 2):
        if (host >> 32) & 0xFFFFFFFF:
            value = incoming & MASK64  # the 64-bit subsection's value, or the 32-bit field
        else:
            value = v.guest_features_lo  # a 64-bit subsection is discarded: only the low word is checked
        if value & ~host:
            chk = r.registry.check("features", release)
            assert chk is not None
            return value & host, [chk.message.format(features=value, host=host & MASK64)]
        return value & host, None
    if incoming & ~host:
        chk = r.registry.check("features128", release)
        assert chk is not None
        shown = incoming & host  # virtio_set_features_nocheck keeps the allowed bits before the report
        return shown, [chk.message.format(features_hi=shown >> 64, features_lo=shown & MASK64,
                                          host_hi=host >> 64, host_lo=host & MASK64)]
    return incoming & host, None
