"""What the commands read from their command line: stream files and schema modules (shared by `cli`, `bench`
and `diff`, below all three)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from harness.errors import UsageError

if TYPE_CHECKING:  # the models load with the command that needs them
    from models.registry import Registry


def read_stream_file(path: str) -> bytes:
    """The bytes of a stream file, or a UsageError that says what is wrong with the path."""
    if os.path.isdir(path):
        raise UsageError(f"{path}: is a directory, not a migration stream file")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except PermissionError:
        raise UsageError(f"{path}: permission denied") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot read: {e.strerror or e}") from None
    if not data:
        raise UsageError(f"{path}: empty file, not a migration stream")
    return data


def load_schemas(paths: Sequence[str] | None) -> Registry:
    """--schema MODULE (repeatable): the in-tree registry extended by the schema modules (models/schema.py)."""
    from models.schema import load_all

    return load_all(paths)
