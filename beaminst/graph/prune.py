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
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from beaminst.graph.index import Node, read_node
from beaminst.model import urns


def necessary_transforms(
    nodes: Mapping[str, Node],
    roots: Iterable[str],
    parent: Mapping[str, str | None],
    producer: Mapping[str, str],
    targets: Iterable[str],
) -> set[str]:
    """Transforms needed to produce ``targets`` (roots always kept), from
    the transforms' ``nodes`` (:func:`beaminst.graph.index.read_nodes`).

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
            t = nodes[tid]
            if tid not in roots:
                for part in t.subtransforms:
                    keep.add(part)
                    for out in nodes[part].outputs.values():
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
            for refs in (nodes[tid].inputs, nodes[tid].outputs)
            for pc in refs.values()
            if producer.get(pc) is not None and producer[pc] not in keep
        )
        if not missing:
            return keep | roots
        for pc in missing:
            seen.discard(pc)
            need(pc)


def referenced_components(pipeline: Any, nodes: Mapping[str, Node] | None = None) -> dict[str, set[str]]:
    """Everything reachable from the roots through references; ``nodes``,
    when given, are the transforms' structure as the proto has it now (read
    from the proto otherwise)."""
    c = pipeline.components
    if nodes is None:
        nodes = _LazyNodes(c.transforms)
    transforms: set[str] = set()
    stack = list(pipeline.root_transform_ids)
    while stack:
        tid = stack.pop()
        if tid in transforms or tid not in nodes:
            continue
        transforms.add(tid)
        stack.extend(nodes[tid].subtransforms)
    pcolls: set[str] = set()
    envs: set[str] = set()
    strategies: set[str] = set()
    coders: set[str] = set()
    for tid in transforms:
        n = nodes[tid]
        pcolls.update(n.inputs.values())
        pcolls.update(n.outputs.values())
        if n.environment_id:
            envs.add(n.environment_id)
        # Ids inside payloads the runner still resolves (beaminst.model.urns).
        info = n.info
        if info is None:  # cannot happen from _LazyNodes (it raises) or a validated proto's nodes
            continue
        if info.coders:
            coders.update(info.coders)
        if info.windowing_strategies:
            strategies.update(info.windowing_strategies)
        if info.environments:
            envs.update(info.environments)
    pcs = c.pcollections
    for p in pcolls:
        if p in pcs:
            pc = pcs[p]
            strategies.add(pc.windowing_strategy_id)
            coders.add(pc.coder_id)
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


class _LazyNodes(Mapping[str, Node]):
    """A proto's transforms as :class:`Node` s, each read once, when first
    asked; a payload that does not parse is the ValueError it always was
    here (the proto may not have been validated)."""

    def __init__(self, transforms: Any) -> None:
        self._transforms = transforms
        self._read: dict[str, Node] = {}

    def __getitem__(self, tid: str) -> Node:
        node = self._read.get(tid)
        if node is None:
            t = self._transforms[tid]
            node = read_node(t, tid)
            if node.info is None:
                urns.payload_info(t.spec.urn, t.spec.payload)  # raises the ValueError
            self._read[tid] = node
        return node

    def __contains__(self, tid: object) -> bool:
        return tid in self._transforms

    def __iter__(self) -> Iterator[str]:
        return iter(self._transforms)

    def __len__(self) -> int:
        return len(self._transforms)


def trim_components(pipeline: Any, nodes: Mapping[str, Node] | None = None) -> Any:
    """Drop from ``pipeline``, in place, unreachable transforms and
    unreferenced components, and recompute ``requirements`` for the transforms
    that remain (what they imply, :func:`beaminst.model.urns.with_implied`): a grafted
    cache read holds a splittable DoFn, a streaming cache write stateful
    ones, and a pruned stateful ParDo no longer needs its declaration.
    ``nodes``: the transforms' structure as the proto has it (read from it
    otherwise). Returns ``pipeline``. Deleting what goes, rather than copying
    what stays, keeps the cost in what was pruned."""
    from google.protobuf import unknown_fields

    c = pipeline.components
    if nodes is None:
        nodes = _LazyNodes(c.transforms)  # each kept transform read once, for the closure and the requirements
    keep = referenced_components(pipeline, nodes)
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
    implied = urns.implied_requirements(nodes[tid].info for tid in keep["transform"])
    pipeline.requirements[:] = urns.with_implied(pipeline.requirements, implied)
    return pipeline
