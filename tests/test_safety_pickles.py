"""No input runs code: pickles in the pipeline and in the cache directory.

For every place a pickle can sit in beaminst's input (a bound PCollection's
coder, that coder as a component of a KV coder, a windowing strategy's window
function on a bound or a source PCollection, a StreamingCache recording line),
a crafted pickle whose load would create a marker file: every command leaves no
marker and exits 0 or 2 with one line. Each case also proves it is armed: with
``--trust-pickles`` (which lets the SDK load what it finds) the marker appears.
"""

from __future__ import annotations

import base64
import bz2
import json
import pickle
import zlib
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import fixture_manifest, fixture_pb, run_cli
from google.protobuf import wrappers_pb2

from beaminst.model import urns
from beaminst.model.protoio import load_pipeline, save_pipeline


class _Touch:
    """Unpickling this runs ``open(path, 'w')``: the marker of code execution."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def evil_pickle(marker: Path, compress=zlib.compress) -> bytes:
    """Beam's pickler format (base64 of zlib for coders, bz2 for window
    functions) around a pickle that runs code."""
    return base64.b64encode(compress(pickle.dumps(_Touch(str(marker)))))


def evil_coder_payload(marker: Path) -> bytes:
    return wrappers_pb2.BytesValue(value=b"FastPrimitivesCoder$" + evil_pickle(marker)).SerializeToString()


def _save(proto, path: Path) -> str:
    save_pipeline(proto, str(path))
    return str(path)


def coder_case(tmp_path: Path, marker: Path, as_component: bool) -> tuple[str, str]:
    """wordcount with the coder of 'words' (or a component of 'counts' KV coder) a crafted pickle."""
    proto, _ = load_pipeline(fixture_pb("wordcount"))
    c = proto.components
    evil = c.coders["evil"]
    evil.spec.urn = urns.PICKLED_CODER
    evil.spec.payload = evil_coder_payload(marker)
    doc = json.loads(open(fixture_manifest("wordcount")).read())
    if as_component:
        kv = c.coders["evil_kv"]
        kv.spec.urn = "beam:coder:kv:v1"
        kv.component_coder_ids.extend(["evil", "evil"])
        c.pcollections[doc["bindings"]["counts"]].coder_id = "evil_kv"
    else:
        c.pcollections[doc["bindings"]["words"]].coder_id = "evil"
    return _save(proto, tmp_path / "evil.pb"), fixture_manifest("wordcount")


def window_case(tmp_path: Path, marker: Path, name: str, pcoll: str) -> tuple[str, str]:
    """``name``'s PCollection ``pcoll`` windowed by a crafted pickled window function."""
    proto, _ = load_pipeline(fixture_pb(name))
    c = proto.components
    p = c.pcollections[pcoll]
    ws = c.windowing_strategies["evil_ws"]
    ws.CopyFrom(c.windowing_strategies[p.windowing_strategy_id])
    ws.window_fn.urn = urns.PICKLED_WINDOW_FN
    ws.window_fn.payload = wrappers_pb2.BytesValue(value=evil_pickle(marker, bz2.compress)).SerializeToString()
    p.windowing_strategy_id = "evil_ws"
    return _save(proto, tmp_path / "evil.pb"), fixture_manifest(name)


def _source_output(name: str) -> str:
    r = run_cli("analyze", fixture_pb(name), "-m", fixture_manifest(name), "--json")
    (source,) = json.loads(r.stdout)["unbounded_sources"]
    return source["outputs"]["None"]


