"""Caches on a cluster's filesystem: ``--cache-dir s3://...`` and ``gs://...``, through Beam's own filesystems.

Real object store APIs run on loopback for the module: moto's S3 server
(``ThreadedMotoServer``) and ``gcp-storage-emulator``'s GCS server, each on 127.0.0.1
and a free port. beaminst and the pipelines reach them through Beam's
``S3FileSystem`` (``apache-beam[aws]``, boto3) and ``GCSFileSystem``
(``apache-beam[gcp]``, google-cloud-storage), configured as a cluster's would be:
``--pipeline-arg=--s3_endpoint_url=...`` / ``--s3_region_name``, credentials from the
environment (dummy ones; for GCS an application-default credentials file holding an
unexpired token, so nothing refreshes it; ``STORAGE_EMULATOR_HOST`` points Google's
client at the emulator). Nothing may leave the machine: every other address goes to
a dead proxy on loopback, and the EC2 and GCE metadata lookups are off or on loopback.

* the write pass runs (``beaminst run`` on the DirectRunner, and through the Job API
  on Beam's own job service with the LOOPBACK worker in this process) and writes
  ``full/<key>-SSSSS-of-NNNNN`` objects into the bucket; ``analyze`` sees them as
  cached; the read pass reads them back and the pruned upstream does not run;
  no local directory named after the URL appears;
* ``batch`` (the local pool, and ``--runner DirectRunner``) names the URL in every
  output and notices a new shard of a file's own key in the bucket;
* an unknown scheme, a missing extra, a bucket that does not exist, a server that
  refuses or never answers, missing credentials, a listing over the cap, a streaming
  pipeline (Beam's StreamingCache is local only): one line naming the URL, exit 2.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    CLI_PREFIX,
    EMPTY_SHARD,
    REPO,
    beam_noise_free,
    environ,
    fixture_manifest,
    fixture_pb,
    run_cli,
)

import beaminst

SHARD = re.compile(r"(?P<key>.+)-(?P<shard>\d{5})-of-(?P<total>\d{5})")
REGION = "us-east-1"
GCP_PROJECT = "beaminst-test"
# Dummy credentials: moto accepts any. Set in the environment, as on a cluster
# whose workers have them from their own environment.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}
# Nothing leaves the machine: a lost endpoint option would send boto3 to AWS (or
# google-auth to a metadata server), and that goes to a port on loopback nobody
# listens on instead.
CONTAINED = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_DEFAULT_REGION": REGION,
    "NO_GCE_CHECK": "True",
    "GCE_METADATA_HOST": "127.0.0.1:9",
    "GCE_METADATA_IP": "127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Store:
    """An object store on loopback, and how beaminst's commands reach it."""

    scheme: str
    args: list[str]  # the filesystem's Beam options, as a cluster's user passes them
    env: dict[str, str]  # what this process and the commands' processes need in the environment

    @property
    def cli_args(self) -> list[str]:
        return [f"--pipeline-arg={a}" for a in self.args]

    def bucket(self) -> str:
        name = f"cache-{uuid.uuid4().hex[:12]}"
        self._create(name)
        return name

    def _create(self, bucket: str) -> None:
        raise NotImplementedError

    def keys(self, bucket: str) -> list[str]:
        raise NotImplementedError

    def put(self, bucket: str, key: str, body: bytes = b"") -> None:
        raise NotImplementedError


