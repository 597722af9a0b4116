"""virtio-balloon (hw/virtio/virtio-balloon.c, §5.3)."""

from __future__ import annotations

from typing import Any

from models import features as F
from models.configuration import RealizeContext
from models.releases import Version
from models.state import BalloonState
from models.vmsd import Versions, Vmsd

# the device vmsd replaced a hand-written save of the same bytes in 2.8 (019518a80e)
VERSIONS = Versions(Vmsd("virtio-balloon", 1, 1), Vmsd("virtio-balloon-device", 1, 1))
FREE_PAGE_REPORT = "virtio-balloon-device/free-page-report"  # 4.0, c13c4153f7
PAGE_POISON = "virtio-balloon-device/page-poison"  # 5.1 (hw_compat_5_0 page-poison=false)
# 5.1 named it "vitio-balloon-device/page-poison" (7483cbbaf82): no loader reads it, they all stop there and fail
# at the section footer; "virtio-balloon: Fix page-poison subsection name" (6.2) fixed the name.
PAGE_POISON_MISSPELT = "vitio-balloon-device/page-poison"
PAGE_POISON_NAMED = Version(6, 2)


def page_poison(release: Version) -> str:
    """The name release writes virtio-balloon-device/page-poison under."""
    return PAGE_POISON if release >= PAGE_POISON_NAMED else PAGE_POISON_MISSPELT


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


def subsections(release: Version) -> list[tuple[str, Version]]:
    return [(FREE_PAGE_REPORT, Version(4, 0)), (page_poison(release), Version(5, 1))]


def to_wire(dev: BalloonState, realized: Any, guest_features: int) -> dict[str, Any]:
    subs = []
    release = realized.release
    if release >= Version(4, 0) and F.has(guest_features, F.BALLOON_FREE_PAGE_HINT):
        subs.append({"name": FREE_PAGE_REPORT, "version_id": 1,
                     "body": {"free_page_hint_cmd_id": dev.free_page_hint_cmd_id,
                              "free_page_hint_status": dev.free_page_hint_status}})
    if release >= Version(5, 1) and F.has(guest_features, F.BALLOON_PAGE_POISON):
        subs.append({"name": page_poison(release), "version_id": 1, "body": {"poison_val": dev.poison_val}})
    return {"num_pages": dev.num_pages, "actual": dev.actual, "subsections": subs}


def from_wire(value: Any) -> BalloonState:
    st = BalloonState(num_pages=value.num_pages, actual=value.actual)
    for sub in value.subsections:
        if sub.name == FREE_PAGE_REPORT:
            st = BalloonState(st.num_pages, st.actual, sub.body.free_page_hint_cmd_id, sub.body.free_page_hint_status,
                              st.poison_val)
        elif sub.name in (PAGE_POISON, PAGE_POISON_MISSPELT):
            st = BalloonState(st.num_pages, st.actual, st.free_page_hint_cmd_id, st.free_page_hint_status,
                              sub.body.poison_val)
    return st


# the vmstate field each layout field is, as QEMU names it when its read runs past the end of the file
VMSD_FIELDS = {"num_pages": "virtio-balloon-device:num_pages", "actual": "virtio-balloon-device:actual"}


def known_subsections(release: Version) -> set[str]:
    return {name for name, since in subsections(release) if release >= since}


def load_device(dev: BalloonState, realized: Any, features_lo: int, lines: list[str]) -> BalloonState:
    return dev
