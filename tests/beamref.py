"""Running Beam's own PipelineInstrument the way its recording flow does.

Beam reads from cache only when it instruments a *runner copy* derived from
the user pipeline (``Pipeline.from_runner_api`` + ``add_derived_pipeline``),
so that is what :func:`beam_instrument` does.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.runners.interactive import background_caching_job, utils
from apache_beam.runners.interactive import interactive_environment as ie
from apache_beam.runners.interactive import pipeline_instrument as instr
from apache_beam.runners.interactive.caching.cacheable import CacheKey

import beaminst


@dataclass
class BeamSide:
    proto: Any  # Beam's instrumented_pipeline_proto()
    background: Any | None  # background_caching_pipeline_proto() when streaming
    keys: dict[str, str]  # var -> Beam cache key (synthetic vars included)
    bindings: dict[str, Any]  # var -> PCollection (synthetic vars included)
    cache_dir: str
    root_label: str
    instrument: Any


def watched(pipeline: Any, bindings: dict[str, Any], streaming: bool) -> dict[str, Any]:
    ie.current_env().watch(bindings)
    if streaming:
        utils.watch_sources(pipeline)  # what InteractiveRunner does before each run
    return {v: pc for v, pc in utils.pcoll_by_name().items() if getattr(pc, "pipeline", None) is pipeline}


def beam_instrument(
    pipeline: Any, bindings: dict[str, Any], cached: dict[str, list[Any]] | None = None, computed: tuple[str, ...] = ()
) -> BeamSide:
    """Beam's instrumented proto for ``pipeline`` with ``bindings`` watched,
    ``cached`` (var -> elements) present in its cache and ``computed`` marked."""
    cached = cached or {}
    ie.new_env()
    ie.current_env().add_user_pipeline(pipeline)
    streaming = utils.has_unbounded_sources(pipeline)
    all_bindings = watched(pipeline, bindings, streaming)
    keys = {var: CacheKey.from_pcoll(var, pc).to_str() for var, pc in all_bindings.items()}
    cm = ie.current_env().get_cache_manager(pipeline, create_if_absent=True)
    if streaming:
        # Switch to the StreamingCache now, as PipelineInstrument would: the
        # switch cleans up the file-based manager's directory.
        background_caching_job.has_source_to_cache(pipeline)
        cm = ie.current_env().get_cache_manager(pipeline)
    cache_dir = cm._cache_dir
    for var, elements in cached.items():
        if streaming:
            # StreamingCache.exists is a plain file check.
            os.makedirs(os.path.join(cache_dir, "full"), exist_ok=True)
            open(os.path.join(cache_dir, "full", keys[var]), "wb").close()
        else:
            cm.write(list(elements), "full", keys[var])
    ie.current_env().mark_pcollection_computed([all_bindings[v] for v in computed])
    runner_copy = beam.Pipeline.from_runner_api(pipeline.to_runner_api(), pipeline.runner, pipeline._options)
    ie.current_env().add_derived_pipeline(pipeline, runner_copy)
    root_label = runner_copy._current_transform().full_label
    pin = instr.build_pipeline_instrument(runner_copy)
    proto = pin.instrumented_pipeline_proto()
    background = pin.background_caching_pipeline_proto() if streaming else None
    return BeamSide(proto, background, keys, all_bindings, cache_dir, root_label, pin)


def export_with_keys(pipeline: Any, side: BeamSide, stem: str, computed: tuple[str, ...] = ()) -> tuple[str, str]:
    """Save the user pipeline plus a manifest pinning Beam's cache keys."""
    return beaminst.export(pipeline, side.bindings, stem, computed=computed, cache_keys=side.keys)


def manifest_vars(path: str) -> set[str]:
    with open(path) as f:
        return set(json.load(f)["bindings"])
