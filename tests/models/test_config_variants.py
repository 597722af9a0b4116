"""strategies/configs.py config_variants() enumerates what configs() draws, as far as realize derives anything from
it: `diff` decides conditions over host features and modern from it (Static.variants), so a draw it misses would
make a static verdict wrong without a word."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from harness.errors import SchemaError
from models.config import realize
from models.registry import BASE
from strategies.configs import config_variants, configs

DEVICES = ("virtio-net", "virtio-blk", "virtio-balloon", "virtio-rng")
PAIRS = [(a, b) for a in BASE.releases for b in BASE.releases if a == b or abs(BASE.releases.index(a)
                                                                                 - BASE.releases.index(b)) == 1]


def _derived(config):  # type: ignore[no-untyped-def]
    r = realize(config)
    return r.host_features, r.modern, r.legacy, r.queue_sizes, r.config_len


@settings(max_examples=150, deadline=None, database=None, derandomize=True)
@given(st.data())
def test_every_drawn_configuration_is_a_variant(data: st.DataObject) -> None:
    src, dst = data.draw(st.sampled_from(PAIRS))
    transport, device = data.draw(st.sampled_from(("pci", "mmio", "ccw"))), data.draw(st.sampled_from(DEVICES))
    if not {m.name for m in BASE.machine_types(src, transport)} & {m.name for m in BASE.machine_types(dst, transport)}:
        return
    config, _ = data.draw(configs(src, dst, transport, device))
    try:
        drawn = _derived(config)
    except SchemaError:
        return  # a configuration realize refuses is not migrated (the matrix skips it too)
    variants = set()
    for v in config_variants(src, dst, transport, device, config.machine):
        try:
            variants.add(_derived(v))
        except SchemaError:
            continue
    assert drawn in variants, (config.describe(), len(variants))
