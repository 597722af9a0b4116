"""The fleet: real QEMU releases from Debian's archive, installed side by side in a cache folder.

Each release comes from the Debian suite that ships it (5.2 bullseye, 7.2 bookworm, 10.0
bookworm-backports, 11.1 sid). `install()` resolves the package closure with a private apt state
(its own sources list, lists and an empty dpkg status: nothing counts as installed, so the closure
is complete down to the C library), downloads the libraries and QEMU packages with `apt-get
download`, unpacks them with `dpkg-deb -x` into `<cache>/<release>/root`, and writes one wrapper per
binary into `<cache>/<release>/bin`. The wrapper runs QEMU through the release's own dynamic loader
with its own libraries only, so a 5.2 or an 11.1 build runs on this Debian 12 without touching the
system. Beside the loader a `qemu-bundle` link points back at the root: QEMU (7.1 on) then takes its
firmware and loadable modules from there and never from the system QEMU's /usr/lib/.../qemu, whose
modules abort a foreign build in `module_load_dso`; the wrapper also passes `-L` for older builds.

A release is listed only once its manifest is written, and the folder is renamed into place in one
step, so an interrupted install never shows up half-done. Installing again is a no-op.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import interrupt
from harness.errors import QemuError

KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
APT_TIMEOUT = 600.0
CHECK_TIMEOUT = 30.0
# ppc64 (pseries, big-endian by default, bi-endian): installed and checked; the models have no pseries yet
TARGETS = ("x86_64", "aarch64", "s390x", "ppc64")
# What is unpacked of a closure: shared libraries and QEMU's own packages (binaries, firmware, keymaps).
# The rest of an empty-status closure (dpkg, perl-base, systemd, passwd...) is never used by QEMU.
_KEEP = re.compile(r"^(lib.*|qemu-system-.*|seabios|ipxe-qemu)$")


class FleetError(QemuError):
    """A fleet install or lookup that failed: one line saying what."""


@dataclass(frozen=True)
class Source:
    """Where Debian ships a QEMU release: its suites (the first is the base) and the suite to take
    QEMU from when it is not the base (apt's -t)."""

    release: str
    suites: tuple[str, ...]
    pin: str | None = None
    packages: tuple[tuple[str, str], ...] = (
        ("x86_64", "qemu-system-x86"), ("aarch64", "qemu-system-arm"), ("s390x", "qemu-system-misc"),
        ("ppc64", "qemu-system-ppc"))

    def package(self, target: str) -> str:
        return dict(self.packages)[target]


SOURCES = {
    s.release: s
    for s in (
        Source("5.2", ("bullseye",)),
        Source("7.2", ("bookworm", "bookworm-updates")),
        Source("10.0", ("bookworm", "bookworm-backports"), pin="bookworm-backports"),
        # sid split qemu-system-misc: s390x has a package of its own.
        Source("11.1", ("sid",), packages=(("x86_64", "qemu-system-x86"), ("aarch64", "qemu-system-arm"),
                                           ("s390x", "qemu-system-s390x"), ("ppc64", "qemu-system-ppc"))),
    )
}
RELEASES = tuple(SOURCES)
# A machine each target can start for the install check (the board that carries virtio there).
CHECK_MACHINE = {"x86_64": "pc", "aarch64": "virt", "s390x": "s390-ccw-virtio", "ppc64": "pseries"}


def cache_dir() -> Path:
    """$VIRTIO_COMPAT_QEMU_CACHE, else ~/.cache/virtio-compat/qemu (XDG_CACHE_HOME respected)."""
    env = os.environ.get("VIRTIO_COMPAT_QEMU_CACHE")
    if env:
        return Path(env).expanduser().absolute()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "virtio-compat" / "qemu"


def mirror() -> str:
    return os.environ.get("VIRTIO_COMPAT_DEBIAN_MIRROR", DEFAULT_MIRROR).rstrip("/")


def parse_list(text: str | None, known: Sequence[str], what: str) -> list[str]:
    if not text:
        return list(known)
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in known]
    if bad or not items:
        raise FleetError(f"unknown {what} {', '.join(bad) or repr(text)} (the fleet has: {', '.join(known)})")
    return items


# -- what is installed ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Installed:
    """One binary of the fleet, as its manifest records it."""

    release: str
    target: str
    package: str
    package_version: str
    path: Path  # the wrapper
    version_output: str  # the first line `--version` printed
    machines: tuple[str, ...]


def manifest(release: str, cache: Path | None = None) -> dict[str, Any] | None:
    path = (cache or cache_dir()) / release / "manifest.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data


