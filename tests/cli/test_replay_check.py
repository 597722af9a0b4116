"""`virtio-compat replay` and `virtio-compat check` as a user meets them, and the annotated dump under them."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import construct as c
import pytest

from harness import rules
from harness.annotate import LEFT_OVER, UNDECODED, annotate, format_dump
from harness.check import Progress, summarize
from harness.cli import main
from harness.failures import write_failure
from harness.matrix import Cell, run_example
from harness.rules import Run, Violation
from harness.wire.payload import decode_payload
from harness.wire.stream import decode_stream
from harness.wire.virtio import payload_layout
from models.config import Config, realize
from models.model import reset_state
from models.releases import MachineType, Version
from models.state import DeviceState
from tests.cli.test_cli import assert_one_line_error, run
from tests.conftest import ROOT, SAMPLES

SAMPLE = SAMPLES / "pc-i440fx-7.2-virtio-net-driven.bin"


def sample_payload() -> tuple[bytes, str, str]:
    data = SAMPLE.read_bytes()
    net = next(d for d in decode_stream(data).devices if d.device == "virtio-net")
    return data[net.offset : net.offset + net.size], net.transport, net.device


# --- annotate ---------------------------------------------------------------------------------------------


def test_annotate_covers_every_byte_with_the_layouts_paths() -> None:
    payload, tr, dev = sample_payload()
    original = c.Construct._parsereport
    entries = annotate(payload_layout(tr, dev), payload)
    assert c.Construct._parsereport is original
    pos = 0
    for start, end, _, _ in entries:
        assert start == pos and end > start
        pos = end
    assert pos == len(payload)
    by_path = {p: v for _, _, p, v in entries}
    decoded = decode_payload(payload, tr, dev)
    assert by_path["transport.pci.config"] == decoded.transport.pci.config
    assert [by_path[f"queues[{i}].desc"] for i in range(3)] == [q.desc for q in decoded.queues]
    assert by_path["device.mac"] == b"RT\x00\x124V"
    vqs = by_path["subsections[virtio/virtqueues].vqs"]
    assert len(vqs) == 1024 and vqs[0] == (0x101000, 0x102000)
    assert "subsections[virtio/extra_state].subsections[virtio_pci/modern_state].vqs" in by_path
    # the subsection header (0x05, length, name) belongs to its subsection and is framing
    head = next(e for e in entries if e[2] == "subsections[virtio/virtqueues]")
    assert head[3] is None and payload[head[0]] == 5 and b"virtio/virtqueues" in payload[head[0] : head[1]]


def test_annotate_bad_input_restores_construct_and_says_where() -> None:
    payload, tr, dev = sample_payload()
    original = c.Construct._parsereport
    cut = payload[:0x185]  # inside queues[1].desc
    entries = annotate(payload_layout(tr, dev), cut)
    assert c.Construct._parsereport is original
    assert entries[-1][2] == UNDECODED and entries[-1][1] == len(cut)
    assert "queues[1]" in entries[-1][3]
    assert entries[-2][2] == "queues[1].num"
    longer = annotate(payload_layout(tr, dev), payload + b"\x00\x01")
    assert longer[-1][:3] == (len(payload), len(payload) + 2, LEFT_OVER)


def test_format_dump_abbreviates_long_ranges() -> None:
    payload, tr, dev = sample_payload()
    text = format_dump(annotate(payload_layout(tr, dev), payload), payload)
    line = next(ln for ln in text.splitlines() if "subsections[virtio/virtqueues].vqs" in ln)
    assert "... 16384 bytes" in line and "1024 entries, 3 non-zero: [0]=(0x101000, 0x102000)" in line
    assert len(line) < 240
    assert any(ln.startswith("0000016f") and "queues[0].num" in ln and "256 (0x100)" in ln for ln in text.splitlines())
    assert "(framing: 'virtio/virtqueues')" in text


# --- replay -----------------------------------------------------------------------------------------------

SRC = Config(Version(2, 7), MachineType.parse("pc-i440fx-2.6"), "virtio-net", "pci", props={"romfile": ""})
DST = Config(Version(7, 2), SRC.machine, "virtio-net", "pci", props={"romfile": ""})


def a_state() -> DeviceState:
    s = reset_state(realize(SRC))
    return replace(s, status=7, queues=tuple(replace(q, desc=0x100000 + 0x10000 * i) for i, q in enumerate(s.queues)))


def broken_r5(run: Run) -> Violation | None:
    """A deliberately wrong rule: no stream may carry more than two queues."""
    n = run.decoded.num_queues
    return Violation("R5", "at most 2 queues", f"{n} queues") if n > 2 else None


def failure_file(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setitem(rules.RULES, "R5", broken_r5)
    out = run_example(SRC, DST, a_state())
    assert [v.rule for v in out.violations] == ["R5"]
    return write_failure(Cell(SRC.release, DST.release, "pci", "virtio-net"), SRC, DST, a_state(), out,
                         out.violations[0], folder)


def test_replay_still_failing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    path = failure_file(tmp_path, monkeypatch)
    assert path.name.startswith("R5-")
    assert main(["replay", str(path)]) == 1
    out = capsys.readouterr().out
    assert "R5: expected at most 2 queues; got 3 queues" in out and "R5 STILL FAILS" in out
    assert f"source:      {SRC.describe()}" in out and f"destination: {DST.describe()}" in out
    assert "the model saves the same bytes now" in out
    assert "queues[1].desc" in out and "subsections[virtio/extra_state].version_id" in out
    assert "load by the destination (QEMU 7.2): accepted" in out
    assert "trace:" in out and "3 queues" in out and "early reads:" in out and "error lines: none" in out
    # the rule fixed: the same file passes
    monkeypatch.undo()
    assert main(["replay", str(path)]) == 0
    out = capsys.readouterr().out
    assert "R5 passes" in out and "exit 0" in out


def test_replay_command_passes_once_fixed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real command, in a fresh process where the rule is right: exit 0."""
    path = failure_file(tmp_path, monkeypatch)
    record = json.loads(path.read_text())
    assert record["replay"] == f"virtio-compat replay {path}"
    p = run("replay", str(path))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "R5 passes" in p.stdout and "subsections[virtio/extra_state]" in p.stdout


