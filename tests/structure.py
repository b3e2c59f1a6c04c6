"""Structural view of a pipeline proto for parity tests.

Two protos are structurally equal when they have the same transforms by
unique name, with the same URNs, the same subtransforms (by unique name) and
the same wiring, where a PCollection is named by its producer's unique name
and output tag. Ids and pickled payload bytes may differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Node:
    urn: str
    subtransforms: frozenset[str]
    inputs: frozenset[tuple[str, tuple[str, str]]]
    outputs: frozenset[tuple[str, tuple[str, str]]]


def _root_ids(proto: Any) -> set[str]:
    return set(proto.root_transform_ids)


def structure(proto: Any, strip_prefix: str | None = None) -> dict[str, Node]:
    """unique_name -> Node, roots excluded. ``strip_prefix`` drops a leading
    ``<prefix>/`` from names (Beam nests grafted transforms under its root's
    label in a runner copy)."""
    ts = proto.components.transforms

    def name(tid: str) -> str:
        n = ts[tid].unique_name
        if strip_prefix and n.startswith(strip_prefix + "/"):
            return n[len(strip_prefix) + 1 :]
        return n

    producer: dict[str, tuple[str, str]] = {}
    for tid, t in ts.items():
        if t.subtransforms:
            continue
        ins = set(t.inputs.values())
        for tag, pc in t.outputs.items():
            if pc not in ins:
                producer[pc] = (name(tid), tag)
    roots = _root_ids(proto)
    out: dict[str, Node] = {}
    for tid, t in ts.items():
        if tid in roots:
            continue
        out[name(tid)] = Node(
            t.spec.urn,
            frozenset(name(s) for s in t.subtransforms),
            frozenset((tag, producer.get(pc, ("?", pc))) for tag, pc in t.inputs.items()),
            frozenset((tag, producer.get(pc, ("?", pc))) for tag, pc in t.outputs.items()),
        )
    return out


def top_level_names(proto: Any, strip_prefix: str | None = None) -> set[str]:
    ts = proto.components.transforms
    names = set()
    for r in proto.root_transform_ids:
        for s in ts[r].subtransforms:
            n = ts[s].unique_name
            if strip_prefix and n.startswith(strip_prefix + "/"):
                n = n[len(strip_prefix) + 1 :]
            names.add(n)
    return names


def diff(a: dict[str, Node], b: dict[str, Node]) -> list[str]:
    """Human-readable differences (empty when equal)."""
    lines = []
    for n in sorted(set(a) - set(b)):
        lines.append(f"only in first: {n}")
    for n in sorted(set(b) - set(a)):
        lines.append(f"only in second: {n}")
    for n in sorted(set(a) & set(b)):
        if a[n] != b[n]:
            for f in ("urn", "subtransforms", "inputs", "outputs"):
                if getattr(a[n], f) != getattr(b[n], f):
                    lines.append(f"{n}: {f} differs: {getattr(a[n], f)} != {getattr(b[n], f)}")
    return lines


def pass_throughs(proto: Any, strip_prefix: str | None = None) -> set[str]:
    """Unique names of the leaves whose every output is also an input."""
    names = set()
    for t in proto.components.transforms.values():
        outs = set(t.outputs.values())
        if not t.subtransforms and outs and outs <= set(t.inputs.values()):
            name = t.unique_name
            if strip_prefix and name.startswith(strip_prefix + "/"):
                name = name[len(strip_prefix) + 1 :]
            names.add(name)
    return names


def compared(beam: Any, ours: Any, prefix: str) -> tuple[dict[str, Node], dict[str, Node]]:
    """Both structures (``beam``'s with ``prefix`` stripped), less the
    pass-throughs only one side kept, out of their parents' subtransforms
    too; a pass-through both kept is compared like the rest. Beam's
    ``PipelineFragment`` walks a set of PCollection objects hashed by
    ``id()``, so whether it keeps a pass-through inside a kept composite
    (a ``MaybeReshuffle`` whose output is its input) changes from process to
    process; beaminst walks in id order and always gives one answer."""
    beam_nodes, our_nodes = structure(beam, strip_prefix=prefix), structure(ours)
    one_side = (set(beam_nodes) ^ set(our_nodes)) & (pass_throughs(beam, prefix) | pass_throughs(ours))

    def less(nodes: dict[str, Node]) -> dict[str, Node]:
        return {
            name: Node(n.urn, n.subtransforms - one_side, n.inputs, n.outputs)
            for name, n in nodes.items() if name not in one_side
        }

    return less(beam_nodes), less(our_nodes)
