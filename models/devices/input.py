"""virtio-input (hw/input/virtio-input.c, virtio-input-hid.c; hw/virtio/virtio-input-pci.c,
hw/s390x/virtio-ccw-input.c): virtio-keyboard, virtio-mouse, virtio-tablet, virtio-multitouch.

One vmsd for all four ("virtio-input" v1: VMSTATE_VIRTIO_DEVICE and nothing else, so no device data on the wire);
post_load only sets `active` from DRIVER_OK (not migrated, no check). Two queues of 64 (eventq, statusq), no
device feature bits (get_features returns what it is given). The config space is the struct virtio_input_config
header (select, subsel, size, 5 reserved bytes) plus the largest entry of the type's config list
(virtio_input_device_realize: cfg_size = max(entry sizes) + 8); what is migrated is the last config the guest
selected and read (vdev->config), which the destination overwrites at its next read from its own cfg_select (not
migrated: 0 after load, so a zero config). The PCI proxy forces virtio 1.0 (virtio_pci_force_virtio_1: device
id 0x1052, no legacy BAR); the ccw proxy forces revision 1. Everything else is the core's."""

from __future__ import annotations

import sys
from typing import Any

import construct as c

from models.configuration import RealizeContext
from models.declarations import Device, Transport, offered
from models.props import Prop
from models.releases import Compat, Version
from models.vmsd import Versions, Vmsd

VERSIONS = Versions(Vmsd("virtio-input", 1, 1), None)  # VIRTIO_INPUT_VM_VERSION; no vdc->vmsd, no save_device
QUEUE_SIZE = 64  # eventq and statusq
CFG_HEADER = 8  # select, subsel, size, reserved[5]
# struct virtio_input_config's union: the largest entry of a type's list, in bytes. The mouse's, tablet's and
# multitouch's is their EV_KEY bitmap up to BTN_GEAR_UP (0x151: keymap_button maps the wheel buttons there with or
# without wheel-axis, which only adds REL_WHEEL to the 1- or 2-byte EV_REL bitmap); the keyboard's is 29 bytes.
# The fleet's streams (5.2, 7.2, 10.0, 11.1; pc, pc-i440fx-2.10, virt, s390-ccw-virtio): config_len 37 and 51.
LARGEST = {"virtio-keyboard": 29, "virtio-mouse": 43, "virtio-tablet": 43, "virtio-multitouch": 43}


def host_features(ctx: RealizeContext) -> int:
    return 0


def get_features(ctx: RealizeContext, features: int) -> int:
    return features  # virtio_input_get_features


def queue_sizes(ctx: RealizeContext) -> list[int]:
    return [QUEUE_SIZE, QUEUE_SIZE]


def config_len(ctx: RealizeContext, host_features: int) -> int:
    largest = LARGEST[ctx.config.device]
    serial = ctx.props.get("serial")
    if isinstance(serial, str):  # virtio_input_idstr_config: an ID_SERIAL entry of strlen(serial) (at most 128)
        largest = max(largest, min(len(serial.encode()), 128))
    return largest + CFG_HEADER


def default_vectors(ctx: RealizeContext, nqueues: int) -> int:
    return 2  # virtio-input-pci: vectors 2


def reset_state(realized: Any) -> None:
    return None


def to_wire(dev: Any, realized: Any, s: Any) -> dict[str, Any]:
    return {}


def from_wire(value: Any) -> None:
    return None


def load_device(dev: Any, realized: Any, features_lo: int, lines: list[str]) -> Any:
    return None  # virtio_input_post_load: active = DRIVER_OK, no check


_PCI_CLASS = {"virtio-keyboard": 0x0900, "virtio-mouse": 0x0902}  # PCI_CLASS_INPUT_KEYBOARD, _MOUSE; else _OTHER
_SINCE = {"virtio-multitouch": Version(8, 0)}  # "virtio-input: add a virtio-mulitouch device" (8.0)
CCW_SINCE = Version(2, 11)  # hw/s390x/virtio-ccw-input.c (UNVERIFIED: taken to be 2.11's; the fleet's 5.2 has it)
_ORDER = {"virtio-keyboard": 60, "virtio-mouse": 61, "virtio-tablet": 62, "virtio-multitouch": 63}
_QDEV_ID = {"virtio-keyboard": "vkbd", "virtio-mouse": "vmou", "virtio-tablet": "vtab", "virtio-multitouch": "vmt"}
_DATA = c.Struct()  # no device data: the section is VMSTATE_VIRTIO_DEVICE alone


# the properties of the four, on their common parents; wheel-axis came in 2.11 (hw_compat_2_10 keeps older machine
# types without it, and before it the wheel was two buttons)
PROPS = (
    Prop("virtio-input-pci", "vectors", 2, Version(2, 4), source="hw/virtio/virtio-input-pci.c"),
    Prop("virtio-input-device", "serial", None, Version(2, 4)),
    Prop("virtio-mouse-device", "wheel-axis", True, Version(2, 11), source="hw_compat_2_10"),
    Prop("virtio-tablet-device", "wheel-axis", True, Version(2, 11), source="hw_compat_2_10"),
)
COMPAT = (
    Compat(Version(2, 10), "virtio-mouse-device", "wheel-axis", False, Version(2, 11), source="hw_compat_2_10"),
    Compat(Version(2, 10), "virtio-tablet-device", "wheel-axis", False, Version(2, 11), source="hw_compat_2_10"),
)


def _device(name: str) -> Device:
    since = _SINCE.get(name, Version(2, 4))
    # virtio 1.0 on PCI came in 2.5, and the PCI proxy is modern-only (UNVERIFIED: that 2.4 had no virtio-input-pci)
    transports: tuple[Transport, ...] = offered(max(since, Version(2, 5)), "pci") + offered(since, "mmio")
    if name != "virtio-multitouch":  # virtio-ccw-input.c has no multitouch
        transports += offered(max(since, CCW_SINCE), "ccw")
    return Device(name, VERSIONS, 18, sys.modules[__name__], pci_device_id=0x1040 + 18,
                  pci_class=_PCI_CLASS.get(name, 0x0980), pci_vectors=2, transports=transports,
                  parents=("virtio-input-hid", "virtio-input"), force_virtio_1=True, qdev_id=_QDEV_ID[name],
                  drawn=(("packed", (False, True)),) + ((("wheel-axis", (True, False)),) if name in (
                      "virtio-mouse", "virtio-tablet") else ()),
                  props=PROPS, compat=COMPAT, data=_DATA, order=_ORDER[name], source="hw/input/virtio-input-hid.c")


DEVICES = tuple(_device(n) for n in _ORDER)


