"""``beaminst background-caching``: Interactive Beam's background caching job.

Parity cases build a real pipeline, run Beam's own
``background_caching_pipeline_proto()`` on a runner copy (``beamref``), save
the user pipeline + a manifest pinning Beam's cache keys (synthetic source
variables included), run beaminst on the saved pair and compare the two
protos structurally.

Deliberate differences, asserted where they show:

* Beam applies its capture writes to a runner copy whose root carries a label,
  so they come out as ``<root label>/WriteCache_<key>``; beaminst's are
  top-level under Beam's plain names;
* Beam copies no environment (its transforms name a missing one); beaminst
  keeps exactly the referenced environments, coders and windowing strategies;
* a source inside a user composite: Beam keeps the source but drops the
  composite from the root, so its proto fails ``from_runner_api`` ("No
  producer"); beaminst keeps the composite, cut down to the source.
"""

from __future__ import annotations

import json
import os
import textwrap

import apache_beam as beam
import pytest
from beamref import beam_instrument, export_with_keys
from conftest import fixture_manifest, fixture_pb, run_cli, run_cli_subprocess, run_python
from structure import diff, structure, top_level_names

import beaminst
from beaminst.commands.api import analyze_files
from beaminst.errors import BeaminstError, ManifestError
from beaminst.graph.validate import check_unreferenced, validate
from beaminst.model.protoio import load_pipeline, save_pipeline
from beaminst.options import RewriteOptions, SourceRules
from beaminst.passes.background_caching import background_caching
from beaminst.passes.rewrite import top_level_list
from fixtures import pipelines as fp

TEST_STREAM_URN = "beam:transform:teststream:v1"
WRITES = ("ReifyBefore_WriteCache_", "WriteCache_")


# --- pipelines -----------------------------------------------------------------------


def windowed_branches() -> fp.Built:
    """One source, windowed, then three downstream branches; the source
    output is bound to a variable (so its key is that variable's)."""
    p = fp._pipeline(streaming=True)
    raw = p | "ReadClicks" >> beam.io.ReadFromPubSub(
        subscription=fp.SUBSCRIPTION.format("clicks"), timestamp_attribute="ts"
    )
    windowed = raw | "Decode" >> beam.Map(fp.decode_utf8) | "Window" >> beam.WindowInto(beam.window.FixedWindows(10))
    counts = windowed | "Count" >> beam.combiners.Count.PerElement()
    grouped = windowed | "KeyByLetter" >> beam.Map(fp.key_by_first_letter) | "Group" >> beam.GroupByKey()
    _ = windowed | "Upper" >> beam.Map(str.upper)
    return fp.Built(p, {"raw": raw, "windowed": windowed, "counts": counts, "grouped": grouped})


class ReadAndDecode(beam.PTransform):
    """A user composite with the source inside it."""

    def expand(self, pbegin):
        source = beam.io.ReadFromPubSub(subscription=fp.SUBSCRIPTION.format("nested"))
        return pbegin | "Read" >> source | "Decode" >> beam.Map(fp.decode_utf8)


def source_in_composite() -> fp.Built:
    p = fp._pipeline(streaming=True)
    decoded = p | "Ingest" >> ReadAndDecode()
    lengths = decoded | "Len" >> beam.Map(len)
    return fp.Built(p, {"decoded": decoded, "lengths": lengths})


def create_as_side_input() -> fp.Built:
    """Mixed bounded/unbounded where Beam 2.77's instrument() recurses until
    RecursionError (see test_instrument_beyond_beam)."""
    p = fp._pipeline(streaming=True)
    events = p | "ReadEvents" >> beam.io.ReadFromPubSub(subscription=fp.SUBSCRIPTION.format("e"))
    sizes = p | "Sizes" >> beam.Create([("a", 1)])
    sized = events | "Decode" >> beam.Map(fp.decode_utf8) | "AddSizes" >> beam.Map(fp.add_sizes, beam.pvalue.AsDict(sizes))
    return fp.Built(p, {"sized": sized})