class S3(Store):
    scheme = "s3"

    def __init__(self, endpoint: str) -> None:
        import boto3

        self.endpoint = endpoint
        self.args = [f"--s3_endpoint_url={endpoint}", f"--s3_region_name={REGION}"]
        self.env = dict(CREDENTIALS)
        self.client = boto3.client("s3", endpoint_url=endpoint, region_name=REGION, **{
            "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        })

    def _create(self, bucket: str) -> None:
        self.client.create_bucket(Bucket=bucket)

    def keys(self, bucket: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def put(self, bucket: str, key: str, body: bytes = b"") -> None:
        self.client.put_object(Bucket=bucket, Key=key, Body=body)


class GCS(Store):
    scheme = "gs"

    def __init__(self, endpoint: str, credentials: Path) -> None:
        # An authorized_user file whose token never expires: google-auth finds it
        # without a network, and never refreshes it (Beam retries a missing one for 30 s).
        credentials.write_text(json.dumps({
            "type": "authorized_user", "client_id": "emulator", "client_secret": "emulator",
            "refresh_token": "emulator", "token": "emulator", "expiry": "2999-01-01T00:00:00Z",
        }))
        self.args = [f"--project={GCP_PROJECT}"]
        self.env = {
            "STORAGE_EMULATOR_HOST": endpoint, "GOOGLE_APPLICATION_CREDENTIALS": str(credentials),
            "GOOGLE_CLOUD_PROJECT": GCP_PROJECT,
        }

    def _client(self) -> Any:
        from google.cloud import storage

        return storage.Client.create_anonymous_client()

    def _create(self, bucket: str) -> None:
        self._client().create_bucket(bucket)

    def keys(self, bucket: str) -> list[str]:
        return sorted(b.name for b in self._client().list_blobs(bucket))

    def put(self, bucket: str, key: str, body: bytes = b"") -> None:
        self._client().bucket(bucket).blob(key).upload_from_string(body)


@pytest.fixture(scope="module")
def s3() -> Iterator[S3]:
    pytest.importorskip("boto3", reason="needs apache-beam[aws] (pip install '.[test]')")
    moto_server = pytest.importorskip("moto.server", reason="needs moto[server] (pip install '.[test]')")
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        store = S3(f"http://127.0.0.1:{port}")
        with environ({**CONTAINED, **store.env}):
            yield store
    finally:
        server.stop()


@pytest.fixture(scope="module")
def gcs(tmp_path_factory: Any) -> Iterator[GCS]:
    pytest.importorskip("google.cloud.storage", reason="needs apache-beam[gcp] (pip install '.[test]')")
    emulator = pytest.importorskip("gcp_storage_emulator.server", reason="needs gcp-storage-emulator")
    port = free_port()
    server = emulator.create_server("127.0.0.1", port, in_memory=True)
    server.start()
    try:
        store = GCS(f"http://127.0.0.1:{port}", tmp_path_factory.mktemp("gcs") / "credentials.json")
        with environ({**CONTAINED, **store.env}):
            yield store
    finally:
        server.stop()


@pytest.fixture(params=["s3", "gs"])
def store(request: Any) -> Store:
    return request.getfixturevalue("s3" if request.param == "s3" else "gcs")


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``beaminst ARGS`` in a fresh interpreter, in ``cwd`` (where a path made
    from the URL would appear), with the module's contained environment."""
    full_env = {**os.environ, **CONTAINED, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    full_env.pop("BEAMINST_DEBUG", None)
    return subprocess.run(
        [*CLI_PREFIX, *args], capture_output=True, text=True, cwd=str(cwd), env=full_env, timeout=timeout
    )


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def one_line_error(proc: Any, url: str) -> str:
    """The exit-2 error: exactly one line, naming the cache URL; no traceback
    (of a subprocess, or of ``run_cli`` in this process)."""
    code = proc.returncode if isinstance(proc, subprocess.CompletedProcess) else proc.exit_code
    assert code == 2, (code, proc.stderr[-3000:])
    lines = beam_noise_free(proc.stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"beaminst: {url}: "), lines[0]
    assert "Traceback" not in proc.stderr
    return lines[0]


def no_local_url_dirs(*roots: Path) -> None:
    """Nothing named after a URL (``s3:``, what os.path.abspath made of one) was created."""
    for root in roots:
        found = [str(p) for p in root.rglob("*") if p.name.startswith(("s3:", "gs:"))]
        assert not found, found


def cache_writes_name(proto_path: Path) -> set[str | None]:
    """The cache directories the proto's WriteCache sinks name (read from their pickles)."""
    from beaminst.commands.api import load
    from beaminst.run.capture import find_cache_writes

    return {w.cache_dir for w in find_cache_writes(load(str(proto_path)).index)}


def computed_manifest(manifest: str, computed: list[str], dest: Path) -> str:
    doc = json.loads(Path(manifest).read_text())
    doc["computed"] = computed
    dest.write_text(json.dumps(doc))
    return str(dest)


def shard_sets(keys: list[str], prefix: str) -> dict[str, tuple[int, set[int]]]:
    out: dict[str, tuple[int, set[int]]] = {}
    for k in keys:
        assert k.startswith(prefix + "full/"), k
        m = SHARD.fullmatch(k[len(prefix + "full/"):])
        assert m, f"not a shard: {k}"
        out.setdefault(m["key"], (int(m["total"]), set()))[1].add(int(m["shard"]))
    return out


def assert_complete(sets: dict[str, tuple[int, set[int]]], keys: set[str]) -> None:
    assert set(sets) == keys, (sorted(sets), sorted(keys))
    for key, (total, seen) in sets.items():
        assert seen == set(range(total)), (key, total, seen)


@pytest.fixture
def squares(tmp_path: Path) -> dict[str, Any]:
    """The marker pipeline: Numbers -> Upstream (appends to a marker file) -> Square -> Sum -> Record."""
    from fixtures import pipelines as fp

    marker, results = tmp_path / "upstream.marker", tmp_path / "results.txt"
    built = fp.marked_squares(str(marker), str(results))
    pb, manifest = beaminst.export(built.pipeline, built.bindings, str(tmp_path / "squares"))
    return {"pb": pb, "manifest": manifest, "marker": marker, "results": results}


# --- both passes, end to end ----------------------------------------------------------


@pytest.mark.slow
def test_write_and_read_pass_on_the_direct_runner(store: Store, squares: dict[str, Any], tmp_path: Path) -> None:
    bucket = store.bucket()
    url = f"{store.scheme}://{bucket}/team/cache"
    work = tmp_path / "cwd"
    work.mkdir()
    pb, manifest, marker, results = squares["pb"], squares["manifest"], squares["marker"], squares["results"]

    # 1. instrument: the WriteCache sinks name the URL itself
    out1 = tmp_path / "first.pb"
    report1 = json.loads(ok(cli("instrument", pb, "-m", manifest, "--cache-dir", url, *store.cli_args,
                                "-o", str(out1), "--json", cwd=work)).stdout)
    keys = {w["var"]: w["cache_key"] for w in report1["writes"]}
    assert set(keys) == {"nums", "squares"}
    assert cache_writes_name(out1) == {url}

    # 2. the write pass, through `beaminst run` with the same filesystem options
    run1 = json.loads(ok(cli("run", str(out1), *store.cli_args, "--json", cwd=work)).stdout)
    assert run1["state"] == "DONE"
    assert marker.read_text().count("\n") == 5
    first_result = results.read_text()
    assert first_result.strip() == "55"
    assert_complete(shard_sets(store.keys(bucket), "team/cache/"), set(keys.values()))
    assert {w["cache_dir"] for w in run1["cache_writes"]} == {url}
    assert all(w["bytes"] and w["bytes"] > 0 for w in run1["cache_writes"]), run1["cache_writes"]

    # 3. analyze sees them as cached
    analysis = json.loads(ok(cli("analyze", pb, "-m", manifest, "--cache-dir", url, *store.cli_args, "--json",
                                 cwd=work)).stdout)
    assert analysis["cache_dir"] == url
    assert {c["var"]: c["cached"] for c in analysis["cacheables"].values()} == {"nums": True, "squares": True}

    # ... and the cache decodes, read through Beam's filesystem, in this process
    from beaminst.cache.cachefs import filesystem_options
    from beaminst.commands.cacheread import read_cached_values
    from beaminst.model.protoio import load_pipeline

    proto, _ = load_pipeline(pb)
    pcs = {w["var"]: w["pcollection"] for w in report1["writes"]}
    with filesystem_options(store.args):
        values = {v: sorted(read_cached_values(proto, pcs[v], url, keys[v])) for v in keys}
    assert values == {"nums": [1, 2, 3, 4, 5], "squares": [1, 4, 9, 16, 25]}

    # 4. the read pass: read back from the bucket, the upstream pruned and not run
    manifest2 = computed_manifest(manifest, ["nums", "squares"], tmp_path / "computed.manifest.json")
    marker.unlink()
    results.unlink()
    out2 = tmp_path / "second.pb"
    report2 = json.loads(ok(cli("instrument", pb, "-m", manifest2, "--cache-dir", url, *store.cli_args,
                                "-o", str(out2), "--json", cwd=work)).stdout)
    assert report2["writes"] == []
    assert {r["var"] for r in report2["reads"]} == {"squares"}
    assert "Upstream" in report2["pruned"] and "Numbers" in report2["pruned"]
    ok(cli("run", str(out2), *store.cli_args, "--json", cwd=work))
    assert not marker.exists(), "the pruned upstream executed"
    assert results.read_text() == first_result
    no_local_url_dirs(work, tmp_path)


@pytest.mark.slow
def test_write_and_read_pass_through_the_job_api(store: Store, squares: dict[str, Any], tmp_path: Path, job_service: Any) -> None:
    from portable import submit

    from beaminst.cache.cachefs import filesystem_options
    from beaminst.model.protoio import load_pipeline

    bucket = store.bucket()
    url = f"{store.scheme}://{bucket}/cache"
    pb, manifest, marker, results = squares["pb"], squares["manifest"], squares["marker"], squares["results"]
    out1 = tmp_path / "first.pb"
    r = run_cli("instrument", pb, "-m", manifest, "--cache-dir", url, *store.cli_args, "-o", str(out1), "--json")
    assert r.exit_code == 0, r.stderr
    keys = {w["cache_key"] for w in json.loads(r.stdout)["writes"]}

    # The LOOPBACK worker runs in this process: its S3 filesystem takes this
    # process's filesystem options, as a cluster worker takes the job's.
    with filesystem_options(store.args):
        job1 = submit(load_pipeline(str(out1))[0], job_service.endpoint, timeout=180)
    assert job1.ok, job1.describe()
    assert marker.read_text().count("\n") == 5
    first_result = results.read_text()
    assert_complete(shard_sets(store.keys(bucket), "cache/"), keys)

    manifest2 = computed_manifest(manifest, ["nums", "squares"], tmp_path / "computed.manifest.json")
    marker.unlink()
    results.unlink()
    out2 = tmp_path / "second.pb"
    r = run_cli("instrument", pb, "-m", manifest2, "--cache-dir", url, *store.cli_args, "-o", str(out2), "--json")
    assert r.exit_code == 0, r.stderr
    assert {x["var"] for x in json.loads(r.stdout)["reads"]} == {"squares"}
    with filesystem_options(store.args):
        job2 = submit(load_pipeline(str(out2))[0], job_service.endpoint, timeout=180)
    assert job2.ok, job2.describe()
    assert any(n.startswith("ReadCache_") for n in job2.executed), sorted(job2.executed)
    assert not any(n == "Upstream" or n.startswith("Upstream/") for n in job2.executed)
    assert not marker.exists(), "the pruned upstream executed"
    assert results.read_text() == first_result
    no_local_url_dirs(tmp_path, Path.cwd())


def _has_command(name: str) -> bool:
    from beaminst.cli import main

    return name in main.commands


def test_show_reads_a_remote_cache(store: Store, tmp_path: Path) -> None:
    """Shards put in the bucket as Beam's FileBasedCacheManager writes them
    (bz2 text, one base64 line per element) are shown, read through Beam's filesystem."""
    if not _has_command("show"):
        pytest.skip("no show command in this checkout")
    import base64
    import bz2

    from apache_beam.coders import coders
    from apache_beam.transforms.window import GlobalWindow
    from apache_beam.utils.windowed_value import WindowedValue

    from beaminst.graft import Grafter
    from beaminst.model.protoio import load_pipeline

    pb, manifest = fixture_pb("wordcount"), fixture_manifest("wordcount")
    doc = json.loads(run_cli("analyze", pb, "-m", manifest, "--json").stdout)
    pc, c = next((pc, c) for pc, c in doc["cacheables"].items() if c["var"] == "counts")
    proto, _ = load_pipeline(pb)
    pcoder = Grafter(proto, str(tmp_path), streaming=False).written_pcoder(pc)
    assert isinstance(pcoder, coders.Coder)
    lines = [base64.b64encode(pcoder.encode(WindowedValue(v, 0, [GlobalWindow()]))) for v in (("a", 2), ("b", 1))]
    bucket = store.bucket()
    url = f"{store.scheme}://{bucket}/cache"
    store.put(bucket, f"cache/full/{c['cache_key']}-00000-of-00001", bz2.compress(b"\n".join(lines) + b"\n"))
    r = run_cli("show", pb, "-m", manifest, "--cache-dir", url, *store.cli_args, "counts", "--json")
    assert r.exit_code == 0, r.stderr
    assert sorted(json.loads(line) for line in r.stdout.splitlines()) == [["a", 2], ["b", 1]], r.stdout
    no_local_url_dirs(tmp_path, Path.cwd())


# --- batch ----------------------------------------------------------------------------


def _batch_src(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("wordcount", "cogbk"):
        (src / f"{name}.pb").write_bytes(Path(fixture_pb(name)).read_bytes())
        (src / f"{name}.manifest.json").write_bytes(Path(fixture_manifest(name)).read_bytes())
    return src


def test_batch_pool_writes_through_the_url_and_sees_new_shards(store: Store, tmp_path: Path) -> None:
    bucket = store.bucket()
    url = f"{store.scheme}://{bucket}/cache"
    src, dest = _batch_src(tmp_path), tmp_path / "dest"
    args = ("batch", str(src), "-o", str(dest), "--cache-dir", url, *store.cli_args, "--jobs", "2", "--json")
    first = json.loads(ok(cli(*args, cwd=tmp_path)).stdout)
    assert first["cache_dir"] == url
    assert [r["status"] for r in first["results"]] == ["ok", "ok"]
    for name in ("wordcount", "cogbk"):
        assert cache_writes_name(dest / f"{name}.pb") == {url}
    again = json.loads(ok(cli(*args, cwd=tmp_path)).stdout)
    assert [r["status"] for r in again["results"]] == ["skipped", "skipped"]

    # A shard for one of wordcount's own keys appears in the bucket: wordcount is redone.
    analysis = json.loads(ok(cli("analyze", str(src / "wordcount.pb"), "-m", str(src / "wordcount.manifest.json"),
                                 "--json", cwd=tmp_path)).stdout)
    key = next(c["cache_key"] for c in analysis["cacheables"].values())
    store.put(bucket, f"cache/full/{key}-00000-of-00001", EMPTY_SHARD)
    third = json.loads(ok(cli(*args, cwd=tmp_path)).stdout)
    assert {r["file"]: r["status"] for r in third["results"]} == {"cogbk.pb": "skipped", "wordcount.pb": "ok"}
    no_local_url_dirs(tmp_path)


@pytest.mark.slow
def test_batch_runner_writes_through_the_url(store: Store, tmp_path: Path) -> None:
    bucket = store.bucket()
    url = f"{store.scheme}://{bucket}/cache"
    src, dest = _batch_src(tmp_path), tmp_path / "dest"
    report = json.loads(ok(cli("batch", str(src), "-o", str(dest), "--cache-dir", url, *store.cli_args,
                               "--runner", "DirectRunner", "--json", cwd=tmp_path)).stdout)
    assert [r["status"] for r in report["results"]] == ["ok", "ok"], report["results"]
    for name in ("wordcount", "cogbk"):
        assert cache_writes_name(dest / f"{name}.pb") == {url}
    no_local_url_dirs(tmp_path)


# --- what cannot work: one line, exit 2 -----------------------------------------------


def test_instrument_names_the_url_and_lists_through_beam(store: Store, tmp_path: Path) -> None:
    bucket = store.bucket()
    url = f"{store.scheme}://{bucket}/c/"  # a trailing slash is dropped, the URL kept
    out = tmp_path / "out.pb"
    r = run_cli("instrument", fixture_pb("wordcount"), "-m", fixture_manifest("wordcount"), "--cache-dir", url,
                *store.cli_args, "-o", str(out))
    assert r.exit_code == 0, r.stderr
    assert cache_writes_name(out) == {url.rstrip("/")}
    # An object in the bucket that is a complete shard set of a bound key counts as cached.
    analysis = json.loads(run_cli("analyze", fixture_pb("wordcount"), "-m", fixture_manifest("wordcount"),
                                  "--json").stdout)
    key = next(iter(analysis["cacheables"].values()))["cache_key"]
    store.put(bucket, f"c/full/{key}-00000-of-00002", EMPTY_SHARD)
    store.put(bucket, "c/full/nested/ignored-00000-of-00001", EMPTY_SHARD)
    r = run_cli("analyze", fixture_pb("wordcount"), "-m", fixture_manifest("wordcount"), "--cache-dir", url,
                *store.cli_args, "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert f"{key}: partial shard set, will be rewritten" in doc["cache_problems"]
    # An empty object is no bz2 stream: a shard copied up short.
    store.put(bucket, f"c/full/{key}-00001-of-00002")
    doc = json.loads(run_cli("analyze", fixture_pb("wordcount"), "-m", fixture_manifest("wordcount"),
                             "--cache-dir", url, *store.cli_args, "--json").stdout)
    assert f"full/{key}-00001-of-00002: does not end as a bz2 stream does (cut short, or not bz2), will be rewritten" in doc["cache_problems"]
    assert [c["cached"] for c in doc["cacheables"].values() if c["cache_key"] == key] == [False]
    store.put(bucket, f"c/full/{key}-00001-of-00002", EMPTY_SHARD)
    doc = json.loads(run_cli("analyze", fixture_pb("wordcount"), "-m", fixture_manifest("wordcount"),
                             "--cache-dir", url, *store.cli_args, "--json").stdout)
    assert [c["cached"] for c in doc["cacheables"].values() if c["cache_key"] == key] == [True]
    no_local_url_dirs(tmp_path, Path.cwd())


def test_filesystem_options_are_restored_after_a_command(s3: S3) -> None:
    from apache_beam.io.filesystems import FileSystems

    before = FileSystems._pipeline_options
    r = run_cli("analyze", fixture_pb("wordcount"), "--cache-dir", f"s3://{s3.bucket()}/c", *s3.cli_args)
    assert r.exit_code == 0, r.stderr
    assert FileSystems._pipeline_options is before


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("foo://bucket/cache", "Beam has no filesystem for foo://"),
        ("file:///tmp/cache", "a local path needs no scheme"),
        ("s3://bucket/ca*che", "cannot hold glob characters"),
        ("s3://", "names no bucket"),
    ],
)
def test_bad_urls(url: str, expected: str, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    for command in ("analyze", "instrument"):
        extra = ["-o", str(tmp_path / "out.pb")] if command == "instrument" else []
        r = run_cli(command, fixture_pb("wordcount"), "-m", fixture_manifest("wordcount"), "--cache-dir", url, *extra)
        assert expected in one_line_error(r, url)
    assert not (tmp_path / "out.pb").exists()
    no_local_url_dirs(tmp_path)


@pytest.mark.parametrize(
    ("scheme", "module", "extra"),
    [("s3", "boto3", "aws"), ("gs", "google.cloud.storage", "gcp"), ("azfs", "azure.storage.blob", "azure"),
     ("hdfs", "hdfs", "hadoop")],
)
def test_a_missing_extra_names_what_to_install(
    scheme: str, module: str, extra: str, tmp_path: Path, monkeypatch: Any
) -> None:
    # The extra's client made unimportable, as if it were not installed.
    monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.chdir(tmp_path)
    url = f"{scheme}://bucket/cache"
    for command in ("analyze", "instrument"):
        extra_args = ["-o", str(tmp_path / "out.pb")] if command == "instrument" else []
        r = run_cli(command, fixture_pb("wordcount"), "-m", fixture_manifest("wordcount"), "--cache-dir", url, *extra_args)
        line = one_line_error(r, url)
        assert f"{scheme}:// needs Beam's {extra} filesystem" in line and f"pip install 'apache-beam[{extra}]==" in line, line
    assert not (tmp_path / "out.pb").exists()


def test_an_unreachable_gcs_is_bounded(gcs: GCS, tmp_path: Path) -> None:
    url = f"gs://{gcs.bucket()}/cache"
    proc = cli("analyze", fixture_pb("wordcount"), "--cache-dir", url, *gcs.cli_args, cwd=tmp_path,
               env={"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{free_port()}", "BEAMINST_CACHE_TIMEOUT": "3"})
    line = one_line_error(proc, url)
    assert "no answer within 3 s" in line or "cannot reach bucket" in line, line
    assert "GOOGLE_APPLICATION_CREDENTIALS" in line and "--project" in line, line


def test_a_bucket_that_does_not_exist(store: Store, tmp_path: Path) -> None:
    url = f"{store.scheme}://no-such-bucket-{uuid.uuid4().hex[:8]}/cache"
    proc = cli("instrument", fixture_pb("wordcount"), "-m", fixture_manifest("wordcount"), "--cache-dir", url,
               *store.cli_args, "-o", str(tmp_path / "out.pb"), cwd=tmp_path)
    assert "does not exist" in one_line_error(proc, url)
    assert not (tmp_path / "out.pb").exists()


def test_a_server_nobody_runs_and_missing_credentials(s3: S3, tmp_path: Path) -> None:
    url = f"s3://{s3.bucket()}/cache"
    dead = [f"--pipeline-arg=--s3_endpoint_url=http://127.0.0.1:{free_port()}", f"--pipeline-arg=--s3_region_name={REGION}"]
    proc = cli("analyze", fixture_pb("wordcount"), "--cache-dir", url, *dead, cwd=tmp_path)
    line = one_line_error(proc, url)
    assert "Could not connect" in line and "--s3_endpoint_url" in line, line

    no_credentials = {k: "" for k in CREDENTIALS}
    proc = cli("analyze", fixture_pb("wordcount"), "--cache-dir", url, *s3.cli_args, cwd=tmp_path,
               env=no_credentials)
    line = one_line_error(proc, url)
    assert "credentials" in line and "AWS_ACCESS_KEY_ID" in line, line
    # ... and given as Beam options instead, they work.
    ok(cli("analyze", fixture_pb("wordcount"), "--cache-dir", url, *s3.cli_args,
           "--pipeline-arg=--s3_access_key_id=testing", "--pipeline-arg=--s3_secret_access_key=testing",
           cwd=tmp_path, env=no_credentials))


def test_a_server_that_never_answers_is_bounded(tmp_path: Path) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts connections, never answers
        port = silent.getsockname()[1]
        url = "s3://bucket/cache"
        proc = cli("analyze", fixture_pb("wordcount"), "--cache-dir", url,
                   f"--pipeline-arg=--s3_endpoint_url=http://127.0.0.1:{port}", f"--pipeline-arg=--s3_region_name={REGION}",
                   cwd=tmp_path, env={**CREDENTIALS, "BEAMINST_CACHE_TIMEOUT": "3"}, timeout=120)
    assert "no answer within 3 s" in one_line_error(proc, url)


def test_a_listing_over_the_cap(store: Store, tmp_path: Path) -> None:
    bucket = store.bucket()
    for i in range(3):
        store.put(bucket, f"cache/full/junk{i}")
    url = f"{store.scheme}://{bucket}/cache"
    proc = cli("analyze", fixture_pb("wordcount"), "--cache-dir", url, *store.cli_args, cwd=tmp_path,
               env={"BEAMINST_MAX_CACHE_ENTRIES": "2"})
    assert "more than 2 entries" in one_line_error(proc, url)


def test_bad_pipeline_arg_is_one_line(tmp_path: Path) -> None:
    proc = cli("analyze", fixture_pb("wordcount"), "--cache-dir", "s3://b/c", "--pipeline-arg=s3_endpoint_url",
               cwd=tmp_path)
    assert proc.returncode == 2
    assert beam_noise_free(proc.stderr) == [
        "beaminst: --pipeline-arg 's3_endpoint_url': expected a Beam option, --flag=value"
    ]


def test_streaming_caches_are_local_only(s3: S3, tmp_path: Path) -> None:
    """Beam's StreamingCache opens local files (and makes its directory when the
    sink is built): a URL would record into a local directory named after it."""
    url = f"s3://{s3.bucket()}/cache"
    for command in ("instrument", "background-caching"):
        proc = cli(command, fixture_pb("pubsub_one"), "-m", fixture_manifest("pubsub_one"), "--cache-dir", url,
                   *s3.cli_args, "-o", str(tmp_path / "out.pb"), cwd=tmp_path)
        assert "StreamingCache" in one_line_error(proc, url) and "local" in proc.stderr
    assert not (tmp_path / "out.pb").exists()

    record = tmp_path / "record.pb"
    ok(cli("background-caching", fixture_pb("pubsub_one"), "-m", fixture_manifest("pubsub_one"),
           "--cache-dir", str(tmp_path / "local"), "-o", str(record), cwd=tmp_path))
    proc = cli("run", str(record), "--cache-dir", url, "--max-duration", "1", cwd=tmp_path)
    assert "StreamingCache" in one_line_error(proc, url)
    no_local_url_dirs(tmp_path)


def test_local_paths_still_become_absolute(tmp_path: Path) -> None:
    out = tmp_path / "out.pb"
    proc = cli("instrument", fixture_pb("wordcount"), "-m", fixture_manifest("wordcount"), "--cache-dir", "rel/cache",
               "-o", str(out), cwd=tmp_path)
    ok(proc)
    assert cache_writes_name(out) == {str(tmp_path / "rel" / "cache")}


def test_the_listing_runs_under_a_deadline_thread() -> None:
    """The deadline thread hands errors back to the caller's thread unchanged."""
    from beaminst.cache import cachefs
    from beaminst.errors import CacheDirError

    def boom() -> None:
        raise CacheDirError("boom", "s3://b/c")

    with pytest.raises(CacheDirError, match="boom"):
        cachefs._within_deadline("s3://b/c", boom)
    assert cachefs._within_deadline("s3://b/c", lambda: threading.current_thread().name) == "beaminst-cache-listing"
