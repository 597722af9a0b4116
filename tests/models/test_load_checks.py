"""Each load check of §4 and §5 provoked, with the release range where it holds. Messages and
verdicts are literals from the reference (§4 steps, real-qemu.md §6), not from the declarations."""

from __future__ import annotations

from dataclasses import replace

from models.config import Config, NetBackend, realize
from models.model import ACCEPTED, ACCEPTED_BROKEN, REJECTED, load, reset_state, save
from models.releases import MachineType, V
from models.state import DeviceState, QueueState


def _r(release: str, machine: str, device: str = "virtio-net", **props: object):  # type: ignore[no-untyped-def]
    return realize(Config(V(release), MachineType.parse(machine), device, "pci", 1, 128,
                          {"romfile": "", **props}))


def _driven(r, **changes: object) -> DeviceState:  # type: ignore[no-untyped-def]
    """A state after a legacy driver set up queue 0 at 0x100000 (status 7)."""
    s = reset_state(r)
    q0 = replace(s.queues[0], desc=0x100000, avail=0x101000, used=0x102000)
    return replace(s, status=7, queues=(q0, *s.queues[1:]), **changes)


def _roundtrip(release: str, machine: str, state_fn=None, device: str = "virtio-net", **q0: int):  # type: ignore[no-untyped-def]
    r = _r(release, machine, device)
    s = _driven(r)
    s = replace(s, queues=(replace(s.queues[0], **q0), *s.queues[1:]))
    if state_fn:
        s = state_fn(s)
    data = save(r, s)
    return load(r, data, [(q.avail_idx, q.used_idx) for q in s.queues], "0000:00:03.0/virtio-net")


def test_bad_guest_index_fatal_until_51_logged_in_52_broken_from_60() -> None:
    msg = "VQ 0 size 0x100 Guest index 0x0 inconsistent with Host index 0x8000: delta 0x8000"
    old = _roundtrip("5.1", "pc-i440fx-5.1", last_avail_idx=0x8000)
    logged = _roundtrip("5.2", "pc-i440fx-5.2", last_avail_idx=0x8000)  # then in use 0x8000 > 0x100 (the 5.2 binary)
    new = _roundtrip("6.0", "pc-i440fx-6.0", last_avail_idx=0x8000)
    assert (old.outcome, old.error) == (REJECTED, msg)
    assert (logged.outcome, logged.error) == (REJECTED, "VQ 0 size 0x100 < last_avail_idx 0x8000 - used_idx 0x0")
    assert (new.outcome, new.error) == (ACCEPTED_BROKEN, msg)
    assert new.state is not None and new.state.broken


def test_bad_guest_index_on_72_as_the_real_qemu_printed() -> None:
    """real-qemu.md §6: q1 last_avail_idx = 5 with avail idx 1: accepted, 'delta 0xfffc'."""
    r = _r("7.2", "pc-i440fx-7.2")
    s = _driven(r)
    q1 = replace(s.queues[1], desc=0x110000, last_avail_idx=5, avail_idx=1)
    s = replace(s, queues=(s.queues[0], q1, s.queues[2]))
    res = load(r, save(r, s), [(q.avail_idx, q.used_idx) for q in s.queues])
    assert (res.outcome, res.error) == (ACCEPTED_BROKEN, "VQ 1 size 0x100 Guest index 0x1 inconsistent with Host "
                                                          "index 0x5: delta 0xfffc")


def test_inuse_check_made_modular_in_29() -> None:
    """last_avail 1 with used idx 0xffff: 2 in flight across the u16 wrap."""
    kw = {"last_avail_idx": 1, "avail_idx": 1, "used_idx": 0xFFFF}
    r28 = _roundtrip("2.8", "pc-i440fx-2.8", **kw)
    r29 = _roundtrip("2.9", "pc-i440fx-2.9", **kw)
    r26 = _roundtrip("2.5", "pc-i440fx-2.5", **kw)
    assert (r28.outcome, r28.error) == (REJECTED, "VQ 0 size 0x100 < last_avail_idx 0x1 - used_idx 0xffff")
    assert r29.outcome == ACCEPTED and r26.outcome == ACCEPTED  # before 2.7 there was no in-use check