def flattened_with_create() -> fp.Built:
    p = fp._pipeline(streaming=True)
    source_1 = p | "source_1" >> beam.io.ReadFromPubSub(subscription=fp.SUBSCRIPTION.format("m"))
    source_2 = p | "source_2" >> beam.Create([b"1"])
    flattened = (source_1, source_2) | beam.Flatten()
    squared = flattened | "square" >> beam.Map(fp.identity)
    return fp.Built(p, {"source_1": source_1, "source_2": source_2, "flattened": flattened, "squared": squared})


# --- helpers -------------------------------------------------------------------------


def run_both(built: fp.Built, tmp_path):
    side = beam_instrument(built.pipeline, built.bindings)
    assert side.background is not None
    pb, man = export_with_keys(built.pipeline, side, os.path.join(tmp_path, "p"))
    ours, report = background_caching(analyze_files(pb, man, side.cache_dir), RewriteOptions(side.cache_dir))
    return side, ours, report


def assert_valid_and_loads(ours, options=None):
    validate(ours)
    check_unreferenced(ours)
    beam.Pipeline.from_runner_api(ours, beam.runners.DirectRunner(), options)


def assert_parity(side, ours, report, only_ours=()):
    prefix = side.root_label
    beam_nodes = structure(side.background, strip_prefix=prefix)
    our_nodes = structure(ours)
    assert diff(beam_nodes, our_nodes) == [f"only in second: {n}" for n in sorted(only_ours)]
    # Deliberate difference 1: Beam's writes sit under the runner copy's root
    # label, ours are top-level under the plain names.
    beam_raw = structure(side.background)
    nested = [n[len(prefix) + 1 :] for n in beam_raw if n.startswith(prefix + "/")]
    assert nested and all(n.startswith(WRITES) for n in nested)
    assert not [n for n in beam_raw if n.startswith(WRITES)]
    assert not [n for n in our_nodes if n.startswith(prefix + "/")]
    assert {n for n in top_level_names(ours) if n.startswith(WRITES)} == {
        n for n in top_level_names(side.background, strip_prefix=prefix) if n.startswith(WRITES)
    }
    # The keys are Beam's (pinned through the manifest), one write per source.
    keys = {w.cache_key for w in report.writes}
    assert len(keys) == len(report.writes) == len(report.sources)
    assert keys <= set(side.keys.values())
    assert {f"WriteCache_{k}" for k in keys} == {n for n in nested if "/" not in n and n.startswith("WriteCache_")}
    # Deliberate difference 0: the capture writes hold stateful DoFns, and
    # Beam builds this proto by hand without declaring it (so portable runners
    # refuse it: "Missing requirement declaration"); ours declares it.
    assert list(side.background.requirements) == []
    assert list(ours.requirements) == ["beam:requirement:pardo:stateful:v1"]
    # Deliberate difference 2: Beam carries no environment at all.
    assert not side.background.components.environments
    used = {t.environment_id for t in ours.components.transforms.values() if t.environment_id}
    assert used and used == set(ours.components.environments)
    assert_valid_and_loads(ours, side.bindings[next(iter(side.bindings))].pipeline._options)


def assert_sources_and_writes_only(ours, writes_report: list[dict], sources: set[str]):
    """The intended result, stated directly: the sources (whole) and their
    capture writes are all there is."""
    keys = [w["cache_key"] for w in writes_report]
    writes = {f"{p}{k}" for k in keys for p in WRITES}
    assert top_level_names(ours) == sources | writes
    for n in structure(ours):
        assert n.split("/")[0] in sources | writes, n
    assert_valid_and_loads(ours)


# --- (a) parity with Beam's background_caching_pipeline_proto() ----------------------------


