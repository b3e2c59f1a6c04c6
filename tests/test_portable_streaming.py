"""Streaming outputs: what a portable runner can be shown of them here.

Beam's job service runs pipelines on the FnApiRunner, which does not run a
TestStream (``NotImplementedError``) and cannot reach Pub/Sub offline. So
streaming outputs are *run* on the DirectRunner in streaming mode (as
Interactive Beam runs them), and *submitted* through the Job API only to prove
that the runner's checks of the proto itself (components, requirements: the
StreamingCache writes are stateful DoFns) pass before it reaches the TestStream
it cannot run.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import UNBOUNDED_FIXTURES, fixture_manifest, fixture_pb, run_cli
from portable import submit
from test_e2e_streaming import ENV, RUN

from beaminst.model import urns
from beaminst.model.protoio import load_pipeline

pytestmark = pytest.mark.slow


def _instrument(name: str, tmp_path, *extra: str) -> tuple[str, dict]:
    out = tmp_path / f"{name}.pb"
    r = run_cli("instrument", fixture_pb(name), "-m", fixture_manifest(name), "--cache-dir", str(tmp_path / "cache"),
                "-o", str(out), "--json", *extra)
    assert r.exit_code == 0, r.stderr
    return str(out), json.loads(r.stdout)


@pytest.mark.parametrize("name", UNBOUNDED_FIXTURES)
def test_streaming_output_runs_on_the_direct_runner(name, tmp_path):
    out, report = _instrument(name, tmp_path)
    assert report["test_stream"]
    proc = subprocess.run([sys.executable, "-c", RUN, out], capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize("name", UNBOUNDED_FIXTURES)
def test_streaming_output_passes_the_job_services_proto_checks(name, job_service, tmp_path):
    out, report = _instrument(name, tmp_path)
    proto, _ = load_pipeline(out)
    if report["writes"]:
        assert urns.REQUIRES_STATEFUL in proto.requirements
    job = submit(proto, job_service.endpoint, timeout=180)
    messages = "\n".join([*job.errors, *(text for _, text in job.messages)])
    # It fails where the FnApiRunner stops supporting it (the TestStream), not
    # on anything about the proto.
    assert job.state == "FAILED", job.describe()
    assert "Missing requirement declaration" not in messages, job.describe()
    assert "TestStream" in messages or "teststream" in messages, job.describe()


def test_the_requirement_check_comes_before_the_teststream_refusal(job_service, tmp_path):
    # Control for the test above: without its declaration the same proto is
    # refused for the requirement, so passing that check means something.
    out, report = _instrument("pubsub_one", tmp_path)
    assert report["writes"]
    proto, _ = load_pipeline(out)
    del proto.requirements[:]
    job = submit(proto, job_service.endpoint, timeout=180)
    assert job.state == "FAILED"
    assert any("Missing requirement declaration" in e and "stateful" in e for e in job.errors), job.describe()
