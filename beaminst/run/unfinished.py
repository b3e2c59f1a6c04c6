"""What a job that did not end DONE leaves in its cache writes' directories.

Beam's file sink finalizes a shard set (renames it into place) when its own
write step has finished, whatever happens elsewhere in the job: a job that
FAILED or was cancelled can leave a complete-looking ``<key>-SSSSS-of-NNNNN``
set holding part of its PCollection, or none of it (the step upstream failed
and the write finalized what it had). Every later look at the directory takes
a whole set for a cache: ``analyze`` says cached, ``--reuse`` reads it back,
and the next job ends DONE on wrong data. Interactive Beam marks nothing
computed after a failed job; beaminst removes what the failed job finalized
(its shards are those not in the directory, as they were, before it started),
with the temporary directories its writes left (``beam-temp-<key>-...``,
which no job finishes once this one stopped), and says so.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterable, Mapping

from beaminst.cache.cachedir import BEAM_TEMP
from beaminst.cache.cachefs import is_url
from beaminst.run.capture import CacheWrite

Stats = Mapping[str, tuple[int, int]]  # name under full/ -> (mtime_ns, size)


def _pattern(key: str) -> re.Pattern[str]:
    """A key's shards (``<key>-SSSSS-of-NNNNN``) and its writes' temporary
    directories (Beam's ``beam-temp-<file prefix>-<uuid>``)."""
    k = re.escape(key)
    return re.compile(rf"{k}-\d+-of-\d+|{re.escape(BEAM_TEMP)}{k}-[0-9a-f]+")


def _written(directory: str, key: str) -> dict[str, tuple[int, int]]:
    """What ``key``'s writes make under ``directory``/full: its shards and temporary directories."""
    pattern = _pattern(key)
    try:
        entries = list(os.scandir(os.path.join(directory, "full")))
    except OSError:
        return {}
    out = {}
    for e in entries:
        if pattern.fullmatch(e.name):
            with contextlib.suppress(OSError):
                st = e.stat(follow_symlinks=False)
                out[e.name] = (st.st_mtime_ns, st.st_size)
    return out


def shard_writes(writes: Iterable[CacheWrite]) -> list[CacheWrite]:
    """The writes that finalize shard sets (not recordings, not StreamingCache files)."""
    return [w for w in writes if w.cache_dir and not w.capture and not w.streaming]


def snapshot(writes: Iterable[CacheWrite]) -> dict[str, Stats]:
    """What each local shard write's key has under ``full/`` now, by key."""
    return {w.key: _written(w.cache_dir, w.key) for w in shard_writes(writes) if not is_url(w.cache_dir)}


def discard_unfinished(writes: Iterable[CacheWrite], before: Mapping[str, Stats], state: str) -> list[str]:
    """Remove the shards the job finalized (``state``: how it ended, not DONE);
    the warnings saying what was removed, or what to remove by hand (a
    directory on a Beam filesystem is not listed again here)."""
    removed: dict[str, int] = {}
    remote: set[str] = set()
    for w in shard_writes(writes):
        if is_url(w.cache_dir):
            remote.add(w.cache_dir)
            continue
        old = before.get(w.key, {})
        shards = 0
        for name, st in _written(w.cache_dir, w.key).items():
            if old.get(name) == st:
                continue  # there before the job
            path = os.path.join(w.cache_dir, "full", name)
            if name.startswith(BEAM_TEMP):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
                shards += 1
        if shards:
            removed[w.key] = shards
    warnings = []
    if removed:
        keys = sorted(removed)
        warnings.append(
            f"removed the {sum(removed.values())} shard file(s) the {state} job finalized for {len(keys)} cache "
            f"write(s) ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}): a job that did not finish may have "
            "written part of a PCollection, and a later --reuse would read it as whole; run again to write them"
        )
    for d in sorted(remote):
        warnings.append(
            f"the {state} job may have finalized shard sets in {d}/full holding part of their PCollections: remove "
            "this job's <key>-*-of-* files there before instrumenting with --reuse"
        )
    return warnings
