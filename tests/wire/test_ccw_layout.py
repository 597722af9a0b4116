"""The virtio-ccw transport layout against the real QEMU 7.2 s390x stream f09 (devices in reset state)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from harness.wire.ccw import VirtioCcwConfig
from harness.wire.primitives import subsection

FIXTURES = Path("/work/shared/fixtures/qemu-7.2")
F09 = FIXTURES / "f09-s390x-7.2-ccw-net-blk-reset.bin"
TRANSPORT_SIZE = 495  # fixtures README, "virtio-ccw (f09)"

pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"{FIXTURES} is missing")


def section_payload(stream: bytes, idstr: str) -> bytes:
    """The bytes after the QEMU_VM_SECTION_FULL header of section `idstr`:
    0x04, section_id be32, len u8, idstr, instance_id be32, version_id be32."""
    name = bytes([len(idstr)]) + idstr.encode()
    pos = stream.find(name)
    assert pos >= 5 and stream[pos - 5] == 0x04, f"no FULL section header for {idstr}"
    return stream[pos + len(name) + 8 :]


@pytest.mark.parametrize(
    ("idstr", "schid", "cu_model"),
    [("/fe.0.0000/virtio-net", 0, 1), ("/fe.0.0001/virtio-blk", 1, 2)],
)
def test_f09_transport_part(idstr: str, schid: int, cu_model: int) -> None:
    payload = section_payload(F09.read_bytes(), idstr)
    s = io.BytesIO(payload)
    cfg = VirtioCcwConfig.parse_stream(s)
    assert s.tell() == TRANSPORT_SIZE
    raw = payload[:TRANSPORT_SIZE]
    assert VirtioCcwConfig.build(cfg) == raw
    assert VirtioCcwConfig.build(VirtioCcwConfig.parse(raw)) == raw

    sch = cfg.parent_obj.sch
    assert (sch.cssid, sch.ssid, sch.migrated_schid, sch.devno) == (0xFE, 0, schid, schid)
    assert sch.curr_status.pmcw.devno == schid
    assert (sch.id.reserved, sch.id.cu_type, sch.id.cu_model) == (0xFF, 0x3832, cu_model)
    assert subsection(sch.subsections, "s390_subch_dev/orb") is not None
    assert subsection(cfg.routes.adapter.subsections, "s390_adapter_info/summary_offset") is not None
    for ind in (cfg.indicators, cfg.indicators2, cfg.summary_indicator):
        assert (ind.tmp.len, ind.tmp.addr) == (0, 0)
    assert cfg.tmp.config_vector == 0xFFFF
    assert cfg.revision == -1
