"""Elements of a class defined in ``__main__`` survive the cache, in fresh processes.

A schema'd PCollection of a ``NamedTuple`` defined in a notebook's or a
script's ``__main__`` (Interactive Beam's everyday case) runs fine in the
original pipeline: its coder is a row coder. The cache write's reify emits
``WindowedValueHolder``s, typed ``Any``, whose ``FastPrimitivesCoder`` falls
back to the standard pickle; in a worker, where cloudpickle rebuilt the class
by value and ``__main__`` has no such name, that pickle fails (the runner's
size sampler encodes the reify's output). Beam's Interactive runs the job in
the notebook's process and never meets it. ``beaminst.graft.reified`` gives
the holders a fallback that pickles as before and, only where that fails,
with cloudpickle; these tests hold the bytes it writes for everything else
to Beam's, and run the whole loop (write, show, read back) on the DirectRunner
and through the job service.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
CLI = [sys.executable, "-c", "import sys; from beaminst.cli import main; main(sys.argv[1:], prog_name='beaminst')"]


def _holder(value: Any) -> Any:
    from apache_beam.testing.test_stream import WindowedValueHolder
    from apache_beam.transforms.window import GlobalWindow
    from apache_beam.utils.windowed_value import WindowedValue

    return WindowedValueHolder(WindowedValue(value, 0, [GlobalWindow()]))


def test_what_beams_coder_encodes_is_encoded_byte_for_byte_as_beam_does():
    from apache_beam.coders import coders

    from beaminst.graft.reified import holder_coder

    beams = coders.FastPrimitivesCoder()
    ours = holder_coder()
    for value in ("word", 7, 2.5, b"bytes", ("k", 1), ["a", None], {"d": 1}):
        assert ours.encode(value) == beams.encode(value), value
        assert ours.decode(beams.encode(value)) == value
    holder = _holder(("u", 1.5))  # what the fallback takes: the standard pickle's bytes, as Beam's
    assert ours.encode(holder) == beams.encode(holder)
    assert ours.decode(beams.encode(holder)).windowed_value.value == ("u", 1.5)  # a cache Beam wrote reads as before
    assert beams.decode(ours.encode(holder)).windowed_value.value == ("u", 1.5)  # and Beam reads ours


def test_a_class_with_no_importable_name_is_carried_by_value():
    import typing

    from apache_beam.coders import coders

    from beaminst.graft.reified import holder_coder

    # What a worker holds: a class rebuilt by value, naming a module that has no such attribute.
    class Purchase(typing.NamedTuple):
        user: str
        amount: float

    Purchase.__module__ = "__main__"
    Purchase.__qualname__ = "NoSuchPurchase"
    holder = _holder(Purchase("u", 1.5))
    with pytest.raises(Exception, match="NoSuchPurchase"):
        coders.FastPrimitivesCoder().encode(holder)
    decoded = holder_coder().decode(holder_coder().encode(holder)).windowed_value.value
    assert tuple(decoded) == ("u", 1.5) and type(decoded).__name__ == "Purchase"


def test_the_write_and_its_pcoder_fall_back_to_cloudpickle(tmp_path: Path):
    """In the template itself (what goes into every output), not only in a test's coder."""
    import beaminst
    from beaminst.graft import Grafter
    from beaminst.model.protoio import load_pipeline
    from fixtures import pipelines as fp

    built = fp.wordcount()
    beaminst.export(built.pipeline, built.bindings, str(tmp_path / "wc"))
    proto, _ = load_pipeline(str(tmp_path / "wc.pb"))
    pc = json.loads((tmp_path / "wc.manifest.json").read_text())["bindings"]["words"]
    grafter = Grafter(proto, str(tmp_path / "cache"), streaming=False)
    sub = grafter.write_template(pc, "a" * 10 + "-" + "b" * 16 + "-" + "c" * 16 + "-" + "d" * 16, is_capture=False)
    c = sub.proto.components
    (reify,) = [t for t in c.transforms.values() if t.unique_name.startswith("ReifyBefore_")]
    (reified,) = reify.outputs.values()
    coder = c.coders[c.pcollections[reified].coder_id]
    assert coder.spec.urn == "beam:coder:pickled_python:v1"
    assert b"CacheHolderCoder" in _inflated(coder.spec.payload)
    pcoder = grafter.written_pcoder(pc)
    assert type(pcoder.wrapped_value_coder).__name__ == "CacheHolderCoder"


