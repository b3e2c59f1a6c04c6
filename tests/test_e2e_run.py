"""It runs, end to end, in fresh processes.

1. ``beaminst instrument`` (process 1) on a saved pipeline with nothing cached;
2. the output loaded with ``beam.Pipeline.from_runner_api`` and run on the
   DirectRunner (process 2): Beam's own cache transforms write the cache;
3. the cache under ``DIR/full/<key>-*-of-*`` decoded (process 3) with
   beaminst's reader to exactly the PCollections' elements;
4. variables marked computed, instrument again: the new proto reads from the
   cache, the pruned upstream does not run (its marker file stays absent), and
   the downstream result equals the first run's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import beaminst
from fixtures import pipelines as fp

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
CLI = [sys.executable, "-c", "import sys; from beaminst.cli import main; main(sys.argv[1:], prog_name='beaminst')"]

RUN = textwrap.dedent(
    """
    import sys
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from beaminst.model.protoio import load_pipeline
    proto, _ = load_pipeline(sys.argv[1])
    p = beam.Pipeline.from_runner_api(proto, beam.runners.DirectRunner(), PipelineOptions([]))
    p.run().wait_until_finish()
    """
)

READ = textwrap.dedent(
    """
    import json, sys
    from beaminst.model.protoio import load_pipeline
    from beaminst.commands.cacheread import read_cached_values
    proto, _ = load_pipeline(sys.argv[1])
    out = {var: sorted(read_cached_values(proto, pc, sys.argv[2], key))
           for var, (pc, key) in json.loads(sys.argv[3]).items()}
    print(json.dumps(out))
    """
)


def run(args, **kw):
    proc = subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=600, **kw)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_instrumented_proto_runs_writes_cache_then_reads_it_back(tmp_path):
    marker, results = tmp_path / "upstream.marker", tmp_path / "results.txt"
    built = fp.marked_squares(str(marker), str(results))
    pb, manifest = beaminst.export(built.pipeline, built.bindings, str(tmp_path / "squares"))
    cache = tmp_path / "cache"
    cache.mkdir()

    # 1. instrument in its own process
    out1 = tmp_path / "first.pb"
    report1 = json.loads(run([*CLI, "instrument", pb, "-m", manifest, "--cache-dir", str(cache), "-o", str(out1), "--json"]).stdout)
    assert {w["var"] for w in report1["writes"]} == {"nums", "squares"}
    keys = {w["var"]: (w["pcollection"], w["cache_key"]) for w in report1["writes"]}

    # 2. run it on Beam's DirectRunner in another
    run([sys.executable, "-c", RUN, str(out1)])
    assert marker.read_text().count("\n") == 5  # the upstream ran once per element
    first_result = results.read_text()
    assert first_result.strip() == "55"
    for var, (_, key) in keys.items():
        shards = [n for n in os.listdir(cache / "full") if n.startswith(key)]
        assert shards and all("-of-" in n for n in shards), var

    # 3. decode the cache in a third process
    decoded = json.loads(run([sys.executable, "-c", READ, pb, str(cache), json.dumps(keys)]).stdout)
    assert decoded == {"nums": [1, 2, 3, 4, 5], "squares": [1, 4, 9, 16, 25]}

    # 4. computed now: read from cache, upstream pruned and not executed
    with open(manifest) as f:
        doc = json.load(f)
    doc["computed"] = ["nums", "squares"]
    manifest2 = tmp_path / "computed.manifest.json"
    manifest2.write_text(json.dumps(doc))
    marker.unlink()
    results.unlink()
    out2 = tmp_path / "second.pb"
    report2 = json.loads(
        run([*CLI, "instrument", pb, "-m", str(manifest2), "--cache-dir", str(cache), "-o", str(out2), "--json"]).stdout
    )
    assert report2["writes"] == []
    assert {r["var"] for r in report2["reads"]} == {"squares"}  # 'nums' only feeds 'squares'
    assert "Upstream" in report2["pruned"] and "Numbers" in report2["pruned"]
    run([sys.executable, "-c", RUN, str(out2)])
    assert not marker.exists(), "the pruned upstream executed"
    assert results.read_text() == first_result
