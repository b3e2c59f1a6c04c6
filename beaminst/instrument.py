"""``beaminst instrument``: Interactive Beam's instrumented pipeline, on a proto.

The pass list, in order (each a plain function of what came before):

1. :func:`plan` (pure): Beam's ``PipelineInstrument.instrument()`` decisions:
   which cacheable inputs are read from cache (cached *and* computed, or an
   unbounded source output), which cacheables are written (not cached yet, not
   produced inside an unbounded source), and which PCollections stop being
   targets because their consumers now read the cache;
2. graft reads: ``ReadCache_<key>`` + ``UnreifyAfter_ReadCache_<key>`` per read,
   or, with unbounded sources, one ``TestStream`` whose output tags are the
   cache keys (``_replace_with_cached_inputs``);
3. rewire every consumer's *main* input to the read (side inputs stay, as in Beam);
4. graft writes: ``ReifyBefore_WriteCache_<key>`` + ``WriteCache_<key>``;
5. prune to what contributes to the targets (``PipelineFragment``), then trim
   coders, windowing strategies and environments nothing references;
6. validate the result like any input.

The input proto is never mutated: the passes work on a copy.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from beaminst import urns
from beaminst.analysis import Analysis
from beaminst.beamproto import runner_api
from beaminst.errors import BeaminstError, CacheDirError, InternalError, ManifestError
from beaminst.graph import GraphIndex, build_index
from beaminst.labels import READ_CACHE, WRITE_CACHE
from beaminst.options import WorkerOptions
from beaminst.prune import necessary_transforms, trim_components
from beaminst.validate import check_unreferenced, validate


@dataclass(frozen=True)
class Plan:
    reads: dict[str, str]  # PCollection id -> cache key, in cacheable order
    writes: dict[str, str]
    ignored: frozenset[str]  # no longer targets
    side_effects: frozenset[str]  # outputs nobody consumes
    streaming: bool
    test_stream_tags: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]  # (var, why nothing happens for it)


@dataclass
class Report:
    output: str | None = None
    format: str | None = None
    writes: list[dict[str, Any]] = field(default_factory=list)
    reads: list[dict[str, Any]] = field(default_factory=list)
    rewired: list[dict[str, str]] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    test_stream: dict[str, Any] | None = None
    skipped: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    environment: dict[str, Any] | None = None  # where the grafted transforms run
    requirements: list[str] = field(default_factory=list)
    reused: list[dict[str, Any]] = field(default_factory=list)  # reads of caches --reuse found

    def to_json(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "format": self.format,
            "writes": self.writes,
            "reads": self.reads,
            "rewired": self.rewired,
            "pruned": self.pruned,
            "test_stream": self.test_stream,
            "skipped": self.skipped,
            "warnings": self.warnings,
            "environment": self.environment,
            "requirements": self.requirements,
            "reused": self.reused,
        }


def plan(analysis: Analysis) -> Plan:
    """Beam's instrumentation decisions, without touching the proto."""
    index = analysis.index
    consumed = set(index.consumers)
    side_effects = frozenset(pc for pc in index.producer if pc not in consumed)
    source_outputs = {pc for s in analysis.unbounded_sources for pc in s.outputs.values()}
    source_ids = {s.transform_id for s in analysis.unbounded_sources}

    reads: dict[str, str] = {}
    skipped: list[tuple[str, str]] = []
    for pc, c in analysis.cacheables.items():
        if pc in source_outputs:
            # Beam's TestStream has a tag for every watched source output, consumed or not.
            reads[pc] = c.cache_key
        elif c.cached and c.computed:
            if pc in consumed and any(not u.is_side for u in index.consumers[pc]):
                reads[pc] = c.cache_key
        elif c.cached and not c.computed and not c.synthetic:
            skipped.append((
                c.var,
                "cached but not listed as computed: recomputed, not rewritten (list it in the manifest's "
                "\"computed\", or pass --reuse, to read the cache back)",
            ))
        if c.under_source and pc not in source_outputs:
            source = next(a for a in index.ancestors(index.producer[pc]) if a in source_ids)
            raise ManifestError(
                f"bindings/{c.var}: PCollection {pc!r} is produced inside unbounded source "
                f"{index.transforms[source].unique_name!r}, which instrumentation replaces; bind the source's output instead",
                analysis.manifest_source,
            )

    ignored: set[str] = set(reads)
    writes: dict[str, str] = {}
    for pc, c in analysis.cacheables.items():
        if c.under_source:
            ignored.add(pc)  # recorded by the background caching job instead
        elif not c.cached:
            writes[pc] = c.cache_key
    streaming = analysis.has_unbounded_sources
    if not streaming:
        unbounded = runner_api().IsBounded.UNBOUNDED
        for pc in writes:
            if index.pcollections[pc].is_bounded == unbounded:
                raise BeaminstError(
                    f"PCollection {pc!r} ({analysis.cacheables[pc].var!r}) is UNBOUNDED but no unbounded source "
                    "was recognised, so Beam's bounded cache write cannot take it: name the source's URN with "
                    "--unbounded-urn, or use --infer-unbounded"
                )
    tags = tuple(sorted(set(reads.values()))) if streaming else ()
    return Plan(reads, writes, frozenset(ignored), side_effects, streaming, tags, tuple(skipped))