def _inflated(payload: bytes) -> bytes:
    """A pickled coder's pickle (``ClassName$<compressed pickle>`` in a BytesValue)."""
    from google.protobuf import wrappers_pb2

    from beaminst.model.canonical import decompress_pickle

    encoded = wrappers_pb2.BytesValue.FromString(payload).value.partition(b"$")[2]
    return decompress_pickle(encoded) or b""


SCRIPT = textwrap.dedent(
    """
    import sys, typing
    import apache_beam as beam
    import beaminst

    class Purchase(typing.NamedTuple):  # in __main__: no worker can import it
        user: str
        amount: float

    beam.coders.registry.register_coder(Purchase, beam.coders.RowCoder)
    out = sys.argv[1]
    p = beam.Pipeline()
    purchases = (
        p
        | "Purchases" >> beam.Create([("u1", 1.5), ("u2", 3.0), ("u3", 4.25)])
        | "ToPurchase" >> beam.Map(lambda t: Purchase(*t)).with_output_types(Purchase)
    )
    lines = purchases | "Format" >> beam.Map(lambda x: "%s:%s" % (x.user, x.amount))
    lines | "Write" >> beam.io.WriteToText(out + "/sink", shard_name_template="")
    beaminst.export(p, {"purchases": purchases, "lines": lines}, out + "/p")
    """
)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("where", ["direct", "job_service"])
def test_a_main_namedtuple_is_written_shown_and_read_back(where: str, tmp_path: Path, request: Any):
    script = tmp_path / "make.py"
    script.write_text(SCRIPT)
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, env=ENV, timeout=600, capture_output=True)
    run = ["--job-endpoint", request.getfixturevalue("job_service").endpoint] if where == "job_service" else []

    _cli("run", "p.pb", *run, cwd=tmp_path)  # the original runs
    expected = sorted((tmp_path / "sink").read_text().splitlines())
    assert expected == ["u1:1.5", "u2:3.0", "u3:4.25"]

    _cli("instrument", "p.pb", "-m", "p.manifest.json", "--cache-dir", "cache", "-o", "write.pb", cwd=tmp_path)
    (tmp_path / "sink").unlink()
    _cli("run", "write.pb", *run, cwd=tmp_path)
    assert sorted((tmp_path / "sink").read_text().splitlines()) == expected

    # The elements carry their class: shown only with --trust-pickles (it is code), and right.
    refused = subprocess.run([*CLI, "show", "p.pb", "-m", "p.manifest.json", "--cache-dir", "cache", "purchases"],
                             capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=600)
    assert refused.returncode == 2 and "--trust-pickles" in refused.stderr, refused.stderr
    shown = _cli("show", "p.pb", "-m", "p.manifest.json", "--cache-dir", "cache", "purchases", "--trust-pickles",
                 "--json", cwd=tmp_path)
    assert len(shown.stdout.strip().splitlines()) >= 1 and "u3" in shown.stdout and "4.25" in shown.stdout

    # Read back in a new job: the producers are pruned, the result is the same.
    _cli("instrument", "p.pb", "-m", "p.manifest.json", "--cache-dir", "cache", "--reuse", "-o", "read.pb",
         cwd=tmp_path)
    (tmp_path / "sink").unlink()
    _cli("run", "read.pb", *run, cwd=tmp_path)
    assert sorted((tmp_path / "sink").read_text().splitlines()) == expected
