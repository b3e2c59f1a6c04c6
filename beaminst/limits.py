"""The limits a user may raise through the environment, in one table.

Modules read theirs once, at import (:func:`env_limit`), as module constants
that tests can patch. A value that is not a positive number must not surface
as a traceback from whichever import first reads it (for some, building the
CLI itself): :func:`env_limit` keeps the default then, and the CLI refuses
the value, on one line, before any command runs (:func:`check_env_limits`).
Standard library only: the CLI imports this before every command.
"""

from __future__ import annotations

import math
import os

from beaminst.errors import BeaminstError

# name -> (default, what it bounds); the default's type is the value's.
LIMITS: dict[str, tuple[int | float, str]] = {
    "BEAMINST_MAX_DECOMPRESSED_BYTES": (64 << 20, "bytes one pickled payload may inflate to, as --max-decompressed-bytes"),
    "BEAMINST_MAX_SHARD_BYTES": (1 << 30, "bytes one variable's cache shards may inflate to in show"),
    "BEAMINST_MAX_SHARD_LINE_BYTES": (64 << 20, "bytes of one line of a cache shard"),
    "BEAMINST_MAX_RECORDING_BYTES": (1 << 30, "bytes of recordings inlined into a TestStream"),
    "BEAMINST_MAX_RECORDING_LINE_BYTES": (64 << 20, "bytes of one line of a recording"),
    "BEAMINST_MAX_CACHE_ENTRIES": (100_000, "entries listed in a cache directory's full/"),
    "BEAMINST_CACHE_TIMEOUT": (60.0, "seconds a cache filesystem may take to answer"),
}


def _parse(name: str, raw: str) -> int | float | None:
    """The value of ``raw`` for limit ``name``; None when it is not a positive
    number of the limit's kind (a whole number for counts and bytes)."""
    kind = type(LIMITS[name][0])
    try:
        value = kind(raw.strip())
    except ValueError:
        return None
    return value if value > 0 and math.isfinite(value) else None


def env_limit(name: str) -> int | float:
    """Limit ``name`` (a key of :data:`LIMITS`): its environment variable, or
    the default when it is unset or not valid (the CLI refuses the latter)."""
    default = LIMITS[name][0]
    raw = os.environ.get(name, "")
    if not raw.strip():
        return default
    value = _parse(name, raw)
    return default if value is None else value


def check_env_limits() -> None:
    """Refuse, naming it, the first limit set in the environment to anything
    but a positive number."""
    for name, (default, what) in LIMITS.items():
        raw = os.environ.get(name, "")
        if raw.strip() and _parse(name, raw) is None:
            whole = isinstance(default, int)
            raise BeaminstError(
                f"{name}={raw!r} is not a positive {'whole ' if whole else ''}number (it caps the {what}; "
                f"unset it for the default, {default if whole else f'{default:g}'})"
            )
