"""What portable runners check in a proto, asserted on the proto itself.

Python's ``Pipeline.from_runner_api`` rebuilds a pipeline and recomputes its
requirements and environments, so a test that only goes through it cannot see
these: ``Pipeline.requirements`` (FnApiRunner and Java's PipelineValidator
refuse a stateful or splittable ParDo that is not declared), the environment
each grafted transform names, references held inside payloads, the SDK version
of the workers, and the windowing of what a cache read produces.
"""

from __future__ import annotations

import json
import os

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions
from apache_beam.transforms import environments, userstate
from conftest import EMPTY_SHARD, fixture_manifest, fixture_pb, run_cli

from beaminst.commands.api import analyze_files, load
from beaminst.errors import BeaminstError, ValidationError
from beaminst.model import urns
from beaminst.model.beamproto import runner_api
from beaminst.model.protoio import load_pipeline, save_pipeline
from beaminst.options import RewriteOptions, WorkerOptions
from beaminst.passes.instrument import instrument
from fixtures import pipelines as fp

GRAFTED = ("WriteCache_", "ReifyBefore_", "ReadCache_", "UnreifyAfter_", "TestStream")


def _cached(cache_dir, analysis_or_keys):
    """Complete (empty) shard sets for the given keys, as Beam's manager lays them out."""
    os.makedirs(os.path.join(cache_dir, "full"), exist_ok=True)
    for key in analysis_or_keys:
        open(os.path.join(cache_dir, "full", f"{key}-00000-of-00001"), "wb").write(EMPTY_SHARD)


def _manifest(tmp_path, bindings, computed=()):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"bindings": bindings, "computed": list(computed)}))
    return str(path)


def _read_pass(tmp_path, pb, manifest_path, var):
    """Instrument with ``var`` cached and computed."""
    cache = str(tmp_path / "cache")
    first = analyze_files(pb, manifest_path)
    key = next(c.cache_key for c in first.cacheables.values() if c.var == var)
    _cached(cache, [key])
    with open(manifest_path) as f:
        doc = json.load(f)
    doc["computed"] = [var]
    with open(manifest_path, "w") as f:
        json.dump(doc, f)
    return instrument(analyze_files(pb, manifest_path, cache), RewriteOptions(cache))


# --- requirements -------------------------------------------------------------------


def test_read_pass_declares_the_splittable_dofn_of_readcache(tmp_path):
    man = tmp_path / "m.json"
    man.write_text(open(fixture_manifest("wordcount")).read())
    out, report = _read_pass(tmp_path, fixture_pb("wordcount"), str(man), "words")
    assert report.reads
    assert urns.REQUIRES_SPLITTABLE_DOFN in out.requirements
    assert list(out.requirements) == report.requirements == sorted(out.requirements)


def test_write_pass_of_a_bounded_pipeline_declares_nothing(tmp_path):
    out, _ = instrument(analyze_files(fixture_pb("wordcount"), fixture_manifest("wordcount")), RewriteOptions(str(tmp_path)))
    assert list(out.requirements) == []


@pytest.mark.parametrize("name", ["pubsub_one", "pubsub_two", "mixed"])
def test_streaming_writes_declare_stateful(name, tmp_path):
    out, report = instrument(analyze_files(fixture_pb(name), fixture_manifest(name)), RewriteOptions(str(tmp_path)))
    if report.writes:
        assert urns.REQUIRES_STATEFUL in out.requirements
    assert set(out.requirements) == urns.transform_requirements(out.components.transforms)


COUNT = userstate.CombiningValueStateSpec("count", combine_fn=sum)
COUNT_PARAM = beam.DoFn.StateParam(COUNT)


class _Stateful(beam.DoFn):
    def process(self, kv, count=COUNT_PARAM):
        count.add(1)
        yield kv


def _stateful_pipeline():
    p = beam.Pipeline()
    pairs = p | beam.Create([("a", 1), ("b", 2)])
    counted = pairs | "Stateful" >> beam.ParDo(_Stateful())
    doubled = counted | "Double" >> beam.Map(fp.identity)
    return p, {"counted": counted, "doubled": doubled}


