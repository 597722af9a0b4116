"""What a destination QEMU holds after a load, in one shape whichever way it was read.

From x-query-virtio-status / -queue-status where the release has them and they are safe (an oracle
independent of our decoder); else from the destination's own re-save, decoded: status, features,
queue_sel and the queues from the payload, broken from the `virtio/broken` subsection, the used index
from the RAM pages of that stream (release.py says which release takes which way).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError, StreamError
from harness.qemu import tap
from harness.wire.stream import decode_stream
from models import features as F
from models.cmdline import DeviceLine
from models.config import realize
from models.model import guest_rings, saved_queue_count, state_from_wire, with_rings
from models.registry import BASE
from models.releases import Version

QUERY = "x-query-virtio-status"
RESAVE = "re-save"
RESAVE_AND_QUEUES = "re-save, queues by x-query-virtio-queue-status"


@dataclass(frozen=True)
class LoadedQueue:
    index: int
    num: int
    desc: int
    last_avail_idx: int
    used_idx: int


@dataclass(frozen=True)
class LoadedDevice:
    """One virtio device as the destination holds it; `source` says how it was read (QUERY, RESAVE or
    RESAVE_AND_QUEUES)."""

    status: int
    guest_features: int
    queue_sel: int
    broken: bool
    num_vqs: int
    queues: tuple[LoadedQueue, ...]
    source: str
    unknown_features: tuple[str, ...] = ()
    error: str | None = None  # its re-save does not decode (a decoder or model bug): nothing above is known


def qom_path(line: DeviceLine) -> str:
    """The QOM path of a device's VirtIODevice: virtio-mmio's `-device virtio-*-device` is one itself;
    a pci or ccw proxy holds it as its `virtio-backend` child."""
    base = f"/machine/peripheral/{line.qdev_id}"
    return base if line.config.transport == "mmio" else f"{base}/virtio-backend"


# x-query-virtio-status names: VIRTIO_CONFIG_S_* statuses, and feature names whose bit models/features.py
# holds under a shorter name (NET_GSO for VIRTIO_NET_F_GSO).
STATUS_BITS = {"ACKNOWLEDGE": 1, "DRIVER": 2, "DRIVER_OK": 4, "FEATURES_OK": 8, "DEVICE_NEEDS_RESET": 0x40,
               "NEEDS_RESET": 0x40, "FAILED": 0x80}
_FEATURE_ALIASES = {"VIRTIO_F_IOMMU_PLATFORM": F.ACCESS_PLATFORM, "VIRTIO_F_RING_PACKED": F.RING_PACKED,
                    "VIRTIO_F_RING_RESET": F.RING_RESET, "VIRTIO_F_IN_ORDER": F.IN_ORDER,
                    "VHOST_USER_F_PROTOCOL_FEATURES": F.BAD_FEATURE}


def _feature_names() -> dict[str, int]:
    out = dict(_FEATURE_ALIASES)
    for name, value in vars(F).items():
        if not name.isupper() or not isinstance(value, int):
            continue
        for prefix, qemu in (("NET_", "VIRTIO_NET_F_"), ("BLK_", "VIRTIO_BLK_F_"), ("BALLOON_", "VIRTIO_BALLOON_F_"),
                             ("SCSI_", "VIRTIO_SCSI_F_"), ("RING_", "VIRTIO_RING_F_")):
            if name.startswith(prefix):
                out.setdefault(qemu + name[len(prefix):], value)
                break
        else:
            out.setdefault("VIRTIO_F_" + name, value)
    return out


FEATURE_BITS = _feature_names()


def _names(entries: Sequence[str]) -> list[str]:
    return [e.split(":", 1)[0].strip() for e in entries]


def status_value(st: dict[str, Any]) -> int:
    """x-query-virtio-status `status` as the status byte."""
    value = int(st.get("unknown-statuses", 0))
    for name in _names(st.get("statuses", [])):
        value |= STATUS_BITS.get(name.removeprefix("VIRTIO_CONFIG_S_"), 0)
    return value


# entries whose name is not their bit's: virtio-qmp.c labels GUEST_USO6 "VIRTIO_NET_F_GUEST_USO4: Driver can receive
# USOv6" (the 10.0.2 source; 10.2.2 has it right), so the description decides
_MISLABELLED = {"VIRTIO_NET_F_GUEST_USO4: Driver can receive USOv6": F.NET_GUEST_USO6}


def features_value(ft: dict[str, Any]) -> tuple[int, list[str]]:
    """A decoded feature set as bits, and the names this tool cannot map."""
    value = int(ft.get("unknown-dev-features", 0))
    unknown = []
    entries = [*ft.get("transports", []), *ft.get("dev-features", [])]
    for entry in entries:
        if entry.strip() in _MISLABELLED:
            value |= 1 << _MISLABELLED[entry.strip()]
    for name in _names([e for e in entries if e.strip() not in _MISLABELLED]):
        if name in FEATURE_BITS:
            value |= 1 << FEATURE_BITS[name]
        else:
            unknown.append(name)
    return value, unknown


def from_query(status: dict[str, Any], queues: Sequence[dict[str, Any]]) -> LoadedDevice:
    """x-query-virtio-status and the -queue-status of each of its queues."""
    features, unknown = features_value(status.get("guest-features", {}))
    return LoadedDevice(
        status_value(status.get("status", {})), features, int(status.get("queue-sel", 0)),
        bool(status.get("broken")), int(status.get("num-vqs", 0)),
        tuple(LoadedQueue(q["queue-index"], q.get("vring-num", 0), q.get("vring-desc", 0), q.get("last-avail-idx", 0),
                          q.get("used-idx", 0)) for q in queues),
        QUERY, tuple(unknown))


def from_resave(data: bytes, argv: Sequence[str], release: Version) -> dict[str, LoadedDevice]:
    """Each virtio device of a destination's re-save, by QOM path, realized from its command line as
    the model of `release` does it (the re-save is in the destination's own layout)."""
    try:
        lines = {line.key: line for line in tap.lines(argv, release)}
    except HarnessError:
        return {}  # a command line the model cannot read: no device to compare, compare_state() says so
    try:
        s = decode_stream(data, strict=False, extras=BASE.wire)
    except StreamError as exc:
        return {qom_path(line): LoadedDevice(0, 0, 0, False, 0, (), RESAVE, error=f"the re-save does not decode: {exc}")
                for line in lines.values()}
    out = {}
    for p in s.devices:
        line = lines.get(p.key)
        if line is None:
            continue
        if p.value is None:
            out[qom_path(line)] = LoadedDevice(0, 0, 0, False, 0, (), RESAVE, error=str(p.error))
            continue
        state = state_from_wire(realize(line.config), p.value)
        if s.memory is not None:
            state = with_rings(state, guest_rings(s.memory, s.machine, state))
        n = saved_queue_count(state)
        out[qom_path(line)] = LoadedDevice(
            state.status, state.guest_features, state.queue_sel, state.broken, n,
            tuple(LoadedQueue(i, q.num, q.desc, q.last_avail_idx, q.used_idx) for i, q in enumerate(state.queues[:n])),
            RESAVE)
    return out
