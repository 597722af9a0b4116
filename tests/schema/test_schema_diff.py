"""`virtio-compat diff`: each difference between two releases' virtio formats gets the right verdict, decided
statically where needed() is in the vocabulary and by matrix cells where it is Python."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.diff import BREAKS, DEVICES, GATE, SAFE, Diff, Difference, compare_subsections, diff, format_text
from models import schema
from models.registry import BASE
from models.releases import V

HERE = Path(__file__).resolve().parent
SCHEMAS = HERE / "schemas"
EXAMPLES = HERE.parents[1] / "examples" / "schemas"
ROOT = HERE.parents[1]
NET = ["virtio-net"]


pytestmark = pytest.mark.usefixtures("ci_profile")


def one(d: Diff, kind: str, subject: str) -> Difference:
    found = [x for x in d.differences if x.kind == kind and x.subject == subject]
    assert len(found) == 1, [(x.kind, x.subject) for x in d.differences]
    return found[0]


def test_ungated_subsection_needs_a_machine_type_gate() -> None:
    reg = schema.load(EXAMPLES / "net_foo_ungated.py")
    d = diff(V("11.1"), V("11.2"), NET, registry=reg)
    x = one(d, "subsection-added", "virtio-net-device/foo")
    assert (x.verdict, x.direction, x.decided_by) == (GATE, "11.2 -> 11.1", "static")
    assert x.condition == "foo != 0"
    assert len(x.machines) == 68 and "pc-q35-11.1" in x.machines and "virt-6.0" in x.machines  # 6.0..11.1 (17) x 4
    assert any("it depends on foo" in w for w in x.why) and any("hw_compat_11_1" in w for w in x.why)
    assert d.breaks == [x] and not d.cells.results  # decided without running a cell


def test_gated_subsection_is_safe_and_names_its_gate() -> None:
    reg = schema.load(EXAMPLES / "net_foo_gated.py")
    d = diff(V("11.1"), V("11.2"), NET, registry=reg)
    x = one(d, "subsection-added", "virtio-net-device/foo")
    assert (x.verdict, x.direction) == (SAFE, None)
    assert any("gated by x-foo (hw_compat_11_1)" in w for w in x.why)
    assert one(d, "property-added", "x-foo").verdict == SAFE
    assert not d.breaks


def test_core_subsection_is_compared_for_every_device() -> None:
    reg = schema.load(SCHEMAS / "core_bar_gated.py")
    d = diff(V("11.1"), V("11.2"), ["virtio-net", "virtio-rng"], registry=reg)
    x = one(d, "subsection-added", "virtio/bar")
    assert x.verdict == SAFE and len(x.scope) == 6 and "virtio-rng/ccw" in x.scope


def test_version_bump_breaks_backward_migration() -> None:
    reg = schema.load(SCHEMAS / "net_foo_v2.py")
    d = diff(V("11.2"), V("11.3"), NET, registry=reg)
    behind = diff(V("11.1"), V("11.3"), NET, registry=reg)
    x = one(d, "version-changed", "virtio-net-device/foo")
    assert (x.verdict, x.direction) == (BREAKS, "11.3 -> 11.2")
    assert x.machines == ["pc-i440fx-11.2", "pc-q35-11.2", "virt-11.2", "s390-ccw-virtio-11.2"]  # the gate holds
    field = one(d, "field-added", "virtio-net-device/foo.foo_hi")
    assert field.verdict == SAFE and field.detail.startswith("foo_hi uint32 (4 bytes)")
    assert one(behind, "subsection-added", "virtio-net-device/foo").verdict == SAFE  # gated for 11.1's machines


def test_python_needed_is_decided_by_running_the_cells() -> None:
    reg = schema.load(SCHEMAS / "python_needed.py")
    d = diff(V("11.1"), V("11.2"), ["virtio-balloon"], registry=reg)
    x = one(d, "subsection-added", "virtio-balloon-device/baz")
    assert (x.verdict, x.decided_by) == (GATE, "cells")
    assert {c["cell"] for c in x.cells} == {f"11.2-11.1-{t}-virtio-balloon" for t in ("pci", "mmio", "ccw")}
    assert all(c["status"] == "fail" and c["rule"] == "R4" and "baz=7" in c["state"] for c in x.cells)
    assert any("Python <lambda> at python_needed.py:9" in w and "ran 3 matrix cells" in w for w in x.why)


def test_downstream_line_without_its_own_compat_entry(tmp_path: Path) -> None:
    missing = tmp_path / "rhel_foo_missing_entry.py"  # rhel_foo.py without the line's own compat entry
    missing.write_text((SCHEMAS / "rhel_foo.py").read_text().replace("RHEL_ENTRY = True", "RHEL_ENTRY = False"))
    reg = schema.load(missing)
    d = diff(V("11.1"), V("11.2"), NET, registry=reg)
    x = one(d, "subsection-added", "virtio-net-device/foo")
    assert x.verdict == GATE and sorted(x.machines) == ["pc-q35-rhel10.0.0", "pc-q35-rhel9.4.0"]
    assert any('line="rhel"' in w for w in x.why)
    reg = schema.load(SCHEMAS / "rhel_foo.py")
    d = diff(V("11.1"), V("11.2"), NET, registry=reg)
    assert one(d, "subsection-added", "virtio-net-device/foo").verdict == SAFE


def test_load_check_range_is_decided_by_cells() -> None:
    reg = schema.load(SCHEMAS / "check_range.py")
    d = diff(V("11.1"), V("11.2"), ["virtio-blk"], registry=reg)
    x = one(d, "check-removed", "inuse_modular")
    # the migration cells pass, but 11.2's own cells draw hostile states: an in-use count past the ring is loaded
    assert (x.verdict, x.decided_by, x.direction) == (BREAKS, "cells", "11.2 -> 11.2"), x.why
    assert {c["cell"] for c in x.cells} == {f"11.2-{d}-{t}-virtio-blk" for t in ("pci", "mmio", "ccw")
                                            for d in ("11.1", "11.2")}
    assert all(c["status"] == "pass" for c in x.cells if "-11.1-" in c["cell"])
    assert {c["hostile"] for c in x.cells if c["status"] == "fail"} <= {"inuse-overflow", "inuse-at-ring-size"}


def test_a_failing_cell_is_blamed_only_on_the_difference_it_exercises() -> None:
    reg = schema.load(SCHEMAS / "two_differences.py")
    d = diff(V("11.1"), V("11.2"), NET, registry=reg)
    sub = one(d, "subsection-added", "virtio-net-device/foo")
    assert sub.verdict != SAFE and sub.direction == "11.2 -> 11.1"
    chk = one(d, "check-changed", "inuse_modular")
    failing = [c for c in chk.cells if c["status"] == "fail"]
    assert failing and all("virtio-net-device/foo" in c["evidence"] for c in failing)  # the same cells fail
    assert chk.verdict == SAFE, chk.why


def test_in_tree_releases() -> None:
    # a core subsection whose needed() reads the host features: no configuration of 10.2 offers a bit from 64 on
    d = diff(V("10.1"), V("10.2"), NET)
    x = one(d, "subsection-added", "virtio/128bit_features")
    assert (x.verdict, x.decided_by, x.cells) == (SAFE, "static", [])
    assert any(w == "10.2 -> 10.1: never sent on a machine type both have: needed() is false there" for w in x.why)
    assert one(d, "check-changed", "features -> features128").verdict == SAFE
    # a transport subsection nested in another (virtio_pci/modern_state inside virtio/extra_state)
    n = one(d, "subsection-added", "virtio_pci/modern_state/features128")
    assert n.scope == ["virtio-net/pci"] and n.detail.endswith("(version 1: guest_features_ex uint32[2])")
    assert n.condition == "guest features >= bit 64 (in virtio_pci/modern_state)" and n.verdict == SAFE
    # QEMU 4.0 sized the balloon config for all its fields on every machine type; 4.1's compat property puts
    # the older machine types back: a property value change on the same machine type
    y = one(diff(V("4.0"), V("4.1"), ["virtio-balloon"]), "property-changed", "qemu-4-0-config-size")
    assert y.verdict == GATE and "pc-i440fx-2.0" in y.machines and "pc-q35-4.0" not in y.machines
    # virtio/broken (2.8) has no gate: QEMU's own known incompatibility (harness/known.py KNOWN broken-to-2.7)
    b = one(diff(V("2.7"), V("2.8"), ["virtio-blk"]), "subsection-added", "virtio/broken")
    assert (b.verdict, b.direction, b.decided_by) == (GATE, "2.8 -> 2.7", "static") and "pc-q35-2.7" in b.machines
    # virtio/started (4.1) is gated by use-started, which hw_compat_4_0 turns off
    s = one(diff(V("4.0"), V("4.1"), ["virtio-blk"]), "subsection-added", "virtio/started")
    assert (s.verdict, s.decided_by) == (SAFE, "static")
    assert any("gated by use-started (hw_compat_4_0)" in w for w in s.why), s.why
    # rss version 2 (10.1): versioned, and never sent (no modelled configuration offers RSS)
    z = one(diff(V("10.0"), V("10.1"), NET), "version-changed", "virtio-net-device/rss")
    assert (z.decided_by, z.verdict, z.cells) == ("static", SAFE, [])


# the subsection differences of adjacent modelled releases (and two long ranges) that break migration: each one
# QEMU's own, declared in harness/known.py KNOWN (broken-to-2.7, disabled-on-4.2-from-5.x,
# balloon-page-poison-misspelt)
KNOWN_BREAKS = {
    ("2.7", "2.8", "virtio/broken", "2.8 -> 2.7"),
    ("4.2", "5.0", "virtio/disabled", "5.0 -> 4.2"),
    ("6.0", "6.2", "vitio-balloon-device/page-poison", "6.0 -> 6.2"),
    ("6.0", "6.2", "virtio-balloon-device/page-poison", "6.2 -> 6.0"),
    ("2.0", "5.2", "virtio/broken", "5.2 -> 2.0"),
    ("5.2", "11.1", "vitio-balloon-device/page-poison", "5.2 -> 11.1"),
    ("5.2", "11.1", "virtio-balloon-device/page-poison", "11.1 -> 5.2"),
}


def test_every_in_tree_subsection_is_decided_statically() -> None:
    """Every in-tree needed() (models/core.py, the transports', the devices') is a condition diff reads: on every
    pair of modelled releases every subsection difference is decided without running a matrix cell, the text says
    so, and the only ones that break migration are QEMU's known ones, which diff names."""
    rels = BASE.releases
    adjacent = {*zip(rels, rels[1:], strict=False), (V("2.0"), V("5.2")), (V("5.2"), V("11.1"))}
    breaking, seen = set(), set()
    for i, a in enumerate(rels):
        for b in rels[i + 1:]:
            d = Diff(a, b, list(DEVICES), [], "dev")
            compare_subsections(d)
            assert not d.cells.results, (a, b, sorted(d.cells.results))
            subs = [x for x in d.differences if x.kind.startswith("subsection") or x.kind in (
                "needed-changed", "version-changed")]
            assert all(x.decided_by == "static" for x in subs), [(x.kind, x.subject) for x in subs]
            text = format_text(d)
            assert text.count("(decided statically)") == sum(x.kind.startswith("subsection") for x in subs)
            assert "decided by matrix cells" not in text
            # each that breaks names its entry in harness/known.py KNOWN
            assert all(any(w.startswith("known: ") for w in x.why) for x in subs if x.verdict != SAFE), (a, b)
            seen |= {x.subject for x in subs}
            if (a, b) in adjacent:
                breaking |= {(str(a), str(b), x.subject, x.direction) for x in subs if x.verdict != SAFE}
    assert breaking == KNOWN_BREAKS
    # every in-tree subsection a modelled release adds or drops was among them
    assert {"virtio/device_endian", "virtio/64bit_features", "virtio/128bit_features", "virtio/virtqueues",
            "virtio/ringsize", "virtio/extra_state", "virtio/started", "virtio/packed_virtqueues", "virtio/disabled",
            "virtio/broken", "virtio_pci/modern_state", "virtio_pci/modern_state/features128", "virtio_mmio/state",
            "virtio-net-device/rss", "virtio-balloon-device/free-page-report", "virtio-balloon-device/page-poison",
            "vitio-balloon-device/page-poison"} <= seen


