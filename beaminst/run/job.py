"""A running job, whatever runs it: its state, its messages, cancel.

States are Beam's ``JobState`` names (``PipelineState`` uses the same ones);
messages are the Job API's ``(importance, text)``. Runners feed a
:class:`Job` from their own threads; the watcher reads it from the main one.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# PipelineState.is_terminal (the Job API's TERMINAL_STATES plus UPDATED).
TERMINAL = frozenset({"DONE", "FAILED", "CANCELLED", "DRAINED", "UPDATED"})
UNKNOWN = "UNKNOWN"  # contact with the job was lost: nothing more will be learnt
ERROR = "JOB_MESSAGE_ERROR"
WARNING = "JOB_MESSAGE_WARNING"


@dataclass(frozen=True)
class Message:
    importance: str  # a JobMessage.MessageImportance name, e.g. JOB_MESSAGE_ERROR
    text: str


class Job:
    """State, messages and cancel of one job; subclasses start it and feed it."""

    runner: str = ""

    def __init__(self) -> None:
        self.job_id: str | None = None
        self.states: list[str] = []
        self.messages: list[Message] = []
        self._changed = threading.Condition()
        self._state = "STARTING"

    @property
    def state(self) -> str:
        with self._changed:
            return self._state

    @property
    def errors(self) -> list[str]:
        with self._changed:
            return [m.text for m in self.messages if m.importance == ERROR]

    def set_state(self, state: str) -> None:
        with self._changed:
            if state != self._state or not self.states:
                self.states.append(state)
            self._state = state
            self._changed.notify_all()

    def add_message(self, importance: str, text: str) -> None:
        with self._changed:
            m = Message(importance, text)
            if m not in self.messages[-8:]:  # a runner's retries repeat themselves
                self.messages.append(m)

    def wait(self, seconds: float) -> str:
        """The state after at most ``seconds``, sooner when it becomes terminal
        (or UNKNOWN)."""
        deadline = time.monotonic() + seconds
        with self._changed:
            while self._state not in TERMINAL and self._state != UNKNOWN:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            return self._state

    def cancel(self) -> None:  # pragma: no cover - every runner overrides it
        raise NotImplementedError

    def close(self) -> None:
        """Release what the job holds (threads, channels, worker pools)."""


class _ErrorRecords(logging.Handler):
    """The SDK's ERROR log records, as job messages."""

    def __init__(self, job: Job) -> None:
        super().__init__(logging.ERROR)
        self._job = job

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + "".join(traceback.format_exception(*record.exc_info))
            self._job.add_message(ERROR, text)
        except Exception:  # pragma: no cover - never break a runner over a log line
            pass


@contextlib.contextmanager
def sdk_errors_as_messages(job: Job) -> Iterator[None]:
    """The SDK's ERROR log records while this runs are ``job``'s messages (a
    local runner has no others)."""
    beam_logger = logging.getLogger("apache_beam")
    handler = _ErrorRecords(job)
    beam_logger.addHandler(handler)
    try:
        yield
    finally:
        beam_logger.removeHandler(handler)


@contextlib.contextmanager
def quiet_sdk_logs() -> Iterator[None]:
    """While a job runs in this process (a local runner, or a LOOPBACK worker),
    keep the SDK's log records off stderr: the job's messages say it, in the
    report. With ``beaminst -v`` (INFO) the log stays.

    Not propagating is not enough on its own: a record that meets no handler
    at all goes to ``logging.lastResort``, which prints WARNING and above on
    stderr (a LOOPBACK worker's tracebacks did). A NullHandler is one. And
    the SDK worker also prints a failed bundle's traceback straight to
    ``sys.stderr`` from its own thread (``SdkHarness._execute``), besides
    logging it and returning it to the runner, whose job message it becomes:
    while quiet, only this thread writes to ``sys.stderr``."""
    beam_logger = logging.getLogger("apache_beam")
    propagate = beam_logger.propagate
    quiet = logging.getLogger().getEffectiveLevel() > logging.INFO
    if not quiet:
        yield
        return
    beam_logger.propagate = False
    sink = logging.NullHandler()
    beam_logger.addHandler(sink)
    stderr = sys.stderr
    sys.stderr = _OneThreadOnly(stderr, threading.current_thread())
    try:
        yield
    finally:
        sys.stderr = stderr
        beam_logger.removeHandler(sink)
        beam_logger.propagate = propagate


class _OneThreadOnly:
    """A text stream that passes on what one thread writes, and drops what
    the others do."""

    def __init__(self, stream: Any, owner: threading.Thread) -> None:
        self._stream = stream
        self._owner = owner

    def write(self, text: str) -> int:
        if threading.current_thread() is self._owner:
            return self._stream.write(text)
        return len(text)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding, ...
        return getattr(self._stream, name)
