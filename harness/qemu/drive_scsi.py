"""virtio-scsi's disk and its requests, as a guest driver makes them over qtest.

The disk (models/devices/scsi.py DEVICE.attached) is a scsi-hd on a blkdebug over null-co whose writes fail with
werror=stop: a WRITE(10) stays in flight (retried after the stop, kept in the disk's request list) and the
migration stream carries it in the scsi-hd section, through virtio-scsi's save_request (the queue index and the
VirtQueueElement). Each request is a descriptor chain of VirtIOSCSICmdReq (51 bytes: lun, tag, task_attr, prio,
crn, a 32-byte cdb), the data, VirtIOSCSICmdResp (108 bytes: sense_len, resid, status_qualifier, status,
response, 96 bytes of sense), as virtio_scsi_parse_req wants them for the default cdb and sense sizes.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import Any

from harness.errors import QemuError
from harness.qemu.qtest import QtestClient

CMD_REQ_SIZE = 19 + 32  # VirtIOSCSICmdReq with VIRTIO_SCSI_CDB_DEFAULT_SIZE
CMD_RESP_SIZE = 12 + 96  # VirtIOSCSICmdResp with VIRTIO_SCSI_SENSE_DEFAULT_SIZE
TEST_UNIT_READY, READ_10, WRITE_10 = 0x00, 0x28, 0x2A
SECTOR = 512
VRING_DESC_F_NEXT, VRING_DESC_F_WRITE = 1, 2
REQUEST_STRIDE = 1024  # per request after the ring: command at +0, response at +128, data at +512
REQUEST_TIMEOUT = 5.0
NOT_WRITTEN = 0xEE  # the response byte before the device writes it


def _cdb(opcode: int, lba: int, sectors: int) -> bytes:
    if opcode == TEST_UNIT_READY:
        return bytes(32)
    return struct.pack(">BBIBHB", opcode, 0, lba, 0, sectors, 0).ljust(32, b"\0")


def lun_bytes(target: int = 0, lun: int = 0) -> bytes:
    """virtio-scsi's 8-byte LUN: 1, target, then the flat-space LUN (0x4000 | lun)."""
    return bytes([1, target]) + struct.pack(">H", 0x4000 | lun) + bytes(4)


def _chain(qt: QtestClient, base: int, opcode: int, lba: int, tag: int) -> list[tuple[int, int, int]]:
    """One request's buffers at `base` (command, response, data) and its descriptor chain (address, length,
    flags): TEST UNIT READY moves no data; READ(10) reads into the data buffer, WRITE(10) writes from it."""
    cmd, resp, data = base, base + 128, base + 512
    qt.memwrite(cmd, lun_bytes() + struct.pack("<QBBB", tag, 0, 0, 0) + _cdb(opcode, lba, 0 if opcode == TEST_UNIT_READY
                                                                          else 1))
    qt.memwrite(resp, bytes([NOT_WRITTEN]) * CMD_RESP_SIZE)
    chain = [(cmd, CMD_REQ_SIZE, 0)]
    if opcode == WRITE_10:
        return chain + [(data, SECTOR, 0), (resp, CMD_RESP_SIZE, VRING_DESC_F_WRITE)]
    chain.append((resp, CMD_RESP_SIZE, VRING_DESC_F_WRITE))
    return chain + ([(data, SECTOR, VRING_DESC_F_WRITE)] if opcode == READ_10 else [])


def _u16(qt: QtestClient, addr: int, big: bool) -> int:
    return int.from_bytes(qt.memread(addr, 2), "big" if big else "little")


def _wait_used(qt: QtestClient, used: int, want: int, index: int, big: bool) -> int:
    deadline = time.monotonic() + REQUEST_TIMEOUT
    while (used_idx := _u16(qt, used + 2, big)) < want:
        if time.monotonic() > deadline:
            raise QemuError(f"virtio-scsi queue {index}: used idx {used_idx} after {REQUEST_TIMEOUT} s, expected "
                            f"{want}")
        time.sleep(0.0005)
    return used_idx


def scsi_requests(qt: QtestClient, notify: Callable[[int], None], index: int, desc: int, num: int, reads: int,
                  writes: int, big: bool = False) -> tuple[int, int, list[dict[str, Any]]]:
    """On the request queue `index` (a legacy split ring at `desc`): a TEST UNIT READY first, alone, which takes
    the disk's power-on unit attention as a guest's scan does (else every command of the next batch gets it), then
    `reads` READ(10)s and `writes` WRITE(10)s of one sector in one batch, and wait until the device has used the
    reads; on a werror disk the writes stay in flight (no response written, no used entry). Returns the avail and
    used idx read back and the batch's requests (queue, head, opcode, lba, tag, the device-readable and -writable
    (address, length) lists, the response byte). `big`: the ring in big-endian byte order, as a big-endian guest
    writes it for a legacy device (a request header's tag is read in the host's order: little-endian)."""
    e = ">" if big else "<"
    commands = [(READ_10, k) for k in range(reads)] + [(WRITE_10, reads + k) for k in range(writes)]
    if not commands:
        return _u16(qt, desc + 16 * num + 2, big), _u16(qt, _used_of(desc, num) + 2, big), []
    if 2 + 3 * len(commands) > num:
        raise QemuError(f"queue {index}: {len(commands)} requests need {2 + 3 * len(commands)} descriptors of {num}")
    avail, used = desc + 16 * num, _used_of(desc, num)
    buffers = (used + 6 + 8 * num + 4095) & ~4095
    table = bytearray()
    heads: list[int] = []
    reqs: list[dict[str, Any]] = []
    for k, (opcode, lba) in enumerate([(TEST_UNIT_READY, 0), *commands]):
        chain = _chain(qt, buffers + k * REQUEST_STRIDE, opcode, lba, k + 1)
        heads.append(len(table) // 16)
        for j, (addr, length, flags) in enumerate(chain):
            last = j == len(chain) - 1
            table += struct.pack(f"{e}QIHH", addr, length, flags | (0 if last else VRING_DESC_F_NEXT),
                                 0 if last else len(table) // 16 + 1)
        if k:
            reqs.append({"queue": index, "head": heads[-1], "opcode": opcode, "lba": lba, "tag": k + 1,
                         "out": [(a, n) for a, n, f in chain if not f & VRING_DESC_F_WRITE],
                         "in": [(a, n) for a, n, f in chain if f & VRING_DESC_F_WRITE]})
    qt.memwrite(desc, bytes(table))
    qt.memwrite(avail + 4, struct.pack(f"{e}H", heads[0]))
    qt.memwrite(avail + 2, struct.pack(f"{e}H", 1))
    notify(index)
    _wait_used(qt, used, 1, index, big)
    qt.memwrite(avail + 6, b"".join(struct.pack(f"{e}H", h) for h in heads[1:]))
    qt.memwrite(avail + 2, struct.pack(f"{e}H", len(heads)))
    notify(index)
    used_idx = _wait_used(qt, used, 1 + reads, index, big)  # a failing write stops the VM and stays in flight
    for k, r in enumerate(reqs):
        r["response"] = qt.readb(buffers + (k + 1) * REQUEST_STRIDE + 128 + 11)  # VirtIOSCSICmdResp.response
    return len(heads), used_idx, reqs


def _used_of(desc: int, num: int) -> int:
    return (desc + 16 * num + 4 + 2 * num + 4095) & ~4095
