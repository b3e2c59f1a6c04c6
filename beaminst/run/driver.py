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

import time
from collections.abc import Callable, Iterable
from typing import Any

from beaminst.analysis.sources import UnboundedSource
from beaminst.cache.cachefs import filesystem_options, is_url
from beaminst.commands.api import load
from beaminst.errors import BeaminstError
from beaminst.graph.index import GraphIndex
from beaminst.model import urns
from beaminst.model.beamproto import runner_api
from beaminst.options import SourceRules
from beaminst.run.capture import CacheWrite, find_cache_writes, recorded_sources
from beaminst.run.job import Job, quiet_sdk_logs
from beaminst.run.options import RunOptions
from beaminst.run.recording import Recording, make_sink_dirs, plan_recording, written_bytes
from beaminst.run.report import RunReport
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
    if recording is None and (options.max_duration is not None or options.max_bytes is not None):
        warnings.append(
            "--max-duration and --max-bytes limit a recording: this proto has no capture write "
            "(it is not a background caching proto), so they do not apply"
        )
    unbounded = runner_api().IsBounded.UNBOUNDED
    streaming = any(pc.is_bounded == unbounded for pc in proto.components.pcollections.values())
    make_sink_dirs(writes)
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
    with filesystem_options(options.pipeline_args if any(is_url(w.cache_dir) for w in writes) else ()):
        report.cache_writes = [{**w.to_json(), "bytes": written_bytes(w)} for w in writes if not w.capture]
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
    """The commands that come next in the interactive loop, for a successful run."""
    from beaminst.commands.nextsteps import Invocation, after_run

    if not report.ok:
        return []
    if recording is not None:
        # The rules the recording's sources need, read from the proto; the
        # pipeline and manifest it came from are not in it: placeholders.
        how = Invocation("-", "-", recording.cache_dir or "DIR", replay_rules(recorded_sources(index, writes)))
        return after_run(how, recording=True)
    dirs = sorted({w.cache_dir for w in writes if w.cache_dir})
    if not dirs:
        return []
    return after_run(Invocation("-", "-", dirs[0] if len(dirs) == 1 else "DIR"), recording=False)
