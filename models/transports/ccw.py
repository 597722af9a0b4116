"""virtio-ccw transport state after realize and reset (hw/s390x/css.c, virtio-ccw.c): the subchannel
QEMU builds for a virtio device in the virtual channel subsystem 0xfe."""

from __future__ import annotations

from typing import Any

import construct as c

from harness.wire.ccw import VirtioCcwConfig
from harness.wire.primitives import FlatArray, Subsections

VIRTUAL_CSSID = 0xFE
VIRTIO_CCW_CU_TYPE = 0x3832
PMCW_FLAGS_MASK_DNV = 0x0001  # device number valid


def _zero(sc: Any) -> Any:
    """The all-zero value of a layout (no subsections)."""
    while isinstance(sc, c.Renamed):
        sc = sc.subcon
    if isinstance(sc, c.FormatField):
        return 0
    if isinstance(sc, c.Bytes):
        return bytes(sc.length)
    if isinstance(sc, c.Struct):
        return {s.name: _zero(s) for s in sc.subcons if s.name}
    if isinstance(sc, c.Array):
        return [_zero(sc.subcon) for _ in range(sc.count)]
    if isinstance(sc, FlatArray):
        return [sc.zero] * sc.count
    if isinstance(sc, Subsections):
        return []
    raise TypeError(f"no zero value for {sc}")


def reset_tree(device_id: int, devno: int, subsections: bool = True, schid: int | None = None) -> dict[str, Any]:
    """css_sch_build_virtual_schib and virtio_ccw_device_realize for the device at `devno` on subchannel `schid`
    (by default the same number, as css_create_sch gives it without `devno=`); the ORB and
    adapter summary-offset subsections are sent when css migration is enabled (machine types >= 2.10,
    UNVERIFIED boundary)."""
    t: dict[str, Any] = _zero(VirtioCcwConfig)
    sch = t["parent_obj"]["sch"]
    sch.update(cssid=VIRTUAL_CSSID, ssid=0, migrated_schid=devno if schid is None else schid, devno=devno)
    pmcw = sch["curr_status"]["pmcw"]
    pmcw.update(flags=PMCW_FLAGS_MASK_DNV, devno=devno, lpm=0x80, pim=0x80, pom=0xFF, pam=0x80)
    sch["id"].update(reserved=0xFF, cu_type=VIRTIO_CCW_CU_TYPE, cu_model=device_id)
    if subsections:
        sch["subsections"] = [{"name": "s390_subch_dev/orb", "version_id": 1,
                               "body": {"orb": _zero(_orb_layout()), "subsections": []}}]
        t["routes"]["adapter"]["subsections"] = [{"name": "s390_adapter_info/summary_offset", "version_id": 1,
                                                  "body": {"summary_offset": 0, "subsections": []}}]
    t["tmp"]["config_vector"] = 0xFFFF
    t["revision"] = -1  # no revision negotiated yet
    return t


def _orb_layout() -> Any:
    sch = _field(_field(VirtioCcwConfig, "parent_obj"), "sch")
    subs = next(s for s in sch.subcons if s.name == "subsections")
    while isinstance(subs, c.Renamed):
        subs = subs.subcon
    body = subs.body("s390_subch_dev/orb", 1)
    return _field(body, "orb")


def _field(sc: Any, name: str) -> Any:
    while isinstance(sc, c.Renamed):
        sc = sc.subcon
    return next(s for s in sc.subcons if s.name == name)
