"""Following a job to its end, and stopping a recording at its limits.

Interactive Beam's ``BackgroundCachingJob`` checks its limiters every half
second and cancels the job when one triggers: the ``DurationLimiter`` (a
timer of ``recording_duration``) and the ``SizeLimiter`` (the capture files'
total size reaches ``recording_size_limit``). The same here, for any runner:
the recording is measured every poll, the job cancelled when a limit is
reached, then followed until the runner says it is cancelled (or for
``CANCEL_GRACE`` seconds: Beam too counts a job that is cancelling after a
limit triggered as done).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol

from beaminst.run.job import TERMINAL, UNKNOWN, Job
from beaminst.run.recording import Recording

POLL = 0.25
CANCEL_GRACE = 30.0
MAX_DURATION = "max_duration"
MAX_BYTES = "max_bytes"


@dataclass(frozen=True)
class Limits:
    recording: Recording
    max_duration: float
    max_bytes: int

    def reached(self, elapsed: float, size: int) -> str | None:
        if size >= self.max_bytes:
            return MAX_BYTES
        if elapsed >= self.max_duration:
            return MAX_DURATION
        return None


@dataclass(frozen=True)
class Outcome:
    state: str
    seconds: float
    stopped_by: str | None  # the limit that stopped the recording
    recorded_bytes: int | None
    cancel_unconfirmed: bool  # cancelled, but the runner had not confirmed it after CANCEL_GRACE


class Status(Protocol):
    def update(self, job: Job, elapsed: float, recorded_bytes: int | None) -> None: ...

    def note(self, text: str) -> None: ...


def follow(
    job: Job, limits: Limits | None, status: Status, since: float | None = None, cancel_grace: float = CANCEL_GRACE
) -> Outcome:
    """Watch ``job`` until it ends; with ``limits``, cancel it when one is
    reached. The duration limit counts from now, when the job has started (as
    Beam's timer starts once ``run()`` returned); the seconds reported count
    from ``since`` (a ``time.monotonic()``, default now), e.g. submission."""
    start = time.monotonic()
    since = start if since is None else since
    stopped_by: str | None = None
    give_up_at = 0.0
    cancel_errors: list[Exception] = []
    size: int | None = None
    try:
        while True:
            state = job.wait(POLL)
            now = time.monotonic()
            if limits is not None:
                size = limits.recording.size()
            status.update(job, now - since, size)
            if state in TERMINAL or state == UNKNOWN:
                return Outcome(state, now - since, stopped_by, size, False)
            if stopped_by is None and limits is not None and size is not None:
                stopped_by = limits.reached(now - start, size)
                if stopped_by is not None:
                    status.note(_reached(stopped_by, limits, size))
                    cancel_errors = _cancel_meanwhile(job)
                    give_up_at = time.monotonic() + cancel_grace
            elif stopped_by is not None:
                if cancel_errors:
                    raise cancel_errors[0]
                if now > give_up_at:
                    return Outcome(state, now - since, stopped_by, size, True)
    except KeyboardInterrupt:
        if stopped_by is None:  # else a cancel is under way, in its thread: a second would block as it may
            job.cancel()
        raise


def _cancel_meanwhile(job: Job) -> list[Exception]:
    """``job.cancel()`` in a thread of its own, so the grace counts while it
    runs: the DirectRunner's cancel waits for the job's threads, which a
    source retrying its connection kept for minutes (213 s, against a grace
    of 30). Returns the list its error lands in, for the caller to raise."""
    errors: list[Exception] = []

    def cancel() -> None:
        try:
            job.cancel()
        except Exception as e:  # raised in the following thread
            errors.append(e)

    threading.Thread(target=cancel, name="beaminst-cancel", daemon=True).start()
    return errors


def _reached(which: str, limits: Limits, size: int) -> str:
    if which == MAX_BYTES:
        return f"recording reached {size} bytes (--max-bytes {limits.max_bytes}): cancelling the job"
    return f"recording ran {limits.max_duration:g} s (--max-duration): cancelling the job"