def instrument(
    analysis: Analysis,
    cache_dir: str,
    test_stream_endpoint: str | None = None,
    worker: WorkerOptions = WorkerOptions(),  # noqa: B008 - frozen
) -> tuple[Any, Report]:
    """The instrumented pipeline proto and a report of what was done."""
    if cache_dir is None:
        raise CacheDirError("instrument needs --cache-dir: the cache transforms write there")
    if os.path.exists(cache_dir) and not os.path.isdir(cache_dir):
        raise CacheDirError("--cache-dir names a file, not a directory", cache_dir)
    if not analysis.cacheables:
        raise NothingToInstrument(
            "nothing to instrument: no PCollection is bound to a variable and there is no unbounded source; "
            "bind some in a manifest (-m); `beaminst analyze PIPELINE` lists the PCollections to bind"
        )
    the_plan = plan(analysis)
    report = Report()
    report.skipped = [{"var": v, "reason": r} for v, r in the_plan.skipped]
    report.warnings.extend(f"cache: {problem}" for problem in analysis.cache.problems)
    report.warnings.extend(analysis.warnings)

    working = type(analysis.index.pipeline)()
    working.CopyFrom(analysis.index.pipeline)
    grafter = new_grafter(working, cache_dir, the_plan.streaming, worker, report)
    check_decodable(grafter, analysis, [*the_plan.writes, *([] if the_plan.streaming else the_plan.reads)])
    top_level = top_level_list(working)
    read_out = _graft_reads(grafter, the_plan, analysis, test_stream_endpoint, top_level, report)
    _rewire(working, analysis.index, read_out, report)
    write_targets = _graft_writes(grafter, the_plan, analysis, top_level, report)
    set_top_level(working, top_level)
    targets = (set(analysis.cacheables) | set(write_targets) | the_plan.side_effects) - the_plan.ignored
    if the_plan.streaming:
        # Beam's rule: the TestStream stays when it feeds a watched PCollection,
        # even one nobody consumes (a pipeline that is only a source).
        targets |= set(read_out.values())
    out = prune_to(working, targets)
    _report_what_survived(out, analysis.index, report)
    report.reused = [
        {k: r[k] for k in ("var", "pcollection", "cache_key")} for r in report.reads
        if analysis.cacheables[r["pcollection"]].reused
    ]
    report.warnings.extend(_idle_bindings(analysis, report))
    report_environment(grafter, out, report)
    check_output(out)
    return out, report


class NothingToInstrument(BeaminstError):
    """No binding and no unbounded source: the output would be the input."""


def _idle_bindings(analysis: Analysis, report: Report) -> list[str]:
    """Bindings the output neither writes nor reads, and that no ``skipped``
    entry explains: a cached, computed variable that only side inputs read,
    or that nothing reads at all."""
    acted = {e["var"] for e in (*report.writes, *report.reads, *report.skipped)}
    return [
        f"{c.var!r} is neither written nor read: it is cached and computed, but no transform reads it as a "
        "main input, so nothing in the output uses its cache"
        for c in analysis.cacheables.values()
        if c.var not in acted and not c.synthetic and not c.under_source
    ]


def new_grafter(working: Any, cache_dir: str, streaming: bool, worker: WorkerOptions, report: Report) -> Any:
    """The Grafter for ``working``, after checking that the workers that will
    run it can load what the installed Beam builds (a warning goes to ``report``)."""
    from beaminst.environments import check_worker_sdk
    from beaminst.graft import Grafter

    warning = check_worker_sdk(working, worker.target_sdk)
    if warning:
        report.warnings.append(warning)
    return Grafter(
        working, cache_dir, streaming, worker.environment_type, worker.environment_config, worker.trust_pickles
    )


