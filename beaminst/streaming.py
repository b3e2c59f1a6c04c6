"""Reading what a background caching job recorded (Beam's ``StreamingCache``
files: one ``full/<key>`` file of TestStream file records per source)."""

from __future__ import annotations

import os
from typing import Any


def recorded_events(cache_dir: str | None, keys: list[str]) -> tuple[list[Any], list[str]]:
    """TestStream events for ``keys``, merged in time order as Beam's
    ``StreamingCache.Reader`` does; and the keys with nothing recorded (no
    file, or a file without even its header line)."""
    if cache_dir is None:
        return [], list(keys)
    present = [k for k in keys if _has_header(os.path.join(cache_dir, "full", k))]
    missing = [k for k in keys if k not in present]
    if not present:
        return [], missing
    from apache_beam.runners.interactive.caching.streaming_cache import StreamingCache

    from beaminst.errors import CacheDirError

    cache = StreamingCache(cache_dir, is_cache_complete=lambda _pid: True)
    try:
        events = list(cache.read_multiple([("full", k) for k in present], tail=False))
    except Exception as e:
        raise CacheDirError(
            f"full/{{{', '.join(present)}}} is not a StreamingCache recording Beam can read ({type(e).__name__})",
            cache_dir,
        ) from None
    return events, missing


def _has_header(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.readline().endswith(b"\n")
    except OSError:
        return False
