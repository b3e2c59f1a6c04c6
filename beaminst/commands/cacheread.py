"""Reading a PCollection's cache back, in any process.

Beam's ``FileBasedCacheManager.read`` decodes with the pcoder its writer kept
in memory; in a new process it falls back to a default coder that cannot
decode what ``WriteCache`` wrote. beaminst derives the writer's coder from the
saved pipeline instead (:meth:`beaminst.graft.Grafter.written_pcoder`).

Cache files are input like any other: elements are decoded bounds-checked
(:mod:`beaminst.model.safecoders`: Beam's compiled coders read past a crafted
length), an element Beam's coders would decode by unpickling
(``FastPrimitivesCoder``'s fallback for types it does not know) goes through
the restricted unpickler of :mod:`beaminst.model.safepickle`, and the pipeline's own
pickled coders are checked before the SDK loads them, unless
``trust_pickles``. This module lists what :mod:`beaminst.commands.elements`
streams for ``beaminst show``, through the same reader and within its caps
(``BEAMINST_MAX_SHARD_BYTES`` of inflated shards, the line cap).
"""

from __future__ import annotations

from typing import Any


def read_cached_values(
    pipeline: Any, pcoll_id: str, cache_dir: str, key: str, trust_pickles: bool = False
) -> list[Any]:
    """The element values cached for ``pcoll_id`` of ``pipeline`` under ``key``."""
    return [wv.value for wv in read_cached_windowed_values(pipeline, pcoll_id, cache_dir, key, trust_pickles)]


def read_cached_windowed_values(
    pipeline: Any, pcoll_id: str, cache_dir: str, key: str, trust_pickles: bool = False
) -> list[Any]:
    """The ``WindowedValue`` s cached under ``key`` as ``FileBasedCacheManager``
    shards (a recording: none), read as ``beaminst show`` reads them: within
    its caps on inflated shards and lines, each element decoded bounds-checked
    (errors name the shard and the element). Beam's own reader, used here
    before, inflated whatever the shards held."""
    from beaminst.cache.cachedir import scan_cache_dir
    from beaminst.commands.elements import SHARDS, locate, open_elements

    layout, files = locate(scan_cache_dir(cache_dir), key, streaming=False)
    if layout != SHARDS:
        return []
    return list(open_elements(pipeline, pcoll_id, cache_dir, SHARDS, files, trust_pickles).take(None))
