"""The unique-name prefixes of what instrument and background-caching graft.

Beam's own labels (``caching.reify``'s ``WriteCache_``, ``ReifyBefore_``,
``UnreifyAfter_``; ``PipelineInstrument``'s ``ReadCache_``; its TestStream):
the grafting passes spell them, diff tells instrumented transforms by them,
graph collapses cache subgraphs by them. One table, so they cannot drift.
"""

from __future__ import annotations

from collections.abc import Iterable

WRITE_CACHE = "WriteCache_"  # + cache key: the top-level write composite
READ_CACHE = "ReadCache_"  # + cache key: the top-level read composite
REIFY_BEFORE = "ReifyBefore_"  # + WRITE_CACHE + key: the leaf before a write
UNREIFY_AFTER = "UnreifyAfter_"  # + READ_CACHE + key: the leaf after a read
TEST_STREAM = "TestStream"

# Top-level composites, by the kind graph labels them with.
CACHE_COMPOSITES = {WRITE_CACHE: "cache write", READ_CACHE: "cache read"}
# The leaf each composite has beside it.
CACHE_STEPS = (REIFY_BEFORE, UNREIFY_AFTER)
# Every name a graft gives.
INSTRUMENTED_PREFIXES = (
    WRITE_CACHE, REIFY_BEFORE + WRITE_CACHE, READ_CACHE, UNREIFY_AFTER + READ_CACHE, TEST_STREAM,
)


def holds_cache_transforms(unique_names: Iterable[str]) -> bool:
    """Whether any of ``unique_names`` is a cache write or read beaminst grafts
    (an instrumented output, given back as an input)."""
    prefixes = tuple(CACHE_COMPOSITES)
    return any(name.startswith(prefixes) for name in unique_names)
