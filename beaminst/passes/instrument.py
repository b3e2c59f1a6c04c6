"""``beaminst instrument``: Interactive Beam's instrumented pipeline, on a proto.

:data:`PASSES`, run in order by :func:`beaminst.passes.rewrite.run` (each returns
what it made):

1. :func:`plan_pass` (pure, :func:`plan`): Beam's ``PipelineInstrument.instrument()``
   decisions: which cacheable inputs are read from cache (cached *and*
   computed, or an unbounded source output), which cacheables are written
   (not cached yet, not produced inside an unbounded source), and which
   PCollections stop being targets because their consumers now read the cache;
2. :func:`grafter_pass`: the working copy and the Grafter, after refusing
   bindings the Python SDK cannot decode;
3. :func:`graft_reads`: ``ReadCache_<key>`` + ``UnreifyAfter_ReadCache_<key>``
   per read, or, with unbounded sources, one ``TestStream`` whose output tags
   are the cache keys (``_replace_with_cached_inputs``);
4. :func:`rewire`: every consumer's *main* input to the read (side inputs
   stay, as in Beam);
5. :func:`graft_writes`: ``ReifyBefore_WriteCache_<key>`` + ``WriteCache_<key>``;
6. :func:`pruning_targets` (pure): what pruning keeps producing, the writes'
   outputs among them (Beam's ``_extended_targets``);
7. :func:`prune`: to what contributes to the targets (``PipelineFragment``),
   from the input's index extended by the grafts, then trim coders,
   windowing strategies and environments nothing references;
8. :func:`report_outcome`: what survived pruning, and idle bindings.

The driver then validates the output like any input. The input proto is
never mutated: the passes work on a copy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from beaminst.analysis.analyze import Analysis
from beaminst.errors import BeaminstError, ManifestError
from beaminst.model.beamproto import runner_api
from beaminst.model.labels import READ_CACHE, WRITE_CACHE
from beaminst.options import RewriteOptions
from beaminst.passes.rewrite import (
    Read,
    Report,
    Rewiring,
    Skip,
    Work,
    Write,
    base_report,
    check_cache_dir,
    check_options_apply,
    copy_and_grafter,
    extend_index,
    graft,
    names,
    prune_to,
    run,
    set_top_level,
    top_level_with,
)


@dataclass(frozen=True)
class Plan:
    reads: dict[str, str]  # PCollection id -> cache key, in cacheable order
    writes: dict[str, str]
    ignored: frozenset[str]  # no longer targets
    side_effects: frozenset[str]  # outputs nobody consumes
    streaming: bool
    test_stream_tags: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]  # (var, why nothing happens for it)


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


def instrument(analysis: Analysis, options: RewriteOptions) -> tuple[Any, Report]:
    """The instrumented pipeline proto and a report of what was done.
    ``options``: the cache directory, the TestStream endpoint, the workers,
    whether pickles are trusted (``allow_empty``, background-caching's, is refused)."""
    check_options_apply(options, "instrument")
    check_cache_dir(options, "instrument", "the cache transforms write there")
    analysis.cache.refuse_if_too_deep()
    if not analysis.cacheables:
        raise NothingToInstrument(
            "nothing to instrument: no PCollection is bound to a variable and there is no unbounded source; "
            "bind some in a manifest (-m); `beaminst analyze PIPELINE` lists the PCollections to bind"
        )
    work = Work(analysis, options, warnings=(*analysis.cache_problem_warnings, *analysis.warnings))
    return run(PASSES, work, _report)


class NothingToInstrument(BeaminstError):
    """No binding and no unbounded source: the output would be the input."""


def plan_pass(work: Work) -> dict[str, Any]:
    """The decisions (:func:`plan`)."""
    the_plan = plan(work.analysis)
    return {"plan": the_plan, "skipped": tuple(Skip(v, r) for v, r in the_plan.skipped)}


def grafter_pass(work: Work) -> dict[str, Any]:
    """The working copy, and the Grafter for it; then refuse bindings the
    Python SDK cannot decode before building anything."""
    made = copy_and_grafter(work, work.plan.streaming)
    p = work.plan
    check_decodable(made["grafter"], work.analysis, [*p.writes, *([] if p.streaming else p.reads)])
    return made


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
            "Beam's Python cache transforms cannot be built for these bindings, whose coders the Python SDK "
            f"cannot use: {'; '.join(bad)}; bind PCollections with Beam's standard coders (bytes, string_utf8, varint, "
            "kv, iterable, length_prefix, windowed_value, row) instead"
        )


