"""Runs are deterministic for a given seed with the example database off (issue 5, "Faults in long runs"):
the same cells run again, or on another number of xdist workers, give the same matrix report (entries and
example counts) and the same failure files, byte for byte once the reports folder's name is taken out."""

from __future__ import annotations

from pathlib import Path

from tests.faults.runs import BROKEN_STARTED, normalized, run_matrix


def test_slow_subprocess_same_cells_same_reports_and_failure_files_on_1_and_2_workers(tmp_path: Path) -> None:
    # a broken model variant, so that the runs also minimize a failing example and write its failure file
    runs = {name: tmp_path / name for name in ("n2-first", "n2-again", "n1")}
    for name, folder in runs.items():
        run = run_matrix(folder, 1 if name == "n1" else 2, BROKEN_STARTED)
        assert run.returncode == 1, run.output
        assert "FAILED tests/matrix/test_matrix.py::test_cell[7.2-2.6-pci-virtio-net]" in run.output, run.output
        assert not run.leftovers
    first, again, one = (normalized(f) for f in runs.values())
    assert any(name.startswith("R4-") for name in first["failures"]), "the broken variant wrote no failure file"
    assert any((e["src"], e["dst"], e["rule"], e["outcome"]) == ("7.2", "2.6", "R4", "fail") for e in first["matrix"])
    assert all(e["examples"] > 1 for e in first["matrix"]), "the cells ran no examples"
    for other in (again, one):
        assert other["matrix"] == first["matrix"]  # entries, example counts, machine types, failure messages
        assert other["md"] == first["md"]
        assert sorted(other["failures"]) == sorted(first["failures"])  # the same minimal example, the same name
        for name, record in first["failures"].items():
            differ = sorted(k for k in record.keys() | other["failures"][name].keys()
                            if record.get(k) != other["failures"][name].get(k))
            assert not differ, f"{name} differs between runs in {differ}"
