"""One immutable index over a pipeline proto, built once and passed to every pass.

In the spirit of Java's ``QueryablePipeline``: producers, consumers (main and
side inputs told apart), parents, roots and a topological order of the leaf
transforms, all computed in one linear walk. Nothing downstream rescans the
whole transform map per node.

Each transform is read from the proto once, into a :class:`Node`: reading a
protobuf map from Python costs microseconds per entry, and validation, the
index, pruning and trimming all need the same fields. An output is checked
from nodes too, the input's reused wherever a transform's fingerprint is the one
the input's snapshot holds (:func:`read_nodes`).

Build it with :func:`build_index` on a proto that passed
:func:`beaminst.graph.validate.check_references`; structural problems that only the
walk can see (a PCollection with no or two producers, cycles) are raised here
as :class:`~beaminst.errors.ValidationError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from sys import intern
from types import MappingProxyType
from typing import Any, NamedTuple

from beaminst.errors import ValidationError
from beaminst.model import urns

# Python SDK composites carry side inputs under these tags (pipeline.py).
_PYTHON_SIDE_INPUT = re.compile(r"^python_side_input\d+$")


class Consumer(NamedTuple):
    """One use of a PCollection as a transform input (a tuple: one is made
    per input of every transform, and a frozen dataclass costs five times
    as much to build)."""

    transform_id: str
    tag: str
    is_side: bool
    is_leaf: bool


class Node(NamedTuple):
    """One transform's structure, read from the proto once: what validation,
    the index, pruning and trimming need, without protobuf's per-field cost
    (a map's items() is a Python-level view) on every pass."""

    subtransforms: tuple[str, ...]
    inputs: Mapping[str, str]  # tag -> PCollection id (never mutated: nodes are shared)
    outputs: Mapping[str, str]
    environment_id: str
    info: urns.PayloadInfo | None  # of its payload; None when it does not parse
    urn: str
    unique_name: str


def read_node(transform: Any, transform_id: str | None = None) -> Node:
    """The :class:`Node` of ``transform``; ``info`` is None when its payload
    does not parse (:func:`payload_info_of` says why)."""
    inputs, outputs = transform.inputs, transform.outputs
    try:
        info: urns.PayloadInfo | None = payload_info_of(transform, transform_id)
    except ValidationError:
        info = None
    # Interned: tags, URNs and environment ids repeat across transforms, and
    # each PCollection id is read as one transform's output and others' input
    # (every read through protobuf is a new string).
    return Node(
        tuple(map(intern, transform.subtransforms)), {intern(k): intern(inputs[k]) for k in inputs},
        {intern(k): intern(outputs[k]) for k in outputs}, intern(transform.environment_id), info,
        intern(transform.spec.urn), transform.unique_name,
    )


def fingerprint(transform: Any) -> int:
    """A transform's whole content as one number (the hash of its
    deterministic serialization): equal numbers, equal transforms."""
    return hash(transform.SerializeToString(deterministic=True))


@dataclass(frozen=True)
class Snapshot:
    """A pipeline's transforms as they were when :meth:`GraphIndex.snapshot`
    was taken: their nodes, and their fingerprints to tell what changed since."""

    nodes: Mapping[str, Node]
    fingerprints: Mapping[str, int]


def read_nodes(transforms: Any, base: Snapshot | None = None) -> dict[str, Node]:
    """Every transform's :class:`Node`. With ``base`` (a snapshot of a
    validated pipeline this one was derived from), a transform whose
    fingerprint is the one under the same id there takes that node: it holds
    what was read then, and a fingerprint costs a fraction of the reads."""
    if base is None:
        return {tid: read_node(transforms[tid], tid) for tid in transforms}
    base_nodes, base_prints = base.nodes, base.fingerprints
    out: dict[str, Node] = {}
    for tid in transforms:
        t = transforms[tid]
        known = base_nodes.get(tid)
        out[tid] = known if known is not None and fingerprint(t) == base_prints[tid] else read_node(t, tid)
    return out


def info_of(node: Node, transforms: Any, transform_id: str) -> urns.PayloadInfo:
    """``node.info``, or the ValidationError saying why its payload does not parse."""
    if node.info is None:
        return payload_info_of(transforms[transform_id], transform_id)  # raises
    return node.info


@dataclass(frozen=True)
class GraphIndex:
    pipeline: Any
    roots: tuple[str, ...]
    # Pre-order over the hierarchy, following subtransform order: the order in
    # which Beam's PipelineVisitor visits transforms.
    hierarchy_order: tuple[str, ...]
    parent: Mapping[str, str | None]
    producer: Mapping[str, str]
    consumers: Mapping[str, tuple[Consumer, ...]]
    side_input_tags: Mapping[str, frozenset[str]]
    leaf_order: tuple[str, ...]  # leaves, topologically sorted
    # PCollection -> the output tag its producer gives it (the first, if it
    # gives it two), filled in the walk that finds the producer.
    producer_tags: Mapping[str, str]
    nodes: Mapping[str, Node]  # every transform's structure, as :func:`read_nodes` read it

    # Cached: every pass asks, and each lookup through the proto makes new wrappers.
    @cached_property
    def transforms(self) -> Any:
        return self.pipeline.components.transforms

    @cached_property
    def pcollections(self) -> Any:
        return self.pipeline.components.pcollections

    def snapshot(self) -> Snapshot:
        """The transforms' nodes, and their fingerprints as the proto holds them now."""
        ts = self.transforms
        return Snapshot(self.nodes, {tid: fingerprint(ts[tid]) for tid in self.nodes})

    def is_leaf(self, transform_id: str) -> bool:
        return not self.transforms[transform_id].subtransforms

    def top_level(self) -> tuple[str, ...]:
        """Transforms directly under the root(s), as a user sees them."""
        out: list[str] = []
        for root in self.roots:
            root_t = self.transforms[root]
            if root_t.unique_name in ("", root) and root_t.subtransforms and not root_t.inputs and not root_t.outputs:
                out.extend(root_t.subtransforms)  # Python SDK: one synthetic root
            else:
                out.append(root)
        return tuple(out)

    def ancestors(self, transform_id: str) -> list[str]:
        """Enclosing composites, innermost first."""
        out = []
        p = self.parent.get(transform_id)
        while p is not None:
            out.append(p)
            p = self.parent.get(p)
        return out

    def producer_name(self, pcoll_id: str) -> str:
        return self.transforms[self.producer[pcoll_id]].unique_name

    def producer_tag(self, pcoll_id: str) -> str:
        # A lookup, not a scan of the producer's outputs: asked for every
        # output of a transform with thousands, a scan is quadratic.
        return self.producer_tags[pcoll_id]

    def main_consumers(self, pcoll_id: str) -> list[Consumer]:
        """Main-input uses of ``pcoll_id`` whose input can be replaced. A
        pass-through (a transform that also outputs ``pcoll_id``, like the
        Python SDK's ``MaybeReshuffle``) is left out: rewiring its input would
        make it a second producer of ``pcoll_id``."""
        return [
            c for c in self.consumers.get(pcoll_id, ())
            if not c.is_side and pcoll_id not in self.transforms[c.transform_id].outputs.values()
        ]


_NONE: frozenset[str] = frozenset()


def _side_tags(input_tags: list[str], declared: frozenset[str]) -> frozenset[str]:
    """Input tags that are side inputs: a leaf's payload ``declared`` them
    (see :mod:`beaminst.model.urns`; empty for a composite); Python
    composites mark them by tag name."""
    # A side input always comes with a main input: skip the tag scan otherwise.
    named = [t for t in input_tags if _PYTHON_SIDE_INPUT.match(t)] if len(input_tags) > 1 else ()
    if not named:
        return declared
    return declared.union(named)


def payload_info_of(transform: Any, transform_id: str | None = None) -> urns.PayloadInfo:
    """:func:`beaminst.model.urns.payload_info` of a transform; a payload that does
    not parse is a ValidationError naming the transform."""
    try:
        return urns.payload_info(transform.spec.urn, transform.spec.payload)
    except ValueError as e:
        named = f"{transform_id!r} ({transform.unique_name!r})" if transform_id is not None else repr(transform.unique_name)
        raise ValidationError(f"transform {named} has a {transform.spec.urn} payload that does not parse ({e})") from None


def build_index(pipeline: Any, nodes: Mapping[str, Node] | None = None) -> GraphIndex:
    """Index ``pipeline`` in one linear walk (references must already be
    checked); ``nodes``: its transforms' (:func:`read_nodes`), when read already."""
    transforms = pipeline.components.transforms
    if nodes is None:
        nodes = read_nodes(transforms)
    parent: dict[str, str | None] = {}
    order: list[str] = []
    # Iterative pre-order DFS; a transform seen twice means two parents or a cycle.
    stack: list[tuple[str, str | None]] = [(r, None) for r in reversed(pipeline.root_transform_ids)]
    while stack:
        tid, par = stack.pop()
        if tid in parent:
            other = parent[tid]
            if other is not None and par is not None:
                where = f"both {other!r} and {par!r}"
            else:  # one of the two visits is as a root
                where = f"a root and a subtransform of {(other if other is not None else par)!r}"
            raise ValidationError(f"transform {tid!r} appears twice in the hierarchy ({where}); is there a cycle among subtransforms?")
        parent[tid] = par
        order.append(tid)
        subs = nodes[tid].subtransforms
        if subs:  # most transforms are leaves: no generator for them
            stack.extend([(s, tid) for s in reversed(subs)])
    unreachable = len(transforms) - len(parent)
    if unreachable:
        orphan = min(t for t in transforms if t not in parent)
        raise ValidationError(
            f"transform {orphan!r} is not reachable from any root transform "
            f"({unreachable} such transform{'s' if unreachable > 1 else ''})"
        )

    producer: dict[str, str] = {}
    producer_tags: dict[str, str] = {}
    consumers: dict[str, list[Consumer]] = {}
    side_tags: dict[str, frozenset[str]] = {}
    leaf_inputs: list[tuple[str, tuple[str, ...]]] = []  # (leaf, its input PCollections), hierarchy order
    # The hottest loop of a load and of the output check: plain locals, no
    # per-transform lists, and the side-tag scan only for several inputs.
    for tid in order:
        n = nodes[tid]
        inputs = n.inputs
        leaf = not n.subtransforms
        declared = (n.info if n.info is not None else info_of(n, transforms, tid)).side_inputs if leaf else _NONE
        sides = _side_tags(list(inputs), declared) if len(inputs) > 1 else declared
        if sides:
            side_tags[tid] = sides
            if not sides <= inputs.keys():
                missing = sorted(sides - inputs.keys())[0]
                raise ValidationError(f"transform {tid!r} declares side input {missing!r} that is not among its inputs")
        for tag, pc in inputs.items():
            uses = consumers.get(pc)
            if uses is None:
                consumers[pc] = uses = []
            uses.append(Consumer(tid, tag, tag in sides, leaf))
        if leaf:
            pcs = tuple(inputs.values())
            leaf_inputs.append((tid, pcs))
            ins = set(pcs) if len(pcs) > 4 else pcs
            for tag, pc in n.outputs.items():
                if pc in ins:
                    continue  # a pass-through is not a producer (as in Beam's from_runner_api)
                if pc in producer and producer[pc] != tid:
                    raise ValidationError(
                        f"PCollection {pc!r} has two producers: {producer[pc]!r} and {tid!r}"
                    )
                producer[pc] = tid
                producer_tags.setdefault(pc, tag)
    for pc in pipeline.components.pcollections:
        if pc not in producer:
            raise ValidationError(f"PCollection {pc!r} has no producing transform")

    leaf_order = _topological_leaves(leaf_inputs, producer)
    return GraphIndex(
        pipeline=pipeline,
        roots=tuple(pipeline.root_transform_ids),
        hierarchy_order=tuple(order),
        parent=MappingProxyType(parent),
        producer=MappingProxyType(producer),
        consumers=MappingProxyType({k: tuple(v) for k, v in consumers.items()}),
        side_input_tags=MappingProxyType(side_tags),
        leaf_order=leaf_order,
        producer_tags=MappingProxyType(producer_tags),
        nodes=MappingProxyType(dict(nodes)),
    )


def _topological_leaves(leaf_inputs: list[tuple[str, tuple[str, ...]]], producer: Mapping[str, str]) -> tuple[str, ...]:
    """Kahn's algorithm over leaf data dependencies; ties keep hierarchy order.
    ``leaf_inputs``: each leaf, in hierarchy order, with its input PCollections.

    SDKs apply transforms after their inputs exist, so hierarchy order is
    usually topological already: one linear check returns it as it is, and
    the heap only runs when it is not (the result is the same either way)."""
    leaves = [t for t, _ in leaf_inputs]
    inputs_of = dict(leaf_inputs)
    done: set[str] = set()
    for t, pcs in leaf_inputs:
        if any((up := producer.get(pc, t)) not in done and up != t for pc in pcs):
            break
        done.add(t)
    else:
        return tuple(leaves)
    upstream = {t: {producer[pc] for pc in inputs_of[t] if producer.get(pc, t) != t} for t in leaves}
    out = stable_topological(leaves, upstream)
    if len(out) != len(leaves):
        placed = set(out)
        stuck = next(t for t in leaves if t not in placed)
        raise ValidationError(f"cycle among transforms: {stuck!r} (transitively) consumes its own output")
    return tuple(out)


def stable_topological(order: Sequence[str], upstream: Mapping[str, set[str]]) -> list[str]:
    """``order`` sorted so each item comes after its ``upstream`` ones
    (Kahn's algorithm; ties keep their position in ``order``, so an order
    already topological comes back as it is). Items a cycle holds back are
    left out: the caller compares lengths."""
    import heapq

    rank = {t: i for i, t in enumerate(order)}
    indegree = {t: len(upstream[t]) for t in order}
    downstream: dict[str, list[str]] = {}
    for t in order:
        for u in upstream[t]:
            downstream.setdefault(u, []).append(t)
    ready = [(rank[t], t) for t in order if indegree[t] == 0]
    heapq.heapify(ready)
    out: list[str] = []
    while ready:
        _, t = heapq.heappop(ready)
        out.append(t)
        for d in downstream.get(t, ()):
            indegree[d] -= 1
            if indegree[d] == 0:
                heapq.heappush(ready, (rank[d], d))
    return out
