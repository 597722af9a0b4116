"""The QEMU release timeline, machine types, and the machine compat properties that touch virtio.

A machine type X.Y carries every `hw_compat_A_B` entry with A.B >= X.Y; entries of an older
array override those of a newer one (QEMU applies them newest first). Entries exist in a release
from `since` (and until `until`, exclusive), so one table serves every release. The tables here are the in-tree
declarations; models/registry.py builds the registry from them (schema modules extend that, never these).
Facts: ../shared/reference/qemu-virtio-migration.md §1.3, §6, §7 (section numbers in comments).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, order=True)
class Version:
    major: int
    minor: int

    @classmethod
    def parse(cls, text: str) -> Version:
        m = re.fullmatch(r"(\d+)\.(\d+)", text.strip())
        if not m:
            raise ValueError(f"not a QEMU version: {text!r} (expected MAJOR.MINOR, e.g. 7.2)")
        return cls(int(m.group(1)), int(m.group(2)))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


V = Version.parse

# Every QEMU release since 2.0, for machine type names; 3.x has two minors, the others as listed.
ALL_VERSIONS: tuple[Version, ...] = tuple(
    Version(a, b) for a, n in ((2, 13), (3, 2), (4, 3), (5, 3), (6, 3), (7, 3), (8, 3), (9, 3), (10, 3), (11, 2))
    for b in range(n)
)

# The releases modelled: where the virtio format or its load rules changed, and where a machine
# type changed a virtio compat property (DESIGN.md "Releases to model").
RELEASES: tuple[Version, ...] = tuple(V(r) for r in (
    "2.0", "2.1", "2.4", "2.5", "2.7", "2.8", "2.9", "2.10", "2.12", "4.0", "4.1", "4.2", "5.0", "5.1",
    "5.2", "6.0", "6.2", "7.2", "8.2", "10.0", "10.1", "10.2", "11.0", "11.1"))

# Machine type families: (transport it serves, name prefix, first versioned machine type).
FAMILIES = {
    "pc-i440fx": ("pci", V("2.0")),
    "pc-q35": ("pci", V("2.0")),
    "virt": ("mmio", V("2.6")),  # arm virt is versioned from 2.6
    "s390-ccw-virtio": ("ccw", V("2.4")),  # s390x is versioned from 2.4
}
# Machine types a release no longer has: (from release, the oldest version kept, the families; () = all).
# Checked against the fleet's `-machine help`: 5.2 and 7.2 start at pc-i440fx-1.4 (2.0 here: older ones are
# not modelled), pc-q35-2.4, virt-2.6, s390-ccw-virtio-2.4; 10.0 at pc-i440fx-2.4, pc-q35-2.4, virt-2.6,
# s390-ccw-virtio-2.9; 11.1 at 5.2 in all four families.
OLDEST_MACHINE_FROM: tuple[tuple[Version, Version, tuple[str, ...]], ...] = (
    # a 2.4-cycle pc_q35.c still defines pc-q35-1.4..2.3, the 2.9.0 tree starts at 2.4 (UNVERIFIED: which of
    # 2.5..2.9 removed them; 5.2, 7.2 and 10.0 start at pc-q35-2.4)
    (V("2.9"), V("2.4"), ("pc-q35",)),
    # 7.2 has them, 10.0 does not (its pc_piix.c and s390-virtio-ccw.c define none); UNVERIFIED: removed in
    # 9.x, so 8.2 is taken to still have them
    (V("10.0"), V("2.4"), ("pc-i440fx",)),
    (V("10.0"), V("2.9"), ("s390-ccw-virtio",)),
)
# From 10.1 MACHINE_VER_DELETION stops registering a versioned machine type 6 years (majors) old: X.Y drops
# every M.m with X - M > 6, or X - M == 6 and m <= Y (include/hw/boards.h; 10.0.2 has the same rule gated on
# QEMU_VERSION >= 10.1 or QEMU_DELETE_MACHINES). 10.1 keeps 4.2, 10.2 5.0, 11.0 5.1, 11.1 5.2 (the 11.1
# binary's lists). 10.1 also deleted the 2.4/2.5 definitions with migrate-extra (fce42ccb51f1).
MACHINE_VER_DELETION_FROM = V("10.1")
MACHINE_VER_DELETION_MAJOR = 6


def machine_deleted(release: Version, version: Version) -> bool:
    """MACHINE_VER_SHOULD_DELETE for a release (a formal one: micro < 50)."""
    if release < MACHINE_VER_DELETION_FROM:
        return False
    age = release.major - version.major
    return age > MACHINE_VER_DELETION_MAJOR or (age == MACHINE_VER_DELETION_MAJOR and release.minor >= version.minor)


def oldest_machine(release: Version, family: str, all_versions: tuple[Version, ...]) -> Version:
    """The oldest versioned machine type of a family that a release has (never older than the family's first)."""
    oldest = max([FAMILIES[family][1]] + [m for r, m, fams in OLDEST_MACHINE_FROM
                                          if release >= r and (not fams or family in fams)])
    return next((v for v in all_versions if v >= oldest and not machine_deleted(release, v)), oldest)


@dataclass(frozen=True)
class Downstream:
    """A distribution's line of machine types (RHEL's `pc-q35-rhel9.4.0`): each one is its upstream family's
    machine type of the version it was cut from (that version's hw_compat entries apply), plus the entries of
    the line's own compat arrays (`Compat(..., line="rhel")`, whose `upto` counts in the line's versions)."""

    family: str  # the upstream family, e.g. pc-q35
    line: str  # e.g. rhel: the machine types are named <family>-<line><X.Y>.0
    machines: tuple[tuple[Version, Version], ...]  # (the line's version, the upstream version it was cut from)
    source: str = ""
    # whether upstream hw_compat entries reach its machine types (by the version each was cut from); False: only
    # the line's own entries do, as when a distribution copies upstream entries into its own arrays by hand
    upstream_compat: bool = True


@dataclass(frozen=True)
class MachineType:
    family: str
    version: Version  # for a downstream machine type: the upstream version it was cut from
    line: str = ""  # a downstream line (Downstream), else ""
    downstream: Version | None = None  # the version in that line

    @property
    def name(self) -> str:
        if self.line:
            return f"{self.family}-{self.line}{self.downstream}.0"
        return f"{self.family}-{self.version}"

    @property
    def transport(self) -> str:
        return FAMILIES[self.family][0]

    @classmethod
    def parse(cls, name: str, downstream: tuple[Downstream, ...] = ()) -> MachineType:
        """A machine type by name; `downstream`: the distributions' lines it may belong to (none in-tree)."""
        for d in downstream:
            m = re.fullmatch(re.escape(f"{d.family}-{d.line}") + r"(\d+)\.(\d+)\.0", name)
            for mine, upstream in d.machines if m else ():
                if mine == Version(int(m.group(1)), int(m.group(2))):  # type: ignore[union-attr]
                    return cls(d.family, upstream, d.line, mine)
        for family in sorted(FAMILIES, key=len, reverse=True):
            if name.startswith(family + "-"):
                return cls(family, Version.parse(name[len(family) + 1 :]))
        raise ValueError(f"unknown machine type {name!r} (known families: {', '.join(FAMILIES)})")

    def __str__(self) -> str:
        return self.name


def machine_types(release: Version, transport: str | None, all_versions: tuple[Version, ...],
                  downstream: tuple[Downstream, ...]) -> tuple[MachineType, ...]:
    """The versioned machine types a release has (for one transport's families, or all)."""
    out = []
    for family, (tr, _) in FAMILIES.items():
        if transport and tr != transport:
            continue
        oldest = oldest_machine(release, family, all_versions)
        out += [MachineType(family, v) for v in all_versions if oldest <= v <= release]
        out += [MachineType(family, up, d.line, mine) for d in downstream if d.family == family
                for mine, up in d.machines if oldest <= up <= release]
    return tuple(out)


# --- compat properties (§7) ------------------------------------------------------------------------


@dataclass(frozen=True)
class Compat:
    """One `hw_compat_X_Y` (or `pc_compat_X_Y`) entry: `driver.prop = value` for machine types <= X.Y."""

    upto: Version  # the X.Y of hw_compat_X_Y
    driver: str  # QEMU type the global applies to (and its subclasses)
    prop: str
    value: Any
    since: Version  # first release whose machine code has this entry
    until: Version | None = None  # first release without it
    pc_only: bool = False  # pc_compat_X_Y (hw/i386/pc.c), not hw_compat
    source: str = ""
    line: str = ""  # an entry of a downstream line's own array: `upto` is a version of that line
    # releases from before the property behaved as `value` (props.effective_props); False: as its default
    before: bool = True

    def applies(self, release: Version, machine: MachineType, downstream: tuple[Downstream, ...]) -> bool:
        if release < self.since or (self.until is not None and release >= self.until):
            return False
        if self.pc_only and not machine.family.startswith("pc-"):
            return False
        if self.line:
            return machine.line == self.line and machine.downstream is not None and machine.downstream <= self.upto
        if machine.line and not any(d.line == machine.line and d.family == machine.family and d.upstream_compat
                                    for d in downstream):
            return False
        return machine.version <= self.upto


COMPAT: tuple[Compat, ...] = (
    Compat(V("2.0"), "virtio-net-pci", "guest_announce", False, V("2.1"), pc_only=True,
           source="pc_compat_2_0 (hw/i386/pc.c)"),
    Compat(V("2.3"), "virtio-blk-pci", "any_layout", False, V("2.4"), source="hw_compat_2_3"),
    Compat(V("2.3"), "virtio-balloon-pci", "any_layout", False, V("2.4"), source="hw_compat_2_3"),
    Compat(V("2.3"), "virtio-rng-pci", "any_layout", False, V("2.4"), source="hw_compat_2_3"),
    Compat(V("2.3"), "migration", "send-configuration", False, V("2.4"), source="hw_compat_2_3"),
    Compat(V("2.3"), "migration", "send-section-footer", False, V("2.4"), source="hw_compat_2_3"),
    Compat(V("2.4"), "virtio-pci", "migrate-extra", False, V("2.5"), until=V("10.1"), source="hw_compat_2_4"),
    Compat(V("2.4"), "virtio-pci", "x-disable-pcie", True, V("2.5"), source="hw_compat_2_4"),
    Compat(V("2.4"), "virtio-blk-device", "scsi", True, V("2.5"), source="hw_compat_2_4"),
    # ccw_machine_2_4_class_options: max_revision=0 on each virtio-*-ccw of 2.4 (the devices declare theirs)
    Compat(V("2.6"), "virtio-pci", "disable-modern", True, V("2.7"), source="hw_compat_2_6"),
    Compat(V("2.6"), "virtio-pci", "disable-legacy", "off", V("2.7"), source="hw_compat_2_6"),
    Compat(V("2.6"), "virtio-mmio", "format_transport_address", False, V("2.7"), source="hw_compat_2_6"),
    Compat(V("2.6"), "virtual-css-bridge", "css_dev_path", False, V("2.7"),
           source="ccw_machine_2_6_class_options (hw/s390x/s390-virtio-ccw.c)"),
    Compat(V("2.7"), "virtio-pci", "page-per-vq", True, V("2.8"), source="hw_compat_2_7"),
    Compat(V("2.7"), "virtio-pci", "x-ignore-backend-features", True, V("2.8"), source="hw_compat_2_7"),
    Compat(V("2.8"), "virtio-pci", "x-pcie-deverr-init", False, V("2.9"), source="hw_compat_2_8"),
    Compat(V("2.8"), "virtio-pci", "x-pcie-lnkctl-init", False, V("2.9"), source="hw_compat_2_8"),
    Compat(V("2.8"), "virtio-pci", "x-pcie-pm-init", False, V("2.9"), source="hw_compat_2_8"),
    Compat(V("2.9"), "virtio-net-device", "x-mtu-bypass-backend", False, V("2.10"), source="hw_compat_2_9"),
    Compat(V("2.11"), "virtio-blk-pci", "vectors", 2, V("2.12"), source="hw_compat_2_11"),
    Compat(V("3.1"), "virtio-blk-device", "discard", False, V("4.0"), source="hw_compat_3_1"),
    Compat(V("3.1"), "virtio-blk-device", "write-zeroes", False, V("4.0"), source="hw_compat_3_1"),
    Compat(V("3.1"), "virtio-balloon-device", "qemu-4-0-config-size", False, V("4.1"), source="hw_compat_3_1"),
    Compat(V("4.0"), "virtio-device", "use-started", False, V("4.1"), source="hw_compat_4_0"),
    Compat(V("4.0"), "virtio-balloon-device", "qemu-4-0-config-size", True, V("4.1"), source="hw_compat_4_0"),
    Compat(V("4.1"), "virtio-pci", "x-pcie-flr-init", False, V("4.2"), source="hw_compat_4_1"),
    # 9d7bd0826f put it in hw_compat_4_1; Garzarella's fix moved it to hw_compat_4_2 in 6.0 (§3)
    Compat(V("4.1"), "virtio-device", "use-disabled-flag", False, V("5.0"), until=V("6.0"),
           source="hw_compat_4_1 in 5.0-5.2 (9d7bd0826f)"),
    Compat(V("4.2"), "virtio-device", "use-disabled-flag", False, V("6.0"), source="hw_compat_4_2 from 6.0"),
    Compat(V("4.2"), "virtio-blk-device", "queue-size", 128, V("5.0"), source="hw_compat_4_2"),
    Compat(V("4.2"), "virtio-blk-device", "seg-max-adjust", False, V("5.0"), source="hw_compat_4_2"),
    Compat(V("5.0"), "virtio-device", "x-disable-legacy-check", True, V("5.1"), source="hw_compat_5_0"),
    Compat(V("5.0"), "virtio-balloon-device", "page-poison", False, V("5.1"), source="hw_compat_5_0"),
    Compat(V("5.1"), "virtio-blk-device", "num-queues", 1, V("5.2"), source="hw_compat_5_1"),
    Compat(V("5.1"), "virtio-pci", "x-ats-page-aligned", False, V("5.2"), source="hw_compat_5_1"),
    Compat(V("5.2"), "virtio-blk-device", "report-discard-granularity", False, V("6.0"), source="hw_compat_5_2"),
    Compat(V("5.2"), "virtio-net-pci", "vectors", 3, V("6.0"), source="hw_compat_5_2 (virtio-net-pci-base)"),
    Compat(V("7.1"), "virtio-device", "queue_reset", False, V("7.2"), source="hw_compat_7_1"),
    Compat(V("7.1"), "virtio-rng-pci", "vectors", 0, V("7.2"), source="hw_compat_7_1"),
    Compat(V("8.1"), "virtio-net-device", "host_uso", False, V("8.2"), source="hw_compat_8_1"),
    Compat(V("8.1"), "virtio-net-device", "guest_uso4", False, V("8.2"), source="hw_compat_8_1"),
    Compat(V("8.1"), "virtio-net-device", "guest_uso6", False, V("8.2"), source="hw_compat_8_1"),
    Compat(V("9.0"), "virtio-pci", "x-pcie-pm-no-soft-reset", False, V("9.1"), source="hw_compat_9_0"),
    Compat(V("9.1"), "virtio-pci", "x-pcie-ext-tag", False, V("9.2"), source="hw_compat_9_1 (TYPE_PCI_DEVICE)"),
    Compat(V("9.2"), "virtio-balloon-pci", "vectors", 0, V("10.0"), source="hw_compat_9_2"),
    Compat(V("10.1"), "virtio-net-device", "host_tunnel", False, V("10.2"), source="hw_compat_10_1"),
    Compat(V("10.1"), "virtio-net-device", "host_tunnel_csum", False, V("10.2"), source="hw_compat_10_1"),
    Compat(V("10.1"), "virtio-net-device", "guest_tunnel", False, V("10.2"), source="hw_compat_10_1"),
    Compat(V("10.1"), "virtio-net-device", "guest_tunnel_csum", False, V("10.2"), source="hw_compat_10_1"),
    # hw_compat_10_2 and pc_compat_10_2 (11.0) touch no virtio device (the 11.1 binary's query-machines
    # compat-props: isa-cirrus-vga and scsi-block only).
    # 11.1 sizes a virtio-mmio device's queues by the device and refuses a larger QueueNum (CVE-2026-50626,
    # UNVERIFIED: the fix's commit); older machine types keep QueueNumMax 1024 by realizing every queue with
    # 1024 entries, so 11.1 there saves num 1024 where 11.0 saved the device's size (the 11.1 binary:
    # x-query-virtio-queue-status on virt-11.0 and virt-11.1). Before 11.1 queues had the device's sizes.
    Compat(V("11.0"), "virtio-mmio", "x-override-queue-size", 1024, V("11.1"), source="hw_compat_11_0",
           before=False),
)

def compat_values(release: Version, machine: MachineType, qom_type: str, compat: tuple[Compat, ...],
                  downstream: tuple[Downstream, ...], parents: Mapping[str, tuple[str, ...]]) -> dict[str, Any]:
    """Property values the machine's compat globals give an object of `qom_type` (and, by `parents`, of the
    types it derives from)."""
    reach = {qom_type, *parents.get(qom_type, ())}
    out: dict[str, Any] = {}
    # newest array first, so that an older array's entry wins (as QEMU registers them)
    for entry in sorted(compat, key=lambda e: e.upto, reverse=True):
        if entry.driver in reach and entry.applies(release, machine, downstream):
            out[entry.prop] = entry.value
    return out
