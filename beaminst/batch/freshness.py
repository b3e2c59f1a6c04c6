"""When an output in DEST is up to date, so a re-run can skip it.

An output is up to date when ``DEST/.beaminst-batch-state.json`` records it
as made by the same job (mode, manifest path, the rewrite options: cache
directory, ``--allow-empty``, ``--reuse``, the worker options, ``--trust-pickles``; the
unbounded-source rules; and the beaminst and Beam versions), from the input and manifest as they are now,
with the cache entries its cache keys match as they are now, and the output
is still the file that was written. Anything else (no record, an unreadable
state file, a file replaced by another run or by hand) means "redo". The
record also keeps what that run reported (counts, warnings), which a skip
reports again.

Only the cache entries of the file's own keys count: a recording or shard
written for another pipeline, or ``full/`` being created, leaves it alone.
Files are compared by inode, size and mtime, never by reading them.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import hashlib
import json
import os
import stat
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from beaminst.analysis.cachewarnings import about_whole_cache_dir
from beaminst.cache.cachefs import is_url, list_full

if TYPE_CHECKING:  # jobs imports file_stamp from here
    from beaminst.batch.jobs import Job, Outcome

STATE_FILE = ".beaminst-batch-state.json"
_VERSION = 1
_MAX_STATE_BYTES = 64 * 1024 * 1024  # far above any real batch: beyond it the record is ignored
_PER_FILE = ("file", "output")  # fields that name the file, not how it is made
_COUNTS = ("writes", "reads", "pruned")
REPORTED = (*_COUNTS, "warnings")  # of a result, kept for the skips that follow


def file_stamp(path: str) -> list[int] | None:
    """[inode, size, mtime_ns], or None when ``path`` does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns]


@functools.cache
def _versions() -> dict[str, str | None]:
    """What else shapes an output: beaminst itself, and the Beam SDK whose
    transforms it grafts (read from package metadata: no SDK import)."""
    from importlib import metadata

    from beaminst import __version__

    try:
        beam = metadata.version("apache-beam")
    except metadata.PackageNotFoundError:
        beam = None
    return {"beaminst": __version__, "apache-beam": beam}


def job_digest(job: Job) -> str:
    how = {k: v for k, v in job.items() if k not in _PER_FILE}
    text = json.dumps({"job": how, "versions": _versions()}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class CacheListing:
    """``CACHE/full`` listed once; digests of the entries a set of keys matches.

    A key matches every entry whose name starts with it: its StreamingCache
    file and its shards (Beam's reader globs ``<key>*``), a superset at worst,
    which can only cause a redo."""

    def __init__(self, cache_dir: str) -> None:
        self._full = os.path.join(cache_dir, "full")
        self._stamps: dict[str, list[int] | None] = {}
        if is_url(cache_dir):  # one listing through Beam's filesystem gives the stamps too
            for e in list_full(cache_dir):
                self._stamps[e.name] = [e.size, int(e.mtime * 1e9)]
            self._names = sorted(self._stamps)
            return
        try:
            self._names = sorted(os.listdir(self._full))
        except OSError:  # no full/ yet: an empty cache
            self._names = []

    def digest(self, keys: Iterable[str]) -> str:
        matched: set[str] = set()
        for key in keys:
            i = bisect.bisect_left(self._names, key)
            while i < len(self._names) and self._names[i].startswith(key):
                matched.add(self._names[i])
                i += 1
        lines = [json.dumps([name, self._stamp(name)]) for name in sorted(matched)]
        return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()

    def _stamp(self, name: str) -> list[int] | None:
        if name not in self._stamps:
            st = file_stamp(os.path.join(self._full, name))
            self._stamps[name] = None if st is None else st[1:]  # a rewrite in place keeps the inode
        return self._stamps[name]


class Freshness:
    """DEST's record: read when planning, given each outcome as it arrives,
    saved at the end (also when interrupted). Input and manifest stamps are
    taken when planning: a file that changes during the run is redone next
    time."""

    def __init__(self, dest: str, cache_dir: str, jobs: Iterable[Job]) -> None:
        self.path = os.path.join(dest, STATE_FILE)
        self._dest = dest
        self._cache = CacheListing(cache_dir)
        self._recorded = _load(self.path)
        self._jobs = {job["file"]: job for job in jobs}
        self._inputs = {
            f: (file_stamp(job["input"]), file_stamp(job["manifest"]) if job["manifest"] else None)
            for f, job in self._jobs.items()
        }
        self._updates: dict[str, dict[str, Any]] = {}

    def up_to_date(self, job: Job) -> bool:
        entry = self._recorded.get(job["file"])
        if not isinstance(entry, dict):
            return False
        inp, man = self._inputs[job["file"]]
        try:
            return (
                inp is not None
                and entry["job"] == job_digest(job)
                and entry["input"] == inp
                and entry["manifest"] == man
                and entry["output"] == file_stamp(job["output"])
                and entry["cache"] == self._cache.digest(_strings(entry["cache_keys"]))
            )
        except (KeyError, TypeError):  # a record of another shape: redo
            return False

    def record(self, outcome: Outcome) -> None:
        res = outcome["result"]
        job = self._jobs.get(res["file"])
        keys, out = outcome["cache_keys"], outcome["output_stamp"]
        if res["status"] != "ok" or job is None or keys is None or out is None:
            return  # nothing written, or nothing to vouch for it with: redone next time
        inp, man = self._inputs[res["file"]]
        self._updates[res["file"]] = {
            "job": job_digest(job), "input": inp, "manifest": man, "output": out,
            "cache_keys": keys, "cache": self._cache.digest(keys),
            "reported": {**{k: res[k] for k in REPORTED},
                         "warnings": [w for w in res["warnings"] if not about_whole_cache_dir(w)]},
        }

    def reported(self, job: Job) -> dict[str, Any]:
        """What the run that wrote an up-to-date output reported about it (its
        counts, and its warnings but those about the cache directory as a
        whole, which the record does not vouch for): the same inputs and own
        cache entries give the same report, so a skip repeats it instead of
        dropping it. Empty for a record that predates it or has another shape."""
        entry = self._recorded.get(job["file"])
        got = entry.get("reported") if isinstance(entry, dict) else None
        if not isinstance(got, dict):
            return {}
        counts = [got.get(k) for k in _COUNTS]
        warnings = got.get("warnings")
        if not all(c is None or (isinstance(c, int) and not isinstance(c, bool)) for c in counts):
            return {}
        if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
            return {}
        return {k: got.get(k) for k in REPORTED}

    def save(self) -> None:
        """Merge this run's records into the file (re-read: another run may
        have saved meanwhile) and write it atomically; records of outputs
        that no longer exist are dropped."""
        from beaminst.model.protoio import write_atomic

        if not self._updates:
            return
        entries = {**_load(self.path), **self._updates}
        entries = {f: e for f, e in entries.items() if os.path.isfile(os.path.join(self._dest, f))}
        doc = {"version": _VERSION, "outputs": entries}
        write_atomic(self.path, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode("utf-8"))
        self._updates.clear()


def _strings(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("cache_keys")
    return value


def _load(path: str) -> dict[str, Any]:
    """The recorded outputs; {} for a missing, oversized or malformed file."""
    with contextlib.suppress(OSError, ValueError, RecursionError):
        st = os.stat(path)
        if stat.S_ISREG(st.st_mode) and st.st_size <= _MAX_STATE_BYTES:  # never open a FIFO
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
            if isinstance(doc, dict) and doc.get("version") == _VERSION and isinstance(doc.get("outputs"), dict):
                return doc["outputs"]
    return {}