def test_inuse_beyond_ring_size_fatal() -> None:
    res = _roundtrip("7.2", "pc-i440fx-7.2", last_avail_idx=0x200, avail_idx=0x200, used_idx=0)
    assert (res.outcome, res.error) == (REJECTED, "VQ 0 size 0x100 < last_avail_idx 0x200 - used_idx 0x0")


def test_desc_zero_with_nonzero_index() -> None:
    res = _roundtrip("7.2", "pc-i440fx-7.2", desc=0, last_avail_idx=3)
    assert (res.outcome, res.error) == (REJECTED, "VQ 0 address 0x0 inconsistent with Host index 0x3")


def test_queue_count_limit_and_message_by_release() -> None:
    def many(n: int):  # type: ignore[no-untyped-def]
        return lambda s: replace(s, queues=tuple(QueueState(64) for _ in range(n)), num_default=(64,) * n)

    r23 = _roundtrip("2.1", "pc-i440fx-2.1", many(65))
    r24 = _roundtrip("2.4", "pc-i440fx-2.4", many(65))
    assert (r23.outcome, r23.error) == (REJECTED, "Invalid number of PCI queues: 0x41")
    assert r24.outcome == ACCEPTED  # 1024 from 2.4 (b829c2a98f)
    r72 = _roundtrip("7.2", "pc-i440fx-7.2", many(1025))
    assert (r72.outcome, r72.error) == (REJECTED, "Invalid number of virtqueues: 0x401")


def test_queue_sel_bound() -> None:
    res = _roundtrip("7.2", "pc-i440fx-7.2", lambda s: replace(s, queue_sel=1024))
    assert res.outcome == REJECTED
    assert res.error == "Failed to load virtio-net:virtio"  # virtio_load returns -1 without a message
    assert _roundtrip("7.2", "pc-i440fx-7.2", lambda s: replace(s, queue_sel=1023)).outcome == ACCEPTED


def test_features_check_as_the_real_qemu_printed() -> None:
    """real-qemu.md §6: 64bit_features |= bit 0 (CSUM, not offered)."""
    res = _roundtrip("7.2", "pc-i440fx-7.2", lambda s: replace(s, guest_features=0x18021))
    assert (res.outcome, res.error) == (REJECTED, "Features 0x18021 unsupported. Allowed features: 0x10179bf8064")
    assert res.lines[-1] == "load of migration failed: Operation not permitted"


def test_low_word_only_bit_is_overridden_by_the_64bit_subsection() -> None:
    """real-qemu.md §6: guest_features_lo |= bit 0 alone is accepted silently."""
    res = _roundtrip("7.2", "pc-i440fx-7.2", lambda s: replace(s, guest_features=0x18020,
                                                                guest_features_lo_field=0x18021))
    assert res.outcome == ACCEPTED and res.state is not None and res.state.guest_features == 0x18020


def test_destination_without_high_host_bits_checks_only_the_low_word() -> None:
    """§4 step 12 pre-10.2: a 64bit_features value sent to a destination with no high host bits is
    discarded; only the low 32 bits are checked (the 7.2 machine type 2.6 device has none)."""
    src = _r("7.2", "pc-i440fx-7.2")
    dst = _r("7.2", "pc-i440fx-2.6")
    s = _driven(src, guest_features=(1 << 32) | 0x20)
    data = save(src, s)
    res = load(dst, data, [(0, 0)] * 3)
    assert res.outcome != REJECTED or "Features" not in (res.error or "")


