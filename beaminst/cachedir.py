"""Reading the state of a cache directory, in Beam's on-disk layouts.

* ``FileBasedCacheManager`` (bounded pipelines) writes ``full/<key>-SSSSS-of-NNNNN``
  text shards (bz2, base64 lines). A key is cached when its shard set is
  complete; Beam's ``exists`` accepts any matching file, beaminst also
  refuses partial shard sets (a crashed write) so they are rewritten.
* ``StreamingCache`` (pipelines with unbounded sources) writes one file
  ``full/<key>`` of TestStream file records.

The directory is listed once; lookups are then constant time.
"""

from __future__ import annotations

import bisect
import os
import re
from dataclasses import dataclass, field

from beaminst.errors import CacheDirError

_SHARD = re.compile(r"^(?P<key>.+)-(?P<shard>\d+)-of-(?P<total>\d+)$")


@dataclass(frozen=True)
class CacheDir:
    path: str | None
    complete: tuple[str, ...] = ()  # sorted shard-set stems with every shard present
    partial: frozenset[str] = frozenset()  # stems with some shards missing
    streaming: frozenset[str] = frozenset()  # keys with a StreamingCache file
    problems: tuple[str, ...] = field(default=())

    def is_cached(self, key: str, streaming: bool) -> bool:
        if streaming:
            return key in self.streaming
        # Beam globs '<key>*-*-of-*': any complete stem that starts with the key
        # (its own test writer names shards '<key>.-00000-of-00001').
        i = bisect.bisect_left(self.complete, key)
        return i < len(self.complete) and self.complete[i].startswith(key)

    def full_dir(self) -> str:
        assert self.path is not None
        return os.path.join(self.path, "full")


def scan_cache_dir(path: str | None) -> CacheDir:
    """List ``path/full`` once. A missing directory is an empty cache."""
    if path is None:
        return CacheDir(None)
    if os.path.exists(path) and not os.path.isdir(path):
        raise CacheDirError("is not a directory", path)
    full = os.path.join(path, "full")
    if not os.path.exists(full):
        return CacheDir(path)
    if not os.path.isdir(full):
        raise CacheDirError("full is not a directory", path)
    try:
        names = os.listdir(full)
    except PermissionError:
        raise CacheDirError("permission denied listing full/", path) from None
    except OSError as e:
        raise CacheDirError(f"cannot list full/: {e.strerror or e}", path) from None
    shards: dict[str, tuple[int, set[int]]] = {}
    streaming = set()
    problems = []
    for name in names:
        if name.startswith("."):
            continue
        m = _SHARD.match(name)
        if m:
            total = int(m["total"])
            seen_total, seen = shards.setdefault(m["key"], (total, set()))
            if seen_total != total:
                problems.append(f"{m['key']}: shards disagree on their count")
            seen.add(int(m["shard"]))
        else:
            streaming.add(name)
    complete, partial = set(), set()
    for key, (total, seen) in shards.items():
        (complete if seen == set(range(total)) else partial).add(key)
    problems.extend(f"{k}: partial shard set, will be rewritten" for k in sorted(partial))
    return CacheDir(path, tuple(sorted(complete)), frozenset(partial), frozenset(streaming), tuple(problems))
