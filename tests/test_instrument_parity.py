"""Parity of ``beaminst instrument`` with Beam's own PipelineInstrument.

Each case builds a real pipeline with the Beam SDK, runs Beam's
``build_pipeline_instrument`` on a runner copy (as Beam's recording flow does,
so that cache reads happen), saves the user pipeline + a manifest pinning
Beam's cache keys, runs beaminst on the saved pair, and compares the two
instrumented protos structurally: transform unique names, URNs, subtransforms
and wiring by producer unique name + tag.

One deliberate difference, asserted everywhere: Beam applies its cache
transforms to the runner copy, whose root carries a label, so they come out
nested under ``<root label>/``; beaminst puts them at top level under Beam's
plain names (``WriteCache_<key>``), as they are in a user pipeline.
"""

from __future__ import annotations

import os

import apache_beam as beam
import pytest
from beamref import beam_instrument, export_with_keys
from conftest import EMPTY_SHARD
from structure import diff, structure

from beaminst.commands.api import analyze_files
from beaminst.graph.validate import validate
from beaminst.options import RewriteOptions
from beaminst.passes.instrument import instrument
from fixtures import pipelines as fp

BOUNDED = ["wordcount", "multi_output", "side_inputs", "flatten_gbk", "cogbk", "nested_composites", "windowing"]
STREAMING = ["pubsub_one", "pubsub_two"]
GRAFTED = ("WriteCache_", "ReifyBefore_", "ReadCache_", "UnreifyAfter_", "TestStream")


def run_both(built, tmp_path, cached=(), computed=()):
    side = beam_instrument(built.pipeline, built.bindings, {v: ["x"] for v in cached}, tuple(computed))
    pb, man = export_with_keys(built.pipeline, side, os.path.join(tmp_path, "p"), tuple(computed))
    analysis = analyze_files(pb, man, side.cache_dir)
    ours, report = instrument(analysis, RewriteOptions(side.cache_dir))
    return side, ours, report


def assert_parity(side, ours):
    prefix = side.root_label
    beam_nodes = structure(side.proto, strip_prefix=prefix)
    our_nodes = structure(ours)
    assert diff(beam_nodes, our_nodes) == []
    # The deliberate difference: Beam nests its grafted transforms under the
    # runner copy's root label; ours carry the plain names.
    nested = [n[len(prefix) + 1 :] for n in structure(side.proto) if n.startswith(prefix + "/")]
    assert all(n.startswith(GRAFTED) for n in nested)
    plain_ours = [n for n in our_nodes if n.startswith(GRAFTED)]
    assert all(not n.startswith(prefix + "/") for n in our_nodes)
    if plain_ours:
        assert nested, "Beam's grafted transforms were expected under the root label"
    # Requirements too: Beam's proto declares what its transforms need (a
    # ReadCache's splittable DoFn, a StreamingCache write's stateful DoFns).
    assert sorted(ours.requirements) == sorted(side.proto.requirements)
    validate(ours)


@pytest.mark.parametrize("name", BOUNDED + STREAMING)
def test_write_only_parity_on_every_fixture(name, tmp_path):
    side, ours, report = run_both(fp.BUILDERS[name](), tmp_path)
    assert_parity(side, ours)
    if name in BOUNDED:
        assert len(report.writes) == len(fp.BUILDERS[name]().bindings)
        assert report.reads == []


@pytest.mark.parametrize(
    "name,computed",
    [
        ("wordcount", ["words"]),
        ("wordcount", ["words", "lines"]),
        ("wordcount", ["counts"]),
        ("side_inputs", ["sizes"]),  # only read as a side input: Beam does not rewire it
        ("side_inputs", ["sized", "words"]),
        ("multi_output", ["evens"]),  # a tagged output
        ("flatten_gbk", ["a"]),
        ("nested_composites", ["counts"]),  # output of a nested composite
        ("cogbk", ["emails", "phones"]),
    ],
)
def test_read_of_computed_cached_pcollections_prunes_upstream(name, computed, tmp_path):
    side, ours, report = run_both(fp.BUILDERS[name](), tmp_path, cached=computed, computed=computed)
    assert_parity(side, ours)
    read_vars = {r.var for r in report.reads}
    assert read_vars <= set(computed)
    if name == "wordcount" and computed == ["words", "lines"]:
        names = {t.unique_name for t in ours.components.transforms.values()}
        assert "ReadLines" not in names and "Split" not in names  # upstream pruned
        assert "PairWithOne" in names


def test_cached_but_not_computed_is_neither_read_nor_written(tmp_path):
    side, ours, report = run_both(fp.wordcount(), tmp_path, cached=["words"], computed=[])
    assert_parity(side, ours)
    assert "words" not in {w.var for w in report.writes}
    assert report.reads == []
    assert any(s.var == "words" for s in report.skipped)


