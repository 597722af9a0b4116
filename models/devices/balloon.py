"""virtio-balloon (hw/virtio/virtio-balloon.c, §5.3)."""

from __future__ import annotations

import sys
from typing import Any

from models import features as F
from models.conditions import GuestFeature
from models.configuration import RealizeContext
from models.core import DeviceSubsection, Rule, device_entries, device_read
from models.declarations import Device, Field, offered
from models.releases import Compat, Version
from models.state import BalloonState, DeviceState
from models.vmsd import Versions, Vmsd

# the device vmsd replaced a hand-written save of the same bytes in 2.8 (019518a80e)
VERSIONS = Versions(Vmsd("virtio-balloon", 1, 1), Vmsd("virtio-balloon-device", 1, 1))
FREE_PAGE_REPORT = "virtio-balloon-device/free-page-report"  # 4.0, c13c4153f7
PAGE_POISON = "virtio-balloon-device/page-poison"  # 5.1 (hw_compat_5_0 page-poison=false)
# 5.1 named it "vitio-balloon-device/page-poison" (7483cbbaf82): no loader reads it, they all stop there and fail
# at the section footer; "virtio-balloon: Fix page-poison subsection name" (6.2) fixed the name.
PAGE_POISON_MISSPELT = "vitio-balloon-device/page-poison"
PAGE_POISON_NAMED = Version(6, 2)


def host_features(ctx: RealizeContext) -> int:
    out = 0
    for prop, b in (("deflate-on-oom", F.BALLOON_DEFLATE_ON_OOM), ("free-page-hint", F.BALLOON_FREE_PAGE_HINT),
                    ("page-poison", F.BALLOON_PAGE_POISON), ("free-page-reporting", F.BALLOON_REPORTING)):
        if ctx.on(prop):
            out |= F.bit(b)
    return out


def get_features(ctx: RealizeContext, features: int) -> int:
    return features | F.bit(F.BALLOON_STATS_VQ)


def queue_sizes(ctx: RealizeContext) -> list[int]:
    sizes = [128, 128, 128]  # inflate, deflate, stats
    if ctx.on("free-page-hint"):
        sizes.append(1024)  # free page vq: VIRTQUEUE_MAX_SIZE
    if ctx.on("free-page-reporting"):
        sizes.append(32)
    return sizes


def config_len(ctx: RealizeContext, host_features: int) -> int:
    # virtio_balloon_config_size: num_pages, actual (8); free_page_hint_cmd_id (12); poison_val (16)
    if ctx.on("qemu-4-0-config-size"):
        return 16
    if F.has(host_features, F.BALLOON_PAGE_POISON):
        return 16
    if F.has(host_features, F.BALLOON_FREE_PAGE_HINT):
        return 12
    return 8


def default_vectors(ctx: RealizeContext, nqueues: int) -> int:
    return 2  # 10.0+


def reset_state(realized: Any) -> BalloonState:
    return BalloonState()


_POISON_VAL = (Field("poison_val", "uint32"),)
_POISON = Rule(Version(5, 1), GuestFeature(F.BALLOON_PAGE_POISON), "guest negotiated PAGE_POISON")
SUBSECTIONS = (
    DeviceSubsection(FREE_PAGE_REPORT, Version(4, 0), (
        Rule(Version(4, 0), GuestFeature(F.BALLOON_FREE_PAGE_HINT), "guest negotiated FREE_PAGE_HINT"),),
        "c13c4153f7", fields=(Field("free_page_hint_cmd_id", "uint32"), Field("free_page_hint_status", "uint32"))),
    DeviceSubsection(PAGE_POISON_MISSPELT, Version(5, 1), (_POISON,), "7483cbbaf82", fields=_POISON_VAL,
                     until=PAGE_POISON_NAMED),
    DeviceSubsection(PAGE_POISON, PAGE_POISON_NAMED, (_POISON,), "virtio-balloon: Fix page-poison subsection name",
                     fields=_POISON_VAL),
)


def to_wire(dev: BalloonState, realized: Any, s: DeviceState) -> dict[str, Any]:
    return {"num_pages": dev.num_pages, "actual": dev.actual,
            "subsections": device_entries(SUBSECTIONS, dev, realized, s)}


def from_wire(value: Any) -> BalloonState:
    out: BalloonState = device_read(SUBSECTIONS, value.subsections,
                                    BalloonState(num_pages=value.num_pages, actual=value.actual))
    return out


# the vmstate field each layout field is, as QEMU names it when its read runs past the end of the file
VMSD_FIELDS = {"num_pages": "virtio-balloon-device:num_pages", "actual": "virtio-balloon-device:actual"}


def known_subsections(release: Version) -> set[str]:
    return {s.name for s in SUBSECTIONS if s.known(release)}


def load_device(dev: BalloonState, realized: Any, features_lo: int, lines: list[str]) -> BalloonState:
    return dev


# hw/virtio/virtio-balloon-pci.c: no vectors property in 7.2 (nvectors stays 0)
DEVICE = Device("virtio-balloon", VERSIONS, 5, sys.modules[__name__], pci_device_id=0x1002, pci_class=0x00FF,
                pci_vectors=0, transports=offered(Version(2, 0), "pci", "mmio", "ccw"),
                compat=(Compat(Version(2, 4), "virtio-balloon-ccw", "max_revision", 0, Version(2, 5),
                               source="ccw_machine_2_4_class_options"),),
                drawn=(("free-page-hint", (False, True)), ("deflate-on-oom", (False, True)), ("packed", (False, True))),
                qdev_id="vbal", order=30)
