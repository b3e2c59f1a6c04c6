"""``beaminst graph``: a pipeline proto drawn as Graphviz DOT.

Composites are clusters, leaf transforms are nodes, PCollections are edges
from their producer to each leaf consumer, labelled with the variable a
manifest binds them to (else their output tag, unless it is ``None``).
Everything is keyed by unique name and emitted sorted, so the same pipeline
gives the same bytes whatever its ids.

With an ORIGINAL to compare against, :mod:`beaminst.diff`'s matching decides
what is new (highlighted) and what was pruned (drawn ghosted, with the edges
that are gone). SVG and PNG go through the optional ``graphviz`` package and
Graphviz's ``dot`` program; DOT itself needs neither, nor the Beam SDK.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from beaminst.diff import ROOT, Ref, Side, diff_indexes, is_synthetic_root, side
from beaminst.errors import BeaminstError, OutputError, printable
from beaminst.graph import GraphIndex

GRAPH_FORMATS = ("dot", "svg", "png")
_EXTENSIONS = {".dot": "dot", ".gv": "dot", ".svg": "svg", ".png": "png"}
_MAX_PAD = 32

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
    from beaminst.manifest import resolve_bindings

    s = side(index)
    return {s.ref[b.pcollection]: b.var for b in resolve_bindings(manifest, index).by_var.values()}


def _short_urn(urn: str) -> str:
    parts = urn.split(":")
    return parts[2] if len(parts) == 4 and parts[0] == "beam" else urn


class _Drawing:
    """Transforms to draw, by name: parent, composite or not, state."""

    def __init__(self) -> None:
        self.parent: dict[str, str | None] = {}
        self.composite: dict[str, bool] = {}
        self.state: dict[str, str] = {}
        self.urn: dict[str, str] = {}
        self.edges: dict[tuple[str, str, str, bool], str] = {}  # (src, dst, label, side) -> state
        self.sinks: set[str] = set()

    def add_transforms(self, s: Side, names: set[str] | None, state_of: Mapping[str, str]) -> None:
        for tid, t in s.index.transforms.items():
            name = s.name[tid]
            if (names is not None and name not in names) or _hidden_root(s, tid):
                continue
            par = s.index.parent.get(tid)
            self.parent[name] = None if par is None or _hidden_root(s, par) else s.name[par]
            self.composite[name] = bool(t.subtransforms)
            self.state[name] = state_of.get(name, "")
            self.urn[name] = t.spec.urn

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


def _hidden_root(s: Side, tid: str) -> bool:
    return s.index.parent.get(tid) is None and is_synthetic_root(s.index.transforms[tid], tid)


def _sink(ref: Ref) -> str:
    return f"out:{ref[0]}:{ref[1]}"


def render_dot(
    index: GraphIndex,
    variables: Mapping[Ref, str] | None = None,
    against: GraphIndex | None = None,
    title: str | None = None,
) -> str:
    """DOT for ``index``; with ``against``, what is new relative to it is
    highlighted and what it had that is gone is drawn ghosted."""
    variables = dict(variables or {})
    s = side(index)
    drawing = _Drawing()
    state_of: dict[str, str] = {}
    old_edges: dict[tuple[str, str, str, bool], Ref] = {}
    o: Side | None = None
    if against is not None:
        d = diff_indexes(against, index)
        state_of.update({t["name"]: "added" for t in d.transforms["added"]})
        state_of.update({t["name"]: "ghost" for t in d.transforms["removed"]})
        # A consumer rewired to a cache read still reads the same variable.
        for r in d.rewired:
            was = (r["before"]["producer"], r["before"]["tag"])
            now = (r["after"]["producer"], r["after"]["tag"])
            if was in variables:
                variables.setdefault(now, variables[was])
        o = side(against)
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
    return _emit(drawing, title)


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
            return name[len(par) + 1 :]
        return name

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
        tooltip = quote(name, drawing.urn[name] or "(no urn)")
        if drawing.composite[name]:
            lines.append(f"{pad}subgraph {node_id('cluster_' + name)} {{")
            lines.append(f"{pad}  graph [label={quote(label_of(name))}, tooltip={tooltip}, {cluster_attrs}];")
            stack.append((name, depth, True))
            stack.extend((c, depth + 1, False) for c in sorted(children.get(name, ()), reverse=True))
        else:
            text = quote(label_of(name), _short_urn(drawing.urn[name]) or "(no urn)")
            lines.append(f"{pad}{node_id(name)} [label={text}, tooltip={tooltip}, {node_attrs}];")

    for sink in sorted(drawing.sinks):
        lines.append(f'  {node_id(sink)} [shape=point, width=0.08, label=""];')
    for (src, dst, label, is_side), state in sorted(drawing.edges.items()):
        attrs = [_STYLE[state][2]]
        if label:
            attrs.append(f"label={quote(label)}")
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
