"""One id allocator for every pass: new ids are derived from a readable base
(Prism-style: what the component is for) and never collide with anything in
the pipeline or allocated before. Same input, same ids."""

from __future__ import annotations

import re
from collections.abc import Iterable

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


class IdAllocator:
    def __init__(self, existing: Iterable[str] = ()) -> None:
        self._taken = set(existing)

    def take(self, base: str) -> str:
        """``base`` itself if free, else ``base_1``, ``base_2``, ..."""
        base = _UNSAFE.sub("-", base)
        candidate, n = base, 0
        while candidate in self._taken:
            n += 1
            candidate = f"{base}_{n}"
        self._taken.add(candidate)
        return candidate

    def __contains__(self, item: str) -> bool:
        return item in self._taken


def allocators_for(pipeline: object) -> dict[str, IdAllocator]:
    """Allocators for each component map of ``pipeline``."""
    c = pipeline.components  # type: ignore[attr-defined]
    return {
        "transforms": IdAllocator(c.transforms),
        "pcollections": IdAllocator(c.pcollections),
        "coders": IdAllocator(c.coders),
        "windowing_strategies": IdAllocator(c.windowing_strategies),
        "environments": IdAllocator(c.environments),
    }
