"""Typed options of the rewriting passes (instead of loose arguments)."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerOptions:
    """Where the grafted Python transforms will run, and what beaminst may do
    with the Python pieces (pickles) of the pipeline it grafts them into.

    ``environment_type`` / ``environment_config`` are Beam's
    ``--environment_type`` / ``--environment_config``, used only when the
    pipeline has no Python environment of its own; ``target_sdk`` is the
    Python SDK version of the workers, for protos whose environment does not
    say it; ``trust_pickles`` lets the SDK load the pipeline's pickled coders
    and window functions unchecked (that runs code from the file)."""

    environment_type: str | None = None
    environment_config: str | None = None
    target_sdk: str | None = None
    trust_pickles: bool = False


_ENDPOINT = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):([0-9]{1,5})")


def parse_endpoint(value: str) -> str:
    """A TestStreamService address as ``HOST:PORT`` (a name, an IPv4 address or
    a bracketed IPv6 one; port 1-65535), else ValueError. It goes into the
    proto as it is, so nothing else is let through."""
    m = _ENDPOINT.fullmatch(value)
    if not m or not 1 <= int(m[1]) <= 65535 or len(value) > 255:
        raise ValueError(f"{value!r} is not HOST:PORT (for example localhost:12345)")
    return value