def test_a_pruned_stateful_pardo_no_longer_needs_its_requirement_and_unknown_ones_stay(tmp_path):
    p, bindings = _stateful_pipeline()
    import beaminst

    pb, man = beaminst.export(p, bindings, str(tmp_path / "p"))
    proto, _ = load_pipeline(pb)
    assert urns.REQUIRES_STATEFUL in proto.requirements  # what Beam declared
    proto.requirements.append("beam:requirement:someone_else:v1")  # one beaminst cannot derive
    save_pipeline(proto, pb)
    out, report = _read_pass(tmp_path, pb, man, "counted")
    names = {t.unique_name for t in out.components.transforms.values()}
    assert "Stateful" not in names and "Double" in names
    assert urns.REQUIRES_STATEFUL not in out.requirements
    assert "beam:requirement:someone_else:v1" in out.requirements
    assert urns.REQUIRES_SPLITTABLE_DOFN in out.requirements


def test_a_stateful_pardo_that_stays_keeps_its_requirement(tmp_path):
    p, bindings = _stateful_pipeline()
    import beaminst

    pb, man = beaminst.export(p, bindings, str(tmp_path / "p"))
    out, _ = instrument(analyze_files(pb, man), RewriteOptions(str(tmp_path / "cache")))
    assert list(out.requirements) == [urns.REQUIRES_STATEFUL]


# --- references inside payloads --------------------------------------------------------


def test_a_combine_whose_accumulator_coder_is_missing_is_refused(tmp_path):
    proto, _ = load_pipeline(fixture_pb("wordcount"))
    combine = next(t for t in proto.components.transforms.values() if t.spec.urn.startswith("beam:transform:combine_"))
    payload = urns.parse_payload(combine.spec.urn, combine.spec.payload)
    payload.accumulator_coder_id = "no_such_coder"
    combine.spec.payload = payload.SerializeToString()
    pb = str(tmp_path / "bad.pb")
    save_pipeline(proto, pb)
    with pytest.raises(ValidationError, match="names coder 'no_such_coder' in its payload"):
        load(pb)
    r = run_cli("analyze", pb)
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "no_such_coder" in r.stderr


def test_payload_table_sees_every_reference_kind():
    proto, _ = load_pipeline(fixture_pb("windowing"))
    seen = {"coders": set(), "windowing_strategies": set(), "environments": set()}
    for t in proto.components.transforms.values():
        info = urns.payload_info(t.spec.urn, t.spec.payload)
        for kind in seen:
            seen[kind] |= info.references(kind)
    # The Python SDK's window_into payload is a WindowingStrategy: coder and environment.
    assert seen["coders"] and seen["environments"]


# --- environments --------------------------------------------------------------------


ENVIRONMENT_KINDS = {
    "default": None,
    "docker": ["--environment_type=DOCKER", "--environment_config=example.com/team/beam_python3.11_sdk:2.77.0"],
    "process": ["--environment_type=PROCESS", '--environment_config={"command": "/opt/apache/beam/boot"}'],
    "external": ["--environment_type=EXTERNAL", "--environment_config=localhost:50000"],
}


def export_with_environment(built, stem: str, kind: str) -> tuple[str, str]:
    """A fixture pipeline saved with a real environment, as a job submission
    carries it (capabilities, dependencies), plus a resource hint."""
    import beaminst

    args = ENVIRONMENT_KINDS[kind]
    env = None
    if args is not None:
        env = environments.Environment.from_options(PipelineOptions(args).view_as(PortableOptions))
    return beaminst.export(built.pipeline, built.bindings, stem, default_environment=env)


def python_env_of(proto):
    envs = {t.environment_id for t in proto.components.transforms.values()
            if t.environment_id and not t.unique_name.startswith(GRAFTED)}
    assert len(envs) == 1
    return envs.pop()


