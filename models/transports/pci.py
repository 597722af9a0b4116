"""The PCI configuration space of a virtio-pci proxy as QEMU 7.2 realizes it, with the load-check masks.

QEMU's ``get_pci_config_device`` (hw/pci/pci.c) rejects an incoming config byte that differs from the
local one in a bit of ``cmask & ~wmask & ~w1cmask``; the bytes and masks here are built by replaying,
in QEMU's order, what realize does to them: ``do_pci_register_device`` (header, ``pci_init_cmask``,
``pci_init_wmask``, ``pci_init_w1cmask``), ``virtio_pci_realize`` (PCI Express capability, power
management, AER, ATS, FLR), ``virtio_pci_device_plugged`` (ids, virtio vendor capabilities, BARs,
MSI-X), ``pci_add_option_rom`` (ROM BAR), then the reset (which leaves these bytes as built).

Proxy properties read (``props``, QEMU's names, the effective values after machine compat and user
properties, as ``qom-get /machine/peripheral/<id>`` shows them after realize), each with its default and
the QEMU 7.2 machine compat entry (``hw/core/machine.c``) that changes it:

- ``disable-legacy`` (auto; ``hw_compat_2_6`` off): legacy I/O BAR 0, device id, revision, subsystem id.
  "auto" resolves as QEMU does: on behind a PCI Express port, else off.
- ``disable-modern`` (off; ``hw_compat_2_6`` on): virtio vendor capabilities, BAR 4, PCIe capabilities.
- ``vectors`` (net and blk: required, realize derives it from queue counts; rng 2; balloon 0;
  ``hw_compat_2_11`` blk 2, ``hw_compat_5_2`` net 3, ``hw_compat_7_1`` rng 0): MSI-X capability and BAR 1;
  0 or more than 2048 means no MSI-X.
- ``page-per-vq`` (off; ``hw_compat_2_7`` on): notify multiplier and length, BAR 4 size.
- ``modern-pio-notify`` (off): I/O BAR 2 and a second notify capability.
- ``x-disable-pcie`` (off; ``hw_compat_2_4`` on): no PCI Express capabilities, 256-byte space.
- ``x-pcie-deverr-init``, ``x-pcie-lnkctl-init``, ``x-pcie-pm-init`` (on; ``hw_compat_2_8`` off): DEVCTL
  error enables writable and DEVSTA errors W1C; LNKCTL CCC and ES writable; PM control state writable.
- ``x-pcie-extcap-init`` (on; ``hw_compat_2_8`` off, on ``TYPE_PCI_DEVICE``): the extended capability
  header at 0x100 read-only.
- ``x-pcie-flr-init`` (on; ``hw_compat_4_1`` off): DEVCAP FLR bit, DEVCTL initiate-FLR writable.
- ``ats`` (off), ``x-ats-page-aligned`` (on; ``hw_compat_5_1`` off): ATS extended capability.
- ``aer`` (off): AER extended capability at 0x100.
- ``multifunction`` (off): header type bit 7.
- ``romfile``, ``rombar``, ``romsize`` (net: ``efi-virtio.rom``, 1, the ROM file's size rounded up to a
  power of two; ``pc_compat_1_x`` of pc-i440fx-1.4 gives ``pxe-virtio.rom``): ROM BAR at 0x30.
- ``class`` (0, keep the class default; virtio-blk-pci has it): class code word at 0x0a.

Properties that do not touch the config space: ``migrate-extra`` (``hw_compat_2_4``),
``x-ignore-backend-features`` (``hw_compat_2_7``; matters only for a device without VERSION_1),
``virtio-pci-bus-master-bug-migration`` (``hw_compat_2_1``), ``x-pcie-lnksta-dllla`` (``hw_compat_2_3``;
only ports use it), ``ioeventfd``. Besides ``props``, the legacy BAR size needs the device's
``config_len`` (the virtio config length, which the device model derives).

Release notes (what is 7.2 behaviour here and changed elsewhere):
- 8.0 added ``x-pcie-err-unc-mask`` (on from the 8.0 machine type, ``hw_compat_7_2`` off): with ``aer=on``
  the AER uncorrectable-error mask gets a default value and becomes writable. 7.2 has neither.
- 9.2 added ``x-pcie-ext-tag`` on ``TYPE_PCI_DEVICE`` (on; ``hw_compat_9_1`` off): DEVCAP Extended Tag Field
  Supported (read-only, so compared on load); the 10.0 and 11.1 binaries set it on pc-q35-10.0 and later.
- 9.1 added ``x-pcie-pm-no-soft-reset`` (``hw_compat_9_0`` off): PM control gets the No_Soft_Reset bit.
- 10.0 gave virtio-balloon-pci a ``vectors`` property (default 2, ``hw_compat_9_2`` 0); in 7.2 it has none
  and no MSI-X. A ``vectors`` value given for balloon is used as later releases would.
"""

