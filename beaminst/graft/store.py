"""Templates kept on disk, so a new process grafts without the Beam SDK.

A template (a cache write for one shape, a TestStream for one set of tags, a
cache read for one key) is a pure function of what :func:`TemplateStore.key`
names: this format's version, Beam's version, Python's major.minor, a digest
of the beaminst source that builds templates, and what the caller says it
depends on (the shape, the cache directory, the cache manager kind). One
file per key under :func:`store_root`::

    MAGIC | header length (4 bytes, big-endian) | header (JSON) | body (a Pipeline proto)

The header holds the key, the facts :func:`beaminst.graft.subgraph.piece`
needs besides the proto, what it would otherwise derive by inflating the
body's pickles (the coders and transforms the key sits in) and the pieces
each bz2 pickle holding the key is cut into (:func:`beaminst.graft.pickles.template_pieces`),
and a digest of key, facts and body: a process's first graft of a stored
template then costs what its later ones do. Nothing is unpickled: the body's
pickles are copied into outputs as bytes.

The cache is the user's, but beaminst checks it is what it wrote: the store
is refused (templates are built, nothing is written) when its directory is
not the current user's or is group- or world-writable; an entry that is not
the user's, is writable by others, is over :data:`MAX_ENTRY_BYTES`, does not
parse, or whose key or digest does not match, is never used: the template is
built and the entry replaced. Writes go to a temporary file renamed over the
entry (concurrent batch workers write the same entries); past
:data:`MAX_ENTRIES` the least recently used entries are removed.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import stat
import sys
import tempfile
import time
from base64 import b64decode, b64encode
from typing import Any

from beaminst.graft.pickles import pickled_function, remember_pieces, template_pieces
from beaminst.graft.subgraph import Subgraph, piece
from beaminst.model.beamproto import beam_version, runner_api

ENV = "BEAMINST_TEMPLATE_CACHE"
FORMAT = 2
MAGIC = b"beaminst-template\n"
SUFFIX = ".tpl"
MAX_ENTRY_BYTES = 8 << 20
MAX_HEADER_BYTES = 1 << 20
MAX_ENTRIES = 512
_STALE_TEMP_S = 3600.0

# The beaminst source a stored template depends on (relative to beaminst/):
# an edit to any of them is a new key, so the template is rebuilt
# (safepickle.py: a stored write also stands for its pickles having passed
# the check, see Grafter._check_pickles; pickles.py and subgraph.py derive
# the facts an entry keeps beside its body).
_SOURCES = (
    "graft/templates.py", "graft/reified.py", "graft/store.py", "model/labels.py", "graft/ipythonprobe.py",
    "model/safepickle.py", "graft/pickles.py", "graft/subgraph.py",
)


def store_root() -> str | None:
    """``$BEAMINST_TEMPLATE_CACHE`` (``off``: no store), else
    ``$XDG_CACHE_HOME/beaminst/templates``, else ``~/.cache/beaminst/templates``."""
    explicit = os.environ.get(ENV)
    if explicit is not None:
        return None if explicit.strip().lower() == "off" or not explicit.strip() else os.path.abspath(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(os.path.abspath(base), "beaminst", "templates")


@functools.cache
def _source_digest() -> str | None:
    """The digest of the beaminst source that builds templates; None when
    it is not on disk (a zip or bytecode-only install): then no store."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    h = hashlib.sha256()
    for rel in _SOURCES:
        try:
            with open(os.path.join(here, rel), "rb") as f:
                data = f.read()
        except OSError:
            return None
        h.update(rel.encode() + b"\0" + len(data).to_bytes(8, "big") + data)
    return h.hexdigest()


def environment() -> dict[str, Any]:
    """What every key includes: this format, Beam's and Python's versions, and
    the digest of the beaminst source that builds templates (computed once)."""
    return {
        "format": FORMAT,
        "beam": beam_version(),
        "python": f"{sys.version_info[0]}.{sys.version_info[1]}",
        "source": _source_digest(),
    }


