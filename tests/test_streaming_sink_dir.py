"""``<cache dir>/full`` for streaming outputs: made when the proto is written, never by a build alone.

Beam's ``StreamingCacheSink`` makes its directory when it is *built* (in the
process that builds the pipeline) and fails at its first bundle when it is
missing. beaminst builds it only when a template is not in memory or in the
store, so the directory used to appear or not depending on the store, and a
command that failed after a build left it behind.
"""

from __future__ import annotations

import shutil

import pytest
from conftest import environ, fixture_manifest, fixture_pb

from beaminst.commands import api
from beaminst.errors import OutputError
from beaminst.options import RewriteOptions

COMMANDS = {"instrument": api.instrument_files, "background-caching": api.background_caching_files}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_streaming_output_makes_full_whether_its_templates_were_built_or_kept(command, tmp_path):
    cache = tmp_path / "cache"
    with environ({"BEAMINST_TEMPLATE_CACHE": str(tmp_path / "store")}):
        for run in ("built", "kept in memory"):
            report = COMMANDS[command](
                fixture_pb("pubsub_one"), str(tmp_path / "out.pb"), fixture_manifest("pubsub_one"),
                RewriteOptions(str(cache)),
            )
            assert (cache / "full").is_dir(), run
            assert not [w for w in report.warnings if "could not create" in w]
            shutil.rmtree(cache)


def test_a_bounded_output_makes_no_cache_directory(tmp_path):
    """Beam's file sinks make their directories when they run: nothing to do beforehand."""
    cache = tmp_path / "cache"
    api.instrument_files(fixture_pb("wordcount"), str(tmp_path / "out.pb"), fixture_manifest("wordcount"),
                         RewriteOptions(str(cache)))
    assert not cache.exists()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_failed_streaming_rewrite_leaves_no_cache_directory(command, tmp_path, monkeypatch):
    import beaminst.model.protoio as protoio

    def full_disk(*_a, **_k):
        raise OutputError("No space left on device", str(tmp_path / "out.pb"))

    monkeypatch.setattr(protoio, "save_pipeline", full_disk)
    store, parent = tmp_path / "store", tmp_path / "new"
    with environ({"BEAMINST_TEMPLATE_CACHE": str(store)}), pytest.raises(OutputError):
        COMMANDS[command](
            fixture_pb("pubsub_one"), str(tmp_path / "out.pb"), fixture_manifest("pubsub_one"),
            RewriteOptions(str(parent / "cache")),
        )
    assert any(store.rglob("*")), "no template was built: the test would prove nothing"
    assert not parent.exists()


def test_analysis_says_who_makes_a_streaming_cache_directory(tmp_path):
    streaming = api.analyze_files(fixture_pb("pubsub_one"), fixture_manifest("pubsub_one"), str(tmp_path / "c"))
    bounded = api.analyze_files(fixture_pb("wordcount"), fixture_manifest("wordcount"), str(tmp_path / "c"))
    (s,) = [w for w in streaming.warnings if "does not exist" in w]
    (b,) = [w for w in bounded.warnings if "does not exist" in w]
    assert "instrument and background-caching create it" in s and "StreamingCache" in s
    assert b.endswith("(the pipeline creates it)")


def test_whole_cache_dir_warnings_are_told_from_the_pipelines_own(tmp_path):
    """What batch's record leaves out of a skip's repeated report."""
    from beaminst.analysis.cachewarnings import about_whole_cache_dir

    missing = api.analyze_files(fixture_pb("pubsub_one"), fixture_manifest("pubsub_one"), str(tmp_path / "c"))
    (full := tmp_path / "junk" / "full").mkdir(parents=True)
    (full / "0123456789-0123456789abcdef-0123456789abcdef-0123456789abcdef-00000-of-00002").write_bytes(b"x")
    junk = api.analyze_files(fixture_pb("wordcount"), fixture_manifest("wordcount"), str(tmp_path / "junk"))
    assert junk.cache_problem_warnings and all(map(about_whole_cache_dir, junk.cache_problem_warnings))
    assert [w for w in missing.warnings if about_whole_cache_dir(w)] == [
        w for w in missing.warnings if "does not exist" in w
    ] != []
    report = api.instrument_files(fixture_pb("pubsub_one"), str(tmp_path / "o.pb"), fixture_manifest("pubsub_one"),
                                  RewriteOptions(str(tmp_path / "c")))
    own = [w for w in report.warnings if "does not exist" not in w]
    assert any("nothing recorded yet" in w for w in own) and not any(map(about_whole_cache_dir, own))


