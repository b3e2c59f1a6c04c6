"""The oldest worker beaminst accepts really runs its output, end to end.

``beaminst.graft.environments.OLDEST_WORKER`` is the oldest Beam Python SDK whose
workers load the cache transforms (cloudpickled DoFns, pickled coders) the
installed Beam builds; older ones are refused. This checks both ends of that
claim with a real interpreter of exactly that version (the "worker"), given by
``BEAMINST_OLDEST_WORKER_PYTHON`` (``.ci/run`` makes one; locally the tests
skip without it, in CI, ``CI`` set, they fail):

1. the worker's Beam builds and saves a word count whose environment is what
   ``Environment.from_options`` makes for Docker, so it declares the worker's
   SDK (``beam:version:sdk_base:apache/beam_python3.x_sdk:<version>``);
2. ``beaminst instrument`` (this interpreter) adds the cache writes; the
   worker's Beam loads the output and runs it on its DirectRunner: the cache
   shards appear and the counts are right;
3. marked computed, instrumented again, run by the worker: the downstream
   result is the same and the pruned upstream did not run;
4. the same pipeline relabelled one minor version older is refused (exit 2).

The worker has only Beam: no beaminst on its path, and nothing from this
module is pickled (its scripts are strings, so what they define is pickled by
value).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import textwrap
from pathlib import Path

import pytest
from conftest import beam_noise_free, run_cli_subprocess

from beaminst.graft.environments import OLDEST_WORKER

WORKER_VAR = "BEAMINST_OLDEST_WORKER_PYTHON"
WORKER_VERSION = str(OLDEST_WORKER)  # "2.68.0": what apache-beam==<this> reports
OLDEST = f"{OLDEST_WORKER.major}.{OLDEST_WORKER.minor}"  # "2.68"
TOO_OLD = f"{OLDEST_WORKER.major}.{OLDEST_WORKER.minor - 1}"  # "2.67": one minor version older
SDK_BASE = re.compile(r"^beam:version:sdk_base:apache/beam_python3\.\d+_sdk:(?P<version>\S+)$")

# Run by the worker: the pipeline, saved with a Docker environment for the
# worker's own SDK, and the ids of the PCollections the manifest binds.
BUILD = textwrap.dedent(
    """
    import json, sys
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions
    from apache_beam.transforms.environments import Environment

    out, marker, results = sys.argv[1:4]


    class AppendTo(beam.DoFn):
        def __init__(self, path):
            self.path = path

        def process(self, element):
            with open(self.path, 'a') as f:
                f.write('%s\\n' % (element,))
            yield element


    p = beam.Pipeline()
    lines = p | 'Create' >> beam.Create(['a b', 'b c a']) | 'Upstream' >> beam.ParDo(AppendTo(marker))
    words = lines | 'Split' >> beam.FlatMap(str.split)
    counts = words | 'Pair' >> beam.Map(lambda w: (w, 1)) | 'Count' >> beam.CombinePerKey(sum)
    _ = (counts | 'Format' >> beam.Map(lambda kv: '%s: %d' % kv)
                | 'Record' >> beam.ParDo(AppendTo(results)))
    env = Environment.from_options(PipelineOptions(['--environment_type=DOCKER']).view_as(PortableOptions))
    proto, context = p.to_runner_api(default_environment=env, return_context=True)
    with open(out, 'wb') as f:
        f.write(proto.SerializeToString())
    print(json.dumps({
        'beam': beam.__version__,
        'words': context.pcollections.get_id(words),
        'counts': context.pcollections.get_id(counts),
    }))
    """
)

# Run by the worker: load a (beaminst-written) proto and run it.
RUN = textwrap.dedent(
    """
    import importlib.util, sys
    if importlib.util.find_spec('beaminst') is not None:
        sys.exit('beaminst is importable here; the worker must have nothing but Beam')
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.portability.api import beam_runner_api_pb2
    from apache_beam.runners.direct.direct_runner import DirectRunner

    with open(sys.argv[1], 'rb') as f:
        proto = beam_runner_api_pb2.Pipeline.FromString(f.read())
    beam.Pipeline.from_runner_api(proto, DirectRunner(), PipelineOptions()).run().wait_until_finish()
    """
)


def worker_env() -> dict[str, str]:
    """The environment minus anything that would put this checkout (or another
    interpreter's packages) on the worker's path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.pop("BEAMINST_DEBUG", None)
    return env


def on_worker(python: str, script: str, *args: str, cwd: Path) -> str:
    """Run ``script`` in the worker interpreter (from ``cwd``, so not from the
    repository); its stdout."""
    proc = subprocess.run(
        [python, "-c", script, *args], capture_output=True, text=True, cwd=str(cwd), env=worker_env(), timeout=600
    )
    assert proc.returncode == 0, f"the {WORKER_VERSION} worker failed:\n{proc.stderr[-4000:]}"
    return proc.stdout


def beaminst(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli_subprocess(*args, timeout=300)


@pytest.fixture(scope="module")
def worker_python() -> str:
    python = os.environ.get(WORKER_VAR)
    if not python:
        why = f"{WORKER_VAR} is not set (a Python with apache-beam=={WORKER_VERSION}, beaminst's OLDEST_WORKER)"
        if os.environ.get("CI"):
            pytest.fail(f"{why}; in CI this check must run")
        pytest.skip(why)
    try:
        proc = subprocess.run(
            [python, "-c", "import apache_beam; print(apache_beam.__version__)"],
            capture_output=True, text=True, env=worker_env(), timeout=300,
        )
        found, problem = proc.stdout.strip(), proc.stderr.strip()[-500:]
    except OSError as e:
        found, problem = "", str(e)
    if found != WORKER_VERSION:
        pytest.fail(
            f"{WORKER_VAR}={python} must have apache-beam=={WORKER_VERSION} (OLDEST_WORKER); "
            f"it has {found or 'none'}" + (f": {problem}" if problem else "")
        )
    return python


@pytest.fixture(scope="module")
def saved(worker_python, tmp_path_factory):
    """The word count as the worker's Beam saves it, and its bound ids."""
    d = tmp_path_factory.mktemp("oldest_worker")
    pb = d / "wordcount.pb"
    marker, results = d / "upstream.marker", d / "results.txt"
    ids = json.loads(on_worker(worker_python, BUILD, str(pb), str(marker), str(results), cwd=d).splitlines()[-1])
    assert ids["beam"] == WORKER_VERSION
    return {"dir": d, "pb": pb, "marker": marker, "results": results, "words": ids["words"], "counts": ids["counts"]}


def sdk_base_capabilities(proto) -> list[tuple[str, str, int]]:
    """(environment id, version, index) of every Python sdk_base capability."""
    return [
        (eid, m["version"], i)
        for eid, env in proto.components.environments.items()
        for i, cap in enumerate(env.capabilities)
        if (m := SDK_BASE.match(cap))
    ]


def load(path: Path):
    from apache_beam.portability.api import beam_runner_api_pb2

    return beam_runner_api_pb2.Pipeline.FromString(path.read_bytes())


@pytest.mark.slow
def test_oldest_worker_runs_the_write_pass_then_the_read_pass(worker_python, saved):
    d, pb, marker, results = saved["dir"], saved["pb"], saved["marker"], saved["results"]
    declared = sdk_base_capabilities(load(pb))
    assert declared and {v for _, v, _ in declared} == {WORKER_VERSION}, declared

    cache = d / "cache"
    cache.mkdir()
    manifest = d / "manifest.json"
    doc = {"version": 1, "bindings": {"words": saved["words"], "counts": saved["counts"]}}
    manifest.write_text(json.dumps(doc))

    # write pass: instrumented here, run by the worker
    first = d / "first.pb"
    proc = beaminst("instrument", str(pb), "-m", str(manifest), "--cache-dir", str(cache), "-o", str(first), "--json")
    assert proc.returncode == 0, proc.stderr
    report1 = json.loads(proc.stdout)
    keys = {w["var"]: w["cache_key"] for w in report1["writes"]}
    assert set(keys) == {"words", "counts"}
    assert {v for _, v, _ in sdk_base_capabilities(load(first))} == {WORKER_VERSION}

    on_worker(worker_python, RUN, str(first), cwd=d)
    assert sorted(marker.read_text().splitlines()) == ["a b", "b c a"]  # the upstream ran once per line
    first_result = sorted(results.read_text().splitlines())
    assert first_result == ["a: 2", "b: 2", "c: 1"]
    shards = os.listdir(cache / "full")
    for var, key in keys.items():
        mine = [n for n in shards if n.startswith(key + "-")]
        assert mine, f"no cache shards for {var} ({key}) in {shards}"
        assert all(re.fullmatch(re.escape(key) + r"-\d{5}-of-\d{5}", n) for n in mine), mine

    # what the worker cached decodes, with this Beam, to the PCollections' elements
    from beaminst.commands.cacheread import read_cached_values
    from beaminst.model.protoio import load_pipeline

    original, _ = load_pipeline(str(pb))
    assert sorted(read_cached_values(original, saved["words"], str(cache), keys["words"])) == ["a", "a", "b", "b", "c"]
    assert sorted(read_cached_values(original, saved["counts"], str(cache), keys["counts"])) == [
        ("a", 2), ("b", 2), ("c", 1)
    ]

    # read pass: both computed; the worker reads 'counts' back, the upstream is pruned
    doc["computed"] = ["words", "counts"]
    manifest.write_text(json.dumps(doc))
    marker.unlink()
    results.unlink()
    second = d / "second.pb"
    proc = beaminst("instrument", str(pb), "-m", str(manifest), "--cache-dir", str(cache), "-o", str(second), "--json")
    assert proc.returncode == 0, proc.stderr
    report2 = json.loads(proc.stdout)
    assert report2["writes"] == []
    assert {r["var"] for r in report2["reads"]} == {"counts"}  # 'words' only feeds 'counts'
    assert "Upstream" in report2["pruned"]

    on_worker(worker_python, RUN, str(second), cwd=d)
    assert not marker.exists(), "the pruned upstream ran"
    assert sorted(results.read_text().splitlines()) == first_result


@pytest.mark.slow
def test_one_minor_version_older_is_refused(saved, tmp_path):
    proto = load(saved["pb"])
    declared = sdk_base_capabilities(proto)
    assert declared, "the worker's pipeline declares no SDK version"
    for eid, version, i in declared:
        caps = proto.components.environments[eid].capabilities
        caps[i] = caps[i][: -len(version)] + TOO_OLD + ".0"
    # As that release saves it: its default image too, which is what beaminst reads first (the
    # image is what the workers run).
    from apache_beam.portability.api import beam_runner_api_pb2

    for env in proto.components.environments.values():
        if env.urn == "beam:env:docker:v1":
            docker = beam_runner_api_pb2.DockerPayload.FromString(env.payload)
            docker.container_image = re.sub(r":[^:/]+$", f":{TOO_OLD}.0", docker.container_image)
            env.payload = docker.SerializeToString()
    relabelled = tmp_path / "relabelled.pb"
    relabelled.write_bytes(proto.SerializeToString())
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"version": 1, "bindings": {"words": saved["words"], "counts": saved["counts"]}}))
    out = tmp_path / "out.pb"

    proc = beaminst("instrument", str(relabelled), "-m", str(manifest), "--cache-dir", str(tmp_path / "cache"), "-o", str(out))
    assert proc.returncode == 2, proc.stderr
    lines = beam_noise_free(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("beaminst: "), proc.stderr
    assert TOO_OLD in lines[0] and OLDEST in lines[0], lines[0]
    assert not out.exists()
