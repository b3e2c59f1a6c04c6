"""``beaminst batch``: rewrite every saved pipeline under a directory or glob.

One job per pipeline file; each job is :func:`rewrite_one`, which calls the
same file-level function as the single-file command (``api.instrument_files``
or ``api.background_caching_files``, picked from :data:`MODES`), so outputs are
byte-identical to running that command per file and are written atomically.
:func:`rewrite_one` never raises for a bad file: it returns a record with the
error, so one bad file never stops the rest.

Jobs run in a local process pool by default, or, with ``runner``, as a Beam
pipeline ``Create(jobs) | Map(rewrite_one)`` whose result records come back
through JSON-lines files under DEST. Planning (finding files, pairing
manifests, skipping up-to-date outputs) happens once in the calling process.

This module imports only the standard library at import time: the CLI reads
:data:`MODES` for ``--help``, and worker processes import the SDK only when a
file needs it.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypedDict

from beaminst.errors import BeaminstError, CacheDirError, ManifestError, OutputError
from beaminst.options import WorkerOptions

# What counts as a pipeline file: the extensions protoio reads as a Pipeline,
# minus the generic ``.bin``/``.txt``, and never a binding manifest.
PIPELINE_SUFFIXES = (".pb", ".binpb", ".textproto", ".pbtxt", ".txtpb", ".json")
MANIFEST_SUFFIX = ".manifest.json"
RESULTS_PREFIX = ".beaminst-batch-results-"


class Job(TypedDict):
    """One file to rewrite. A plain dict at runtime, so it pickles for a
    process pool and encodes for any Beam runner. Paths are absolute: pool
    workers and runner workers need not share the caller's cwd."""

    file: str  # path relative to SRC's root, '/'-separated (report key)
    input: str
    output: str
    manifest: str | None
    mode: str
    cache_dir: str
    unbounded_urns: list[str]
    infer_unbounded: bool
    allow_empty: bool  # background-caching only
    worker: dict[str, str | None]  # WorkerOptions' fields


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


def _instrument(job: Job) -> Any:
    from beaminst.api import instrument_files

    return instrument_files(
        job["input"], job["output"], job["manifest"], job["cache_dir"], job["unbounded_urns"], job["infer_unbounded"],
        worker=_worker(job),
    )


def _background_caching(job: Job) -> Any:
    from beaminst.api import background_caching_files

    return background_caching_files(
        job["input"],
        job["output"],
        job["manifest"],
        job["cache_dir"],
        job["unbounded_urns"],
        job["infer_unbounded"],
        allow_empty=job["allow_empty"],
        worker=_worker(job),
    )


def _worker(job: Job) -> Any:
    from beaminst.options import WorkerOptions

    return WorkerOptions(**job.get("worker", {}))


# The one mode -> per-file function mapping; the CLI's --mode choices come from here.
MODES: dict[str, Callable[[Job], Any]] = {
    "instrument": _instrument,
    "background-caching": _background_caching,
}


def _result(job: Job, status: str, seconds: float = 0.0, report: Any = None, error: str | None = None) -> FileResult:
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


