"""`virtio-compat fleet`: installing real QEMU releases from Debian's archive side by side.

Unit tests of what the install is made of (apt's output, symlinks resolved inside a root, wrappers,
manifests), bad input, and with the fleet that `.ci/run` installs: each wrapper runs its own release
with its own modules only. One test installs a release into a scratch cache for real and interrupts it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness import fleet
from harness.cli import main
from harness.errors import QemuError
from harness.qemu.process import find_qemu
from tests.faults.runs import run_and_signal, signal_seed

SIMULATION = """\
NOTE: This is only a simulation!
Inst gcc-10-base (10.2.1-6 Debian:11.11/oldoldstable [amd64])
Inst libc6 [2.36-9] (2.31-13+deb11u11 Debian:11.11/oldoldstable [amd64])
Inst qemu-system-x86 (1:5.2+dfsg-11+deb11u3 Debian:11.11/oldoldstable, Debian-Security:11/oldoldstable [amd64])
Conf libc6 (2.31-13+deb11u11 Debian:11.11/oldoldstable [amd64])
"""


def test_apt_simulation_is_read_with_versions_and_epochs() -> None:
    assert fleet.parse_simulation(SIMULATION) == [
        ("gcc-10-base", "10.2.1-6"), ("libc6", "2.31-13+deb11u11"), ("qemu-system-x86", "1:5.2+dfsg-11+deb11u3")]


def test_absolute_symlinks_resolve_inside_the_root(tmp_path: Path) -> None:
    """bullseye's /lib64/ld-linux-x86-64.so.2 points at /lib/x86_64-linux-gnu/ld-2.31.so: inside the
    unpacked root, not on this system."""
    root = tmp_path / "root"
    (root / "lib" / "x86_64-linux-gnu").mkdir(parents=True)
    (root / "lib" / "x86_64-linux-gnu" / "ld-2.31.so").write_bytes(b"\x7fELF")
    (root / "lib" / "x86_64-linux-gnu" / "ld-linux-x86-64.so.2").symlink_to("ld-2.31.so")
    (root / "lib64").mkdir()
    (root / "lib64" / "ld-linux-x86-64.so.2").symlink_to("/lib/x86_64-linux-gnu/ld-2.31.so")
    real = root / "lib" / "x86_64-linux-gnu" / "ld-2.31.so"
    assert fleet._inside(root, root / "lib64" / "ld-linux-x86-64.so.2") == real
    assert fleet._loader(root) == real
    wrapper = fleet.write_wrapper(tmp_path, root, "qemu-system-x86_64", "test")
    text = wrapper.read_text()
    assert '"$root/lib/x86_64-linux-gnu/ld-2.31.so" --library-path "$root/lib/x86_64-linux-gnu"' in text
    assert os.access(wrapper, os.X_OK)
    # QEMU (7.1 on) takes firmware and modules from <dir of the running executable>/qemu-bundle
    assert (real.parent / "qemu-bundle").resolve() == root.resolve()


def test_a_release_without_its_manifest_is_not_installed(tmp_path: Path) -> None:
    """What an install killed before its last step leaves is never listed nor used."""
    (tmp_path / "5.2" / "bin").mkdir(parents=True)
    (tmp_path / "5.2" / "bin" / "qemu-system-x86_64").write_text("#!/bin/sh\n")
    (tmp_path / ".tmp-7.2-abc" / "bin").mkdir(parents=True)
    assert fleet.installed(tmp_path) == []
    with pytest.raises(fleet.FleetError, match=r"QEMU 5.2 is not installed .*fleet install --releases 5.2"):
        fleet.binary("5.2", cache=tmp_path)


@pytest.mark.parametrize(("args", "says"), [
    (["fleet", "install", "--releases", "9.0"], "unknown release 9.0 (the fleet has: 5.2, 7.2, 10.0, 11.1)"),
    (["fleet", "install", "--targets", "riscv64"], "unknown target riscv64"),
    (["fleet", "path", "6.1"], "QEMU 6.1 is not a fleet release"),
    (["qemu", "--src-binary", "9.1", "--dst-binary", "7.2"], "QEMU 9.1 is not a fleet release"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1


def test_an_unreachable_archive_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A real apt-get against a closed port: one line naming the archive, nothing listed, nothing left."""
    if not fleet.shutil.which("apt-get"):
        pytest.skip("apt-get not found")
    monkeypatch.setenv("VIRTIO_COMPAT_QEMU_CACHE", str(tmp_path))
    monkeypatch.setenv("VIRTIO_COMPAT_DEBIAN_MIRROR", "http://127.0.0.1:9/debian")
    assert main(["fleet", "install", "--releases", "5.2", "--targets", "x86_64"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot reach Debian's archive at http://127.0.0.1:9/debian" in err[0]
    assert fleet.installed(tmp_path) == [] and not list(tmp_path.glob(".tmp-*"))


# -- with the installed fleet ------------------------------------------------------------------------------


def _installed(release: str, target: str = "x86_64") -> fleet.Installed:
    for b in fleet.installed():
        if (b.release, b.target) == (release, target):
            return b
    pytest.skip(f"QEMU {release} ({target}) of the fleet is not installed (`virtio-compat fleet install`)")


@pytest.mark.qemu
@pytest.mark.parametrize("target", fleet.TARGETS)
@pytest.mark.parametrize("release", fleet.RELEASES)
def test_each_wrapper_runs_its_own_release(release: str, target: str) -> None:
    b = _installed(release, target)
    out = subprocess.run([str(b.path), "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    assert out.splitlines()[0] == b.version_output
    assert f"version {release}." in b.version_output and b.package_version.split(":")[-1] in b.version_output
    assert find_qemu(release, target) == str(b.path)  # a release name works wherever a binary goes
    family = {"x86_64": "pc-i440fx-", "aarch64": "virt-", "s390x": "s390-ccw-virtio-", "ppc64": "pseries-"}[target]
    assert f"{family}{release}" in b.machines


@pytest.mark.qemu
@pytest.mark.parametrize("release", fleet.RELEASES)
def test_a_release_loads_only_its_own_modules(release: str, tmp_path: Path) -> None:
    """-dump-vmstate loads every QOM module: a build that saw the system QEMU's modules (Debian 12's 7.2, in
    /usr/lib/x86_64-linux-gnu/qemu) aborts in module_load_dso (`Only modules from the same build can be loaded`)."""
    b = _installed(release)
    out = tmp_path / "vmstate.json"
    p = subprocess.run([str(b.path), "-machine", "pc", "-nodefaults", "-display", "none", "-dump-vmstate",
                        str(out)], capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr[-500:]
    assert "Only modules from the same build" not in p.stderr
    assert "virtio-net-device" in json.loads(out.read_text())


@pytest.mark.qemu
def test_installing_again_is_a_no_op(capsys: pytest.CaptureFixture[str]) -> None:
    present = sorted({b.release for b in fleet.installed()}, key=fleet.RELEASES.index)
    if not present:
        pytest.skip("no release of the fleet is installed")
    before = {r: fleet.manifest(r) for r in present}
    assert main(["fleet", "install", "--releases", ",".join(present), "--targets", "x86_64"]) == 0
    out = capsys.readouterr().out
    assert all(f"QEMU {r} (x86_64): already installed" in out for r in present), out
    assert {r: fleet.manifest(r) for r in present} == before


@pytest.mark.qemu
@pytest.mark.parametrize(("sig", "group"), [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_an_interrupted_install_leaves_nothing_half_installed(sig: int, group: bool, tmp_path: Path) -> None:
    """A real install into a scratch cache, stopped by a signal to its process group (Ctrl-C) or to its main
    process alone at a random moment (apt-get update, download or unpacking): exit 128+signal within 2 s, one
    line, nothing listed, no scratch folder, no apt-get or dpkg-deb left; the next install completes."""
    if not fleet.shutil.which("apt-get") or not fleet.shutil.which("dpkg-deb"):
        pytest.skip("apt-get and dpkg-deb are needed")
    env = {**os.environ, "VIRTIO_COMPAT_QEMU_CACHE": str(tmp_path)}
    cmd = [sys.executable, "-m", "harness.cli", "fleet", "install", "--releases", "11.1", "--targets", "x86_64"]
    seed = signal_seed()
    at = round(random.Random(seed).uniform(1.0, 3.0), 3)
    r = run_and_signal(cmd, sig, group=group, at=at, env=env, what=f"fleet install, signal at {at} s (seed {seed})")
    r.assert_stopped(sig, "fleet install interrupted; QEMU 11.1 not installed, nothing half-installed")
    assert fleet.installed(tmp_path) == []
    assert not list(tmp_path.glob(".tmp-*")) and not list(tmp_path.glob(".debs/*/.partial-*"))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert [(b.release, b.target) for b in fleet.installed(tmp_path)] == [("11.1", "x86_64")]


def test_a_missing_release_names_the_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VIRTIO_COMPAT_QEMU_CACHE", str(tmp_path))
    with pytest.raises(QemuError, match=r"fleet install --releases 10.0"):
        find_qemu("10.0")
