"""The driver both rewriting commands run, and what their passes share.

``instrument`` and ``background-caching`` are each a tuple of passes, in the
style of Beam's ``fn_api_runner/translations.py``: a pass is a plain function
of the working state (:class:`Work`) that returns what it made, as a mapping
of ``Work`` fields, and :func:`run` applies each result in turn. The input's
graph index (built and validated once, at load) is the only index: each graft
returns the nodes of what it wrote, and pruning extends the input's maps with
them and with the input transforms a pass changed (:func:`extend_index`) instead
of re-indexing the working copy. The output is validated once, by :func:`run`,
whatever the command, reading again only what differs from the input.

One thing stays shared and mutable: the working copy the grafter writes
Beam's subgraphs into (``Work.working``); passes never write to the input.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from beaminst.analysis.analyze import Analysis
from beaminst.errors import BeaminstError, CacheDirError, InternalError, OptionError
from beaminst.graph.index import GraphIndex, Node, Snapshot, read_node, stable_topological
from beaminst.graph.prune import necessary_transforms, trim_components
from beaminst.graph.validate import validate_output
from beaminst.model import urns
from beaminst.options import RewriteOptions

if TYPE_CHECKING:
    from beaminst.graft import Grafter, GraftResult


@dataclass(frozen=True)
class Write:
    """A cache write grafted after ``pcollection``."""

    pcollection: str
    var: str
    cache_key: str
    transforms: tuple[str, ...]  # unique names of its top-level transforms

    def to_json(self) -> dict[str, Any]:
        return {"pcollection": self.pcollection, "var": self.var, "cache_key": self.cache_key,
                "transforms": list(self.transforms)}


@dataclass(frozen=True)
class Capture:
    """A background-caching capture write after an unbounded source's output."""

    pcollection: str
    var: str
    cache_key: str
    synthetic: bool  # the variable is one beaminst made up for an unbound source output
    source: str  # the source's unique name
    tag: str  # which of its outputs
    transforms: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"pcollection": self.pcollection, "var": self.var, "cache_key": self.cache_key,
                "synthetic": self.synthetic, "source": self.source, "tag": self.tag,
                "transforms": list(self.transforms)}


@dataclass(frozen=True)
class Read:
    """A PCollection read back from the cache (``via`` ReadCache or TestStream)."""

    pcollection: str
    var: str
    cache_key: str
    via: str
    transforms: tuple[str, ...] | None = None  # a ReadCache's; the TestStream is reported on its own

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pcollection": self.pcollection, "var": self.var, "cache_key": self.cache_key,
                               "via": self.via}
        if self.transforms is not None:
            out["transforms"] = list(self.transforms)
        return out


@dataclass(frozen=True)
class Rewiring:
    """A main input moved from ``source`` to the read replacing it."""

    transform: str  # unique name
    tag: str
    source: str  # PCollection ids
    to: str

    def to_json(self) -> dict[str, str]:
        return {"transform": self.transform, "tag": self.tag, "from": self.source, "to": self.to}


@dataclass(frozen=True)
class Skip:
    """A binding nothing happens for, and why."""

    var: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"var": self.var, "reason": self.reason}


@dataclass
class Report:
    """What a rewrite did; typed entries, turned into JSON only by :meth:`to_json`."""

    output: str | None = None
    format: str | None = None
    writes: list[Write] | list[Capture] = field(default_factory=list)
    reads: list[Read] = field(default_factory=list)
    rewired: list[Rewiring] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    test_stream: dict[str, Any] | None = None
    skipped: list[Skip] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    environment: dict[str, Any] | None = None  # where the grafted transforms run
    requirements: list[str] = field(default_factory=list)
    reused: list[Read] = field(default_factory=list)  # reads of caches --reuse found
    # Not in the JSON, for the next step: a Python SDK pipeline, which Beam's
    # Python runners rebuild in process (another SDK's: the Job API runs it).
    runs_in_process: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "format": self.format,
            "writes": [w.to_json() for w in self.writes],
            "reads": [r.to_json() for r in self.reads],
            "rewired": [r.to_json() for r in self.rewired],
            "pruned": self.pruned,
            "test_stream": self.test_stream,
            "skipped": [s.to_json() for s in self.skipped],
            "warnings": self.warnings,
            "environment": self.environment,
            "requirements": self.requirements,
            "reused": [{"var": r.var, "pcollection": r.pcollection, "cache_key": r.cache_key} for r in self.reused],
        }


