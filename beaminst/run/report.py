"""What a run did: the result ``run --json`` prints and the CLI's exit code follows."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from beaminst.errors import printable
from beaminst.run.job import ERROR, Message
from beaminst.run.watch import MAX_BYTES, MAX_DURATION


@dataclass
class RunReport:
    pipeline: str  # as given (<stdin> for -)
    runner: str  # DirectRunner, ..., or PortableRunner for --job-endpoint
    streaming: bool
    job_endpoint: str | None = None
    environment: dict[str, Any] | None = None  # {"type", "config", "replaced": [ids]} at submission
    job_id: str | None = None
    state: str = "UNKNOWN"
    states: list[str] = field(default_factory=list)
    seconds: float = 0.0
    stopped_by: str | None = None  # max_duration | max_bytes: the recording limit that stopped it
    cancel_unconfirmed: bool = False
    messages: list[Message] = field(default_factory=list)
    recorded: dict[str, Any] | None = None  # a recording's limits and what it recorded
    cache_writes: list[dict[str, Any]] = field(default_factory=list)  # the other cache writes
    warnings: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        return [m.text for m in self.messages if m.importance == ERROR]

    @property
    def ok(self) -> bool:
        """DONE; or, for a recording Interactive Beam's way, cancelled at its
        limit (Beam's ``BackgroundCachingJob.is_done``: CANCELLED, or
        CANCELLING once a limiter triggered)."""
        if self.state == "DONE":
            return True
        return self.stopped_by in (MAX_DURATION, MAX_BYTES) and self.state in ("CANCELLED", "CANCELLING")

    def failure(self) -> str | None:
        """One line saying why the run is not a success, or None."""
        if self.ok:
            return None
        what = f"job {self.state}"
        if self.cancel_unconfirmed:
            return f"{what}: cancelled at its recording limit, not confirmed by the runner after waiting"
        last = last_error_line(self.errors)
        return printable(f"{what}: {last}" if last else what)

    def distinct_messages(self, importances: tuple[str, ...] = (ERROR, "JOB_MESSAGE_WARNING")) -> list[Message]:
        """The messages worth showing after a failure, each once (Beam's job
        service sends a failure twice: the traceback, and its log record of it)."""
        seen: set[str] = set()
        out = []
        for m in self.messages:
            if m.importance not in importances:
                continue
            tail = _last_line(m.text)
            if tail in seen:
                continue
            seen.add(tail)
            out.append(m)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline, "runner": self.runner, "job_endpoint": self.job_endpoint,
            "environment": self.environment, "streaming": self.streaming, "job_id": self.job_id,
            "state": self.state, "states": self.states, "ok": self.ok, "seconds": round(self.seconds, 3),
            "stopped_by": self.stopped_by, "cancel_unconfirmed": self.cancel_unconfirmed,
            "errors": self.errors,
            "messages": [{"importance": m.importance, "text": m.text} for m in self.messages],
            "recorded": self.recorded, "cache_writes": self.cache_writes,
            "warnings": self.warnings, "next": self.next_steps,
        }


# A gRPC error's repr ends its message with a lone '>' after the lines that
# say what happened ("<_InactiveRpcError of RPC that terminated with: status
# = ..., details = "...", debug_error_string = ...>").
_GRPC_STATUS = re.compile(r'^\s*status = StatusCode\.(\w+)\s*$', re.M)
_GRPC_DETAILS = re.compile(r'^\s*details = "(.*)"\s*$', re.M)


def _last_line(text: str) -> str:
    """The line an error ends with (for a gRPC error: its status and details)."""
    details = _GRPC_DETAILS.findall(text)
    if details and text.rstrip().endswith(">"):
        status = _GRPC_STATUS.findall(text)
        return f"{status[-1]}: {details[-1]}" if status else details[-1]
    lines = [line.strip() for line in text.strip().splitlines() if any(ch.isalnum() for ch in line)]
    return lines[-1] if lines else ""


# What Beam's DoFnRunner appends to the exception a step raised (at the end
# of a line: not the source line that appends it, in a traceback).
_STEP = re.compile(r"\[while running '.*'\]$")


def last_error_line(errors: list[str]) -> str:
    """The last line of the last error: the exception a traceback ends with.
    Unless it names no step and another line does: Beam appends the step to
    the exception it re-raises (``... [while running 'Parse']``), and a runner
    that wraps that traceback in its own (Flink's Java stack trace) ends with
    its frames; the last line naming a step is then the error."""
    last = next((line for line in map(_last_line, reversed(errors)) if line), "")
    if not _STEP.search(last):
        naming = [line.strip() for text in errors for line in text.splitlines() if _STEP.search(line.strip())]
        last = naming[-1] if naming else last
    return " ".join(last.split())