def _commands(pb: str, man: str, tmp_path: Path, cache: Path) -> dict[str, list[str]]:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    src = tmp_path / "batch_src"
    src.mkdir(exist_ok=True)
    (src / "p.pb").write_bytes(Path(pb).read_bytes())
    (src / "p.manifest.json").write_bytes(Path(man).read_bytes())
    return {
        "analyze": ["analyze", pb, "-m", man, "--cache-dir", str(cache)],
        "instrument": ["instrument", pb, "-m", man, "--cache-dir", str(cache), "-o", str(out / "i.pb")],
        "background-caching": ["background-caching", pb, "-m", man, "--cache-dir", str(cache), "-o",
                               str(out / "b.pb"), "--allow-empty"],
        "diff": ["diff", pb, fixture_pb("wordcount")],
        "graph": ["graph", pb, "-m", man, "-o", str(out / "g.dot")],
        "batch": ["batch", str(src), "-o", str(tmp_path / "batch_out"), "--cache-dir", str(cache), "--jobs", "1",
                  "--force"],
    }


def assert_no_code_runs(pb: str, man: str, tmp_path: Path, marker: Path, refused_by: set[str],
                        cache: Path | None = None) -> None:
    cache = cache or tmp_path / "cache"
    for name, args in _commands(pb, man, tmp_path, cache).items():
        r = run_cli(*args)
        assert not marker.exists(), f"{name} ran code from its input"
        assert r.exit_code in (0, 1, 2), (name, r.stderr)
        assert "Traceback" not in r.stderr
        if name in refused_by:
            assert r.exit_code == 2, (name, r.stderr)
            assert "--trust-pickles" in r.stderr, (name, r.stderr)
            if name != "batch":
                assert r.stderr.count("\n") == 1, (name, r.stderr)


def assert_armed(args: list[str], marker: Path) -> None:
    """With --trust-pickles the SDK loads the pickle and the code runs: the case is real."""
    run_cli(*args, "--trust-pickles")
    assert marker.exists(), "the crafted pickle did not run: this case proves nothing"
    marker.unlink()


@pytest.mark.parametrize("as_component", [False, True], ids=["coder", "kv-component"])
def test_a_pickled_coder_never_runs(as_component, tmp_path):
    marker = tmp_path / "MARKER"
    pb, man = coder_case(tmp_path, marker, as_component)
    assert_no_code_runs(pb, man, tmp_path, marker, {"instrument", "batch"})
    assert_armed(["instrument", pb, "-m", man, "--cache-dir", str(tmp_path / "c2"), "-o", str(tmp_path / "t.pb")], marker)


def test_a_pickled_window_fn_on_a_bound_pcollection_never_runs(tmp_path):
    marker = tmp_path / "MARKER"
    doc = json.loads(open(fixture_manifest("wordcount")).read())
    pb, man = window_case(tmp_path, marker, "wordcount", doc["bindings"]["words"])
    assert_no_code_runs(pb, man, tmp_path, marker, {"instrument", "batch"})
    assert_armed(["instrument", pb, "-m", man, "--cache-dir", str(tmp_path / "c2"), "-o", str(tmp_path / "t.pb")], marker)


def test_a_pickled_window_fn_on_a_source_pcollection_never_runs(tmp_path):
    marker = tmp_path / "MARKER"
    pb, man = window_case(tmp_path, marker, "pubsub_one", _source_output("pubsub_one"))
    # (batch's default mode, instrument, replaces the source: nothing to load there)
    assert_no_code_runs(pb, man, tmp_path, marker, {"background-caching"})
    args = ["background-caching", pb, "-m", man, "--cache-dir", str(tmp_path / "c2"), "-o", str(tmp_path / "t.pb")]
    assert_armed(args, marker)


