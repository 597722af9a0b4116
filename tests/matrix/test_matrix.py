"""The compatibility matrix: its cells are product code (harness/pytest_matrix.py, what `virtio-compat check`
runs); imported here, so that `pytest -n auto` collects them as tests/matrix/test_matrix.py::test_cell[...]."""

from __future__ import annotations

from harness.pytest_matrix import pytest_generate_tests, test_cell

__all__ = ["pytest_generate_tests", "test_cell"]
