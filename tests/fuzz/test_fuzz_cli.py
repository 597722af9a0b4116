"""`virtio-compat fuzz`: findings saved atomically with a reproduction line, exit codes, and the checker's
detection of crashes, hangs, memory blow-ups and malformed errors (planted in a fake decoder)."""

from __future__ import annotations

import signal
import time
import zlib
from collections.abc import Callable
from hashlib import sha1
from pathlib import Path
from typing import Any

import pytest

from harness import fuzz
from harness.cli import main
from harness.errors import StreamError
from harness.fuzz import checker as fuzz_checker
from harness.fuzz import cli as fuzz_cli
from harness.fuzz import targets as fuzz_targets
from harness.fuzz.targets import Verdicts
from harness.wire.stream import Stream, decode_stream
from tests.conftest import SAMPLES

SMALL = SAMPLES / "f07-i440fx-7.2-blk-inflight-werror.bin"
HEADER_BYTES = b"QEVM\x00\x00\x00\x03"
RUN = ["fuzz", "--minutes", "0.005", "--seed", "3"]  # 0.3 s, after the seeds are loaded


@pytest.fixture(autouse=True)
def one_seed_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fuzz_cli, "default_seed_paths", lambda: [SMALL])


def planted_crash(data: bytes, *args: Any, **kwargs: Any) -> Any:
    raise KeyError("planted")


def plant(monkeypatch: pytest.MonkeyPatch, bug: Callable[..., Any]) -> None:
    """The same bug in both targets: the first input, whatever its kind, finds it (a loaded machine may leave
    time for one input only)."""
    monkeypatch.setattr(fuzz_checker, "decode_stream", bug)
    monkeypatch.setattr(fuzz_checker, "decode_payload", bug)


def test_a_finding_is_saved_with_its_reproduction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    plant(monkeypatch, planted_crash)
    out = tmp_path / "out"
    assert main([*RUN, "--out", str(out)]) == 1
    saved = sorted(out.iterdir())
    assert len(saved) == 1, "one bug, one file: later inputs with the same signature are counted, not saved"
    path = saved[0]
    data = path.read_bytes()
    assert path.name == f"crash-{sha1(data).hexdigest()[:12]}.bin"
    stdout, stderr = capsys.readouterr()
    assert f"  reproduce: virtio-compat decode {path}\n" in stdout
    assert "fuzz: crash: KeyError: 'planted' at tests/fuzz/test_fuzz_cli.py" in stdout
    assert "1 finding(s)" in stderr and "Traceback" not in stderr
    # the reproduction line does reproduce it (the planted bug is in the decoder `decode` uses too)
    monkeypatch.setattr("harness.wire.stream.decode_stream", planted_crash)
    with pytest.raises(KeyError, match="planted"):
        main(["decode", str(path)])


def test_a_second_run_never_overwrites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    plant(monkeypatch, planted_crash)
    out = tmp_path / "out"
    assert main([*RUN, "--out", str(out)]) == 1
    (path,) = out.iterdir()
    path.write_bytes(b"kept")  # the same name must not be written again, whatever it holds
    assert main([*RUN, "--out", str(out)]) == 1
    assert [p.name for p in out.iterdir()] == [path.name] and path.read_bytes() == b"kept"
    assert f"reproduce: virtio-compat decode {path}" in capsys.readouterr().out


