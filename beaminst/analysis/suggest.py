"""``did you mean ...?`` for names a user typed: variables, unique names, tags."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate most like ``name``, if any is close enough to be a typo.
    A case-insensitive exact match wins (``countwords`` for ``CountWords``)."""
    pool = sorted(set(candidates))
    folded = [c for c in pool if c.casefold() == name.casefold()]
    if folded:
        return folded[0]
    match = difflib.get_close_matches(name, pool, n=1, cutoff=0.6)
    return match[0] if match else None


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` or ``""``, to append to an error."""
    best = closest(name, candidates)
    return f"; did you mean {best!r}?" if best is not None and best != name else ""