def installed(cache: Path | None = None) -> list[Installed]:
    """Every binary of every fully installed release (a folder without a manifest is not listed)."""
    out = []
    for release in RELEASES:
        m = manifest(release, cache)
        if m is None:
            continue
        for target, t in sorted(m["targets"].items(), key=lambda kv: TARGETS.index(kv[0])):
            out.append(Installed(release, target, t["package"], t["package_version"],
                                 (cache or cache_dir()) / release / t["path"], t["version_output"],
                                 tuple(t.get("machines", ()))))
    return out


def binary(release: str, target: str = "x86_64", cache: Path | None = None) -> Path:
    """The wrapper of a fleet release for a target, or a FleetError saying how to install it."""
    if release not in SOURCES:
        raise FleetError(f"QEMU {release} is not a fleet release (the fleet has: {', '.join(RELEASES)})")
    m = manifest(release, cache)
    if m is None:
        raise FleetError(f"QEMU {release} is not installed in the fleet ({cache or cache_dir()}); "
                         f"run `virtio-compat fleet install --releases {release}`")
    t = m["targets"].get(target)
    if t is None:
        raise FleetError(f"QEMU {release} is installed without the {target} target; run "
                         f"`virtio-compat fleet install --releases {release} --targets {target}`")
    return (cache or cache_dir()) / release / str(t["path"])


# -- apt with a private state ------------------------------------------------------------------------------