def test_cli_text_json_and_exit_codes() -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "harness.cli", "diff", *args], capture_output=True, text=True,
                              cwd=ROOT)

    bad = run("11.1", "examples/schemas/net_foo_ungated.py", "--device", "virtio-net")
    assert bad.returncode == 1, bad.stderr
    assert "NEEDS A MACHINE-TYPE GATE: subsection-added virtio-net-device/foo" in bad.stdout
    good = run("11.1", "11.2", "--schema", "examples/schemas/net_foo_gated.py", "--device", "virtio-net", "--json")
    assert good.returncode == 0, good.stderr
    out = json.loads(good.stdout)
    assert out["a"] == "11.1" and out["b"] == "11.2" and out["breaks"] == 0
    assert out["schema"] == ["examples/schemas/net_foo_gated.py"]
    assert {"subsection-added", "property-added", "release-added"} <= {x["kind"] for x in out["differences"]}
    assert run("11.1", "12.0").returncode == 2
    assert run("11.1", "11.2", "--device", "virtio-gpu").returncode == 2


def test_device_vmsd_version_bump_breaks_both_directions() -> None:
    reg = schema.load(SCHEMAS / "net_device_v12.py")
    d = diff(V("11.1"), V("11.2"), NET, registry=reg)
    section = one(d, "version-changed", "virtio-net")
    assert (section.verdict, section.direction) == (BREAKS, "11.2 -> 11.1")
    assert len(section.machines) == 68 and any("unsupported version 12" in w for w in section.why)
    assert one(d, "version-changed", "virtio-net-device").verdict == SAFE  # not on the wire itself
    foo = one(d, "field-added", "virtio-net-device.foo")
    assert (foo.verdict, foo.direction, foo.decided_by) == (BREAKS, "both", "layout")
    assert any(w.startswith("11.1 -> 11.2: 11.1 does not write it and 11.2 reads it") or
               w.startswith("11.1 -> 11.2: 11.2 reads it") for w in foo.why), foo.why
    assert any(w.startswith("fix: a subsection") for w in foo.why)
    assert not d.cells.results


