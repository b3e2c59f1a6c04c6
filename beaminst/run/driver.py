"""``run_file``: load a proto, start it on the chosen runner, follow it, report.

The steps, in order: load and validate the proto (as every command does);
find its cache writes and, if it is a background caching proto, the
recording they make; choose streaming (the proto has UNBOUNDED
PCollections); start the job (locally, or through the Job API with the
placeholder environment replaced); follow it, applying the recording limits;
then say what was recorded and what to do next.

Running a pipeline runs its code: unlike the rewriting commands, nothing here
keeps the proto's pickles from loading. Run only pipelines you trust.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from beaminst.analysis.sources import UnboundedSource
from beaminst.cache import cachefs
from beaminst.cache.cachedir import CacheDir, scan_cache_dir
from beaminst.cache.cachefs import filesystem_options, is_url
from beaminst.commands.api import load
from beaminst.errors import BeaminstError
from beaminst.graph.index import GraphIndex
from beaminst.model import urns
from beaminst.model.beamproto import runner_api
from beaminst.model.labels import TEST_STREAM
from beaminst.options import SourceRules
from beaminst.run.capture import (
    CacheRead,
    CacheWrite,
    find_cache_reads,
    find_cache_writes,
    recorded_sources,
)
from beaminst.run.job import Job, quiet_sdk_logs
from beaminst.run.options import RunOptions
from beaminst.run.recording import (
    Recording,
    make_sink_dirs,
    plan_recording,
    refuse_appending,
    written_bytes,
)
from beaminst.run.report import RunReport
from beaminst.run.unfinished import discard_unfinished, snapshot
from beaminst.run.watch import Limits, Status, follow

# Leaf URNs only the Python SDK's own runners execute, with why.
_PYTHON_ONLY = {
    urns.PICKLED_TRANSFORM: "a transform pickled by the Python SDK, which only its own runners unpickle",
    urns.TEST_STREAM: "TestStream, which Beam's portable job service (the FnApiRunner) does not run",
}


def run_file(path: str, options: RunOptions = RunOptions(), status: Status | None = None) -> RunReport:  # noqa: B008 - frozen
    """Run the pipeline at ``path`` (``-`` for stdin) to a terminal state."""
    from beaminst.run.console import NoStatus

    loaded = load(path)
    proto = loaded.proto
    writes = find_cache_writes(loaded.index)
    recording, warnings = plan_recording(writes, options.cache_dir)
    refuse_appending(writes, recording)  # before anything is removed or submitted
    if recording is None and (options.max_duration is not None or options.max_bytes is not None):
        warnings.append(
            "--max-duration and --max-bytes limit a recording: this proto has no capture write "
            "(it is not a background caching proto), so they do not apply"
        )
    unbounded = runner_api().IsBounded.UNBOUNDED
    streaming = any(pc.is_bounded == unbounded for pc in proto.components.pcollections.values())
    reads = find_cache_reads(loaded.index)
    remote = any(is_url(d) for d in (*(w.cache_dir for w in writes), *(r.cache_dir for r in reads)))
    with filesystem_options(options.pipeline_args if remote else ()):
        # One listing per directory: reads and writes usually share one.
        dirs = {r.cache_dir for r in reads} | {w.cache_dir for w in writes if w.cache_dir and not w.streaming}
        scans = {d: scan_cache_dir(d) for d in sorted(dirs)}
        _check_reads(reads, scans, options.job_endpoint is None, warnings)
        _clear_stale_shards(writes, scans, warnings)
    make_sink_dirs(writes)
    before = snapshot(writes)  # what the job finalizes is what is new after it
    limits = Limits(recording, options.duration_limit, options.size_limit) if recording else None
    status = status or NoStatus()
    started = time.monotonic()
    with quiet_sdk_logs():
        try:
            start, report = _prepare(proto, loaded.source, options, streaming, warnings)
            # Said before the job starts, not only in the summary at its end: an
            # option that does nothing matters most while the job runs (or when
            # the submission fails).
            for w in warnings:
                status.note(f"warning: {w}")
            job = start()
            report.runner = report.runner or job.runner
        except BeaminstError as e:
            raise e.with_source(loaded.source) from None
        try:
            outcome = follow(job, limits, status, started)
        except KeyboardInterrupt:  # follow cancelled the job: what it finalized is no cache either
            for w in discard_unfinished(writes, before, "interrupted"):
                status.note(f"warning: {w}")
            raise
        finally:
            job.close()
    report.job_id = job.job_id
    report.state = outcome.state
    report.states = list(job.states)
    report.seconds = outcome.seconds
    report.stopped_by = outcome.stopped_by
    report.cancel_unconfirmed = outcome.cancel_unconfirmed
    report.messages = list(job.messages)
    report.warnings = warnings
    if recording is not None:
        report.recorded = _recorded(recording, options)
    if not report.ok:
        report.warnings.extend(discard_unfinished(writes, before, report.state))
    with filesystem_options(options.pipeline_args if any(is_url(w.cache_dir) for w in writes) else ()):
        report.cache_writes = [{**w.to_json(), "bytes": written_bytes(w)} for w in writes if not w.capture]
    if report.ok and recording is None and nothing_cached(report):
        report.warnings.append(
            "nothing was cached: no cache write received an element (for a replay, the recording holds no "
            "event; record for longer, then instrument again)"
        )
    report.next_steps = next_steps(report, recording, writes, loaded.index)
    return report


def _prepare(
    proto: Any, source: str, options: RunOptions, streaming: bool, warnings: list[str]
) -> tuple[Callable[[], Job], RunReport]:
    """How to start the job, and its report so far; ``warnings`` gets what
    the choice of runner and environment warns of."""
    if options.job_endpoint is None:
        from beaminst.run.local import start_local

        # The runner's name is the one the options resolve to when it starts.
        return lambda: start_local(proto, options.pipeline_args, streaming), RunReport(source, "", streaming)
    from beaminst.run.jobapi import (
        environment_choice,
        placeholder_replaced,
        submission_options,
        submit,
        unused_environment_warning,
    )

    endpoint = options.job_endpoint
    env_type, config, chosen = environment_choice(
        endpoint, options.environment_type, options.environment_config, options.pipeline_args
    )
    beam_options = submission_options(endpoint, env_type, config, options.pipeline_args, streaming)
    to_send, replaced = placeholder_replaced(proto, beam_options)
    if chosen and not replaced:
        warnings.append(unused_environment_warning(proto, chosen))
    warnings.extend(_python_only_warnings(proto))
    report = RunReport(
        source, "PortableRunner", streaming, job_endpoint=endpoint,
        environment={"type": env_type, "config": config, "replaced": replaced},
    )
    return lambda: submit(to_send, endpoint, beam_options), report


def _check_reads(
    reads: tuple[CacheRead, ...], scans: Mapping[str, CacheDir], here: bool, warnings: list[str]
) -> None:
    """Every shard cache the pipeline reads is there, complete and whole:
    Beam's reader takes a missing one for an empty one, so the job would end
    DONE on nothing and write what follows as empty caches. ``here``: the job
    runs in this process, whose filesystem the workers see (a job server's
    workers may see another: then a warning). ``scans``: each directory's."""
    for r in reads:
        directory, cache = r.cache_dir, scans[r.cache_dir]
        if cache.is_cached(r.key, streaming=False):
            continue
        partial = bool(cache.incomplete(r.key))
        if partial:
            what = "only a partial, damaged or mixed shard set"
        elif not cache.exists:
            what = "nothing: the directory does not exist"
        else:
            what = "no shards of it"
        line = f"{r.unique_name} reads {cachefs.join(directory, 'full', r.key)}*-*-of-*, which holds {what}"
        if here or is_url(directory):
            raise BeaminstError(
                f"{line}: the job would take {'what is there' if partial else 'nothing'} for the cache and end "
                "DONE on wrong data; instrument the original again (it writes what is missing)", directory,
            )
        warnings.append(f"{line} here: right only if the job server's workers see another filesystem")


