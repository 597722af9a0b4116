"""A realized virtio-pci config space and what QEMU does with it after realize: the load check of an incoming
config space (``get_pci_config_device``) and a guest's config writes (``pci_default_write_config``). The space
itself is built by models/transports/pci.py."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from harness.errors import SchemaError
from models.transports import pci_regs as regs


class PciConfigError(SchemaError, ValueError):
    """A configuration QEMU would refuse to realize, or one this model cannot derive bytes for."""


@dataclass(frozen=True)
class PciConfigSpace:
    config: bytes  # contents after realize and reset (256 bytes, or 4096 for PCI Express)
    cmask: bytes  # bits the incoming migration load compares
    wmask: bytes  # bits a guest config write changes
    w1cmask: bytes  # bits a guest config write of 1 clears


def bad_config_data(local: PciConfigSpace, incoming: bytes) -> str | None:
    """QEMU 7.2's ``get_pci_config_device`` check of an incoming config space against the local device.

    Returns None when the load passes, else the error line (without the program-name prefix) for the first
    byte, from offset 0 up, that differs in a bit of cmask & ~wmask & ~w1cmask. QEMU reads as many bytes as the
    local device's config size; a longer incoming space is compared on that prefix (the rest of the stream then
    no longer lines up, which is the caller's concern), a shorter one cannot be checked.
    Not part of this check but seen on 7.2: an incoming interrupt pin (0x3d, cmask 0) outside 1..4 passes it,
    and QEMU then aborts on an assertion in ``pci_irq_handler``.
    """
    size = len(local.config)
    if len(incoming) < size:
        raise PciConfigError(f"incoming config space has {len(incoming)} bytes, the local device reads {size}")
    # whole-space test first (big-integer bit operations run in C); the byte loop only finds the first
    checked = _checked_bits(local)
    if not (int.from_bytes(incoming[:size], "little") ^ int.from_bytes(local.config, "little")) & checked:
        return None
    for i in range(size):
        c, w, w1 = local.cmask[i], local.wmask[i], local.w1cmask[i]
        if (incoming[i] ^ local.config[i]) & c & ~w & ~w1:
            return (f"get_pci_config_device: Bad config data: i=0x{i:x} read: {incoming[i]:x} "
                    f"device: {local.config[i]:x} cmask: {c:x} wmask: {w:x} w1cmask:{w1:x}")
    return None


@functools.lru_cache(maxsize=256)
def _checked_bits(local: PciConfigSpace) -> int:
    """cmask & ~wmask & ~w1cmask over the whole space, as one integer (little-endian byte order)."""
    size = len(local.config)
    cmask, wmask, w1 = (int.from_bytes(m, "little") for m in (local.cmask, local.wmask, local.w1cmask))
    return cmask & ~wmask & ~w1 & ((1 << (8 * size)) - 1)


def _capabilities(config: bytes) -> dict[int, int]:
    """Capability id -> offset, walking the list from 0x34 as the guest would (bounded)."""
    caps: dict[int, int] = {}
    ptr = config[regs.PCI_CAPABILITY_LIST] if config[regs.PCI_STATUS] & regs.PCI_STATUS_CAP_LIST else 0
    for _ in range(64):
        if ptr < regs.PCI_CONFIG_HEADER_SIZE:
            break
        caps.setdefault(config[ptr], ptr)
        ptr = config[ptr + 1] & 0xFC
    return caps


def _function_level_reset(space: PciConfigSpace, out: bytearray) -> None:
    """pci_device_reset on an FLR: the virtio proxy's reset, then pci_do_device_reset.

    Only these registers go back; other writable bytes (device-specific area, DEVCTL2, ATS, AER, the virtio
    PCI-config window) keep their values.
    """
    def clear(offset: int, mask: int, width: int) -> None:
        value = int.from_bytes(out[offset : offset + width], "little") & ~mask
        out[offset : offset + width] = value.to_bytes(width, "little")

    def word(buf: bytes, offset: int) -> int:
        return int.from_bytes(buf[offset : offset + 2], "little")

    caps = _capabilities(space.config)
    exp, pm, msix = caps.get(regs.PCI_CAP_ID_EXP), caps.get(regs.PCI_CAP_ID_PM), caps.get(regs.PCI_CAP_ID_MSIX)
    if exp is not None:  # virtio_pci_reset: pcie_cap_deverr_reset, pcie_cap_lnkctl_reset, PM control 0
        clear(exp + regs.PCI_EXP_DEVCTL, regs.PCI_EXP_DEVCTL_ERR_ENABLES, 4)
        clear(exp + regs.PCI_EXP_LNKCTL, regs.PCI_EXP_LNKCTL_CCC_ES, 4)
        if pm is not None:
            clear(pm + regs.PCI_PM_CTRL, 0xFFFF, 2)
    for reg in (regs.PCI_COMMAND, regs.PCI_STATUS):  # pci_do_device_reset
        clear(reg, word(space.wmask, reg) | word(space.w1cmask, reg), 2)
    line = regs.PCI_INTERRUPT_LINE
    clear(line, word(space.wmask, line) | word(space.w1cmask, line), 1)
    out[regs.PCI_CACHE_LINE_SIZE] = 0
    for addr in [*range(regs.PCI_BASE_ADDRESS_0, regs.PCI_BASE_ADDRESS_0 + 24, 4), regs.PCI_ROM_ADDRESS]:
        if space.cmask[addr : addr + 4] == b"\xff\xff\xff\xff":  # a registered BAR: back to its type bits
            out[addr : addr + 4] = space.config[addr : addr + 4]
    if msix is not None:  # msix_reset
        clear(msix + regs.MSIX_CONTROL_OFFSET, space.wmask[msix + regs.MSIX_CONTROL_OFFSET], 1)


def guest_write(space: PciConfigSpace, current: bytes, offset: int, data: bytes) -> bytes:
    """``virtio_write_config``: a guest's config write of ``data`` at ``offset`` to ``current``.

    ``pci_default_write_config``: bits in wmask take the written value, bits in w1cmask are cleared where a 1
    is written, the rest keep their value. Then ``pcie_cap_flr_write_config``: a write that leaves DEVCTL's
    initiate-FLR bit set resets the function (see ``_function_level_reset``) and the bit reads back 0.
    Side effects outside the config bytes are not modelled (BAR mappings, MSI-X, and the virtio PCI-config
    window, which accesses BAR 4 when its length is 1, 2 or 4 and refreshes pci_cfg_data on reads).
    """
    if len(current) != len(space.config):
        raise PciConfigError(f"current config has {len(current)} bytes, the device has {len(space.config)}")
    if offset < 0 or offset + len(data) > len(current):
        raise PciConfigError(f"write of {len(data)} bytes at {offset:#x} is outside the {len(current)}-byte space")
    out = bytearray(current)
    for k, val in enumerate(data):
        i = offset + k
        w, w1 = space.wmask[i], space.w1cmask[i]
        out[i] = ((out[i] & ~w) | (val & w)) & ~(val & w1) & 0xFF
    exp = _capabilities(space.config).get(regs.PCI_CAP_ID_EXP)
    if exp is not None:
        devctl = exp + regs.PCI_EXP_DEVCTL
        flr_writable = int.from_bytes(space.wmask[devctl : devctl + 2], "little") & regs.PCI_EXP_DEVCTL_BCR_FLR
        if flr_writable and int.from_bytes(out[devctl : devctl + 2], "little") & regs.PCI_EXP_DEVCTL_BCR_FLR:
            _function_level_reset(space, out)
            out[devctl + 1] &= ~(regs.PCI_EXP_DEVCTL_BCR_FLR >> 8) & 0xFF
    return bytes(out)
