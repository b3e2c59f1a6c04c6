"""beaminst's outputs, run the way portable runners receive them: through the Job API.

One Beam job service (``local_job_service_main``, FnApiRunner behind it) serves the
whole module. Every pipeline goes to it as a *proto* (``portable.submit``): no
``Pipeline.from_runner_api`` / ``to_runner_api`` round trip, so requirements,
environments and components are exactly what beaminst wrote; only the
``beam:env:default:v1`` placeholder becomes the LOOPBACK worker environment, as
PortableRunner does at submission.

For each bounded fixture:

1. instrument (nothing cached), submit: DONE, and a complete shard set under
   ``cache/full/`` for every write in the ``--json`` report;
2. instrument again with the written variables computed, submit: DONE, the
   ``ReadCache_<key>`` transforms ran, and no pruned transform ran (the worker
   runs in this process, so ``submit`` records the transforms of every bundle the
   runner had it process);
3. Beam Java's PipelineValidator accepts both outputs.

Plus: the marker pipeline of ``test_e2e_run`` (the pruned upstream leaves no
marker), pipelines whose own environment is DOCKER / PROCESS / EXTERNAL (grafted
transforms must live in it; swapped for LOOPBACK to run), both passes in a fresh
worker process, and checks of the harness itself (failures and the requirement
check are reported, artifact staging is optional).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURE_NAMES, UNBOUNDED_FIXTURES, fixture_manifest, fixture_pb, run_cli
from portable import (
    DEFAULT_ENV_URN,
    JobResult,
    JobService,
    assert_java_valid,
    java_validate,
    java_validator_problem,
    java_verdicts,
    submit,
    swap_environment,
)

pytestmark = pytest.mark.slow

BOUNDED = tuple(n for n in FIXTURE_NAMES if n not in UNBOUNDED_FIXTURES)
JOB_TIMEOUT = 180.0


# --- helpers --------------------------------------------------------------------------


def load(path: str | Path) -> Any:
    from beaminst.model.protoio import load_pipeline

    return load_pipeline(str(path))[0]


def instrument(pb: str | Path, manifest: str | Path, cache: Path, out: Path) -> dict[str, Any]:
    """``beaminst instrument ... --json`` (the CLI, in-process): the report."""
    r = run_cli("instrument", str(pb), "-m", str(manifest), "--cache-dir", str(cache), "-o", str(out), "--json")
    assert r.exit_code == 0, f"beaminst instrument {pb} failed ({r.exit_code}): {r.stderr[-3000:]}"
    return json.loads(r.stdout)


def computed_manifest(manifest: str | Path, computed: list[str], dest: Path) -> Path:
    doc = json.loads(Path(manifest).read_text())
    doc["computed"] = sorted(computed)
    dest.write_text(json.dumps(doc))
    return dest


def shard_problem(cache: Path, key: str) -> str | None:
    """None when ``cache/full`` holds a complete ``<key>-SSSSS-of-NNNNN`` set."""
    full = cache / "full"
    names = sorted(os.listdir(full)) if full.is_dir() else []
    shards = [m for n in names if (m := re.fullmatch(re.escape(key) + r"-(\d{5})-of-(\d{5})", n))]
    if not shards:
        return f"no cache files for {key} in {full} (has {names})"
    totals = {int(m.group(2)) for m in shards}
    indices = {int(m.group(1)) for m in shards}
    if len(totals) != 1 or indices != set(range(totals.pop())):
        return f"incomplete shard set for {key}: {[m.group(0) for m in shards]}"
    return None


def ran(executed: set[str], name: str) -> bool:
    """The transform ``name`` or something inside it was executed."""
    return name in executed or any(e.startswith(name + "/") for e in executed)


def check_job(job: JobResult, what: str) -> None:
    if not job.ok:
        raise AssertionError(f"{what}: {job.describe()}")


@dataclass
class Pass:
    out: Path
    report: dict[str, Any]
    job: JobResult | None = None


class Runs:
    """Each fixture's write and read pass, instrumented and submitted once for
    the module, whichever test asks first."""

    def __init__(self, service: JobService, root: Path) -> None:
        self.service = service
        self.root = root
        self._passes: dict[tuple[str, str], Pass | str] = {}

    def cache(self, name: str) -> Path:
        return self.root / name / "cache"

    def _memo(self, key: tuple[str, str], make: Any) -> Pass:
        if key not in self._passes:
            try:
                self._passes[key] = make()
            except AssertionError as e:
                self._passes[key] = str(e)
        got = self._passes[key]
        if isinstance(got, str):
            pytest.fail(got, pytrace=False)
        return got

    def write(self, name: str) -> Pass:
        def make() -> Pass:
            d = self.root / name
            d.mkdir(parents=True, exist_ok=True)
            self.cache(name).mkdir(exist_ok=True)
            out = d / "write.pb"
            report = instrument(fixture_pb(name), fixture_manifest(name), self.cache(name), out)
            return Pass(out, report, submit(load(out), self.service.endpoint, timeout=JOB_TIMEOUT))

        return self._memo((name, "write"), make)

    def instrumented_write(self, name: str) -> Path:
        return self.write(name).out

    def read(self, name: str) -> Pass:
        def make() -> Pass:
            w = self.write(name)
            check_job(w.job, f"{name}: the write pass (no cache to read back)")
            d = self.root / name
            manifest = computed_manifest(fixture_manifest(name), [x["var"] for x in w.report["writes"]], d / "computed.manifest.json")
            out = d / "read.pb"
            report = instrument(fixture_pb(name), manifest, self.cache(name), out)
            return Pass(out, report, submit(load(out), self.service.endpoint, timeout=JOB_TIMEOUT))

        return self._memo((name, "read"), make)


@pytest.fixture(scope="module")
def runs(job_service: JobService, tmp_path_factory: Any) -> Runs:
    return Runs(job_service, tmp_path_factory.mktemp("portable_runs"))


# --- the fixtures, both passes --------------------------------------------------------


@pytest.mark.parametrize("name", BOUNDED)
def test_write_pass_runs_on_the_job_service_and_fills_the_cache(runs: Runs, name: str) -> None:
    w = runs.write(name)
    assert w.report["writes"], f"{name}: nothing to write"
    assert not [e for e in w.job.submitted.components.environments.values() if e.urn == DEFAULT_ENV_URN]
    check_job(w.job, f"{name}: write pass")
    problems = [p for x in w.report["writes"] if (p := shard_problem(runs.cache(name), x["cache_key"]))]
    assert not problems, f"{name}: " + "; ".join(problems)


@pytest.mark.parametrize("name", BOUNDED)
def test_read_pass_runs_on_the_job_service_without_the_pruned_upstream(runs: Runs, name: str) -> None:
    w, r = runs.write(name), runs.read(name)
    assert r.report["writes"] == [], f"{name}: everything is cached, yet it writes {r.report['writes']}"
    assert r.report["reads"], f"{name}: nothing read back"
    assert r.report["pruned"], f"{name}: nothing pruned"
    check_job(r.job, f"{name}: read pass")
    not_read = [x["cache_key"] for x in r.report["reads"] if not ran(r.job.executed, f"ReadCache_{x['cache_key']}")]
    assert not not_read, f"{name}: ReadCache never executed for {not_read}; executed {sorted(r.job.executed)}"
    upstream_ran = sorted(p for p in r.report["pruned"] if ran(r.job.executed, p))
    assert not upstream_ran, f"{name}: the pruned upstream executed: {upstream_ran}"
    # The recorder sees those transforms when they do run: in the write pass.
    unseen = sorted(p for p in r.report["pruned"] if "/" not in p and not ran(w.job.executed, p))
    assert not unseen, f"{name}: pruned {unseen} did not run in the write pass either"


@pytest.mark.parametrize("name", BOUNDED)
def test_java_validator_accepts_both_passes(runs: Runs, name: str) -> None:
    problem = java_validator_problem()
    if problem:
        pytest.skip(f"Beam Java validator unavailable: {problem}")
    outputs = [runs.instrumented_write(name)]
    try:
        outputs.append(runs.read(name).out)
    finally:  # the write output is checked even when there is no read pass
        assert_java_valid(outputs)


# --- the marker pipeline: the pruned upstream leaves no trace -------------------------


def test_pruned_upstream_does_not_run_through_the_job_service(job_service: JobService, tmp_path: Path) -> None:
    import beaminst
    from fixtures import pipelines as fp

    marker, results = tmp_path / "upstream.marker", tmp_path / "results.txt"
    built = fp.marked_squares(str(marker), str(results))
    pb, manifest = beaminst.export(built.pipeline, built.bindings, str(tmp_path / "squares"))
    cache = tmp_path / "cache"
    cache.mkdir()

    out1 = tmp_path / "first.pb"
    report1 = instrument(pb, manifest, cache, out1)
    assert {w["var"] for w in report1["writes"]} == {"nums", "squares"}
    job1 = submit(load(out1), job_service.endpoint, timeout=JOB_TIMEOUT)
    check_job(job1, "write pass")
    assert marker.read_text().count("\n") == 5  # the upstream ran once per element
    first_result = results.read_text()
    assert first_result.strip() == "55"
    problems = [p for w in report1["writes"] if (p := shard_problem(cache, w["cache_key"]))]
    assert not problems, problems

    manifest2 = computed_manifest(manifest, ["nums", "squares"], tmp_path / "computed.manifest.json")
    marker.unlink()
    results.unlink()
    out2 = tmp_path / "second.pb"
    report2 = instrument(pb, manifest2, cache, out2)
    assert report2["writes"] == []
    assert {r["var"] for r in report2["reads"]} == {"squares"}  # 'nums' only feeds 'squares'
    assert "Upstream" in report2["pruned"] and "Numbers" in report2["pruned"]
    job2 = submit(load(out2), job_service.endpoint, timeout=JOB_TIMEOUT)
    check_job(job2, "read pass")
    assert not marker.exists(), "the pruned upstream executed"
    assert results.read_text() == first_result
    if not java_validator_problem():
        assert_java_valid([out1, out2])


# --- pipelines whose own environment is not the placeholder ---------------------------


def _environment(kind: str) -> Any:
    from apache_beam.runners.pipeline_context import PipelineContext
    from apache_beam.transforms import environments

    caps = environments.python_sdk_capabilities()
    env = {
        "docker": lambda: environments.DockerEnvironment(
            container_image=environments.DockerEnvironment.default_docker_image(), capabilities=caps
        ),
        "process": lambda: environments.ProcessEnvironment("/opt/apache/beam/boot", capabilities=caps),
        "external": lambda: environments.ExternalEnvironment("localhost:1", capabilities=caps),
    }[kind]()
    return env.to_runner_api(PipelineContext())


def _environment_problems(proto: Any, env_id: str, what: str) -> list[str]:
    problems = []
    extra = sorted(set(proto.components.environments) - {env_id})
    if extra:
        urns = {e: proto.components.environments[e].urn for e in extra}
        problems.append(f"{what}: environments besides the pipeline's own {env_id!r}: {urns}")
    elsewhere = sorted(
        t.unique_name
        for t in proto.components.transforms.values()
        if t.environment_id and t.environment_id != env_id
    )
    if elsewhere:
        problems.append(f"{what}: transforms outside the pipeline's environment: {elsewhere[:8]}")
    return problems


@pytest.mark.parametrize("kind", ["docker", "process", "external"])
def test_grafted_transforms_run_in_the_pipelines_own_environment(
    job_service: JobService, tmp_path: Path, kind: str
) -> None:
    """The fixture's environment made DOCKER / PROCESS / EXTERNAL: beaminst must put
    the cache transforms in it (no placeholder, no environment of its own), and
    with that one environment swapped for LOOPBACK both passes run."""
    name = "wordcount"
    proto = load(fixture_pb(name))
    (env_id,) = proto.components.environments
    proto.components.environments[env_id].CopyFrom(_environment(kind))
    pb = tmp_path / f"{name}.{kind}.pb"
    pb.write_bytes(proto.SerializeToString())
    cache = tmp_path / "cache"
    cache.mkdir()

    out1 = tmp_path / "write.pb"
    report1 = instrument(pb, fixture_manifest(name), cache, out1)
    w = load(out1)
    assert _environment_problems(w, env_id, "write pass") == []
    job1 = submit(swap_environment(w, env_id), job_service.endpoint, timeout=JOB_TIMEOUT, replace_default=False)
    check_job(job1, f"write pass ({kind} swapped for LOOPBACK)")
    problems = [p for x in report1["writes"] if (p := shard_problem(cache, x["cache_key"]))]
    assert not problems, problems

    manifest2 = computed_manifest(fixture_manifest(name), [x["var"] for x in report1["writes"]], tmp_path / "computed.json")
    out2 = tmp_path / "read.pb"
    report2 = instrument(pb, manifest2, cache, out2)
    assert report2["reads"] and report2["writes"] == []
    r = load(out2)
    assert _environment_problems(r, env_id, "read pass") == []
    job2 = submit(swap_environment(r, env_id), job_service.endpoint, timeout=JOB_TIMEOUT, replace_default=False)
    check_job(job2, f"read pass ({kind} swapped for LOOPBACK)")
    assert not [p for p in report2["pruned"] if ran(job2.executed, p)]
    if not java_validator_problem():
        assert_java_valid([out1, out2])


# --- both passes in a fresh worker process --------------------------------------------


def test_both_passes_run_in_a_fresh_worker_process(job_service: JobService, tmp_path: Path) -> None:
    """The in-process LOOPBACK worker shares this interpreter's modules; a worker
    process of its own (as in a container) must unpickle the grafted transforms
    from the proto alone."""
    name = "nested_composites"
    cache = tmp_path / "cache"
    cache.mkdir()
    out1 = tmp_path / "write.pb"
    report1 = instrument(fixture_pb(name), fixture_manifest(name), cache, out1)
    job1 = submit(load(out1), job_service.endpoint, timeout=JOB_TIMEOUT, process_worker=True)
    check_job(job1, "write pass, worker process")
    problems = [p for x in report1["writes"] if (p := shard_problem(cache, x["cache_key"]))]
    assert not problems, problems
    manifest2 = computed_manifest(fixture_manifest(name), [x["var"] for x in report1["writes"]], tmp_path / "computed.json")
    out2 = tmp_path / "read.pb"
    report2 = instrument(fixture_pb(name), manifest2, cache, out2)
    assert report2["reads"]
    job2 = submit(load(out2), job_service.endpoint, timeout=JOB_TIMEOUT, process_worker=True)
    check_job(job2, "read pass, worker process")


# --- the harness itself ---------------------------------------------------------------


def _text_pipeline(path: Path, fn: Any = None) -> Any:
    """ReadFromText (a splittable DoFn once expanded) then ``fn``, as a proto
    with the placeholder environment."""
    import apache_beam as beam

    from fixtures import pipelines as fp

    p = beam.Pipeline()
    _ = p | "Read" >> beam.io.ReadFromText(str(path)) | "Apply" >> beam.Map(fn or fp.identity)
    return p.to_runner_api()


def test_the_job_service_checks_requirements_and_reports_failures(job_service: JobService, tmp_path: Path) -> None:
    from fixtures import pipelines as fp

    src = tmp_path / "in.txt"
    src.write_text("a\nb\n")
    proto = _text_pipeline(src)
    assert "beam:requirement:pardo:splittable_dofn:v1" in proto.requirements
    assert [e.urn for e in proto.components.environments.values()] == [DEFAULT_ENV_URN]
    check_job(submit(proto, job_service.endpoint, timeout=JOB_TIMEOUT), "a plain ReadFromText pipeline")

    # FnApiRunner, behind the job service, validates declared requirements.
    del proto.requirements[:]
    job = submit(proto, job_service.endpoint, timeout=JOB_TIMEOUT)
    assert job.state == "FAILED" and not job.timed_out, job.describe()
    assert any("Missing requirement declaration" in e and "splittable_dofn" in e for e in job.errors), job.describe()

    # A DoFn raising in the worker: FAILED, with the worker's error.
    failing = _text_pipeline(src, fp.decode_utf8)  # str has no .decode
    job = submit(failing, job_service.endpoint, timeout=JOB_TIMEOUT)
    assert job.state == "FAILED", job.describe()
    assert any("has no attribute 'decode'" in e for e in job.errors), job.describe()


def test_artifact_staging_is_done_and_optional(job_service: JobService, tmp_path: Path) -> None:
    """The LOOPBACK environment carries one file artifact (the submission
    environment's package list), staged to the service; the local service runs
    the job without staging as well."""
    src = tmp_path / "in.txt"
    src.write_text("x\n")
    proto = _text_pipeline(src)
    before = set(os.listdir(job_service.staging_dir))
    job = submit(proto, job_service.endpoint, timeout=JOB_TIMEOUT)
    check_job(job, "staged")
    (env,) = job.submitted.components.environments.values()
    assert env.urn == "beam:env:external:v1" and len(env.dependencies) == 1
    assert set(os.listdir(job_service.staging_dir)) - before, "nothing staged"
    check_job(submit(proto, job_service.endpoint, timeout=JOB_TIMEOUT, stage_artifacts=False), "not staged")


def test_java_validator_reports_per_file(tmp_path: Path) -> None:
    problem = java_validator_problem()
    if problem:
        pytest.skip(f"Beam Java validator unavailable: {problem}")
    good = tmp_path / "good.pb"
    good.write_bytes(load(fixture_pb("wordcount")).SerializeToString())
    bad = tmp_path / "bad.pb"
    broken = load(fixture_pb("wordcount"))
    broken.root_transform_ids.append("no_such_transform")
    bad.write_bytes(broken.SerializeToString())
    ok, output = java_validate([good, bad])
    verdicts = java_verdicts(output)
    assert not ok
    assert verdicts[str(good)] == "OK", output
    assert verdicts[str(bad)].startswith("FAIL"), output
