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

from beaminst.protoio import save_pipeline

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
