"""``beaminst background-caching``: Interactive Beam's background caching job, on a proto.

Beam's ``PipelineInstrument.background_caching_pipeline_proto()`` takes the
user pipeline, appends a *capture* cache write (``ReifyBefore_WriteCache_<key>``
+ ``WriteCache_<key>`` over a ``StreamingCache``, ``is_capture=True``) after
every unbounded source, then cuts out everything that is not a source, a cache
write or a part of one. The pass list here, each linear in the pipeline:

1. :func:`plan_writes` (pure): one write per output of every unbounded source
   the analysis found, keyed by the cache key of that output's cacheable: the
   bound variable's key when the manifest binds the output, else the key of
   the synthetic variable the analysis binds it to (Beam's ``watch_sources``);
2. :func:`graft_captures`: Beam's capture writes (built by the SDK,
   templated per shape);
3. :func:`cut` marks what stays in one walk over the graph index: every source's whole
   subtree (Python's ``ReadFromPubSub`` is a composite around
   ``beam:transform:pubsub_read:v1``), the producers of anything a kept
   transform reads (a source found by ``--unbounded-urn`` or
   ``--infer-unbounded`` may have inputs), and, as *partial* composites, the
   enclosing composites of all of those;
   then cuts: partial composites keep only their kept parts and the inputs/outputs
   those produce, the root(s) list the kept top-level transforms then the
   writes, and :func:`beaminst.graph.prune.trim_components` drops every transform,
   PCollection, coder, windowing strategy and environment left unreferenced;
and :func:`beaminst.passes.rewrite.run`, the driver, validates the result like any input.

Differences from Beam 2.77, on purpose: a source nested in a user composite
stays reachable through that composite (Beam keeps only the source and drops
the composite from the root, so its proto fails ``from_runner_api`` with "No
producer"); environments are kept and unreferenced coders / windowing
strategies dropped (Beam copies every coder and strategy and no environment);
the writes are top-level under Beam's plain names (Beam nests them under the
runner copy's root label); every output of a multi-output source is recorded
(Beam records ``outputs[None]`` only); and a key that already has a recording
still gets its write, with a warning (Beam skips it: it clears the cache first).

The input proto is never mutated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from beaminst.analysis.analyze import Analysis, Cacheable
from beaminst.analysis.sources import UnboundedSource
from beaminst.errors import BeaminstError, ManifestError
from beaminst.graph.prune import trim_components
from beaminst.model.ids import IdAllocator
from beaminst.model.labels import WRITE_CACHE
from beaminst.options import RewriteOptions
from beaminst.passes.rewrite import (
    Capture,
    Report,
    Work,
    base_report,
    check_cache_dir,
    check_options_apply,
    copy_and_grafter,
    graft,
    names,
    python_root,
    run,
    set_top_level,
    top_level_list,
)


class NoUnboundedSourceError(BeaminstError):
    """Nothing to record: the pipeline has no unbounded source."""


@dataclass
class BackgroundCachingReport(Report):
    """``instrument``'s report plus the sources recorded; ``empty`` when the
    pipeline had no unbounded source and ``allow_empty`` wrote the root only."""

    sources: list[dict[str, Any]] = field(default_factory=list)
    empty: bool = False
    recorded_already: list[str] = field(default_factory=list)  # not in the JSON: recordings run would refuse to extend

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out["sources"] = self.sources
        out["empty"] = self.empty
        return out


@dataclass(frozen=True)
class PlannedWrite:
    source: UnboundedSource
    tag: str
    cacheable: Cacheable

    @property
    def pcollection(self) -> str:
        return self.cacheable.pcollection

    @property
    def cache_key(self) -> str:
        return self.cacheable.cache_key


def _output_tags(source: UnboundedSource) -> list[str]:
    """Main output first (Beam's ``outputs[None]``), then the other tags sorted."""
    tags = sorted(source.outputs)
    if "None" in source.outputs:
        tags.remove("None")
        tags.insert(0, "None")
    return tags


def plan_writes(analysis: Analysis) -> list[PlannedWrite]:
    """One capture write per unbounded source output, in Beam's visit order."""
    planned: list[PlannedWrite] = []
    owner: dict[str, PlannedWrite] = {}
    for s in analysis.unbounded_sources:
        for tag in _output_tags(s):
            c = analysis.cacheables[s.outputs[tag]]  # analysis binds every source output
            w = PlannedWrite(s, tag, c)
            other = owner.get(c.cache_key)
            if other is not None:
                raise ManifestError(
                    f"bindings/{c.var}: cache key {c.cache_key!r} is also the key of {other.cacheable.var!r}; "
                    "two recorded source outputs cannot share one cache file"
                )
            owner[c.cache_key] = w
            planned.append(w)
    return planned


def background_caching(analysis: Analysis, options: RewriteOptions) -> tuple[Any, BackgroundCachingReport]:
    """The background caching pipeline proto and a report of what was done.
    ``options``: the cache directory, ``allow_empty``, the workers, whether
    pickles are trusted (``test_stream_endpoint``, instrument's, is refused)."""
    check_options_apply(options, "background-caching")
    check_cache_dir(options, "background-caching", "the capture writes record there")
    analysis.cache.refuse_if_too_deep()
    work = Work(analysis, options, warnings=analysis.cache_problem_warnings)
    if not analysis.unbounded_sources:
        return run(EMPTY_PASSES, work, _report)  # type: ignore[return-value]
    return run(PASSES, work, _report)  # type: ignore[return-value]


def empty(work: Work) -> dict[str, Any]:
    """No unbounded source: the root only, with ``--allow-empty``."""
    if not work.options.allow_empty:
        rules = work.analysis.rules
        tried = "".join(f", {u}" for u in rules.urns) + (", any leaf with UNBOUNDED outputs (--infer-unbounded)"
                                                          if rules.infer else "")
        more = ("--unbounded-urn" if rules.infer else "--unbounded-urn or --infer-unbounded")
        raise NoUnboundedSourceError(
            "no unbounded source found, so there is nothing to record (sources: "
            f"ReadFromPubSub / pubsub_read, unbounded Read{tried}; add others with {more}); "
            "pass --allow-empty to write a root-only pipeline"
        )
    return {"output": empty_pipeline(work.index.pipeline),
            **work.warn("no unbounded source found: wrote an empty pipeline (root only)")}


def plan_pass(work: Work) -> dict[str, Any]:
    """The writes (:func:`plan_writes`)."""
    return {"plan": plan_writes(work.analysis)}


def grafter_pass(work: Work) -> dict[str, Any]:
    return copy_and_grafter(work, streaming=True)


def graft_captures(work: Work) -> dict[str, Any]:
    """The capture writes, one per planned source output."""
    cache = work.analysis.cache
    grafted, writes, warnings = [], [], []
    for w in work.plan:
        sub = work.grafter.write_template(w.pcollection, w.cache_key, is_capture=True)
        g = graft(work, sub, w.cache_key, w.pcollection, f"{WRITE_CACHE}{w.cache_key}")
        grafted.append(g)
        c = w.cacheable
        writes.append(Capture(w.pcollection, c.var, c.cache_key, c.synthetic, w.source.unique_name, w.tag,
                              names(work, g.top)))
        if cache.is_cached(c.cache_key, streaming=True):
            warnings.append(
                f"cache key {c.cache_key} ({c.var}) already has a recording in {cache.full_dir()}; "
                "a second recording appended to it would leave a file Beam cannot read, so beaminst run refuses "
                "until it is removed (instrument replays it as it is)"
            )
    return {"grafted": tuple(grafted), "writes": tuple(writes), **work.warn(*warnings)}


def cut(work: Work) -> dict[str, Any]:
    """Mark what stays, cut the rest, trim."""
    keep, partial = _mark(work.analysis)
    producer = work.index.producer
    working = work.working
    transforms = working.components.transforms
    for tid in partial:
        t = transforms[tid]
        t.subtransforms[:] = [s for s in t.subtransforms if s in keep or s in partial]
        for refs in (t.inputs, t.outputs):
            for tag in [tag for tag, pc in refs.items() if producer.get(pc) not in keep]:
                del refs[tag]
    top = [t for t in top_level_list(working) if t in keep or t in partial]
    set_top_level(working, top + [t for g in work.grafted for t in g.top])
    return {"output": trim_components(working)}


PASSES = (plan_pass, grafter_pass, graft_captures, cut)
EMPTY_PASSES = (empty,)


def _report(work: Work) -> BackgroundCachingReport:
    report = base_report(work, BackgroundCachingReport())
    report.sources = [
        {"transform_id": s.transform_id, "unique_name": s.unique_name, "urn": s.urn,
         "rule": s.rule, "outputs": dict(sorted(s.outputs.items()))}
        for s in work.analysis.unbounded_sources
    ]
    report.empty = not report.sources
    cache = work.analysis.cache
    report.recorded_already = sorted(
        {os.path.join(cache.full_dir(), w.cache_key) for w in report.writes if cache.is_cached(w.cache_key, streaming=True)}
    )
    return report


def _mark(analysis: Analysis) -> tuple[set[str], set[str]]:
    """(transforms kept whole, enclosing composites kept in part), one walk.

    Kept whole: each source's subtree, and the producer of every PCollection a
    kept transform reads that the kept set does not produce yet (followed
    upstream). Partial: the composites enclosing anything kept whole, up to
    (not including) the Python SDK's synthetic root."""
    index = analysis.index
    ts = index.transforms
    keep: set[str] = set()
    stack = [s.transform_id for s in analysis.unbounded_sources]
    needed: list[str] = []
    while stack:
        tid = stack.pop()
        if tid in keep:
            continue
        keep.add(tid)
        t = ts[tid]
        stack.extend(t.subtransforms)
        needed.extend(t.inputs.values())
        while needed:
            p = index.producer[needed.pop()]
            if p not in keep:
                stack.append(p)
    root = python_root(index.pipeline)
    partial: set[str] = set()
    for tid in keep:
        a = index.parent.get(tid)
        while a is not None and a != root and a not in keep and a not in partial:
            partial.add(a)
            a = index.parent.get(a)
    return keep, partial


def empty_pipeline(pipeline: Any) -> Any:
    """A copy of ``pipeline`` with nothing under its root (``--allow-empty``).

    The Python SDK's synthetic root is kept with no subtransforms; a pipeline
    whose roots are its top-level transforms (other SDKs) gets a synthetic
    root of its own, since a pipeline needs at least one."""
    working = type(pipeline)()
    working.CopyFrom(pipeline)
    if python_root(working) is not None:
        set_top_level(working, [])
    else:
        rid = IdAllocator(working.components.transforms).take("beaminst_root")
        working.components.transforms[rid].unique_name = ""
        working.root_transform_ids[:] = [rid]
    return trim_components(working)
