"""The cyclic garbage collector paused around graph-sized work.

Indexing, matching and drawing a pipeline build hundreds of thousands of
objects and no cycles, and every full collection rescans all that is alive,
the loaded pipelines included: from 5,000 to 20,000 transforms the
collector's time grew 6 to 10x where the diff's own work grew 4x, and the
drawing took 6.3x its 5,000-transform time with the collector on, 4.6x off.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """The collector off for the block (and back on after, if it was on)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
