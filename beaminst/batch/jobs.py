"""One file's job, and what comes back from the worker that ran it.

:func:`work` is the per-file function of both the process pool and the Beam
path. It calls the same file-level function as the single-file command
(``api.rewrite_file`` with the pass :data:`MODES` names), so outputs are
byte-identical to running that command per file, written atomically, and the
cache keys the freshness record needs come from that same analysis. It never
raises for a bad file: the outcome holds the error, so one bad file never
stops the rest.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, TypedDict

from beaminst.batch.freshness import file_stamp
from beaminst.cache.cachefs import filesystem_options
from beaminst.errors import BeaminstError, OutputError


class _JobOptions(TypedDict, total=False):
    # Only with a --cache-dir URL: its filesystem's Beam options (--s3_endpoint_url=...),
    # set in each worker's process. Absent otherwise, so local batches keep their digests.
    filesystem_args: list[str]
    # Only with --reuse (instrument): absent otherwise, for the same reason.
    reuse: bool


class Job(_JobOptions):
    """One file to rewrite. A plain dict at runtime, so it pickles for a
    process pool and encodes for any Beam runner. Paths are absolute: pool
    workers and runner workers need not share the caller's cwd."""

    file: str  # path relative to SRC's root, '/'-separated (report key)
    input: str
    output: str
    manifest: str | None
    mode: str
    options: dict[str, Any]  # RewriteOptions.to_json(), its cache_dir absolute (or a URL)
    rules: dict[str, Any]  # SourceRules.to_json()
    max_decompressed_bytes: int  # the caller's cap (beaminst.model.bounded), for workers that did not inherit it


class FileResult(TypedDict):
    """One file's outcome; also one line of ``--json``'s ``results``."""

    file: str
    input: str
    output: str
    manifest: str | None
    status: str  # ok | skipped | error
    writes: int | None
    reads: int | None
    pruned: int | None
    warnings: list[str]
    error: str | None  # one line, starting with the offending path
    seconds: float


class Outcome(TypedDict):
    """What a worker sends back: the result, and for a written output what
    the freshness record needs (``beaminst.batch.freshness``)."""

    result: FileResult
    cache_keys: list[str] | None  # every cache key the analysis saw
    output_stamp: list[int] | None  # the output as written: inode, size, mtime


def _instrument() -> Any:
    from beaminst.passes.instrument import instrument

    return instrument


def _background_caching() -> Any:
    from beaminst.passes.background_caching import background_caching

    return background_caching


# The one mode -> pass mapping (each imports its pass, and so the Beam SDK, only
# when called); the CLI's --mode choices come from here.
MODES: dict[str, Callable[[], Any]] = {
    "instrument": _instrument,
    "background-caching": _background_caching,
}


def result(job: Job, status: str, seconds: float = 0.0, report: Any = None, error: str | None = None) -> FileResult:
    return FileResult(
        file=job["file"],
        input=job["input"],
        output=job["output"],
        manifest=job["manifest"],
        status=status,
        writes=len(report.writes) if report is not None else None,
        reads=len(report.reads) if report is not None else None,
        pruned=len(report.pruned) if report is not None else None,
        warnings=list(report.warnings) if report is not None else [],
        error=error,
        seconds=round(seconds, 3),
    )


def failed(job: Job, error: str) -> Outcome:
    """The outcome of a job that never produced one of its own (its worker died)."""
    return Outcome(result=result(job, "error", error=error), cache_keys=None, output_stamp=None)


def rewrite_one(job: Job) -> FileResult:
    """Rewrite one file. Returns a record, never raises for a bad input."""
    return _rewrite(job)[0]


def _rewrite(job: Job) -> tuple[FileResult, list[str] | None]:
    """The record, and when it wrote, every cache key its analysis saw: the
    cache state its output depends on, cached or not (the report leaves out
    keys that led to nothing, such as a cached binding nobody reads)."""
    start = time.perf_counter()
    try:
        from beaminst.commands.api import rewrite_file
        from beaminst.options import RewriteOptions, SourceRules

        try:
            os.makedirs(os.path.dirname(job["output"]), exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot create output directory: {e.strerror or e}", job["output"]) from None
        _apply_cap(job["max_decompressed_bytes"])
        with filesystem_options(job.get("filesystem_args", ())):
            done = rewrite_file(
                MODES[job["mode"]](), job["input"], job["output"], job["manifest"],
                RewriteOptions.from_json(job["options"]), SourceRules.from_json(job["rules"]),
                reuse=job.get("reuse", False),
            )
    except BeaminstError as e:
        # Some errors name no file (the single-file command has only one); here the input does.
        return result(job, "error", time.perf_counter() - start, error=str(e.with_source(job["input"]))), None
    except Exception as e:  # a bug: reported for this file, the others go on
        if os.environ.get("BEAMINST_DEBUG"):
            raise
        msg = " ".join(f"{job['input']}: internal error: {type(e).__name__}: {e}".split())
        return result(job, "error", time.perf_counter() - start, error=msg), None
    return result(job, "ok", time.perf_counter() - start, report=done.report), done.cache_keys


def _apply_cap(cap: int) -> None:
    """Make the caller's decompression cap this process's. bounded reads it
    from the environment, which a forkserver worker inherits from the
    forkserver (started by an earlier batch, with the environment of then)
    and a runner's worker not at all. Where it already holds, as in the
    caller's own process, the environment is left alone."""
    from beaminst.model import bounded

    if bounded.max_decompressed_bytes() != cap:
        os.environ[bounded.ENV] = str(cap)


def work(job: Job) -> Outcome:
    """:func:`rewrite_one`, plus what the freshness record needs when it wrote."""
    res, keys = _rewrite(job)
    if res["status"] != "ok":
        return Outcome(result=res, cache_keys=None, output_stamp=None)
    return Outcome(result=res, cache_keys=keys, output_stamp=file_stamp(job["output"]))
