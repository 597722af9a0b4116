"""One virtio payload (the device's section body past its header) decoded on its own, or inside a stream with
the layout choices the stream leaves open (the schema modules' fields, virtio-net's queue pairs)."""

from __future__ import annotations

import io
from typing import Any

from harness.errors import StreamError
from harness.wire.primitives import _DECODE_ERRORS, locate_error, parse_exact
from harness.wire.virtio import NO_EXTRAS, Extras, compiled_payload_layout, payload_layout

__all__ = ["decode_payload", "parse_with"]


def parse_with(data: bytes, off: int, size: int | None, transport: str, device: str, path: str,
                tries: list[dict[str, bool]], extras: Extras
                ) -> tuple[Any, int, dict[str, bool] | None, dict[str, Any] | None]:
    """The first of the schema_fields choices that decodes (the error is the first one's). virtio-net's queue-pair
    fields follow the device's max_queue_pairs, which the queue count shows only once the guest negotiated MQ
    (without it QEMU keeps one pair's queues): a payload sized by the description that does not decode
    otherwise is tried with them."""
    first = None
    alternatives: list[dict[str, Any]] = [{}]
    if device == "virtio-net" and size is not None:
        alternatives.append({"net_multiqueue": True})
    for params in alternatives:
        for fields in tries:
            try:
                return (*parse_payload(data, off, size, transport, device, path, fields or None, extras, **params),
                        fields or None, params or None)
            except StreamError as e:
                first = first or e
    assert first is not None
    raise first


def parse_payload(data: bytes, off: int, size: int | None, transport: str, device: str,
                   path: str, schema_fields: dict[str, bool] | None, extras: Extras, **params: Any
                   ) -> tuple[Any, int]:
    if size is not None:
        chunk = data[off : off + size]
        return parse_exact(compiled_payload_layout(transport, device, extras),
                           payload_layout(transport, device, extras), chunk, off, path,
                           schema_fields=schema_fields, **params), size
    stream = io.BytesIO(data)
    stream.seek(off)
    try:
        value = compiled_payload_layout(transport, device, extras).parse_stream(stream, schema_fields=schema_fields)
    except _DECODE_ERRORS:
        raise locate_error(payload_layout(transport, device, extras), data, off, 0, path,
                           schema_fields=schema_fields) from None
    return value, stream.tell() - off


def decode_payload(data: bytes, transport: str, device: str, offset: int = 0, path: str = "virtio",
                   extras: Extras = NO_EXTRAS, **params: Any) -> Any:
    """Decode one virtio payload on its own (every byte must be used); `params` are the layout's parse
    parameters (models/save.py and load.py give them as the writer decided)."""
    return parse_exact(compiled_payload_layout(transport, device, extras), payload_layout(transport, device, extras),
                       data, offset, path, **params)
