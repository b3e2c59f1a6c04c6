"""``graph`` (and the index questions it and ``diff`` ask) grow linearly with
the pipeline: counted in Python lines run, never in seconds (a loaded machine
runs slower, never longer). ``tests/test_diff.py`` does the same for
``diff``; ``bench/bench_scale.py`` times the real commands at 5,000 and
20,000 transforms."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from diffcases import lines_run, renamed_transforms, shape_pipeline

GROWTH = 4.5  # 4x the input, linear with slack for sorting


def growth(make: Callable[[int], Callable[[], Any]], n: int) -> tuple[int, int]:
    """Lines run at size ``n`` and ``4 n`` (each warmed once first: one-time imports are not the work)."""
    work = []
    for size in (n, 4 * n):
        fn = make(size)
        fn()
        work.append(lines_run(fn))
    return work[0], work[1]


def test_producer_tag_is_a_lookup():
    """Asking the tag of every output of a transform with n outputs: once a
    scan of the n outputs per question (quadratic), now a map built in the
    index's one walk."""
    from beaminst.graph.validate import validate

    def make(n: int) -> Callable[[], Any]:
        index = validate(shape_pipeline("wide", n))
        return lambda: [index.producer_tag(pc) for pc in index.producer]

    small, large = growth(make, 400)
    assert large <= GROWTH * small, f"{small:,} -> {large:,} lines run ({large / small:.1f}x)"


def test_producer_tag_is_the_producers_tag():
    from beaminst.graph.validate import validate

    index = validate(shape_pipeline("wide", 5))
    split = index.transforms["Split"]
    assert {pc: index.producer_tag(pc) for pc in split.outputs.values()} == {pc: tag for tag, pc in split.outputs.items()}
    assert index.producer_tag("impulse") == "out"


GRAPH_CASES = {  # shape: (original, drawn) for a size
    "chain": lambda n: (shape_pipeline("chain", n), renamed_transforms(shape_pipeline("chain", n))),
    "wide": lambda n: (shape_pipeline("wide", n), renamed_transforms(shape_pipeline("wide", n))),
    "deep": lambda n: (shape_pipeline("chain", 0), shape_pipeline("deep", n)),
    "same": lambda n: (shape_pipeline("chain", n), shape_pipeline("chain", n)),
}


@pytest.mark.parametrize("shape", sorted(GRAPH_CASES))
@pytest.mark.parametrize("depth", [None, 2])
def test_graph_work_grows_linearly(shape, depth):
    """4x the transforms (outputs, nesting levels): at most 4.5x the work to
    draw one pipeline against another (the diff matching, both sides' nodes
    and edges, ghosts, folding, the DOT text), with and without collapsing."""
    from beaminst.commands.render import render_dot
    from beaminst.graph.validate import validate

    def make(n: int) -> Callable[[], Any]:
        original, drawn = (validate(p) for p in GRAPH_CASES[shape](n))
        return lambda: render_dot(drawn, {}, original, "t", depth)

    small, large = growth(make, 400)
    assert large <= GROWTH * small, f"{shape}: {small:,} -> {large:,} lines run ({large / small:.1f}x)"


def test_binding_by_producer_is_linear_in_outputs():
    """Resolving a manifest against a transform with n outputs: every
    producer's outputs were once rescanned per output they produce."""
    import json

    from beaminst.analysis.manifest import parse_manifest, resolve_bindings
    from beaminst.graph.validate import validate

    def make(n: int) -> Callable[[], Any]:
        index = validate(shape_pipeline("wide", n))
        pc = next(iter(index.producer))
        t = index.transforms[index.producer[pc]]
        doc = {"bindings": {"v": {"producer": t.unique_name, "tag": index.producer_tag(pc)}}}
        manifest = parse_manifest(json.dumps(doc).encode())
        return lambda: resolve_bindings(manifest, index)

    small, large = growth(make, 400)
    assert large <= GROWTH * small, f"{small:,} -> {large:,} lines run ({large / small:.1f}x)"


def rewired_chain(n: int) -> Any:
    """The chain of ``n`` with each step but the first reading a new leaf's
    output instead of its predecessor's, as a cache read replaces what it
    computed."""
    p = shape_pipeline("chain", n)
    c = p.components
    for i in range(1, n):
        read, pc = f"ReadCache{i}", f"c{i}"
        c.pcollections[pc].CopyFrom(c.pcollections[f"p{i - 1}"])
        c.pcollections[pc].unique_name = pc
        t = c.transforms[read]
        t.CopyFrom(c.transforms[f"Step{i}"])
        t.unique_name = read
        t.inputs["in"] = "impulse"
        t.outputs["out"] = pc
        c.transforms["root"].subtransforms.append(read)
        c.transforms[f"Step{i}"].inputs["in"] = pc
    return p


def test_graph_carries_variables_over_rewired_inputs_in_linear_work():
    """Every PCollection bound, every input rewired: the variables follow the
    rewiring (found from the bound PCollections' consumers) in work linear in
    the pipeline."""
    from beaminst.commands.render import render_dot
    from beaminst.graph.validate import validate

    def make(n: int) -> Callable[[], Any]:
        original, drawn = validate(shape_pipeline("chain", n)), validate(rewired_chain(n))
        variables = {(f"Step{i}", "out"): f"v{i}" for i in range(n)}
        return lambda: render_dot(drawn, variables, original, "t")

    dot = make(3)()
    assert '"ReadCache1" -> "Step1" [color="#1a7f37", penwidth=1.5, label="v0"];' in dot
    assert '"Step0" -> "Step1" [style=dashed, color="#a0a0a0", fontcolor="#a0a0a0", label="v0"];' in dot
    small, large = growth(make, 400)
    assert large <= GROWTH * small, f"{small:,} -> {large:,} lines run ({large / small:.1f}x)"
