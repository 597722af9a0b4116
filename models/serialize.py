"""Configurations and states as JSON and back, exactly (failure files replay from them)."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any

import construct as c

from models import config as config_mod
from models import releases, state

_TYPES: dict[str, type] = {
    t.__name__: t for t in (
        state.DeviceState, state.QueueState, state.PciState, state.MmioState, state.CcwState, state.NetState,
        state.BlkState, state.BlkRequest, state.BalloonState, config_mod.Config, config_mod.NetBackend,
        releases.MachineType, releases.Version)
}


def to_json(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {"__type__": type(x).__name__, **{f.name: to_json(getattr(x, f.name)) for f in dataclasses.fields(x)}}
    if isinstance(x, (bytes, bytearray)):
        return {"__bytes__": bytes(x).hex()}
    if isinstance(x, tuple):
        return {"__tuple__": [to_json(v) for v in x]}
    if isinstance(x, frozenset):
        return {"__frozenset__": sorted(to_json(v) for v in x)}
    if isinstance(x, (dict, MappingProxyType, c.Container)):
        return {"__dict__": {str(k): to_json(v) for k, v in x.items() if not str(k).startswith("_")}}
    if isinstance(x, list):
        return [to_json(v) for v in x]
    return x


def from_json(x: Any) -> Any:
    if isinstance(x, list):
        return [from_json(v) for v in x]
    if not isinstance(x, dict):
        return x
    if "__bytes__" in x:
        return bytes.fromhex(x["__bytes__"])
    if "__tuple__" in x:
        return tuple(from_json(v) for v in x["__tuple__"])
    if "__frozenset__" in x:
        return frozenset(from_json(v) for v in x["__frozenset__"])
    if "__dict__" in x:
        return c.Container({k: from_json(v) for k, v in x["__dict__"].items()})
    kind = _TYPES[x["__type__"]]
    return kind(**{k: from_json(v) for k, v in x.items() if k != "__type__"})
