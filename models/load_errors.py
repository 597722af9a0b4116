"""How a failed load reaches stderr, release by release.

Up to 10.1 every level of the load prints its own line as the failure travels up (error_report): the innermost
first. From 10.2 the vmstate loader builds one Error as it goes (error_setg, then error_prepend at each enclosing
subsection, section and the migration itself), and a line is printed only where a caller ends a chain
(error_report_err: virtio_load, the transports' config and extra-state loaders, the migration's end). The model
describes a failure once, as the frames below from the innermost out, and `render` gives the lines a release
prints (migration/vmstate.c, migration/savevm.c, migration/migration.c of 10.0, 10.2 and 11.x).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass

from models.releases import Version

# 10.2: vmstate_load_state takes an Error (the chain), its prepends carry the return code; 11.0: vmstate_load_vmsd
# returns a bool, the codes go, and a failed section is -EINVAL whatever failed inside it (the 11.1 binary; 11.0
# UNVERIFIED, taken to be 11.1's)
CHAIN_FROM = Version(10, 2)
BOOL_FROM = Version(11, 0)


@dataclass(frozen=True)
class Report:
    """error_report(): printed where it happens, in every release."""
    text: str


@dataclass(frozen=True)
class VersionRefused:
    """vmstate_load_state refuses the incoming version_id of a vmsd."""
    vmsd: str
    version_id: int
    local: int
    minimum: int


@dataclass(frozen=True)
class NoSubsection:
    """vmstate_subsection_load: a subsection with the vmsd's prefix that the release does not know (-ENOENT)."""
    name: str
    parent: str


@dataclass(frozen=True)
class FieldFailed:
    """A field's get() failed (`info` its VMStateInfo; None for a struct field, whose own vmsd said why)."""
    vmsd: str
    field: str
    info: str | None
    ret: int | None = None  # what get() returned, when it is not the failure's own code


@dataclass(frozen=True)
class StreamError:
    """The file's error, checked after a field whose get() itself succeeded."""
    vmsd: str
    field: str


@dataclass(frozen=True)
class InSubsection:
    """The failure happened inside subsection `name` of `parent`."""
    name: str
    parent: str


@dataclass(frozen=True)
class Printed:
    """error_report_err(): a caller prints the chain and ends it (from 10.2; before, every level printed)."""


Frame = Report | VersionRefused | NoSubsection | FieldFailed | StreamError | InSubsection | Printed


def version_message(name: str, version_id: int, local: int, minimum: int, release: Version) -> str:
    """vmstate_load_state's refusal (until 10.2 with two spaces before the minimum, sic)."""
    if version_id > local:
        return f"{name}: incoming version_id {version_id} is too new for local version_id {local}"
    gap = " " if release >= CHAIN_FROM else "  "
    return f"{name}: incoming version_id {version_id} is too old for local minimum version_id{gap}{minimum}"


def render(frames: Sequence[Frame | str], release: Version, err: int = errno.EPERM) -> list[str]:
    """The lines `release` prints for the frames (a str is a Report). `err`: the errno the innermost failure
    returns, which 10.2 prints in its prepends."""
    lines: list[str] = []
    if release < CHAIN_FROM:
        for f in frames:
            if isinstance(f, str):
                lines.append(f)
            elif isinstance(f, Report):
                lines.append(f.text)
            elif isinstance(f, VersionRefused):
                lines.append(version_message(f.vmsd, f.version_id, f.local, f.minimum, release))
            elif isinstance(f, (FieldFailed, StreamError)):
                lines.append(f"Failed to load {f.vmsd}:{f.field}")
        return lines
    return _chained(frames, release, err)[0]


def _chained(frames: Sequence[Frame | str], release: Version, err: int) -> tuple[list[str], str | None]:
    """From 10.2: the lines printed, and the chain still unprinted at the end (the caller's Error)."""
    lines: list[str] = []
    chain: str | None = None
    ret = -err
    codes = release < BOOL_FROM
    for f in frames:
        if isinstance(f, (str, Report)):
            lines.append(f if isinstance(f, str) else f.text)
        elif isinstance(f, VersionRefused):
            chain, ret = version_message(f.vmsd, f.version_id, f.local, f.minimum, release), -errno.EINVAL
        elif isinstance(f, NoSubsection):
            chain, ret = f"VM subsection '{f.name}' in '{f.parent}' does not exist", -errno.ENOENT
        elif isinstance(f, FieldFailed):
            ret = f.ret if f.ret is not None else ret
            if f.info is not None:
                chain = f"Failed to load element of type {f.info} for {f.field}" + (f": {ret}" if codes else "")
        elif isinstance(f, StreamError):
            chain, ret = f"Failed to load {f.vmsd} state: stream error: {-errno.EIO}", -errno.EIO
        elif isinstance(f, InSubsection):
            code = f"{ret}: " if codes else ""
            chain = f"Loading VM subsection '{f.name}' in '{f.parent}' failed: {code}{chain or ''}"
        elif isinstance(f, Printed) and chain is not None:
            lines.append(chain)
            chain = None
    return lines, chain


def section_failed(frames: Sequence[Frame | str], release: Version, err: int, instance_id: int, idstr: str
                   ) -> list[str]:
    """The frames, then qemu_loadvm_section_start_full and the migration giving up on the section (a vmsd whose
    failing field is `frames`' last, unprinted, chain)."""
    if release < CHAIN_FROM:
        return render(frames, release, err) + [
            f"error while loading state for instance 0x{instance_id:x} of device '{idstr}'",
            f"load of migration failed: {os.strerror(err)}"]
    lines, last = _chained(frames, release, err)
    code = errno.EINVAL if release >= BOOL_FROM else err
    return lines + [f"load of migration failed: {os.strerror(code)}: error while loading state for instance "
                    f"0x{instance_id:x} of device '{idstr}': {last or ''}"]


def migration_failed(frames: Sequence[Frame | str], release: Version, chain: str, err: int = errno.EINVAL
                     ) -> list[str]:
    """A failure outside any device's vmsd (a section header, a footer, the main loop): the lines printed on the
    way, then the migration's own line, which from 10.2 carries `chain` (the Error the main loop set)."""
    lines = render(frames, release, err)
    if release < CHAIN_FROM:
        return lines + [f"load of migration failed: {os.strerror(err)}"]
    return lines + [f"load of migration failed: {os.strerror(err)}: {chain}"]