def check_decodable(grafter: Any, analysis: Analysis, pcollections: Iterable[str]) -> None:
    """Refuse, naming every variable at once, bindings whose coder or
    windowing the Python SDK cannot decode (another SDK's own coders): Beam's
    Python cache transforms cannot be built for them."""
    from beaminst.errors import UnsupportedComponentError

    bad = []
    for pc in dict.fromkeys(pcollections):
        why = grafter.undecodable(pc)
        if why is not None:
            bad.append(f"{analysis.cacheables[pc].var!r} (PCollection {pc!r}: {why})")
    if bad:
        raise UnsupportedComponentError(
            "the Python SDK cannot decode what these bindings hold, so Beam's Python cache transforms cannot be built "
            f"for them: {'; '.join(bad)}; bind PCollections with Beam's standard coders (bytes, string_utf8, varint, "
            "kv, iterable, length_prefix, windowed_value, row) instead"
        )


def report_environment(grafter: Any, out: Any, report: Report) -> None:
    """Where the grafted transforms run, and the requirements the output declares."""
    report.requirements = list(out.requirements)
    eid = grafter.python_env_if_any
    if eid is None or eid not in out.components.environments:
        return
    env = out.components.environments[eid]
    report.environment = {"id": eid, "urn": env.urn, "added": grafter.added_environment == eid}
    if report.environment["added"]:
        report.warnings.append(
            f"the pipeline has no Python SDK environment: added {eid!r} ({env.urn}) for the grafted transforms; "
            "choose another with --environment-type / --environment-config"
        )


def _graft_reads(
    grafter: Any, the_plan: Plan, analysis: Analysis, endpoint: str | None, top_level: list[str], report: Report
) -> dict[str, str]:
    """Pass 2: one TestStream (unbounded sources) or a ReadCache per read;
    returns PCollection id -> the id that replaces it."""
    working = grafter.target
    var_of = {pc: c.var for pc, c in analysis.cacheables.items()}
    read_out: dict[str, str] = {}
    if the_plan.streaming and the_plan.test_stream_tags:
        res = grafter.graft(grafter.build_test_stream(list(the_plan.test_stream_tags)), None, None, "TestStream")
        top_level.extend(res.top)
        for pc, key in the_plan.reads.items():
            read_out[pc] = res.outputs[key]
            report.reads.append({"pcollection": pc, "var": var_of[pc], "cache_key": key, "via": "TestStream"})
        report.test_stream = _fill_test_stream(working, res.top[0], the_plan, analysis, endpoint, report)
        return read_out
    for pc, key in the_plan.reads.items():
        res = grafter.graft(grafter.build_read(pc, key), None, None, f"{READ_CACHE}{key}")
        top_level.extend(res.top)
        read_out[pc] = res.outputs["main"]
        # Unreify emits each element in the windows it was cached with, so the
        # read's output is the original PCollection again: same coder, same
        # windowing. (Beam leaves the template's global windowing here, and a
        # downstream GroupByKey then fails: "Cannot convert GlobalWindow to
        # _IntervalWindowBase".)
        original, replacement = working.components.pcollections[pc], working.components.pcollections[res.outputs["main"]]
        replacement.windowing_strategy_id = original.windowing_strategy_id
        replacement.coder_id = original.coder_id
        report.reads.append(
            {"pcollection": pc, "var": var_of[pc], "cache_key": key, "via": "ReadCache",
             "transforms": [working.components.transforms[t].unique_name for t in res.top]}
        )
    return read_out


def _rewire(working: Any, index: GraphIndex, read_out: dict[str, str], report: Report) -> None:
    """Pass 3: every consumer's main input reads the cache instead (side inputs
    stay, as in Beam's ReadCacheWireVisitor)."""
    for pc, new_pc in read_out.items():
        for use in index.main_consumers(pc):
            working.components.transforms[use.transform_id].inputs[use.tag] = new_pc
            if use.is_leaf:
                report.rewired.append(
                    {"transform": index.transforms[use.transform_id].unique_name, "tag": use.tag,
                     "from": pc, "to": new_pc}
                )


def _graft_writes(grafter: Any, the_plan: Plan, analysis: Analysis, top_level: list[str], report: Report) -> list[str]:
    """Pass 4: Beam's cache write after each PCollection to write; returns the
    writes' outputs (extra pruning targets, as ``_extended_targets`` in Beam)."""
    write_targets: list[str] = []
    for pc, key in the_plan.writes.items():
        res = grafter.graft(grafter.write_template(pc, key, is_capture=False), key, pc, f"{WRITE_CACHE}{key}")
        top_level.extend(res.top)
        write_targets.extend(res.outputs.values())
        report.writes.append(
            {"pcollection": pc, "var": analysis.cacheables[pc].var, "cache_key": key,
             "transforms": [grafter.target.components.transforms[t].unique_name for t in res.top]}
        )
    return write_targets