def test_side_effect_outputs_are_kept(tmp_path):
    p = fp._pipeline()
    nums = p | "Nums" >> beam.Create([1, 2, 3])
    doubled = nums | "Double" >> beam.Map(fp.scale, 2)
    _ = nums | "SideEffect" >> beam.Map(fp.identity)  # nobody consumes it, nobody binds it
    side, ours, _ = run_both(fp.Built(p, {"nums": nums, "doubled": doubled}), tmp_path, cached=["nums"], computed=["nums"])
    assert_parity(side, ours)
    names = {t.unique_name for t in ours.components.transforms.values()}
    assert {"SideEffect", "Double"} <= names and "Nums" not in names


def _rebuild_inner():
    """A variable bound to the intermediate PCollection 'CountWords/Clean'
    produces inside the CountWords composite (found through the live
    pipeline's own transform tree, as a notebook inspector would)."""
    p = fp._pipeline()
    lines = p | "Lines" >> beam.Create(["A b", "b C"])
    counts = lines | "CountWords" >> fp.CountWords()
    count_words = next(n for n in p.transforms_stack[0].parts if n.full_label == "CountWords")
    clean = next(n.outputs[None] for n in count_words.parts if n.full_label == "CountWords/Clean")
    return p, {"clean": clean, "counts": counts}


def test_variable_bound_inside_a_composite(tmp_path):
    p, bindings = _rebuild_inner()
    side, ours, report = run_both(fp.Built(p, bindings), tmp_path)
    assert_parity(side, ours)
    assert {w.var for w in report.writes} == {"clean", "counts"}


def test_variable_inside_a_composite_read_from_cache_where_beam_breaks(tmp_path):
    """Reading the intermediate back: Beam 2.77's PipelineFragment emits a
    composite whose output nobody produces and fails in from_runner_api
    ("No producer for ..."). beaminst keeps that producer (its one repair on
    Beam's walk) and writes a valid pipeline that Beam loads."""
    p, bindings = _rebuild_inner()
    with pytest.raises(ValueError, match="No producer"):
        beam_instrument(p, bindings, {"clean": ["x"]}, ("clean",))
    p, bindings = _rebuild_inner()
    side = beam_instrument(p, bindings)  # keys and cache dir, nothing cached yet
    os.makedirs(os.path.join(side.cache_dir, "full"), exist_ok=True)
    open(os.path.join(side.cache_dir, "full", side.keys["clean"] + "-00000-of-00001"), "wb").write(EMPTY_SHARD)
    pb, man = export_with_keys(p, side, os.path.join(tmp_path, "p"), ("clean",))
    ours, report = instrument(analyze_files(pb, man, side.cache_dir), RewriteOptions(side.cache_dir))
    validate(ours)
    assert [r.var for r in report.reads] == ["clean"]
    pair = next(t for t in ours.components.transforms.values() if t.unique_name == "CountWords/Pair")
    producers = structure(ours)["CountWords/Pair"].inputs
    assert {prod for _, (prod, _) in producers} == {"UnreifyAfter_ReadCache_" + side.keys["clean"]}
    assert pair is not None
    beam.Pipeline.from_runner_api(ours, beam.runners.DirectRunner(), p._options)


def test_one_unbounded_source_reads_through_test_stream(tmp_path):
    side, ours, report = run_both(fp.pubsub_one(), tmp_path)
    assert_parity(side, ours)
    urns = [t.spec.urn for t in ours.components.transforms.values()]
    assert urns.count("beam:transform:teststream:v1") == 1
    assert "beam:transform:pubsub_read:v1" not in urns  # the source is replaced
    assert report.test_stream and len(report.test_stream["tags"]) == 1


def test_several_unbounded_sources_share_one_test_stream(tmp_path):
    side, ours, report = run_both(fp.pubsub_two(), tmp_path)
    assert_parity(side, ours)
    ts = [t for t in ours.components.transforms.values() if t.spec.urn == "beam:transform:teststream:v1"]
    assert len(ts) == 1 and len(ts[0].outputs) == 2
    assert set(ts[0].outputs) == set(report.test_stream["tags"])


def test_mixed_streaming_batch_with_bounded_source_cached_and_computed(tmp_path):
    # Beam's own test_instrument_mixed_streaming_batch.
    side, ours, report = run_both(fp.mixed(), tmp_path, cached=["source_2"], computed=["source_2"])
    assert_parity(side, ours)
    ts = [t for t in ours.components.transforms.values() if t.spec.urn == "beam:transform:teststream:v1"]
    assert len(ts) == 1 and len(ts[0].outputs) == 2  # the PubSub source and the cached Create


def test_a_source_with_nothing_downstream_keeps_its_test_stream(tmp_path):
    # Beam's background_caching_job_test: the pipeline is only the source.
    # Beam's instrumented proto is one TestStream feeding the watched
    # PCollection; pruning it away would leave an empty pipeline.
    p = fp._pipeline(streaming=True)
    elems = p | "Read" >> beam.io.ReadFromPubSub(subscription=fp.SUBSCRIPTION.format("only"))
    side, ours, report = run_both(fp.Built(p, {"elems": elems}), tmp_path, cached=["elems"])
    assert_parity(side, ours)
    assert [n for n in structure(ours)] == ["TestStream"]
    assert [r.var for r in report.reads] == ["elems"]
