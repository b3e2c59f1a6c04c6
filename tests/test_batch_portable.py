"""``batch --runner PortableRunner`` on Beam's own job service: the scale-out
path, run through the Job API on a real job server (not only in-process),
rewrites a directory exactly as the local process pool does."""

from __future__ import annotations

import shutil

import pytest
from conftest import FIXTURES, run_cli

pytestmark = pytest.mark.slow

NAMES = ("wordcount", "side_inputs", "windowing", "pubsub_one")


def _src(tmp_path):
    src = tmp_path / "src"
    (src / "nested").mkdir(parents=True)
    for i, name in enumerate(NAMES):
        where = src / "nested" if i % 2 else src
        shutil.copy(FIXTURES / f"{name}.pb", where / f"{name}.pb")
        shutil.copy(FIXTURES / f"{name}.manifest.json", where / f"{name}.manifest.json")
    return src


def _outputs(dest):
    return {p.relative_to(dest): p.read_bytes() for p in dest.rglob("*.pb")}


def test_batch_on_the_job_service_matches_the_local_pool(job_service, tmp_path):
    src, cache = _src(tmp_path), tmp_path / "cache"
    local, portable = tmp_path / "local", tmp_path / "portable"
    r = run_cli("batch", str(src), "-o", str(local), "--cache-dir", str(cache), "--jobs", "1")
    assert r.exit_code == 0, r.stderr
    r = run_cli(
        "batch", str(src), "-o", str(portable), "--cache-dir", str(cache), "--json",
        "--runner", "PortableRunner",
        f"--pipeline-arg=--job_endpoint={job_service.endpoint}",
        "--pipeline-arg=--environment_type=LOOPBACK",
    )
    assert r.exit_code == 0, r.stderr + r.stdout
    assert "Completed job" in job_service.log_tail(100_000) and "state DONE" in job_service.log_tail(100_000)
    ours, theirs = _outputs(local), _outputs(portable)
    assert len(ours) == len(NAMES)
    assert theirs == ours  # byte-identical, file for file
