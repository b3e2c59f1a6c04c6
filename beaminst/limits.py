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
import re

from beaminst.errors import BeaminstError

# name -> (default, what it bounds); the default's type is the value's.
LIMITS: dict[str, tuple[int | float, str]] = {
    "BEAMINST_MAX_PIPELINE_BYTES": (1 << 30, "bytes of a pipeline file (protobuf refuses binary ones past 2 GiB)"),
    "BEAMINST_MAX_DECOMPRESSED_BYTES": (64 << 20, "bytes one pickled payload may inflate to, as --max-decompressed-bytes"),
    "BEAMINST_MAX_SHARD_BYTES": (1 << 30, "bytes one variable's cache shards may inflate to in show"),
    "BEAMINST_MAX_SHARD_LINE_BYTES": (64 << 20, "bytes of one line of a cache shard"),
    "BEAMINST_MAX_RECORDING_BYTES": (1 << 30, "bytes of recordings inlined into a TestStream"),
    "BEAMINST_MAX_RECORDING_LINE_BYTES": (64 << 20, "bytes of one line of a recording"),
    "BEAMINST_MAX_CACHE_ENTRIES": (100_000, "entries listed in a cache directory's full/"),
    "BEAMINST_CACHE_TIMEOUT": (60.0, "seconds a cache filesystem may take to answer"),
}


# ASCII only (int() and float() take '1_000' and other scripts' digits too).
_WHOLE = re.compile(r"\+?[0-9]+")
_DECIMAL = re.compile(r"\+?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# Past these, the standard library overflows where the limits are used
# (readline's size, a thread join's timeout): no real setting is near them.
MAX_WHOLE = 1 << 62
MAX_SECONDS = 10**9  # about 31 years (threading.TIMEOUT_MAX is 2**63 ns on Linux, less elsewhere)


def parse_limit(name: str, raw: str) -> int | float | None:
    """The value of ``raw`` for limit ``name``; None when it is not a positive
    number of the limit's kind (a whole number for counts and bytes) within
    :data:`MAX_WHOLE` / :data:`MAX_SECONDS`."""
    text = raw.strip()
    if isinstance(LIMITS[name][0], int):
        if not _WHOLE.fullmatch(text):
            return None
        whole = int(text)
        return whole if 0 < whole <= MAX_WHOLE else None
    if not _DECIMAL.fullmatch(text):
        return None
    seconds = float(text)
    return seconds if 0 < seconds <= MAX_SECONDS and math.isfinite(seconds) else None


def env_limit(name: str) -> int | float:
    """Limit ``name`` (a key of :data:`LIMITS`): its environment variable, or
    the default when it is unset or not valid (the CLI refuses the latter)."""
    default = LIMITS[name][0]
    raw = os.environ.get(name, "")
    if not raw.strip():
        return default
    value = parse_limit(name, raw)
    return default if value is None else value


def refusal(name: str, raw: str) -> BeaminstError:
    """The error for limit ``name`` set to ``raw``, which :func:`parse_limit` refused."""
    default, what = LIMITS[name]
    whole = isinstance(default, int)
    most = f"at most {MAX_WHOLE}" if whole else f"at most {MAX_SECONDS:g}"
    return BeaminstError(
        f"{name}={raw!r} is not a positive {'whole ' if whole else ''}number, {most} (it caps the {what}; "
        f"unset it for the default, {default if whole else f'{default:g}'})"
    )


def check_env_limits() -> None:
    """Refuse, naming it, the first limit set in the environment to anything
    but a positive number."""
    for name in LIMITS:
        raw = os.environ.get(name, "")
        if raw.strip() and parse_limit(name, raw) is None:
            raise refusal(name, raw)
