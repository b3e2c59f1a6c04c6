"""A variable's cached elements, one at a time, from either of Beam's layouts.

* ``FileBasedCacheManager`` shards, ``full/<key>-SSSSS-of-NNNNN``: bz2 text,
  one base64 line per element, each a ``WindowedValue`` encoded with the coder
  ``WriteCache`` saved in the writing process's memory. beaminst derives that
  coder from the proto (:meth:`beaminst.graft.Grafter.written_pcoder`),
  as :mod:`beaminst.commands.cacheread` does.
* ``StreamingCache`` recordings, ``full/<key>``: TestStream file records,
  decoded structurally by :mod:`beaminst.cache.streaming`; each recorded element is
  a ``WindowedValueHolder`` encoded with Beam's ``SafeFastPrimitivesCoder``,
  the coder the TestStream replays it with.

Elements are streamed, never listed: the first ``limit`` are decoded, the rest
only counted, so a cache of any size is shown and counted in constant memory.
Lines are read in bounded chunks (``BEAMINST_MAX_SHARD_LINE_BYTES``, and the
recording line cap of :mod:`beaminst.cache.streaming`). Time is bounded too: a
recording costs what its file holds, but a shard is bz2, and a few KB of it
inflate to gigabytes of lines. So one variable's shards are inflated to at most
``BEAMINST_MAX_SHARD_BYTES`` (1 GiB): past it, counting stops (the total is then
a lower bound) and decoding refuses. Every element is decoded by
:func:`beaminst.model.safecoders.bounded_decoder`: bounds-checked, and with the
restricted unpickler of :mod:`beaminst.model.safepickle` as the pickle fallback of
``FastPrimitivesCoder`` unless ``trust_pickles``.
"""

from __future__ import annotations

import base64
import binascii
import bz2
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

from beaminst.cache.cachedir import CacheDir
from beaminst.cache.cachefs import is_url, list_full, open_file
from beaminst.errors import CacheDirError
from beaminst.limits import env_limit

SHARDS = "shards"
RECORDING = "recording"
LAYOUT_NAMES = {SHARDS: "FileBasedCacheManager shards", RECORDING: "StreamingCache recording"}

MAX_SHARD_LINE_BYTES = int(env_limit("BEAMINST_MAX_SHARD_LINE_BYTES"))
MAX_SHARD_BYTES = int(env_limit("BEAMINST_MAX_SHARD_BYTES"))

_SHARD = re.compile(r"^(?P<stem>.+)-(?P<shard>\d+)-of-(?P<total>\d+)$")


def locate(cache: CacheDir, key: str, streaming: bool) -> tuple[str | None, tuple[str, ...]]:
    """Where ``key``'s cache is: its layout and files (relative to the cache
    directory, in reading order), or ``(None, ())``; what ``analyze`` calls
    cached (``streaming``: the pipeline's caches are Beam's StreamingCache
    ones, a recording first). Shards are those of every complete shard set
    whose stem starts with the key, as Beam's reader globs ``<key>*-*-of-*``;
    a partial set is no cache. A batch pipeline's cache is shards only: a
    file named as its key is nothing its writes make (an empty one was shown
    as a cache of nothing, exit 0, where analyze said missing)."""
    if streaming and cache.is_cached(key, streaming=True):
        return RECORDING, (f"full/{key}",)
    if cache.is_cached(key, streaming=False):
        return SHARDS, _shard_files(cache, key)
    return None, ()


def _shard_files(cache: CacheDir, key: str) -> tuple[str, ...]:
    stems = {s for s in cache.complete if s.startswith(key)}
    found = []
    # A cache dir URL is listed through Beam's filesystem (beaminst.cache.cachefs).
    names = [e.name for e in list_full(cache.path)] if cache.remote else os.listdir(cache.full_dir())
    for name in names:
        m = _SHARD.match(name)
        if m and m["stem"] in stems:
            found.append((m["stem"], int(m["shard"]), name))
    return tuple(f"full/{name}" for _, _, name in sorted(found))