def test_a_cache_older_than_the_sources_recording_is_named(tmp_path):
    """Keys do not change with a recording: what was computed from an earlier
    one is read back as if current. analyze (and instrument) say so, with the
    rm that lets it be computed again; a cache written after the recording is
    not named."""
    import os

    from apache_beam.portability.api import beam_interactive_api_pb2 as iapi
    from apache_beam.runners.interactive.caching.streaming_cache import StreamingCache

    pb, man, cache = fixture_pb("pubsub_one"), fixture_manifest("pubsub_one"), tmp_path / "c"
    first = api.analyze_files(pb, man, str(cache))
    keys = {c.var: c.cache_key for c in first.cacheables.values()}
    (source,) = [c.cache_key for c in first.cacheables.values() if c.synthetic]
    for key in keys.values():
        StreamingCache(str(cache)).write([iapi.TestStreamFileHeader(tag=key)], "full", key)
    os.utime(cache / "full" / source, (2_000_000_000, 2_000_000_000))  # recorded again, later
    os.utime(cache / "full" / keys["windowed"], (2_000_000_100, 2_000_000_100))  # computed from it
    again = api.analyze_files(pb, man, str(cache))
    stale = [w for w in again.warnings if "before its source's latest recording" in w]
    assert stale == [
        f"'decoded' was cached before its source's latest recording: its cache holds what an earlier recording gave "
        f"(keys do not change with the recording); rm {cache / 'full' / keys['decoded']} to compute it from this one"
    ]
    bounded = api.analyze_files(fixture_pb("wordcount"), fixture_manifest("wordcount"), str(cache))
    assert not [w for w in bounded.warnings if "latest recording" in w]


def test_a_full_dir_that_cannot_be_made_is_a_whole_directory_warning(tmp_path, monkeypatch):
    import beaminst.cache.streaming as streaming
    from beaminst.analysis.cachewarnings import about_whole_cache_dir

    def refused(_cache_dir):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(streaming, "make_sink_dir", refused)
    report = api.instrument_files(fixture_pb("pubsub_one"), str(tmp_path / "o.pb"), fixture_manifest("pubsub_one"),
                                  RewriteOptions(str(tmp_path / "c")))
    (w,) = [w for w in report.warnings if w.startswith("could not create ")]
    assert w.startswith(f"could not create {str(tmp_path / 'c' / 'full')!r} (Permission denied): ")
    assert about_whole_cache_dir(w)  # a batch skip does not repeat it


def test_staleness_is_judged_against_the_recording_of_the_feeding_source(tmp_path):
    """Two sources, two branches: recording one again makes only the caches
    it feeds stale, not those the other source feeds."""
    import json
    import os

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.portability.api import beam_interactive_api_pb2 as iapi
    from apache_beam.runners.interactive.caching.streaming_cache import StreamingCache
    from apache_beam.testing.test_stream import TestStream

    from beaminst.options import SourceRules

    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    p = beam.Pipeline(options=options)
    for name in ("A", "B"):
        _ = p | f"Src{name}" >> TestStream().add_elements(["x"]) | f"Up{name}" >> beam.Map(str.upper)
    pb = tmp_path / "two.pb"
    pb.write_bytes(p.to_runner_api().SerializeToString())
    man = tmp_path / "two.manifest.json"
    man.write_text(json.dumps({"bindings": {"upA": {"producer": "UpA"}, "upB": {"producer": "UpB"}}}))
    rules, cache = SourceRules(urns=("beam:transform:teststream:v1",)), tmp_path / "c"
    first = api.analyze_files(str(pb), str(man), str(cache), rules)
    keys = {c.var: c.cache_key for c in first.cacheables.values()}
    source_key = {first.index.producer_name(c.pcollection): c.cache_key for c in first.cacheables.values() if c.synthetic}
    assert set(source_key) == {"SrcA", "SrcB"}
    for key in keys.values():
        StreamingCache(str(cache)).write([iapi.TestStreamFileHeader(tag=key)], "full", key)
    for path, t in ((source_key["SrcA"], 2_000_000_200), (keys["upA"], 2_000_000_100),  # A recorded again
                    (source_key["SrcB"], 2_000_000_000), (keys["upB"], 2_000_000_100)):  # B not
        os.utime(cache / "full" / path, (t, t))
    stale = [w for w in api.analyze_files(str(pb), str(man), str(cache), rules).warnings if "latest recording" in w]
    assert len(stale) == 1 and stale[0].startswith("'upA' was cached before its source's latest recording")