def test_save_is_atomic_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    m = fuzz.Mutant(b"QEVM", "random", "-", "note")
    found = fuzz.Finding("crash", "x", "sig", m, b"QEVM\x00\x00\x00\x03")
    path, new = fuzz.save_finding(found, tmp_path)
    assert new and path.read_bytes() == found.stream
    assert fuzz.save_finding(found, tmp_path) == (path, False)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_hang_is_caught_and_saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    def sleeps(data: bytes, *args: Any, **kwargs: Any) -> Any:
        time.sleep(60)

    plant(monkeypatch, sleeps)
    monkeypatch.setattr(fuzz_checker, "TIME_LIMIT", 0.2)
    monkeypatch.setattr(fuzz_checker, "TIME_PER_BYTE", 0.0)
    start = time.monotonic()
    assert main(["fuzz", "--minutes", "0.01", "--seed", "3", "--out", str(tmp_path)]) == 1
    assert time.monotonic() - start < 20
    (path,) = tmp_path.iterdir()
    assert path.name.startswith("hang-")
    assert "fuzz: hang: decode still running after 0.2 s, in tests/fuzz/test_fuzz_cli.py" in capsys.readouterr().out


@pytest.mark.parametrize("busy", [False, True], ids=["sleep", "busy-loop"])
def test_checker_detects_a_hang(busy: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    def hangs(data: bytes, **kwargs: Any) -> Any:
        if busy:
            while True:
                pass
        time.sleep(60)

    monkeypatch.setattr(fuzz_checker, "decode_stream", hangs)
    m = fuzz.Mutant(b"QEVM\x00\x00\x00\x03\x00", "header", "-", "planted")
    start = time.monotonic()
    with fuzz.Checker(time_limit=0.2, per_byte=0) as checker:
        found = checker.check(m)
    assert time.monotonic() - start < 10
    assert found is not None and found.kind == "hang" and found.stream == m.data
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # no timer left running
    assert signal.getsignal(signal.SIGALRM) != checker._on_alarm  # the old handler is back


def _check(monkeypatch: pytest.MonkeyPatch, decoder: Any, data: bytes = b"QEVM\x00\x00\x00\x03\x00") -> Any:
    monkeypatch.setattr(fuzz_checker, "decode_stream", decoder)
    with fuzz.Checker() as checker:
        return checker.check(fuzz.Mutant(data, "header", "-", "planted"))


def test_checker_detects_memory_driven_by_a_length(monkeypatch: pytest.MonkeyPatch) -> None:
    def allocates(data: bytes, **kwargs: Any) -> Any:
        held = bytearray(fuzz_checker.memory_bound(len(data)) + (1 << 20))
        raise StreamError(f"held {len(held)} bytes", 8, "stream")

    found = _check(monkeypatch, allocates)
    assert found is not None and found.kind == "memory" and found.peak > fuzz_checker.memory_bound(9)


def test_checker_flags_a_memory_error_reported_as_a_stream_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def fails(data: bytes, **kwargs: Any) -> Any:
        try:
            raise MemoryError
        except MemoryError:
            raise StreamError("cannot decode", 8, "stream") from None

    found = _check(monkeypatch, fails)
    assert found is not None and found.kind == "memory" and "MemoryError" in found.summary


@pytest.mark.parametrize("offset, path", [(None, "x"), (10, "x"), (-1, "x"), (True, "x"), (0, ""), (0, "ram > pages")])
def test_checker_flags_a_stream_error_without_offset_or_path(offset: Any, path: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def bad(data: bytes, **kwargs: Any) -> Any:
        raise StreamError("bad", offset, path)

    found = _check(monkeypatch, bad)
    assert found is not None and found.kind == "bad-error"


def test_checker_accepts_success_and_clean_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    def clean(data: bytes, **kwargs: Any) -> Any:
        raise StreamError("clean", len(data), "stream")

    assert _check(monkeypatch, clean) is None
    assert _check(monkeypatch, lambda data, **kwargs: Stream(version=3)) is None


def test_a_clean_run_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*RUN, "--out", str(tmp_path / "out")]) == 0
    _, stderr = capsys.readouterr()
    assert "0 finding(s)" in stderr and "inputs in" in stderr
    assert list((tmp_path / "out").iterdir()) == []


