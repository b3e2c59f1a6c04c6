"""Typed options of the rewriting passes (instead of loose arguments)."""

from __future__ import annotations

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
