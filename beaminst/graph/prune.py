"""Pruning passes on protos: Beam's fragment rule and component trimming.

:func:`necessary_transforms` is ``PipelineFragment._mark_necessary_transforms_and_pcolls``
as a linear worklist: from the target PCollections, keep each producer, every
enclosing composite, every transform inside a kept (non-root) composite, and
the producers of everything a kept transform reads (side inputs included).

:func:`referenced_components` / :func:`trim_components` is Go's
``pipelinex.TrimCoders`` generalised: keep exactly the transitive closure of
what kept transforms reference (PCollections, coders, windowing strategies,
environments), so nothing unreferenced is left behind.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from beaminst.model import urns


def necessary_transforms(
    transforms: Any,
    roots: Iterable[str],
    parent: Mapping[str, str | None],
    producer: Mapping[str, str],
    targets: Iterable[str],
) -> set[str]:
    """Transforms needed to produce ``targets`` (roots always kept).

    Beam's rule, breadth first as Beam's rounds are: walk from each needed
    PCollection's producer up through its parents, stopping at one already
    needed; each transform walked needs its inputs (side inputs included), and
    each non-root composite walked needs its direct parts and their outputs.
    A part that is only *marked* is not walked, which is how Beam drops, for
    example, the pass-through ``DoOnce/MaybeReshuffle`` inside ``WriteImpl``.

    One repair on top, where Beam would emit a broken pipeline ("No producer
    for ..." in ``from_runner_api``): whatever a kept transform reads or
    outputs gets its producer walked too.
    """
    roots = set(roots)
    keep: set[str] = set()
    seen: set[str] = set()
    queue: deque[str] = deque()

    def need(pc: str) -> None:
        if pc not in seen:
            seen.add(pc)
            queue.append(pc)

    def walk(pc: str) -> None:
        tid: str | None = producer[pc]
        while tid is not None and tid not in keep:
            keep.add(tid)
            t = transforms[tid]
            if tid not in roots:
                for part in t.subtransforms:
                    keep.add(part)
                    for out in transforms[part].outputs.values():
                        need(out)
            for pc_in in t.inputs.values():
                need(pc_in)
            tid = parent.get(tid)

    for pc in sorted(targets):
        need(pc)
    while True:
        while queue:
            walk(queue.popleft())
        missing = sorted(
            pc
            for tid in keep
            for refs in (transforms[tid].inputs, transforms[tid].outputs)
            for pc in refs.values()
            if producer.get(pc) is not None and producer[pc] not in keep
        )
        if not missing:
            return keep | roots
        for pc in missing:
            seen.discard(pc)
            need(pc)


def referenced_components(pipeline: Any) -> dict[str, set[str]]:
    """Everything reachable from the roots through references."""
    c = pipeline.components
    transforms: set[str] = set()
    stack = list(pipeline.root_transform_ids)
    while stack:
        tid = stack.pop()
        if tid in transforms or tid not in c.transforms:
            continue
        transforms.add(tid)
        stack.extend(c.transforms[tid].subtransforms)
    pcolls: set[str] = set()
    envs: set[str] = set()
    for tid in transforms:
        t = c.transforms[tid]
        pcolls.update(t.inputs.values())
        pcolls.update(t.outputs.values())
        if t.environment_id:
            envs.add(t.environment_id)
    strategies = {c.pcollections[p].windowing_strategy_id for p in pcolls if p in c.pcollections}
    coders = {c.pcollections[p].coder_id for p in pcolls if p in c.pcollections}
    # Ids inside payloads the runner still resolves (beaminst.model.urns).
    for tid in transforms:
        spec = c.transforms[tid].spec
        info = urns.payload_info(spec.urn, spec.payload)
        coders.update(info.coders)
        strategies.update(info.windowing_strategies)
        envs.update(info.environments)
    for w in strategies:
        ws = c.windowing_strategies[w]
        coders.add(ws.window_coder_id)
        if ws.environment_id:
            envs.add(ws.environment_id)
    stack = list(coders)
    while stack:
        cid = stack.pop()
        for comp in c.coders[cid].component_coder_ids if cid in c.coders else ():
            if comp not in coders:
                coders.add(comp)
                stack.append(comp)
    return {
        "transform": transforms,
        "PCollection": pcolls,
        "coder": coders,
        "windowing strategy": strategies,
        "environment": envs,
    }


def trim_components(pipeline: Any) -> Any:
    """Drop from ``pipeline``, in place, unreachable transforms and
    unreferenced components, and recompute ``requirements`` for the transforms
    that remain (:func:`beaminst.model.urns.recompute_requirements`): a grafted
    cache read holds a splittable DoFn, a streaming cache write stateful
    ones, and a pruned stateful ParDo no longer needs its declaration.
    Returns ``pipeline``. Deleting what goes, rather than copying what stays,
    keeps the cost in what was pruned."""
    from google.protobuf import unknown_fields

    keep = referenced_components(pipeline)
    c = pipeline.components
    if len(unknown_fields.UnknownFieldSet(c)):
        # A field this Beam does not know (a newer one's): dropped, as the
        # copy of what stays that this trim once made dropped it.
        fresh = type(c)()
        for name in ("transforms", "pcollections", "coders", "windowing_strategies", "environments"):
            for k, v in getattr(c, name).items():
                getattr(fresh, name)[k].CopyFrom(v)
        c.CopyFrom(fresh)
    for name, kind in (
        ("transforms", "transform"),
        ("pcollections", "PCollection"),
        ("coders", "coder"),
        ("windowing_strategies", "windowing strategy"),
        ("environments", "environment"),
    ):
        existing, kept = getattr(c, name), keep[kind]
        for k in [k for k in existing if k not in kept]:
            del existing[k]
    pipeline.requirements[:] = urns.recompute_requirements(pipeline.requirements, c.transforms)
    return pipeline
