"""The destination's device as loaded so far, in stream order: what a VMSTATE_*_TEST field's test reads while QEMU
loads (vmstate_load_state writes each field, and each subsection, into the device as it reads it). The core fields,
then the device vmsd's fields and its subsections, then vmstate_virtio's subsections; a test sees those read before
it, and the state from before the load for the rest."""

from __future__ import annotations

import dataclasses
from typing import Any

from models.state import DeviceState

# DeviceState's own fields that the stream loads (the core fields, the core subsections' bodies), by their wire names
# in load order (the 64-bit features replace the 32-bit field)
_STATE_FIELDS = {"status": "status", "isr": "isr", "queue_sel": "queue_sel", "guest_features_lo": "guest_features",
                 "guest_features": "guest_features", "device_endian": "device_endian", "broken": "broken",
                 "started": "started", "disabled": "disabled"}


def state_so_far(before: DeviceState, ctx: Any, declared: frozenset[str]) -> DeviceState:
    """The destination's state while it loads: its state before the load (`before`) with every value the parse
    context `ctx` has read in place, in stream order; `declared`: the names of the schema modules' fields
    (DeviceState.extra)."""
    core, dev = loaded_so_far(ctx)
    both = {**dev, **core}
    extra = {**dict(before.extra), **{k: v for k, v in both.items() if k in declared}}
    device = before.device
    if device is not None:
        names = {f.name for f in dataclasses.fields(device)}
        device = dataclasses.replace(device, **{k: v for k, v in dev.items() if k in names
                                                and _same_kind(v, getattr(device, k))})
    own = {name: core[k] for k, name in _STATE_FIELDS.items() if isinstance(core.get(k), int)}
    return dataclasses.replace(before, extra=tuple(sorted(extra.items())), device=device, **own)


def loaded_so_far(ctx: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The values a parse context has read so far, by name, in stream order (a later one of a name replaces an
    earlier one): (the VirtIODevice's: the core fields and the core subsections; the device's: its vmsd's fields and
    subsections). Each enclosing struct's fields from the outermost, and the entries of a subsection list before
    the one being read (Subsections keeps them in the context as `_subsections`)."""
    levels = []
    while ctx is not None:
        levels.append(ctx)
        ctx = ctx.get("_")
    core: dict[str, Any] = {}
    dev: dict[str, Any] = {}
    in_device = False
    for level in reversed(levels):
        if "transport" in level:  # virtio_save's own fields; then the device vmsd, then vmstate_virtio's subsections
            _merge(core, level)
            finished = level.get("device")
            if isinstance(finished, dict):
                _merge(dev, finished)
                for entry in finished.get("subsections") or ():
                    _merge(dev, entry.get("body"))
            in_device = finished is None
        else:
            _merge(dev if in_device else core, level)
        for entry in level.get("_subsections") or ():
            _merge(dev if in_device else core, entry.get("body"))
    return core, dev


def _merge(out: dict[str, Any], values: Any) -> None:
    if not isinstance(values, dict):
        return
    for k, v in values.items():
        if not k.startswith("_") and v is not None and k not in ("device", "subsections"):
            out[k] = _value(v)


def _same_kind(value: Any, current: Any) -> bool:
    """A loaded value that can stand for a state field (an int for an int, bytes for bytes)."""
    if isinstance(current, bool | int):
        return isinstance(value, int)
    return current is None or isinstance(value, type(current))


def _value(x: Any) -> Any:
    return tuple(x) if isinstance(x, list) else x