class TemplateStore:
    """The entries under ``root``; :meth:`open` gives None when there is no store."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.refused: str | None = None  # why the directory is not used, once known

    @classmethod
    def open(cls) -> TemplateStore | None:
        root = store_root()
        return None if root is None or _source_digest() is None else cls(root)

    @staticmethod
    def key(kind: str, depends_on: dict[str, Any]) -> str:
        """The key of a ``kind`` template built from what ``depends_on`` names
        (JSON values) in this Beam, Python and beaminst."""
        doc = {**environment(), "kind": kind, "depends_on": depends_on}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def _path(self, key: str) -> str:
        return os.path.join(self.root, key + SUFFIX)

    def _usable_dir(self) -> bool:
        """The directory is the user's and nobody else can write to it."""
        if self.refused is not None:
            return False
        try:
            st = os.stat(self.root)
        except FileNotFoundError:
            return True  # nothing stored yet; save() creates it
        except OSError as e:
            self.refused = f"{self.root}: {e.strerror}"
            return False
        self.refused = _not_private(st, "directory", stat.S_ISDIR)
        return self.refused is None

    # -- loading -------------------------------------------------------------

    def load(self, key: str) -> Subgraph | None:
        """The stored template for ``key``; None when there is none or it
        cannot be trusted (it is then rebuilt and saved over)."""
        if not self._usable_dir():
            return None
        try:
            fd = os.open(self._path(key), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if _not_private(st, "entry", stat.S_ISREG) or st.st_size > MAX_ENTRY_BYTES:
                return None
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read(MAX_ENTRY_BYTES + 1)
        finally:
            os.close(fd)
        sub = _decode(data, key)
        if sub is not None:
            with contextlib.suppress(OSError):
                os.utime(self._path(key))  # recently used: kept when the store is trimmed
        return sub

    # -- saving --------------------------------------------------------------

    def save(self, key: str, sub: Subgraph) -> None:
        """Store ``sub`` under ``key`` (atomically; failures are ignored: the
        store only saves time)."""
        self._save_bytes(key, encode(key, sub))

    def _save_bytes(self, key: str, data: bytes) -> None:
        if len(data) > MAX_ENTRY_BYTES:
            return
        try:
            os.makedirs(self.root, mode=0o700, exist_ok=True)
        except OSError:
            return
        if not self._usable_dir():
            return
        try:
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=SUFFIX + ".part", dir=self.root)
        except OSError:
            return
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self._path(key))
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return
        self._trim()

    def _trim(self) -> None:
        """Keep the :data:`MAX_ENTRIES` most recently used entries, and remove
        temporary files a killed writer left."""
        entries: list[tuple[float, str]] = []
        now = time.time()
        try:
            with os.scandir(self.root) as it:
                for e in it:
                    with contextlib.suppress(OSError):
                        mtime = e.stat(follow_symlinks=False).st_mtime
                        if e.name.startswith(".tmp-"):
                            if now - mtime > _STALE_TEMP_S:
                                os.unlink(e.path)
                        elif e.name.endswith(SUFFIX):
                            entries.append((mtime, e.path))
        except OSError:
            return
        if len(entries) <= MAX_ENTRIES:
            return
        entries.sort()
        for _, path in entries[: len(entries) - MAX_ENTRIES]:
            with contextlib.suppress(OSError):
                os.unlink(path)


def _not_private(st: os.stat_result, what: str, is_kind: Any) -> str | None:
    if not is_kind(st.st_mode):
        return f"the {what} is not a {what}"
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        return f"the {what} belongs to uid {st.st_uid}, not to this user"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"the {what} is writable by others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


# ---------------------------------------------------------------------------
# The entry format


def _facts(sub: Subgraph) -> dict[str, Any]:
    return {
        "top": list(sub.top), "placeholder": sub.placeholder, "outputs": dict(sub.outputs), "key": sub.key,
        "key_coders": sorted(sub.key_coders), "rewrite_sites": sorted(sub.rewrite_sites),
        "pickle_pieces": {t: [b64encode(p).decode("ascii") for p in pieces] for t, pieces in _pickle_pieces(sub)},
    }


