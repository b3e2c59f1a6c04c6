"""Beam's own example pipelines (``apache_beam.examples``), built without running them.

Each example's ``run(argv)`` builds its pipeline and calls ``Pipeline.run``;
``--runner=beam_examples.CaptureRunner`` (Beam resolves a dotted runner name by
import) keeps the pipeline instead of running it. Inputs are small local
files (an example that checks its input at construction needs one to exist);
BigQuery and Pub/Sub names only have to parse: nothing is read at
construction.

Bindings are what a notebook user would hold in variables: the output of
every top-level transform, named after its label.
"""

from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apache_beam.runners.runner import PipelineResult, PipelineRunner, PipelineState

_CAPTURED: list[Any] = []


class DoneResult(PipelineResult):
    """What a run that ran nothing reports: DONE."""

    def __init__(self) -> None:
        super().__init__(PipelineState.DONE)

    def wait_until_finish(self, duration: Any = None) -> str:
        return PipelineState.DONE

    def metrics(self) -> Any:  # wordcount_with_metrics queries its counters after the run
        from apache_beam.metrics.metric import MetricResults

        class _NoMetrics(MetricResults):
            def query(self, filter: Any = None) -> dict[str, list[Any]]:
                return {"counters": [], "distributions": [], "gauges": [], "string_sets": [], "bounded_tries": []}

        return _NoMetrics()


class CaptureRunner(PipelineRunner):
    """Keeps the pipeline it is asked to run; runs nothing."""

    def run_pipeline(self, pipeline: Any, options: Any) -> PipelineResult:
        _CAPTURED.append(pipeline)
        return DoneResult()


TOPIC = "projects/beaminst-test/topics/in"
TABLE = "beaminst-test:examples.table"


def _args(data: Path) -> dict[str, list[str]]:
    text, out = str(data / "in.txt"), str(data / "out")
    game = str(data / "game.csv")
    return {
        "wordcount": ["--input", text, "--output", out],
        "wordcount_minimal": ["--input", text, "--output", out],
        "wordcount_debugging": ["--input", text, "--output", out],
        "wordcount_with_metrics": ["--input", text, "--output", out],
        "wordcount_dataframe": ["--input", text, "--output", out],
        "streaming_wordcount": ["--input_topic", TOPIC, "--output_topic", TOPIC],
        "streaming_wordcount_debugging": ["--input_topic", TOPIC, "--output_topic", TOPIC],
        "complete.autocomplete": ["--input", text, "--output", out],
        "complete.estimate_pi": ["--output", out],
        "complete.tfidf": ["--uris", text, "--output", out],
        "complete.top_wikipedia_sessions": ["--input", text, "--output", out],
        "complete.game.user_score": ["--input", game, "--output", out],
        "complete.game.hourly_team_score": ["--input", game, "--dataset", "examples", "--table", "t", "--project", "beaminst-test"],
        "complete.game.leader_board": ["--topic", TOPIC, "--dataset", "examples", "--project", "beaminst-test"],
        "complete.game.game_stats": ["--topic", TOPIC, "--dataset", "examples", "--project", "beaminst-test"],
        "cookbook.coders": ["--input", text, "--output", out],
        "cookbook.custom_ptransform": ["--input", text, "--output", out],
        "cookbook.group_with_coder": ["--input", text, "--output", out],
        "cookbook.mergecontacts": [
            "--input_email", text, "--input_phone", text, "--input_snailmail", text,
            "--output_tsv", out, "--output_stats", out + ".stats",
        ],
        "cookbook.multiple_output_pardo": ["--input", text, "--output", out],
        "cookbook.filters": ["--input", TABLE, "--output", TABLE],
        "cookbook.bigquery_tornadoes": ["--input", TABLE, "--output", TABLE],
        "cookbook.bigquery_side_input": ["--output", out, "--num_groups", "3"],
        "matrix_power": ["--input_matrix", text, "--input_vector", text, "--exponent", "2", "--output", out],
        "dataframe.wordcount": ["--input", text, "--output", out],
        "dataframe.flight_delays": ["--start_date", "2012-12-24", "--end_date", "2012-12-25", "--output", out],
    }


EXAMPLES = tuple(_args(Path(".")))
# Unbounded: Pub/Sub sources, so Interactive Beam also builds a background caching pipeline.
STREAMING = ("streaming_wordcount", "streaming_wordcount_debugging", "complete.game.leader_board", "complete.game.game_stats")


def write_inputs(data: Path) -> None:
    data.mkdir(parents=True, exist_ok=True)
    (data / "in.txt").write_text("the quick brown fox\njumps over the lazy dog\nthe end\n")
    # user,team,score,timestamp_ms,readable_time: the game examples' CSV.
    (data / "game.csv").write_text(
        "user1,team1,5,1447719060000,2015-11-16 16:11:03.921\nuser2,team1,3,1447719061000,2015-11-16 16:11:04.921\n"
    )


@dataclass
class Built:
    pipeline: Any
    bindings: dict[str, Any]  # var -> PCollection


def build(name: str, data: Path) -> Built:
    """The pipeline ``apache_beam.examples.<name>.run`` builds, and its bindings."""
    module = importlib.import_module(f"apache_beam.examples.{name}")
    run = getattr(module, "run", None) or module.main  # wordcount_minimal and _with_metrics: main(argv)
    argv = [*_args(data)[name], "--runner=beam_examples.CaptureRunner"]
    _CAPTURED.clear()
    if "save_main_session" in inspect.signature(run).parameters:
        run(argv, save_main_session=False)
    else:
        run(argv)
    assert _CAPTURED, f"{name}: no pipeline run"
    pipeline = _CAPTURED[0]  # custom_ptransform runs three variants of one pipeline: the first
    _CAPTURED.clear()
    return Built(pipeline, top_level_bindings(pipeline))


def top_level_bindings(pipeline: Any) -> dict[str, Any]:
    from apache_beam.pvalue import PCollection

    bindings: dict[str, Any] = {}
    for i, t in enumerate(pipeline.transforms_stack[0].parts):
        for tag, pc in t.outputs.items():
            if isinstance(pc, PCollection):
                label = re.sub(r"\W+", "_", t.full_label).strip("_")[:30] or "t"
                suffix = "" if tag is None else "_" + re.sub(r"\W+", "_", str(tag))
                bindings[f"{label}_{i}{suffix}"] = pc
    return bindings