def test_two_pubsub_sources_flatten_and_map_are_cut(tmp_path):
    # Beam's own test_background_caching_pipeline_proto shape.
    side, ours, report = run_both(fp.pubsub_two(), tmp_path)
    assert_parity(side, ours, report)
    assert [s["unique_name"] for s in report.sources] == ["ReadA", "ReadB"]
    assert sorted(report.pruned) == ["Both", "Decode"]
    # Beam watched the unbound source outputs under synthetic variables; the
    # manifest pins those, so for beaminst they are bound variables.
    assert all(not w.synthetic and w.var.startswith("synthetic_var_") for w in report.writes)
    for w in report.writes:
        assert side.keys[w.var] == w.cache_key
    urns = sorted(t.spec.urn for t in ours.components.transforms.values())
    assert urns.count("beam:transform:pubsub_read:v1") == 2


def test_windowed_source_with_branches_keeps_only_source_and_write(tmp_path):
    side, ours, report = run_both(windowed_branches(), tmp_path)
    assert_parity(side, ours, report)
    (w,) = report.writes
    assert (w.var, w.synthetic) == ("raw", False)  # bound: the variable's key
    assert w.cache_key == side.keys["raw"]
    names = set(structure(ours))
    assert not names & {"Decode", "Window", "Count", "KeyByLetter", "Group", "Upper"}
    assert {"ReadClicks", "ReadClicks/Read"} <= names
    # Only the source output's windowing (global) and the writes' survive.
    window_coders = {ws.window_coder_id for ws in ours.components.windowing_strategies.values()}
    assert all(
        ours.components.coders[c].spec.urn == "beam:coder:global_window:v1" for c in window_coders
    )


def test_source_inside_a_user_composite(tmp_path):
    side, ours, report = run_both(source_in_composite(), tmp_path)
    # Deliberate difference 3: the enclosing composite stays, cut to the source.
    assert_parity(side, ours, report, only_ours=["Ingest"])
    with pytest.raises(ValueError, match="No producer"):
        beam.Pipeline.from_runner_api(side.background, beam.runners.DirectRunner(), None)
    ingest = next(t for t in ours.components.transforms.values() if t.unique_name == "Ingest")
    assert [ours.components.transforms[s].unique_name for s in ingest.subtransforms] == ["Ingest/Read"]
    assert not ingest.inputs and not ingest.outputs  # its output came from the cut Decode
    assert set(report.pruned) == {"Ingest/Decode", "Len"}
    assert [s["unique_name"] for s in report.sources] == ["Ingest/Read"]


def test_mixed_bounded_and_unbounded_parity(tmp_path):
    # Beam's test_instrument_mixed_streaming_batch shape, nothing cached.
    side, ours, report = run_both(fp.mixed(), tmp_path)
    assert_parity(side, ours, report)
    assert [w.var for w in report.writes] == ["source_1"]
    assert not [n for n in structure(ours) if n.startswith("source_2") or n == "Flatten"]


@pytest.mark.parametrize("shape", [create_as_side_input, flattened_with_create])
def test_mixed_shapes_where_beam_recurses(shape, tmp_path):
    """Beam 2.77's instrument() hits RecursionError on these before it can
    produce a background proto (asserted in test_instrument_beyond_beam);
    the intended result: the source and its write, the bounded branch cut."""
    built = shape()
    pb, man = beaminst.export(built.pipeline, built.bindings, os.path.join(tmp_path, "p"))
    cache = str(tmp_path / "cache")
    ours, report = background_caching(analyze_files(pb, man, cache), RewriteOptions(cache))
    (source,) = report.sources
    assert_sources_and_writes_only(ours, [w.to_json() for w in report.writes], {source["unique_name"]})
    names = set(structure(ours))
    assert not [n for n in names if n.startswith(("Sizes", "source_2", "Decode", "AddSizes", "Flatten", "square"))]
    if shape is flattened_with_create:
        assert [(w.var, w.synthetic) for w in report.writes] == [("source_1", False)]
    else:
        assert report.writes[0].synthetic is True


