"""Real QEMU 7.2 migration streams shipped with the package (package data): `bench` measures on NET, `fuzz`
mutates them all unless given `--seeds`, and they are there for trying `decode` and `verdict` on an installed
copy. Each `.bin` has its ground truth beside it (`.json`: what the tests check `decode` against)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from harness.errors import UsageError

FOLDER = Path(__file__).resolve().parent
NET = FOLDER / "pc-i440fx-7.2-virtio-net-driven.bin"  # a virtio-net set up by a guest, and a virtio-blk
BLK = FOLDER / "f07-i440fx-7.2-blk-inflight-werror.bin"  # a virtio-blk with a request in flight (werror=stop)


def streams() -> list[Path]:
    """Every sample stream, by name."""
    return sorted(FOLDER.glob("*.bin"))


def streams_in(folders: Sequence[str]) -> list[Path]:
    """The *.bin streams of each folder (fuzz --seeds); a folder without one is one line and exit 2."""
    paths: list[Path] = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise UsageError(f"{folder}: {'not a directory' if folder.exists() else 'no such directory'} (--seeds)")
        found = sorted(folder.glob("*.bin"))
        if not found:
            raise UsageError(f"{folder}: no *.bin stream in it to use as a seed (--seeds)")
        paths += found
    return paths