def _pickle_pieces(sub: Subgraph) -> list[tuple[str, tuple[bytes, ...]]]:
    """(transform, the pieces of its pickled function) for each rewrite site
    whose function is a bz2 pickle holding the key."""
    out = []
    ts, needle = sub.proto.components.transforms, sub.key.encode("utf-8")
    for t in sorted(sub.rewrite_sites):
        fn = pickled_function(ts[t].spec.urn, ts[t].spec.payload) if needle else None
        pieces = None if fn is None else template_pieces(fn, needle)
        if pieces is not None:
            out.append((t, pieces))
    return out


def _remember_pickle_pieces(sub: Subgraph, stored: Any) -> bool:
    """Give :mod:`beaminst.graft.pickles` the pieces an entry holds; False
    when they are not what an entry holds (a list of bz2 streams for a
    rewrite site's pickled function)."""
    if not isinstance(stored, dict):
        return False
    ts, needle = sub.proto.components.transforms, sub.key.encode("utf-8")
    found = []
    for t, pieces in stored.items():
        if t not in sub.rewrite_sites or not isinstance(pieces, list) or len(pieces) < 2:
            return False
        fn = pickled_function(ts[t].spec.urn, ts[t].spec.payload)
        raw = tuple(b64decode(p, validate=True) for p in pieces)
        if fn is None or not all(p == b"" or p.startswith(b"BZh") for p in raw):
            return False
        found.append((fn, raw))
    for fn, raw in found:
        remember_pieces(fn, needle, raw)
    return True


def _digest(key: str, facts: dict[str, Any], body: bytes) -> str:
    h = hashlib.sha256()
    for part in (key.encode(), json.dumps(facts, sort_keys=True).encode(), body):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


def encode(key: str, sub: Subgraph) -> bytes:
    body = sub.proto.SerializeToString(deterministic=True)
    facts = _facts(sub)
    header = json.dumps(
        {"format": FORMAT, "key": key, "piece": facts, "body_bytes": len(body), "sha256": _digest(key, facts, body)},
        sort_keys=True,
    ).encode()
    return MAGIC + len(header).to_bytes(4, "big") + header + body


def _decode(data: bytes, key: str) -> Subgraph | None:
    """The entry in ``data`` if it is whole, is ``key``'s and holds what its
    digest says; else None."""
    start = len(MAGIC) + 4
    if len(data) < start or not data.startswith(MAGIC):
        return None
    size = int.from_bytes(data[len(MAGIC) : start], "big")
    if size > MAX_HEADER_BYTES or len(data) < start + size:
        return None
    try:
        header = json.loads(data[start : start + size])
        body = data[start + size :]
        facts = header["piece"]
        if (
            header["format"] != FORMAT or header["key"] != key or header["body_bytes"] != len(body)
            or header["sha256"] != _digest(key, facts, body)
        ):
            return None
        proto = runner_api().Pipeline.FromString(body)
        top, placeholder, outputs, built_with = facts["top"], facts["placeholder"], facts["outputs"], facts["key"]
        key_coders, sites = facts["key_coders"], facts["rewrite_sites"]
        pcs = proto.components.pcollections
        if not (
            all(isinstance(ids, list) and all(isinstance(t, str) for t in ids) for ids in (top, key_coders, sites))
            and isinstance(built_with, str)
            and (placeholder is None or (isinstance(placeholder, str) and placeholder in pcs))
            and isinstance(outputs, dict) and all(isinstance(v, str) and v in pcs for v in outputs.values())
        ):
            return None
        sub = piece(proto, top, placeholder, outputs, built_with, (key_coders, sites))
        return sub if _remember_pickle_pieces(sub, facts["pickle_pieces"]) else None
    except Exception:  # whatever a damaged entry makes the parsers raise: not trusted
        return None