# --- (b) output is valid and loads ---------------------------------------------------------


@pytest.mark.parametrize("name", ["pubsub_one", "pubsub_two", "mixed"])
def test_cli_output_on_fixtures_validates_and_loads(name, tmp_path):
    out = tmp_path / "bg.pb"
    result = run_cli(
        "background-caching", fixture_pb(name), "-m", fixture_manifest(name),
        "--cache-dir", str(tmp_path / "cache"), "-o", str(out), "--json",
    )
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["empty"] is False and doc["output"] == str(out) and doc["format"] == "binary"
    assert doc["reads"] == [] and doc["test_stream"] is None
    proto, _ = load_pipeline(str(out))
    assert_valid_and_loads(proto)
    assert len(doc["writes"]) == len(doc["sources"]) >= 1
    assert_sources_and_writes_only(proto, doc["writes"], {s["unique_name"] for s in doc["sources"]})


def test_keys_match_the_analysis(tmp_path):
    """The key of each write is the analysis' cache key of the source output:
    the same key instrument's TestStream replays."""
    analysis = analyze_files(fixture_pb("mixed"), fixture_manifest("mixed"), str(tmp_path))
    _, report = background_caching(analysis, RewriteOptions(str(tmp_path)))
    for w in report.writes:
        assert analysis.cacheables[w.pcollection].cache_key == w.cache_key
        assert analysis.cacheables[w.pcollection].var == w.var


# --- (c) run it for real: TestStream -> recording -> read back -------------------------------


def test_stream_pipeline(stem: str) -> tuple[str, str]:
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.testing.test_stream import TestStream

    opts = PipelineOptions()
    opts.view_as(StandardOptions).streaming = True
    p = beam.Pipeline(options=opts)
    events = p | "Events" >> (
        TestStream()
        .add_elements([beam.window.TimestampedValue("a", 1), beam.window.TimestampedValue("b", 2)])
        .advance_watermark_to(10)
        .add_elements([beam.window.TimestampedValue("c", 12)])
        .advance_watermark_to_infinity()
    )
    upper = events | "Upper" >> beam.Map(str.upper)
    _ = upper | "Len" >> beam.Map(len)
    return beaminst.export(p, {"events": events, "upper": upper}, stem)


test_stream_pipeline.__test__ = False  # a builder, not a test

RUN_SCRIPT = textwrap.dedent(
    """
    import sys
    import apache_beam as beam
    import apache_beam.testing.test_stream  # registers the TestStream URN
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from beaminst.model.protoio import load_pipeline

    proto, _ = load_pipeline(sys.argv[1])
    opts = PipelineOptions([])
    opts.view_as(StandardOptions).streaming = True
    p = beam.Pipeline.from_runner_api(proto, beam.runners.DirectRunner(), opts)
    print("STATE", p.run().wait_until_finish())
    """
)