def test_device_vmsd_inner_version_alone_breaks_the_release_itself() -> None:
    reg = schema.load(SCHEMAS / "net_device_inner_only.py")
    d = diff(V("11.1"), V("11.2"), NET, registry=reg)
    foo = one(d, "field-added", "virtio-net-device.foo")
    assert foo.verdict == BREAKS
    assert any(w.startswith("11.2 -> 11.2: 11.2 writes it from device vmsd version 12, 11.2 reads with its section "
                            "version 11") for w in foo.why), foo.why
    assert not [x for x in d.differences if x.kind == "version-changed" and x.subject == "virtio-net"]


def test_tested_device_fields(tmp_path: Path) -> None:
    module = SCHEMAS / "net_device_tested.py"
    reg = schema.load(module)
    d = diff(V("11.1"), V("11.2"), NET, registry=reg)
    for name, kind in (("peer_mac", "buffer[6]"), ("coalesce", "uint16[3]")):
        x = one(d, "field-added", f"virtio-net-device.{name}")
        assert x.verdict == SAFE and x.detail.startswith(f"{name} {kind} (where x-foo)")
        assert any("gated by x-foo (hw_compat_11_1)" in w for w in x.why)
    # a test over a state field: the two sides of a cross-release migration disagree where it holds; the same
    # release agrees, since the destination has loaded promisc before it tests it
    text = module.read_text().replace("TESTED_BY_STATE = False", "TESTED_BY_STATE = True")
    by_state = tmp_path / "net_device_tested_by_state.py"
    by_state.write_text(text)
    reg = schema.load(by_state)
    d = diff(V("11.1"), V("11.2"), NET, registry=reg)
    x = one(d, "field-added", "virtio-net-device.peer_mac")
    assert (x.verdict, x.direction) == (BREAKS, "both")
    assert not any(w.startswith("11.2 -> 11.2") for w in x.why)
    assert any("it depends on promisc" in w for w in x.why)


def test_a_new_version_of_a_subsection_of_the_models() -> None:
    reg = schema.load(SCHEMAS / "started_v2.py")
    d = diff(V("11.1"), V("11.2"), ["virtio-blk"], registry=reg)
    x = one(d, "version-changed", "virtio/started")
    # virtio/started's needed() is a condition: 11.2 sends version 2 where use-started is on (everywhere both have)
    assert (x.verdict, x.direction, x.decided_by) == (BREAKS, "11.2 -> 11.1", "static") and not x.cells
    assert len(x.machines) == 68
    field = one(d, "field-added", "virtio/started.kick_count")
    assert field.verdict == SAFE and field.detail == "kick_count uint16 (2 bytes) at 1"
