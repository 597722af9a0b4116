"""The command line as a new user meets it: one line on stderr and exit 2 for anything wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from tests.conftest import ROOT, SAMPLES

SAMPLE = SAMPLES / "pc-i440fx-7.2-virtio-net-driven.bin"


def run(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120, env=env)


def assert_one_line_error(p: subprocess.CompletedProcess[str], *words: str) -> None:
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr
    for w in words:
        assert w in lines[0]


def test_decode_json_keys() -> None:
    p = run("decode", "--json", str(SAMPLE))
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["machine"] == "pc-i440fx-7.2"
    net = next(d for d in out["devices"] if d["device"] == "virtio-net")
    for key in ("section", "instance_id", "version_id", "device", "transport", "offset", "size", "status", "isr",
                "queue_sel", "guest_features", "guest_features_lo", "config_len", "config", "msix_vectors",
                "config_vector", "queues", "subsections", "device_endian", "broken", "started", "device_state"):
        assert key in net
    assert net["section"] == "0000:00:03.0/virtio-net" and net["transport"] == "pci"
    assert net["guest_features"] == 0x18020 and net["status"] == 7 and net["queue_sel"] == 1
    assert [q["desc"] for q in net["queues"]] == [0x100000, 0x110000, 0x120000]
    assert set(net["queues"][0]) >= {"index", "num", "desc", "avail", "used", "last_avail_idx", "vector"}
    ds = net["device_state"]
    assert ds["mac"] == "52:54:00:12:34:56" and ds["max_queue_pairs"] is None
    data = SAMPLE.read_bytes()
    assert data[net["offset"] : net["offset"] + 4] == b"\x00\x00\x00\x02"  # PCIDevice version_id


def test_decode_text_names_devices() -> None:
    p = run("decode", str(SAMPLE))
    assert p.returncode == 0
    assert "0000:00:03.0/virtio-net" in p.stdout and "mac 52:54:00:12:34:56" in p.stdout


def test_missing_file() -> None:
    assert_one_line_error(run("decode", "/nonexistent/stream.bin"), "no such file")


def test_directory(tmp_path: Path) -> None:
    assert_one_line_error(run("decode", str(tmp_path)), "is a directory")


def test_empty_file(tmp_path: Path) -> None:
    f = tmp_path / "empty.bin"
    f.write_bytes(b"")
    assert_one_line_error(run("decode", str(f)), "empty file")


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "locked.bin"
    f.write_bytes(SAMPLE.read_bytes()[:100])
    f.chmod(0)
    if os.geteuid() == 0:  # root reads any file: make open() answer as it would for a user
        real_open = open

        def denied(path: object, *a: object, **k: object) -> object:
            if str(path) == str(f):
                raise PermissionError(13, "Permission denied")
            return real_open(path, *a, **k)  # type: ignore[call-overload]

        monkeypatch.setattr("builtins.open", denied)
    assert main(["decode", str(f)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "permission denied" in err[0]


def test_not_a_stream(tmp_path: Path) -> None:
    f = tmp_path / "x.bin"
    f.write_bytes(Path(sys.executable).read_bytes()[:4096])
    assert_one_line_error(run("decode", str(f)), "not a QEMU migration stream", "at byte 0")


def test_truncated_stream_says_where(tmp_path: Path) -> None:
    f = tmp_path / "cut.bin"
    f.write_bytes(SAMPLE.read_bytes()[:300000])
    assert_one_line_error(run("decode", str(f)), "at byte")


def test_corrupted_payload_names_the_field(tmp_path: Path) -> None:
    data = bytearray(SAMPLE.read_bytes())
    out = json.loads(run("decode", "--json", str(SAMPLE)).stdout)
    net = next(d for d in out["devices"] if d["device"] == "virtio-net")
    # num_queues := 0xffffffff: the queue list then runs past the payload
    at = net["offset"] + 4 + 256 + 16 + 64 + 1 + 2 + 1 + 1 + 2 + 4 + 4 + net["config_len"]
    data[at : at + 4] = b"\xff\xff\xff\xff"
    f = tmp_path / "bad.bin"
    f.write_bytes(bytes(data))
    assert_one_line_error(run("decode", str(f)), "0000:00:03.0/virtio-net > virtio > queues[", "at byte")


def test_unknown_option_and_no_command() -> None:
    assert_one_line_error(run("decode", "--frobnicate", str(SAMPLE)), "unrecognized arguments")
    assert_one_line_error(run(), "a command is needed")
    assert_one_line_error(run("frob"), "invalid choice")


def test_stream_from_a_newer_qemu_shows_what_is_understood(tmp_path: Path) -> None:
    """A subsection this tool does not know (as a newer QEMU would send): the device is reported as not
    understood, the other devices are decoded, exit 2 with one line that names the subsection."""
    data = SAMPLE.read_bytes().replace(b"\x05\x0evirtio/started", b"\x05\x0evirtio/stardom")
    f = tmp_path / "newer.bin"
    f.write_bytes(data)
    p = run("decode", "--json", str(f))
    assert_one_line_error(p, "unknown subsection 'virtio/stardom'", "0000:00:03.0/virtio-net > virtio")
    out = json.loads(p.stdout)
    net, blk = out["devices"]
    assert "virtio/stardom" in net["error"] and "status" not in net
    assert blk["device"] == "virtio-blk" and blk["queues"][0]["num"] == 256
    assert any("does not decode" in n for n in out["stream"]["not_understood"])


@pytest.mark.parametrize("args,words", [
    (["verdict", str(SAMPLE), "--release", "99.9"], ["release 99.9 is not modelled"]),
    (["verdict", str(SAMPLE), "--dest", "-smp 2"], ["no -machine"]),
    (["verdict", str(SAMPLE), "--release", "2.4", "--dest", "-machine pc-i440fx-7.2"], ["has no machine type"]),
    (["verdict", str(SAMPLE), "--dest", "-machine pc-i440fx-7.2 -device virtio-net-pci,addr=0x3,disable-legacy=on,"
      "disable-modern=on"], ["neither legacy nor modern"]),
    (["decode"], ["the following arguments are required"]),
])
def test_bad_and_conflicting_options(args: list[str], words: list[str]) -> None:
    assert_one_line_error(run(*args), *words)