def test_unknown_core_subsection_fails_an_older_destination() -> None:
    """virtio/started (4.1) sent to 4.0: the exact lookup fails (-ENOENT)."""
    src = _r("4.1", "pc-i440fx-4.0")
    dst = _r("4.0", "pc-i440fx-4.0")
    s = _driven(src, started=True)
    res = load(dst, save(src, s), [(0, 0)] * 3)
    assert res.outcome == REJECTED and res.lines[-1] == "load of migration failed: No such file or directory"
    assert load(_r("4.1", "pc-i440fx-4.0"), save(src, s), [(0, 0)] * 3).outcome == ACCEPTED


def test_vnet_header_needed_by_the_stream() -> None:
    """real-qemu.md §6: has_vnet_hdr = 1 on a hubport backend."""
    r = _r("7.2", "pc-i440fx-7.2")
    s = _driven(r)
    s = replace(s, device=replace(s.device, has_vnet_hdr=1))
    res = load(r, save(r, s), [(0, 0)] * 3)
    assert res.lines[:2] == ("virtio-net: saved image requires vnet_hdr=on", "Failed to load virtio-net-device:tmp")
    assert res.lines[-1] == "load of migration failed: Invalid argument"
    tap = realize(Config(V("7.2"), MachineType.parse("pc-i440fx-7.2"), "virtio-net", "pci", 1, 128, {"romfile": ""},
                         NetBackend("tap", vnet_hdr=True)))
    assert load(tap, save(r, s), [(0, 0)] * 3).error != "virtio-net: saved image requires vnet_hdr=on"


def test_pci_config_mismatch_as_the_real_qemu_printed() -> None:
    """real-qemu.md §6: destination with mq=on,vectors=6: the MSI-X table size differs."""
    src = _r("7.2", "pc-i440fx-7.2")
    dst = realize(Config(V("7.2"), MachineType.parse("pc-i440fx-7.2"), "virtio-net", "pci", 1, 128,
                         {"romfile": "", "mq": True, "vectors": 6}, NetBackend("tap", queues=2)))
    res = load(dst, save(src, _driven(src)), [(0, 0)] * 3)
    assert res.error == "get_pci_config_device: Bad config data: i=0x9a read: 3 device: 5 cmask: ff wmask: 0 w1cmask:0"


def test_msix_vector_range_checked_from_72() -> None:
    """§4 step 2: config_vector 4 with 4 vectors fails on 7.2 (EINVAL); before, msix_vector_use's own -EINVAL
    (hw/pci/msix.c; the 5.2 binary rejects it alike)."""
    for release, machine, outcome in (("7.2", "pc-i440fx-7.2", REJECTED), ("6.0", "pc-i440fx-6.0", REJECTED)):
        r = _r(release, machine)
        res = load(r, save(r, _driven(r, config_vector=r.vectors)), [(0, 0)] * 3)
        assert res.outcome == outcome, release
    r = _r("7.2", "pc-i440fx-7.2")
    assert load(r, save(r, _driven(r, config_vector=r.vectors)), [(0, 0)] * 3).lines[-1] == \
        "load of migration failed: Invalid argument"


def test_config_len_mismatch_tolerated_from_21() -> None:
    r = _r("2.1", "pc-i440fx-2.1")
    s = _driven(r, config=bytes(12))
    assert load(r, save(r, s), [(0, 0)] * 3).outcome == ACCEPTED
    r0 = _r("2.0", "pc-i440fx-2.0")
    assert load(r0, save(r0, _driven(r0, config=bytes(12))), [(0, 0)] * 3).outcome == REJECTED


def test_blk_request_vq_index() -> None:
    from models.state import BlkRequest, BlkState

    r = realize(Config(V("7.2"), MachineType.parse("pc-i440fx-7.2"), "virtio-blk", "pci", 2, 128, {}))
    s = _driven(r)
    bad = replace(s, device=BlkState((BlkRequest(5, 0, ((0x1000, 16),), ((0x2000, 1),)),)))
    res = load(r, save(r, bad), [(0, 0)] * 2)
    assert (res.outcome, res.error) == (REJECTED, "Invalid virtqueue index in request list: 0x5")


