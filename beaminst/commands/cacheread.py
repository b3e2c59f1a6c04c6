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
``trust_pickles``. :mod:`beaminst.commands.elements` streams them instead of listing
them (``beaminst show``).
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
    from beaminst.errors import CacheDirError
    from beaminst.graft import Grafter
    from beaminst.model.safecoders import DecodeError, bounded_decoder
    from beaminst.model.safepickle import UntrustedPickleError

    grafter = Grafter(pipeline, cache_dir, streaming=False, trust_pickles=trust_pickles)  # only reads the proto
    pcoder = grafter.written_pcoder(pcoll_id)
    grafter.cache_manager.save_pcoder(_Decoder(bounded_decoder(pcoder, trust_pickles)), "reify", key)
    values, _version = grafter.cache_manager.read("full", key)
    try:
        return list(values)
    except UntrustedPickleError as e:
        raise CacheDirError(f"full/{key}*: {e.message}", cache_dir) from None
    except DecodeError as e:
        raise CacheDirError(f"full/{key}*: an element does not decode ({e})", cache_dir) from None


class _Decoder:
    """What ``FileBasedCacheManager.read`` asks of its pcoder: ``decode``."""

    def __init__(self, decode: Any) -> None:
        self.decode = decode
