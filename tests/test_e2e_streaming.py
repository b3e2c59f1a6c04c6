"""The streaming path runs too: events recorded in Beam's StreamingCache
layout are inlined into the TestStream, and the instrumented proto of a PubSub
pipeline runs on the DirectRunner with no network, producing exactly what the
recorded elements imply."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from apache_beam.portability.api import beam_interactive_api_pb2 as iapi
from apache_beam.portability.api import beam_runner_api_pb2 as rapi
from apache_beam.runners.interactive.cache_manager import SafeFastPrimitivesCoder
from apache_beam.runners.interactive.caching.streaming_cache import StreamingCache
from apache_beam.testing.test_stream import WindowedValueHolder
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

import beaminst
from fixtures import pipelines as fp

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
CLI = [sys.executable, "-c", "import sys; from beaminst.cli import main; main(sys.argv[1:], prog_name='beaminst')"]
RUN = textwrap.dedent(
    """
    import sys
    import apache_beam as beam
    import apache_beam.testing.test_stream  # registers the TestStream URN for from_runner_api
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from beaminst.model.protoio import load_pipeline
    proto, _ = load_pipeline(sys.argv[1])
    opts = PipelineOptions([]); opts.view_as(StandardOptions).streaming = True
    beam.Pipeline.from_runner_api(proto, beam.runners.DirectRunner(), opts).run().wait_until_finish()
    """
)


def record(cache_dir: str, key: str, payloads: list[bytes]) -> None:
    """What a background caching job's capture write leaves behind: a header
    and one record per event, elements being reified windowed values."""
    coder = SafeFastPrimitivesCoder()
    elements = [
        rapi.TestStreamPayload.TimestampedElement(
            encoded_element=coder.encode(WindowedValueHolder(WindowedValue(b, 1_000_000 * (i + 1), [GlobalWindow()]))),
            timestamp=1_000_000 * (i + 1),
        )
        for i, b in enumerate(payloads)
    ]
    header = iapi.TestStreamFileHeader(tag=key)
    adds = iapi.TestStreamFileRecord(
        recorded_event=rapi.TestStreamPayload.Event(
            element_event=rapi.TestStreamPayload.Event.AddElements(elements=elements, tag=key)
        )
    )
    StreamingCache(cache_dir).write([header, adds], "full", key)


@pytest.mark.slow
def test_pubsub_pipeline_replays_recorded_events_without_network(tmp_path):
    results = tmp_path / "results.txt"
    built = fp.pubsub_recorded(str(results))
    pb, manifest = beaminst.export(built.pipeline, built.bindings, str(tmp_path / "stream"))
    cache = tmp_path / "cache"
    analysis = json.loads(
        subprocess.run([*CLI, "analyze", pb, "-m", manifest, "--json"], capture_output=True, text=True, env=ENV, check=True).stdout
    )
    (source,) = analysis["unbounded_sources"]
    (key,) = [c["cache_key"] for pc, c in analysis["cacheables"].items() if c["synthetic"]]

    # Nothing recorded yet: say so clearly.
    out = tmp_path / "inst.pb"
    first = subprocess.run(
        [*CLI, "instrument", pb, "-m", manifest, "--cache-dir", str(cache), "-o", str(out), "--json"],
        capture_output=True, text=True, env=ENV,
    )
    assert first.returncode == 0, first.stderr
    assert any("nothing recorded yet" in w for w in json.loads(first.stdout)["warnings"])

    record(str(cache), key, [b"alpha", b"beta", b"gamma"])
    proc = subprocess.run(
        [*CLI, "instrument", pb, "-m", manifest, "--cache-dir", str(cache), "-o", str(out), "--json"],
        capture_output=True, text=True, env=ENV,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["warnings"] == []
    assert report["test_stream"]["tags"] == [key] and report["test_stream"]["events"] >= 1
    assert source["unique_name"] in report["pruned"]

    run = subprocess.run([sys.executable, "-c", RUN, str(out)], capture_output=True, text=True, env=ENV, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(results.read_text().split()) == ["'alpha'", "'beta'", "'gamma'"]


def test_test_stream_endpoint_instead_of_inlined_events(tmp_path):
    built = fp.pubsub_one()
    pb, manifest = beaminst.export(built.pipeline, built.bindings, str(tmp_path / "s"))
    out = tmp_path / "o.textproto"
    proc = subprocess.run(
        [*CLI, "instrument", pb, "-m", manifest, "--cache-dir", str(tmp_path / "c"), "-o", str(out),
         "--test-stream-endpoint", "localhost:12345", "--json"],
        capture_output=True, text=True, env=ENV,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["test_stream"]["endpoint"] == "localhost:12345"
    from beaminst.model.protoio import load_pipeline

    proto, fmt = load_pipeline(str(out))
    assert fmt == "text"
    (ts,) = [t for t in proto.components.transforms.values() if t.spec.urn == "beam:transform:teststream:v1"]
    payload = rapi.TestStreamPayload.FromString(ts.spec.payload)
    assert payload.endpoint.url == "localhost:12345" and not payload.events
