"""The compiled parsers kept on disk (harness/wire/compiled.py): an entry parses and builds exactly as construct's
own compile() of the layout, and an entry that is stale, damaged or another layout's is never used."""

from __future__ import annotations

import lzma
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.wire import compiled as cache
from harness.wire.stream import decode_stream
from harness.wire.virtio import DEVICE_DATA, TRANSPORTS, payload_layout
from tests.conftest import DATA, SAMPLES

NET = SAMPLES / "pc-i440fx-7.2-virtio-net-driven.bin"


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VIRTIO_COMPAT_PARSER_CACHE", str(tmp_path / "parsers"))
    return tmp_path / "parsers"


def _streams() -> Iterator[bytes]:
    for p in sorted(SAMPLES.glob("*.bin")):
        yield p.read_bytes()
    for p in sorted((DATA / "hostile").glob("*.bin.xz")):
        yield lzma.decompress(p.read_bytes())


def _payloads() -> dict[tuple[str, str], list[bytes]]:
    """The virtio payloads of the streams the repository holds, by transport and device."""
    out: dict[tuple[str, str], list[bytes]] = {}
    for data in _streams():
        for d in decode_stream(data, strict=False).devices:
            if d.value is not None and d.size:
                out.setdefault((d.transport, d.device), []).append(data[d.offset : d.offset + d.size])
    return out


def _shape(source: str) -> str:
    """Generated source with each linked piece's id() replaced by its order of appearance."""
    ids: dict[str, int] = {}
    return re.sub(r"linked(instances|parsers|builders)\[(\d+)\]",
                  lambda m: f"linked{m[1]}[#{ids.setdefault(m[2], len(ids))}]", source)


def _entry(folder: Path, transport: str, device: str) -> Path:
    return folder / f"{transport}-{device}-{cache.declarations_digest()}.bin"


def _outcome(fn: Any) -> Any:
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 (the same failure on both sides is agreement)
        return type(e).__name__


def test_an_entry_parses_and_builds_as_constructs_own_compile(folder: Path) -> None:
    payloads = _payloads()
    assert set(payloads) == {(t, d) for t in TRANSPORTS for d in DEVICE_DATA}  # every layout has real payloads
    for (transport, device), chunks in payloads.items():
        layout = payload_layout(transport, device)
        cache.compile_cached(layout, f"{transport}-{device}")  # compiles and keeps it
        path = _entry(folder, transport, device)
        assert path.is_file()
        loaded = cache._load(str(path), layout, cache.walk(layout))
        assert loaded is not None, f"{path.name} was not taken"
        fresh = layout.compile()
        assert _shape(loaded.source) == _shape(fresh.source)  # construct's own code, up to the linked ids
        for chunk in chunks:
            want = _outcome(lambda: fresh.parse(chunk))  # noqa: B023 (called at once)
            got = _outcome(lambda: loaded.parse(chunk))  # noqa: B023
            assert got == want
            if not isinstance(want, str):
                assert _outcome(lambda: loaded.build(want)) == _outcome(lambda: fresh.build(want))  # noqa: B023


def _decode(env: dict[str, str], stream: Path = NET) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", "decode", "--json", str(stream)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_later_process_takes_the_entry_and_decodes_alike(folder: Path) -> None:
    env = dict(os.environ)
    plain = _decode({**env, "VIRTIO_COMPAT_PARSER_CACHE": ""})  # nothing on disk: construct's compile() in memory
    assert plain.returncode == 0 and '"virtio-net"' in plain.stdout
    assert not folder.exists()
    first = _decode(env)
    path = _entry(folder, "pci", "virtio-net")
    stamp = path.stat().st_mtime_ns
    second = _decode(env)
    assert path.stat().st_mtime_ns == stamp  # taken, not written again
    assert first.stdout == second.stdout == plain.stdout and first.stderr == second.stderr == ""


def _other_layouts_entry(folder: Path, path: Path) -> bytes:
    cache.compile_cached(payload_layout("mmio", "virtio-net"), "mmio-virtio-net")
    return _entry(folder, "mmio", "virtio-net").read_bytes()  # whole and checksummed, but another layout's


@pytest.mark.parametrize("damage", ["truncated", "flipped", "garbage", "another-layout", "empty"])
def test_a_damaged_or_foreign_entry_is_compiled_afresh(folder: Path, damage: str) -> None:
    env = dict(os.environ)
    want = _decode({**env, "VIRTIO_COMPAT_PARSER_CACHE": ""}).stdout
    path = _entry(folder, "pci", "virtio-net")
    _decode(env)
    good = path.read_bytes()
    bad = {"truncated": good[: len(good) // 2], "flipped": good[:-100] + bytes([good[-100] ^ 1]) + good[-99:],
           "garbage": os.urandom(len(good)), "empty": b"",
           "another-layout": _other_layouts_entry(folder, path) if damage == "another-layout" else b""}[damage]
    path.write_bytes(bad)
    layout = payload_layout("pci", "virtio-net")
    assert cache._load(str(path), layout, cache.walk(layout)) is None
    got = _decode(env)
    assert got.returncode == 0 and got.stdout == want
    assert path.read_bytes() != bad  # written again, whole
    assert cache._load(str(path), layout, cache.walk(layout)) is not None


def test_an_entry_is_keyed_on_the_layout_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here = Path(cache.__file__).parent
    copy = tmp_path / "wire"
    shutil.copytree(here, copy, ignore=shutil.ignore_patterns("__pycache__"))
    digest = cache.declarations_digest()
    monkeypatch.setattr(cache, "_DIGEST", [])
    monkeypatch.setattr(cache, "__file__", str(copy / "compiled.py"))
    assert cache.declarations_digest() == digest  # the same sources
    virtio = copy / "virtio.py"
    virtio.write_text(virtio.read_text().replace('"mac" / c.Bytes(6)', '"mac" / c.Bytes(8)'))
    monkeypatch.setattr(cache, "_DIGEST", [])
    assert cache.declarations_digest() != digest  # an edited layout is another entry


def test_a_layout_that_changed_under_the_same_name_is_not_taken(folder: Path) -> None:
    import construct as c

    layout = payload_layout("pci", "virtio-rng")
    cache.compile_cached(layout, "pci-virtio-rng")
    path = _entry(folder, "pci", "virtio-rng")
    changed = c.Struct(*[sc if sc.name != "isr" else "isr" / c.Int16ub for sc in layout.subcons])
    assert cache._load(str(path), changed, cache.walk(changed)) is None
    assert cache._load(str(path), layout, cache.walk(layout)) is not None


def test_a_folder_that_cannot_be_written_is_no_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    got = _decode({**os.environ, "VIRTIO_COMPAT_PARSER_CACHE": str(blocker / "parsers")})
    assert got.returncode == 0 and got.stderr == "" and '"virtio-net"' in got.stdout
