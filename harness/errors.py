"""One exception root for virtio-compat; every error the library raises on purpose is a HarnessError."""

from __future__ import annotations


class HarnessError(Exception):
    """Root of every error virtio-compat raises on purpose."""


class UsageError(HarnessError):
    """Bad command-line usage or an unusable input file (not a stream problem)."""


class StreamError(HarnessError):
    """A migration stream that cannot be read: says what, at which byte offset, in which field path."""

    def __init__(self, message: str, offset: int | None = None, path: str = "") -> None:
        self.message = message
        self.offset = offset
        self.path = path
        super().__init__(str(self))

    def __str__(self) -> str:
        where = [] if self.offset is None else [f"at byte {self.offset}"]
        if self.path:
            where.append(f"in {self.path}")
        return self.message + (f" ({', '.join(where)})" if where else "")


class SchemaError(HarnessError):
    """A model or schema declaration that is inconsistent."""


class QemuError(HarnessError):
    """A QEMU process that could not be started, driven or read."""