def rewrite_one(job: Job) -> FileResult:
    """Rewrite one file; the per-file function of both the pool and the Beam
    path. Returns a record, never raises for a bad input."""
    start = time.perf_counter()
    try:
        try:
            os.makedirs(os.path.dirname(job["output"]), exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot create output directory: {e.strerror or e}", job["output"]) from None
        report = MODES[job["mode"]](job)
    except BeaminstError as e:
        # Some errors name no file (the single-file command has only one); here the input does.
        return _result(job, "error", time.perf_counter() - start, error=str(e.with_source(job["input"])))
    except Exception as e:  # a bug: reported for this file, the others go on
        if os.environ.get("BEAMINST_DEBUG"):
            raise
        msg = " ".join(f"{job['input']}: internal error: {type(e).__name__}: {e}".split())
        return _result(job, "error", time.perf_counter() - start, error=msg)
    return _result(job, "ok", time.perf_counter() - start, report=report)


# --- planning -----------------------------------------------------------------


def is_pipeline_name(name: str) -> bool:
    lower = name.lower()
    if lower.startswith(".") or lower.endswith(MANIFEST_SUFFIX):
        return False
    return lower.endswith(PIPELINE_SUFFIXES)


def _glob_root(pattern: str) -> str:
    """The directory before the first wildcard: what outputs are relative to."""
    import glob

    parts = os.path.normpath(pattern).split(os.sep)
    fixed: list[str] = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    if not fixed:
        return "."
    return os.sep.join(fixed) or os.sep


def discover(src: str) -> tuple[str, list[str]]:
    """(root, sorted paths relative to root) of the pipeline files SRC names.

    A directory is walked recursively (hidden files and directories skipped,
    symlinked directories not followed); anything else is a glob pattern
    (``**`` recursive) whose root is the directory before the first wildcard.
    Either way only pipeline file names count (:func:`is_pipeline_name`).
    """
    import glob

    if os.path.isdir(src):
        root = src
        found = []
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            found += [os.path.join(dirpath, f) for f in filenames if is_pipeline_name(f)]
    else:
        root = _glob_root(src) if glob.has_magic(src) else (os.path.dirname(src) or ".")
        if not glob.has_magic(src) and not os.path.exists(src):
            raise BeaminstError("no such file or directory", src)
        found = [
            p
            for p in glob.glob(src, recursive=True)
            if os.path.isfile(p) and is_pipeline_name(os.path.basename(p))
        ]
    rels = sorted(os.path.relpath(p, root) for p in found)
    if not rels:
        raise BeaminstError(
            f"no pipeline files found (looked for {', '.join('*' + s for s in PIPELINE_SUFFIXES)}, "
            f"not *{MANIFEST_SUFFIX})",
            src,
        )
    return root, rels


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def paired_manifest(pipeline: str) -> str:
    """``X.pb`` -> ``X.manifest.json`` beside it."""
    stem, _ = os.path.splitext(pipeline)
    return stem + MANIFEST_SUFFIX


def _mtime_ns(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def cache_stamp(cache_dir: str) -> int:
    """Latest change to the cache state instrument reads (``full/`` and its
    entries): an output older than that may plan reads/writes differently."""
    full = os.path.join(cache_dir, "full")
    stamps = [_mtime_ns(full) or 0]
    try:
        with os.scandir(full) as entries:
            stamps += [e.stat().st_mtime_ns for e in entries]
    except OSError:
        pass
    return max(stamps)


def up_to_date(job: Job, stamp: int) -> bool:
    """make's rule: the output is newer than the input, the manifest and the
    cache state. A missing dependency means "redo" (and report its error)."""
    out = _mtime_ns(job["output"])
    if out is None:
        return False
    deps = [job["input"]] + ([job["manifest"]] if job["manifest"] else [])
    for dep in deps:
        t = _mtime_ns(dep)
        if t is None or t >= out:
            return False
    return stamp < out


@dataclass(frozen=True)
class Plan:
    root: str
    dest: str
    jobs: list[Job]  # to run
    skipped: list[FileResult]


def plan_batch(
    src: str,
    dest: str,
    mode: str,
    cache_dir: str | None,
    manifest: str | None = None,
    force: bool = False,
    unbounded_urns: Iterable[str] = (),
    infer_unbounded: bool = False,
    allow_empty: bool = False,
    worker: WorkerOptions | None = None,
) -> Plan:
    """Find the files, pair manifests, refuse unsafe destinations, and split
    into jobs to run and up-to-date outputs. Creates DEST (never under SRC)."""
    from beaminst.cachedir import scan_cache_dir

    if mode not in MODES:
        raise BeaminstError(f"unknown mode {mode!r} (use one of {', '.join(MODES)})")
    if not cache_dir:
        raise CacheDirError(f"batch --mode {mode} needs --cache-dir")
    if manifest == "-":
        raise ManifestError("batch cannot read the manifest from stdin; give a file", "--manifest")
    root, rels = discover(src)
    root_real = os.path.realpath(root)
    dest_real = os.path.realpath(dest)
    if _inside(dest_real, root_real):
        where = "is" if dest_real == root_real else "is inside"
        raise OutputError(f"destination {where} the source directory {root}; batch never writes into its source", dest)
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise OutputError("is not a directory", dest)
    scan_cache_dir(cache_dir)  # an unusable cache dir fails once, not per file
    cache_abs = os.path.abspath(cache_dir)
    manifest_abs = None
    if manifest is not None:
        from beaminst.manifest import load_manifest

        load_manifest(manifest)  # malformed: one error, not one per file
        manifest_abs = os.path.abspath(manifest)
    dest_abs = os.path.abspath(dest)
    jobs: list[Job] = []
    for rel in rels:
        inp = os.path.abspath(os.path.join(root, rel))
        out = os.path.join(dest_abs, rel)
        # SRC inside DEST: dest/rel may still land in SRC (rel starting with SRC's own name).
        if _inside(os.path.realpath(out), root_real):
            raise OutputError(f"output {out} would be written into the source directory {root}", dest)
        if manifest_abs is None:
            beside = paired_manifest(inp)
            man = beside if os.path.exists(beside) else None
        else:
            man = manifest_abs
        jobs.append(
            Job(
                file=rel.replace(os.sep, "/"),
                input=inp,
                output=out,
                manifest=man,
                mode=mode,
                cache_dir=cache_abs,
                unbounded_urns=list(unbounded_urns),
                infer_unbounded=infer_unbounded,
                allow_empty=allow_empty,
                worker=dataclasses.asdict(worker or WorkerOptions()),
            )
        )
    try:
        os.makedirs(dest, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create destination directory: {e.strerror or e}", dest) from None
    if force:
        return Plan(root, dest, jobs, [])
    stamp = cache_stamp(cache_abs)
    todo: list[Job] = []
    skipped: list[FileResult] = []
    for j in jobs:
        if up_to_date(j, stamp):
            skipped.append(_result(j, "skipped"))
        else:
            todo.append(j)
    return Plan(root, dest, todo, skipped)


# --- running ------------------------------------------------------------------


class Progress(Protocol):
    def start(self, total: int) -> None: ...

    def advance(self, result: FileResult) -> None: ...


class _NoProgress:
    def start(self, total: int) -> None:
        pass

    def advance(self, result: FileResult) -> None:
        pass


def _init_worker(log_level: int) -> None:
    import logging

    # Spawned workers do not inherit the CLI's logging setup; without this the
    # SDK's import-time warnings would print once per worker.
    logging.basicConfig(level=log_level, format="beaminst: %(name)s: %(message)s")


def _pool_context() -> Any:
    import multiprocessing

    # Never plain fork: the parent may have imported the Beam SDK (grpc
    # threads), which is not fork-safe. forkserver forks from a clean process.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def run_local(jobs: list[Job], workers: int, progress: Progress) -> list[FileResult]:
    """Run jobs in a process pool (in this process for one worker or one job).

    A worker that dies (crash, out-of-memory kill) breaks the whole pool and
    takes every unfinished job with it. Those are rerun in fresh pools,
    halving the set on each break, so the file that kills its worker ends up
    alone with an error and every other file still completes."""
    if workers <= 1 or len(jobs) <= 1:
        results = []
        for job in jobs:
            results.append(rewrite_one(job))
            progress.advance(results[-1])
        return results
    results = []
    todo = [jobs]
    while todo:
        done, lost = _pool_round(todo.pop(), workers, progress)
        results += done
        if len(lost) == 1:
            (job,) = lost
            msg = f"{job['input']}: a worker process died rewriting this file (crashed, or killed: out of memory?)"
            results.append(_result(job, "error", error=msg))
            progress.advance(results[-1])
        elif lost:
            half = len(lost) // 2
            todo += [lost[half:], lost[:half]]
    return results


def _pool_round(jobs: list[Job], workers: int, progress: Progress) -> tuple[list[FileResult], list[Job]]:
    """One process pool over ``jobs``: (results, jobs lost to a dead worker)."""
    import logging
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)),
        mp_context=_pool_context(),
        initializer=_init_worker,
        initargs=(logging.getLogger().getEffectiveLevel(),),
    )
    results: list[FileResult] = []
    lost: list[Job] = []
    try:
        futures = {pool.submit(rewrite_one, job): job for job in jobs}
        for fut in as_completed(futures):
            job = futures[fut]
            try:
                result = fut.result()
            except BrokenProcessPool:
                lost.append(job)
                continue
            except Exception as e:  # e.g. a job that cannot be sent to a worker
                if os.environ.get("BEAMINST_DEBUG"):
                    raise
                result = _result(job, "error", error=f"{job['input']}: worker failed: {type(e).__name__}: {e}")
            results.append(result)
            progress.advance(result)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    order = {id(job): i for i, job in enumerate(jobs)}
    return results, sorted(lost, key=lambda job: order[id(job)])


