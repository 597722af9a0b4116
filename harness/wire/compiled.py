"""Compiled payload parsers, built once and kept in the user's cache folder.

construct's compile() writes Python source for a layout and compiles it, about 5 ms a layout: a short command
such as `decode` of one stream paid it on every run. The code object is kept on disk with what lets a later
process reuse it. The source names the pieces construct cannot compile ("linked": Python conditions, subsection
lists) by their id() in the process that compiled it, so each is recorded by its position in a walk of the layout
and bound to the piece at that position in the new process's layout.

An entry is used only when it was made from the same layout: its file name carries the layout's name and a digest
of the layout declarations (the sources of harness/wire), construct's version and Python's bytecode magic, and the
entry holds a fingerprint of the layout's tree (each piece's type, name and plain values, in walk order) and a
checksum of itself. Anything that does not check out (a truncated or foreign file, another layout) is compiled
afresh and rewritten, so a stale or corrupt cache costs time, never a wrong decode. A folder that cannot be
written is no error: the parser is compiled in memory as before.

$VIRTIO_COMPAT_PARSER_CACHE names the folder (empty: keep nothing on disk); the default is
~/.cache/virtio-compat/parsers ($XDG_CACHE_HOME respected).
"""

from __future__ import annotations

import hashlib
import importlib.util
import marshal
import os
import sys
import time
import types
from typing import Any

import construct as c

FORMAT = b"virtio-compat parsers 1\n"
_PLAIN = (int, str, bytes, float, bool, type(None))


def cache_dir() -> str | None:
    """Where compiled parsers are kept, or None when $VIRTIO_COMPAT_PARSER_CACHE is set empty. (Paths are strings
    here: pathlib is a tenth of what decode imports.)"""
    folder = os.environ.get("VIRTIO_COMPAT_PARSER_CACHE")
    if folder is not None:
        return folder or None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "virtio-compat", "parsers")


_DIGEST: list[str] = []


def declarations_digest() -> str:
    """What the in-tree layouts are made from: harness/wire's sources, construct (whose compile writes the code)
    and the Python that compiled it (a code object is only valid for its own bytecode)."""
    if not _DIGEST:
        h = hashlib.sha256(FORMAT)
        h.update(f"{c.version_string}\0{sys.implementation.cache_tag}\0".encode())
        h.update(importlib.util.MAGIC_NUMBER)
        here = os.path.dirname(os.path.abspath(__file__))
        for name in sorted(n for n in os.listdir(here) if n.endswith(".py")):
            with open(os.path.join(here, name), "rb") as f:
                h.update(name.encode() + b"\0" + f.read() + b"\0")
        _DIGEST.append(h.hexdigest()[:20])
    return _DIGEST[0]


def walk(layout: Any) -> list[Any]:
    """The construct pieces of a layout, depth first in attribute order, each once (deterministic: attributes and
    dicts keep their order; sets and private attributes are never followed)."""
    out: list[Any] = []
    seen: set[int] = set()

    def visit(x: Any) -> None:
        if isinstance(x, c.Construct):
            if id(x) in seen:
                return
            seen.add(id(x))
            out.append(x)
            for k, v in vars(x).items():
                if not k.startswith("_"):  # a piece's private attributes are its run-time caches
                    visit(v)
        elif isinstance(x, list | tuple):
            for v in x:
                visit(v)
        elif isinstance(x, dict):
            for v in x.values():
                visit(v)

    visit(layout)
    return out