@pytest.mark.parametrize("kind", sorted(ENVIRONMENT_KINDS))
@pytest.mark.parametrize("mode", ["write", "read"])
def test_grafted_transforms_run_in_the_pipelines_own_environment(kind, mode, tmp_path):
    pb, man = export_with_environment(fp.wordcount(), str(tmp_path / "p"), kind)
    proto, _ = load_pipeline(pb)
    env_id = python_env_of(proto)
    original_env = proto.components.environments[env_id]
    if kind != "default":
        assert original_env.capabilities  # a real environment, as submitted
    if mode == "write":
        out, report = instrument(analyze_files(pb, man), RewriteOptions(str(tmp_path / "cache")))
    else:
        out, report = _read_pass(tmp_path, pb, man, "words")
        assert report.reads
    grafted = [t for t in out.components.transforms.values() if t.unique_name.startswith(GRAFTED)]
    assert grafted
    assert {t.environment_id for t in grafted if t.environment_id} == {env_id}
    # Nothing copied from the template: the pipeline's one environment, byte for byte.
    assert list(out.components.environments) == [env_id]
    assert out.components.environments[env_id] == original_env
    for ws in out.components.windowing_strategies.values():
        assert ws.environment_id in ("", env_id)
    assert report.environment == {"id": env_id, "urn": original_env.urn, "added": False}


def test_a_second_sdks_environment_beside_pythons(tmp_path):
    pb, man = export_with_environment(fp.wordcount(), str(tmp_path / "p"), "docker")
    proto, _ = load_pipeline(pb)
    env_id = python_env_of(proto)
    java = proto.components.environments["java"]
    java.urn = urns.ENV_DOCKER
    java.payload = runner_api().DockerPayload(container_image="apache/beam_java17_sdk:2.77.0").SerializeToString()
    java.capabilities.append("beam:version:sdk_base:apache/beam_java17_sdk:2.77.0")
    # One transform of another SDK (a cross-language expansion looks like this).
    fmt = next(t for t in proto.components.transforms.values() if t.unique_name == "Format")
    fmt.environment_id = "java"
    save_pipeline(proto, pb)
    out, report = instrument(analyze_files(pb, man), RewriteOptions(str(tmp_path / "cache")))
    grafted = {t.environment_id for t in out.components.transforms.values()
               if t.unique_name.startswith(GRAFTED) and t.environment_id}
    assert grafted == {env_id}
    assert set(out.components.environments) == {env_id, "java"}
    assert report.environment["id"] == env_id and not report.environment["added"]


def _strip_python(proto):
    """The wordcount proto as if another SDK had written it: its environment
    says nothing about Python and no transform carries a Python function."""
    env = proto.components.environments[python_env_of(proto)]
    env.urn = urns.ENV_DOCKER
    env.payload = runner_api().DockerPayload(container_image="apache/beam_go_sdk:2.77.0").SerializeToString()
    del env.capabilities[:]
    for t in proto.components.transforms.values():
        if t.spec.urn == urns.PICKLED_TRANSFORM:  # Python's Create composite
            t.spec.urn, t.spec.payload = "", b""
        elif t.spec.urn in urns.PAR_DO_FAMILY:
            p = runner_api().ParDoPayload.FromString(t.spec.payload)
            p.do_fn.urn = "beam:go:transform:dofn:v1"
            t.spec.payload = p.SerializeToString()
        elif t.spec.urn in urns.COMBINE_FAMILY:
            p = runner_api().CombinePayload.FromString(t.spec.payload)
            p.combine_fn.urn = "beam:go:transform:combinefn:v1"
            t.spec.payload = p.SerializeToString()
    for ws in proto.components.windowing_strategies.values():
        ws.environment_id = ""


@pytest.mark.parametrize(
    "options,urn",
    [
        (WorkerOptions(), urns.ENV_DOCKER),
        (WorkerOptions(environment_type="PROCESS", environment_config='{"command": "/opt/apache/beam/boot"}'), urns.ENV_PROCESS),
        (WorkerOptions(environment_type="EXTERNAL", environment_config="localhost:50000"), urns.ENV_EXTERNAL),
    ],
)
def test_a_pipeline_without_python_environment_gets_one(options, urn, tmp_path):
    proto, _ = load_pipeline(fixture_pb("wordcount"))
    _strip_python(proto)
    pb = str(tmp_path / "go.pb")
    save_pipeline(proto, pb)
    out, report = instrument(analyze_files(pb, fixture_manifest("wordcount")), RewriteOptions(str(tmp_path / "cache"), worker=options))
    assert report.environment["added"] and report.environment["urn"] == urn
    added = out.components.environments[report.environment["id"]]
    assert any(c.startswith(urns.SDK_BASE_CAPABILITY + "apache/beam_python") for c in added.capabilities)
    if urn == urns.ENV_DOCKER:
        assert b"apache/beam_python" in added.payload and beam.version.__version__.encode() in added.payload
    assert any("no Python SDK environment" in w for w in report.warnings)
    grafted = {t.environment_id for t in out.components.transforms.values()
               if t.unique_name.startswith(GRAFTED) and t.environment_id}
    assert grafted == {report.environment["id"]}