def graft_reads(work: Work) -> dict[str, Any]:
    """One TestStream (unbounded sources) or a ReadCache per read;
    makes ``read_out`` (PCollection id -> the id that replaces it)."""
    the_plan, grafter = work.plan, work.grafter
    var_of = {pc: c.var for pc, c in work.analysis.cacheables.items()}
    read_out: dict[str, str] = {}
    reads: list[Read] = []
    if the_plan.streaming and the_plan.test_stream_tags:
        g = graft(work, grafter.build_test_stream(list(the_plan.test_stream_tags)), None, None, "TestStream")
        for pc, key in the_plan.reads.items():
            read_out[pc] = g.outputs[key]
            reads.append(Read(pc, var_of[pc], key, "TestStream"))
        info, warnings = _fill_test_stream(work.working, g.top[0], the_plan, work.analysis, work.options.test_stream_endpoint)
        return {"grafted": (g,), "read_out": read_out, "reads": tuple(reads), "test_stream": info,
                **work.warn(*warnings)}
    pcs = work.working.components.pcollections
    grafted = []
    for pc, key in the_plan.reads.items():
        g = graft(work, grafter.build_read(pc, key), None, None, f"{READ_CACHE}{key}")
        grafted.append(g)
        read_out[pc] = g.outputs["main"]
        # Unreify emits each element in the windows it was cached with, so the
        # read's output is the original PCollection again: same coder, same
        # windowing. (Beam leaves the template's global windowing here, and a
        # downstream GroupByKey then fails: "Cannot convert GlobalWindow to
        # _IntervalWindowBase".)
        original, replacement = pcs[pc], pcs[g.outputs["main"]]
        replacement.windowing_strategy_id = original.windowing_strategy_id
        replacement.coder_id = original.coder_id
        reads.append(Read(pc, var_of[pc], key, "ReadCache", names(work, g.top)))
    return {"grafted": tuple(grafted), "read_out": read_out, "reads": tuple(reads)}


def rewire(work: Work) -> dict[str, Any]:
    """Every consumer's main input reads the cache instead (side inputs
    stay, as in Beam's ReadCacheWireVisitor)."""
    index, transforms = work.index, work.working.components.transforms
    rewired = []
    for pc, new_pc in work.read_out.items():
        for use in index.main_consumers(pc):
            transforms[use.transform_id].inputs[use.tag] = new_pc
            if use.is_leaf:
                rewired.append(Rewiring(index.transforms[use.transform_id].unique_name, use.tag, pc, new_pc))
    return {"rewired": tuple(rewired)}


def graft_writes(work: Work) -> dict[str, Any]:
    """Beam's cache write after each PCollection to write."""
    grafted, writes = [], []
    for pc, key in work.plan.writes.items():
        sub = work.grafter.write_template(pc, key, is_capture=False)
        g = graft(work, sub, key, pc, f"{WRITE_CACHE}{key}")
        grafted.append(g)
        writes.append(Write(pc, work.analysis.cacheables[pc].var, key, names(work, g.top)))
    outputs = frozenset(pc for g in grafted for pc in g.outputs.values())
    return {"grafted": (*work.grafted, *grafted), "writes": tuple(writes), "write_outputs": outputs}


def pruning_targets(work: Work) -> dict[str, Any]:
    """What pruning keeps producing: the cacheables, the writes' outputs
    (``_extended_targets`` in Beam) and the outputs nobody consumes, less
    what now reads the cache."""
    p = work.plan
    targets = (set(work.analysis.cacheables) | work.write_outputs | p.side_effects) - p.ignored
    if p.streaming:
        # Beam's rule: the TestStream stays when it feeds a watched PCollection,
        # even one nobody consumes (a pipeline that is only a source).
        targets |= set(work.read_out.values())
    return {"targets": frozenset(targets)}