def fingerprint(nodes: list[Any]) -> bytes:
    """The shape of a layout (the output of walk()): each piece's type, its plain values (names, sizes, formats,
    expressions, the names of its Python functions) and which pieces it holds, by their place in the walk."""
    at = {id(n): i for i, n in enumerate(nodes)}

    def shown(v: Any) -> str:
        if isinstance(v, c.Construct):
            return f"@{at.get(id(v), '?')}"
        if isinstance(v, _PLAIN) or isinstance(v, c.ExprMixin):
            return repr(v)
        if isinstance(v, list | tuple):
            return "[" + ",".join(shown(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ",".join(f"{k!r}:{shown(x)}" for k, x in v.items()) + "}"
        return getattr(v, "__qualname__", type(v).__qualname__)

    h = hashlib.sha256()
    for n in nodes:
        h.update(f"{type(n).__module__}.{type(n).__qualname__}".encode())
        for k, v in vars(n).items():
            if not k.startswith("_"):  # run-time caches (FlatArray's structs by count), as in walk()
                h.update(f"\0{k}={shown(v)}".encode())
        h.update(b"\n")
    return h.digest()


def _bind(layout: Any, source: str, code: types.CodeType, linked: dict[int, Any]) -> Any:
    """The Compiled construct of `layout` from its compiled source: what construct's compile() returns."""
    modulename = hashlib.sha1(source.encode()).hexdigest()
    module = importlib.util.module_from_spec(importlib.machinery.ModuleSpec(modulename, None))
    exec(code, module.__dict__)
    fields = {i: c.extractfield(x) for i, x in linked.items()}
    namespace = vars(module)  # what the generated functions read as globals
    namespace["linkedinstances"] = fields
    namespace["linkedparsers"] = {i: f._parse for i, f in fields.items()}
    namespace["linkedbuilders"] = {i: f._build for i, f in fields.items()}
    compiled = module.compiled
    compiled.source, compiled.module, compiled.modulename, compiled.defersubcon = source, module, modulename, layout
    return compiled


def _load(path: str, layout: Any, nodes: list[Any]) -> Any | None:
    """The cached parser of `layout`, or None when the entry is missing or does not check out."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError:
        return None
    head = len(FORMAT) + 32  # the format line, then the checksum of the rest
    if len(blob) <= head or not blob.startswith(FORMAT) or \
            hashlib.sha256(blob[head:]).digest() != blob[len(FORMAT):head]:
        return None
    try:
        shape, source, code, linked = marshal.loads(blob[head:])
        if shape != fingerprint(nodes) or not isinstance(code, types.CodeType):
            return None
        ids = {}
        for old_id, at, kind in linked:
            node = nodes[at]
            if type(node).__qualname__ != kind:
                return None
            ids[old_id] = node
        return _bind(layout, source, code, ids)
    except Exception:  # noqa: BLE001 (whatever a damaged entry does, it is compiled afresh)
        return None


def _store(path: str, layout: Any, nodes: list[Any], compiled: Any) -> None:
    at = {id(n): i for i, n in enumerate(nodes)}
    # construct records each linked piece by the id() it compiled it under (extractfield's, a Renamed unwrapped)
    linked = []
    for old_id in compiled.module.linkedinstances:
        if old_id not in at:
            return  # a piece outside the walk: this layout is not kept (it still parses, compiled in memory)
        linked.append((old_id, at[old_id], type(nodes[at[old_id]]).__qualname__))
    code = compile(compiled.source, "", "exec")
    body = marshal.dumps((fingerprint(nodes), compiled.source, code, tuple(linked)))
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    try:
        os.makedirs(folder, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(FORMAT + hashlib.sha256(body).digest() + body)
        os.replace(tmp, path)  # whole or not at all, whoever else writes it at the same time
        # entries of other declarations go once unused for a while: two checkouts sharing the folder keep theirs
        stem, week = name.rsplit("-", 1)[0] + "-", time.time() - 7 * 86400
        for other in os.listdir(folder):
            there = os.path.join(folder, other)
            if other.startswith(stem) and "-" not in other[len(stem):] and os.stat(there).st_atime < week:
                os.unlink(there)
    except OSError:
        pass  # a folder that cannot be written: the parser was compiled in memory, which is all it needs
    finally:
        if os.path.exists(tmp):  # not renamed: an error, or a signal in between
            os.unlink(tmp)


def compile_cached(layout: Any, name: str) -> Any:
    """layout.compile(), from the cache folder when an entry for `name` made from the same layout is there."""
    folder = cache_dir()
    try:
        digest = declarations_digest()
    except OSError:  # sources that cannot be read (a zipped install): nothing to key an entry on
        folder = None
    if folder is None:
        return layout.compile()
    path = os.path.join(folder, f"{name}-{digest}.bin")
    nodes = walk(layout)
    compiled = _load(path, layout, nodes)
    if compiled is None:
        compiled = layout.compile()
        _store(path, layout, nodes, compiled)
    return compiled