def test_a_recording_line_holding_a_pickle_is_never_unpickled(tmp_path):
    from apache_beam.portability.api import beam_interactive_api_pb2 as iapi
    from apache_beam.runners.interactive.cache_manager import SafeFastPrimitivesCoder

    marker = tmp_path / "MARKER"
    pb, man = fixture_pb("pubsub_one"), fixture_manifest("pubsub_one")
    analysis = json.loads(run_cli("analyze", pb, "-m", man, "--json").stdout)
    key = next(c["cache_key"] for c in analysis["cacheables"].values() if c["synthetic"])
    cache = tmp_path / "cache"
    (cache / "full").mkdir(parents=True)
    header = SafeFastPrimitivesCoder().encode(iapi.TestStreamFileHeader(tag=key).SerializeToString())
    # What Beam's SafeFastPrimitivesCoder decodes by unpickling: the 0xff tag.
    evil = quote(b"\xff" + pickle.dumps(_Touch(str(marker)))).encode()
    (cache / "full" / key).write_bytes(header + b"\n" + evil + b"\n")
    assert_no_code_runs(pb, man, tmp_path, marker, set(), cache=cache)
    r = run_cli("instrument", pb, "-m", man, "--cache-dir", str(cache), "-o", str(tmp_path / "o.pb"))
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "never unpickles" in r.stderr
    assert not marker.exists()
    # Armed: Beam's own reader runs it.
    from apache_beam.runners.interactive.caching.streaming_cache import StreamingCache

    with pytest.raises(TypeError):  # the unpickled object is no record, after it ran
        list(StreamingCache(str(cache), is_cache_complete=lambda _: True).read_multiple([("full", key)], tail=False))
    assert marker.exists()


@pytest.mark.parametrize("name", ["wordcount", "windowing", "pubsub_one", "mixed"])
def test_the_trusted_path_still_works_on_real_fixtures(name, tmp_path):
    for trust in ([], ["--trust-pickles"]):
        out = tmp_path / f"out{len(trust)}.pb"
        r = run_cli("instrument", fixture_pb(name), "-m", fixture_manifest(name), "--cache-dir", str(tmp_path / "c"),
                    "-o", str(out), *trust)
        assert r.exit_code == 0, r.stderr
    assert (tmp_path / "out0.pb").read_bytes() == (tmp_path / "out1.pb").read_bytes()


def test_beams_own_pickled_coders_are_admitted():
    """Every pickled coder in the fixtures (Beam's FastPrimitives, deterministic,
    map coders) passes the restricted load."""
    from beaminst.model.safepickle import check_coder

    seen = 0
    for name in ("wordcount", "side_inputs", "cogbk", "windowing", "pubsub_two"):
        proto, _ = load_pipeline(fixture_pb(name))
        for cid, c in proto.components.coders.items():
            if c.spec.urn == urns.PICKLED_CODER:
                check_coder(proto.components, cid)
                seen += 1
    assert seen


def test_a_cache_shard_holding_a_pickle_is_never_unpickled_by_cacheread(tmp_path):
    from apache_beam.transforms.window import GlobalWindow
    from apache_beam.utils.windowed_value import WindowedValue

    from beaminst.commands.cacheread import read_cached_values
    from beaminst.errors import CacheDirError
    from beaminst.graft import Grafter

    marker = tmp_path / "MARKER"
    proto, _ = load_pipeline(fixture_pb("wordcount"))
    doc = json.loads(open(fixture_manifest("wordcount")).read())
    pc = doc["bindings"]["words"]
    key = json.loads(run_cli("analyze", fixture_pb("wordcount"), "-m", fixture_manifest("wordcount"), "--json").stdout)[
        "cacheables"][pc]["cache_key"]
    cache = tmp_path / "cache"
    (cache / "full").mkdir(parents=True)
    # What WriteCache would write for an element of a type FastPrimitivesCoder
    # does not know: its pickle fallback, which a plain reader unpickles.
    pcoder = Grafter(proto, str(cache), streaming=False).written_pcoder(pc)
    encoded = pcoder.encode(WindowedValue(_Touch(str(marker)), 0, [GlobalWindow()]))
    (cache / "full" / f"{key}-00000-of-00001").write_bytes(bz2.compress(base64.b64encode(encoded) + b"\n"))
    with pytest.raises(CacheDirError, match="--trust-pickles"):
        read_cached_values(proto, pc, str(cache), key)
    assert not marker.exists()
    read_cached_values(proto, pc, str(cache), key, trust_pickles=True)  # armed
    assert marker.exists()
