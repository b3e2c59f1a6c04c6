"""``beaminst graph``: a pipeline proto drawn as Graphviz DOT.

Composites are clusters, leaf transforms are nodes, PCollections are edges
from their producer to each leaf consumer, labelled with the variable a
manifest binds them to (else their output tag, unless it is ``None``).
Everything is keyed by unique name and emitted sorted, so the same pipeline
gives the same bytes whatever its ids.

With an ORIGINAL to compare against, :mod:`beaminst.commands.diff`'s matching decides
what is new (highlighted) and what was pruned (drawn ghosted, with the edges
that are gone). SVG and PNG go through the optional ``graphviz`` package and
Graphviz's ``dot`` program; DOT itself needs neither, nor the Beam SDK.

Collapsing (:func:`fold`) happens on the drawing, after both sides are merged,
so a collapsed node keeps its own added/ghost state. Labels are kept short
(:func:`short_label`): cache keys down to their variable part, long names
elided in the middle; the full text stays in the tooltip.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from beaminst.commands.diff import (
    ROOT,
    Ref,
    Side,
    is_synthetic_root,
    side,
    transform_name,
)
from beaminst.errors import BeaminstError, InternalError, OutputError, printable
from beaminst.graph.gcpause import paused_gc
from beaminst.graph.index import GraphIndex
from beaminst.model.labels import CACHE_COMPOSITES, CACHE_STEPS

GRAPH_FORMATS = ("dot", "svg", "png")
_EXTENSIONS = {".dot": "dot", ".gv": "dot", ".svg": "svg", ".png": "png"}
_MAX_PAD = 32
# Longest label line drawn (the tooltip keeps the whole text): edge labels sit
# between ranks, where Graphviz gives them less room than nodes.
MAX_NODE_LABEL = 40
MAX_EDGE_LABEL = 24
_ELLIPSIS = "\u2026"
# beaminst's cache key (cachekeys.make_key: md5(var)[:10] and three 16-hex
# digests). The first part names the variable; the rest tells writes of one
# variable apart, which the tooltip still shows.
_CACHE_KEY = re.compile(r"(?<![0-9a-f])([0-9a-f]{10})-[0-9a-f]{16}-[0-9a-f]{16}-[0-9a-f]{16}(?![0-9a-f])")
_CACHE_PREFIXES = tuple(CACHE_COMPOSITES)
_EDGE_RANK = {"ghost": 0, "": 1, "added": 2}  # a merged edge shows its liveliest state

_STYLE = {
    # state -> (node attributes, cluster attributes, edge attributes)
    "": (
        'style="rounded,filled", color="#4a6fa5", fillcolor="#eef3fb"',
        'style="rounded", color="#8a8a8a"',
        'color="#555555"',
    ),
    "added": (
        'style="rounded,filled,bold", color="#1a7f37", fillcolor="#dafbe1", fontcolor="#1a7f37", penwidth=2',
        'style="rounded,bold", color="#1a7f37", fontcolor="#1a7f37", penwidth=2',
        'color="#1a7f37", penwidth=1.5',
    ),
    "ghost": (
        'style="rounded,dashed", color="#a0a0a0", fontcolor="#a0a0a0"',
        'style="rounded,dashed", color="#a0a0a0", fontcolor="#a0a0a0"',
        'style=dashed, color="#a0a0a0", fontcolor="#a0a0a0"',
    ),
}


class GraphvizMissing(BeaminstError):
    """SVG/PNG asked for without Graphviz installed."""


def quote(*lines: str) -> str:
    """A DOT quoted string of ``lines``, joined by DOT's line break. Each is
    written out visibly: unprintable characters escaped (``\\x1b``: a NUL
    ends ``dot``'s input and control characters make SVG invalid XML), and
    backslashes doubled so a name can neither end the string nor turn into a
    label escape."""
    return '"' + "\\n".join(_dot_escape(printable(line)) for line in lines) + '"'


def node_id(name: str) -> str:
    """A DOT id for a transform (or sink) name: like :func:`quote`, but
    one-to-one (a backslash in the name is doubled before escaping, so the
    name ``a\\x00`` and ``a`` + NUL stay two nodes)."""
    return '"' + _dot_escape(printable(name.replace("\\", "\\\\"))) + '"'


def _dot_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def bound_variables(manifest: Any, index: GraphIndex) -> dict[Ref, str]:
    """Manifest variables by (producer name, tag), resolved against ``index``."""
    from beaminst.analysis.manifest import resolve_bindings

    # Only the bound PCollections are named (a side() would name them all);
    # a producer is a leaf, never a synthetic root.
    refs = {}
    for b in resolve_bindings(manifest, index).by_var.values():
        tid = index.producer[b.pcollection]
        refs[(transform_name(index.transforms[tid], tid), index.producer_tag(b.pcollection))] = b.var
    return refs


def _short_urn(urn: str) -> str:
    parts = urn.split(":")
    return parts[2] if len(parts) == 4 and parts[0] == "beam" else urn


def _key_part(m: re.Match[str]) -> str:
    return m.group(1) + _ELLIPSIS


def short_label(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters: each cache key cut to its
    variable part, then, if still too long, the middle elided (the start and
    the end of a Beam label are the parts that tell transforms apart)."""
    text = printable(text)
    if "-" in text:  # every cache key has one: most labels skip the regex
        text = _CACHE_KEY.sub(_key_part, text)
    if len(text) <= limit:
        return text
    head = limit // 2
    tail = limit - 1 - head
    return text[:head] + _ELLIPSIS + (text[len(text) - tail :] if tail else "")


class _Drawing:
    """Transforms to draw, by name: parent, composite or not, state."""

    def __init__(self) -> None:
        self.parent: dict[str, str | None] = {}
        self.composite: dict[str, bool] = {}
        self.state: dict[str, str] = {}
        self.urn: dict[str, str] = {}
        self.edges: dict[tuple[str, str, str, bool], str] = {}  # (src, dst, label, side) -> state
        self.sinks: set[str] = set()
        self.folded: dict[str, tuple[str, int]] = {}  # collapsed node -> (what it is, transforms it stands for)

    def add_transforms(self, s: Side, names: set[str] | None, state_of: Mapping[str, str]) -> None:
        hidden = {r for r in s.index.roots if is_synthetic_root(s.index.transforms[r], r)}
        parent_of = s.index.parent
        # A transform with subtransforms is the parent of each (the index's
        # walk visits every one): a set lookup, not a protobuf field per transform.
        composites = set(parent_of.values())
        name_of, nodes = s.name, s.index.nodes
        parent, composite, state, urn = self.parent, self.composite, self.state, self.urn
        # URNs from the index's nodes (interned as it read them), not the
        # protobuf messages: at 20,000 transforms those are 80 MB the CPU
        # cache no longer holds, and each read makes a new string.
        for name, tid in s.tid.items():
            if (names is not None and name not in names) or tid in hidden:
                continue
            par = parent_of.get(tid)
            parent[name] = None if par is None or par in hidden else name_of[par]
            composite[name] = tid in composites
            state[name] = state_of.get(name, "")
            urn[name] = nodes[tid].urn

    def pcollection_edges(
        self, s: Side, variables: Mapping[Ref, str], sinks: bool
    ) -> dict[tuple[str, str, str, bool], Ref]:
        out = {}
        for pc, producer in s.index.producer.items():
            ref = s.ref[pc]
            label = variables.get(ref) or ("" if ref[1] == "None" else ref[1])
            for use in s.index.consumers.get(pc, ()):
                if use.is_leaf:
                    out[(s.name[producer], s.name[use.transform_id], label, use.is_side)] = ref
            if sinks and ref in variables and not any(u.is_leaf for u in s.index.consumers.get(pc, ())):
                # A bound PCollection nobody reads still shows its variable.
                self.sinks.add(_sink(ref))
                out[(s.name[producer], _sink(ref), label, False)] = ref
        return out


def _sink(ref: Ref) -> str:
    return f"out:{ref[0]}:{ref[1]}"


def cache_kind(name: str, parent: str | None, composite: bool) -> str | None:
    """What a grafted cache composite is ("cache write", "cache read"), or
    None for anything else. Recognised by the top-level unique names the
    grafting code gives (ids are free to change; these labels are Beam's)."""
    if parent is not None or not composite or not name.startswith(_CACHE_PREFIXES):
        return None
    return next((kind for prefix, kind in CACHE_COMPOSITES.items() if name.startswith(prefix)), None)


def representatives(
    parent: Mapping[str, str | None], composite: Mapping[str, bool], depth: int | None, expand_cache: bool
) -> dict[str, str]:
    """Each transform -> the node drawn for it: itself, or the outermost
    collapsed composite around it. A composite at level ``depth`` (top-level
    transforms are level 1) is collapsed, and so, unless ``expand_cache``, is
    every grafted cache composite, together with its reify step. ``parent``
    must be closed (every parent is a key, or None).

    One pass over the hierarchy, top-down and iterative: composites nest
    thousands deep."""
    level: dict[str, int] = {}
    folded_into: dict[str, str | None] = {}
    for start in parent:
        chain: list[str] = []
        name: str | None = start
        while name is not None and name not in level:
            chain.append(name)
            name = parent[name]
            if len(chain) > len(parent):  # both sides' names merged into a loop: never hang on it
                raise InternalError(f"transform {start!r} is its own ancestor in the drawing")
        for name in reversed(chain):
            par = parent[name]
            level[name] = 1 if par is None else level[par] + 1
            outer = folded_into[par] if par is not None else None
            collapse = composite[name] and (
                level[name] == depth or (not expand_cache and cache_kind(name, par, True) is not None)
            )
            folded_into[name] = outer or (name if collapse else None)
    rep = {name: folded_into[name] or name for name in parent}
    if not expand_cache:
        for name, par in parent.items():
            if par is not None or not name.startswith(CACHE_STEPS):  # one C call for most names
                continue
            step = next(p for p in CACHE_STEPS if name.startswith(p))
            target = name[len(step) :]
            if (
                target in parent and rep[target] == target
                and cache_kind(target, parent[target], composite[target])
            ):
                rep[name] = target
    return rep


def fold(drawing: _Drawing, depth: int | None = None, expand_cache: bool = False) -> _Drawing:
    """``drawing`` with collapsed composites drawn as one node each (see
    :func:`representatives`): edges re-pointed to them, deduplicated, and the
    ones inside a collapsed node dropped. A node keeps its own state, so a
    collapsed graft is still "added"."""
    parent = {n: (p if p in drawing.parent else None) for n, p in drawing.parent.items()}
    rep = representatives(parent, drawing.composite, depth, expand_cache)
    out = _Drawing()
    out.sinks = set(drawing.sinks)
    count: dict[str, int] = {}
    for r in rep.values():
        count[r] = count.get(r, 0) + 1
    for name, r in rep.items():
        if r != name:
            continue
        out.parent[name] = parent[name]
        out.state[name] = drawing.state[name]
        out.urn[name] = drawing.urn[name]
        # Only a collapsed composite has others drawn as it.
        collapsed = drawing.composite[name] and count[name] > 1
        out.composite[name] = drawing.composite[name] and not collapsed
        if collapsed:
            kind = cache_kind(name, parent[name], True) or _short_urn(drawing.urn[name]) or "composite"
            out.folded[name] = ("composite" if kind == "generic_composite" else kind, count[name])
    for (src, dst, label, is_side), state in drawing.edges.items():
        key = (rep.get(src, src), rep.get(dst, dst), label, is_side)
        if key[0] == key[1]:
            continue
        if key not in out.edges or _EDGE_RANK[state] > _EDGE_RANK[out.edges[key]]:
            out.edges[key] = state
    return out


def render_dot(
    index: GraphIndex,
    variables: Mapping[Ref, str] | None = None,
    against: GraphIndex | None = None,
    title: str | None = None,
    depth: int | None = None,
    expand_cache: bool = False,
) -> str:
    """DOT for ``index``; with ``against``, what is new relative to it is
    highlighted and what it had that is gone is drawn ghosted. Composites
    at level ``depth`` are drawn collapsed, and so are the cache subgraphs
    beaminst grafts unless ``expand_cache``."""
    with paused_gc():
        return _render_dot(index, variables, against, title, depth, expand_cache)


def _render_dot(
    index: GraphIndex,
    variables: Mapping[Ref, str] | None,
    against: GraphIndex | None,
    title: str | None,
    depth: int | None,
    expand_cache: bool,
) -> str:
    variables = dict(variables or {})
    s = side(index)
    drawing = _Drawing()
    state_of: dict[str, str] = {}
    old_edges: dict[tuple[str, str, str, bool], Ref] = {}
    o: Side | None = None
    if against is not None:
        # diff's matching, without the rest of a diff (payload digests,
        # field-by-field comparison, component signatures): the drawing needs
        # what was added, what was removed and what reads elsewhere.
        o = side(against)
        state_of.update(dict.fromkeys(s.tid.keys() - o.tid.keys(), "added"))
        state_of.update(dict.fromkeys(o.tid.keys() - s.tid.keys(), "ghost"))
        # A consumer rewired to a cache read still reads the same variable.
        for was, now in rewired_refs(o, s, variables.keys()):
            if was in variables:
                variables.setdefault(now, variables[was])
    drawing.add_transforms(s, None, state_of)
    edges = drawing.pcollection_edges(s, variables, sinks=True)
    if o is not None:
        ghosts = {n for n, st in state_of.items() if st == "ghost"}
        drawing.add_transforms(o, ghosts, state_of)
        old_edges = drawing.pcollection_edges(o, variables, sinks=False)
    for key in edges:
        src, dst = key[0], key[1]
        drawing.edges[key] = "added" if "added" in (state_of.get(src), state_of.get(dst)) else ""
    for key in old_edges:
        if key not in edges:
            drawing.edges[key] = "ghost"
    return _emit(fold(drawing, depth, expand_cache), title)


def rewired_refs(b: Side, a: Side, bound: Iterable[Ref]) -> list[tuple[Ref, Ref]]:
    """(was, now) of every input that :func:`~beaminst.commands.diff.rewired_inputs`
    reports as rewired and that may carry a variable: in its order (by
    transform name, then tag), found from the consumers of the PCollections
    that can carry one instead of every input of every common transform. A
    PCollection carries a variable when its ref is ``bound``, or is what an
    input reading a carrying one was rewired to (hence the rounds: one, or
    two when a rewired input reads a cache read's output; a chain of n takes
    n rounds)."""
    carrying = set(bound)
    pcs_of: dict[Ref, list[str]] = {}
    for pc, ref in b.ref.items():
        pcs_of.setdefault(ref, []).append(pc)
    found: dict[tuple[str, str], tuple[Ref, Ref]] = {}
    frontier = [pc for ref in carrying for pc in pcs_of.get(ref, ())]
    while frontier:
        fresh: list[Ref] = []
        for pc in frontier:
            for use in b.index.consumers.get(pc, ()):
                name = b.name[use.transform_id]
                if b.tid.get(name) != use.transform_id:
                    continue  # a name another transform shadows: diff matches that one
                after = a.transform.get(name)
                if after is None or use.tag not in after.inputs:
                    continue
                was, now = b.ref[pc], a.ref[after.inputs[use.tag]]
                if was != now:
                    found[(name, use.tag)] = (was, now)
                    if now not in carrying:
                        carrying.add(now)
                        fresh.append(now)
        frontier = [pc for ref in fresh for pc in pcs_of.get(ref, ())]
    return [found[k] for k in sorted(found)]


def _emit(drawing: _Drawing, title: str | None) -> str:
    children: dict[str | None, list[str]] = {}
    for name, par in drawing.parent.items():
        # A ghost whose parent is not drawn (the other side's root) sits at top level.
        children.setdefault(par if par in drawing.parent else None, []).append(name)
    lines = ["digraph pipeline {"]
    graph_attrs = 'rankdir=TB, fontname="Helvetica", fontsize=11, compound=true, newrank=true'
    if title:
        graph_attrs += f", label={quote(title)}, labelloc=t"
    lines.append(f"  graph [{graph_attrs}];")
    lines.append('  node [shape=box, fontname="Helvetica", fontsize=10];')
    lines.append('  edge [fontname="Helvetica", fontsize=9];')

    def label_of(name: str) -> str:
        par = drawing.parent[name]
        if par and par != ROOT and name.startswith(par + "/"):
            name = name[len(par) + 1 :]
        return short_label(name, MAX_NODE_LABEL)

    # Iterative: composites can nest thousands deep (the proto allows it, and
    # Python's stack does not). Indentation stops growing past _MAX_PAD levels,
    # or a deep chain would write quadratically many spaces.
    stack: list[tuple[str, int, bool]] = [(n, 1, False) for n in sorted(children.get(None, ()), reverse=True)]
    while stack:
        name, depth, closing = stack.pop()
        pad = "  " * min(depth, _MAX_PAD)
        if closing:
            lines.append(f"{pad}}}")
            continue
        node_attrs, cluster_attrs, _ = _STYLE[drawing.state[name]]
        urn = drawing.urn[name] or "(no urn)"
        if name in drawing.folded:
            kind, count = drawing.folded[name]
            text = quote(label_of(name), f"{kind}, {count} transforms")
            tooltip = quote(name, urn, f"collapsed: {count} transforms (--depth, --expand-cache draw them)")
            lines.append(f"{pad}{node_id(name)} [label={text}, tooltip={tooltip}, {node_attrs}, peripheries=2];")
        elif drawing.composite[name]:
            lines.append(f"{pad}subgraph {node_id('cluster_' + name)} {{")
            lines.append(f"{pad}  graph [label={quote(label_of(name))}, tooltip={quote(name, urn)}, {cluster_attrs}];")
            stack.append((name, depth, True))
            stack.extend((c, depth + 1, False) for c in sorted(children.get(name, ()), reverse=True))
        else:
            text = quote(label_of(name), short_label(_short_urn(urn), MAX_NODE_LABEL))
            lines.append(f"{pad}{node_id(name)} [label={text}, tooltip={quote(name, urn)}, {node_attrs}];")

    for sink in sorted(drawing.sinks):
        lines.append(f'  {node_id(sink)} [shape=point, width=0.08, label=""];')
    for (src, dst, label, is_side), state in sorted(drawing.edges.items()):
        attrs = [_STYLE[state][2]]
        if label:
            shown = short_label(label, MAX_EDGE_LABEL)
            attrs.append(f"label={quote(shown)}")
            if shown != printable(label):
                attrs.append(f"labeltooltip={quote(label)}, tooltip={quote(label)}")
        if is_side:
            attrs.append("arrowhead=empty" if state == "ghost" else "style=dotted, arrowhead=empty")
        lines.append(f"  {node_id(src)} -> {node_id(dst)} [{', '.join(attrs)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def graph_format(output: str, requested: str | None) -> str:
    """``--format`` if given, else from the ``-o`` extension, else dot."""
    if requested:
        if requested not in GRAPH_FORMATS:
            raise OutputError(f"unknown graph format {requested!r} (use one of {', '.join(GRAPH_FORMATS)})", output)
        return requested
    ext = os.path.splitext(output)[1].lower() if output != "-" else ""
    if ext and ext not in _EXTENSIONS:
        raise OutputError(f"cannot tell the graph format from {ext!r}: pass --format dot, svg or png", output)
    return _EXTENSIONS.get(ext, "dot")


def require_graphviz(fmt: str) -> None:
    """Fail (exit 2) before any work when ``fmt`` cannot be produced here."""
    import importlib.util
    import shutil

    missing = []
    if importlib.util.find_spec("graphviz") is None:
        missing.append("the graphviz Python package (pip install graphviz, or pip install 'beaminst[graph]')")
    if shutil.which("dot") is None:
        missing.append("Graphviz's dot program (apt-get install graphviz, or brew install graphviz)")
    if missing:
        raise GraphvizMissing(
            f"--format {fmt} needs {' and '.join(missing)}; --format dot needs neither"
        )


def to_image(dot: str, fmt: str) -> bytes:
    """Lay ``dot`` out with Graphviz as ``fmt`` (svg or png)."""
    require_graphviz(fmt)
    import graphviz

    try:
        return graphviz.Source(dot).pipe(format=fmt)
    except Exception as e:  # ExecutableNotFound, CalledProcessError: one line, exit 2
        raise GraphvizMissing(f"Graphviz failed to render {fmt}: {' '.join(str(e).split())[:300]}") from None
