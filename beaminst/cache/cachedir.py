"""Reading the state of a cache directory, in Beam's on-disk layouts.

* ``FileBasedCacheManager`` (bounded pipelines) writes ``full/<key>-SSSSS-of-NNNNN``
  text shards (bz2, base64 lines). A key is cached when its shard set is
  complete; Beam's ``exists`` accepts any matching file, beaminst also
  refuses partial shard sets (a crashed write) and truncated shards (an
  interrupted copy, a full disk) so they are rewritten: Beam's reader takes a
  truncated bz2 shard for a shorter one and the run would read back fewer
  elements without a word.
* ``StreamingCache`` (pipelines with unbounded sources) writes one file
  ``full/<key>`` of TestStream file records.

The directory is listed once; lookups are then constant time. A URL
(``gs://``, ``s3://``...) is listed through Beam's ``FileSystems``
(:mod:`beaminst.cache.cachefs`), the same way.
"""

from __future__ import annotations

import bisect
import bz2
import os
import re
import shlex
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from beaminst.cache import cachefs
from beaminst.errors import CacheDirError

_SHARD = re.compile(r"^(?P<key>.+)-(?P<shard>\d+)-of-(?P<total>\d+)$")


@dataclass(frozen=True)
class CacheDir:
    path: str | None
    complete: tuple[str, ...] = ()  # sorted shard-set stems with every shard present
    partial: frozenset[str] = frozenset()  # stems with some shards missing or truncated
    streaming: frozenset[str] = frozenset()  # keys with a StreamingCache file
    problems: tuple[str, ...] = field(default=())  # about the directory or a file, whatever reads it
    # Damaged shard sets as (stem, fact, what a rewrite of the stem does),
    # worded by :meth:`problems_for`: what happens to them depends on whether
    # the pipeline's bindings use their key.
    keyed_problems: tuple[tuple[str, str, str], ...] = field(default=())
    exists: bool = True  # False: a local path not created yet (a typo, or a first run)
    truncated: frozenset[str] = frozenset()  # of the partial stems, those with no shard missing but one cut short
    # each partial stem's shard files, sorted: what a rewrite removes first
    partial_files: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)

    def refuse_if_too_deep(self) -> None:
        """Raise CacheDirError when the path is ``full/`` itself: named
        ``full``, holding shards and no ``full/`` of its own. A rewrite would
        write its cache into ``full/full/``, where no later run finds it.
        Only a warning otherwise (any directory of ``*-N-of-M`` files, a
        WriteToText output, looks the same), and for what only reads it
        (analyze, show)."""
        problem = next((p for p in self.problems if FULL_ITSELF in p), None)
        named_full = self.path is not None and os.path.basename(os.path.normpath(self.path)) == "full"
        if problem is not None and named_full:
            # Named as the error's source, not twice.
            problem = problem.removeprefix(f"{self.path!r} ")
            raise CacheDirError(f"{problem} (its cache writes would go to full/full/)", self.path)

    def is_cached(self, key: str, streaming: bool) -> bool:
        if streaming:
            return key in self.streaming
        # Beam globs '<key>*-*-of-*': any complete stem that starts with the key
        # (its own test writer names shards '<key>.-00000-of-00001').
        i = bisect.bisect_left(self.complete, key)
        return i < len(self.complete) and self.complete[i].startswith(key)

    def stale_shards(self, key: str) -> tuple[str, ...]:
        """The shard files of ``key`` itself (not of keys it is a prefix of)
        when they are no cache (a partial, damaged or mixed set): what a
        rewrite must remove first, or Beam's reader mixes them with its shards."""
        return self.partial_files.get(key, ())

    def problems_for(self, keys: Iterable[str]) -> tuple[str, ...]:
        """Every problem, worded for a pipeline whose bindings use cache
        ``keys``: a damaged set of one of them will be rewritten; a set
        whose stem only begins with one is read with it (Beam reads
        '<key>*'), and nothing removes it; another pipeline's is left as it
        is."""
        used = set(keys)
        lengths = {len(k) for k in used}

        def worded(stem: str, fact: str, rewrite: str) -> str:
            if stem in used:
                return fact + rewrite
            owner = next((stem[:n] for n in sorted(lengths) if stem[:n] in used), None)
            if owner is not None:
                return f"{fact} (Beam reads it with {owner!r}'s cache, as it reads '<key>*'; rm full/{stem}-* to stop that)"
            return fact + NOT_USED

        return (*self.problems, *(worded(*p) for p in self.keyed_problems))

    def incomplete(self, key: str) -> str:
        """What Beam's '<key>*-*-of-*' finds under ``key`` that is no cache:
        "" (nothing), "truncated" (only sets with a shard cut short) or
        "partial" (shards missing, or sets of different counts mixed)."""
        stems = [stem for stem in self.partial if stem.startswith(key)]
        if not stems:
            return ""
        return "truncated" if all(stem in self.truncated for stem in stems) else "partial"

    @property
    def remote(self) -> bool:
        """On a Beam filesystem URL rather than a local path."""
        return cachefs.is_url(self.path)

    def full_dir(self) -> str:
        assert self.path is not None
        return cachefs.join(self.path, "full")


