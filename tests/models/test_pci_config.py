"""models.transports.pci: the virtio-pci config space, its load-check masks, and guest config writes.

Pure tests pin the layout to what QEMU 7.2's source does (literals, never generated from the model); the
tests marked ``qemu`` compare with a real QEMU 7.2: the saved config space of random configurations,
loads of a patched config byte (rejected with exactly the model's line, or accepted), and guest config
writes over the 0xcf8/0xcfc ports.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.errors import HarnessError, SchemaError, StreamError
from harness.qemu.qtest import connect_unix
from harness.wire.stream import decode_stream
from harness.wire.virtio import msix_vectors, pci_config_size
from models.registry import BASE
from models.transports.pci import (
    PciConfigError,
    PciConfigSpace,
    bad_config_data,
    guest_write,
    virtio_pci_config_space,
)

NET, BLK, RNG = (BASE.device(n) for n in ("virtio-net", "virtio-blk", "virtio-rng"))

# --- helpers --------------------------------------------------------------------------------------------


def le(buf: bytes, offset: int, width: int) -> int:
    return int.from_bytes(buf[offset : offset + width], "little")


def cap_chain(config: bytes) -> list[tuple[int, int]]:
    """(offset, capability id) in list order from 0x34."""
    out: list[tuple[int, int]] = []
    ptr = config[0x34]
    while ptr and len(out) < 48:
        out.append((ptr, config[ptr]))
        ptr = config[ptr + 1]
    return out


def read_only(space: PciConfigSpace, i: int) -> int:
    return space.cmask[i] & ~space.wmask[i] & ~space.w1cmask[i] & 0xFF


NET_72 = {"disable-legacy": "off", "disable-modern": False, "vectors": 4, "romfile": ""}  # pc-i440fx-7.2
NET_72_EXPRESS = {"disable-modern": False, "vectors": 4, "romfile": ""}  # pc-q35-7.2 behind a root port

# Read from a QEMU 7.2.22 migration stream (virtio-net-pci, hubport, romfile=), kept as a literal anchor.
QEMU72_NET_I440FX = bytes.fromhex(
    "f41a001000001000000000020000000001000000000000000000000000000000"
    "0c0000000000000000000000f41a010000000000980000000000000000010000"
    "0900100104000000000000000010000009401003040000000010000000100000"
    "0950100404000000002000000010000009601402040000000030000000100000"
    "0400000009701405000000000000000000000000000000001184030001000000"
    "0108000000000000000000000000000000000000000000000000000000000000" + "00" * 64)
QEMU72_NET_Q35_ROOT_PORT = bytes.fromhex(
    "f41a411000001000010000020000000000000000000000000000000000000000"
    "0c0000000000000000000000f41a001100000000dc0000000000000000010000"
    "1000020000800010000000001104000000001100000000000000000000000000"
    "0000000000003000000000000000000000000000000000000000000001400300"
    "00000000097c1001040000000000000000100000098410030400000000100000"
    "001000000994100404000000002000000010000009a414020400000000300000"
    "001000000400000009b414050000000000000000000000000000000011c80300"
    "0100000001080000000000000000000000000000000000000000000000000000") + bytes(4096 - 256)


# --- layout ---------------------------------------------------------------------------------------------


def test_transitional_net_matches_qemu_bytes_and_layout() -> None:
    s = virtio_pci_config_space(NET, NET_72, express=False, config_len=8)
    assert s.config == QEMU72_NET_I440FX
    assert len(s.cmask) == len(s.wmask) == len(s.w1cmask) == 256
    # the last capability added is the head: MSI-X, then pci-cfg, notify, device, isr, common
    assert cap_chain(s.config) == [(0x98, 0x11), (0x84, 0x09), (0x70, 0x09), (0x60, 0x09), (0x50, 0x09), (0x40, 0x09)]
    assert [s.config[o + 3] for o, _ in cap_chain(s.config)[1:]] == [5, 2, 4, 3, 1]  # cfg_type
    assert le(s.wmask, 0x10, 4) == 0xFFFFFFE0  # legacy I/O BAR: pow2ceil(24 + 8) = 32 bytes
    assert le(s.wmask, 0x14, 4) == 0xFFFFF000  # MSI-X BAR: 4 KiB
    assert le(s.wmask, 0x20, 8) == (1 << 64) - 0x4000  # modern BAR: 0x3000 + 4 * 1024, 64-bit
    assert (le(s.cmask, 0x10, 8), le(s.cmask, 0x18, 8), le(s.cmask, 0x20, 8)) == ((1 << 64) - 1, 0, (1 << 64) - 1)
    assert le(s.wmask, 0x04, 2) == 0x0507 and le(s.w1cmask, 0x06, 2) == 0xF900
    assert s.wmask[0x9B] == 0xC0  # MSI-X enable and mask-all
    assert s.wmask[0x88] == 0xFF and s.wmask[0x8C : 0x98] == b"\xff" * 12  # virtio pci-cfg window
    assert s.wmask[0xA4:] == b"\xff" * (256 - 0xA4) and s.cmask[0xA4:] == bytes(256 - 0xA4)


def test_express_modern_net_matches_qemu_bytes_and_layout() -> None:
    s = virtio_pci_config_space(NET, NET_72_EXPRESS, express=True)  # auto: disable-legacy on
    assert s.config == QEMU72_NET_Q35_ROOT_PORT
    assert cap_chain(s.config) == [(0xDC, 0x11), (0xC8, 0x09), (0xB4, 0x09), (0xA4, 0x09), (0x94, 0x09),
                                   (0x84, 0x09), (0x7C, 0x01), (0x40, 0x10)]
    assert le(s.config, 0x44, 4) == 0x10008000  # DEVCAP: role-based errors, FLR
    assert s.wmask[0x48] == 0x0F and s.wmask[0x49] == 0x80  # error enables, initiate FLR
    assert s.w1cmask[0x4A] == 0x0F  # DEVSTA error bits
    assert s.wmask[0x50] == 0xC0  # LNKCTL CCC, ES
    assert s.cmask[0x52:0x54] == b"\x00\x00"  # LNKSTA not compared
    assert le(s.wmask, 0x68, 2) == 0x8000  # DEVCTL2 end-end TLP prefix blocking
    assert le(s.wmask, 0x80, 2) == 0x0003  # PM control power state
    assert s.wmask[0x100:0x104] == bytes(4) and s.wmask[0x104:] == b"\xff" * (4096 - 0x104)
    assert s.cmask[0x100:] == bytes(4096 - 0x100)
    assert s.cmask[0x10:0x14] == bytes(4)  # no legacy BAR


@pytest.mark.parametrize(("device", "legacy_id", "modern_id", "virtio_id", "class_id"), [
    ("virtio-net", 0x1000, 0x1041, 1, 0x0200),
    ("virtio-blk", 0x1001, 0x1042, 2, 0x0100),
    ("virtio-balloon", 0x1002, 0x1045, 5, 0x00FF),
    ("virtio-rng", 0x1005, 0x1044, 4, 0x00FF),
])
def test_ids_legacy_transitional_and_modern(device: str, legacy_id: int, modern_id: int, virtio_id: int,
                                           class_id: int) -> None:
    base = {"vectors": 2, "romfile": ""}
    for legacy_props in ({"disable-modern": True}, {"disable-legacy": False}):
        s = virtio_pci_config_space(BASE.device(device), {**base, **legacy_props}, express=False, config_len=16)
        assert (le(s.config, 0, 2), le(s.config, 2, 2), s.config[8]) == (0x1AF4, legacy_id, 0)
        assert (le(s.config, 0x2C, 2), le(s.config, 0x2E, 2)) == (0x1AF4, virtio_id)
        assert le(s.config, 0x0A, 2) == class_id and s.config[0x3D] == 1
    s = virtio_pci_config_space(BASE.device(device), {**base, "disable-legacy": True}, express=False)
    assert (le(s.config, 2, 2), s.config[8], le(s.config, 0x2E, 2)) == (modern_id, 1, 0x1100)
    assert le(s.config, 0x10, 4) == 0 and le(s.cmask, 0x10, 4) == 0  # no legacy BAR


def test_legacy_only_has_msix_alone_or_no_capabilities() -> None:
    s = virtio_pci_config_space(BLK, {"disable-modern": True, "vectors": 2}, express=False, config_len=36)
    assert cap_chain(s.config) == [(0x40, 0x11)]
    assert le(s.wmask, 0x10, 4) == 0xFFFFFFC0  # pow2ceil(24 + 36) = 64
    assert le(s.cmask, 0x20, 8) == 0  # no modern BAR
    s = virtio_pci_config_space(RNG, {"disable-modern": True, "vectors": 0}, express=False, config_len=0)
    assert cap_chain(s.config) == [] and s.config[0x06] == 0 and s.config[0x34] == 0
    assert le(s.wmask, 0x10, 4) == 0xFFFFFFE0  # pow2ceil(20 + 0) = 32
    assert le(s.cmask, 0x14, 4) == 0  # no MSI-X BAR


def test_legacy_bar_size_follows_config_len_and_msix() -> None:
    def bar0_size(config_len: int, vectors: int) -> int:
        s = virtio_pci_config_space(BLK, {"disable-modern": True, "vectors": vectors}, express=False,
                                    config_len=config_len)
        return (~le(s.wmask, 0x10, 4) & 0xFFFFFFFF) + 1
    assert bar0_size(36, 2) == 64 and bar0_size(57, 2) == 128  # the 3.1 -> 4.0 blk config change moves BAR0
    assert bar0_size(44, 0) == 64 and bar0_size(45, 0) == 128 and bar0_size(40, 2) == 64 and bar0_size(41, 2) == 128


def test_page_per_vq_notify_multiplier_and_bar_size() -> None:
    s = virtio_pci_config_space(NET, {**NET_72, "page-per-vq": True}, express=False, config_len=8)
    notify = 0x70
    assert s.config[notify + 3] == 2  # notify capability: length 1024 pages, multiplier one page
    assert (le(s.config, notify + 12, 4), le(s.config, notify + 16, 4)) == (0x400000, 0x1000)
    assert le(s.wmask, 0x20, 8) == (1 << 64) - 0x800000  # pow2ceil(0x3000 + 4 MiB)


def test_modern_pio_notify_adds_io_bar_2_and_second_notify_capability() -> None:
    s = virtio_pci_config_space(RNG, {"disable-legacy": True, "modern-pio-notify": True}, express=False)
    chain = cap_chain(s.config)
    assert [o for o, _ in chain] == [0xAC, 0x98, 0x84, 0x70, 0x60, 0x50, 0x40]  # MSI-X, cfg, notify-pio, notify..
    assert (s.config[0x84 + 3], s.config[0x84 + 4], le(s.config, 0x84 + 12, 4)) == (2, 2, 4)
    assert le(s.config, 0x18, 4) == 1 and le(s.wmask, 0x18, 4) == 0xFFFFFFFC


@pytest.mark.parametrize(("vectors", "pba", "bar_size"), [(1, 0x800, 0x1000), (128, 0x800, 0x1000),
                                                          (200, 0xC80, 0x1000), (300, 0x12C0, 0x2000),
                                                          (2048, 0x8000, 0x10000)])
def test_msix_table_size_pba_and_exclusive_bar(vectors: int, pba: int, bar_size: int) -> None:
    s = virtio_pci_config_space(NET, {**NET_72, "vectors": vectors}, express=False, config_len=8)
    msix = dict((i, o) for o, i in cap_chain(s.config))[0x11]
    assert le(s.config, msix + 2, 2) == vectors - 1
    assert (le(s.config, msix + 4, 4), le(s.config, msix + 8, 4)) == (0x1, pba | 0x1)
    assert le(s.wmask, 0x14, 4) == (~(bar_size - 1)) & 0xFFFFFFFF


def test_msix_init_failure_leaves_no_msix() -> None:
    s = virtio_pci_config_space(NET, {**NET_72, "vectors": 2049}, express=False, config_len=8)
    assert 0x11 not in dict((i, o) for o, i in cap_chain(s.config))
    assert le(s.wmask, 0x10, 4) == 0xFFFFFFE0 and le(s.cmask, 0x14, 4) == 0  # header of 20, no MSI-X BAR


def test_pcie_only_for_a_modern_device_without_x_disable_pcie() -> None:
    for props in ({"disable-modern": True, "disable-legacy": False}, {"x-disable-pcie": True}):
        s = virtio_pci_config_space(RNG, props, express=True, config_len=0)
        assert len(s.config) == 256 and 0x10 not in [i for _, i in cap_chain(s.config)]
    s = virtio_pci_config_space(RNG, {"disable-legacy": False}, express=True, config_len=0)
    assert len(s.config) == 4096 and le(s.config, 2, 2) == 0x1005 and le(s.cmask, 0x10, 4) == 0xFFFFFFFF


def test_disable_legacy_auto_resolves_by_port() -> None:
    assert le(virtio_pci_config_space(RNG, {}, express=True).config, 2, 2) == 0x1044
    assert le(virtio_pci_config_space(RNG, {}, express=False, config_len=0).config, 2, 2) == 0x1005
    assert virtio_pci_config_space(RNG, {"disable-legacy": "auto"}, express=True).config[8] == 1


def test_pcie_compat_flags_of_old_machine_types() -> None:
    old = {"x-pcie-deverr-init": False, "x-pcie-lnkctl-init": False, "x-pcie-pm-init": False,
           "x-pcie-extcap-init": False, "x-pcie-flr-init": False}  # hw_compat_2_8 and hw_compat_4_1
    s = virtio_pci_config_space(RNG, old, express=True)
    assert le(s.config, 0x44, 4) == 0x8000
    assert (s.wmask[0x48], s.wmask[0x49], s.w1cmask[0x4A], s.wmask[0x50], le(s.wmask, 0x80, 2)) == (0, 0, 0, 0, 0)
    assert s.wmask[0x100:0x104] == b"\xff" * 4


def test_aer_and_ats_extended_capabilities() -> None:
    s = virtio_pci_config_space(NET, {**NET_72_EXPRESS, "aer": True, "ats": True}, express=True)
    assert le(s.config, 0x100, 4) == 0x14820001  # AER v2, next 0x148
    assert (le(s.config, 0x10C, 4), le(s.config, 0x114, 4), le(s.config, 0x118, 4)) == (0x462030, 0xE000, 0xA0)
    assert (le(s.w1cmask, 0x104, 4), le(s.w1cmask, 0x110, 4)) == (0x03FFF030, 0xF1C1)
    assert (le(s.wmask, 0x108, 4), le(s.wmask, 0x10C, 4), le(s.wmask, 0x118, 4)) == (0, 0x03FFF030, 0x140)
    assert le(s.config, 0x148, 4) == 0x0001000F and le(s.config, 0x14C, 2) == 0x20
    assert le(s.wmask, 0x14E, 2) == 0x800F and s.cmask[0x100:0x150] == b"\xff" * 0x50
    s = virtio_pci_config_space(NET, {**NET_72_EXPRESS, "ats": True, "x-ats-page-aligned": False},
                                express=True)
    assert le(s.config, 0x100, 4) == 0x0001000F and le(s.config, 0x104, 2) == 0


def test_rom_bar_multifunction_and_class() -> None:
    with pytest.raises(PciConfigError, match="romsize"):
        virtio_pci_config_space(NET, {"vectors": 4}, express=False, config_len=8)
    s = virtio_pci_config_space(NET, {"vectors": 4, "romsize": 0x40000, "multifunction": "on"},
                                express=False, config_len=8)
    assert le(s.wmask, 0x30, 4) == 0xFFFC0001 and le(s.cmask, 0x30, 4) == 0xFFFFFFFF and s.config[0x0E] == 0x80
    s = virtio_pci_config_space(NET, {"vectors": 4, "rombar": 0}, express=False, config_len=8)
    assert le(s.cmask, 0x30, 4) == 0
    s = virtio_pci_config_space(BLK, {"vectors": 2, "class": 0x0180}, express=False, config_len=57)
    assert le(s.config, 0x0A, 2) == 0x0180


def test_refused_and_underivable_configurations() -> None:
    with pytest.raises(PciConfigError, match="neither modern nor legacy"):
        virtio_pci_config_space(RNG, {"disable-modern": "on", "disable-legacy": "on"}, express=False)
    with pytest.raises(PciConfigError, match="config_len"):
        virtio_pci_config_space(RNG, {}, express=False)
    with pytest.raises(PciConfigError, match="'vectors' is needed"):
        virtio_pci_config_space(NET, {"romfile": ""}, express=True)
    with pytest.raises(SchemaError, match="unknown device 'virtio-gpu' \\(known: virtio-net, "):
        BASE.device("virtio-gpu")  # the PCI ids are the device's declaration's
    with pytest.raises(PciConfigError, match="not a boolean"):
        virtio_pci_config_space(RNG, {"page-per-vq": "maybe"}, express=True)
    with pytest.raises(HarnessError):  # one exception root, and a ValueError too
        virtio_pci_config_space(RNG, {"vectors": "x"}, express=True)


_PROP_SETS = st.fixed_dictionaries({}, optional={
    "disable-legacy": st.sampled_from(["on", "off", "auto", True, False]),
    "disable-modern": st.booleans(),
    "vectors": st.integers(0, 2100),
    "page-per-vq": st.booleans(),
    "modern-pio-notify": st.booleans(),
    "x-disable-pcie": st.booleans(),
    "x-pcie-deverr-init": st.booleans(),
    "x-pcie-lnkctl-init": st.booleans(),
    "x-pcie-pm-init": st.booleans(),
    "x-pcie-flr-init": st.booleans(),
    "x-pcie-extcap-init": st.booleans(),
    "ats": st.booleans(),
    "aer": st.booleans(),
    "multifunction": st.booleans(),
})


@settings(max_examples=300, deadline=None)
@given(device=st.sampled_from(["virtio-net", "virtio-blk", "virtio-balloon", "virtio-rng"]), props=_PROP_SETS,
       express=st.booleans(), config_len=st.integers(0, 300))
def test_structural_invariants(device: str, props: dict[str, object], express: bool, config_len: int) -> None:
    props = {"vectors": 3, "romfile": "", **props}
    try:
        s = virtio_pci_config_space(BASE.device(device), props, express=express, config_len=config_len)
    except PciConfigError as exc:
        assert "neither modern nor legacy" in str(exc)
        return
    size = len(s.config)
    assert size in (256, 4096) and len(s.cmask) == len(s.wmask) == len(s.w1cmask) == size
    assert all(not (w & c) for w, c in zip(s.wmask, s.w1cmask, strict=True))  # QEMU asserts this on writes
    chain = cap_chain(s.config)
    assert len(chain) <= 10 and all(0x40 <= o < 0x100 and o % 4 == 0 for o, _ in chain)
    assert bool(chain) == bool(s.config[6] & 0x10)
    assert bad_config_data(s, s.config) is None
    assert guest_write(s, s.config, 0, bytes(64)) == s.config  # writing zeros to the header changes nothing here


# --- the load check ---------------------------------------------------------------------------------------


def test_bad_config_data_lines_as_qemu_72_prints_them() -> None:
    # both lines are in ../shared/reference/real-qemu.md section 6, read from QEMU 7.2 runs
    local = virtio_pci_config_space(NET, NET_72, express=False, config_len=8)
    incoming = bytearray(local.config)
    incoming[2] = 0x41
    assert bad_config_data(local, bytes(incoming)) == (
        "get_pci_config_device: Bad config data: i=0x2 read: 41 device: 0 cmask: ff wmask: 0 w1cmask:0")
    dest = virtio_pci_config_space(NET, {**NET_72, "vectors": 6}, express=False, config_len=10)
    assert bad_config_data(dest, local.config) == (
        "get_pci_config_device: Bad config data: i=0x9a read: 3 device: 5 cmask: ff wmask: 0 w1cmask:0")


def test_bad_config_data_reports_the_first_read_only_difference_with_its_masks() -> None:
    local = virtio_pci_config_space(NET, NET_72, express=False, config_len=8)
    incoming = bytearray(local.config)
    incoming[0x10] = 0x1F  # BAR0: address bits 0xe0 writable, 0x1e read-only
    incoming[0x40] = 0x00
    assert bad_config_data(local, bytes(incoming)) == (
        "get_pci_config_device: Bad config data: i=0x10 read: 1f device: 1 cmask: ff wmask: e0 w1cmask:0")
    express = virtio_pci_config_space(NET, NET_72_EXPRESS, express=True)
    incoming = bytearray(express.config)
    incoming[0x4A] = 0xFF  # DEVSTA: the W1C error bits pass, the others do not
    assert bad_config_data(express, bytes(incoming)) == (
        "get_pci_config_device: Bad config data: i=0x4a read: ff device: 0 cmask: ff wmask: 0 w1cmask:f")
    with pytest.raises(PciConfigError, match="incoming config space has 256 bytes"):
        bad_config_data(express, local.config)


def test_writable_w1c_and_unchecked_bytes_pass() -> None:
    local = virtio_pci_config_space(NET, NET_72, express=False, config_len=8)
    incoming = bytearray(local.config)
    incoming[0x04:0x06] = b"\x07\x05"  # command
    incoming[0x07] = 0xF9  # status W1C bits
    incoming[0x10:0x14] = b"\xe1\xff\xff\xff"  # BAR0 address
    incoming[0x3C] = 0x0B  # interrupt line
    incoming[0x9B] = 0xC0  # MSI-X enable, mask all
    incoming[0xA4:0x100] = b"\x5a" * (0x100 - 0xA4)  # device-specific area, not compared
    assert bad_config_data(local, bytes(incoming)) is None
    assert bad_config_data(local, bytes(incoming) + bytes(3840)) is None  # QEMU reads only its own size


# --- guest writes -----------------------------------------------------------------------------------------


def test_guest_write_masks() -> None:
    s = virtio_pci_config_space(NET, NET_72, express=False, config_len=8)
    cur = guest_write(s, s.config, 0x04, b"\xff\xff\xff\xff")  # command and status
    assert cur[4:8] == b"\x07\x05\x10\x00"
    cur = guest_write(s, cur, 0x00, b"\xff\xff\xff\xff")  # vendor and device ids are read-only
    assert cur[0:4] == s.config[0:4]
    cur = guest_write(s, cur, 0x10, b"\xff\xff\xff\xff")  # BAR sizing
    assert le(cur, 0x10, 4) == 0xFFFFFFE1
    status_set = bytearray(cur)
    status_set[7] = 0xF9
    assert guest_write(s, bytes(status_set), 0x06, b"\x00\x21")[6:8] == b"\x10\xd8"  # W1C only where 1 is written
    with pytest.raises(PciConfigError, match="outside"):
        guest_write(s, cur, 0xFE, b"\x00\x00\x00")


def test_guest_write_flr_resets_the_function() -> None:
    s = virtio_pci_config_space(NET, {**NET_72_EXPRESS, "disable-legacy": "off"}, express=True,
                                config_len=8)
    cur = s.config
    for offset, value in ((0x04, 0x07), (0x10, 0xE0), (0x11, 0xC0), (0x3C, 0x0B), (0x48, 0x0F), (0x50, 0xC3),
                          (0x80, 0x03), (0xDF, 0xC0), (0x68, 0x00), (0x69, 0x80), (0xF0, 0x77)):
        cur = guest_write(s, cur, offset, bytes([value]))
    assert (cur[0x04], le(cur, 0x10, 4), cur[0x48], cur[0x50], cur[0x80], cur[0xDF]) == (7, 0xC0E1, 0xF, 0xC0, 3, 0xC0)
    after = guest_write(s, cur, 0x49, b"\x80")
    assert (after[0x04], le(after, 0x10, 4), after[0x3C], after[0x48], after[0x49]) == (0, 1, 0, 0, 0)
    assert (after[0x50], after[0x80], after[0xDF]) == (0, 0, 0)
    assert (after[0x69], after[0xF0]) == (0x80, 0x77)  # not reset by an FLR
    old = virtio_pci_config_space(NET, {**NET_72_EXPRESS, "x-pcie-flr-init": False}, express=True)
    assert guest_write(old, old.config, 0x49, b"\x80")[0x49] == 0  # no FLR: the bit is read-only


# --- real QEMU 7.2 ----------------------------------------------------------------------------------------

QEMU = "qemu-system-x86_64"
SEED = int(os.environ.get("VIRTIO_COMPAT_PCI_SEED", "7202"))
VMSD = {"virtio-net": "virtio-net", "virtio-blk": "virtio-blk", "virtio-balloon": "virtio-balloon",
        "virtio-rng": "virtio-rng"}
QOM_PROPS = ("disable-legacy", "disable-modern", "vectors", "page-per-vq", "modern-pio-notify", "x-disable-pcie",
             "x-pcie-deverr-init", "x-pcie-lnkctl-init", "x-pcie-pm-init", "x-pcie-flr-init", "x-pcie-extcap-init",
             "ats", "x-ats-page-aligned", "aer", "multifunction", "romfile", "rombar", "romsize", "class")


def _need_qemu() -> str:
    path = shutil.which(QEMU)
    if path is None:
        pytest.skip(f"real-QEMU test skipped: {QEMU} is not on PATH (apt-get install qemu-system-x86)")
    return path


class _Qmp:
    """A small QMP client (JSON lines over a unix socket)."""

    def __init__(self, path: Path, deadline: float) -> None:
        sock = connect_unix(path, deadline - time.monotonic(), "QMP")
        sock.settimeout(10)
        self.sock, self.file = sock, sock.makefile("rwb")
        self._reply()
        self.execute("qmp_capabilities")

    def _reply(self) -> dict[str, Any]:
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("QMP connection closed")
            msg: dict[str, Any] = json.loads(line)
            if "event" not in msg:
                return msg

    def execute(self, command: str, **arguments: Any) -> Any:
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self.file.write(json.dumps(msg).encode() + b"\n")
        self.file.flush()
        reply = self._reply()
        if "error" in reply:
            raise RuntimeError(f"{command}: {reply['error'].get('desc')}")
        return reply.get("return")

    def close(self) -> None:
        try:
            self.file.close()
        except OSError:
            pass  # QEMU went away with a command still buffered
        self.sock.close()


@dataclass
class _Run:
    rc: int
    stderr: str

    @property
    def errors(self) -> list[str]:
        """stderr lines without the program prefix and without warnings."""
        lines = [ln.removeprefix(f"{QEMU}: ") for ln in self.stderr.splitlines()]
        return [ln for ln in lines if ln and not ln.startswith("warning:")]


@contextmanager
def _qemu(work: Path, machine: str, args: list[str], *, incoming: bool = False,
          qtest: bool = False) -> Iterator[tuple[_Qmp, _Run, Path]]:
    """A paused QEMU with QMP (and qtest) sockets; always stopped and reaped on exit."""
    work.mkdir(parents=True, exist_ok=True)
    qmp_sock, qtest_sock, err = work / "qmp.sock", work / "qtest.sock", work / "stderr"
    for stale in (qmp_sock, qtest_sock):
        stale.unlink(missing_ok=True)
    argv = [QEMU, "-machine", f"{machine},accel=tcg", "-nodefaults", "-display", "none", "-m", "4", "-S",
            "-qmp", f"unix:{qmp_sock},server=on,wait=off", *args]
    if qtest:
        argv += ["-qtest", f"unix:{qtest_sock},server=on,wait=off", "-qtest-log", "/dev/null"]
    if incoming:
        argv += ["-incoming", "defer"]
    run = _Run(-1, "")
    with err.open("wb") as err_file:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err_file)
    qmp: _Qmp | None = None
    try:
        try:
            qmp = _Qmp(qmp_sock, time.monotonic() + 10)
        except OSError as exc:
            proc.wait(10)
            raise RuntimeError(f"QEMU did not start ({exc}): {err.read_text(errors='replace')}") from None
        yield qmp, run, qtest_sock
        try:
            qmp.execute("quit")
        except (OSError, ConnectionError, RuntimeError):
            pass  # a failed incoming migration has already made QEMU exit
    finally:
        if qmp is not None:
            qmp.close()
        try:
            run.rc = proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            run.rc = proc.wait()
        run.stderr = err.read_text(errors="replace")


def _wait_migration(qmp: _Qmp) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status = str(qmp.execute("query-migrate").get("status"))
        if status in ("completed", "failed"):
            return status
        time.sleep(0.002)
    raise TimeoutError("migration did not finish")


@dataclass(frozen=True)
class _Combo:
    device: str
    machine: str
    express: bool
    options: tuple[tuple[str, str], ...]

    def args(self) -> list[str]:
        backend = {"virtio-net": ["-netdev", "hubport,id=n0,hubid=0"],
                   "virtio-blk": ["-blockdev", "driver=null-co,node-name=d0"]}.get(self.device, [])
        link = {"virtio-net": ",netdev=n0,romfile=", "virtio-blk": ",drive=d0"}.get(self.device, "")
        where = ",bus=rp1,addr=0x0" if self.express else ",addr=0x3"
        port = ["-device", "pcie-root-port,id=rp1,bus=pcie.0,addr=0x5,chassis=1"] if self.express else []
        opts = "".join(f",{k}={v}" for k, v in self.options)
        return [*backend, *port, "-device", f"{self.device}-pci,id=dut{link}{where}{opts}"]

    @property
    def idstr(self) -> str:
        return ("0000:00:05.0:00.0/" if self.express else "0000:00:03.0/") + VMSD[self.device]


@dataclass(frozen=True)
class _Saved:
    stream: bytes
    config_at: int
    config: bytes
    config_len: int
    props: dict[str, object]


def _machines() -> list[str]:
    out = subprocess.run([QEMU, "-machine", "help"], capture_output=True, text=True, check=True).stdout
    names = [line.split()[0] for line in out.splitlines() if line.startswith(("pc-i440fx-", "pc-q35-"))]
    return [m for m in names if not m.startswith("pc-i440fx-1.")]


def _random_combo(rnd: random.Random, machines: list[str]) -> _Combo:
    device = rnd.choice(["virtio-net", "virtio-blk", "virtio-balloon", "virtio-rng"])
    machine = rnd.choice(machines)
    express = machine.startswith("pc-q35-") and rnd.random() < 0.6
    opts: dict[str, str] = {}
    if device != "virtio-balloon" and rnd.random() < 0.6:  # 7.2's balloon has no vectors property
        opts["vectors"] = str(rnd.choice([0, 1, 2, 3, 4, 5, 8, 33]))
    for name, values in (("disable-legacy", ["on", "off"]), ("disable-modern", ["on", "off"]),
                         ("page-per-vq", ["on", "off"])):
        if rnd.random() < 0.35:
            opts[name] = rnd.choice(values)
    for name in ("modern-pio-notify", "ats", "aer", "x-pcie-flr-init"):
        if rnd.random() < 0.1:
            opts[name] = rnd.choice(["on", "off"])
    if opts.get("disable-legacy") == "on":
        opts["disable-modern"] = "off"  # QEMU refuses a device with neither mode
    elif opts.get("disable-modern") == "on":
        opts["disable-legacy"] = "off"
    old = tuple(int(x) for x in machine.rsplit("-", 1)[1].split(".")[:2]) <= (2, 4)
    if device == "virtio-blk" and old and opts.get("disable-modern") == "off":
        opts["scsi"] = "off"  # hw_compat_2_4 scsi=true, which virtio 1.0 refuses
    return _Combo(device, machine, express, tuple(sorted(opts.items())))


def _locate_config(stream: bytes, combo: _Combo) -> tuple[int, int, int]:
    """(offset of the saved config space, its size, config_len) of the device's virtio payload.

    decode_stream walks the stream; machine types 2.2 and older write no JSON description, which it needs to
    skip the other devices, so there the section is found by its idstr and the payload read by hand.
    """
    try:
        decoded = decode_stream(stream)
        (dev,) = [d for d in decoded.devices if d.section == combo.idstr]
        return dev.offset + 4, len(bytes(dev.value.transport.pci.config)), int(dev.value.config_len)
    except StreamError:
        if combo.machine not in ("pc-i440fx-2.0", "pc-i440fx-2.1", "pc-i440fx-2.2"):
            raise
    name = combo.idstr.encode()
    at = stream.index(bytes([len(name)]) + name) + 1 + len(name) + 8 + 4  # instance, version; PCIDevice version
    size = pci_config_size(stream[at : at + 256])
    nvec = msix_vectors(stream[at : at + size])
    after = at + size + 16 + (nvec * 16 + (nvec + 7) // 8 + 2 if nvec else 0)  # irq_state, MSI-X, config_vector
    return at, size, int.from_bytes(stream[after + 8 : after + 12], "big")  # status, isr, queue_sel, features


def _save(work: Path, combo: _Combo) -> _Saved:
    out = work / "saved.bin"
    with _qemu(work, combo.machine, combo.args()) as (qmp, _, _sock):
        props: dict[str, object] = {}
        for name in QOM_PROPS:
            try:
                props[name] = qmp.execute("qom-get", path="/machine/peripheral/dut", property=name)
            except RuntimeError:
                pass  # not a property of this device in 7.2 (balloon vectors, class on most)
        qmp.execute("migrate", uri=f"exec:cat > {out}")
        assert _wait_migration(qmp) == "completed"
    stream = out.read_bytes()
    at, size, config_len = _locate_config(stream, combo)
    return _Saved(stream, at, stream[at : at + size], config_len, props)


def _load(work: Path, combo: _Combo, stream: bytes) -> _Run:
    path = work / "incoming.bin"
    path.write_bytes(stream)
    with _qemu(work, combo.machine, combo.args(), incoming=True) as (qmp, run, _sock):
        try:
            qmp.execute("migrate-incoming", uri=f"exec:cat {path}")
            _wait_migration(qmp)
        except (OSError, ConnectionError):
            pass  # QEMU 7.2 exits by itself (rc 1) when the load fails
    return run


def _model(saved: _Saved, combo: _Combo) -> PciConfigSpace:
    return virtio_pci_config_space(BASE.device(combo.device), saved.props, express=combo.express,
                                   config_len=saved.config_len)


def _combos(count: int, seed: int) -> list[_Combo]:
    rnd = random.Random(seed)
    machines = _machines()
    return [_random_combo(rnd, machines) for _ in range(count)]


@pytest.mark.qemu
def test_config_space_equals_qemu_for_random_configurations(tmp_path: Path) -> None:
    _need_qemu()
    for n, combo in enumerate(_combos(40, SEED)):
        saved = _save(tmp_path / f"c{n}", combo)
        model = _model(saved, combo)
        diff = [f"{i:#x}: qemu {saved.config[i]:02x} model {model.config[i]:02x}"
                for i in range(min(len(model.config), len(saved.config))) if saved.config[i] != model.config[i]]
        assert len(model.config) == len(saved.config) and not diff, (combo, saved.props, diff[:8])


def _patch(saved: _Saved, offset: int, xor: int) -> tuple[bytes, bytes]:
    stream = bytearray(saved.stream)
    stream[saved.config_at + offset] ^= xor
    return bytes(stream), bytes(stream[saved.config_at : saved.config_at + len(saved.config)])


@pytest.mark.qemu
def test_read_only_bytes_reject_with_the_model_line_and_writable_bytes_load(tmp_path: Path) -> None:
    _need_qemu()
    rnd = random.Random(SEED + 1)
    combos = _combos(6, SEED + 2)
    combos.append(_Combo("virtio-net", "pc-q35-7.2", True, (("aer", "on"), ("ats", "on"), ("disable-legacy", "off"))))
    for n, combo in enumerate(combos):
        saved = _save(tmp_path / f"m{n}", combo)
        model = _model(saved, combo)
        checked = [i for i in range(len(model.config)) if read_only(model, i)]
        i = rnd.choice(checked)
        stream, incoming = _patch(saved, i, rnd.choice([b for b in range(1, 256) if b & read_only(model, i)]))
        line = bad_config_data(model, incoming)
        assert line is not None and line.startswith(f"get_pci_config_device: Bad config data: i={i:#x} ")
        run = _load(tmp_path / f"m{n}", combo, stream)
        assert (run.rc, run.errors[:2]) == (1, [line, "Failed to load PCIDevice:config"]), (combo, i)

        writable = [i for i in range(len(model.config)) if (model.wmask[i] | model.w1cmask[i]) and i != 0x3D]
        i = rnd.choice(writable)
        stream, incoming = _patch(saved, i, model.wmask[i] | model.w1cmask[i])
        assert bad_config_data(model, incoming) is None
        run = _load(tmp_path / f"m{n}", combo, stream)
        assert (run.rc, run.errors) == (0, []), (combo, i)


class _Qtest:
    def __init__(self, path: Path) -> None:
        sock = connect_unix(path, 10, "qtest")
        self.sock, self.file = sock, sock.makefile("rwb")

    def cmd(self, line: str) -> str:
        self.file.write(line.encode() + b"\n")
        self.file.flush()
        while True:
            reply = self.file.readline().decode()
            if not reply:
                raise ConnectionError("qtest connection closed")
            if reply.startswith(("OK", "FAIL", "ERR")):
                return reply.strip()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def _config_io(qt: _Qtest, bdf: int) -> tuple[Any, Any]:
    def read(i: int) -> int:
        qt.cmd(f"outl 0xcf8 {0x80000000 | bdf | (i & 0xFC):#x}")
        return int(qt.cmd(f"inb {0xCFC + (i & 3):#x}").split()[1], 16)

    def write(i: int, value: int) -> None:
        qt.cmd(f"outl 0xcf8 {0x80000000 | bdf | (i & 0xFC):#x}")
        qt.cmd(f"outb {0xCFC + (i & 3):#x} {value:#x}")
    return read, write


@pytest.mark.qemu
@pytest.mark.parametrize("combo", [
    _Combo("virtio-net", "pc-i440fx-7.2", False, (("vectors", "3"),)),
    _Combo("virtio-blk", "pc-q35-7.2", True, (("disable-legacy", "off"),)),
], ids=["i440fx-net", "q35-root-port-blk"])
def test_guest_config_writes_equal_qemu(tmp_path: Path, combo: _Combo) -> None:
    _need_qemu()
    saved = _save(tmp_path / "s", combo)
    model = _model(saved, combo)
    rnd = random.Random(SEED + 3)
    with _qemu(tmp_path / "q", combo.machine, combo.args(), qtest=True) as (_, _run, sock):
        qt = _Qtest(sock)
        try:
            if combo.express:  # the root port's bus numbers: primary 0, secondary and subordinate 1
                qt.cmd(f"outl 0xcf8 {0x80000000 | (5 << 11) | 0x18:#x}")
                qt.cmd("outl 0xcfc 0x010100")
            read, write = _config_io(qt, (1 << 16) if combo.express else (3 << 11))
            current = bytes(read(i) for i in range(256)) + model.config[256:]
            assert current == model.config
            for i in [*range(0x00, 0x40), *rnd.sample(range(0x40, 0x100), 48)]:
                if i == 0x3D:
                    continue
                for value in (0xFF, rnd.randrange(256), 0x00):
                    write(i, value)
                    expected = guest_write(model, current, i, bytes([value]))
                    if any(expected[k] != current[k] for k in range(256) if k != i):  # an FLR: read it all
                        current = bytes(read(k) for k in range(256)) + current[256:]
                    else:
                        current = current[:i] + bytes([read(i)]) + current[i + 1 :]
                    assert current == expected, (combo, hex(i), value)
            assert bytes(read(k) for k in range(256)) == current[:256]
        finally:
            qt.close()


def test_props_mapping_is_not_mutated() -> None:
    props: Mapping[str, object] = {"vectors": 2, "disable-legacy": "auto"}
    virtio_pci_config_space(RNG, props, express=True)
    assert props == {"vectors": 2, "disable-legacy": "auto"}
