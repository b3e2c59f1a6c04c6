"""What people see of a run (machines get ``--json``): the job's state as it
changes, on stderr (a live rich status line on a terminal, plain lines when
piped), then a summary on stdout."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import IO, Any

from beaminst.commands.humanout import Human
from beaminst.errors import printable
from beaminst.run.job import Job
from beaminst.run.report import RunReport


def human_bytes(n: int | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover


def _job_name(job: Job) -> str:
    return f"job {printable(job.job_id)}" if job.job_id else "job"


class PlainStatus:
    """One line on ``stream`` whenever the state changes (and for each note)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream or sys.stderr
        self._last: str | None = None

    def update(self, job: Job, elapsed: float, recorded_bytes: int | None) -> None:
        state = job.state
        if state != self._last:
            self._last = state
            tail = f", recorded {human_bytes(recorded_bytes)}" if recorded_bytes is not None else ""
            print(f"beaminst: {_job_name(job)}: {state} ({elapsed:.1f} s{tail})", file=self._stream, flush=True)

    def note(self, text: str) -> None:
        print(f"beaminst: {text}", file=self._stream, flush=True)


class RichStatus:
    """A live status line (spinner, state, seconds, bytes recorded) on stderr."""

    def __init__(self, status: Any, console: Any) -> None:
        self._status = status
        self._console = console

    def update(self, job: Job, elapsed: float, recorded_bytes: int | None) -> None:
        from rich.markup import escape

        tail = f" · recorded {human_bytes(recorded_bytes)}" if recorded_bytes is not None else ""
        self._status.update(f"[bold]{escape(_job_name(job))}[/bold] {escape(job.state)} · {elapsed:.1f} s{tail}")

    def note(self, text: str) -> None:
        from rich.markup import escape

        self._console.print(f"[yellow]{escape(text)}[/yellow]")


class NoStatus:
    def update(self, job: Job, elapsed: float, recorded_bytes: int | None) -> None:
        pass

    def note(self, text: str) -> None:
        pass


@contextlib.contextmanager
def status_line(tty: bool) -> Iterator[Any]:
    """A rich status on a terminal, else plain state lines."""
    if not tty:
        yield PlainStatus()
        return
    from rich.console import Console

    # This stderr, not whatever sys.stderr is when the status refreshes (from
    # rich's own thread, while quiet_sdk_logs lets only the main one write).
    console = Console(file=sys.stderr, highlight=False)
    with console.status("starting the job") as status:
        yield RichStatus(status, console)


def _size(out: Human, n: int | None) -> str:
    """Human units for people; the byte count itself for a pipe, so that
    ``cut`` and ``awk`` can add them up."""
    if out.terminal:
        return human_bytes(n)
    return "" if n is None else str(n)


def print_run_report(out: Human, report: RunReport) -> None:
    """The summary: final state, what was recorded or written, the next step."""
    where = f"{report.runner} at {report.job_endpoint}" if report.job_endpoint else report.runner
    mode = "streaming" if report.streaming else "batch"
    stopped = ""
    if report.stopped_by:
        stopped = f", stopped at --{report.stopped_by.replace('_', '-')}"
    job = f"job {report.job_id}" if report.job_id else "job"
    out.line("state", f"{job} {report.state} in {report.seconds:.1f} s ({where}, {mode}{stopped})", "green" if report.ok else "red")
    rec = report.recorded
    if rec is not None:
        rows = [
            (k["key"], k["source"], _size(out, k["bytes"]), "" if k["elements"] is None else str(k["elements"]))
            for k in rec["keys"]
        ]
        out.table("recorded", "recorded", ("cache key", "source", "bytes", "elements"), rows)
        limits = f"limits: --max-duration {rec['max_duration']:g} s, --max-bytes {rec['max_bytes']}"
        out.summary(f"{human_bytes(rec['bytes'])} recorded in {rec['cache_dir'] or '?'} ({limits})")
    elif report.cache_writes:
        dirs = ", ".join(sorted({w["cache_dir"] or "?" for w in report.cache_writes}))
        total = sum(w["bytes"] or 0 for w in report.cache_writes)
        n = len(report.cache_writes)
        if report.ok:
            out.summary(f"{n} cache write(s), {human_bytes(total)} in {dirs}")
        elif total:  # shards match only once finalized; what this job finalized is removed (run.unfinished)
            out.summary(f"{n} cache write(s) not done (the job is {report.state}); {human_bytes(total)} in {dirs} "
                        "was left by an earlier run (on gs:// or s3://, maybe by this one: see the warning)")
        else:
            out.summary(f"{n} cache write(s) not done (the job is {report.state}): nothing cached in {dirs}")
    for w in report.warnings:
        out.line("warning", w, "yellow")
    out.next_steps(report.next_steps)
