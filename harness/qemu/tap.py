"""What this host's tap devices can do, probed as QEMU probes them (net/tap-linux.c tap_probe_has_ufo/uso): a tap
with a vnet header accepts TUNSETOFFLOAD with UFO, or with USO, or refuses it. The kernel decides, so both QEMUs of
a pair on this host see the same; the model is told (models.cmdline.parse(tap=...)) so that it offers what QEMU
offers. None when no tap can be made here (no /dev/net/tun, or no CAP_NET_ADMIN): tap backends are not drawn."""

from __future__ import annotations

import fcntl
import functools
import os
import struct
from collections.abc import Sequence

from models.cmdline import DeviceLine, parse
from models.config import NetBackend
from models.releases import Version

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
IFF_TAP, IFF_NO_PI, IFF_VNET_HDR = 0x0002, 0x1000, 0x4000
TUN_F_CSUM, TUN_F_TSO4, TUN_F_UFO, TUN_F_USO4, TUN_F_USO6 = 0x01, 0x02, 0x10, 0x20, 0x40
TUN_F_UDP_TUNNEL_GSO = 0x080  # net/tap-linux.h (10.2)


@functools.lru_cache(maxsize=1)
def host_tap() -> NetBackend | None:
    """A tap backend with the offloads this host's kernel has (vnet_hdr on), or None when no tap can be made."""
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR)
    except OSError:
        return None
    try:
        try:
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", b"", IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
        except OSError:
            return None

        def accepts(flags: int) -> bool:
            try:
                fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | flags)
                return True
            except OSError:
                return False

        return NetBackend("tap", vnet_hdr=True, ufo=accepts(TUN_F_UFO), uso=accepts(TUN_F_USO4 | TUN_F_USO6))
    finally:
        os.close(fd)  # a tap that is not persistent goes with its last descriptor


@functools.lru_cache(maxsize=1)
def host_tap_tunnel() -> bool:
    """Whether this host's tap takes the UDP tunnel offloads (tap_probe_has_tunnel, kernel 6.17 on): QEMU 10.2 on
    then offers virtio-net's feature bits 65 to 68 with a vnet_hdr tap, which the model does not know yet."""
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", b"", IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
        fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_UDP_TUNNEL_GSO)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def lines(argv: Sequence[str], release: Version) -> list[DeviceLine]:
    """The virtio devices of a real QEMU's command line as the model of `release` realizes them on this host (its
    tap devices' offloads included)."""
    return parse(argv, release, tap=host_tap())