def test_recording_a_test_stream_on_the_direct_runner(tmp_path):
    from apache_beam.runners.interactive.cache_manager import SafeFastPrimitivesCoder
    from apache_beam.runners.interactive.caching.streaming_cache import StreamingCache

    from beaminst.cache.streaming import recorded_events
    from beaminst.passes.instrument import instrument

    pb, man = test_stream_pipeline(str(tmp_path / "ts"))
    cache, out = str(tmp_path / "cache"), str(tmp_path / "bg.pb")
    result = run_cli(
        "background-caching", pb, "-m", man, "--cache-dir", cache, "-o", out,
        "--unbounded-urn", TEST_STREAM_URN, "--json",
    )
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    ((w,),) = [doc["writes"]]
    assert (w["var"], w["synthetic"], w["source"]) == ("events", False, "Events")
    assert doc["pruned"] == ["Len", "Upper"]
    key = w["cache_key"]
    assert not os.path.exists(os.path.join(cache, "full", key))

    run = run_python("-c", RUN_SCRIPT, out, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "STATE DONE" in run.stdout

    reader, _ = StreamingCache(cache).read("full", key)
    events = list(reader)
    coder = SafeFastPrimitivesCoder()
    recorded = [
        (coder.decode(e.encoded_element).windowed_value.value, e.timestamp)
        for ev in events if ev.HasField("element_event")
        for e in ev.element_event.elements
    ]
    assert recorded == [("a", 1_000_000), ("b", 2_000_000), ("c", 12_000_000)]
    assert all(ev.element_event.tag == key for ev in events if ev.HasField("element_event"))
    assert any(ev.HasField("watermark_event") for ev in events)
    same, missing = recorded_events(cache, [key])
    assert missing == [] and len(same) == len(events)

    # And instrument replays exactly that recording.
    analysis = analyze_files(pb, man, cache, SourceRules([TEST_STREAM_URN]))
    _, ireport = instrument(analysis, RewriteOptions(cache))
    assert ireport.test_stream is not None and ireport.test_stream["tags"] == [key]
    assert ireport.test_stream["events"] == len(events)
    assert ireport.test_stream["elements"] == len(recorded) == 3  # what run's recording report counts
    assert not [x for x in ireport.warnings if "nothing recorded" in x]

    # Running again over an existing recording warns (the sink appends).
    again = run_cli(
        "background-caching", pb, "-m", man, "--cache-dir", cache, "-o", out,
        "--unbounded-urn", TEST_STREAM_URN, "--json",
    )
    assert again.exit_code == 0, again.stderr
    assert [x for x in json.loads(again.stdout)["warnings"] if "already has a recording" in x and key in x]


# --- (d) --infer-unbounded on a proto written the way other SDKs write it --------------------


OTHER_SOURCE_URN = "beam:transform:example_sdk:kafka_read:v1"
OTHER_READ_ALL_URN = "beam:transform:example_sdk:read_all:v1"


def other_sdk_proto(path: str, multi_root: bool) -> str:
    """A hand-edited proto: 'Src' is a leaf with no inputs and an UNBOUNDED
    output under a URN beaminst does not know; 'ReadTopics' is a leaf with a
    bounded input (from Seed/Topics) and an UNBOUNDED output; everything
    downstream is UNBOUNDED too. ``multi_root``: the roots are the top-level
    transforms, as non-Python SDKs write them."""
    from beaminst.model.beamproto import runner_api

    p = beam.Pipeline()
    a = p | "Src" >> beam.Impulse() | "Decode" >> beam.Map(fp.decode_utf8)
    b = p | "Seed" >> beam.Impulse() | "Topics" >> beam.Map(fp.identity)
    b = b | "ReadTopics" >> beam.Map(fp.identity) | "Parse" >> beam.Map(fp.decode_utf8)
    _ = (a, b) | "Both" >> beam.Flatten() | "Out" >> beam.Map(fp.identity)
    proto = p.to_runner_api()
    ts, pcs = proto.components.transforms, proto.components.pcollections
    by_name = {t.unique_name: t for t in ts.values()}
    by_name["Src"].spec.urn, by_name["Src"].spec.payload = OTHER_SOURCE_URN, b"topic=a"
    by_name["ReadTopics"].spec.urn, by_name["ReadTopics"].spec.payload = OTHER_READ_ALL_URN, b""
    unbounded = runner_api().IsBounded.UNBOUNDED
    for name in ("Src", "Decode", "ReadTopics", "Parse", "Both", "Out"):
        for pc in by_name[name].outputs.values():
            pcs[pc].is_bounded = unbounded
    if multi_root:
        (root,) = proto.root_transform_ids
        proto.root_transform_ids[:] = list(ts[root].subtransforms)
        del ts[root]
    save_pipeline(proto, path)
    return path


@pytest.mark.parametrize("multi_root", [False, True], ids=["python-root", "multi-root"])
def test_infer_unbounded_on_another_sdks_proto(multi_root, tmp_path):
    pb = other_sdk_proto(str(tmp_path / "other.pb"), multi_root)
    cache, out = str(tmp_path / "cache"), str(tmp_path / "bg.pb")
    plain = run_cli("background-caching", pb, "--cache-dir", cache, "-o", out)
    assert plain.exit_code == 2 and "no unbounded source" in plain.stderr
    assert not os.path.exists(out)

    result = run_cli("background-caching", pb, "--cache-dir", cache, "-o", out, "--infer-unbounded", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert [(s["unique_name"], s["urn"], s["rule"]) for s in doc["sources"]] == [
        ("Src", OTHER_SOURCE_URN, "inferred"),
        ("ReadTopics", OTHER_READ_ALL_URN, "inferred"),
    ]
    # Nothing bound: each key is the synthetic variable's the analysis chose.
    analysis = analyze_files(pb, None, cache, SourceRules(infer=True))
    for w in doc["writes"]:
        assert w["synthetic"] is True and w["var"].startswith("synthetic_var_")
        assert analysis.cacheables[w["pcollection"]].cache_key == w["cache_key"]
    proto, _ = load_pipeline(out)
    validate(proto)
    check_unreferenced(proto)
    names = {t.unique_name for t in proto.components.transforms.values()}  # roots included
    # ReadTopics reads from Seed/Topics: its upstream stays, the rest is cut.
    assert {"Src", "ReadTopics", "Topics", "Seed"} <= names
    assert not names & {"Decode", "Parse", "Both", "Out"}
    assert sorted(doc["pruned"]) == ["Both", "Decode", "Out", "Parse"]
    top = {proto.components.transforms[t].unique_name for t in top_level_list(proto)}
    keys = [w["cache_key"] for w in doc["writes"]]
    assert top == {"Src", "Seed", "Topics", "ReadTopics"} | {f"{p}{k}" for k in keys for p in WRITES}
    if multi_root:
        assert len(proto.root_transform_ids) == len(top)
    else:
        assert len(proto.root_transform_ids) == 1


def test_unbounded_urn_selects_an_unknown_source(tmp_path):
    pb = other_sdk_proto(str(tmp_path / "other.pb"), False)
    out = str(tmp_path / "bg.pb")
    result = run_cli(
        "background-caching", pb, "--cache-dir", str(tmp_path / "c"), "-o", out,
        "--unbounded-urn", OTHER_SOURCE_URN, "--json",
    )
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert [(s["unique_name"], s["rule"]) for s in doc["sources"]] == [("Src", "urn")]
    proto, _ = load_pipeline(out)
    assert "ReadTopics" not in structure(proto)


# --- (e) no unbounded source ----------------------------------------------------------------


def test_no_source_exits_2_and_writes_nothing(tmp_path):
    out = tmp_path / "bg.pb"
    result = run_cli(
        "background-caching", fixture_pb("wordcount"), "-m", fixture_manifest("wordcount"),
        "--cache-dir", str(tmp_path / "cache"), "-o", str(out),
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("beaminst: ") and "no unbounded source" in result.stderr
    assert "--allow-empty" in result.stderr and "--unbounded-urn" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists() and os.listdir(tmp_path) == []
    to_stdout = run_cli("background-caching", fixture_pb("wordcount"), "--cache-dir", str(tmp_path), "-o", "-")
    assert to_stdout.exit_code == 2 and to_stdout.stdout == ""


def test_no_source_under_the_rules_given_does_not_suggest_them_again(tmp_path):
    result = run_cli(
        "background-caching", fixture_pb("wordcount"), "--cache-dir", str(tmp_path / "cache"), "-o", str(tmp_path / "o.pb"),
        "--infer-unbounded", "--unbounded-urn", "beam:transform:example:v1",
    )
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "beam:transform:example:v1" in line and "(--infer-unbounded)" in line
    assert "add others with --unbounded-urn)" in line and "or --infer-unbounded" not in line


def test_allow_empty_writes_a_root_only_pipeline(tmp_path):
    out = tmp_path / "bg.pb"
    result = run_cli(
        "background-caching", fixture_pb("wordcount"), "-m", fixture_manifest("wordcount"),
        "--cache-dir", str(tmp_path / "cache"), "-o", str(out), "--allow-empty", "--json",
    )
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["empty"] is True and doc["writes"] == [] and doc["sources"] == []
    assert [x for x in doc["warnings"] if "no unbounded source" in x]
    proto, _ = load_pipeline(str(out))
    (root,) = proto.root_transform_ids
    assert list(proto.components.transforms) == [root]
    assert not proto.components.transforms[root].subtransforms
    assert not proto.components.pcollections and not proto.components.coders
    assert not proto.components.windowing_strategies
    validate(proto)
    check_unreferenced(proto)
    assert len(doc["pruned"]) == len(load_pipeline(fixture_pb("wordcount"))[0].components.transforms) - 1
    from apache_beam.options.pipeline_options import PipelineOptions

    p = beam.Pipeline.from_runner_api(proto, beam.runners.DirectRunner(), PipelineOptions([]))
    assert p.run().wait_until_finish() == "DONE"


def test_allow_empty_on_a_multi_root_proto_gets_a_root(tmp_path):
    pb = other_sdk_proto(str(tmp_path / "other.pb"), True)
    out = str(tmp_path / "bg.pb")
    result = run_cli("background-caching", pb, "--cache-dir", str(tmp_path / "c"), "-o", out, "--allow-empty")
    assert result.exit_code == 0, result.stderr
    proto, _ = load_pipeline(out)
    (root,) = proto.root_transform_ids
    assert list(proto.components.transforms) == [root]
    validate(proto)
    check_unreferenced(proto)


def test_usage_errors(tmp_path):
    pb, man = fixture_pb("pubsub_one"), fixture_manifest("pubsub_one")
    out = tmp_path / "bg.pb"
    no_cache = run_cli("background-caching", pb, "-m", man, "-o", str(out))
    assert no_cache.exit_code == 2 and "--cache-dir" in no_cache.stderr
    bad_fmt = run_cli("background-caching", pb, "-m", man, "--cache-dir", str(tmp_path), "-o", str(out), "--output-format", "xml")
    assert bad_fmt.exit_code == 2
    a_file = tmp_path / "file"
    a_file.write_text("")
    not_dir = run_cli("background-caching", pb, "-m", man, "--cache-dir", str(a_file), "-o", str(out))
    assert not_dir.exit_code == 2 and "not a directory" in not_dir.stderr
    assert not out.exists()


def test_two_source_outputs_pinned_to_one_key_is_a_manifest_error(tmp_path):
    analysis = analyze_files(fixture_pb("pubsub_two"), None, str(tmp_path))
    outs = [s.main_output for s in analysis.unbounded_sources]
    key = next(iter(analysis.cacheables.values())).cache_key
    man = tmp_path / "m.json"
    man.write_text(json.dumps({"bindings": {v: {"pcollection": pc, "cache_key": key} for v, pc in zip("ab", outs, strict=True)}}))
    with pytest.raises(ManifestError, match="cannot share one cache file"):
        background_caching(analyze_files(fixture_pb("pubsub_two"), str(man), str(tmp_path)), RewriteOptions(str(tmp_path)))
    assert issubclass(ManifestError, BeaminstError)


def test_help_has_examples():
    result = run_cli("background-caching", "--help")
    assert result.exit_code == 0
    assert "Examples:" in result.stdout and "--allow-empty" in result.stdout
    assert "beaminst background-caching" in result.stdout


# --- (f) determinism --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["binary", "text"])
def test_same_command_twice_is_byte_identical(fmt, tmp_path):
    pb, man = fixture_pb("pubsub_two"), fixture_manifest("pubsub_two")
    cache = str(tmp_path / "cache")
    outs = [str(tmp_path / f"bg{i}.out") for i in range(2)]
    args = ["background-caching", pb, "-m", man, "--cache-dir", cache, "--output-format", fmt]
    first = run_cli(*args, "-o", outs[0])
    assert first.exit_code == 0, first.stderr
    # The second run in a fresh interpreter: no state shared with the first.
    second = run_cli_subprocess(*args, "-o", outs[1])
    assert second.returncode == 0, second.stderr
    with open(outs[0], "rb") as f0, open(outs[1], "rb") as f1:
        a, b = f0.read(), f1.read()
    assert a and a == b


def test_an_empty_background_pipeline_reports_the_requirements_it_declares(tmp_path):
    """--allow-empty: the report's requirements are those of the root-only
    output, a declared requirement beaminst cannot derive included (the
    report said [] whatever the output declared before issue 13's driver)."""
    from beaminst.model.protoio import save_pipeline

    proto, _ = load_pipeline(fixture_pb("wordcount"))
    proto.requirements.append("beam:requirement:custom:v1")
    pb = str(tmp_path / "p.pb")
    save_pipeline(proto, pb)
    out = str(tmp_path / "bg.pb")
    r = run_cli("background-caching", pb, "--cache-dir", str(tmp_path / "cache"), "-o", out, "--allow-empty", "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["empty"] is True
    assert doc["requirements"] == list(load_pipeline(out)[0].requirements) == ["beam:requirement:custom:v1"]


def test_analyze_of_an_unrecognised_source_spells_the_urn_in_its_next_steps(tmp_path):
    """analyze warns that instrument will refuse a TestStream nothing names;
    its next steps carry the --unbounded-urn that finds it, and run as printed."""
    import shlex

    pb, manifest = test_stream_pipeline(str(tmp_path / "ts"))
    r = run_cli("analyze", pb, "-m", manifest, "--cache-dir", str(tmp_path / "c"))
    assert r.exit_code == 0, r.stderr
    steps = [line.split("\t", 1)[1] for line in r.stdout.splitlines() if line.startswith("next\t")]
    assert steps and all("--unbounded-urn beam:transform:teststream:v1" in s for s in steps), steps
    record = shlex.split(steps[0].split("  #")[0])
    assert record[:2] == ["beaminst", "background-caching"]
    record[record.index("-o") + 1] = str(tmp_path / "rec.pb")
    assert run_cli(*record[1:]).exit_code == 0


def test_allow_empty_does_not_suggest_recording_nothing(tmp_path):
    r = run_cli("background-caching", fixture_pb("wordcount"), "-m", fixture_manifest("wordcount"),
                "--cache-dir", str(tmp_path / "c"), "-o", str(tmp_path / "bg.pb"), "--allow-empty")
    assert r.exit_code == 0, r.stderr
    steps = [line for line in r.stdout.splitlines() if line.startswith("next\t")]
    assert len(steps) == 1 and "beaminst instrument" in steps[0] and "beaminst run" not in steps[0], steps


@pytest.mark.parametrize(
    ("command", "option"),
    [("instrument", {"allow_empty": True}), ("background-caching", {"test_stream_endpoint": "localhost:12345"})],
)
def test_the_other_commands_option_is_refused_not_ignored(command, option, tmp_path):
    """The library API takes one RewriteOptions for both rewrites; what only
    the other one uses is an OptionError naming it, as batch's spec says."""
    from beaminst.errors import OptionError
    from beaminst.passes.instrument import instrument

    rewrite = {"instrument": instrument, "background-caching": background_caching}[command]
    analysis = analyze_files(fixture_pb("pubsub_one"), fixture_manifest("pubsub_one"))
    with pytest.raises(OptionError, match=f"only applies to .*, not {command}"):
        rewrite(analysis, RewriteOptions(str(tmp_path / "cache"), **option))
    assert not (tmp_path / "cache").exists()
    rewrite(analysis, RewriteOptions(str(tmp_path / "cache")))  # without it, fine