@dataclass(frozen=True)
class Work:
    """The state passes read; each pass returns the fields it made."""

    analysis: Analysis
    options: RewriteOptions
    working: Any = None  # the input's copy grafts are written into (a Pipeline proto)
    grafter: Grafter | None = None
    plan: Any = None  # the command's pure decisions (instrument.Plan; background_caching's planned writes)
    grafted: tuple[GraftResult, ...] = ()  # in graft order
    read_out: Mapping[str, str] = field(default_factory=dict)  # PCollection -> the read replacing it
    write_outputs: frozenset[str] = frozenset()  # the grafted writes' outputs
    targets: frozenset[str] = frozenset()  # what pruning keeps producing
    output: Any = None  # the rewritten Pipeline proto
    writes: tuple[Write | Capture, ...] = ()
    reads: tuple[Read, ...] = ()
    rewired: tuple[Rewiring, ...] = ()
    skipped: tuple[Skip, ...] = ()
    warnings: tuple[str, ...] = ()
    test_stream: dict[str, Any] | None = None

    @property
    def index(self) -> GraphIndex:
        return self.analysis.index

    def warn(self, *messages: str) -> dict[str, Any]:
        """A pass result adding ``messages`` to the warnings."""
        return {"warnings": (*self.warnings, *messages)}


Pass = Callable[[Work], Mapping[str, Any]]


def run(passes: Sequence[Pass], work: Work, report: Callable[[Work], Report]) -> tuple[Any, Report]:
    """Run ``passes`` in order, then validate the output: the one place every
    rewritten proto is checked. ``report`` turns the final state into the
    command's report. The input's snapshot, taken first, is what the output
    check compares against (what a pass did to the input, by mistake, would
    not hide). The cyclic collector is paused meanwhile: the passes build
    graph-sized structures with no cycles (:mod:`beaminst.graph.gcpause`;
    what the Beam SDK leaves when it builds a template waits for the resume)."""
    from beaminst.graph.gcpause import paused_gc

    with paused_gc():
        snapshot = work.index.snapshot()
        for step in passes:
            made = step(work)
            if made:
                work = replace(work, **made)
        check_output(work.output, snapshot)
        return work.output, report(work)


def check_options_apply(options: RewriteOptions, command: str) -> None:
    """What only the other command takes is refused, not silently ignored
    (the CLI never passes it; a library caller, or batch's spec, might)."""
    if options.allow_empty and command != "background-caching":
        raise OptionError(f"allow_empty (--allow-empty) only applies to background-caching, not {command}")
    if options.test_stream_endpoint is not None and command != "instrument":
        raise OptionError(f"test_stream_endpoint (--test-stream-endpoint) only applies to instrument, not {command}")


def check_cache_dir(options: RewriteOptions, command: str, what: str) -> None:
    cache_dir = options.cache_dir
    if cache_dir is None:
        raise CacheDirError(f"{command} needs --cache-dir: {what}")
    if os.path.exists(cache_dir) and not os.path.isdir(cache_dir):
        raise CacheDirError("--cache-dir names a file, not a directory", cache_dir)


