"""Reading a PCollection's cache back, in any process.

Beam's ``FileBasedCacheManager.read`` decodes with the pcoder its writer kept
in memory; in a new process it falls back to a default coder that cannot
decode what ``WriteCache`` wrote. beaminst derives the writer's coder from the
saved pipeline instead (:meth:`beaminst.beamgraft.Grafter.written_pcoder`).
"""

from __future__ import annotations

from typing import Any


def read_cached_values(pipeline: Any, pcoll_id: str, cache_dir: str, key: str) -> list[Any]:
    """The element values cached for ``pcoll_id`` of ``pipeline`` under ``key``."""
    return [wv.value for wv in read_cached_windowed_values(pipeline, pcoll_id, cache_dir, key)]


def read_cached_windowed_values(pipeline: Any, pcoll_id: str, cache_dir: str, key: str) -> list[Any]:
    from beaminst.beamgraft import Grafter

    grafter = Grafter(pipeline, cache_dir, streaming=False)  # only reads the proto
    grafter.save_pcoder(pcoll_id, key)
    values, _version = grafter.cache_manager.read("full", key)
    return list(values)