def run_beam(jobs: list[Job], dest: str, runner: str, pipeline_args: Iterable[str], progress: Progress) -> list[FileResult]:
    """The same jobs as a Beam pipeline: ``Create(jobs) | Map(rewrite_one)``,
    results written as JSON lines under DEST, read back and deleted. Workers
    must see SRC, DEST and the cache directory at the same absolute paths and
    have beaminst installed."""
    import glob
    import json
    import shutil
    import uuid

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    prefix = os.path.join(os.path.abspath(dest), f"{RESULTS_PREFIX}{uuid.uuid4().hex}")
    try:
        options = PipelineOptions(list(pipeline_args), runner=runner)
        with beam.Pipeline(options=options) as p:
            _ = (
                p
                | "Jobs" >> beam.Create(jobs)
                # Explicit hints: the TypedDict annotations are for readers, not for Beam's coders.
                | "Rewrite" >> beam.Map(rewrite_one).with_input_types(Any).with_output_types(Any)
                | "Encode" >> beam.Map(lambda r: json.dumps(r, sort_keys=True)).with_output_types(str)
                | "Results" >> beam.io.WriteToText(prefix, file_name_suffix=".jsonl")
            )
        by_file: dict[str, FileResult] = {}  # a retried bundle must not count twice
        for shard in sorted(glob.glob(glob.escape(prefix) + "*.jsonl")):
            with open(shard, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        record = json.loads(line)
                        by_file[record["file"]] = record
        results = list(by_file.values())
    except BeaminstError:
        raise
    except Exception as e:
        if os.environ.get("BEAMINST_DEBUG"):
            raise
        raise BeaminstError(f"pipeline failed: {type(e).__name__}: {e}", f"--runner {runner}") from None
    finally:
        for leftover in glob.glob(glob.escape(prefix) + "*"):
            os.unlink(leftover)
        base = os.path.join(os.path.dirname(prefix), "beam-temp-" + os.path.basename(prefix))
        for tmp in glob.glob(glob.escape(base) + "*"):
            shutil.rmtree(tmp, ignore_errors=True)
    seen = {r["file"] for r in results}
    for job in jobs:  # a runner that drops elements must not look like success
        if job["file"] not in seen:
            results.append(_result(job, "error", error=f"{job['input']}: no result came back from the runner"))
    for r in results:
        progress.advance(r)
    return results


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
        return {
            "files": len(self.results),
            **count,
            "writes": sum(r["writes"] or 0 for r in self.results),
            "reads": sum(r["reads"] or 0 for r in self.results),
            "pruned": sum(r["pruned"] or 0 for r in self.results),
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


def run_batch(
    src: str,
    dest: str,
    mode: str = "instrument",
    cache_dir: str | None = None,
    manifest: str | None = None,
    jobs: int | None = None,
    force: bool = False,
    runner: str | None = None,
    pipeline_args: Iterable[str] = (),
    unbounded_urns: Iterable[str] = (),
    infer_unbounded: bool = False,
    allow_empty: bool = False,
    progress: Progress | None = None,
    worker: WorkerOptions | None = None,
) -> BatchReport:
    """``beaminst batch``: plan, run every job (pool or Beam runner), report.

    Raises BeaminstError only for problems with the batch as a whole (SRC,
    DEST, cache dir, shared manifest, runner); per-file problems are results
    with ``status == "error"``, in SRC order."""
    start = time.perf_counter()
    progress = progress or _NoProgress()
    workers = jobs or os.cpu_count() or 1
    plan = plan_batch(src, dest, mode, cache_dir, manifest, force, unbounded_urns, infer_unbounded, allow_empty, worker)
    progress.start(len(plan.jobs))
    if not plan.jobs:
        done: list[FileResult] = []
    elif runner:
        done = run_beam(plan.jobs, plan.dest, runner, pipeline_args, progress)
    else:
        done = run_local(plan.jobs, workers, progress)
    results = sorted(done + plan.skipped, key=lambda r: r["file"])
    return BatchReport(
        mode=mode,
        src=src,
        dest=dest,
        cache_dir=os.path.abspath(cache_dir or ""),
        runner=runner,
        jobs=None if runner else workers,
        results=results,
        seconds=time.perf_counter() - start,
    )


# --- rich output (people; machines get --json) --------------------------------


class RichProgress:
    """A transient rich progress bar on stderr, advanced per finished file."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._bar = Progress(
            TextColumn("[bold]batch[/bold]"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
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
            self._bar.update(self._task, advance=1, description=result["file"])


def progress_bar(enabled: bool) -> Any:
    """A context manager yielding a Progress: a rich bar, or nothing."""
    import contextlib

    return RichProgress() if enabled else contextlib.nullcontext(_NoProgress())


_STATUS_STYLE = {"ok": "[green]ok[/green]", "skipped": "[dim]skipped[/dim]", "error": "[red]error[/red]"}


def print_batch_report(console: Any, report: BatchReport) -> None:
    from rich.table import Table

    table = Table(title=f"beaminst batch --mode {report.mode}")
    table.add_column("file", overflow="fold")
    table.add_column("status")
    for col in ("writes", "reads", "pruned", "seconds"):
        table.add_column(col, justify="right")

    def num(v: int | None) -> str:
        return "" if v is None else str(v)

    for r in report.results:
        secs = f"{r['seconds']:.2f}" if r["status"] != "skipped" else ""
        table.add_row(r["file"], _STATUS_STYLE[r["status"]], num(r["writes"]), num(r["reads"]), num(r["pruned"]), secs)
    console.print(table)
    t = report.totals()
    how = f"--runner {report.runner}" if report.runner else f"{report.jobs} job(s)"
    console.print(
        f"{t['ok']} ok, {t['skipped']} skipped, {t['error']} failed of {t['files']} file(s) "
        f"in {t['seconds']:.1f} s ({how}) -> {report.dest}"
    )


def iter_errors(report: BatchReport) -> Iterator[str]:
    for r in report.failed:
        yield r["error"] or f"{r['input']}: failed"
