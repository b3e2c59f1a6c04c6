"""What people see of a batch (machines get ``--json``): a progress bar on
stderr and the final table. File names are escaped: they come from SRC."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from beaminst.batch.jobs import FileResult
from beaminst.commands.humanout import Cell, Human
from beaminst.errors import printable

if TYPE_CHECKING:  # run imports this module
    from beaminst.batch.run import BatchReport


class Progress(Protocol):
    def start(self, total: int) -> None: ...

    def advance(self, result: FileResult) -> None: ...


class NoProgress:
    def start(self, total: int) -> None:
        pass

    def advance(self, result: FileResult) -> None:
        pass


class RichProgress:
    """A transient rich progress bar on stderr, advanced per finished file."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import Progress as Bar

        self._bar = Bar(
            TextColumn("[bold]batch[/bold]"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}", markup=False),
            console=Console(stderr=True),
            transient=True,
        )
        self._task: Any = None

    def __enter__(self) -> RichProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def start(self, total: int) -> None:
        self._task = self._bar.add_task("", total=total)

    def advance(self, result: FileResult) -> None:
        if self._task is not None:
            self._bar.update(self._task, advance=1, description=printable(result["file"]))


def progress_bar(enabled: bool) -> Any:
    """A context manager yielding a Progress: a rich bar, or nothing."""
    import contextlib

    return RichProgress() if enabled else contextlib.nullcontext(NoProgress())


_STATUS_STYLE = {"ok": "green", "skipped": "dim", "error": "red"}


def reason(result: FileResult) -> str:
    """Why a file failed, without the path its row already names, or why it
    was skipped (the only reason there is: :mod:`beaminst.batch.freshness`)."""
    if result["status"] == "skipped":
        return "up to date (--force rewrites it)"
    error = result["error"] or ""
    for prefix in (result["input"], result["file"]):
        if error.startswith(prefix + ": "):
            return error[len(prefix) + 2 :]
    return error


def print_batch_report(out: Human, report: BatchReport, next_steps: Sequence[str] = ()) -> None:
    """The per-file table (``file`` records when piped) and the totals line."""

    def num(v: int | None) -> str:
        return "" if v is None else str(v)

    rows = [
        (
            r["file"], Cell(r["status"], _STATUS_STYLE[r["status"]]), num(r["writes"]), num(r["reads"]),
            num(r["pruned"]), f"{r['seconds']:.2f}" if r["status"] != "skipped" else "", reason(r),
        )
        for r in report.results
    ]
    out.table(
        "file", f"beaminst batch --mode {report.mode}",
        ("file", "status", "writes", "reads", "pruned", "seconds", "reason"), rows,
    )
    # Per-file warnings (a missing cache dir, nothing recorded yet) would
    # otherwise reach only --json.
    out.capped("warning", [(r["file"], w) for r in report.results for w in r["warnings"]], "warnings")
    t = report.totals()
    how = f"--runner {report.runner}" if report.runner else f"{report.jobs} job(s)"
    out.summary(
        f"{t['ok']} ok, {t['skipped']} skipped, {t['error']} failed of {t['files']} file(s) "
        f"in {t['seconds']:.1f} s ({how}) -> {report.dest}"
    )
    out.next_steps(next_steps)
