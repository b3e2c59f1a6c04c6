"""The driver: plan once, run every job (pool or Beam runner), record what
was written, report."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from beaminst.batch.beamrun import run_beam
from beaminst.batch.console import NoProgress, Progress
from beaminst.batch.freshness import Freshness
from beaminst.batch.jobs import FileResult, Outcome
from beaminst.batch.lifecycle import sigterm_as_interrupt
from beaminst.batch.plan import plan_batch
from beaminst.batch.pool import run_local
from beaminst.batch.spec import BatchSpec
from beaminst.cache.cachefs import filesystem_options, resolve
from beaminst.errors import BeaminstError


@dataclass
class BatchReport:
    mode: str
    src: str
    dest: str
    cache_dir: str
    runner: str | None
    jobs: int | None  # local worker processes; None with a runner
    results: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[FileResult]:
        return [r for r in self.results if r["status"] == "error"]

    def totals(self) -> dict[str, Any]:
        count = {s: sum(1 for r in self.results if r["status"] == s) for s in ("ok", "skipped", "error")}
        # This run's outputs: a skipped file repeats what its record says,
        # which an earlier run's totals counted.
        made = [r for r in self.results if r["status"] != "skipped"]
        return {
            "files": len(self.results),
            **count,
            "writes": sum(r["writes"] or 0 for r in made),
            "reads": sum(r["reads"] or 0 for r in made),
            "pruned": sum(r["pruned"] or 0 for r in made),
            "seconds": round(self.seconds, 3),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "src": self.src,
            "dest": self.dest,
            "cache_dir": self.cache_dir,
            "runner": self.runner,
            "jobs": self.jobs,
            "results": self.results,
            "totals": self.totals(),
        }


def run_batch(spec: BatchSpec, progress: Progress | None = None) -> BatchReport:
    """``beaminst batch``: plan, run every job (pool or Beam runner), report;
    ``progress`` hears of each file as it finishes.

    Raises BeaminstError only for problems with the batch as a whole (SRC,
    DEST, cache dir, shared manifest, runner); per-file problems are results
    with ``status == "error"``, in SRC order. Interrupted (Ctrl-C, SIGTERM),
    it still records the outputs already written, so a re-run skips them."""
    start = time.perf_counter()
    progress = progress or NoProgress()
    workers = spec.jobs or os.cpu_count() or 1
    with filesystem_options(spec.filesystem_args):  # the cache is listed here too
        plan = plan_batch(spec)
    progress.start(len(plan.jobs))
    done: list[FileResult] = []

    def finished(outcome: Outcome) -> None:
        plan.freshness.record(outcome)
        done.append(outcome["result"])
        progress.advance(outcome["result"])

    # A batch that writes nothing leaves no directory behind: not those under
    # DEST a failed file's output would have gone in, nor DEST it created.
    with sigterm_as_interrupt(), _saving(plan.freshness), _removing_if_empty(plan.made):
        if not plan.jobs:
            pass
        elif spec.runner:
            run_beam(plan.jobs, plan.dest, spec.runner, spec.pipeline_args, finished)
        else:
            run_local(plan.jobs, workers, finished)
    return BatchReport(
        mode=spec.mode,
        src=spec.src,
        dest=spec.dest,
        cache_dir=resolve(spec.options.cache_dir),
        runner=spec.runner,
        jobs=None if spec.runner else workers,
        results=sorted(done + plan.skipped, key=lambda r: r["file"]),
        seconds=time.perf_counter() - start,
    )


@contextlib.contextmanager
def _removing_if_empty(dirs: Iterable[str]) -> Iterator[None]:
    """After the block (every job done or stopped), remove those of ``dirs``
    (deepest first) that hold nothing: a file that failed leaves no empty
    directory behind it in DEST."""
    try:
        yield
    finally:
        for d in dirs:
            with contextlib.suppress(OSError):  # not empty, or never made
                os.rmdir(d)


@contextlib.contextmanager
def _saving(freshness: Freshness) -> Iterator[None]:
    """Save the freshness record after the block, also when it raises (then
    a failure to save never hides why it stopped)."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(BeaminstError):
            freshness.save()
        raise
    freshness.save()


def iter_errors(report: BatchReport) -> Iterator[str]:
    for r in report.failed:
        yield r["error"] or f"{r['input']}: failed"