def test_replay_reports_a_rejected_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A real failing verdict: a state whose ring index breaks 2.7's check, loaded by 2.7 itself (R1)."""
    src = Config(Version(2, 7), SRC.machine, "virtio-net", "pci", props={"romfile": ""})
    s = a_state()
    bad = replace(s, queues=(replace(s.queues[0], avail_idx=0x8000),) + s.queues[1:])
    out = run_example(src, src, bad)
    if not out.violations:
        pytest.skip("the model accepts this state")
    path = write_failure(None, src, src, bad, out, out.violations[0], tmp_path)
    assert main(["replay", str(path)]) == 1
    text = capsys.readouterr().out
    assert "load by the destination (QEMU 2.7): rejected" in text
    assert "error lines:\n  " in text and "STILL FAILS" in text


@pytest.mark.parametrize("content, words", [
    (None, ("no such file",)),
    ("not json", ("not a failure file",)),
    ("[1, 2]", ("not a failure file",)),
    (json.dumps({"rule": "R12", "replay": "virtio-compat verdict X"}), ("not a matrix failure file", "verdict X")),
    (json.dumps({"rule": "R1", "src_config": {"__type__": "Nope"}, "dst_config": 1, "state": 1, "stream": "00"}),
     ("cannot rebuild the case",)),
])
def test_replay_bad_file(tmp_path: Path, content: str | None, words: tuple[str, ...]) -> None:
    path = tmp_path / "R1-0000000000.json"
    if content is not None:
        path.write_text(content)
    assert_one_line_error(run("replay", str(path)), *words)


def test_replay_directory() -> None:
    assert_one_line_error(run("replay", str(ROOT)), "is a directory")


# --- check ------------------------------------------------------------------------------------------------

NARROW = ("--releases", "7.2", "--devices", "virtio-rng", "--transports", "pci", "--profile", "dev")


