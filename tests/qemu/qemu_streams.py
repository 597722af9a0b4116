"""Just enough of the migration stream for the real-QEMU tests: where a device's virtio blob is.

QEMU appends a JSON description of the stream after EOF (QEMU_VM_VMDESCRIPTION: 0x06, be32
length, JSON). Each virtio device is one section whose only field, "virtio", has the blob's size.
The full decoder lives in harness.wire; these tests must not depend on it.
"""

from __future__ import annotations

import json
import struct
from typing import Any

QEMU_VM_VMDESCRIPTION = 0x06
QEMU_VM_SECTION_FOOTER = 0x7E
# QEMU_VM_EOF, SECTION_START, _PART, _END, _FULL, SECTION_FOOTER
FOLLOWERS = {0x1F, 0x01, 0x02, 0x03, 0x04, QEMU_VM_SECTION_FOOTER}


def vmdesc(stream: bytes) -> dict[str, Any]:
    """The JSON description: scan backwards for 0x06 + be32 L + '{' that ends exactly at EOF."""
    pos = len(stream)
    while True:
        pos = stream.rfind(bytes([QEMU_VM_VMDESCRIPTION]), 0, pos)
        if pos < 0:
            raise ValueError("no JSON description at the end of the stream")
        if stream[pos + 5 : pos + 6] == b"{":
            (length,) = struct.unpack(">I", stream[pos + 1 : pos + 5])
            if pos + 5 + length == len(stream):
                result: dict[str, Any] = json.loads(stream[pos + 5 :])
                return result


def virtio_blob(stream: bytes, section: str) -> tuple[int, int]:
    """(offset, size) of the `virtio` field of `section` (e.g. `0000:00:04.0/virtio-blk`)."""
    for dev in vmdesc(stream)["devices"]:
        if dev["name"] == section:
            break
    else:
        raise ValueError(f"no section {section} in the description")
    size = next(f["size"] for f in dev["fields"] if f["name"] == "virtio")
    # The section header ends with: idstr length, idstr, be32 instance id, be32 version id.
    idstr = section.encode()
    header = bytes([len(idstr)]) + idstr + struct.pack(">II", dev["instance_id"], dev["version"])
    start = stream.index(header) + len(header)
    # Next comes the section footer, or (machine types 2.3 and older: no footers) the next section.
    if stream[start + size] not in FOLLOWERS:
        raise ValueError(f"{section}: no section footer or section after {size} bytes")
    return start, size
