"""R5 and R9 on real QEMU streams.

R5: which subsections a real source binary's stream carries, against what the model of its
release sends for the same state.

The matrix's R5 holds the stream to the needed() that wrote it, so a wrong needed() passes there. Here the
expectation comes from the real binary instead: the source QEMU of a `--real` cell (or `virtio-compat qemu`)
saves a driven device, the model of its release saves the state that stream holds, and the subsections of the
two payloads (the core ones, the device's own, and the transport's inside virtio/extra_state) must be the same
names in the same order. A difference names the subsection and who sends it.

R9: the model's load of a real stream (what the destination QEMU accepted) against the reference that
harness/reference_load.py computes from that stream alone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness import reference_load as ref
from harness.errors import StreamError
from harness.qemu import tap
from harness.qemu.oracle import ModelLoad, dest_line
from harness.wire.payload import decode_payload
from harness.wire.stream import Stream
from models import declared
from models.config import realize
from models.model import guest_rings, state_from_wire
from models.model import save as model_save
from models.registry import BASE
from models.releases import Version
from models.save import save_params


def subsections(v: Any) -> list[str]:
    """The subsections of one decoded payload, in stream order: the device's own, then the core ones, each
    followed by those nested in it (virtio/extra_state's virtio_pci/modern_state or virtio_mmio/state)."""
    out = [s.name for s in (getattr(v.device, "subsections", None) or [])] if v.device is not None else []
    for s in v.subsections:
        out.append(s.name)
        out += [x.name for x in (getattr(s.body, "subsections", None) or [])]
    return out


def differences(section: str, release: Version, real: list[str], model: list[str]) -> list[str]:
    """One R5 line per subsection the two streams disagree on (or one for the order)."""
    out = [f"R5: {section}: QEMU {release} sends {name}, the model of {release} does not"
           for name in real if name not in model]
    out += [f"R5: {section}: the model of {release} sends {name}, QEMU {release} does not"
            for name in model if name not in real]
    if not out and real != model:
        out.append(f"R5: {section}: subsections in QEMU's order {real}, the model's {model}")
    return out


def check(s: Stream, release: Version, argv: Sequence[str]) -> tuple[int, list[str]]:
    """(device payloads checked, R5 lines) for the source stream `s` of QEMU `release` started with `argv`."""
    lines = {line.key: line for line in tap.lines(dest_line(argv), release)}
    checked, out = 0, []
    for p in s.devices:
        line = lines.get(p.key)
        if p.value is None or line is None or BASE.device(line.config.device).section != p.device:
            continue  # R12 reports a payload the decoder or the model cannot read
        r = realize(line.config)
        rings = guest_rings(s.memory, s.machine, state_from_wire(r, p.value)) if s.memory else None
        state = state_from_wire(r, p.value, rings)
        data = model_save(r, state)
        try:
            mine = decode_payload(data, r.config.transport, r.device.section, extras=r.registry.wire,
                                  schema_fields=declared.on_wire(r, state), **save_params(r, state))
        except StreamError as e:
            out.append(f"R5: {p.section}: the model's own save does not decode: {e}")
            continue
        checked += 1
        out += differences(p.section, release, subsections(p.value), subsections(mine))
    return checked, out


def load_order(loads: dict[str, ModelLoad]) -> tuple[int, list[str]]:
    """(model loads judged, R9 lines) for the model's loads of a real stream's devices."""
    judged, out = 0, []
    for section, ml in loads.items():
        if ml.result.state is None or ml.payload.value is None:
            continue  # R12 compares the verdicts
        v = ref.decode_as_destination(ml.realized, ml.payload.encode(), None, ml.payload.value)
        if v is None:
            continue
        judged += 1
        want = ref.reference_load(ml.realized, v)
        if want.refused is not None:
            out.append(f"R9: {section}: the model accepts, the feature step refuses: {want.refused}")
            continue
        out += [f"R9: {section}: {name}: reference {a!r:.80}, model {b!r:.80}"
                for name, (a, b) in ref.differences(want, ml.result.state).items()]
    return judged, out