def test_mac_table_larger_than_ours_is_skipped_and_emptied() -> None:
    """CVE-2013-4148/4149: in_use 65 (> MAC_TABLE_ENTRIES): the bytes are consumed, the table emptied."""
    r = _r("7.2", "pc-i440fx-7.2")
    s = _driven(r)
    s = replace(s, device=replace(s.device, mac_table=bytes(range(6)) * 65))
    res = load(r, save(r, s), [(0, 0)] * 3)
    assert res.outcome == ACCEPTED and res.state is not None
    assert res.state.device.in_use == 0 and res.state.device.mac == s.device.mac  # the stream stayed aligned


def test_curr_queue_pairs_above_max_rejected() -> None:
    """CVE-2013-4150: curr_queue_pairs must not exceed the destination's max_queue_pairs."""
    r = realize(Config(V("7.2"), MachineType.parse("pc-i440fx-7.2"), "virtio-net", "pci", 1, 128,
                       {"romfile": "", "mq": True}, NetBackend("tap", queues=2)))
    s = _driven(r)
    s = replace(s, device=replace(s.device, curr_queue_pairs=3, tx_waiting=(0, 0, 0)))
    res = load(r, save(r, s), [(0, 0)] * 5)
    assert (res.outcome, res.error) == (REJECTED, "virtio-net: curr_queue_pairs 3 > max_queue_pairs 2")


def test_element_counts_beyond_the_arrays_abort_qemu() -> None:
    """CVE-2013-4535 class: an in-flight element with in_num > 1024 trips an assertion in 7.2."""
    from models.model import CRASHED
    from models.state import BlkRequest, BlkState

    r = realize(Config(V("7.2"), MachineType.parse("pc-i440fx-7.2"), "virtio-blk", "pci", 1, 128, {}))
    s = _driven(r)
    bad = replace(s, device=BlkState((BlkRequest(0, 0, ((0x1000, 16),), ((0x2000, 1),), counts=(1, 2000)),)))
    res = load(r, save(r, bad), [(0, 0)])
    assert (res.outcome, res.error) == (CRASHED, "qemu_get_virtqueue_element: Assertion "
                                                 "`ARRAY_SIZE(data.in_addr) >= data.in_num' failed.")


def test_a_nested_transport_subsection_the_destination_does_not_know() -> None:
    """10.2 sends virtio_pci/modern_state/features128 inside virtio/extra_state for guest features >= bit 64;
    10.1 does not know it: -ENOENT, and the extra_state field's get fails (the line QEMU 7.2 prints for an
    unknown name there, tests/qemu/test_differential.py)."""
    from harness.wire.payload import decode_payload
    from harness.wire.virtio import payload_layout

    src = _r("10.2", "pc-q35-10.2")
    s = _driven(src, guest_features=src.host_features | 1 << 65)  # a tunnel feature (not modelled as offered)
    v = decode_payload(save(src, s), "pci", "virtio-net")
    extra = next(x for x in v.subsections if x.name == "virtio/extra_state")
    assert [x.name for x in extra.body.subsections[0].body.subsections] == ["virtio_pci/modern_state/features128"]
    # leave only the nested one unknown to 10.1: the core subsection it would meet first goes
    v.subsections = [x for x in v.subsections if x.name != "virtio/128bit_features"]
    data = payload_layout("pci", "virtio-net").build(v)
    rings = [(q.avail_idx, q.used_idx) for q in s.queues]
    old = load(_r("10.1", "pc-q35-10.1"), data, rings, "0000:00:03.0/virtio-net")
    assert old.outcome == REJECTED and old.lines[:2] == (
        "Failed to load virtio/extra_state:extra_state", "Failed to load virtio-net:virtio")
    new = load(src, data, rings, "0000:00:03.0/virtio-net")  # 10.2 reads it: the proxy's feature registers only
    assert new.outcome == ACCEPTED
