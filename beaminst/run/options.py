"""What ``beaminst run`` is asked to do, as one typed value."""

from __future__ import annotations

from dataclasses import dataclass

# Interactive Beam's defaults for the background caching job
# (options/capture_control.py: ib.options.recording_duration = 60 s,
# ib.options.recording_size_limit = 1e9 bytes); a test holds them equal.
RECORDING_DURATION = 60.0
RECORDING_SIZE_LIMIT = 1_000_000_000


@dataclass(frozen=True)
class RunOptions:
    """``job_endpoint``: submit through the Job API there (else run locally);
    ``environment_type`` / ``environment_config``: Beam's
    ``--environment_type`` / ``--environment_config`` for the placeholder
    environment at submission (default LOOPBACK for a job server on this
    machine, else Beam's DOCKER); ``pipeline_args``: Beam pipeline options
    (``--flag=value``); ``max_duration`` / ``max_bytes``: recording limits for a
    background caching proto (None: Interactive Beam's defaults);
    ``cache_dir``: where to measure the recording (default: the directory the
    capture writes name); ``timeout``: cancel any job after this many seconds."""

    job_endpoint: str | None = None
    environment_type: str | None = None
    environment_config: str | None = None
    pipeline_args: tuple[str, ...] = ()
    max_duration: float | None = None
    max_bytes: int | None = None
    cache_dir: str | None = None
    timeout: float | None = None

    @property
    def duration_limit(self) -> float:
        return RECORDING_DURATION if self.max_duration is None else self.max_duration

    @property
    def size_limit(self) -> int:
        return RECORDING_SIZE_LIMIT if self.max_bytes is None else self.max_bytes