def prune(work: Work) -> dict[str, Any]:
    """The grafted pieces join the top level, then everything that
    does not contribute to the targets goes, and what nobody references."""
    working = work.working
    set_top_level(working, top_level_with(working, work.grafted))
    parent, producer, nodes = extend_index(work.index, working, work.grafted)
    return {"output": prune_to(working, work.targets, parent, producer, nodes)}


def report_outcome(work: Work) -> dict[str, Any]:
    """Rewirings and reads of transforms pruning removed are not
    reported; bindings the output neither writes nor reads are warned about."""
    kept = {t.unique_name for t in work.output.components.transforms.values()}
    reads = tuple(r for r in work.reads if r.transforms is None or r.transforms[0] in kept)
    made = {"rewired": tuple(r for r in work.rewired if r.transform in kept), "reads": reads}
    acted = {e.var for e in (*work.writes, *reads, *work.skipped)}
    return {**made, **work.warn(*_idle_bindings(work.analysis, acted, kept))}


PASSES = (plan_pass, grafter_pass, graft_reads, rewire, graft_writes, pruning_targets, prune, report_outcome)


def _report(work: Work) -> Report:
    report = base_report(work, Report())
    report.reused = [r for r in report.reads if work.analysis.cacheables[r.pcollection].reused]
    return report


def _idle_bindings(analysis: Analysis, acted: set[str], kept: set[str]) -> list[str]:
    """Bindings the output neither writes nor reads, and that no ``skipped``
    entry explains: a cached, computed variable that only side inputs read,
    or that nothing reads at all. One ``--reuse`` found cached is reuse
    working (what reads it reads a later cache), unless its producer still
    runs (``kept`` names what the output holds): no read replaces it, and
    Beam keeps a transform whose output nothing consumes (a side effect: it
    may write somewhere) or that feeds a side input; said then, as a cost the
    user may not expect on every re-run."""
    index = analysis.index
    idle, rerun = [], []
    for c in analysis.cacheables.values():
        if c.var in acted or c.synthetic or c.under_source:
            continue
        if not c.reused:
            idle.append(
                f"{c.var!r} is neither written nor read: it is cached and computed, but no transform reads it as a "
                "main input, so nothing in the output uses its cache"
            )
            continue
        name = index.producer_name(c.pcollection)
        if name not in kept:
            continue
        consumers = index.consumers.get(c.pcollection, ())
        if len(index.nodes[index.producer[c.pcollection]].outputs) > 1:
            why = "it makes other outputs too, which the pipeline still needs"
        elif not consumers:
            why = "nothing reads it, and Beam keeps a transform whose output nothing reads (it may write somewhere)"
        elif all(u.is_side for u in consumers):
            why = "only side inputs read it, and Beam reads a cache back for main inputs only"
        else:
            why = "no transform the output keeps reads it as a main input"
        rerun.append(f"{c.var!r} is cached, yet {name!r}, which produces it, still runs: {why}; its output is not cached again")
    return idle + rerun


def _fill_test_stream(
    working: Any, ts_id: str, the_plan: Plan, analysis: Analysis, endpoint: str | None
) -> tuple[dict[str, Any], list[str]]:
    from beaminst.cache.streaming import recorded_events

    t = working.components.transforms[ts_id]
    payload = runner_api().TestStreamPayload.FromString(t.spec.payload)
    info: dict[str, Any] = {"transform": t.unique_name, "tags": list(the_plan.test_stream_tags)}
    warnings = []
    if endpoint:
        payload.endpoint.url = endpoint
        info["endpoint"] = endpoint
        info["events"] = info["elements"] = 0
    else:
        events, missing = recorded_events(analysis.cache.path, list(the_plan.test_stream_tags))
        payload.events.extend(events)
        info["events"] = len(events)
        # What run's recording report counts: an element event can hold several.
        info["elements"] = sum(len(e.element_event.elements) for e in events if e.HasField("element_event"))
        if missing:
            warnings.append(
                "nothing recorded yet for cache key(s) " + ", ".join(missing)
                + ": run the background-caching pipeline first, or pass --test-stream-endpoint"
            )
    t.spec.payload = payload.SerializeToString(deterministic=True)
    return info, warnings
