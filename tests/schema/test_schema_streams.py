"""Streams written by a release a schema module declares: `decode --schema` reads the fields it adds, `decode`
without it says where the payload stops making sense, and `verdict --schema` judges the section version the way
QEMU does (the section checks themselves are held to QEMU 7.2 in tests/qemu/test_differential.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from harness.wire.stream import decode_stream, encode_stream
from models import schema
from models.cmdline import parse
from models.config import realize
from models.model import save, section_version, state_from_wire
from models.releases import V

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
F01 = ROOT.parent / "shared" / "fixtures" / "qemu-7.2" / "f01-i440fx-7.2-net-mac-ctrlvq.bin"
V12 = HERE / "schemas" / "net_device_v12.py"
TESTED = HERE / "schemas" / "net_device_tested.py"

pytestmark = pytest.mark.skipif(not F01.exists(), reason="needs ../shared/fixtures")


def rewrite(module: Path, release: str, extra: dict[str, object]) -> bytes:
    """F01's stream as `release` of the schema module would write it: the virtio-net payload saved again by the
    model with the declared fields set, and the section header's version_id."""
    reg = schema.load(module)
    s = decode_stream(F01.read_bytes(), extras=reg.wire)
    argv = json.loads(F01.with_suffix(".json").read_text())["qemu_cmdline"]
    line = next(x for x in parse(argv, V(release), registry=reg) if x.config.device == "virtio-net")
    r = realize(line.config, reg)
    for rec in s.records:
        if not isinstance(rec, tuple) and rec.body is s.devices[0]:
            state = state_from_wire(r, rec.body.value)
            state = replace(state, extra=tuple(sorted({**dict(state.extra), **extra}.items())))
            rec.body = replace(rec.body, value=None, raw=save(r, state))
            rec.version_id = section_version(r)
    return encode_stream(s)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def test_decode_reads_the_fields_a_schema_adds(tmp_path: Path) -> None:
    stream = tmp_path / "net-11.2.bin"
    stream.write_bytes(rewrite(V12, "11.2", {"foo": 0x1234}))
    out = run("decode", str(stream), "--json", "--schema", str(V12))
    assert out.returncode == 0, out.stderr
    dev = json.loads(out.stdout)["devices"][0]
    assert (dev["version_id"], dev["schema_fields"]) == (12, {"foo": 0x1234})
    assert dev["subsections"][-1] == "virtio/started"  # read past foo, in step
    text = run("decode", str(stream), "--schema", str(V12)).stdout
    assert "schema fields: foo 4660" in text
    # without the module the payload has 4 bytes this tool does not know: where, exactly
    plain = run("decode", str(stream))
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert "bytes left over after the last known field (at byte " in plain.stderr


def test_verdict_judges_the_section_version(tmp_path: Path) -> None:
    stream = tmp_path / "net-11.2.bin"
    stream.write_bytes(rewrite(V12, "11.2", {"foo": 7}))
    same = run("verdict", str(stream), "--release", "11.2", "--schema", str(V12), "--json")
    assert same.returncode == 0, same.stderr
    assert [d["outcome"] for d in json.loads(same.stdout)["devices"]] == ["accepted"]
    back = run("verdict", str(stream), "--release", "11.1", "--schema", str(V12))
    assert back.returncode == 0, back.stderr
    assert "rejected: load of migration failed: Invalid argument: unsupported version 12 for '0000:00:03.0/virtio-net' v11" in back.stdout  # noqa: E501
    unknown = run("verdict", str(stream), "--release", "11.2")  # no module: 11.2 is not a release
    assert unknown.returncode == 2 and "11.2" in unknown.stderr


def test_tested_fields_follow_the_machine_type(tmp_path: Path) -> None:
    """pc-i440fx-7.2 turns x-foo off (hw_compat_11_1): 11.2 writes neither field there, and 11.1 loads it."""
    data = rewrite(TESTED, "11.2", {"peer_mac": b"\x52\x54\x00\x00\x00\x09", "coalesce": (1, 2, 3)})
    assert data == F01.read_bytes()  # byte for byte what 7.2 wrote
    stream = tmp_path / "net.bin"
    stream.write_bytes(data)
    back = run("verdict", str(stream), "--release", "11.1", "--schema", str(TESTED), "--json")
    assert [d["outcome"] for d in json.loads(back.stdout)["devices"]] == ["accepted"]