def test_environment_options_the_pipelines_own_environment_makes_unused_say_so(tmp_path):
    """--environment-type builds only an added environment: with the
    pipeline's own Python one there, a warning says the options went unused
    (and, for Beam's placeholder, where they do apply)."""
    opts = WorkerOptions(environment_type="EXTERNAL", environment_config="localhost:50000")
    pb, man = fixture_pb("wordcount"), fixture_manifest("wordcount")
    out, report = instrument(analyze_files(pb, man), RewriteOptions(str(tmp_path / "c"), worker=opts))
    assert not report.environment["added"]
    (unused,) = [w for w in report.warnings if "not used" in w]
    env = out.components.environments[report.environment["id"]]
    assert unused.startswith("--environment-type / --environment-config not used: the grafted transforms run in "
                             f"the pipeline's own Python SDK environment {report.environment['id']!r} ({env.urn})")
    assert ("beaminst run --environment-type" in unused) == (env.urn == urns.ENV_DEFAULT)
    _, plain = instrument(analyze_files(pb, man), RewriteOptions(str(tmp_path / "c")))
    assert not any("not used" in w for w in plain.warnings)
    proto, _ = load_pipeline(pb)
    _strip_python(proto)
    save_pipeline(proto, str(tmp_path / "go.pb"))
    _, added = instrument(analyze_files(str(tmp_path / "go.pb"), man), RewriteOptions(str(tmp_path / "c"), worker=opts))
    assert added.environment["added"] and not any("not used" in w for w in added.warnings)


def test_environment_type_loopback_is_refused_for_a_saved_pipeline(tmp_path):
    proto, _ = load_pipeline(fixture_pb("wordcount"))
    _strip_python(proto)
    pb = str(tmp_path / "go.pb")
    save_pipeline(proto, pb)
    with pytest.raises(BeaminstError, match="LOOPBACK only exists while a runner process is alive"):
        instrument(analyze_files(pb, fixture_manifest("wordcount")),
                   RewriteOptions(str(tmp_path / "c"), worker=WorkerOptions(environment_type="LOOPBACK")))



@pytest.mark.parametrize("env_type,config", [
    ("PROCESS", None), ("PROCESS", '{"os": "linux"}'), ("EXTERNAL", None),
    # Beam also takes the types spelled as their URNs.
    ("beam:env:process:v1", None), ("beam:env:external:v1", None),
])
def test_an_environment_with_nothing_to_start_is_refused(tmp_path, env_type, config):
    # Beam builds a process environment with an empty command, and fails on an
    # external one with no address, from these: a saved pipeline would name a
    # worker nobody can start.
    proto, _ = load_pipeline(fixture_pb("wordcount"))
    _strip_python(proto)
    pb = str(tmp_path / "go.pb")
    save_pipeline(proto, pb)
    with pytest.raises(BeaminstError, match=f"--environment-type {env_type} needs --environment-config"):
        instrument(analyze_files(pb, fixture_manifest("wordcount")), RewriteOptions(
            str(tmp_path / "c"), worker=WorkerOptions(environment_type=env_type, environment_config=config)))

# --- worker SDK versions ----------------------------------------------------------------


def _with_image(tmp_path, image: str) -> tuple[str, str]:
    args = ["--environment_type=DOCKER", f"--environment_config={image}"]
    env = environments.Environment.from_options(PipelineOptions(args).view_as(PortableOptions))
    import beaminst

    built = fp.wordcount()
    return beaminst.export(built.pipeline, built.bindings, str(tmp_path / "p"), default_environment=env)


def _set_sdk_capability(pb: str, image: str | None) -> None:
    """Replace the ``sdk_base`` capability (the installed SDK wrote 2.77 there)
    by ``image``'s, as that release would write it, or drop it."""
    proto, _ = load_pipeline(pb)
    env = proto.components.environments[python_env_of(proto)]
    caps = [c for c in env.capabilities if not c.startswith(urns.SDK_BASE_CAPABILITY)]
    del env.capabilities[:]
    env.capabilities.extend(caps + ([urns.SDK_BASE_CAPABILITY + image] if image else []))
    save_pipeline(proto, pb)