def test_check_narrowed_run(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    p = run("check", *NARROW, "--reports", str(reports), cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    for name in ("compat-matrix.json", "compat-matrix.md", "compat-matrix.html", "junit.xml"):
        assert (reports / name).is_file(), name
    entries = json.loads((reports / "compat-matrix.json").read_text())
    assert {(e["src"], e["dst"], e["transport"], e["device"]) for e in entries} == {("7.2", "7.2", "pci", "virtio-rng")}
    assert {e["outcome"] for e in entries} == {"pass"}
    # a same-release cell reports R1, R2, R5-R9, R10 and R11
    assert "1 cells, 9 results" in p.stdout and "9 pass, 0 expected incompatibilities, 0 fail" in p.stdout
    assert str(reports / "compat-matrix.md") in p.stdout
    assert "1/1 cells, 0 failed" in p.stderr  # the progress line
    assert 'tests="1"' in (reports / "junit.xml").read_text()
    assert not (reports / ".check-run").exists()


@pytest.mark.parametrize("args, words", [
    (("--releases", "7.3"), ("--releases", "7.3")),
    (("--releases", "seven"), ("--releases", "not a QEMU version")),
    (("--devices", "virtio-gpu"), ("--devices", "virtio-gpu")),
    (("--transports", "usb"), ("--transports", "usb")),
    (("--machines", "pc-i440fx-x"), ("--machines",)),
    (("--profile", "fast"), ("--profile", "fast")),
    (("-n", "many"), ("-n", "many")),
    (("--bogus",), ("--bogus",)),
])
def test_check_bad_options(tmp_path: Path, args: tuple[str, ...], words: tuple[str, ...]) -> None:
    assert_one_line_error(run("check", *args, "--reports", str(tmp_path / "r"), cwd=tmp_path), *words)
    assert not (tmp_path / "r").exists()


def test_check_real_on_the_fleet(tmp_path: Path) -> None:
    """--real: the cells whose releases are in the fleet also run on the real pair; the reports say so, with the
    package versions."""
    from harness import fleet

    if not {"7.2", "10.0"} <= {i.release for i in fleet.installed()}:
        pytest.skip("QEMU 7.2 and 10.0 of the fleet are not installed (virtio-compat fleet install)")
    reports = tmp_path / "reports"
    p = run("check", "--releases", "7.2,10.0", "--devices", "virtio-rng", "--transports", "pci", "--profile", "dev",
            "--real", "--real-examples", "2", "-n", "0", "--reports", str(reports), cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    real = [e for e in json.loads((reports / "compat-matrix.json").read_text()) if e.get("qemu")]
    assert {(e["src"], e["dst"]) for e in real} == {("7.2", "7.2"), ("7.2", "10.0"), ("10.0", "7.2"), ("10.0", "10.0")}
    assert all(e["rule"] == "R12" and e["outcome"] == "pass" and e["examples"] == 2 for e in real)
    installed = {i.release: i for i in fleet.installed()}
    line = "Verified on real QEMU: 4 of 4 cells held (8 driven states, R12; R5 on 8 source payloads, R9 on 8 loads)"
    assert line in p.stdout and line in (reports / "compat-matrix.md").read_text()
    assert "| 7.2 | ok (real) | ok (real) |" in (reports / "compat-matrix.md").read_text()
    for release in ("7.2", "10.0"):
        assert f"QEMU {release} {installed[release].package_version}" in p.stdout


def test_check_real_without_a_fleet(tmp_path: Path) -> None:
    env = {**os.environ, "VIRTIO_COMPAT_QEMU_CACHE": str(tmp_path / "empty")}
    assert_one_line_error(run("check", *NARROW, "--real", "--reports", str(tmp_path / "r"), cwd=tmp_path, env=env),
                          "--real", "no release of the fleet is installed", "virtio-compat fleet install")
    assert_one_line_error(run("check", *NARROW, "--real", "--real-examples", "0", "--reports", str(tmp_path / "r"),
                              cwd=tmp_path), "--real-examples must be at least 1")
    assert not (tmp_path / "r").exists()


def test_check_no_matching_cell(tmp_path: Path) -> None:
    p = run("check", "--transports", "pci", "--machines", "virt", "-n", "0", "--reports", str(tmp_path / "r"),
            cwd=tmp_path)
    assert_one_line_error(p, "no matrix cell matches")
    assert not (tmp_path / "r").exists()


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(d.name))
    return out


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_check_interrupted_stops_pytest_and_keeps_the_old_reports(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "compat-matrix.json").write_text("[]")  # from an earlier run
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "check", "--releases", "2.0,2.1,2.4,7.2",
                             "--reports", str(reports), "-n", "2"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        pytest_pid: int | None = None
        while time.monotonic() < deadline:  # until the workers run cells
            kids = _children(proc.pid)
            if kids and any((reports / ".check-run").glob(".parts/*.jsonl")):
                pytest_pid = kids[0]
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        assert pytest_pid is not None, "the matrix did not start within 60 s"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted; no reports written" in err
    gone = time.monotonic() + 10
    while _group_alive(pytest_pid) and time.monotonic() < gone:
        time.sleep(0.1)  # killed processes are reaped asynchronously
    assert not _group_alive(pytest_pid)  # pytest and its workers are gone
    assert (reports / "compat-matrix.json").read_text() == "[]"
    assert sorted(p.name for p in reports.iterdir()) == ["compat-matrix.json"]


def test_check_summary_lists_failures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = {"src": "2.7", "dst": "7.2", "transport": "pci", "device": "virtio-net", "expected": None,
            "examples": 12, "machines": ["pc-i440fx-2.6"], "qemu": False, "failure": None}
    failure = "R3: expected accepted; got rejected\n  QEMU 2.7 ...\n  replay: virtio-compat replay X.json"
    entries = [{**base, "rule": "R3", "outcome": "fail", "failure": failure},
               {**base, "rule": "R5", "outcome": "pass"}, {**base, "rule": "R6", "outcome": "expected"}]
    args = argparse.Namespace(profile="ci", n="auto")
    assert summarize(entries, 1, Progress(done=1, failed=1), tmp_path, args) == 1
    out = capsys.readouterr().out
    assert "1 pass, 1 expected incompatibilities, 1 fail" in out
    assert "FAIL virtio-net pci 2.7 -> 7.2 R3: expected accepted; got rejected" in out
    assert "replay: virtio-compat replay X.json" in out
    assert summarize(entries[1:], 0, Progress(done=1), tmp_path, args) == 0
