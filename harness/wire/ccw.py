"""The virtio-ccw transport part of a virtio device's payload (QEMU 7.2, s390x).

`virtio_ccw_save_config` writes `vmstate_virtio_ccw_dev` with vmstate_save_state; `virtio_ccw_save_queue`
writes one be16 per queue. Every vmsd, nested ones and each struct-array element included, is followed by
its subsection list, as `vmstate_load_state` reads it. Reference: ../shared/reference/qemu-virtio-migration.md
§1.4, §1.5 and §6.3.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import construct as c

from harness.wire.primitives import Array, Subsections, be16, be32, be64, sbe32, u8, vbool

__all__ = ["MAX_CIWS", "VersionRefused", "VirtioCcwConfig", "ccw_queue_vector"]

MAX_CIWS = 62  # include/hw/s390x/css.h


def _vmsd(name: str, *fields: Any, subsections: Mapping[str, Any] | None = None) -> c.Struct:
    """A vmsd's fields, then its subsection list (empty when the vmsd declares none: the loader still
    looks, and fails on a subsection whose name has this prefix)."""
    return c.Struct(*fields, "subsections" / Subsections(name, subsections or {}))


class VersionRefused(c.ExplicitError):  # type: ignore[misc]
    """vmstate_load_state refuses a subsection's incoming version (its local one is 1)."""

    def __init__(self, name: str, version_id: int) -> None:
        age = "new" if version_id > 1 else "old"
        super().__init__(f"{name}: incoming version_id {version_id} is too {age}")
        self.name, self.version_id = name, version_id


def _version_1(name: str, body: Any) -> Callable[[int], Any]:
    """The body of a version-1 subsection; vmstate_load_state refuses any other incoming version."""

    def pick(version_id: int) -> Any:
        if version_id != 1:
            raise VersionRefused(name, version_id)
        return body

    return pick


# --- the subchannel (SubchDev) ---------------------------------------------------------------------

# hw/s390x/css.c
vmstate_pmcw = _vmsd(
    "s390_pmcw",
    "intparm" / be32,
    "flags" / be16,
    "devno" / be16,
    "lpm" / u8,
    "pnom" / u8,
    "lpum" / u8,
    "pim" / u8,
    "mbi" / be16,
    "pom" / u8,
    "pam" / u8,
    "chpid" / c.Bytes(8),
    "chars" / be32,
)

# hw/s390x/css.c
vmstate_scsw = _vmsd(
    "s390_scsw",
    "flags" / be16,
    "ctrl" / be16,
    "cpa" / be32,
    "dstat" / u8,
    "cstat" / u8,
    "count" / be16,
)

# hw/s390x/css.c
vmstate_schib = _vmsd(
    "s390_schib",
    "pmcw" / vmstate_pmcw,
    "scsw" / vmstate_scsw,
    "mba" / be64,
    "mda" / c.Bytes(4),
)

# hw/s390x/css.c
vmstate_ccw1 = _vmsd(
    "s390_ccw1",
    "cmd_code" / u8,
    "flags" / u8,
    "count" / be16,
    "cda" / be32,
)

# hw/s390x/css.c
vmstate_ciw = _vmsd(
    "s390_ciw",
    "type" / u8,
    "command" / u8,
    "count" / be16,
)

# hw/s390x/css.c (VMSTATE_STRUCT_ARRAY: each CIW is followed by its own, always empty, subsection list)
vmstate_sense_id = _vmsd(
    "s390_sense_id",
    "reserved" / u8,  # 0xff
    "cu_type" / be16,  # 0x3832 for virtio
    "cu_model" / u8,  # the virtio device id
    "dev_type" / be16,
    "dev_model" / u8,
    "unused" / u8,
    "ciw" / Array(MAX_CIWS, vmstate_ciw),
)

# hw/s390x/css.c
vmstate_orb = _vmsd(
    "s390_orb",
    "intparm" / be32,
    "ctrl0" / be16,
    "lpm" / u8,
    "ctrl1" / u8,
    "cpa" / be32,
)

# hw/s390x/css.c (needed when css_migration_enabled(), i.e. machines 2.10 and later)
vmstate_schdev_orb = _vmsd("s390_subch_dev/orb", "orb" / vmstate_orb)

# hw/s390x/css.c
vmstate_subch_dev = _vmsd(
    "s390_subch_dev",
    "cssid" / u8,  # _EQUAL: must match the destination
    "ssid" / u8,  # _EQUAL
    "migrated_schid" / be16,  # pre_save copies schid here
    "devno" / be16,  # _EQUAL ("Devno mismatch, tried to load wrong section!")
    "thinint_active" / vbool,
    "curr_status" / vmstate_schib,
    "sense_data" / c.Bytes(32),
    "channel_prog" / be64,
    "last_cmd" / vmstate_ccw1,
    "last_cmd_valid" / vbool,
    "id" / vmstate_sense_id,
    "ccw_fmt_1" / vbool,
    "ccw_no_data_cnt" / u8,
    subsections={"s390_subch_dev/orb": _version_1("s390_subch_dev/orb", vmstate_schdev_orb)},
)

# hw/s390x/ccw-device.c (VMSTATE_CCW_DEVICE)
vmstate_ccw_dev = _vmsd("s390_ccw_dev", "sch" / vmstate_subch_dev)


# --- indicators, routes, and the virtio-ccw device -------------------------------------------------

# hw/s390x/css.c (the WITH_TMP inside vmstate_ind_addr; len 0 means no indicator)
vmstate_ind_addr_tmp = _vmsd("s390_ind_addr_tmp", "len" / sbe32, "addr" / be64)

# hw/s390x/css.c (VMSTATE_PTR_TO_IND_ADDR; this outer vmsd has the same name as its tmp)
vmstate_ind_addr = _vmsd("s390_ind_addr_tmp", "tmp" / vmstate_ind_addr_tmp)

# hw/intc/s390_flic.c (needed when css_migration_enabled())
vmstate_adapter_info_so = _vmsd("s390_adapter_info/summary_offset", "summary_offset" / be32)

# hw/intc/s390_flic.c
vmstate_adapter_info = _vmsd(
    "s390_adapter_info",
    "ind_offset" / be64,
    subsections={
        "s390_adapter_info/summary_offset": _version_1(
            "s390_adapter_info/summary_offset", vmstate_adapter_info_so
        ),
    },
)

# hw/intc/s390_flic.c
vmstate_adapter_routes = _vmsd("s390_adapter_routes", "adapter" / vmstate_adapter_info)

# hw/s390x/virtio-ccw.c (WITH_TMP: the VirtIODevice's config_vector)
vmstate_virtio_ccw_dev_tmp = _vmsd("s390_virtio_ccw_dev_tmp", "config_vector" / be16)

# hw/s390x/virtio-ccw.c (v1)
VirtioCcwConfig = _vmsd(
    "s390_virtio_ccw_dev",
    "parent_obj" / vmstate_ccw_dev,
    "indicators" / vmstate_ind_addr,
    "indicators2" / vmstate_ind_addr,
    "summary_indicator" / vmstate_ind_addr,
    "tmp" / vmstate_virtio_ccw_dev_tmp,
    "routes" / vmstate_adapter_routes,
    "thinint_isc" / u8,
    "revision" / sbe32,  # -1 until the guest negotiates a revision
)

# hw/s390x/virtio-ccw.c virtio_ccw_save_queue: always present on ccw (VIRTIO_NO_VECTOR 0xffff when unset)
ccw_queue_vector = be16
