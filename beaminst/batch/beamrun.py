"""Running jobs as a Beam pipeline: ``Create(jobs) | Map(work)``.

Outcomes come back as JSON lines under DEST, are read back and deleted.
Workers must see SRC, DEST and the cache directory at the same absolute paths
and have beaminst installed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from beaminst.batch.jobs import Job, Outcome, failed, work
from beaminst.batch.sweep import results_prefix
from beaminst.errors import BeaminstError


def run_beam(
    jobs: list[Job], dest: str, runner: str, pipeline_args: Iterable[str], done: Callable[[Outcome], None]
) -> list[Outcome]:
    """Run ``jobs`` on ``runner``; ``done`` gets each outcome once the
    pipeline has finished. Raises BeaminstError if the pipeline fails."""
    import glob
    import json
    import shutil
    import uuid

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    prefix = results_prefix(dest, uuid.uuid4().hex)
    try:
        options = PipelineOptions(list(pipeline_args), runner=runner)
        with beam.Pipeline(options=options) as p:
            _ = (
                p
                | "Jobs" >> beam.Create(jobs)
                # Explicit hints: the TypedDict annotations are for readers, not for Beam's coders.
                | "Rewrite" >> beam.Map(work).with_input_types(Any).with_output_types(Any)
                | "Encode" >> beam.Map(lambda r: json.dumps(r, sort_keys=True)).with_output_types(str)
                | "Results" >> beam.io.WriteToText(prefix, file_name_suffix=".jsonl")
            )
        by_file: dict[str, Outcome] = {}  # a retried bundle must not count twice
        for shard in sorted(glob.glob(glob.escape(prefix) + "*.jsonl")):
            with open(shard, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        outcome = json.loads(line)
                        by_file[outcome["result"]["file"]] = outcome
        outcomes = list(by_file.values())
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
    for job in jobs:  # a runner that drops elements must not look like success
        if job["file"] not in by_file:
            outcomes.append(failed(job, f"{job['input']}: no result came back from the runner"))
    for outcome in outcomes:
        done(outcome)
    return outcomes