def test_an_old_worker_sdk_is_refused_by_name(tmp_path):
    pb, man = _with_image(tmp_path, "apache/beam_python3.11_sdk:2.60.0")
    _set_sdk_capability(pb, "apache/beam_python3.11_sdk:2.60.0")
    out = tmp_path / "out.pb"
    r = run_cli("instrument", pb, "-m", man, "--cache-dir", str(tmp_path / "c"), "-o", str(out))
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert "2.60.0" in r.stderr and "2.68" in r.stderr and "--target-sdk" in r.stderr
    assert not out.exists()


def test_target_sdk_overrides_and_checks(tmp_path):
    pb, man = fixture_pb("wordcount"), fixture_manifest("wordcount")
    out = tmp_path / "out.pb"
    base = ["instrument", pb, "-m", man, "--cache-dir", str(tmp_path / "c"), "-o", str(out)]
    r = run_cli(*base, "--target-sdk", "2.67.0")
    assert r.exit_code == 2 and "2.67.0" in r.stderr and not out.exists()
    r = run_cli(*base, "--target-sdk", "not-a-version")
    assert r.exit_code == 2 and "not a Beam version" in r.stderr
    r = run_cli(*base, "--target-sdk", "2.68.0")
    assert r.exit_code == 0, r.stderr
    r = run_cli(*base, "--target-sdk", "2.99.0", "--json")
    assert r.exit_code == 0 and any("newer than" in w for w in json.loads(r.stdout)["warnings"])


def test_the_image_tag_wins_over_the_capability(tmp_path):
    """Beam writes its own default image into the sdk_base capability
    whatever image is configured: the image is what the workers run."""
    pb, man = _with_image(tmp_path, "apache/beam_python3.11_sdk:2.60.0")  # capability: the installed 2.77
    proto, _ = load_pipeline(pb)
    caps = proto.components.environments[python_env_of(proto)].capabilities
    assert any(c.startswith(urns.SDK_BASE_CAPABILITY) and c.endswith(":2.77.0") for c in caps)
    with pytest.raises(BeaminstError, match=r"container image apache/beam_python3.11_sdk:2.60.0\) means Beam Python 2.60.0") as e:
        instrument(analyze_files(pb, man), RewriteOptions(str(tmp_path / "c")))
    # Saved by 2.77 already: the fix is the image, not re-saving.
    assert "give it a Beam Python image of 2.68 to 2.77 (--environment_config when saving it)" in str(e.value)
    # A custom image's own tag is no Beam version: the capability says what the SDK is.
    pb, man = _with_image(tmp_path / "custom", "registry.example/team/beam_python3.11_sdk:1.2")
    instrument(analyze_files(pb, man), RewriteOptions(str(tmp_path / "c")))


def test_roots_sort_around_a_pass_through():
    """A root that outputs its own input (a pass-through) is no producer of
    it: what reads that PCollection waits for its real producer only."""
    from beaminst.passes.rewrite import _shallow_topological

    rapi = runner_api()
    ts = {
        "A": rapi.PTransform(outputs={"o": "pa"}),
        "X": rapi.PTransform(inputs={"i": "pa"}, outputs={"o": "pa"}),
        "C": rapi.PTransform(inputs={"i": "pa"}, outputs={"o": "pc"}),
        "R": rapi.PTransform(outputs={"o": "pr"}),
        "D": rapi.PTransform(inputs={"i": "pr"}),
    }
    assert _shallow_topological(ts, ["C", "X", "D", "A", "R"]) == ["A", "C", "X", "R", "D"]
    assert _shallow_topological(ts, ["A", "X", "C", "R", "D"]) == ["A", "X", "C", "R", "D"]  # already in order: kept


TS = os.path.join(os.path.dirname(fixture_pb("wordcount")), "typescript", "wordcount")