class _Apt:
    """apt-get over one release's own sources list and lists, with an empty dpkg status."""

    def __init__(self, source: Source, folder: Path) -> None:
        self.source = source
        self.folder = folder
        (folder / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (folder / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        (folder / "status").touch()
        lines = [f"deb [signed-by={KEYRING}] {mirror()} {suite} main" for suite in source.suites]
        (folder / "sources.list").write_text("\n".join(lines) + "\n")
        user = "root" if os.geteuid() == 0 else ""  # root's apt drops to _apt, which cannot write here
        self.options = [
            "-o", f"Dir::Etc::SourceList={folder / 'sources.list'}", "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State={folder}", "-o", f"Dir::State::Lists={folder / 'lists'}",
            "-o", f"Dir::State::status={folder / 'status'}", "-o", f"Dir::Cache={folder / 'cache'}",
            "-o", "Debug::NoLocking=1", "-o", "Acquire::Retries=2", "-o", "Acquire::http::Timeout=30",
            *(["-o", f"APT::Sandbox::User={user}"] if user else []),
        ]  # fmt: skip

    def run(self, *args: str, cwd: Path | None = None, what: str) -> str:
        if shutil.which("apt-get") is None:
            raise FleetError("apt-get not found: the fleet is installed from Debian's archive with apt")
        try:
            p = subprocess.run(["apt-get", *self.options, *args], cwd=cwd, capture_output=True, text=True,
                               timeout=APT_TIMEOUT, stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            raise FleetError(f"QEMU {self.source.release}: {what} took more than {APT_TIMEOUT:.0f} s") from None
        errors = [line[3:] for line in p.stderr.splitlines() if line.startswith(("E: ", "W: Failed", "Err:"))]
        if p.returncode != 0 or any(line.startswith(("E: ", "W: Failed")) for line in p.stderr.splitlines()):
            reason = errors[0] if errors else (p.stderr.strip().splitlines() or ["apt-get failed"])[-1]
            if "Could not" in reason or "Failed to fetch" in reason or "Temporary failure" in reason:
                reason = f"cannot reach Debian's archive at {mirror()}: {reason}"
            raise FleetError(f"QEMU {self.source.release}: {what}: {reason}")
        return p.stdout

    def update(self) -> None:
        self.run("update", what=f"apt-get update of {', '.join(self.source.suites)}")

    def closure(self, packages: Sequence[str]) -> list[tuple[str, str]]:
        """(name, version) of every package `packages` need, nothing counted as installed."""
        pin = ["-t", self.source.pin] if self.source.pin else []
        out = self.run("-s", "install", "--no-install-recommends", *pin, *packages,
                       what=f"resolving {' '.join(packages)} in {self.source.suites[-1]}")
        return parse_simulation(out)

    def download(self, packages: Iterable[tuple[str, str]], into: Path) -> list[Path]:
        want = [(n, v) for n, v in packages if not _deb_for(into, n, v)]
        if want:
            # into a scratch folder first: a download cut short never leaves a truncated .deb to reuse
            scratch = Path(tempfile.mkdtemp(prefix=".partial-", dir=into))
            try:
                self.run("download", *(f"{n}={v}" for n, v in want), cwd=scratch, what="downloading")
                for deb in scratch.glob("*.deb"):
                    deb.rename(into / deb.name)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        found = [_deb_for(into, n, v) for n, v in packages]
        missing = [n for (n, _), p in zip(packages, found, strict=True) if p is None]
        if missing:
            raise FleetError(f"QEMU {self.source.release}: apt-get download left out {', '.join(missing)}")
        return [p for p in found if p is not None]


_INST = re.compile(r"^Inst (\S+) (?:\[[^\]]*\] )?\((\S+) ")


def parse_simulation(text: str) -> list[tuple[str, str]]:
    """The (package, version) pairs of `apt-get -s install`'s `Inst` lines."""
    return [(m.group(1), m.group(2)) for m in map(_INST.match, text.splitlines()) if m]


def _deb_for(folder: Path, name: str, version: str) -> Path | None:
    # apt-get download names files NAME_VERSION_ARCH.deb with the epoch's colon quoted as %3a
    quoted = version.replace(":", "%3a")
    for p in folder.glob(f"{name}_*.deb"):
        if p.name.startswith(f"{name}_{quoted}_") or p.name.startswith(f"{name}_{version}_"):
            return p
    return None


# -- unpacking, wrappers, checks -------------------------------------------------------------------------


def _inside(root: Path, path: Path) -> Path:
    """`path` (inside `root`) with its symlinks resolved inside `root`: an absolute link target is taken
    as relative to the root, as it would be on the system the package was made for."""
    rel = path.relative_to(root)
    current = root
    for part in rel.parts:
        current = current / part
        hops = 0
        while current.is_symlink():
            hops += 1
            if hops > 40:
                raise FleetError(f"symlink loop at {current}")
            target = os.readlink(current)
            current = (root / target.lstrip("/")) if target.startswith("/") else (current.parent / target)
            current = Path(os.path.normpath(current))
    return current


def _loader(root: Path) -> Path:
    for rel in ("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"):
        if (root / rel).exists() or (root / rel).is_symlink():
            real = _inside(root, root / rel)
            if real.is_file():
                return real
    raise FleetError(f"no dynamic loader ld-linux-x86-64.so.2 in {root}")


def _library_dirs(root: Path) -> list[str]:
    dirs = [d for d in ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu") if (root / d).is_dir()]
    return [d for d in dirs if not (root / d).is_symlink()]  # usrmerge: /lib is a link in newer roots


_WRAPPER = """#!/bin/sh
# {what}: run by its own dynamic loader with its own libraries, firmware and modules (virtio-compat fleet).
root="$(dirname "$(readlink -f "$0")")/../root"
exec "$root/{loader}" --library-path "{libs}" "$root/usr/bin/{binary}" -L "$root/usr/share/qemu" "$@"
"""


def write_wrapper(folder: Path, root: Path, binary_name: str, what: str) -> Path:
    loader = _loader(root)
    bundle = loader.parent / "qemu-bundle"
    if not bundle.exists():
        bundle.symlink_to(os.path.relpath(root, loader.parent))
    libs = ":".join(f"$root/{d}" for d in _library_dirs(root))
    path = folder / "bin" / binary_name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_WRAPPER.format(what=what, loader=loader.relative_to(root), libs=libs, binary=binary_name))
    path.chmod(0o755)
    return path


def check_binary(path: Path, release: str, target: str) -> tuple[str, tuple[str, ...]]:
    """Run the wrapper: `--version` must name the release, `-machine help` lists the machine types, and a
    paused VM of the target's board must start and quit over QMP. The first line `--version` printed and the
    machine types."""
    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run([str(path), *args], capture_output=True, text=True, timeout=CHECK_TIMEOUT,
                                  input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise FleetError(f"QEMU {release} {target}: {path} does not run: {exc}") from None

    p = run("--version")
    first = (p.stdout.strip().splitlines() or [""])[0]
    m = re.search(r"version (\d+)\.(\d+)", first)
    if p.returncode != 0 or not m or f"{m.group(1)}.{m.group(2)}" != release:
        said = first or (p.stderr.strip().splitlines() or ["nothing"])[-1]
        raise FleetError(f"QEMU {release} {target}: `{path.name} --version` printed {said!r}")
    machines = tuple(sorted(line.split()[0] for line in run("-machine", "help").stdout.splitlines()[1:]
                            if line.strip() and not line.startswith(" ")))
    qmp = '{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n'
    p = run("-machine", f"{CHECK_MACHINE[target]},accel=tcg", "-nodefaults", "-display", "none", "-S",
            "-qmp", "stdio", stdin=qmp)
    if p.returncode != 0:
        tail = (p.stderr.strip().splitlines() or [f"exit code {p.returncode}"])[-1]
        raise FleetError(f"QEMU {release} {target}: a paused {CHECK_MACHINE[target]} VM does not start: {tail}")
    return first, machines


# -- install ---------------------------------------------------------------------------------------------


@dataclass
class InstallResult:
    release: str
    targets: tuple[str, ...]
    already: bool
    seconds: float
    download_bytes: int


def _lock(cache: Path) -> int:
    import fcntl

    cache.mkdir(parents=True, exist_ok=True)
    fd = os.open(cache / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)  # two installs at once take turns
    return fd


def install(release: str, targets: Sequence[str], cache: Path | None = None, progress: Any = None) -> InstallResult:
    """Install (or keep) one release for `targets`; a target installed before is kept too."""
    cache = cache or cache_dir()
    source = SOURCES[release]
    say = progress or (lambda text: None)
    begin = time.monotonic()
    fd = _lock(cache)
    try:
        old = manifest(release, cache)
        have = set(old["targets"]) if old else set()
        if old and set(targets) <= have and all((cache / release / t["path"]).exists()
                                                for t in old["targets"].values()):
            return InstallResult(release, tuple(targets), True, time.monotonic() - begin, 0)
        for stale in cache.glob(f".tmp-{release}-*"):  # left by an install that was killed
            shutil.rmtree(stale, ignore_errors=True)
        want = sorted(set(targets) | have, key=TARGETS.index)
        apt = _Apt(source, cache / ".apt" / release)
        say(f"QEMU {release}: apt-get update ({', '.join(source.suites)})")
        apt.update()
        packages = [source.package(t) for t in want]
        closure = [(n, v) for n, v in apt.closure(packages) if _KEEP.match(n)]
        versions = dict(closure)
        debs_dir = cache / ".debs" / release
        debs_dir.mkdir(parents=True, exist_ok=True)
        for stale in debs_dir.glob(".partial-*"):  # a download that was killed
            shutil.rmtree(stale, ignore_errors=True)
        say(f"QEMU {release}: downloading {len(closure)} packages")
        debs = apt.download(closure, debs_dir)
        for old_deb in set(debs_dir.glob("*.deb")) - set(debs):
            old_deb.unlink()  # superseded versions
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{release}-", dir=cache))
        try:
            root = tmp / "root"
            root.mkdir()
            say(f"QEMU {release}: unpacking {len(debs)} packages")
            _unpack(debs, root)
            targets_out: dict[str, Any] = {}
            for t in want:
                binary_name = f"qemu-system-{t}"
                if not (root / "usr" / "bin" / binary_name).exists():
                    raise FleetError(f"QEMU {release}: {source.package(t)} has no {binary_name}")
                pkg = source.package(t)
                wrapper = write_wrapper(tmp, root, binary_name, f"QEMU {release} ({pkg} {versions[pkg]}) for {t}")
                say(f"QEMU {release}: checking {binary_name}")
                first, machines = check_binary(wrapper, release, t)
                targets_out[t] = {"package": pkg, "package_version": versions[pkg],
                                  "path": str(wrapper.relative_to(tmp)), "version_output": first,
                                  "machines": list(machines)}
            record = {"release": release, "suites": list(source.suites), "mirror": mirror(),
                      "targets": targets_out, "packages": dict(closure),
                      "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      "seconds": round(time.monotonic() - begin, 1)}
            (tmp / "manifest.json").write_text(json.dumps(record, indent=1) + "\n")
            _replace(tmp, cache / release)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        size = sum(p.stat().st_size for p in debs)
        return InstallResult(release, tuple(want), False, time.monotonic() - begin, size)
    finally:
        os.close(fd)


def _unpack(debs: Sequence[Path], root: Path) -> None:
    def one(deb: Path) -> str | None:
        p = subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], capture_output=True, text=True, check=False)
        return None if p.returncode == 0 else f"{deb.name}: {p.stderr.strip()}"

    if shutil.which("dpkg-deb") is None:
        raise FleetError("dpkg-deb not found: the fleet unpacks Debian packages with it")
    with ThreadPoolExecutor(4) as pool:
        try:
            errors = [e for e in pool.map(one, debs) if e]
        except KeyboardInterrupt:
            pool.shutdown(cancel_futures=True)  # the unpacks running end (they are short), no new one starts
            raise
    if errors:
        raise FleetError(f"cannot unpack {errors[0]}")


def _replace(new: Path, final: Path) -> None:
    """Move a finished install into place in one rename; the release it replaces goes after."""
    with interrupt.deferred():  # a Ctrl-C between the two renames would leave no release at all
        if final.exists():
            old = final.with_name(f".tmp-{final.name}-old")
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
            new.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            new.rename(final)


def remove(release: str, cache: Path | None = None) -> bool:
    cache = cache or cache_dir()
    fd = _lock(cache)
    try:
        found = (cache / release).exists()
        if found:
            (cache / release / "manifest.json").unlink(missing_ok=True)  # unlisted first
            shutil.rmtree(cache / release, ignore_errors=True)
        shutil.rmtree(cache / ".debs" / release, ignore_errors=True)
        return found
    finally:
        os.close(fd)
