"""The edit test of issue 2: decode a fresh QEMU 7.2 stream, change fields in the decoded value tree
(a device status, a queue's desc, the virtio-net MAC in the device data), encode it, load the result
into a real QEMU 7.2, and see the new values there.

Where QEMU shows them: status and queues through x-query-virtio-status / x-query-virtio-queue-status
(load_stream's verdict). The MAC through the device config, read over qtest from the legacy I/O BAR
of the loaded device: virtio-net builds the config from the migrated `n->mac`. QMP `qom-get` of the
`mac` property does not show it: the property (like `info network`) is the command line's MAC, which
migration does not touch; the test pins that too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fresh_plan import fresh_stream
from qmp_view import qmp_status

from harness.qemu.backend import QemuConfig, load_stream
from harness.qemu.process import QemuProcess
from harness.wire.stream import VirtioPayload, decode_stream, encode_stream
from harness.wire.virtio import PCI_CAP_ID_MSIX, pci_capabilities

pytestmark = pytest.mark.qemu

NET = "/machine/peripheral/vnet0/virtio-backend"
BALLOON = "/machine/peripheral/vbal0/virtio-backend"
NEW_STATUS = 0x0F  # ACKNOWLEDGE | DRIVER | DRIVER_OK | FEATURES_OK
NEW_DESC = 0x200000  # balloon queue 2 moved to 2 MiB (zeroed guest RAM: ring indices 0, as before)
NEW_MAC = bytes.fromhex("02000abcdef1")
VIRTIO_PCI_CONFIG_OFF_NO_MSIX = 20  # legacy header without the MSI-X vector registers


@contextmanager
def loaded_with_qtest(argv: list[str], data: bytes) -> Iterator[QemuProcess]:
    """A QEMU 7.2 that has loaded `data` (paused after the load), with qtest to read the devices."""
    config = QemuConfig.from_argv(argv)
    with QemuProcess(config.machine, config.args(), binary=config.binary, qtest=True, incoming=True,
                     name="edit") as qemu:
        assert qemu.scratch is not None
        path = qemu.scratch / "edited.bin"
        path.write_bytes(data)
        fd = os.open(path, os.O_RDONLY)
        try:
            qemu.add_fd("stream", fd)
        finally:
            os.close(fd)
        assert qemu.migrate_incoming("fd:stream"), qemu.stderr_lines()
        yield qemu


def payload(devices: list[VirtioPayload], kind: str) -> VirtioPayload:
    return next(p for p in devices if p.device == kind)


def test_edited_stream_loads_with_the_new_values(qemu_binary: str) -> None:
    data, truth = fresh_stream("7.2", qemu_binary)
    net_truth = next(d for d in truth["devices"] if d["device"] == "virtio-net")
    bal_truth = next(d for d in truth["devices"] if d["device"] == "virtio-balloon")
    s = decode_stream(data)
    assert encode_stream(s) == data  # untouched, it is the same stream

    net, bal = payload(s.devices, "virtio-net"), payload(s.devices, "virtio-balloon")
    old_status, old_desc, old_mac = net.value.status, bal.value.queues[2].desc, bytes(net.value.device.mac)
    assert (old_status, old_desc, old_mac.hex(":")) == (net_truth["status"], bal_truth["queues"][2]["desc"],
                                                       net_truth["mac"])
    assert old_status != NEW_STATUS and old_desc != NEW_DESC and old_mac != NEW_MAC
    net.value.status = NEW_STATUS
    bal.value.queues[2].desc = NEW_DESC
    net.value.device.mac = NEW_MAC
    edited = encode_stream(s)

    # only bytes of the two payloads changed, and only as many as the edits touch
    assert len(edited) == len(data)
    changed = [i for i, (a, b) in enumerate(zip(data, edited, strict=True)) if a != b]
    assert all(any(p.offset <= i < p.offset + p.size for p in (net, bal)) for i in changed)
    differing = 1 + sum(a != b for a, b in zip(old_desc.to_bytes(8, "big"), NEW_DESC.to_bytes(8, "big"), strict=True))
    differing += sum(a != b for a, b in zip(old_mac, NEW_MAC, strict=True))
    assert len(changed) == differing
    again = decode_stream(edited)
    assert (payload(again.devices, "virtio-net").value.status, payload(again.devices, "virtio-balloon")
            .value.queues[2].desc) == (NEW_STATUS, NEW_DESC)

    before = load_stream(truth["qemu_cmdline"], data, binary=qemu_binary)
    after = load_stream(truth["qemu_cmdline"], edited, binary=qemu_binary)
    assert (before.outcome, after.outcome) == ("accepted", "accepted"), after.error
    # the status
    assert qmp_status(before.virtio_status[NET]) == old_status
    assert qmp_status(after.virtio_status[NET]) == NEW_STATUS
    # the queue's desc; legacy features, so QEMU recomputes avail and used from it
    q_before, q_after = before.virtio_queues[BALLOON][2], after.virtio_queues[BALLOON][2]
    assert q_before["vring-desc"] == old_desc
    num = q_after["vring-num"]
    avail = NEW_DESC + 16 * num
    used = (avail + 4 + 2 * num + 4095) & ~4095
    assert (q_after["vring-desc"], q_after["vring-avail"], q_after["vring-used"]) == (NEW_DESC, avail, used)
    # nothing else of the queue moved
    assert {k: v for k, v in q_after.items() if not k.startswith("vring-") or k == "vring-num"} == {
        k: v for k, v in q_before.items() if not k.startswith("vring-") or k == "vring-num"}

    # the MAC: the guest-visible config of the loaded device; the qdev property stays the command line's
    io = net_truth["bar0"] & ~0x3
    config = bytes(net.value.transport.pci.config)
    msix = pci_capabilities(config)[PCI_CAP_ID_MSIX]
    assert not config[msix + 3] & 0x80  # MSI-X present but not enabled: the config follows at offset 20
    with loaded_with_qtest(truth["qemu_cmdline"], edited) as qemu:
        seen = bytes(qemu.qtest.inb(io + VIRTIO_PCI_CONFIG_OFF_NO_MSIX + i) for i in range(6))
        prop = qemu.qmp("qom-get", path="/machine/peripheral/vnet0", property="mac")
        status = qemu.qtest.inb(io + 18)
    assert seen == NEW_MAC
    assert prop == net_truth["mac"] == old_mac.hex(":")
    assert status == NEW_STATUS  # the legacy status register agrees with x-query-virtio-status