def full_dir_holding(directory: str, cache_dir: str | None) -> str | None:
    """``cache_dir``'s ``full/``, resolved, when ``directory`` is it or lies
    in it (links followed): Beam's own, where no output of beaminst belongs.
    None for a URL cache, which holds no local directory."""
    if not cache_dir or cachefs.is_url(cache_dir):
        return None
    full = os.path.realpath(os.path.join(cache_dir, "full"))
    return full if is_within(os.path.realpath(directory), full) else None


def is_within(path: str, directory: str) -> bool:
    """``path`` is ``directory`` or lies in it (both absolute and resolved:
    by components, so ``/a/bc`` is not in ``/a/b``)."""
    return os.path.commonpath([path, directory]) == directory


def scan_cache_dir(path: str | None) -> CacheDir:
    """List ``path/full`` once. A missing directory is an empty cache."""
    if path is None:
        return CacheDir(None)
    if not path:
        raise CacheDirError("the cache directory path is empty", "--cache-dir")
    if cachefs.is_url(path):
        # Object stores hold files only: every entry is a candidate cache file.
        listed = {e.name: e.size for e in cachefs.list_full(path) if not e.name.startswith(".")}
        # An object store commits an object whole, so a shard there is short
        # only when it was copied up short; the listing's sizes catch the empty
        # ones without a request per shard.
        return _classify(path, sorted(listed), [], lambda name: listed[name] >= len(EMPTY_BZ2), lambda name: False)
    if os.path.lexists(path) and not os.path.exists(path):
        raise CacheDirError(f"is a symbolic link to {os.readlink(path)}, which does not exist", path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise CacheDirError("--cache-dir names a file, not a directory", path)
    if not os.path.exists(path):
        _check_creatable(path)
        return CacheDir(path, exists=False)
    if not os.access(path, os.R_OK | os.X_OK):
        raise CacheDirError("permission denied reading the cache directory", path)
    full = os.path.join(path, "full")
    if os.path.lexists(full) and not os.path.exists(full):
        raise CacheDirError(f"full is a symbolic link to {os.readlink(full)}, which does not exist", path)
    if not os.path.exists(full):
        return CacheDir(path, problems=_looks_like_full(path) or _looks_like_a_parent(path))
    if not os.path.isdir(full):
        raise CacheDirError("full is not a directory", path)
    try:
        with os.scandir(full) as it:
            entries = sorted(it, key=lambda e: e.name)
    except PermissionError:
        raise CacheDirError("permission denied listing full/", path) from None
    except OSError as e:
        raise CacheDirError(f"cannot list full/: {e.strerror or e}", path) from None
    if not os.access(full, os.R_OK | os.X_OK):
        raise CacheDirError("permission denied reading full/", path)
    names: list[str] = []
    problems: list[str] = []
    leftovers: list[str] = []
    for entry in entries:
        name = entry.name
        if name.startswith("."):
            continue
        if name.startswith(BEAM_TEMP) and entry.is_dir(follow_symlinks=False):
            leftovers.append(name)
            continue
        if not _is_regular_file(entry, path):
            # Beam writes only files here: a directory or a dangling link with a
            # cache file's name is not a cache (and Beam's reader finds no file).
            problems.append(f"full/{name}: not a regular file, ignored")
            continue
        names.append(name)
    if leftovers:
        problems.append(_leftover_temps(leftovers))
    return _classify(
        path, names, problems, lambda name: _bz2_ends(os.path.join(full, name)),
        lambda name: _ends_mid_record(os.path.join(full, name)),
    )


# Beam's FileBasedSink writes each shard under full/beam-temp-<key>-<uuid>/
# first and removes the directory once the write finalises: one left behind
# is a write that did not finish (a failed or cancelled run), or one still going.
BEAM_TEMP = "beam-temp-"


def _leftover_temps(names: list[str]) -> str:
    """One line for all of them: a failed run leaves one per variable it was writing."""
    n = len(names)
    which = names[0] + (f" and {n - 1} more" if n > 1 else "")
    return (
        f"full/: {n} temporary director{'y' if n == 1 else 'ies'} of Beam's file writes ({which}): a write that did "
        "not finish, ignored (safe to delete once no job is writing to this cache)"
    )


FULL_ITSELF = "it looks like the full/ directory itself"


def _looks_like_full(path: str) -> tuple[str, ...]:
    """A --cache-dir one level too deep (``cache/full``) holds the shards
    directly: every key then reads as missing, silently."""
    try:
        with os.scandir(path) as it:
            shard = next((e.name for e in it if _SHARD.match(e.name)), None)
    except OSError:
        return ()
    if shard is None:
        return ()
    parent = os.path.dirname(os.path.abspath(path))
    return (
        f"{path!r} holds cache shards ({shard}) but no full/ directory: {FULL_ITSELF}; pass its parent, "
        f"--cache-dir {shlex.quote(parent)}",
    )


INSIDE_IT = "holds no full/ directory, but a directory in it does"
_PARENT_LOOK = 64  # directory entries looked at: a --cache-dir of a home directory costs no more


def _looks_like_a_parent(path: str) -> tuple[str, ...]:
    """A --cache-dir one level too shallow (the directory that holds the
    cache directory) has no ``full/`` of its own: every key then reads as
    missing, silently. The first few entries are looked at, no more."""
    found = []
    try:
        with os.scandir(path) as it:
            for i, entry in enumerate(it):
                if i >= _PARENT_LOOK:
                    break
                if entry.is_dir() and os.path.isdir(os.path.join(entry.path, "full")):
                    found.append(entry.path)
    except OSError:
        return ()
    if not found:
        return ()
    found.sort()
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return (f"{path!r} {INSIDE_IT}: {found[0]!r}{more}; if that is the cache, pass --cache-dir {shlex.quote(found[0])}",)


def _classify(
    path: str, names: list[str], problems: list[str], whole: Callable[[str], bool], cut: Callable[[str], bool],
) -> CacheDir:
    """The cache state the file names of ``full/`` make; ``whole(name)``
    says whether a shard of an otherwise complete set is not truncated,
    ``cut(name)`` whether a recording ends in a partial record."""
    # key -> shard count -> (shard numbers, file names)
    shards: dict[str, dict[int, tuple[set[int], list[str]]]] = {}
    streaming = set()
    for name in names:
        m = _SHARD.match(name)
        if m:
            seen, files = shards.setdefault(m["key"], {}).setdefault(int(m["total"]), (set(), []))
            seen.add(int(m["shard"]))
            files.append(name)
        else:
            streaming.add(name)
            if cut(name):
                problems.append(f"full/{name}: {CUT_SHORT}")
    complete, partial, truncated, mixed = set(), set(), set(), []
    keyed: list[tuple[str, str, str]] = []
    for key, sets in shards.items():
        if len(sets) > 1:
            # Beam's reader globs '<key>*-*-of-*': every set is read, as one
            # cache (a rewrite with another shard count leaves the old set).
            mixed.append((key, sorted(sets)))
            continue
        ((total, (seen, files)),) = sets.items()
        # seen == {0, ..., total-1}, without materialising a range a junk
        # file name like 'k-0-of-99999999999999999999' would make huge.
        if not (len(seen) == total and max(seen) < total):
            partial.add(key)
            continue
        short = next((f for f in files if not whole(f)), None)
        if short is None:
            complete.add(key)
        else:
            truncated.add(key)
            keyed.append((key, f"full/{short}: {DAMAGED}", ", will be rewritten"))
    keyed.extend((k, f"{k}: partial shard set", ", will be rewritten") for k in sorted(partial))
    for key, totals in sorted(mixed):
        keyed.append((
            key, f"{key}: shard sets {' and '.join(f'-of-{t:05d}' for t in totals)} are mixed (Beam reads them all as one cache)",
            f": not cached; beaminst run removes them before rewriting it (or rm full/{key}-*-of-*)",
        ))
    partial.update(k for k, _ in mixed)
    partial |= truncated
    return CacheDir(
        path, tuple(sorted(complete)), frozenset(partial), frozenset(streaming), tuple(problems),
        keyed_problems=tuple(keyed), truncated=frozenset(truncated),
        partial_files={k: tuple(sorted(f for _, files in shards[k].values() for f in files)) for k in partial},
    )


# A damaged set no binding of the pipeline reads or writes: another
# pipeline's, in a cache directory they share.
NOT_USED = " (no binding of this pipeline uses that key: left as it is)"


# Beam's StreamingCache reader (and beaminst's) stops at a last line with no
# newline, as it would at a record still being written: what was cut off is
# not replayed, and nothing else would say so.
CUT_SHORT = (
    "the recording ends in a partial record (cut short, or still being written): it replays without it"
)


_RECORD_LINE = b"%03"  # quote() of FastPrimitivesCoder's bytes tag: how every line of a recording begins


def _ends_mid_record(path: str) -> bool:
    """Whether a StreamingCache recording has its header line and then bytes
    after its last newline. One byte read at the end; when it is not a
    newline, three at the start, and the first line only when those begin a
    record: a file that does not (a stray file in ``full/``) is no recording,
    and is not read further."""
    from beaminst.cache.streaming import header_line_complete

    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return False
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return False
            f.seek(0)
            if f.read(len(_RECORD_LINE)) != _RECORD_LINE:
                return False  # not a recording: no line of it is read
            # No header yet: nothing recorded, which instrument says on its own.
            return header_line_complete(f)
    except OSError:
        return False


# A shard that fails the end-of-stream check: most often one cut short (an
# interrupted copy, a full disk), else a file that is not bz2 at all.
DAMAGED = "does not end as a bz2 stream does (cut short, or not bz2)"


# What Beam's bz2 text sink writes for an empty shard: the header and the end
# of stream, no block. Every shard it writes ends the same way.
EMPTY_BZ2 = bz2.compress(b"")
_BZ2_END = 0x177245385090  # the 48-bit end-of-stream magic (sqrt(pi))


def _bz2_ends(path: str) -> bool:
    """Whether the file ends as a bz2 stream does: the end-of-stream magic and
    its 32-bit CRC in the last 80 bits before the 0 to 7 padding bits (bz2 is
    bit-packed, so the magic sits at any of 8 bit offsets). Eleven bytes read
    per shard, where decompressing would read the whole cache; a shard cut at
    random ends this way by chance about once in 2^45."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size < len(EMPTY_BZ2):
                return False
            f.seek(size - 11)
            tail = int.from_bytes(f.read(11), "big")
    except OSError:
        return False
    return any(
        tail & ((1 << pad) - 1) == 0 and (tail >> (pad + 32)) & ((1 << 48) - 1) == _BZ2_END for pad in range(8)
    )


def _check_creatable(path: str) -> None:
    """A missing cache directory is an empty cache, created when the pipeline
    runs: fail now if it never can be (an ancestor is a file)."""
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise CacheDirError(f"cannot be created: {parent} is not a directory", path)


def _is_regular_file(entry: os.DirEntry[str], cache_dir: str) -> bool:
    """Whether ``entry`` (links followed) is a regular file. A FIFO, socket or
    device is an error: opening it to look for a recording would block, or
    read a device. Costs no system call for plain files and directories."""
    try:
        if entry.is_file():
            return True
        if entry.is_dir():
            return False
        mode = os.stat(entry.path).st_mode
    except OSError:
        return False  # a dangling link, or an entry that vanished
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):  # pragma: no cover - raced with a rename
        return stat.S_ISREG(mode)
    raise CacheDirError(f"full/{entry.name} is not a regular file (a FIFO, socket or device)", cache_dir)