def base_report(work: Work, report: Report) -> Report:
    """Fill what every command reports from the final state."""
    report.writes = list(work.writes)  # type: ignore[assignment]
    report.reads = list(work.reads)
    report.rewired = list(work.rewired)
    report.skipped = list(work.skipped)
    report.test_stream = work.test_stream
    out = work.output
    kept = out.components.transforms
    report.pruned = sorted(t.unique_name for tid, t in work.index.transforms.items() if tid not in kept)
    report.requirements = list(out.requirements)
    warnings = list(work.warnings)
    report.environment = None
    eid = work.grafter.python_env_if_any if work.grafter is not None else None
    if eid is not None and eid in out.components.environments:
        env = out.components.environments[eid]
        added = work.grafter.added_environment == eid
        report.environment = {"id": eid, "urn": env.urn, "added": added}
        if added:
            chosen = work.options.worker.environment_type or work.options.worker.environment_config
            warnings.append(
                f"the pipeline has no Python SDK environment: added {eid!r} ({env.urn}) for the grafted transforms"
                + ("; built from --environment-type / --environment-config" if chosen
                   else "; choose another with --environment-type / --environment-config")
            )
        elif work.options.worker.environment_type or work.options.worker.environment_config:
            # Only an added environment is built from them; the pipeline's own is never replaced.
            warnings.append(
                f"--environment-type / --environment-config not used: the grafted transforms run in the pipeline's "
                f"own Python SDK environment {eid!r} ({env.urn}), as the rest of its Python transforms do"
                + ("; that placeholder is replaced when the job is submitted (beaminst run --environment-type ...)"
                   if env.urn == urns.ENV_DEFAULT else "")
            )
    report.warnings = warnings
    # Beam's Python runners rebuild one root of a Python SDK pipeline; a
    # pipeline that had no Python environment (one was added) is another SDK's.
    added = report.environment is not None and report.environment["added"]
    report.runs_in_process = len(out.root_transform_ids) == 1 and not added
    return report


# ---------------------------------------------------------------------------
# Passes both commands run


def copy_and_grafter(work: Work, streaming: bool) -> dict[str, Any]:
    """The working copy and the Grafter writing into it, after checking that
    the workers that will run it can load what the installed Beam builds."""
    from beaminst.graft import Grafter  # the Beam SDK only if a template must be built
    from beaminst.graft.environments import check_worker_sdk

    working = type(work.index.pipeline)()
    working.CopyFrom(work.index.pipeline)
    made: dict[str, Any] = {"working": working}
    options, worker = work.options, work.options.worker
    warnings = check_worker_sdk(
        working, worker.target_sdk, work.index.nodes, worker.environment_type, worker.environment_config
    )
    if warnings:
        made.update(work.warn(*warnings))
    made["grafter"] = Grafter(
        working, options.cache_dir, streaming, worker.environment_type, worker.environment_config,
        options.trust_pickles, work.index.nodes,  # the copy's, as it is a copy
    )
    return made


def graft(work: Work, sub: Any, key: str | None, input_pc: str | None, label: str) -> GraftResult:
    """Graft ``sub`` into the working copy; returns what it added."""
    return work.grafter.graft(sub, key, input_pc, label)


def names(work: Work, transform_ids: Iterable[str]) -> tuple[str, ...]:
    ts = work.working.components.transforms
    return tuple(ts[t].unique_name for t in transform_ids)


# ---------------------------------------------------------------------------
# The hierarchy's top level


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


def top_level_with(pipeline: Any, grafted: Iterable[GraftResult]) -> list[str]:
    """The top level with the grafted pieces' tops joined. The Python SDK's
    root gets them after its own, as Beam's PipelineInstrument appends them.
    Another SDK's top level is the proto's ``root_transform_ids``, which the
    model wants in shallow topological order: appended, a cache read would
    come after what reads it, so the list is sorted by what each consumes,
    ties (and an order already topological) kept as they were."""
    top = top_level_list(pipeline) + [t for g in grafted for t in g.top]
    if python_root(pipeline) is not None:
        return top
    return _shallow_topological(pipeline.components.transforms, top)


def _shallow_topological(transforms: Any, order: list[str]) -> list[str]:
    """``order`` sorted so each transform comes after those producing its
    inputs (:func:`beaminst.graph.index.stable_topological`). A cycle, which
    validation reports, leaves what it holds back at the end, in its order."""
    made_by: dict[str, str] = {}
    for t in order:
        ins = set(transforms[t].inputs.values())
        # A pass-through (an output that is also its input) is no producer of it.
        made_by.update({pc: t for pc in transforms[t].outputs.values() if pc not in ins})
    upstream = {t: {made_by[pc] for pc in transforms[t].inputs.values() if made_by.get(pc, t) != t} for t in order}
    out = stable_topological(order, upstream)
    placed = set(out)
    return out + [t for t in order if t not in placed]


def set_top_level(pipeline: Any, top: list[str]) -> None:
    root = python_root(pipeline)
    if root is not None:
        pipeline.components.transforms[root].subtransforms[:] = top
    else:
        pipeline.root_transform_ids[:] = top


