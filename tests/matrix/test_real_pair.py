"""--real: the matrix cells whose two releases are in the fleet, on the real QEMU pair (harness/pytest_matrix.py;
a module of its own, so that a run without --real collects nothing here but one skipped test)."""

from __future__ import annotations

from harness.pytest_matrix import pytest_generate_tests, test_real_pair

__all__ = ["pytest_generate_tests", "test_real_pair"]
