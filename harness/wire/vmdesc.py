"""The JSON description QEMU appends after the end of a migration stream (vmdesc): where it starts, and how many
bytes of the stream each vmsd it describes covers, which lets the walk (harness/wire/stream.py) skip the sections
of devices it does not decode by their described size."""

from __future__ import annotations

from typing import Any

from harness.errors import StreamError


def find_vmdesc(data: bytes) -> int | None:
    """Offset of the 0x06 byte that starts the JSON description, or None.

    The description is `0x06, be32 L, L bytes of JSON` ending exactly at the end of the file; JSON
    text holds no 0x06 byte, so the last 0x06 with that property is the marker (the walk then checks
    that EOF comes right before it)."""
    end = len(data)
    pos = data.rfind(b"\x06", 0, end - 5)
    while pos >= 0:
        if data[pos + 5 : pos + 6] == b"{" and pos + 5 + int.from_bytes(data[pos + 1 : pos + 5], "big") == end:
            return pos
        pos = data.rfind(b"\x06", 0, pos)
    return None


# Arrays of pointers whose first element is NULL: QEMU (7.2 at least) describes the whole array by
# that first element (`"struct": {}`, size 1: the 0x30 nullptr marker), so the description cannot
# size the elements that are not NULL. Their layouts, known here: (vmsd, field) -> element bytes.
NULLPTR_MARKER = 0x30
POINTER_ARRAY_ELEMENTS = {
    # s390_css.css[]: vmstate_css_img = 256 x s390_chp_info {in_use, type, is_virtual} (hw/s390x/css.c)
    ("s390_css", "css"): 256 * 3,
}


class BadDescription(ValueError):
    """A JSON description without the shape QEMU writes; the walk reports it as a StreamError."""


def desc_list(d: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items = d.get(key, [])
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise BadDescription(f"{key!r} of {d.get('vmsd_name', d.get('name'))!r} is not a list of objects")
    return items


def desc_int(f: dict[str, Any], key: str, default: int | None = None) -> int:
    value = f.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadDescription(f"field {f.get('name')!r} has {key} {value!r}, not a count of bytes or elements")
    return value


def desc_size(d: dict[str, Any], data: bytes, pos: int) -> int:
    """Bytes a vmsd description covers from `pos`: its fields (size x array_len), then its
    subsections; `data` is read only for arrays of pointers that the description cannot size.
    Raises BadDescription for a description QEMU would not write."""
    total = 0
    for f in desc_list(d, "fields"):
        n = desc_int(f, "array_len", 1)
        size = desc_int(f, "size")
        if f.get("type") == "struct" and f.get("struct") == {} and size == 1 and n > 1:
            element = POINTER_ARRAY_ELEMENTS.get((str(d.get("vmsd_name")), str(f.get("name"))))
            for _ in range(n):  # each element takes at least a byte of the stream: bounded by what is there
                at = pos + total
                if at >= len(data):
                    raise StreamError(f"array of pointers {f.get('name')!r} of {d.get('vmsd_name')!r} runs past "
                                      f"the end of the stream ({n} elements by the JSON description)", len(data),
                                      str(d.get("name", d.get("vmsd_name"))))
                if data[at] == NULLPTR_MARKER:
                    total += 1
                elif element is None:
                    raise StreamError(f"field {f.get('name')!r} of {d.get('vmsd_name')!r} is an array of "
                                      "pointers that the JSON description cannot size (QEMU describes it by "
                                      "its first, NULL element), and its layout is not known to this tool",
                                      at, str(d.get("name", d.get("vmsd_name"))))
                else:
                    total += element
            continue
        total += size * n
    for sub in desc_list(d, "subsections"):
        name = sub.get("vmsd_name")
        if not isinstance(name, str):
            raise BadDescription(f"a subsection of {d.get('vmsd_name', d.get('name'))!r} has vmsd_name {name!r}")
        total += 2 + len(name.encode()) + 4
        total += desc_size(sub, data, pos + total)
    return total


def virtio_field(d: dict[str, Any]) -> tuple[int, int] | None:
    """(offset within the section body, size) of the field of type "virtio", if any (after desc_size has
    checked the fields)."""
    off = 0
    for f in d.get("fields", []):
        size = int(f["size"]) * int(f.get("array_len", 1))
        if f.get("type") == "virtio":
            return off, size
        off += size
    return None
