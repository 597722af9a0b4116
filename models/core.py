"""The virtio core's format changes and load checks, each declared once with the release that
introduced it (hw/virtio/virtio.c; reference §2-§4). A release is the set of declarations up to it; the tables
here are the in-tree ones, which models/registry.py builds the registry from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from models import features as F
from models.conditions import Never, StateField
from models.configuration import Derived
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

    def rule(self, release: Version) -> Rule | None:
        for r in reversed(self.needed):  # in `since` order
            if r.since <= release:
                return r
        return None

    def is_needed(self, realized: Derived, state: DeviceState) -> bool:
        rule = self.rule(realized.release)
        return rule is not None and realized.release >= self.since and rule.test(realized, state)


def default_endian(r: Derived) -> int:
    """virtio_default_endian(): the target's endianness."""
    return ENDIAN_BIG if r.big_endian_target else ENDIAN_LITTLE


def has_extra_state(r: Derived, s: DeviceState) -> bool:
    tr = r.config.transport
    if tr == "pci":  # migrate-extra up to 10.0 (a6df8adf3e), always from 10.1 (fce42ccb51f1)
        return r.release >= V("10.1") or bool(r.props.get("migrate-extra", False))
    if tr == "mmio":  # !proxy->legacy (44e687a4d9ab, 4.2)
        return r.release >= V("4.2") and r.modern
    return False


def pci_modern_state_needed(r: Derived) -> bool:
    return r.modern


RINGSIZE_IGNORED_FROM = V("11.1")  # virtio/ringsize: not sent, and its num_default not loaded


def ring_size_changed(r: Derived, s: DeviceState) -> bool:
    defaults = s.num_default or r.queue_sizes
    return any(q.num != (defaults[i] if i < len(defaults) else 0) for i, q in enumerate(s.queues))


# Core subsections in vmstate_virtio's list order (10.2 inserted 128bit_features before 64bit_features).
CORE_SUBSECTIONS: tuple[CoreSubsection, ...] = (
    CoreSubsection("virtio/device_endian", V("2.1"), (
        Rule(V("2.1"), lambda r, s: s.device_endian != default_endian(r), "device_endian != target default"),
        Rule(V("2.4"), lambda r, s: s.device_endian != (ENDIAN_LITTLE if F.has(s.guest_features, F.VERSION_1)
                                                        else default_endian(r)),
             "device_endian != (VERSION_1 negotiated ? little : target default)"),
    ), "616a655219"),
    CoreSubsection("virtio/128bit_features", V("10.2"), (
        Rule(V("10.2"), lambda r, s: r.host_features >> 64 != 0, "host features >= bit 64"),
    ), "virtio: serialize extended features state (10.2)"),
    CoreSubsection("virtio/64bit_features", V("2.4"), (
        Rule(V("2.4"), lambda r, s: (r.host_features >> 32) & 0xFFFFFFFF != 0, "host features >= bit 32"),
    ), "019a3edbb2"),
    CoreSubsection("virtio/virtqueues", V("2.4"), (
        Rule(V("2.4"), lambda r, s: F.has(r.host_features, F.VERSION_1), "host offers VERSION_1"),
    ), "74aae7b22b"),
    CoreSubsection("virtio/ringsize", V("2.5"), (
        Rule(V("2.5"), ring_size_changed, "a queue's num != num_default"),
        # 11.1 neither sends it (a legacy mmio driver's smaller QueueNum goes without it) nor loads its
        # num_default (a queue keeps the size its device allocated: 7.2 streams with it, pci and mmio, queried
        # with x-query-virtio-queue-status). The 11.1 binary; UNVERIFIED: 11.0, and a modern pci driver's resize.
        Rule(RINGSIZE_IGNORED_FROM, Never(), "never (11.1: num_default is the device's own)"),
    ), "46c5d0823d"),
    CoreSubsection("virtio/broken", V("2.8"), (Rule(V("2.8"), StateField("broken")),), "791b1daf72"),
    CoreSubsection("virtio/extra_state", V("2.5"), (
        Rule(V("2.5"), has_extra_state, "transport has extra state (pci: migrate-extra; mmio: not legacy)"),
    ), "a6df8adf3e"),
    CoreSubsection("virtio/started", V("4.1"), (Rule(V("4.1"), lambda r, s: s.started, "started"),), "badaf79cfd"),
    CoreSubsection("virtio/packed_virtqueues", V("4.2"), (
        Rule(V("4.2"), lambda r, s: F.has(r.host_features, F.RING_PACKED), "host offers RING_PACKED"),
    ), "86044b24e8"),
    CoreSubsection("virtio/disabled", V("5.0"), (Rule(V("5.0"), lambda r, s: s.disabled, "disabled"),), "9d7bd0826f"),
)


@dataclass(frozen=True)
class TransportSubsection:
    """A subsection of the transport's extra state (inside virtio/extra_state), or nested in one."""

    name: str
    parent: str  # the vmsd whose list holds it
    transport: str
    since: Version
    needed: Rule
    source: str


TRANSPORT_SUBSECTIONS: tuple[TransportSubsection, ...] = (
    TransportSubsection("virtio_pci/modern_state", "virtio_pci", "pci", V("2.5"), Rule(
        V("2.5"), lambda r, s: pci_modern_state_needed(r), "the device is modern-capable"), "a6df8adf3e"),
    TransportSubsection("virtio_pci/modern_state/features128", "virtio_pci/modern_state", "pci", V("10.2"), Rule(
        V("10.2"), lambda r, s: s.guest_features >> 64 != 0, "guest features >= bit 64"),
        "virtio: serialize extended features state (10.2)"),
    TransportSubsection("virtio_mmio/state", "virtio_mmio", "mmio", V("4.2"), Rule(
        V("4.2"), lambda r, s: True, "always (virtio/extra_state is sent only for a modern device)"), "44e687a4d9ab"),
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