class CachedElements:
    """The elements cached under one key: :meth:`take` decodes the first
    ``limit`` and counts the rest into :attr:`total`."""

    def __init__(
        self, layout: str, cache_dir: str, files: tuple[str, ...], decode: Callable[[bytes], Any]
    ) -> None:
        self.layout = layout
        self.cache_dir = cache_dir
        self.files = files
        self._decode = decode
        self.total: int | None = None  # known once take() has run to the end
        # False when counting stopped at MAX_SHARD_BYTES: total is then a lower bound.
        self.counted_all = True

    def take(self, limit: int | None) -> Iterator[Any]:
        """The first ``limit`` elements (all with ``None``) as ``WindowedValue``
        objects, in file order; run to the end, it also counts the rest."""
        raw = _shard_lines(self.cache_dir, self.files) if self.layout == SHARDS else _recorded(self.cache_dir, self.files)
        n = 0
        try:
            for where, item in raw:
                if limit is None or n < limit:
                    yield self._decoded(where, n, item)
                n += 1
        except _ShardCap as cap:
            if limit is None or n < limit:
                raise CacheDirError(
                    f"{cap.where}: the shards decompress to more than {MAX_SHARD_BYTES} bytes before element {n} "
                    "(a few KB of bz2 can inflate to gigabytes; BEAMINST_MAX_SHARD_BYTES raises the cap)",
                    self.cache_dir,
                ) from None
            self.counted_all = False
        self.total = n

    def _decoded(self, where: str, n: int, item: bytes) -> Any:
        from beaminst.model.safepickle import UntrustedPickleError

        try:
            return self._decode(item)
        except UntrustedPickleError as e:
            raise CacheDirError(f"{where}: element {n}: {e.message}", self.cache_dir) from None
        except Exception as e:  # coders raise anything on bytes they did not write
            from beaminst.model.safecoders import DecodeError

            why = f"{type(e).__name__}: {e}" if isinstance(e, DecodeError) else type(e).__name__
            raise CacheDirError(
                f"{where}: element {n} does not decode with the coder the pipeline declares for it "
                f"({why}); was this cache written by another pipeline?",
                self.cache_dir,
            ) from None


def open_elements(
    proto: Any, pc_id: str, cache_dir: str, layout: str, files: tuple[str, ...], trust_pickles: bool = False
) -> CachedElements:
    """The cached elements of PCollection ``pc_id`` of ``proto`` in ``files``
    (as :func:`locate` gives them)."""
    decode = _recording_decoder(trust_pickles) if layout == RECORDING else _shard_decoder(
        proto, pc_id, cache_dir, trust_pickles
    )
    return CachedElements(layout, cache_dir, files, decode)


def _shard_decoder(proto: Any, pc_id: str, cache_dir: str, trust_pickles: bool) -> Callable[[bytes], Any]:
    from beaminst.graft import Grafter
    from beaminst.model.safecoders import bounded_decoder

    # Checks the pipeline's pickled coders before the SDK loads them (unless trusted).
    pcoder = Grafter(proto, cache_dir, streaming=False, trust_pickles=trust_pickles).written_pcoder(pc_id)
    decode_value = bounded_decoder(pcoder, trust_pickles)

    def decode(line: bytes) -> Any:
        try:
            raw = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("not a base64 line") from None
        return decode_value(raw)

    return decode


def _recording_decoder(trust_pickles: bool) -> Callable[[bytes], Any]:
    from urllib.parse import unquote_to_bytes

    from apache_beam.coders import coders
    from apache_beam.testing.test_stream import WindowedValueHolder

    from beaminst.model.safecoders import bounded_decoder

    decode_holder = bounded_decoder(coders.FastPrimitivesCoder(), trust_pickles)

    def decode(encoded: bytes) -> Any:
        holder = decode_holder(unquote_to_bytes(encoded))  # SafeFastPrimitivesCoder.decode
        if not isinstance(holder, WindowedValueHolder):
            raise TypeError("not a WindowedValueHolder")
        return holder.windowed_value

    return decode


class _ShardCap(Exception):
    """The shards inflated past :data:`MAX_SHARD_BYTES`, in ``where``."""

    def __init__(self, where: str) -> None:
        self.where = where


def _shard_lines(cache_dir: str, files: tuple[str, ...]) -> Iterator[tuple[str, bytes]]:
    """Each line of each bz2 text shard, without its newline, read in chunks
    of at most the line cap; :class:`_ShardCap` once they inflate past
    :data:`MAX_SHARD_BYTES` in all."""
    left = MAX_SHARD_BYTES
    for rel in files:
        try:
            raw = open_file(cache_dir, rel) if is_url(cache_dir) else os.path.join(cache_dir, rel)
            with bz2.open(raw, "rb") as f:
                while True:
                    line = f.readline(MAX_SHARD_LINE_BYTES + 1)
                    if not line:
                        break
                    left -= len(line)
                    if left < 0:
                        raise _ShardCap(rel)
                    if not line.endswith(b"\n") and len(line) > MAX_SHARD_LINE_BYTES:
                        raise CacheDirError(
                            f"{rel} has a line over {MAX_SHARD_LINE_BYTES} bytes (BEAMINST_MAX_SHARD_LINE_BYTES "
                            "raises the cap)",
                            cache_dir,
                        )
                    yield rel, line.rstrip(b"\r\n")
        except (OSError, EOFError, ValueError) as e:
            raise CacheDirError(
                f"{rel} is not a bz2 text shard of Beam's FileBasedCacheManager ({e})", cache_dir
            ) from None


def _recorded(cache_dir: str, files: tuple[str, ...]) -> Iterator[tuple[str, bytes]]:
    """The encoded elements of a recording's element events, in file order."""
    from beaminst.cache.streaming import recorded_records

    for rel in files:
        key = rel[len("full/"):]
        for record in recorded_records(cache_dir, key):
            event = record.recorded_event
            if event.HasField("element_event"):
                for e in event.element_event.elements:
                    yield rel, e.encoded_element
