"""Fixtures for the real-QEMU tests: they need qemu-system-x86_64 and skip, saying why, without it."""

from __future__ import annotations

import pytest

from harness.errors import QemuError
from harness.qemu.process import find_qemu


@pytest.fixture(scope="session")
def qemu_binary() -> str:
    """Path of qemu-system-x86_64 on PATH; skips the test when there is none."""
    try:
        return find_qemu(None, "x86_64")
    except QemuError as exc:
        pytest.skip(f"real-QEMU test skipped: {exc}")
