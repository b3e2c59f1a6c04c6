"""A recording in progress: where the capture writes record, how big it is,
and what was recorded.

Size is measured as Interactive Beam's ``SizeLimiter`` does for the
background caching job: ``StreamingCache.capture_size``, the sum of the file
sizes of the capture sinks (``<dir>/full/<key>``, 0 while a file does not
exist yet). Elements are counted afterwards from the recording itself,
decoded as ``instrument`` decodes it (never unpickled), when that is cheap.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Any

from beaminst.cache.cachefs import is_url, list_full
from beaminst.cache.streaming import make_sink_dir
from beaminst.errors import BeaminstError, shell_word
from beaminst.run.capture import CacheWrite

COUNT_ELEMENTS_UP_TO = 64 << 20  # bytes of recording read back to count elements


@dataclass(frozen=True)
class Capture:
    write: CacheWrite
    cache_dir: str | None  # where it is measured: --cache-dir, else the one its sink names

    @property
    def path(self) -> str | None:
        return recorded_file(self.cache_dir, self.write.key) if self.cache_dir else None


def recorded_file(cache_dir: str, key: str) -> str:
    """The file a StreamingCache sink of ``key`` in ``cache_dir`` appends to."""
    return os.path.join(cache_dir, "full", key)


@dataclass(frozen=True)
class Recording:
    captures: tuple[Capture, ...]

    @property
    def cache_dir(self) -> str | None:
        """The one directory everything is recorded in, if there is one."""
        dirs = {c.cache_dir for c in self.captures}
        return dirs.pop() if len(dirs) == 1 else None

    def size(self) -> int:
        """Total bytes of the capture files now (Beam's ``capture_size``)."""
        return sum(_size(c.path) for c in self.captures if c.path)

    def summary(self) -> list[dict[str, Any]]:
        """Per key: source, file, bytes and (when cheap) elements recorded."""
        sizes = {c.write.key: _size(c.path) if c.path else None for c in self.captures}
        total = sum(s for s in sizes.values() if s)
        out = []
        for c in self.captures:
            elements = None
            if c.cache_dir and sizes[c.write.key] and total <= COUNT_ELEMENTS_UP_TO:
                elements = _count_elements(c.cache_dir, c.write.key)
            elif sizes[c.write.key] == 0:
                elements = 0
            out.append({
                "key": c.write.key, "pcollection": c.write.pcollection, "source": c.write.producer,
                "path": c.path, "bytes": sizes[c.write.key], "elements": elements,
            })
        return out


def plan_recording(writes: tuple[CacheWrite, ...], cache_dir: str | None) -> tuple[Recording | None, list[str]]:
    """The recording the capture writes among ``writes`` make (None when there
    are none), measured in ``cache_dir`` if given, else where each sink
    writes; and warnings for the person running it."""
    if cache_dir and os.path.exists(cache_dir) and not os.path.isdir(cache_dir):
        from beaminst.errors import CacheDirError

        raise CacheDirError("--cache-dir names a file, not a directory", cache_dir)  # as every command says it
    captures = [w for w in writes if w.capture]
    if not captures:
        # Said, not silently dropped: a cache URL or directory given here
        # changes nothing about where this pipeline's own writes and reads go.
        unused = f"--cache-dir {cache_dir} is not used: it says where a recording is measured, and this pipeline " \
            "records nothing (its cache writes and reads use the directory the proto names)"
        return None, [unused] if cache_dir else []
    warnings: list[str] = []
    if cache_dir:
        from beaminst.cache.streaming import require_local

        require_local(cache_dir)  # recordings are StreamingCache files: local only
    chosen = os.path.abspath(cache_dir) if cache_dir else None
    named = sorted({w.cache_dir for w in captures if w.cache_dir})
    if chosen and named and chosen not in named:
        warnings.append(
            f"the capture writes record into {', '.join(named)}; measuring the recording in --cache-dir {chosen} "
            "(right only if that is the same directory seen from here)"
        )
    recording = Recording(tuple(Capture(w, chosen or w.cache_dir) for w in captures))
    for c in recording.captures:
        if c.path is None:
            warnings.append(
                f"cannot tell where {c.write.unique_name} records (no path found in its sink): "
                "--max-bytes does not count it; pass --cache-dir"
            )
    return recording, warnings


def refuse_appending(writes: tuple[CacheWrite, ...], recording: Recording | None) -> None:
    """A StreamingCache sink appends to its file, and a file holding two
    recordings (a second header) is one Beam's reader refuses whole: the
    first is lost to ``instrument`` and ``show`` too. So every StreamingCache
    write whose file holds bytes is refused, before the job: a recording's
    capture (its file where ``recording`` measures it: under --cache-dir when
    one is given, else where its sink names), and an instrumented
    streaming proto's cache write run a second time (its keys are content
    digests, so they do not change as Interactive Beam's per-run ids do).
    A capture measured under --cache-dir is also refused when the file its
    sink names holds bytes here: that is the file a local job appends to."""
    for c in recording.captures if recording else ():
        own = recorded_file(c.write.cache_dir, c.write.key) if c.write.cache_dir else None
        for path in dict.fromkeys(p for p in (c.path, own) if p):
            size = _size(path)
            if size:
                raise BeaminstError(
                    f"already holds {size} bytes recorded by an earlier run; a second recording would be "
                    "appended and leave a file Beam cannot read. Interactive Beam clears it before recording: "
                    f"rm {shell_word(path)}, then run again (or instrument replays what is there)",
                    path,
                )
    for w in writes:
        if not w.streaming or w.capture or not w.cache_dir or is_url(w.cache_dir):
            continue
        path = recorded_file(w.cache_dir, w.key)
        size = _size(path)
        if size:
            raise BeaminstError(
                f"{w.unique_name} would append to full/{w.key}, which already holds {size} bytes an earlier run "
                "wrote, and leave a file Beam cannot read: instrument the original with --reuse to read it back, "
                f"or rm {shell_word(path)} to write it again",
                w.cache_dir,
            )


def make_sink_dirs(writes: tuple[CacheWrite, ...]) -> list[str]:
    """Create ``<dir>/full`` for every StreamingCache write whose directory is
    known: the sink makes it when it is constructed, that is when the proto
    was built, and fails at its first bundle if it is gone since. The
    directories created."""
    made = []
    for w in writes:
        if w.streaming and w.cache_dir:
            try:
                full = make_sink_dir(w.cache_dir)
            except OSError:
                continue  # the job will say so, in its own words
            if full is not None:
                made.append(full)
    return made


def written_bytes(write: CacheWrite) -> int | None:
    """What a cache write holds now: its StreamingCache file, or its
    FileBasedCacheManager shards (``<key>-SSSSS-of-NNNNN``); None when its
    directory is not known."""
    if write.cache_dir is None:
        return None
    if is_url(write.cache_dir):  # shards on a Beam filesystem (StreamingCache writes are local only)
        try:
            entries = list_full(write.cache_dir)
        except BeaminstError:
            return None
        prefix = write.key + "-"
        return sum(e.size for e in entries if e.name.startswith(prefix) and "-of-" in e.name[len(prefix):])
    full = os.path.join(write.cache_dir, "full")
    if write.streaming:
        return _size(os.path.join(full, write.key))
    try:
        names = os.listdir(full)
    except OSError:
        return 0
    prefix = write.key + "-"
    return sum(_size(os.path.join(full, n)) for n in names if n.startswith(prefix) and "-of-" in n[len(prefix):])


def _size(path: str | None) -> int:
    """The bytes of the regular file at ``path``; 0 for anything else (none
    yet, or a directory in its place, which no recording is)."""
    try:
        st = os.stat(path) if path else None
    except OSError:
        return 0
    return st.st_size if st is not None and stat.S_ISREG(st.st_mode) else 0


def _count_elements(cache_dir: str, key: str) -> int | None:
    from beaminst.cache.streaming import recorded_events

    try:
        events, _missing = recorded_events(cache_dir, [key])
    except (BeaminstError, OSError):
        return None
    return sum(len(e.element_event.elements) for e in events if e.HasField("element_event"))
