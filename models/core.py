"""The virtio core's format changes and load checks, each declared once with the release that
introduced it (hw/virtio/virtio.c; reference §2-§4). A release is the set of declarations up to it; the tables
here are the in-tree ones, which models/registry.py builds the registry from."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from models import features as F
from models.conditions import (
    Always,
    GuestFeature,
    GuestFeatures,
    HostFeature,
    HostFeatures,
    Modern,
    Never,
    Property,
    QueueResized,
    ReleaseAtLeast,
    StateField,
    Status,
    TargetEndian,
    Transport,
)
from models.configuration import Derived
from models.declarations import Field
from models.endian import BiEndianTarget, GuestEndian
from models.releases import Version
from models.state import ENDIAN_BIG, ENDIAN_LITTLE, DeviceState

V = Version.parse


@dataclass(frozen=True)
class Rule:
    """A condition with the release range where it holds and a text a person (or a tool) can read.
    `test` may be a models.conditions.Condition, which tools can reason about, or any Python callable."""

    since: Version
    test: Callable[[Derived, DeviceState], bool]
    text: str = ""  # default: the condition's own description

    def describe(self) -> str:
        describe = getattr(self.test, "describe", None)
        return self.text or (describe() if callable(describe) else "")


@dataclass(frozen=True)
class CoreSubsection:
    name: str
    since: Version
    needed: tuple[Rule, ...]  # the rule of the newest `since` <= release applies
    source: str
    # its body, where it is a DeviceState field of the same name each (VMSTATE_BOOL(started, VirtIODevice)): the
    # model writes and reads it, the matrix draws or derives it and R1/R3/R4 compare it from this declaration alone
    fields: tuple[Field, ...] = ()

    def rule(self, release: Version) -> Rule | None:
        for r in reversed(self.needed):  # in `since` order
            if r.since <= release:
                return r
        return None

    def is_needed(self, realized: Derived, state: DeviceState) -> bool:
        rule = self.rule(realized.release)
        return rule is not None and realized.release >= self.since and rule.test(realized, state)


@dataclass(frozen=True)
class DeviceSubsection(CoreSubsection):
    """A subsection in a device vmsd's list (virtio-net-device/rss), sent under this name from `since` until
    `until` (exclusive; None: still)."""

    until: Version | None = None

    def known(self, release: Version) -> bool:
        return release >= self.since and (self.until is None or release < self.until)

    def is_needed(self, realized: Derived, state: DeviceState) -> bool:
        return self.known(realized.release) and super().is_needed(realized, state)


def device_entries(subsections: Iterable[DeviceSubsection], dev: Any, realized: Derived, s: DeviceState
                   ) -> list[dict[str, Any]]:
    """The subsections of a device vmsd that the release sends for state s, each body from its declared fields (the
    device state's attributes of the same names)."""
    return [{"name": sub.name, "version_id": 1,
             "body": {f.name: f.wire_value(getattr(dev, f.name)) for f in sub.fields}}
            for sub in subsections if sub.is_needed(realized, s)]


def device_read(subsections: Iterable[DeviceSubsection], listed: Iterable[Any], dev: Any) -> Any:
    """The device state with the declared fields of each subsection a payload lists (a repeated one: the last)."""
    declared = {sub.name: sub for sub in subsections if sub.fields}
    for x in listed:
        sub = declared.get(x.name)
        if sub is not None:
            dev = dataclasses.replace(dev, **{f.name: f.state_value(x.body[f.name]) for f in sub.fields})
    return dev


def default_endian(r: Derived) -> int:
    """virtio_default_endian(): the target's endianness."""
    return ENDIAN_BIG if r.big_endian_target else ENDIAN_LITTLE


# virtio_bus has_extra_state: virtio-pci with migrate-extra up to 10.0 (a6df8adf3e), always from 10.1
# (fce42ccb51f1); virtio-mmio for a modern (not legacy) device from 4.2 (44e687a4d9ab); virtio-ccw never
HAS_EXTRA_STATE = (Transport("pci") & (Property("migrate-extra") | ReleaseAtLeast(V("10.1")))) | (
    Transport("mmio") & ReleaseAtLeast(V("4.2")) & Modern())


RINGSIZE_IGNORED_FROM = V("11.1")  # virtio/ringsize: not sent, and its num_default not loaded

# What a guest can change, as far as the conditions below need it to be decided statically: device_endian is the
# resetting guest's on a bi-endian target (aarch64 virt), the target's default elsewhere; started and disabled are
# set only where their property is on (virtio_set_started, virtio_pci's bus-master clear); a driver resizes a queue
# through a modern virtio-pci device's common configuration (queue_size, VIRTIO_PCI_COMMON_Q_SIZE) or virtio-mmio's
# QueueNum, never through the legacy virtio-pci BAR (its QUEUE_NUM is read-only).
RESIZABLE = Modern() | Transport("mmio")
DEVICE_ENDIAN = StateField("device_endian", settable=BiEndianTarget(), reset=TargetEndian())
VERSION_1 = GuestFeature(F.VERSION_1)
DRIVER_OK = 4  # VIRTIO_CONFIG_S_DRIVER_OK
# virtio_set_started: started follows DRIVER_OK where use-started is on (what the matrix gives it, and where
# virtio/started can be sent at all)
STARTED = Field("started", "bool", derived=Status(DRIVER_OK) & Property("use-started"))
VIRTIO_QUEUE_MAX = 1024  # the per-queue arrays' rows on the wire (VIRTIO_QUEUE_MAX)


class QueueSizes:
    """vring.num_default of each queue realize added: virtio/ringsize's value where a stream has none."""

    def value(self, r: Derived, s: DeviceState) -> tuple[int, ...]:
        return tuple(r.queue_sizes)


# packed rings' per-queue state (vmstate_packed_virtqueue)
PACKED_ROW = (Field("last_avail_idx", "uint16"), Field("last_avail_wrap_counter", "uint8"),
              Field("used_idx", "uint16"), Field("used_wrap_counter", "uint8"), Field("inuse", "uint32"))

# Core subsections in vmstate_virtio's list order (10.2 inserted 128bit_features before 64bit_features).
CORE_SUBSECTIONS: tuple[CoreSubsection, ...] = (
    CoreSubsection("virtio/device_endian", V("2.1"), (
        Rule(V("2.1"), DEVICE_ENDIAN != TargetEndian(), "device_endian != target default"),
        Rule(V("2.4"), (VERSION_1 & (DEVICE_ENDIAN != ENDIAN_LITTLE))
             | (~VERSION_1 & (DEVICE_ENDIAN != TargetEndian())),
             "device_endian != (VERSION_1 negotiated ? little : target default)"),
    ), "616a655219", fields=(Field("device_endian", "uint8", reset=TargetEndian(), derived=GuestEndian()),)),
    CoreSubsection("virtio/128bit_features", V("10.2"), (
        Rule(V("10.2"), HostFeatures(64), "host features >= bit 64"),
    ), "virtio: serialize extended features state (10.2)",
        fields=(Field("guest_features_ex1", "uint64", of="guest_features", shift=64),)),
    CoreSubsection("virtio/64bit_features", V("2.4"), (
        Rule(V("2.4"), HostFeatures(32, 64), "host features >= bit 32"),
    ), "019a3edbb2", fields=(Field("guest_features", "uint64", of="guest_features", shift=0),)),
    CoreSubsection("virtio/virtqueues", V("2.4"), (
        Rule(V("2.4"), HostFeature(F.VERSION_1), "host offers VERSION_1"),
    ), "74aae7b22b", fields=(Field("vqs", "struct", count=VIRTIO_QUEUE_MAX, of="queues",
                                   rows=(Field("avail", "uint64"), Field("used", "uint64"))),)),
    CoreSubsection("virtio/ringsize", V("2.5"), (
        Rule(V("2.5"), QueueResized(settable=RESIZABLE), "a queue's num != num_default"),
        # 11.1 neither sends it (a legacy mmio driver's smaller QueueNum goes without it) nor loads its
        # num_default (a queue keeps the size its device allocated: 7.2 streams with it, pci and mmio, queried
        # with x-query-virtio-queue-status). The 11.1 binary, also for a modern pci driver's resize (queue_size
        # written before DRIVER_OK, pc-i440fx-5.2: 7.2 and 10.0 send it, 11.1 not); UNVERIFIED: 11.0.
        Rule(RINGSIZE_IGNORED_FROM, Never(), "never (11.1: num_default is the device's own)"),
    ), "46c5d0823d", fields=(Field("num_default", "uint32", count=VIRTIO_QUEUE_MAX, reset=QueueSizes(),
                                   loaded_until=RINGSIZE_IGNORED_FROM),)),
    CoreSubsection("virtio/broken", V("2.8"), (Rule(V("2.8"), StateField("broken")),), "791b1daf72",
                   fields=(Field("broken", "bool"),)),
    CoreSubsection("virtio/extra_state", V("2.5"), (
        Rule(V("2.5"), HAS_EXTRA_STATE, "transport has extra state (pci: migrate-extra; mmio: not legacy)"),
    ), "a6df8adf3e"),
    CoreSubsection("virtio/started", V("4.1"), (
        Rule(V("4.1"), StateField("started", settable=STARTED.derived), "started"),
    ), "badaf79cfd", fields=(STARTED,)),
    CoreSubsection("virtio/packed_virtqueues", V("4.2"), (
        Rule(V("4.2"), HostFeature(F.RING_PACKED), "host offers RING_PACKED"),
    ), "86044b24e8", fields=(Field("vqs", "struct", count=VIRTIO_QUEUE_MAX, of="packed", rows=PACKED_ROW),)),
    CoreSubsection("virtio/disabled", V("5.0"), (
        Rule(V("5.0"), StateField("disabled", settable=Transport("pci") & Property("use-disabled-flag")), "disabled"),
    ), "9d7bd0826f", fields=(Field("disabled", "bool"),)),
)


STATE_FIELDS = frozenset(f.name for f in dataclasses.fields(DeviceState))


def state_fields(subsections: Iterable[CoreSubsection]) -> list[Field]:
    """The declared fields of core subsections that DeviceState holds (an attribute, part of one, or each queue's),
    in list order."""
    return [f for s in subsections for f in s.fields if f.attribute in STATE_FIELDS]


@dataclass(frozen=True)
class TransportSubsection:
    """A subsection of the transport's extra state (inside virtio/extra_state), or nested in one."""

    name: str
    parent: str  # the vmsd whose list holds it
    transport: str
    since: Version
    needed: Rule
    source: str
    # its body: fields of the transport's state ("pci.dfselect": PciState.dfselect), or parts of the device's own
    # (the feature words past 64, a copy the transport keeps); a nested subsection is one whose parent it is
    fields: tuple[Field, ...] = ()


_U32 = "uint32"
# the modern interface's per-queue registers (virtio_pci/modern_state's VirtIOPCIQueue)
PCI_QUEUE_ROW = (Field("num", "uint16"), Field("unused", "uint8"), Field("enabled", "bool"),  # 2.5's be16 enabled
                 *(Field(n, _U32) for n in ("desc_lo", "desc_hi", "avail_lo", "avail_hi", "used_lo", "used_hi")))
MMIO_QUEUE_ROW = (Field("num", "uint16"), Field("enabled", "bool"),
                  *(Field(n, _U32) for n in ("desc_lo", "desc_hi", "avail_lo", "avail_hi", "used_lo", "used_hi")))

TRANSPORT_SUBSECTIONS: tuple[TransportSubsection, ...] = (
    TransportSubsection("virtio_pci/modern_state", "virtio_pci", "pci", V("2.5"), Rule(
        V("2.5"), Modern(), "the device is modern-capable"), "a6df8adf3e", fields=(
            Field("dfselect", _U32, of="pci.dfselect"), Field("gfselect", _U32, of="pci.gfselect"),
            Field("guest_features", _U32, count=2, of="pci.modern_guest_features"),
            Field("vqs", "struct", count=VIRTIO_QUEUE_MAX, of="pci.modern_queues", rows=PCI_QUEUE_ROW))),
    TransportSubsection("virtio_pci/modern_state/features128", "virtio_pci/modern_state", "pci", V("10.2"), Rule(
        V("10.2"), GuestFeatures(64), "guest features >= bit 64"),
        "virtio: serialize extended features state (10.2)",
        fields=(Field("guest_features_ex", _U32, count=2, of="guest_features", shift=64),)),
    TransportSubsection("virtio_mmio/state", "virtio_mmio", "mmio", V("4.2"), Rule(
        V("4.2"), Always(), "always (virtio/extra_state is sent only for a modern device)"), "44e687a4d9ab", fields=(
            Field("guest_features", _U32, count=2, of="mmio.modern_guest_features"),
            Field("vqs", "struct", count=VIRTIO_QUEUE_MAX, of="mmio.modern_queues", rows=MMIO_QUEUE_ROW))),
)
EXTRA_STATE_PARENTS = frozenset(s.parent for s in TRANSPORT_SUBSECTIONS)


def known_transport_subsections(release: Version, transport: str) -> list[TransportSubsection]:
    return [s for s in TRANSPORT_SUBSECTIONS if s.transport == transport and release >= s.since]


@dataclass(frozen=True)
class LoadCheck:
    """A check virtio_load makes, with the releases where it holds and the release's message."""

    name: str
    since: Version
    until: Version | None
    message: str  # format string over the check's named values
    fatal: bool = True  # False: the device is marked broken and the load goes on (virtio_error)
    source: str = ""

    def holds(self, release: Version) -> bool:
        return release >= self.since and (self.until is None or release < self.until)


CHECKS: tuple[LoadCheck, ...] = (
    # CVE-2013-6399 (4b53c2c72c): part of the 2014 batch that the 2.0.x stable releases carry
    LoadCheck("queue_sel", V("2.0"), None, "", source="4b53c2c72c"),
    LoadCheck("features_early", V("2.0"), V("2.4"), "Features 0x{features:x} unsupported. Allowed features: "
              "0x{host:x}", source="checked on reading the 32-bit field before 019a3edbb2"),
    LoadCheck("config_len", V("2.0"), V("2.1"), "", source="a890a2f913 made it fatal; 2f5732e964 (2.1) tolerates it"),
    LoadCheck("num_queues_pci", V("2.0"), V("2.6"), "Invalid number of PCI queues: 0x{num:x}", source="cc45995294"),
    LoadCheck("num_queues", V("2.6"), None, "Invalid number of virtqueues: 0x{num:x}", source="8a1be662a6"),
    # 11.1 refuses a queue larger than the one the device allocated, before the desc check (the 11.1 binary,
    # edited streams on pci and mmio: pc-i440fx-11.1, virt-11.1, virt-11.0); UNVERIFIED: 11.0 is taken to lack it
    # (the virtio-mmio QueueNum fix it came with is 11.1's, hw_compat_11_0)
    LoadCheck("vring_num", V("11.1"), None, "VQ {i} vring.num {num} exceeds allocated max {max}",
              source="11.1 binary (virtio: check vring.num on load; commit UNVERIFIED)"),
    # 11.1 fails the load, saying nothing, when the file ran out while it read the queues (edited streams cut short
    # on the 11.1 binary: the device data is never reached); UNVERIFIED: 11.0 is taken to lack it, as vring_num
    LoadCheck("file_error_after_queues", V("11.1"), None, "", source="11.1 binary (commit UNVERIFIED)"),
    LoadCheck("thinint_isc", V("11.1"), None, "post load hook failed for: s390_virtio_ccw_dev",
              source="11.1 binary (commit UNVERIFIED)"),
    LoadCheck("desc_zero", V("2.0"), None, "VQ {i} address 0x0 inconsistent with Host index 0x{last:x}",
              source="1abeb5a65d"),
    LoadCheck("msix_vector", V("7.2"), None, "", source="msix: Assert that specified vector is in range (7.2)"),
    # before it, virtio_pci_load_config returned msix_vector_use's -EINVAL for a config vector past the table (the
    # 5.2 source and binary); the queue vector's went into vector_queues[] first (memory corruption, not modelled)
    LoadCheck("msix_vector_use", V("2.0"), V("7.2"), "", source="hw/pci/msix.c msix_vector_use (5.2 binary)"),
    LoadCheck("features", V("2.4"), V("10.2"), "Features 0x{features:x} unsupported. Allowed features: 0x{host:x}",
              source="019a3edbb2"),
    LoadCheck("features128", V("10.2"), None, "Features 0x{features_hi:016x}{features_lo:016x} unsupported. "
              "Allowed features: 0x{host_hi:016x}{host_lo:016x}", source="virtio: serialize extended features"),
    # 5.2 only logs it (qemu_log_mask(LOG_GUEST_ERROR), off by default) and goes on: its source, and the 5.2 binary
    # loads such streams or fails them at the in-use check; the 5.1 cut-over is UNVERIFIED
    LoadCheck("avail_idx", V("2.0"), V("5.2"), "VQ {i} size 0x{num:x} Guest index 0x{avail:x} inconsistent with "
              "Host index 0x{last:x}: delta 0x{delta:x}", source="258dc7c96b"),
    LoadCheck("avail_idx_broken", V("6.0"), None, "VQ {i} size 0x{num:x} Guest index 0x{avail:x} inconsistent "
              "with Host index 0x{last:x}: delta 0x{delta:x}", fatal=False,
              source="virtio: reset device on bad guest index in virtio_load() (6.0)"),
    LoadCheck("inuse", V("2.7"), V("2.9"), "VQ {i} size 0x{num:x} < last_avail_idx 0x{last:x} - used_idx "
              "0x{used:x}", source="bccdef6b1a: unsigned int arithmetic"),
    LoadCheck("inuse_modular", V("2.9"), None, "VQ {i} size 0x{num:x} < last_avail_idx 0x{last:x} - used_idx "
              "0x{used:x}", source="e66bcc4081: u16 arithmetic"),
)


# load steps that models/load.py always checks: on each release in (since, until) one of the names holds, so that a
# schema module may move a step's check between releases (several ranges) but not leave a release without it
STEP_CHECKS: tuple[tuple[tuple[str, ...], Version, Version | None], ...] = (
    (("num_queues_pci", "num_queues"), V("2.0"), None),
    (("desc_zero",), V("2.0"), None),
    (("avail_idx",), V("2.0"), V("5.2")),  # 5.2 only logs it
    (("avail_idx_broken",), V("6.0"), None),
    (("features",), V("2.4"), V("10.2")),
    (("features128",), V("10.2"), None),
)


def queue_limit(release: Version) -> int:
    """VIRTIO_PCI_QUEUE_MAX 64 until b829c2a98f raised it to 1024 (2.4)."""
    return 1024 if release >= V("2.4") else 64
