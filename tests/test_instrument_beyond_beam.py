"""Shapes where Beam 2.77's PipelineInstrument fails and beaminst works.

A PubSub source mixed with a bounded source whose output is not cached and
computed makes Beam's ``_required_components`` (following inputs and outputs
at once, with no visited set for inputs) recurse until RecursionError. The
tests assert that Beam indeed fails, then assert the intended result directly:
the TestStream replaces the unbounded source, the bounded branch is computed
as usual, and the output is a valid, acyclic proto that Beam loads.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import apache_beam as beam
import pytest
from structure import structure

import beaminst
from beaminst.commands.api import analyze_files
from beaminst.graph.validate import validate
from beaminst.options import RewriteOptions
from beaminst.passes.instrument import instrument
from fixtures import pipelines as fp

REPO = Path(__file__).resolve().parents[1]


def flattened_with_create():
    """Beam's test_instrument_mixed_streaming_batch shape, with the Create
    neither cached nor computed (a one-element Create: Beam recurses on it)."""
    p = fp._pipeline(streaming=True)
    source_1 = p | "source_1" >> beam.io.ReadFromPubSub(subscription=fp.SUBSCRIPTION.format("m"))
    source_2 = p | "source_2" >> beam.Create([b"1"])
    flattened = (source_1, source_2) | beam.Flatten()
    squared = flattened | "square" >> beam.Map(fp.identity)
    # Every variable watched, as ib.watch(locals()) does in Beam's own test.
    return p, {"source_1": source_1, "source_2": source_2, "flattened": flattened, "squared": squared}


def create_as_side_input():
    p = fp._pipeline(streaming=True)
    events = p | "ReadEvents" >> beam.io.ReadFromPubSub(subscription=fp.SUBSCRIPTION.format("e"))
    sizes = p | "Sizes" >> beam.Create([("a", 1)])
    sized = events | "Decode" >> beam.Map(fp.decode_utf8) | "AddSizes" >> beam.Map(fp.add_sizes, beam.pvalue.AsDict(sizes))
    return p, {"sized": sized}


@pytest.mark.parametrize("shape", [flattened_with_create, create_as_side_input])
def test_mixed_bounded_unbounded_beam_recurses_beaminst_works(shape, tmp_path):
    # Beam in a fresh interpreter: under pytest's deeper stack the recursion can
    # surface inside a Beam try/except that swallows it, hiding the failure.
    script = (
        "import sys; sys.path[:0] = [{!r}, {!r}]\n"
        "from beamref import beam_instrument\n"
        "from test_instrument_beyond_beam import {} as shape\n"
        "p, b = shape()\n"
        "try:\n    beam_instrument(p, b)\nexcept RecursionError:\n    print('RECURSION')\n"
        "else:\n    print('OK')\n"
    ).format(str(REPO), str(REPO / "tests"), shape.__name__)
    beam_run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert beam_run.stdout.strip().splitlines()[-1:] == ["RECURSION"], beam_run.stderr[-2000:]

    p, bindings = shape()
    stem = os.path.join(tmp_path, "mixed")
    pb, man = beaminst.export(p, bindings, stem)
    cache = tmp_path / "cache"
    analysis = analyze_files(pb, man, str(cache))
    ours, report = instrument(analysis, RewriteOptions(str(cache)))
    validate(ours)  # acyclic, every reference resolves
    urns = [t.spec.urn for t in ours.components.transforms.values()]
    assert urns.count("beam:transform:teststream:v1") == 1
    assert "beam:transform:pubsub_read:v1" not in urns
    nodes = structure(ours)
    # The bounded branch is computed as usual ...
    assert any(n == "Sizes" or n.startswith("source_2") for n in nodes)
    # ... and feeds the same consumer as the TestStream output.
    consumer = "Flatten" if "Flatten" in nodes else "AddSizes"
    producers = {prod for _, (prod, _) in nodes[consumer].inputs}
    assert any(pr.startswith("TestStream") for pr in producers) or consumer == "AddSizes"
    if consumer == "AddSizes":
        decode_inputs = {prod for _, (prod, _) in nodes["Decode"].inputs}
        assert decode_inputs == {"TestStream"}
        assert "Sizes/Map(decode)" in producers
    # Everything bound is written except the source output itself, which the
    # background caching job records.
    assert {w.var for w in report.writes} == set(bindings) - {"source_1"}
    beam.Pipeline.from_runner_api(ours, beam.runners.DirectRunner(), p._options)
