"""What a QEMU binary takes and offers, decided by its version: the migration URI, which introspection
commands exist and are safe, its machine types, and the binary of the same release for another target.

Measured on the fleet (5.2, 7.2, 10.0, 11.1.3) with a fresh VM and after a load:
- x-query-virtio* arrived in 7.0; 5.2 answers `The command x-query-virtio has not been found`.
- 11.1.3's x-query-virtio-status aborts QEMU (qapi-visit-core.c visit_start_struct assertion) and HMP
  `info virtio-status` segfaults it; x-query-virtio and x-query-virtio-queue-status answer. 10.0 is fine.
  11.0 is not in the fleet: taken as 11.1 until measured.
- `fd:` to a plain file is refused by 11.1 (`fd: migration to a file is not supported. Use file:
  instead.`); `file:PATH` exists from 8.2, so it is used from there on, both ways.
- No migration capability is set: the defaults are what the stream decoder reads (no xbzrle,
  compression or multifd), and every release of the fleet has the same defaults.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess

from harness import fleet
from harness.errors import QemuError
from models.releases import Version

HELP_TIMEOUT = 10.0
X_QUERY_VIRTIO = Version(7, 0)
X_QUERY_STATUS_UNSAFE = Version(11, 0)
FILE_URI = Version(8, 2)

# The machine families of each target and the transport virtio takes there.
TARGET_OF_FAMILY = {"pc-i440fx": "x86_64", "pc-q35": "x86_64", "pc": "x86_64", "q35": "x86_64",
                    "virt": "aarch64", "s390-ccw-virtio": "s390x"}
TRANSPORT_OF_TARGET = {"x86_64": "pci", "aarch64": "mmio", "s390x": "ccw"}


def has_x_query_virtio(version: Version) -> bool:
    return version >= X_QUERY_VIRTIO


def x_query_status_safe(version: Version) -> bool:
    """Whether x-query-virtio-status answers without ending QEMU."""
    return X_QUERY_VIRTIO <= version < X_QUERY_STATUS_UNSAFE


def file_uri(version: Version) -> bool:
    """Whether the release migrates to and from a file with `file:PATH` (else an `fd:` of an open file)."""
    return version >= FILE_URI


def parse_version(text: str) -> Version:
    """MAJOR.MINOR of a version text such as `7.2.22 (Debian ...)` or `QEMU emulator version 10.0.2`."""
    m = re.search(r"(\d+)\.(\d+)", text)
    if not m:
        raise QemuError(f"not a QEMU version: {text.strip()[:100]!r}")
    return Version(int(m.group(1)), int(m.group(2)))


def _run(path: str, *args: str) -> str:
    try:
        out = subprocess.run([path, *args], capture_output=True, text=True, timeout=HELP_TIMEOUT,
                             stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise QemuError(f"cannot run {path} {' '.join(args)}: {exc}") from exc
    return out.stdout


@functools.lru_cache(maxsize=64)
def binary_version(path: str) -> Version:
    """MAJOR.MINOR from `--version` (`QEMU emulator version 7.2.22 (...)`): a binary that does not say
    so is not QEMU, or does not start."""
    out = _run(path, "--version")
    m = re.search(r"QEMU emulator version (\d+)\.(\d+)", out)
    if not m:
        said = (out.strip().splitlines() or [""])[0][:80]
        raise QemuError(f"{path} is not a QEMU that starts: `--version` says {said!r}")
    return Version(int(m.group(1)), int(m.group(2)))


@functools.lru_cache(maxsize=64)
def machine_names(path: str) -> frozenset[str]:
    """The machine types `-machine help` lists (aliases such as `pc` included)."""
    names = set()
    for line in _run(path, "-machine", "help").splitlines()[1:]:
        parts = line.split()
        if parts and not line.startswith(" "):
            names.add(parts[0])
    if not names:
        raise QemuError(f"{path} lists no machine type (`-machine help`): is it a QEMU system emulator?")
    return frozenset(names)


def family(machine: str) -> str:
    """`pc-i440fx` of `pc-i440fx-7.2`, `s390-ccw-virtio` of `s390-ccw-virtio-7.2,suppress-vmdesc=off`."""
    name = machine.split(",")[0]
    m = re.fullmatch(r"(.+?)-\d+\.\d+", name)
    return m.group(1) if m else name


def target_of(machine: str) -> str:
    t = TARGET_OF_FAMILY.get(family(machine))
    if t is None:
        raise QemuError(f"machine type {machine}: not one virtio-compat drives "
                        f"(pc-i440fx-*, pc-q35-*, virt-*, s390-ccw-virtio-*)")
    return t


def transport_of(machine: str) -> str:
    return TRANSPORT_OF_TARGET[target_of(machine)]


def for_target(binary: str, target: str) -> str:
    """The binary of the same release for `target`: a fleet release name picks that release's
    qemu-system-TARGET; a path or name `qemu-system-X` becomes `qemu-system-TARGET` beside it."""
    if re.fullmatch(r"\d+\.\d+", binary):
        return str(fleet.binary(binary, target))
    head, name = os.path.split(binary)
    if name != f"qemu-system-{target}" and name.removeprefix("qemu-system-") in TRANSPORT_OF_TARGET:
        return os.path.join(head, f"qemu-system-{target}")
    return binary
