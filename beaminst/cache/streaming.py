"""Reading what a background caching job recorded (Beam's ``StreamingCache``
files: one ``full/<key>`` file of TestStream file records per source).

Each line of a recording is ``quote(FastPrimitivesCoder().encode(record))``
where ``record`` is a serialized ``TestStreamFileHeader`` (first line) or
``TestStreamFileRecord``. Beam's reader decodes a line with
``FastPrimitivesCoder``, which unpickles anything tagged ``0xff``: a crafted
line would run code. beaminst decodes the one form Beam writes (the bytes
tag, then the bytes) and refuses any other; recorded elements stay the encoded
bytes they are and are never decoded. Lines are read in bounded chunks with a
line-length cap, and the whole recording inlined into a TestStream is capped.
The merge in time order is Beam's own ``StreamingCache.Reader``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote_to_bytes

from beaminst.errors import CacheDirError
from beaminst.limits import env_limit

_BYTES_TYPE = 3  # FastPrimitivesCoderImpl's BYTES_TYPE tag
MAX_LINE_BYTES = int(env_limit("BEAMINST_MAX_RECORDING_LINE_BYTES"))
MAX_RECORDING_BYTES = int(env_limit("BEAMINST_MAX_RECORDING_BYTES"))


def require_local(cache_dir: str) -> None:
    """Beam's ``StreamingCache`` (the cache of pipelines with unbounded
    sources) is local only: its sink opens ``<dir>/full/<key>`` with Python's
    ``open`` (and makes the directory when it is built), its reader too. A URL
    would record into a local directory named after it, on each worker."""
    from beaminst.cache.cachefs import is_url

    if is_url(cache_dir):
        raise CacheDirError(
            "Beam's StreamingCache (the cache of pipelines with unbounded sources, and of their recordings) "
            "reads and writes local files only: use a local --cache-dir (on a cluster, a filesystem mounted "
            "at the same path on every worker)",
            cache_dir,
        )


def make_sink_dir(cache_dir: str) -> str | None:
    """Create ``<cache_dir>/full``, where Beam's ``StreamingCacheSink``
    appends. The sink makes it when it is *built* and fails at its first
    bundle when it is missing, so what writes a streaming proto beaminst
    made (instrument, background-caching, batch) makes it, whether the
    templates were built or came from the store, and ``run`` makes it again
    before a job. Returns the directory created, None when it was there;
    an OSError is the caller's to report."""
    full = os.path.join(cache_dir, "full")
    if os.path.isdir(full):
        return None
    os.makedirs(full, exist_ok=True)
    return full


def recorded_events(cache_dir: str | None, keys: list[str]) -> tuple[list[Any], list[str]]:
    """TestStream events for ``keys``, merged in time order as Beam's
    ``StreamingCache.Reader`` does; and the keys with nothing recorded (no
    file, or a file without even its header line)."""
    if cache_dir is None:
        return [], list(keys)
    require_local(cache_dir)
    present = [k for k in keys if has_header(os.path.join(cache_dir, "full", k))]
    missing = [k for k in keys if k not in present]
    if not present:
        return [], missing
    from apache_beam.runners.interactive.caching.streaming_cache import StreamingCache

    budget = [MAX_RECORDING_BYTES]
    readers = [_records(cache_dir, k, budget) for k in present]
    headers = [next(r) for r in readers]
    return list(StreamingCache.Reader(headers, readers).read()), missing


def _records(cache_dir: str, key: str, budget: list[int]) -> Iterator[Any]:
    """The header, then the records, of ``full/<key>``, decoded safely; stops
    at a partial last line (still being written), as Beam's reader does."""
    from beaminst.model.beamproto import interactive_api

    require_local(cache_dir)
    api = interactive_api()
    path = os.path.join(cache_dir, "full", key)
    where = f"full/{key}"
    with open(path, "rb") as f:
        first = True
        while True:
            line = f.readline(MAX_LINE_BYTES + 1)
            if not line.endswith(b"\n"):
                if len(line) > MAX_LINE_BYTES:
                    raise CacheDirError(
                        f"{where} has a line over {MAX_LINE_BYTES} bytes (BEAMINST_MAX_RECORDING_LINE_BYTES raises "
                        "the cap); a StreamingCache recording has one record a line",
                        cache_dir,
                    )
                return
            budget[0] -= len(line)
            if budget[0] < 0:
                raise CacheDirError(
                    f"the recordings to inline exceed {MAX_RECORDING_BYTES} bytes (BEAMINST_MAX_RECORDING_BYTES "
                    "raises the cap); replay large recordings with --test-stream-endpoint instead",
                    cache_dir,
                )
            msg = (api.TestStreamFileHeader if first else api.TestStreamFileRecord)()
            try:
                record = _decode_line(line[:-1])
            except ValueError as e:
                raise CacheDirError(f"{where}: {e}", cache_dir) from None
            try:
                msg.ParseFromString(record)
            except Exception:
                raise CacheDirError(f"{where} is not a StreamingCache recording Beam can read", cache_dir) from None
            first = False
            yield msg


def _decode_line(line: bytes) -> bytes:
    """``SafeFastPrimitivesCoder.decode`` for the one thing a recording holds,
    bytes; any other type tag (``0xff`` is a pickle) is refused, never decoded."""
    raw = unquote_to_bytes(line)
    if not raw or raw[0] != _BYTES_TYPE:
        tag = f"0x{raw[0]:02x}" if raw else "nothing"
        raise ValueError(
            f"a line is tagged {tag}, not bytes, so it is not a StreamingCache record "
            "(beaminst never unpickles recordings)"
        )
    return raw[1:]


def has_header(path: str) -> bool:
    """Whether the file at ``path`` has a whole first line (a recording's header)."""
    try:
        with open(path, "rb") as f:
            return header_line_complete(f)
    except OSError:
        return False


def header_line_complete(f: Any) -> bool:
    """Whether the binary file ``f``, read from its start, has a whole first line (within the line cap)."""
    f.seek(0)
    return f.readline(MAX_LINE_BYTES + 1).endswith(b"\n")


def recorded_records(cache_dir: str, key: str) -> Iterator[Any]:
    """The records of ``full/<key>`` after its header, decoded safely, one at
    a time: for reading a recording back (``beaminst show``), which holds
    nothing, so only the line cap applies, not the inlining total."""
    require_local(cache_dir)
    records = _records(cache_dir, key, [sys.maxsize])
    if next(records, None) is not None:  # the header
        yield from records