from __future__ import annotations

from collections.abc import Mapping

from models.declarations import Device
from models.transports import pci_regs as regs
from models.transports.pci_space import PciConfigError, PciConfigSpace, bad_config_data, guest_write

__all__ = [
    "PciConfigError",
    "PciConfigSpace",
    "bad_config_data",
    "guest_write",
    "virtio_pci_config_space",
]


# --- reading properties -----------------------------------------------------------------------------------


def _flag(props: Mapping[str, object], name: str, default: bool) -> bool:
    value = props.get(name, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("on", "true", "yes"):
        return True
    if isinstance(value, str) and value.lower() in ("off", "false", "no"):
        return False
    raise PciConfigError(f"property {name!r}: {value!r} is not a boolean")


def _int(props: Mapping[str, object], name: str, default: int | None) -> int:
    value = props.get(name, default)
    if isinstance(value, bool) or value is None:
        raise PciConfigError(f"property {name!r} is needed to derive the PCI config space" if value is None
                             else f"property {name!r}: {value!r} is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            pass
    raise PciConfigError(f"property {name!r}: {value!r} is not an integer")


def _disable_legacy(props: Mapping[str, object], pcie_port: bool) -> bool:
    value = props.get("disable-legacy", "auto")
    if isinstance(value, str) and value.lower() == "auto":
        return pcie_port  # virtio_pci_realize: ON_OFF_AUTO_AUTO resolves to "on" behind a PCIe port
    return _flag(props, "disable-legacy", False)


def _pow2ceil(value: int) -> int:
    return 1 if value <= 1 else 1 << (value - 1).bit_length()


# --- the config space under construction (hw/pci/pci.c, hw/pci/pcie.c) ---------------------------------------


class _Builder:
    def __init__(self, size: int) -> None:
        self.config = bytearray(size)
        self.cmask = bytearray(size)
        self.wmask = bytearray(size)
        self.w1cmask = bytearray(size)
        self.used = bytearray(size)

    @staticmethod
    def _put(buf: bytearray, offset: int, value: int, width: int) -> None:
        buf[offset : offset + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")

    def set(self, offset: int, value: int, width: int) -> None:
        self._put(self.config, offset, value, width)

    def set_wmask(self, offset: int, value: int, width: int) -> None:
        self._put(self.wmask, offset, value, width)

    def set_cmask(self, offset: int, value: int, width: int) -> None:
        self._put(self.cmask, offset, value, width)

    def set_w1cmask(self, offset: int, value: int, width: int) -> None:
        self._put(self.w1cmask, offset, value, width)

    @staticmethod
    def _or(buf: bytearray, offset: int, value: int, width: int) -> None:
        old = int.from_bytes(buf[offset : offset + width], "little")
        _Builder._put(buf, offset, old | value, width)

    def or_config(self, offset: int, value: int, width: int) -> None:
        self._or(self.config, offset, value, width)

    def or_wmask(self, offset: int, value: int, width: int) -> None:
        self._or(self.wmask, offset, value, width)

    def or_w1cmask(self, offset: int, value: int, width: int) -> None:
        self._or(self.w1cmask, offset, value, width)

    def init_masks(self) -> None:
        # pci_init_cmask, pci_init_wmask, pci_init_w1cmask
        self.set_cmask(regs.PCI_VENDOR_ID, 0xFFFF, 2)
        self.set_cmask(regs.PCI_DEVICE_ID, 0xFFFF, 2)
        self.cmask[regs.PCI_STATUS] = regs.PCI_STATUS_CAP_LIST
        self.cmask[regs.PCI_REVISION_ID] = 0xFF
        self.cmask[regs.PCI_CLASS_PROG] = 0xFF
        self.set_cmask(regs.PCI_CLASS_DEVICE, 0xFFFF, 2)
        self.cmask[regs.PCI_HEADER_TYPE] = 0xFF
        self.cmask[regs.PCI_CAPABILITY_LIST] = 0xFF
        self.wmask[regs.PCI_CACHE_LINE_SIZE] = 0xFF
        self.wmask[regs.PCI_INTERRUPT_LINE] = 0xFF
        self.set_wmask(regs.PCI_COMMAND, regs.PCI_COMMAND_IO | regs.PCI_COMMAND_MEMORY | regs.PCI_COMMAND_MASTER
                       | regs.PCI_COMMAND_INTX_DISABLE | regs.PCI_COMMAND_SERR, 2)
        self.wmask[regs.PCI_CONFIG_HEADER_SIZE:] = b"\xff" * (len(self.wmask) - regs.PCI_CONFIG_HEADER_SIZE)
        self.set_w1cmask(regs.PCI_STATUS, regs.PCI_STATUS_W1C, 2)

    def _find_space(self, size: int) -> int:
        # pci_find_space: the first run of `size` unused bytes from 0x40, in the 256-byte space
        offset = regs.PCI_CONFIG_HEADER_SIZE
        for i in range(regs.PCI_CONFIG_HEADER_SIZE, regs.PCI_CONFIG_SPACE_SIZE):
            if self.used[i]:
                offset = i + 1
            elif i - offset + 1 == size:
                return offset
        raise PciConfigError(f"no room for a {size}-byte capability in the PCI config space")

    def add_capability(self, cap_id: int, size: int) -> int:
        # pci_add_capability with offset 0: the new capability becomes the head of the list
        offset = self._find_space(size)
        self.config[offset] = cap_id
        self.config[offset + 1] = self.config[regs.PCI_CAPABILITY_LIST]
        self.config[regs.PCI_CAPABILITY_LIST] = offset
        self.config[regs.PCI_STATUS] |= regs.PCI_STATUS_CAP_LIST
        aligned = (size + 3) & ~3
        self.used[offset : offset + aligned] = b"\xff" * aligned
        self.wmask[offset : offset + size] = bytes(size)  # read-only by default
        self.cmask[offset : offset + size] = b"\xff" * size  # checked by default
        return offset

    def add_ext_capability(self, cap_id: int, version: int, offset: int, size: int) -> None:
        # pcie_add_capability: linked after the last extended capability unless it is the first (at 0x100)
        if offset != regs.PCI_CONFIG_SPACE_SIZE:
            prev = regs.PCI_CONFIG_SPACE_SIZE
            while (nxt := int.from_bytes(self.config[prev : prev + 4], "little") >> 20) != 0:
                prev = nxt
            header = int.from_bytes(self.config[prev : prev + 4], "little")
            self.set(prev, (header & 0x000FFFFF) | (offset << 20), 4)
        self.set(offset, cap_id | (version << 16), 4)
        self.wmask[offset : offset + size] = bytes(size)
        self.w1cmask[offset : offset + size] = bytes(size)
        self.cmask[offset : offset + size] = b"\xff" * size

    def register_bar(self, region: int, bar_type: int, size: int) -> None:
        # pci_register_bar: the BAR holds its type; the address bits above the size are writable, all checked
        if size & (size - 1):
            raise PciConfigError(f"BAR {region} size {size:#x} is not a power of two")
        addr = regs.PCI_ROM_ADDRESS if region == regs.PCI_ROM_SLOT else regs.PCI_BASE_ADDRESS_0 + 4 * region
        wmask = ~(size - 1) & ((1 << 64) - 1)
        if region == regs.PCI_ROM_SLOT:
            wmask |= regs.PCI_ROM_ADDRESS_ENABLE
        self.set(addr, bar_type, 4)
        if not bar_type & regs.PCI_BASE_ADDRESS_SPACE_IO and bar_type & regs.PCI_BASE_ADDRESS_MEM_TYPE_64:
            self.set_wmask(addr, wmask, 8)
            self.set_cmask(addr, (1 << 64) - 1, 8)
        else:
            self.set_wmask(addr, wmask, 4)
            self.set_cmask(addr, 0xFFFFFFFF, 4)

    def freeze(self, size: int) -> PciConfigSpace:
        return PciConfigSpace(bytes(self.config[:size]), bytes(self.cmask[:size]), bytes(self.wmask[:size]),
                              bytes(self.w1cmask[:size]))


# --- realize ------------------------------------------------------------------------------------------------


def _pcie_endpoint_caps(b: _Builder, props: Mapping[str, object]) -> None:
    """virtio_pci_realize on a PCI Express port: PCIe v2 capability, PM, AER, ATS, FLR."""
    # pcie_endpoint_cap_init -> pcie_cap_init (type: endpoint, since the bus is a port's, not the root)
    exp = b.add_capability(regs.PCI_CAP_ID_EXP, regs.PCI_EXP_VER2_SIZEOF)
    b.set(exp + regs.PCI_EXP_FLAGS, (regs.PCI_EXP_TYPE_ENDPOINT << 4) | regs.PCI_EXP_FLAGS_VER2, 2)
    b.set(exp + regs.PCI_EXP_DEVCAP, regs.PCI_EXP_DEVCAP_RBER, 4)
    if _flag(props, "x-pcie-ext-tag", False):  # pcie_cap_init (9.2; hw_compat_9_1 off)
        b.or_config(exp + regs.PCI_EXP_DEVCAP, regs.PCI_EXP_DEVCAP_EXT_TAG, 4)
    b.set(exp + regs.PCI_EXP_LNKCAP,
          regs.PCI_EXP_LNKCAP_ASPMS_0S | (regs.QEMU_PCI_EXP_LNK_X1 << 4) | regs.QEMU_PCI_EXP_LNK_2_5GT, 4)
    b.set(exp + regs.PCI_EXP_LNKSTA, (regs.QEMU_PCI_EXP_LNK_X1 << 4) | regs.QEMU_PCI_EXP_LNK_2_5GT, 2)
    b.set_cmask(exp + regs.PCI_EXP_LNKSTA, 0, 2)  # pcie_cap_v1_fill: link status is not compared on load
    b.set(exp + regs.PCI_EXP_DEVCAP2, regs.PCI_EXP_DEVCAP2_EFF_EETLPP, 4)
    b.set_wmask(exp + regs.PCI_EXP_DEVCTL2, regs.PCI_EXP_DEVCTL2_EETLPPB, 2)
    if _flag(props, "x-pcie-extcap-init", True):
        b.set_wmask(regs.PCI_CONFIG_SPACE_SIZE, 0, 4)  # a read-only "null" extended capability header

    pm = b.add_capability(regs.PCI_CAP_ID_PM, regs.PCI_PM_SIZEOF)
    b.set(pm + regs.PCI_PM_PMC, 0x3, 2)  # PM interface specification 1.2

    ext = regs.PCI_CONFIG_SPACE_SIZE
    if _flag(props, "aer", False):
        # pcie_aer_init (7.2: no uncorrectable-error mask default, that is 8.0's x-pcie-err-unc-mask);
        # virtio-pci has no aer_log_max property, so log_max is 0 and multiple header recording is off
        b.add_ext_capability(regs.PCI_EXT_CAP_ID_ERR, regs.PCI_ERR_VER, ext, regs.PCI_ERR_SIZEOF)
        b.set_w1cmask(ext + regs.PCI_ERR_UNCOR_STATUS, regs.PCI_ERR_UNC_SUPPORTED, 4)
        b.set(ext + regs.PCI_ERR_UNCOR_SEVER, regs.PCI_ERR_UNC_SEVERITY_DEFAULT, 4)
        b.set_wmask(ext + regs.PCI_ERR_UNCOR_SEVER, regs.PCI_ERR_UNC_SUPPORTED, 4)
        b.set_w1cmask(ext + regs.PCI_ERR_COR_STATUS, regs.PCI_ERR_COR_SUPPORTED, 4)
        b.set(ext + regs.PCI_ERR_COR_MASK, regs.PCI_ERR_COR_MASK_DEFAULT, 4)
        b.set_wmask(ext + regs.PCI_ERR_COR_MASK, regs.PCI_ERR_COR_SUPPORTED, 4)
        b.set(ext + regs.PCI_ERR_CAP, regs.PCI_ERR_CAP_ECRC_GENC_CHKC, 4)
        b.set_wmask(ext + regs.PCI_ERR_CAP, regs.PCI_ERR_CAP_ECRC_GENE_CHKE, 4)
        ext += regs.PCI_ERR_SIZEOF

    if _flag(props, "x-pcie-deverr-init", True):
        b.or_wmask(exp + regs.PCI_EXP_DEVCTL, regs.PCI_EXP_DEVCTL_ERR_ENABLES, 4)
        b.or_w1cmask(exp + regs.PCI_EXP_DEVSTA, regs.PCI_EXP_DEVSTA_ERRORS, 4)
    if _flag(props, "x-pcie-lnkctl-init", True):
        b.or_wmask(exp + regs.PCI_EXP_LNKCTL, regs.PCI_EXP_LNKCTL_CCC_ES, 4)
    if _flag(props, "x-pcie-pm-init", True):
        b.set_wmask(pm + regs.PCI_PM_CTRL, regs.PCI_PM_CTRL_STATE_MASK, 2)
    if _flag(props, "ats", False):
        # pcie_ats_init: invalidate queue depth 0, disabled, STU 0
        b.add_ext_capability(regs.PCI_EXT_CAP_ID_ATS, 0x1, ext, regs.PCI_EXT_CAP_ATS_SIZEOF)
        if _flag(props, "x-ats-page-aligned", True):
            b.set(ext + regs.PCI_ATS_CAP, regs.PCI_ATS_CAP_PAGE_ALIGNED, 2)
        b.set_wmask(ext + regs.PCI_ATS_CTRL, regs.PCI_ATS_CTRL_WRITABLE, 2)
    if _flag(props, "x-pcie-flr-init", True):
        b.or_config(exp + regs.PCI_EXP_DEVCAP, regs.PCI_EXP_DEVCAP_FLR, 4)
        b.or_wmask(exp + regs.PCI_EXP_DEVCTL, regs.PCI_EXP_DEVCTL_BCR_FLR, 2)  # reads back 0: the write starts an FLR


def _virtio_cap(b: _Builder, cap_len: int, cfg_type: int, bar: int, offset: int, length: int) -> int:
    # virtio_pci_add_mem_cap: a vendor capability, then struct virtio_pci_cap from cap_len on
    pos = b.add_capability(regs.PCI_CAP_ID_VNDR, cap_len)
    b.config[pos + 2] = cap_len
    b.config[pos + 3] = cfg_type
    b.config[pos + 4] = bar
    b.set(pos + 8, offset, 4)
    b.set(pos + 12, length, 4)
    return pos


def _msix_init_exclusive_bar(b: _Builder, nentries: int) -> bool:
    """msix_init_exclusive_bar: table in the low half of a 4 KiB BAR 1, PBA in the high half (larger if needed)."""
    if nentries < 1 or nentries > regs.PCI_MSIX_FLAGS_QSIZE + 1:
        return False  # msix_init fails with -EINVAL; virtio_pci_device_plugged warns and sets vectors to 0
    bar_size = 4096
    pba_offset = bar_size // 2
    pba_size = ((nentries + 63) // 64 * 64) // 8
    if nentries * regs.PCI_MSIX_ENTRY_SIZE > pba_offset:
        pba_offset = nentries * regs.PCI_MSIX_ENTRY_SIZE
    if pba_offset + pba_size > 4096:
        bar_size = pba_offset + pba_size
    bar_size = _pow2ceil(bar_size)
    cap = b.add_capability(regs.PCI_CAP_ID_MSIX, regs.MSIX_CAP_LENGTH)
    b.set(cap + regs.PCI_MSIX_FLAGS, nentries - 1, 2)
    b.set(cap + regs.PCI_MSIX_TABLE, 0 | regs.VIRTIO_PCI_MSIX_BAR, 4)
    b.set(cap + regs.PCI_MSIX_PBA, pba_offset | regs.VIRTIO_PCI_MSIX_BAR, 4)
    b.wmask[cap + regs.MSIX_CONTROL_OFFSET] |= regs.MSIX_ENABLE_MASKALL
    b.register_bar(regs.VIRTIO_PCI_MSIX_BAR, regs.PCI_BASE_ADDRESS_SPACE_MEMORY, bar_size)
    return True


def virtio_pci_config_space(device: Device, props: Mapping[str, object], *, express: bool,
                            config_len: int | None = None) -> PciConfigSpace:
    """The PCI config space and masks of ``<device>-pci`` after QEMU 7.2's realize and reset.

    ``device``: the device's declaration (models/declarations.Device: its PCI ids). ``props``: the proxy's effective
    property values (module docstring). ``express``: the device sits on a PCI Express port (not on a root bus);
    QEMU gives it PCIe capabilities and a 4096-byte space only if it is also modern and ``x-disable-pcie`` is off.
    ``config_len``: the virtio device's config length, needed when the legacy I/O BAR exists (its size is
    pow2ceil(20, or 24 with MSI-X, + config_len)).
    """
    info = device

    disable_modern = _flag(props, "disable-modern", False)
    disable_legacy = _disable_legacy(props, express)
    modern, legacy = not disable_modern, not disable_legacy
    if not modern and not legacy:
        raise PciConfigError("device cannot work as neither modern nor legacy mode is enabled")
    # virtio_pci_dc_realize marks the device PCI Express when modern and x-disable-pcie is off;
    # virtio_pci_realize keeps that only on a PCIe port
    is_express = express and modern and not _flag(props, "x-disable-pcie", False)
    size = regs.PCIE_CONFIG_SPACE_SIZE if is_express else regs.PCI_CONFIG_SPACE_SIZE
    page_per_vq = _flag(props, "page-per-vq", False)
    modern_pio = _flag(props, "modern-pio-notify", False)
    vectors = _int(props, "vectors", info.pci_vectors)
    if vectors < 0:
        raise PciConfigError(f"property 'vectors': {vectors} is negative")

    # do_pci_register_device: class ids, default subsystem ids, masks, multifunction
    b = _Builder(size)
    b.set(regs.PCI_VENDOR_ID, regs.PCI_VENDOR_ID_REDHAT_QUMRANET, 2)
    b.set(regs.PCI_DEVICE_ID, info.pci_device_id, 2)
    b.config[regs.PCI_REVISION_ID] = regs.VIRTIO_PCI_ABI_VERSION
    b.set(regs.PCI_CLASS_DEVICE, info.pci_class, 2)
    b.set(regs.PCI_SUBSYSTEM_VENDOR_ID, regs.PCI_SUBVENDOR_ID_REDHAT_QUMRANET, 2)
    b.set(regs.PCI_SUBSYSTEM_ID, regs.PCI_SUBDEVICE_ID_QEMU, 2)
    b.init_masks()
    if _flag(props, "multifunction", False):
        b.config[regs.PCI_HEADER_TYPE] |= regs.PCI_HEADER_TYPE_MULTI_FUNCTION

    # virtio_pci_realize
    if is_express:
        _pcie_endpoint_caps(b, props)

    # virtio_pci_device_plugged
    class_code = _int(props, "class", 0)
    if class_code:
        b.set(regs.PCI_CLASS_DEVICE, class_code, 2)
    if legacy:
        b.set(regs.PCI_SUBSYSTEM_ID, info.virtio_id, 2)  # legacy and transitional devices: subsystem id = virtio id
    else:
        b.set(regs.PCI_DEVICE_ID, regs.PCI_DEVICE_ID_VIRTIO_10_BASE + info.virtio_id, 2)
        b.config[regs.PCI_REVISION_ID] = 1
    b.config[regs.PCI_INTERRUPT_PIN] = 1
    if modern:
        mult = regs.QEMU_VIRTIO_PCI_QUEUE_MEM_MULT if page_per_vq else 4
        notify_len = mult * regs.VIRTIO_QUEUE_MAX
        bar = regs.VIRTIO_PCI_MODERN_MEM_BAR
        _virtio_cap(b, regs.VIRTIO_PCI_CAP_LEN, regs.VIRTIO_PCI_CAP_COMMON_CFG, bar, 0x0000, 0x1000)
        _virtio_cap(b, regs.VIRTIO_PCI_CAP_LEN, regs.VIRTIO_PCI_CAP_ISR_CFG, bar, 0x1000, 0x1000)
        _virtio_cap(b, regs.VIRTIO_PCI_CAP_LEN, regs.VIRTIO_PCI_CAP_DEVICE_CFG, bar, 0x2000, 0x1000)
        notify = _virtio_cap(b, regs.VIRTIO_PCI_NOTIFY_CAP_LEN, regs.VIRTIO_PCI_CAP_NOTIFY_CFG, bar, 0x3000, notify_len)
        b.set(notify + 16, mult, 4)  # notify_off_multiplier
        if modern_pio:
            b.register_bar(regs.VIRTIO_PCI_MODERN_IO_BAR, regs.PCI_BASE_ADDRESS_SPACE_IO, 4)
            _virtio_cap(b, regs.VIRTIO_PCI_NOTIFY_CAP_LEN, regs.VIRTIO_PCI_CAP_NOTIFY_CFG,
                        regs.VIRTIO_PCI_MODERN_IO_BAR, 0, 4)
        b.register_bar(bar, regs.PCI_BASE_ADDRESS_SPACE_MEMORY | regs.PCI_BASE_ADDRESS_MEM_PREFETCH
                       | regs.PCI_BASE_ADDRESS_MEM_TYPE_64, _pow2ceil(0x3000 + notify_len))
        cfg = _virtio_cap(b, regs.VIRTIO_PCI_CFG_CAP_LEN, regs.VIRTIO_PCI_CAP_PCI_CFG, 0, 0, 0)
        b.wmask[cfg + 4] = 0xFF  # cap.bar, cap.offset, cap.length and pci_cfg_data are the guest's window
        b.wmask[cfg + 8 : cfg + 20] = b"\xff" * 12
    msix = vectors > 0 and _msix_init_exclusive_bar(b, vectors)
    if legacy:
        if config_len is None:
            raise PciConfigError(f"{device}-pci has a legacy I/O BAR, whose size needs the device's config_len")
        header = regs.VIRTIO_PCI_CONFIG_OFF_MSIX if msix else regs.VIRTIO_PCI_CONFIG_OFF_NO_MSIX
        b.register_bar(regs.VIRTIO_PCI_LEGACY_IO_BAR, regs.PCI_BASE_ADDRESS_SPACE_IO, _pow2ceil(header + config_len))

    # pci_qdev_realize -> pci_add_option_rom: a ROM BAR unless there is no ROM or rombar=0 (ROM via fw_cfg)
    romfile = props.get("romfile", info.romfile)
    if romfile is None:
        romfile = ""
    if not isinstance(romfile, str):
        raise PciConfigError(f"property 'romfile': {romfile!r} is not a string")
    if romfile and _int(props, "rombar", 1):
        romsize = _int(props, "romsize", -1)
        if romsize in (-1, 0xFFFFFFFF):
            raise PciConfigError(f"{device}-pci has the option ROM {romfile!r}: its BAR size needs 'romsize' "
                                 "(QEMU's effective value after realize, or romfile='' for no ROM)")
        b.register_bar(regs.PCI_ROM_SLOT, 0, romsize)

    # pci_do_device_reset and virtio_pci_bus_reset_hold clear command, status, interrupt line, cache line,
    # BAR addresses, MSI-X control, DEVCTL/LNKCTL enables and PM control: all still as built here.
    return b.freeze(size)