def _clear_stale_shards(writes: tuple[CacheWrite, ...], scans: Mapping[str, CacheDir], warnings: list[str]) -> None:
    """Remove the shards a write replaces when they are no cache (a partial,
    damaged or mixed set): Beam's writer leaves a set of another shard count
    in place, and its reader would then read both as one. ``scans``: each
    directory's."""
    for w in writes:
        if not w.cache_dir or w.streaming:
            continue
        directory = w.cache_dir
        stale = scans[directory].stale_shards(w.key)
        if not stale:
            continue
        if is_url(directory):
            warnings.append(
                f"{w.key}: {len(stale)} shard file(s) in {cachefs.join(directory, 'full')} are no cache (a partial, "
                "damaged or mixed set) and stay beside the ones this run writes: remove them first"
            )
            continue
        for name in stale:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(directory, "full", name))
        warnings.append(
            f"{w.key}: removed {len(stale)} shard file(s) that were no cache (a partial, damaged or mixed set) "
            "before rewriting it"
        )


def _python_only_warnings(proto: Any) -> list[str]:
    found: dict[str, list[str]] = {}
    for t in proto.components.transforms.values():
        if not t.subtransforms and t.spec.urn in _PYTHON_ONLY:
            found.setdefault(t.spec.urn, []).append(t.unique_name)
    out = []
    for urn, names in sorted(found.items()):
        shown = ", ".join(sorted(names)[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        out.append(f"{shown}: {_PYTHON_ONLY[urn]} ({urn}); a job server may refuse it: run it locally instead")
    return out


def _recorded(recording: Recording, options: RunOptions) -> dict[str, Any]:
    keys = recording.summary()
    counted = [k["elements"] for k in keys]
    return {
        "cache_dir": recording.cache_dir,
        "max_duration": options.duration_limit,
        "max_bytes": options.size_limit,
        "bytes": sum(k["bytes"] or 0 for k in keys),
        "elements": None if any(c is None for c in counted) else sum(counted),
        "keys": keys,
    }


# Source URNs that --unbounded-urn cannot name for a replay: every ParDo (or
# pickled transform) would become a source; --infer-unbounded finds the one.
_GENERIC_URNS = urns.PAR_DO_FAMILY | {urns.PICKLED_TRANSFORM, ""}


def replay_rules(sources: Iterable[UnboundedSource]) -> SourceRules:
    """The source rules under which ``instrument`` finds ``sources`` (what a
    recording recorded) in the pipeline the recording was made from: none for
    Pub/Sub and unbounded Reads (always sources), ``--unbounded-urn`` for a
    source found by its URN alone (TestStream), else ``--infer-unbounded``."""
    named: list[str] = []
    infer = False
    for s in sources:
        if s.rule in ("pubsub", "read"):
            continue
        if s.urn in _GENERIC_URNS:
            infer = True
        else:
            named.append(s.urn)
    return SourceRules(tuple(sorted(set(named))), infer)


def next_steps(
    report: RunReport, recording: Recording | None, writes: tuple[CacheWrite, ...], index: GraphIndex
) -> list[str]:
    """The commands that come next in the interactive loop, for a successful
    run; for a failed one, what fixes a failure the machine causes."""
    from beaminst.commands.nextsteps import Invocation, after_failure, after_run

    if not report.ok:
        return after_failure(report.errors)
    if recording is not None:
        # The rules the recording's sources need, read from the proto; the
        # pipeline and manifest it came from are not in it: placeholders.
        how = Invocation("-", "-", recording.cache_dir or "DIR", replay_rules(recorded_sources(index, writes)))
        return after_run(how, recording=True)
    dirs = sorted({w.cache_dir for w in writes if w.cache_dir})
    if not dirs or nothing_cached(report):
        return []
    return after_run(Invocation("-", "-", dirs[0] if len(dirs) == 1 else "DIR"), recording=False, replayed=_replays(index))


def nothing_cached(report: RunReport) -> bool:
    """Every cache write of the run is a StreamingCache one that wrote no file
    (a streaming job whose sources gave no element, such as a replay of an
    empty recording): ``show`` and ``--reuse`` would find no cache."""
    writes = report.cache_writes
    return bool(writes) and all(w["streaming"] and not w["bytes"] for w in writes)


def _replays(index: GraphIndex) -> bool:
    """Whether the proto holds the TestStream instrument grafts to replay a recording."""
    return any(
        n.urn == urns.TEST_STREAM and index.transforms[t].unique_name.rsplit("/", 1)[-1] == TEST_STREAM
        for t, n in index.nodes.items()
    )
