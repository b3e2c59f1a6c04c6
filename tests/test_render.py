"""``beaminst graph``: DOT structure, variable labels, the --against picture,
and SVG/PNG through Graphviz (or a clear exit 2 without it)."""

from __future__ import annotations

import importlib.util
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import fixture_manifest, fixture_pb, load_fixture, run_cli, run_python
from diffcases import instrument_case, renamed

from beaminst.model.protoio import save_pipeline

WC, WC_M = fixture_pb("wordcount"), fixture_manifest("wordcount")
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_NODE = re.compile(rf"^\s*({_QUOTED})\s*\[(.*)\];$")
_EDGE = re.compile(rf"^\s*({_QUOTED})\s*->\s*({_QUOTED})\s*\[(.*)\];$")
_CLUSTER = re.compile(rf"^\s*subgraph\s+({_QUOTED})\s*\{{$")


def unquote(q: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), q[1:-1])


@dataclass
class Dot:
    nodes: dict[str, str] = field(default_factory=dict)  # name -> attributes
    clusters: dict[str, str] = field(default_factory=dict)  # composite name -> graph attributes
    parent: dict[str, str | None] = field(default_factory=dict)  # node/cluster -> enclosing cluster
    edges: list[tuple[str, str, str]] = field(default_factory=list)  # (src, dst, attributes)

    def label(self, src: str, dst: str) -> set[str]:
        out = set()
        for s, d, attrs in self.edges:
            if (s, d) == (src, dst):
                m = re.search(rf"label=({_QUOTED})", attrs)
                out.add(unquote(m.group(1)) if m else "")
        return out


def parse_dot(text: str) -> Dot:
    """A strict line-by-line reading of the DOT beaminst writes: braces
    balance (outside quoted strings), every statement is a node, an edge, a
    cluster or an attribute list, and every edge endpoint is a declared node."""
    assert text.startswith("digraph pipeline {\n") and text.endswith("}\n")
    depth = 0
    for ch in re.sub(_QUOTED, '""', text):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    assert depth == 0
    dot = Dot()
    stack: list[str | None] = [None]
    for line in text.splitlines()[1:-1]:
        if m := _CLUSTER.match(line):
            name = unquote(m.group(1))
            assert name.startswith("cluster_")
            dot.parent[name[len("cluster_"):]] = stack[-1]
            stack.append(name[len("cluster_"):])
        elif line.strip() == "}":
            stack.pop()
        elif m := _EDGE.match(line):
            dot.edges.append((unquote(m.group(1)), unquote(m.group(2)), m.group(3)))
        elif m := _NODE.match(line):
            name = unquote(m.group(1))
            assert name not in dot.nodes, f"{name} declared twice"
            dot.nodes[name] = m.group(2)
            dot.parent[name] = stack[-1]
        elif re.match(r"^\s*graph \[.*\];$", line):
            if stack[-1] is not None:
                dot.clusters[stack[-1]] = line
        else:
            assert re.match(r"^\s*(node|edge) \[.*\];$", line), line
    assert stack == [None]
    for src, dst, _ in dot.edges:
        assert src in dot.nodes and dst in dot.nodes, (src, dst)
    return dot


def graph(*args: str) -> str:
    r = run_cli("graph", *args)
    assert r.exit_code == 0, r.stderr
    return r.stdout


def leaves_and_composites(proto) -> tuple[set[str], set[str]]:
    ts = proto.components.transforms
    roots = set(proto.root_transform_ids)
    leaves = {t.unique_name for t in ts.values() if not t.subtransforms}
    composites = {t.unique_name for tid, t in ts.items() if t.subtransforms and tid not in roots}
    return leaves, composites