def test_the_image_given_for_an_added_environment_is_checked_too(tmp_path):
    """Another SDK's pipeline gets a Python environment from the worker
    options: its image's version is held to the same range."""
    base = ["instrument", f"{TS}.pb", "-m", f"{TS}.manifest.json", "--cache-dir", str(tmp_path / "c"),
            "-o", str(tmp_path / "o.pb"), "--environment-type", "DOCKER"]
    r = run_cli(*base, "--environment-config", "apache/beam_python3.11_sdk:2.60.0")
    assert r.exit_code == 2 and not (tmp_path / "o.pb").exists()
    assert "the environment added from --environment-config (container image apache/beam_python3.11_sdk:2.60.0) " \
        "means Beam Python 2.60.0 workers" in r.stderr, r.stderr
    r = run_cli(*base, "--environment-config", "apache/beam_python3.11_sdk:2.77.0", "--json")
    assert r.exit_code == 0, r.stderr
    (added,) = [w for w in json.loads(r.stdout)["warnings"] if "no Python SDK environment" in w]
    assert added.endswith("; built from --environment-type / --environment-config"), added


def test_workers_of_another_python_are_warned_about(tmp_path):
    """The cache transforms hold functions pickled by value as this Python's
    bytecode: an image of another Python minor version is said."""
    import sys

    other = f"{sys.version_info.major}.{sys.version_info.minor + 1}"
    pb, man = _with_image(tmp_path, f"apache/beam_python{other}_sdk:2.77.0")
    _, report = instrument(analyze_files(pb, man), RewriteOptions(str(tmp_path / "c")))
    (warning,) = [w for w in report.warnings if "pickled by Python" in w]
    assert f"runs Python {other}, but the cache transforms were pickled by Python " \
        f"{sys.version_info.major}.{sys.version_info.minor} here" in warning and warning.endswith(f"run beaminst under Python {other}")
    same = f"{sys.version_info.major}.{sys.version_info.minor}"
    pb, man = _with_image(tmp_path / "same", f"apache/beam_python{same}_sdk:2.77.0")
    _, report = instrument(analyze_files(pb, man), RewriteOptions(str(tmp_path / "c")))
    assert not any("pickled by Python" in w for w in report.warnings)


def test_the_image_tag_is_read_when_no_capability_says_more(tmp_path):
    pb, man = _with_image(tmp_path, "apache/beam_python3.11_sdk:2.62.0")
    _set_sdk_capability(pb, None)
    with pytest.raises(BeaminstError, match="2.62.0"):
        instrument(analyze_files(pb, man), RewriteOptions(str(tmp_path / "c")))


# --- source-only pipelines ------------------------------------------------------------


def test_a_watched_source_with_nothing_downstream_keeps_its_teststream(tmp_path):
    """Beam's background_caching_job_test shape: the pipeline is only
    ``elems = ReadFromPubSub(...)``; Beam's instrumented proto is a TestStream
    feeding ``elems`` (compared with Beam in test_instrument_parity)."""
    import beaminst

    p = fp._pipeline(streaming=True)
    elems = p | "Read" >> beam.io.ReadFromPubSub(subscription=fp.SUBSCRIPTION.format("only"))
    pb, man = beaminst.export(p, {"elems": elems}, str(tmp_path / "p"))
    out, report = instrument(analyze_files(pb, man), RewriteOptions(str(tmp_path / "cache")))
    roots = set(out.root_transform_ids)
    names = {t.unique_name: t for tid, t in out.components.transforms.items() if tid not in roots}
    assert set(names) == {"TestStream"}
    assert report.test_stream["tags"] == [report.reads[0].cache_key]
    assert list(names["TestStream"].outputs) == report.test_stream["tags"]


def test_batch_takes_the_worker_options(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for suffix in (".pb", ".manifest.json"):
        (src / f"wordcount{suffix}").write_bytes(open(fixture_pb("wordcount")[:-3] + suffix, "rb").read())
    base = ["batch", str(src), "-o", str(tmp_path / "dest"), "--cache-dir", str(tmp_path / "c"), "--jobs", "1", "--json"]
    r = run_cli(*base, "--target-sdk", "2.60.0")
    assert r.exit_code == 2 and "2.60.0" in json.loads(r.stdout)["results"][0]["error"]
    r = run_cli(*base, "--target-sdk", "2.77.0", "--force")
    assert r.exit_code == 0, r.stderr