# ---------------------------------------------------------------------------
# Pruning, from the one index


def extend_index(
    index: GraphIndex, pipeline: Any, grafted: Iterable[GraftResult]
) -> tuple[dict[str, str | None], dict[str, str], dict[str, Node]]:
    """The input index's parent, producer and node maps, extended by what was
    grafted into ``pipeline`` (each graft's top-level transforms sit under
    the top level), with the input's transforms a pass changed (rewired
    inputs, the root's new top level) read again: one C-level copy of each
    map, one message comparison per input transform, then a walk over what
    changed only, instead of indexing the whole working copy again."""
    ts, before = pipeline.components.transforms, index.transforms
    root = python_root(pipeline)
    parent: dict[str, str | None] = dict(index.parent)
    producer: dict[str, str] = dict(index.producer)
    nodes: dict[str, Node] = dict(index.nodes)
    for tid in index.nodes:
        if tid in ts and ts[tid] != before[tid]:
            nodes[tid] = read_node(ts[tid], tid)
    for g in grafted:
        nodes.update(g.nodes)
        for tid in g.top:
            parent[tid] = root
        for tid, n in g.nodes.items():
            for s in n.subtransforms:
                parent[s] = tid
            if not n.subtransforms:
                ins = set(n.inputs.values())
                for pc in n.outputs.values():
                    if pc not in ins:
                        producer[pc] = tid
    return parent, producer, nodes


def prune_to(
    pipeline: Any, targets: Iterable[str], parent: Mapping[str, str | None], producer: Mapping[str, str],
    nodes: Mapping[str, Node],
) -> Any:
    """``PipelineFragment(targets).deduce_fragment()`` on a proto, given its
    parent, producer and node maps (``nodes`` as the proto is now)."""
    # Beam never prunes the Python SDK's one synthetic root; other SDKs' roots
    # are top-level transforms like any other, and pruned like them.
    transforms = pipeline.components.transforms
    root = python_root(pipeline)
    keep = necessary_transforms(nodes, () if root is None else (root,), parent, producer, targets)
    if root is None:
        pipeline.root_transform_ids[:] = [r for r in pipeline.root_transform_ids if r in keep]
    # Transforms Beam never prunes inside keep everything under them (only a
    # composite has anything under it).
    composites = [tid for tid in keep if nodes[tid].subtransforms]
    stack = [s for tid in composites if _skip_pruning(transforms[tid]) for s in nodes[tid].subtransforms]
    while stack:
        tid = stack.pop()
        if tid not in keep:
            keep.add(tid)
            stack.extend(nodes[tid].subtransforms)
            if nodes[tid].subtransforms:
                composites.append(tid)
    kept_nodes = {tid: nodes[tid] for tid in keep}
    for tid in composites:
        parts = nodes[tid].subtransforms
        kept_parts = tuple(s for s in parts if s in keep)
        if len(kept_parts) != len(parts) and not _skip_pruning(transforms[tid]):
            transforms[tid].subtransforms[:] = kept_parts
            kept_nodes[tid] = nodes[tid]._replace(subtransforms=kept_parts)
    for tid in [t for t in transforms if t not in keep]:
        del transforms[tid]
    return trim_components(pipeline, kept_nodes)


def _skip_pruning(t: Any) -> bool:
    # pipeline_fragment.should_skip_pruning
    return t.spec.urn == urns.TEST_STREAM or "_DataFrame_" in t.unique_name


# ---------------------------------------------------------------------------
# The output check


def check_output(pipeline: Any, base: Snapshot | None = None) -> GraphIndex:
    """Every proto beaminst writes passes the input validator, and carries
    nothing unreferenced; a failure is a beaminst bug, reported as such.
    ``base``: the input's snapshot (what is unchanged is not read again)."""
    try:
        idx = validate_output(pipeline, base)
        missing = urns.implied_requirements(n.info for n in idx.nodes.values()) - set(pipeline.requirements)
        if missing:
            raise BeaminstError(f"requirement {sorted(missing)[0]!r} is not declared")
    except BeaminstError as e:
        raise InternalError(f"produced an invalid pipeline ({e.message}); please report this") from None
    return idx