@pytest.fixture(scope="module")
def read_case(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    return instrument_case(tmp_path_factory.mktemp("render"), "wordcount", ("words",))


def test_wordcount_structure():
    dot = parse_dot(graph(WC))
    leaves, composites = leaves_and_composites(load_fixture("wordcount"))
    assert set(dot.nodes) == leaves
    assert set(dot.clusters) == composites
    assert dot.parent["ReadLines/Impulse"] == "ReadLines"
    assert dot.parent["ReadLines/MaybeReshuffle/Reshuffle/ReshufflePerKey/GroupByKey"] == "ReadLines/MaybeReshuffle/Reshuffle/ReshufflePerKey"
    assert dot.parent["Split"] is None
    assert ("Split", "PairWithOne") in {(s, d) for s, d, _ in dot.edges}
    assert ("CountWords/GroupByKey", "CountWords/Combine/ParDo(CombineValuesDoFn)") in {(s, d) for s, d, _ in dot.edges}
    assert len(dot.edges) == 12  # one per (producer, leaf consumer) pair
    assert 'subgraph "cluster_ReadLines" {' in graph(WC)


def test_variable_labels_from_the_manifest():
    dot = parse_dot(graph(WC, "-m", WC_M))
    assert dot.label("Split", "PairWithOne") == {"words"}
    assert dot.label("ReadLines/Map(decode)", "Split") == {"lines"}
    assert dot.label("CountWords/Combine/ParDo(CombineValuesDoFn)", "Format") == {"counts"}
    # nobody reads `formatted`: it still shows, on an edge to a point
    (sink,) = [d for s, d, _ in dot.edges if s == "Format"]
    assert dot.label("Format", sink) == {"formatted"} and "shape=point" in dot.nodes[sink]
    assert parse_dot(graph(WC)).label("Split", "PairWithOne") == {""}


def test_tags_label_unbound_outputs():
    dot = parse_dot(graph(fixture_pb("multi_output")))
    labels = {unquote(m) for _, _, a in dot.edges for m in re.findall(rf"label=({_QUOTED})", a)}
    assert labels and "None" not in labels


def test_side_inputs_are_dotted():
    dot = parse_dot(graph(fixture_pb("side_inputs")))
    assert any("style=dotted" in a for _, _, a in dot.edges)


def test_deterministic_whatever_the_ids(tmp_path):
    moved = tmp_path / "moved.pb"
    save_pipeline(renamed(load_fixture("wordcount"), seed=3), str(moved))
    a = graph(WC, "-m", WC_M).replace(WC, "P")
    manifest = tmp_path / "m.json"
    manifest.write_text('{"bindings": {"words": {"producer": "Split"}, "lines": {"producer": "ReadLines/Map(decode)"},'
                        ' "counts": {"producer": "CountWords/Combine/ParDo(CombineValuesDoFn)"},'
                        ' "formatted": {"producer": "Format"}}}')
    b = graph(str(moved), "-m", str(manifest)).replace(str(moved), "P")
    assert a == b


def test_against_marks_added_and_ghosts_pruned(read_case):
    out, report = read_case
    dot = parse_dot(graph(out, "--against", WC, "-m", WC_M, "--expand-cache"))
    added_top = {n for w in report["writes"] for n in w["transforms"]} | set(report["reads"][0]["transforms"])
    for name in added_top:
        attrs = dot.nodes.get(name) or dot.clusters[name]
        assert "#1a7f37" in attrs and "bold" in attrs, name
    for name in report["pruned"]:
        assert "dashed" in dot.nodes[name] and "#a0a0a0" in dot.nodes[name]
    for name in ("PairWithOne", "Format", "ReadLines/Impulse"):
        assert "#1a7f37" not in dot.nodes[name] and "dashed" not in dot.nodes[name]
    unreify = [n for n in dot.nodes if n.startswith("UnreifyAfter_ReadCache_")]
    assert len(unreify) == 1
    # the rewiring: the old edge is ghosted, the new one is new and carries the variable
    (old,) = [a for s, d, a in dot.edges if (s, d) == ("Split", "PairWithOne")]
    assert "dashed" in old and 'label="words"' in old
    (new,) = [a for s, d, a in dot.edges if (s, d) == (unreify[0], "PairWithOne")]
    assert "#1a7f37" in new and 'label="words"' in new
    assert all("dashed" not in a for s, d, a in dot.edges if s not in report["pruned"] and d not in report["pruned"] and (s, d) != ("Split", "PairWithOne"))


def test_without_against_nothing_is_highlighted(read_case):
    out, _ = read_case
    dot = parse_dot(graph(out))
    assert not any("#1a7f37" in a or "dashed" in a for a in dot.nodes.values())
    assert "Split" not in dot.nodes


def test_output_file_and_format_from_extension(tmp_path):
    out = tmp_path / "wc.gv"
    r = run_cli("graph", WC, "-o", str(out))
    assert r.exit_code == 0 and r.stdout == ""
    parse_dot(out.read_text())
    r = run_cli("graph", WC, "-o", str(tmp_path / "wc.pdf"))
    assert r.exit_code == 2 and "--format" in r.stderr
    assert not (tmp_path / "wc.pdf").exists()


def test_bad_manifest_and_bad_pipeline_exit_2(tmp_path):
    bad = tmp_path / "m.json"
    bad.write_text('{"bindings": {"x": "no_such_pcollection"}}')
    r = run_cli("graph", WC, "-m", str(bad))
    assert r.exit_code == 2 and "no_such_pcollection" in r.stderr and str(bad) in r.stderr
    r = run_cli("graph", str(tmp_path / "missing.pb"))
    assert r.exit_code == 2 and r.stderr.count("\n") == 1


@pytest.mark.parametrize("fmt", ["svg", "png"])
def test_images_without_dot_exit_2_with_install_hint(fmt, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    out = tmp_path / f"wc.{fmt}"
    r = run_cli("graph", WC, "--format", fmt, "-o", str(out))
    assert r.exit_code == 2
    assert "apt-get install graphviz" in r.stderr and "brew install graphviz" in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert not out.exists()


def test_images_without_the_python_package_exit_2_with_install_hint(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "graphviz" else real(name, *a))
    r = run_cli("graph", WC, "-o", str(tmp_path / "wc.svg"))
    assert r.exit_code == 2 and "pip install graphviz" in r.stderr


def test_dot_needs_no_graphviz(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    assert graph(WC, "--format", "dot").startswith("digraph")


@pytest.mark.skipif(
    importlib.util.find_spec("graphviz") is None or shutil.which("dot") is None,
    reason="needs the graphviz package and Graphviz's dot (pip install 'beaminst[graph]'; apt-get install graphviz)",
)
def test_svg_and_png_with_graphviz(tmp_path, read_case):
    out, _ = read_case
    svg = tmp_path / "wc.svg"
    r = run_cli("graph", out, "--against", WC, "-m", WC_M, "-o", str(svg))
    assert r.exit_code == 0, r.stderr
    assert "<svg" in svg.read_text() and "PairWithOne" in svg.read_text()
    png = tmp_path / "wc.png"
    assert run_cli("graph", WC, "-o", str(png)).exit_code == 0
    assert png.read_bytes().startswith(b"\x89PNG")


def test_graph_never_imports_the_beam_sdk(read_case):
    out, _ = read_case
    probe = (
        "import sys\nfrom beaminst.cli import main\n"
        "main(sys.argv[1:], standalone_mode=False)\n"
        "print('BEAM', any(m.startswith('apache_beam') for m in sys.modules))\n"
    )
    proc = run_python("-c", probe, "graph", out, "--against", WC, "-m", WC_M, "-o", str(Path(out).with_suffix(".dot")))
    assert "BEAM False" in proc.stdout, proc.stderr


# --- collapsing (--depth, cache subgraphs) and short labels ----------------------

_LABEL = re.compile(rf"\blabel=({_QUOTED})")
_KEY = re.compile(r"[0-9a-f]{10}-[0-9a-f]{16}-[0-9a-f]{16}-[0-9a-f]{16}")
_CACHE_TOP = ("WriteCache_", "ReadCache_")


@pytest.fixture(scope="module")
def stream_case(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    """pubsub_one instrumented: a TestStream whose output tags are cache keys."""
    return instrument_case(tmp_path_factory.mktemp("render_stream"), "pubsub_one")


def edge_set(dot: Dot) -> list[tuple[str, str, str, bool]]:
    """(src, dst, label, side input) per edge, in output order."""
    out = []
    for s, d, attrs in dot.edges:
        m = re.search(rf"\blabel=({_QUOTED})", attrs)
        out.append((s, d, unquote(m.group(1)) if m else "", "arrowhead=empty" in attrs))
    return out


def at_depth(name: str, depth: int) -> str:
    """The node a Python SDK transform is drawn as with --depth: its
    ancestor at that level (unique names are ``parent/label``)."""
    return name if name.startswith("out:") else "/".join(name.split("/")[:depth])


def cache_node(name: str) -> str:
    """The node a grafted transform is drawn as by default: its top-level
    cache composite, the reify step beside it included."""
    top = name.split("/")[0]
    for step in ("ReifyBefore_", "UnreifyAfter_"):
        if top.startswith(step + "WriteCache_") or top.startswith(step + "ReadCache_"):
            return top[len(step):]
    return top if top.startswith(_CACHE_TOP) else name


def assert_collapsed(full: Dot, collapsed: Dot, rep) -> None:
    """``collapsed`` is ``full`` with every node replaced by ``rep(node)``:
    the same nodes mapped, every edge mapped once, none inside a node."""
    assert set(collapsed.nodes) == {rep(n) for n in full.nodes}
    edges = edge_set(collapsed)
    assert len(edges) == len(set(edges)), "duplicate edges"
    assert all(s != d for s, d, _, _ in edges), "self-loop"
    assert set(edges) == {(rep(s), rep(d), lab, side) for s, d, lab, side in edge_set(full) if rep(s) != rep(d)}


def label_texts(text: str) -> list[str]:
    """Every node, cluster and edge label (not the title: file paths)."""
    body = "\n".join(line for line in text.splitlines() if not line.startswith("  graph ["))
    return [unquote(q) for q in _LABEL.findall(body)]


def test_cache_subgraphs_are_one_node_each_by_default(read_case):
    out, report = read_case
    dot = parse_dot(graph(out))
    writes = {w["transforms"][-1] for w in report["writes"]}
    (read,) = [r["transforms"][0] for r in report["reads"]]
    cache_nodes = {n for n in dot.nodes if n.startswith(_CACHE_TOP)}
    assert cache_nodes == writes | {read}  # one node per cache write, one per read
    assert not any(n.startswith(("ReifyBefore_", "UnreifyAfter_")) or ("/" in n and n.startswith(_CACHE_TOP)) for n in dot.nodes)
    assert not any(w in n for n in dot.nodes for w in ("WriteToText", "ReadFromText", "cache_manager"))
    assert not any(c.startswith(_CACHE_TOP) for c in dot.clusters)
    for w in writes:
        assert "cache write, 19 transforms" in unquote(re.search(rf"label=({_QUOTED})", dot.nodes[w]).group(1))
    assert dot.label(read, "PairWithOne") == {""}
    expanded = parse_dot(graph(out, "--expand-cache"))
    assert any("WriteToText" in n for n in expanded.nodes) and any("ReadFromText" in n for n in expanded.nodes)
    assert_collapsed(expanded, dot, cache_node)


def test_background_caching_writes_collapse_too(tmp_path):
    bg = tmp_path / "bg.pb"
    r = run_cli("background-caching", fixture_pb("pubsub_one"), "--cache-dir", str(tmp_path / "c"), "-o", str(bg))
    assert r.exit_code == 0, r.stderr
    from beaminst.model.protoio import load_pipeline

    tops = {t.unique_name for t in load_pipeline(str(bg))[0].components.transforms.values()}
    writes = {n for n in tops if n.startswith("WriteCache_") and "/" not in n}
    dot = parse_dot(graph(str(bg)))
    assert writes and {n for n in dot.nodes if "WriteCache_" in n} == writes
    assert_collapsed(parse_dot(graph(str(bg), "--expand-cache")), dot, cache_node)


@pytest.mark.parametrize("name", ["wordcount", "nested_composites", "side_inputs", "cogbk", "multi_output"])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_depth_maps_every_node_and_edge_to_its_ancestor(name, depth):
    args = (fixture_pb(name), "-m", fixture_manifest(name))
    full = parse_dot(graph(*args))
    collapsed = parse_dot(graph(*args, "--depth", str(depth)))
    assert_collapsed(full, collapsed, lambda n: at_depth(n, depth))
    assert all(len(c.split("/")) < depth for c in collapsed.clusters)


def test_depth_1_is_the_top_level_only():
    dot = parse_dot(graph(WC, "--depth", "1"))
    assert set(dot.nodes) == {"ReadLines", "Split", "PairWithOne", "CountWords", "Format"} and not dot.clusters
    assert edge_set(dot) == [
        ("CountWords", "Format", "", False), ("PairWithOne", "CountWords", "", False),
        ("ReadLines", "Split", "", False), ("Split", "PairWithOne", "", False),
    ]
    names = {t.unique_name for t in load_fixture("wordcount").components.transforms.values()}
    inside = sum(1 for n in names if n == "ReadLines" or n.startswith("ReadLines/"))
    assert f"{inside} transforms" in dot.nodes["ReadLines"] and "peripheries=2" in dot.nodes["ReadLines"]
    assert "peripheries" not in dot.nodes["Split"]
    # --depth 1 collapses cache composites even with --expand-cache: the top level is all there is
    assert set(parse_dot(graph(WC, "--depth", "1", "--expand-cache")).nodes) == set(dot.nodes)


def test_depth_must_be_positive():
    r = run_cli("graph", WC, "--depth", "0")
    assert r.exit_code == 2 and "--depth" in r.stderr


def test_against_highlights_collapsed_nodes(read_case):
    out, report = read_case
    dot = parse_dot(graph(out, "--against", WC, "-m", WC_M))
    (read,) = [r["transforms"][0] for r in report["reads"]]
    for name in [w["transforms"][-1] for w in report["writes"]] + [read]:
        assert "#1a7f37" in dot.nodes[name] and "bold" in dot.nodes[name] and "peripheries=2" in dot.nodes[name]
    (new,) = [a for s, d, a in dot.edges if (s, d) == (read, "PairWithOne")]
    assert "#1a7f37" in new and 'label="words"' in new
    (old,) = [a for s, d, a in dot.edges if (s, d) == ("Split", "PairWithOne")]
    assert "dashed" in old and 'label="words"' in old
    assert "dashed" in dot.nodes["Split"]
    # the expanded drawing, collapsed by the cache rule, is this one
    assert_collapsed(parse_dot(graph(out, "--against", WC, "-m", WC_M, "--expand-cache")), dot, cache_node)
    # at the top level a kept composite stays plain while its edge to a pruned transform is ghosted
    top = parse_dot(graph(out, "--against", WC, "-m", WC_M, "--depth", "1"))
    assert "#1a7f37" not in top.nodes["ReadLines"] and "dashed" not in top.nodes["ReadLines"]
    (gone,) = [a for s, d, a in top.edges if (s, d) == ("ReadLines", "Split")]
    assert "dashed" in gone and 'label="lines"' in gone


def test_against_ghosts_a_collapsed_pruned_composite(stream_case):
    out, report = stream_case
    dot = parse_dot(graph(out, "--against", fixture_pb("pubsub_one"), "--depth", "1"))
    assert "ReadEvents" in report["pruned"]
    assert "dashed" in dot.nodes["ReadEvents"] and "peripheries=2" in dot.nodes["ReadEvents"]
    assert not any(n.startswith("ReadEvents/") for n in dot.nodes)
    (gone,) = [a for s, d, a in dot.edges if (s, d) == ("ReadEvents", "Decode")]
    assert "dashed" in gone
    assert "#1a7f37" in dot.nodes["TestStream"]


def test_test_stream_keys_are_short_labels_with_the_key_in_the_tooltip(stream_case):
    out, report = stream_case
    (key,) = [r["cache_key"] for r in report["reads"] if r["via"] == "TestStream"]
    text = graph(out)
    (attrs,) = [a for s, d, a in parse_dot(text).edges if (s, d) == ("TestStream", "Decode")]
    assert f'label="{key[:10]}\u2026"' in attrs
    assert f'labeltooltip="{key}"' in attrs and f'tooltip="{key}"' in attrs


def test_labels_are_bounded(read_case, stream_case, tmp_path):
    from beaminst.commands.render import MAX_EDGE_LABEL, MAX_NODE_LABEL

    long_var = "words_of_every_line_" + "x" * 36 + "_end"  # as long as a cache key
    manifest = tmp_path / "m.json"
    manifest.write_text(Path(WC_M).read_text().replace('"words"', f'"{long_var}"'))
    texts = [
        graph(read_case[0], "--against", WC, "-m", str(manifest)),
        graph(read_case[0], "--against", WC, "-m", str(manifest), "--expand-cache"),
        graph(stream_case[0]),
        graph(stream_case[0], "--expand-cache", "--against", fixture_pb("pubsub_one")),
    ]
    for text in texts:
        dot = parse_dot(text)
        assert all(len(line) <= MAX_NODE_LABEL for label in label_texts(text) for line in label.split("\n"))
        assert all(len(label) <= MAX_EDGE_LABEL for _, _, label, _ in edge_set(dot))
        assert not any(_KEY.search(label) for label in label_texts(text)), "a whole cache key in a label"
    first = parse_dot(texts[0])
    (read,) = [r["transforms"][0] for r in read_case[1]["reads"]]
    (attrs,) = [a for s, d, a in first.edges if (s, d) == (read, "PairWithOne")]
    (shown,) = first.label(read, "PairWithOne")
    assert len(shown) == MAX_EDGE_LABEL and shown.startswith("words_of") and shown.endswith("x_end")
    assert f'labeltooltip="{long_var}"' in attrs


def test_collapsed_output_is_deterministic_whatever_the_ids(read_case, tmp_path):
    out, _ = read_case
    moved = tmp_path / "moved.pb"
    from beaminst.model.protoio import load_pipeline

    save_pipeline(renamed(load_pipeline(out)[0], seed=5), str(moved))
    for extra in ((), ("--depth", "2"), ("--expand-cache",)):
        a = graph(out, "--against", WC, *extra)
        assert a == graph(out, "--against", WC, *extra)
        assert a.replace(out, "P") == graph(str(moved), "--against", WC, *extra).replace(str(moved), "P")


def test_depth_on_a_deep_chain(tmp_path):
    """Collapsing is one pass: 5,000 nested composites collapse at any level."""
    from test_safety_bounds import deep_chain

    from beaminst.model.protoio import serialize_pipeline

    path = tmp_path / "deep.pb"
    path.write_bytes(serialize_pipeline(deep_chain(5000)))
    dot = parse_dot(graph(str(path), "--depth", "3"))
    assert set(dot.clusters) == {"c0", "c1"} and set(dot.nodes) == {"c2"}
    assert "composite, 4999 transforms" in dot.nodes["c2"]
    deep = graph(str(path), "--depth", "4999", "--against", str(path))
    assert deep.count("subgraph") == 4998 and '"c4998" [label=' in deep
    small = tmp_path / "deep1000.pb"
    small.write_bytes(serialize_pipeline(deep_chain(1000)))
    assert parse_dot(graph(str(small), "--depth", "500")).nodes.keys() == {"c499"}


def test_help_shows_the_collapsing_options():
    r = run_cli("graph", "--help")
    assert r.exit_code == 0
    assert "--depth 1" in r.stdout and "--expand-cache" in r.stdout and "--depth N" in r.stdout


def test_merged_edges_keep_the_liveliest_state(tmp_path):
    """A transform replaced inside a kept composite: the old edge (ghosted)
    and the new one (added) meet on the collapsed node; the edge is drawn
    once, as added, since it still exists."""
    changed = load_fixture("wordcount")
    (gbk,) = [t for t in changed.components.transforms.values() if t.unique_name == "CountWords/GroupByKey"]
    gbk.unique_name = "CountWords/GroupByKeyAgain"
    path = tmp_path / "changed.pb"
    save_pipeline(changed, str(path))
    full = parse_dot(graph(str(path), "--against", WC))
    assert "dashed" in dict(((s, d), a) for s, d, a in full.edges)[("PairWithOne", "CountWords/GroupByKey")]
    dot = parse_dot(graph(str(path), "--against", WC, "--depth", "1"))
    (edge,) = [a for s, d, a in dot.edges if (s, d) == ("PairWithOne", "CountWords")]
    assert "#1a7f37" in edge and "dashed" not in edge
    assert_collapsed(full, dot, lambda n: at_depth(n, 1))


def test_rewired_refs_carry_the_variables_diffs_rewired_inputs_do(read_case):
    """render finds rewired inputs from the consumers of bound PCollections;
    the variables it carries over are the ones diff's full scan of every
    common transform's inputs gives."""
    from beaminst.analysis.manifest import load_manifest
    from beaminst.commands.diff import common_transforms, rewired_inputs, side
    from beaminst.commands.render import bound_variables, rewired_refs
    from beaminst.graph.validate import validate
    from beaminst.model.protoio import load_pipeline

    out, _ = read_case

    o, s = side(validate(load_fixture("wordcount"))), side(validate(load_pipeline(out)[0]))
    variables = bound_variables(load_manifest(WC_M), o.index)
    expected, got = dict(variables), dict(variables)
    for r in rewired_inputs(o, s, common_transforms(o, s)):
        was, now = (r["before"]["producer"], r["before"]["tag"]), (r["after"]["producer"], r["after"]["tag"])
        if was in expected:
            expected.setdefault(now, expected[was])
    for was, now in rewired_refs(o, s, got.keys()):
        if was in got:
            got.setdefault(now, got[was])
    assert got == expected
    assert len(got) > len(variables)  # the read's output carries "words"