def test_seeds_folder_replaces_the_samples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "one.bin").write_bytes(SMALL.read_bytes())
    used: list[list[Path]] = []
    load = fuzz.load_seeds
    monkeypatch.setattr(fuzz_cli, "load_seeds", lambda paths: used.append(list(paths)) or load(paths))
    assert main([*RUN, "--seeds", str(seeds), "--out", str(tmp_path / "out")]) == 0
    assert used == [[seeds / "one.bin"]]
    assert "0 finding(s)" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [["--minutes", "0"], ["--minutes", "-1"], ["--minutes", "nan"], ["--minutes", "inf"],
                                 ["--minutes", "soon"], ["--seed", "-1"], ["--seed", "1.5"], ["--out", "FILE"],
                                 ["--bogus"], ["extra"], ["--seeds", "FILE"], ["--seeds", "EMPTY"],
                                 ["--seeds", "MISSING"]])
def test_bad_options_exit_2_with_one_line(bad: list[str], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "FILE").write_text("not a directory")
    (tmp_path / "EMPTY").mkdir()  # no *.bin in it
    args = [str(tmp_path / a) if a in ("FILE", "EMPTY", "MISSING") else a for a in bad]
    assert main(["fuzz", *args]) == 2
    stdout, stderr = capsys.readouterr()
    assert stdout == "" and stderr.count("\n") == 1 and stderr.startswith("virtio-compat: error: ")


def test_target_verdict_checks_the_verdict_of_each_whole_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """--target verdict: a stream that decodes goes on to `verdict`; what that raises (not a HarnessError) is a
    finding of its own signature, with the release and destination that reproduce it."""
    seeds = fuzz.load_seeds([SMALL], variants=("slim",))
    verdicts = Verdicts(seeds)
    m = fuzz.Mutant(seeds[0].data, "regression", seeds[0].name, "the seed itself")
    with fuzz.Checker(verdicts=verdicts) as checker:
        assert checker.check(m) is None  # the real verdict of a real stream

    def bug(*args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError("planted")

    monkeypatch.setattr(fuzz_targets, "verdict", bug)
    with fuzz.Checker(verdicts=verdicts) as checker:
        found = checker.check(m)
    assert found is not None and found.kind == "crash", found
    assert found.signature.startswith("crash verdict ZeroDivisionError"), found.signature
    assert found.verdict is not None and found.verdict == verdicts.pick(decode_stream(m.data), m.data)
    with fuzz.Checker() as checker:  # the decoder alone (the default target) does not reach it
        assert checker.check(m) is None


def test_atheris_missing_is_one_line_and_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from harness.fuzz import guided

    monkeypatch.setattr(guided, "available", lambda: False)
    assert main(["fuzz", "--engine", "atheris", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "--engine atheris needs atheris (pip install atheris" in err and "Traceback" not in err


def test_memory_every_measures_the_memory_of_one_input_in_n(monkeypatch: pytest.MonkeyPatch) -> None:
    """The atheris engine measures memory on one input in 4, picked by the input's bytes (crc32)."""
    def allocates(data: bytes, **kwargs: Any) -> Any:
        held = bytearray(fuzz_checker.memory_bound(len(data)) + (1 << 20))
        raise StreamError(f"held {len(held)} bytes", 8, "stream")

    monkeypatch.setattr(fuzz_checker, "decode_stream", allocates)
    inputs = [HEADER_BYTES + bytes([i]) for i in range(16)]
    with fuzz.Checker(memory_every=4) as checker:
        kinds = [(zlib.crc32(d) % 4 == 0, checker.check(fuzz.Mutant(d, "header", "-", "planted"))) for d in inputs]
    assert any(measured for measured, _ in kinds) and not all(measured for measured, _ in kinds)
    for measured, found in kinds:
        assert (found is not None and found.kind == "memory") if measured else found is None


def test_corpus_goes_with_the_atheris_engine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fuzz", "--corpus", str(tmp_path / "c"), "--out", str(tmp_path / "out")]) == 2
    assert "--corpus is libFuzzer's corpus: it goes with --engine atheris" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