def _report_what_survived(out: Any, index: GraphIndex, report: Report) -> None:
    """Rewirings and reads of transforms pruning removed are not reported;
    the input's transforms that are gone are."""
    kept_names = {t.unique_name for t in out.components.transforms.values()}
    report.rewired = [r for r in report.rewired if r["transform"] in kept_names]
    report.reads = [r for r in report.reads if r["via"] == "TestStream" or r["transforms"][0] in kept_names]
    report.pruned = sorted(index.transforms[t].unique_name for t in index.transforms if t not in out.components.transforms)


def prune_to(pipeline: Any, targets: Iterable[str]) -> Any:
    """``PipelineFragment(targets).deduce_fragment()`` on a proto."""
    idx = build_index(pipeline)
    # Beam never prunes the Python SDK's one synthetic root; other SDKs' roots
    # are top-level transforms like any other, and pruned like them.
    root = python_root(pipeline)
    keep = necessary_transforms(idx.transforms, () if root is None else (root,), idx.parent, idx.producer, targets)
    if root is None:
        pipeline.root_transform_ids[:] = [r for r in pipeline.root_transform_ids if r in keep]
    # Transforms Beam never prunes inside keep everything under them.
    stack = [s for tid in keep if _skip_pruning(pipeline.components.transforms[tid]) for s in idx.transforms[tid].subtransforms]
    while stack:
        tid = stack.pop()
        if tid not in keep:
            keep.add(tid)
            stack.extend(idx.transforms[tid].subtransforms)
    for tid in keep:
        t = pipeline.components.transforms[tid]
        if t.subtransforms and not _skip_pruning(t):
            t.subtransforms[:] = [s for s in t.subtransforms if s in keep]
    for tid in [t for t in pipeline.components.transforms if t not in keep]:
        del pipeline.components.transforms[tid]
    return trim_components(pipeline)


def _skip_pruning(t: Any) -> bool:
    # pipeline_fragment.should_skip_pruning
    return t.spec.urn == "beam:transform:teststream:v1" or "_DataFrame_" in t.unique_name


def check_output(pipeline: Any) -> GraphIndex:
    """Every proto beaminst writes passes the input validator, and carries
    nothing unreferenced; a failure is a beaminst bug, reported as such."""
    try:
        idx = validate(pipeline)
        check_unreferenced(pipeline)
        missing = urns.transform_requirements(pipeline.components.transforms) - set(pipeline.requirements)
        if missing:
            raise BeaminstError(f"requirement {sorted(missing)[0]!r} is not declared")
    except BeaminstError as e:
        raise InternalError(f"produced an invalid pipeline ({e.message}); please report this") from None
    return idx


def python_root(pipeline: Any) -> str | None:
    """The Python SDK's single synthetic root, whose subtransforms are the top level."""
    if len(pipeline.root_transform_ids) != 1:
        return None
    rid = pipeline.root_transform_ids[0]
    r = pipeline.components.transforms[rid]
    if not r.inputs and not r.outputs and r.unique_name in ("", rid):
        return rid
    return None


def top_level_list(pipeline: Any) -> list[str]:
    root = python_root(pipeline)
    if root is not None:
        return list(pipeline.components.transforms[root].subtransforms)
    return list(pipeline.root_transform_ids)


def set_top_level(pipeline: Any, top: list[str]) -> None:
    root = python_root(pipeline)
    if root is not None:
        pipeline.components.transforms[root].subtransforms[:] = top
    else:
        pipeline.root_transform_ids[:] = top


def _fill_test_stream(
    working: Any, ts_id: str, the_plan: Plan, analysis: Analysis, endpoint: str | None, report: Report
) -> dict[str, Any]:
    from beaminst.beamproto import runner_api
    from beaminst.streaming import recorded_events

    t = working.components.transforms[ts_id]
    payload = runner_api().TestStreamPayload.FromString(t.spec.payload)
    info: dict[str, Any] = {"transform": t.unique_name, "tags": list(the_plan.test_stream_tags)}
    if endpoint:
        payload.endpoint.url = endpoint
        info["endpoint"] = endpoint
        info["events"] = 0
    else:
        events, missing = recorded_events(analysis.cache.path, list(the_plan.test_stream_tags))
        payload.events.extend(events)
        info["events"] = len(events)
        if missing:
            report.warnings.append(
                "nothing recorded yet for cache key(s) " + ", ".join(missing)
                + ": run the background-caching pipeline first, or pass --test-stream-endpoint"
            )
    t.spec.payload = payload.SerializeToString(deterministic=True)
    return info
