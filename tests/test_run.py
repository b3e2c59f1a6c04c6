"""``beaminst run``: a saved proto run as it is, locally or through the Job API.

The fast tests hold the pieces to their contract without running a pipeline
(capture writes and cache directories read from the proto, the watcher's
limits on a scripted job, exit codes, bad input in one line). The slow ones
run real protos: instrumented fixtures and background caching protos on the
DirectRunner, the same through ``--job-endpoint`` on Beam's own job service,
failing pipelines, and recordings stopped at their limits and then replayed.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import time
from pathlib import Path

import apache_beam as beam
import pytest
from conftest import (
    CLI_PREFIX,
    EMPTY_SHARD,
    FIXTURES,
    REPO,
    fixture_manifest,
    fixture_pb,
    interruptible,
    run_cli,
    run_cli_subprocess,
)

import beaminst
from beaminst.commands.api import load
from beaminst.run import RunOptions, RunReport
from beaminst.run.capture import find_cache_writes, pickled_string_ending_with
from beaminst.run.job import Job, Message
from beaminst.run.recording import plan_recording
from beaminst.run.watch import Limits, follow

TEST_STREAM = "beam:transform:teststream:v1"
# fixtures.pipelines.wordcount: "to be or not to be", "that is the question"
WORD_COUNTS = [("be", 2), ("is", 1), ("not", 1), ("or", 1), ("question", 1), ("that", 1), ("the", 1), ("to", 2)]


# --- pipelines ------------------------------------------------------------------------


def events_pipeline(stem: str, n: int = 3) -> tuple[str, str]:
    """A TestStream-sourced streaming pipeline (no network): ``n`` events one
    second apart, each on its own watermark step. Small ``n`` finishes at once;
    thousands keep the DirectRunner busy for many seconds."""
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.testing.test_stream import TestStream

    opts = PipelineOptions()
    opts.view_as(StandardOptions).streaming = True
    p = beam.Pipeline(options=opts)
    stream = TestStream()
    for i in range(n):
        stream = stream.add_elements([beam.window.TimestampedValue(f"e{i}", i)]).advance_watermark_to(i + 1)
    events = p | "Events" >> stream.advance_watermark_to_infinity()
    upper = events | "Upper" >> beam.Map(str.upper)
    _ = upper | "Len" >> beam.Map(len)
    return beaminst.export(p, {"events": events, "upper": upper}, stem)


def failing_pipeline(stem: str) -> tuple[str, str]:
    p = beam.Pipeline()
    nums = p | "Create" >> beam.Create(["1", "2", "x"]) | "Parse" >> beam.Map(int)
    return beaminst.export(p, {"nums": nums}, stem)


def cli(*args: str, timeout: float = 300) -> tuple[int, str, str]:
    proc = run_cli_subprocess(*args, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def ok(*args: str) -> str:
    code, out, err = cli(*args)
    assert code == 0, err[-4000:]
    return out


def rewrite(*args: str) -> str:
    """A rewriting command, in-process (only ``run`` needs a fresh interpreter:
    nothing the test process imported may help the pipeline run)."""
    r = run_cli(*args)
    assert r.exit_code == 0, r.stderr
    return r.stdout


def record_proto(tmp_path: Path, n: int = 3, name: str = "ev") -> tuple[str, str, str, str]:
    """(pipeline, manifest, background caching proto, cache dir)."""
    pb, man = events_pipeline(str(tmp_path / name), n)
    cache, bg = str(tmp_path / f"{name}-cache"), str(tmp_path / f"{name}-bg.pb")
    rewrite("background-caching", pb, "-m", man, "--cache-dir", cache, "-o", bg, "--unbounded-urn", TEST_STREAM)
    return pb, man, bg, cache


def instrument(pb: str, man: str, cache: str, out: str, *extra: str) -> dict:
    return json.loads(rewrite("instrument", pb, "-m", man, "--cache-dir", cache, "-o", out, "--json", *extra))


def run_json(*args: str) -> tuple[int, dict, str]:
    code, out, err = cli("run", *args, "--json")
    assert out.strip(), err[-4000:]
    return code, json.loads(out), err


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("beaminst: ") and ": job " in line
            and not line.startswith("beaminst: job")]


# --- fast: the proto side ---------------------------------------------------------------


@pytest.mark.parametrize("length", [5, 200, 300, 70_000])
def test_a_pickled_path_is_read_by_its_opcode_and_length(length):
    path = "/d/" + "x" * length + "/full/KEY"
    data = pickle.dumps({"other": "/full/KEY-not-this", "p": path}, protocol=4)
    assert pickled_string_ending_with(data, b"/full/KEY") == (path if length < 4000 else None)
    assert pickled_string_ending_with(b"\x8c\x05/full/KEY", b"/full/KEY") is None  # a length that cannot hold it


def test_capture_writes_and_their_directory_are_read_from_a_background_caching_proto(tmp_path):
    pb, man = events_pipeline(str(tmp_path / "ev"))
    cache, bg = str(tmp_path / "cache"), str(tmp_path / "bg.pb")
    r = run_cli("background-caching", pb, "-m", man, "--cache-dir", cache, "-o", bg, "--unbounded-urn", TEST_STREAM, "--json")
    assert r.exit_code == 0, r.stderr
    (planned,) = json.loads(r.stdout)["writes"]
    (w,) = find_cache_writes(load(bg).index)
    assert (w.key, w.streaming, w.capture, w.producer) == (planned["cache_key"], True, True, "Events")
    assert w.cache_dir == os.path.abspath(cache)
    recording, warnings = plan_recording((w,), None)
    assert recording is not None and warnings == []
    assert recording.cache_dir == os.path.abspath(cache) and recording.size() == 0
    # A file the sink's own directory already holds is refused even when the
    # recording is measured under another --cache-dir: a local job appends to it.
    from beaminst.errors import BeaminstError
    from beaminst.run.recording import refuse_appending

    elsewhere = str(tmp_path / "elsewhere")
    measured, _ = plan_recording((w,), elsewhere)
    refuse_appending((w,), measured)
    os.makedirs(os.path.join(cache, "full"), exist_ok=True)  # background-caching made it
    with open(os.path.join(cache, "full", w.key), "wb") as f:
        f.write(b"header\n")
    with pytest.raises(BeaminstError) as e:
        refuse_appending((w,), measured)
    assert "already holds 7 bytes recorded by an earlier run" in e.value.message
    assert f"rm {os.path.join(cache, 'full', w.key)}" in e.value.message


def test_an_instrumented_protos_writes_are_not_a_recording(tmp_path):
    cache = str(tmp_path / "cache")
    out = str(tmp_path / "wc.pb")
    r = run_cli("instrument", fixture_pb("wordcount"), "-m", fixture_manifest("wordcount"), "--cache-dir", cache,
                "-o", out, "--json")
    assert r.exit_code == 0, r.stderr
    keys = sorted(w["cache_key"] for w in json.loads(r.stdout)["writes"])
    writes = find_cache_writes(load(out).index)
    assert sorted(w.key for w in writes) == keys
    assert all(not w.capture and not w.streaming and w.cache_dir == os.path.abspath(cache) for w in writes)
    assert plan_recording(writes, None) == (None, [])
    # --cache-dir only places a recording: given for a pipeline that records
    # nothing (a URL included, which a recording could not use), it is said
    # to do nothing rather than taken silently.
    for given in (str(tmp_path / "elsewhere"), "gs://bucket/cache"):
        recording, warnings = plan_recording(writes, given)
        assert recording is None and len(warnings) == 1
        assert warnings[0].startswith(f"--cache-dir {given} is not used: ") and "records nothing" in warnings[0]


def test_an_instrumented_streaming_protos_writes_are_not_a_recording(tmp_path):
    """Its sources are replaced by the replaying TestStream, whose outputs are
    read back, never written: its StreamingCache writes record no source."""
    pb, man = events_pipeline(str(tmp_path / "ev"))
    out = str(tmp_path / "inst.pb")
    r = run_cli("instrument", pb, "-m", man, "--cache-dir", str(tmp_path / "c"), "-o", out, "--unbounded-urn", TEST_STREAM)
    assert r.exit_code == 0, r.stderr
    writes = find_cache_writes(load(out).index)
    assert writes and all(w.streaming and not w.capture for w in writes)


def test_a_streaming_write_over_an_earlier_one_is_refused(tmp_path, monkeypatch):
    """The StreamingCache sink appends: the same instrumented proto run twice
    would leave two recordings in one file, which Beam's reader refuses whole."""
    pb, man = events_pipeline(str(tmp_path / "ev"))
    out = str(tmp_path / "inst.pb")
    cache = tmp_path / "c"
    assert run_cli("instrument", pb, "-m", man, "--cache-dir", str(cache), "-o", out, "--unbounded-urn",
                   TEST_STREAM).exit_code == 0
    w = find_cache_writes(load(out).index)[0]
    (cache / "full").mkdir(parents=True, exist_ok=True)
    (cache / "full" / w.key).write_bytes(b"header\n")
    started = []
    monkeypatch.setattr("beaminst.run.local.start_local", lambda *a: started.append(a))
    r = run_cli("run", out)
    assert r.exit_code == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert f"{w.unique_name} would append to full/{w.key}, which already holds 7 bytes" in r.stderr
    assert f"rm {cache / 'full' / w.key} to write it again" in r.stderr and started == []
    # A directory in the file's place holds no recording: not refused as one
    # ("already holds 4096 bytes"); Beam's sink fails on it, in the job.
    (cache / "full" / w.key).unlink()
    (cache / "full" / w.key).mkdir()
    from beaminst.run.recording import refuse_appending

    refuse_appending(find_cache_writes(load(out).index), None)


def test_recording_defaults_are_interactive_beams():
    from apache_beam.runners.interactive.options.capture_control import CaptureControl

    control = CaptureControl()
    opts = RunOptions()
    assert opts.duration_limit == control._capture_duration.total_seconds()
    assert opts.size_limit == control._capture_size_limit


# --- fast: the watcher, on a scripted job ---------------------------------------------------


class ScriptedJob(Job):
    """Runs until cancelled (or until ``done_after`` seconds), growing ``grow``
    by ``rate`` bytes a second while it runs."""

    runner = "Scripted"

    def __init__(self, grow: Path | None = None, rate: int = 0, done_after: float | None = None,
                 confirms_cancel: bool = True) -> None:
        super().__init__()
        self.job_id = "scripted"
        self.grow, self.rate, self.done_after, self.confirms = grow, rate, done_after, confirms_cancel
        self.started = time.monotonic()
        self.cancelled = False
        self.set_state("RUNNING")

    def wait(self, seconds: float) -> str:
        time.sleep(min(seconds, 0.05))
        elapsed = time.monotonic() - self.started
        if self.state == "RUNNING" and self.grow is not None:
            self.grow.write_bytes(b"x" * int(self.rate * elapsed))
        if self.state == "RUNNING" and self.done_after is not None and elapsed >= self.done_after:
            self.set_state("DONE")
        return self.state

    def cancel(self) -> None:
        self.cancelled = True
        self.set_state("CANCELLED" if self.confirms else "CANCELLING")


class Notes:
    def __init__(self) -> None:
        self.notes: list[str] = []
        self.updates = 0

    def update(self, job, elapsed, recorded_bytes) -> None:
        self.updates += 1

    def note(self, text: str) -> None:
        self.notes.append(text)


def _recording(tmp_path: Path, key: str = "k"):
    from beaminst.run.capture import CacheWrite
    from beaminst.run.recording import Recording

    write = CacheWrite(key, "t", f"WriteCache_{key}", "pc", "Src", True, True, str(tmp_path))
    (tmp_path / "full").mkdir(exist_ok=True)
    recording, _ = plan_recording((write,), None)
    assert isinstance(recording, Recording)
    return recording, tmp_path / "full" / key


def test_the_size_limit_cancels_a_growing_recording(tmp_path):
    recording, path = _recording(tmp_path)
    job, notes = ScriptedJob(grow=path, rate=20_000), Notes()
    outcome = follow(job, Limits(recording, 60, 5_000), notes)
    assert job.cancelled and outcome.stopped_by == "max_bytes" and outcome.state == "CANCELLED"
    assert outcome.recorded_bytes >= 5_000 and outcome.seconds < 5
    assert any("--max-bytes 5000" in n for n in notes.notes)


def test_the_duration_limit_cancels_a_recording(tmp_path):
    recording, _ = _recording(tmp_path)
    job = ScriptedJob()
    outcome = follow(job, Limits(recording, 0.5, 10**9), Notes())
    assert job.cancelled and outcome.stopped_by == "max_duration" and 0.5 <= outcome.seconds < 3


def test_a_job_that_ends_first_is_not_cancelled(tmp_path):
    recording, _ = _recording(tmp_path)
    job = ScriptedJob(done_after=0.3)
    outcome = follow(job, Limits(recording, 30, 10**9), Notes())
    assert not job.cancelled and outcome.state == "DONE" and outcome.stopped_by is None


def test_an_unconfirmed_cancel_is_given_up_on(tmp_path):
    recording, _ = _recording(tmp_path)
    job = ScriptedJob(confirms_cancel=False)
    outcome = follow(job, Limits(recording, 0.2, 10**9), Notes(), cancel_grace=0.5)
    assert outcome.state == "CANCELLING" and outcome.cancel_unconfirmed


def test_without_limits_only_the_runner_ends_a_job():
    job = ScriptedJob(done_after=0.2)
    assert follow(job, None, Notes()).state == "DONE" and not job.cancelled


class _Result:
    """A PipelineResult that runs until cancelled, or ends DONE after ``lasts`` seconds."""

    def __init__(self, lasts: float | None = None) -> None:
        self.state = "RUNNING"
        self.ends = None if lasts is None else time.monotonic() + lasts

    def cancel(self) -> None:
        self.state = "CANCELLED"

    def wait_until_finish(self) -> str:
        while self.state == "RUNNING":
            if self.ends is not None and time.monotonic() >= self.ends:
                self.state = "DONE"
            time.sleep(0.01)
        return self.state


class _SlowToStart:
    """A pipeline whose ``run()`` takes a while to hand back the job."""

    def __init__(self, result: _Result) -> None:
        self.result = result

    def run(self) -> _Result:
        time.sleep(0.3)
        return self.result


def test_a_local_job_cancelled_while_it_starts_is_cancelled_once_started():
    from beaminst.run.local import LocalJob

    job = LocalJob(_SlowToStart(_Result()), "Fake")
    job.start()
    job.cancel()  # before run() returned the job
    assert job.wait(5) == "CANCELLED"
    job.close()


def test_a_local_job_that_ends_by_itself_is_done():
    from beaminst.run.local import LocalJob

    job = LocalJob(_SlowToStart(_Result(lasts=0.2)), "Fake")
    job.start()
    assert job.wait(5) == "DONE" and job.states == ["RUNNING", "DONE"]
    job.close()


@pytest.mark.parametrize(
    "state, stopped_by, ok",
    [
        ("DONE", None, True),
        ("FAILED", None, False),
        ("CANCELLED", None, False),  # cancelled by someone else: not a success
        ("CANCELLED", "max_duration", True),  # a recording stopped at its limit, as Beam counts it
        ("CANCELLING", "max_bytes", True),
        ("RUNNING", "max_bytes", False),
        ("UNKNOWN", None, False),
    ],
)
def test_exit_status_follows_the_terminal_state(state, stopped_by, ok):
    report = RunReport("p.pb", "DirectRunner", False, state=state, stopped_by=stopped_by)
    assert report.ok is ok
    assert (report.failure() is None) is ok
    if not ok:
        assert report.failure().startswith(f"job {state}")


def test_the_failure_line_is_the_last_line_of_the_last_error():
    tb = "Traceback (most recent call last):\n  File \"x\", line 1\nValueError: bad 'x'\n"
    report = RunReport("p.pb", "PortableRunner", False, state="FAILED",
                       messages=[Message("JOB_MESSAGE_ERROR", tb), Message("JOB_MESSAGE_ERROR", tb),
                                 Message("JOB_MESSAGE_BASIC", "Job state changed to FAILED")])
    assert report.failure() == "job FAILED: ValueError: bad 'x'"
    assert [m.text for m in report.distinct_messages()] == [tb]  # sent twice, shown once


def test_a_local_job_server_defaults_to_loopback():
    from beaminst.run.jobapi import default_environment_type, parse_endpoint

    assert default_environment_type("localhost:8099") == "LOOPBACK"
    assert default_environment_type("127.0.0.1:8099") == "LOOPBACK"
    assert default_environment_type("[::1]:8099") == "LOOPBACK"
    assert default_environment_type("flink.example.com:8099") == "DOCKER"
    assert parse_endpoint("[::1]:8099") == ("::1", 8099)


def test_a_submitted_environment_has_something_to_start():
    # The same rule as instrument's; Beam's own --environment_options still
    # name a command or address without --environment-config.
    from beaminst.errors import BeaminstError
    from beaminst.model.protoio import load_pipeline
    from beaminst.run.jobapi import placeholder_replaced, submission_options

    proto, _ = load_pipeline(fixture_pb("wordcount"))
    for env_type, config in (("PROCESS", None), ("PROCESS", '{"env": {}}'), ("EXTERNAL", None), ("EXTERNAL", "")):
        with pytest.raises(BeaminstError, match=f"^--environment-type {env_type} needs --environment-config: "):
            placeholder_replaced(proto, submission_options("localhost:1", env_type, config, (), False))
    for env_type, config, args in (
        ("PROCESS", None, ("--environment_options=process_command=/opt/apache/beam/boot",)),
        ("PROCESS", '{"command": "/opt/apache/beam/boot"}', ()),
        ("EXTERNAL", "", ("--environment_options=external_service_address=localhost:50000",)),
        ("EXTERNAL", "localhost:50000", ()),
    ):
        out, ids = placeholder_replaced(proto, submission_options("localhost:1", env_type, config, args, False))
        assert ids and out.components.environments[ids[0]].urn == f"beam:env:{env_type.lower()}:v1"


def _explicit_environment_pipeline(tmp_path: Path) -> tuple[str, str]:
    """wordcount with its placeholder environment already a DOCKER one, as a
    pipeline built with Beam's --environment_type=DOCKER names it."""
    from beaminst.model.beamproto import runner_api
    from beaminst.model.protoio import load_pipeline, save_pipeline

    proto, _ = load_pipeline(fixture_pb("wordcount"))
    ((env_id, env),) = proto.components.environments.items()
    env.urn = "beam:env:docker:v1"
    env.payload = runner_api().DockerPayload(container_image="example/beam_python_sdk:1").SerializeToString()
    path = str(tmp_path / "docker.pb")
    save_pipeline(proto, path)
    return path, env_id


def _submitted(monkeypatch) -> list:
    """What run sends to the job service, caught instead of sent: the job is DONE at once."""
    sent: list = []

    def submit(proto, endpoint, options):
        sent.append(proto)
        return ScriptedJob(done_after=0)

    monkeypatch.setattr("beaminst.run.jobapi.submit", submit)
    return sent


def test_no_job_server_is_waited_for_15_seconds_unless_asked():
    """Beam 2.77's --job_server_timeout defaults to 300 s; the default taken
    for 60 s made run wait five minutes for a job server nobody runs."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from beaminst.run.jobapi import CONNECT_TIMEOUT, connect_wait

    assert CONNECT_TIMEOUT == 15.0
    assert connect_wait(PipelineOptions([])) == CONNECT_TIMEOUT
    assert connect_wait(PipelineOptions(["--job_server_timeout=7"])) == 7.0


@pytest.mark.parametrize("endpoint, given, named", [
    ("localhost:8099", ("--environment-type", "PROCESS", "--environment-config", '{"command": "/opt/apache/beam/boot"}'),
     "--environment-type / --environment-config"),
    ("localhost:8099", ("--environment-type", "LOOPBACK"), "--environment-type"),
    ("flink.example.com:8099", ("--environment-config", "apache/beam_python3.11_sdk:2.77.0"), "--environment-config"),
    ("localhost:8099", ("--pipeline-arg=--environment_type=PROCESS",
                        '--pipeline-arg=--environment_config={"command": "boot"}'),
     "--environment_type / --environment_config"),  # Beam's own spelling, as given
])
def test_environment_options_that_replace_nothing_are_said_to(endpoint, given, named, tmp_path, monkeypatch):
    """The options only replace the placeholder environment: with none in the
    proto, the run says so, naming the environment used instead."""
    pb, env_id = _explicit_environment_pipeline(tmp_path)
    sent = _submitted(monkeypatch)
    r = run_cli("run", pb, "--job-endpoint", endpoint, *given, "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["environment"]["replaced"] == []
    (warning,) = [w for w in doc["warnings"] if "not used" in w]
    assert warning.startswith(f"{named} not used: ")
    assert f"{env_id!r} (beam:env:docker:v1)" in warning and "beaminst instrument --environment-type" in warning
    assert sent[0].components.environments[env_id].urn == "beam:env:docker:v1"  # sent as it was
    r = run_cli("run", pb, "--job-endpoint", endpoint, *given)
    assert r.exit_code == 0 and [ln for ln in r.stdout.splitlines() if "not used" in ln] == [f"warning\t{warning}"]


def test_a_placeholder_nothing_runs_in_is_not_a_replacement(tmp_path, monkeypatch):
    """A placeholder environment left in the proto with no transform in it:
    replacing it changes nothing, so the options are still not used."""
    from beaminst.model.protoio import load_pipeline, save_pipeline

    pb, env_id = _explicit_environment_pipeline(tmp_path)
    proto, _ = load_pipeline(pb)
    proto.components.environments["leftover"].urn = "beam:env:default:v1"
    save_pipeline(proto, pb)
    _submitted(monkeypatch)
    r = run_cli("run", pb, "--job-endpoint", "localhost:8099", "--environment-type", "LOOPBACK", "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["environment"]["replaced"] == []
    (warning,) = [w for w in doc["warnings"] if "not used" in w]
    assert f"{env_id!r} (beam:env:docker:v1)" in warning


def test_warnings_are_said_before_the_job_starts(tmp_path):
    """Not only in the summary at the end: an option that does nothing matters
    while the job runs, and most when the submission itself fails."""
    pb, _ = _explicit_environment_pipeline(tmp_path)
    r = run_cli("run", pb, "--job-endpoint", "localhost:1", "--pipeline-arg=--job_server_timeout=1",
                "--environment-type", "DOCKER", "--environment-config", "apache/beam_python3.11_sdk:2.77.0")
    assert r.exit_code == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 2, r.stderr
    assert lines[0].startswith("beaminst: warning: --environment-type / --environment-config not used: ")
    assert "no job service answering at localhost:1" in lines[1]


def test_default_environment_options_are_silent_whatever_the_proto(tmp_path, monkeypatch):
    pb, _ = _explicit_environment_pipeline(tmp_path)
    _submitted(monkeypatch)
    for proto in (pb, fixture_pb("wordcount")):
        r = run_cli("run", proto, "--job-endpoint", "localhost:8099", "--json")
        assert r.exit_code == 0 and json.loads(r.stdout)["warnings"] == [], r.stdout
    # Replacing the placeholder, as asked: nothing to say either.
    r = run_cli("run", fixture_pb("wordcount"), "--job-endpoint", "localhost:8099", "--environment-type", "DOCKER",
                "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["warnings"] == [], r.stdout


def test_beams_own_environment_type_in_pipeline_args_is_not_overridden_by_the_default(monkeypatch):
    sent = _submitted(monkeypatch)
    r = run_cli("run", fixture_pb("wordcount"), "--job-endpoint", "localhost:8099",
                "--pipeline-arg=--environment_type=DOCKER", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["environment"]["type"] == "DOCKER"
    assert [e.urn for e in sent[0].components.environments.values()] == ["beam:env:docker:v1"]


# --- fast: bad input, one line ------------------------------------------------------------

# A run against a job server nobody runs, given up after a second.
UNANSWERED = ("run", "PB", "--job-endpoint", "localhost:1", "--pipeline-arg=--job_server_timeout=1")


@pytest.mark.parametrize(
    "args, needle",
    [
        (("run", "MISSING.pb"), "MISSING.pb: no such file"),
        (("run", "PB", "--environment-type", "DOCKER"), "only apply with --job-endpoint"),
        (("run", "PB", "--job-endpoint", "nonsense"), "expected HOST:PORT"),
        (("run", "PB", "--pipeline-arg", "streaming"), "expected a Beam option"),
        (("run", "PB", "--max-bytes", "0"), "--max-bytes"),
        (UNANSWERED, "no job service answering at localhost:1"),
        # Refused before the endpoint is contacted (nothing answers there): Beam
        # would build an empty boot command, or fail on no address.
        ((*UNANSWERED, "--environment-type", "PROCESS"), "--environment-type PROCESS needs --environment-config: the boot command"),
        ((*UNANSWERED, "--environment-type", "PROCESS", "--environment-config", '{"os": "linux"}'),
         "--environment-type PROCESS needs --environment-config: the boot command"),
        ((*UNANSWERED, "--environment-type", "EXTERNAL"), "--environment-type EXTERNAL needs --environment-config: the worker pool"),
        ((*UNANSWERED, "--environment-type", "EXTERNAL", "--environment-config", ""),
         "--environment-type EXTERNAL needs --environment-config: the worker pool"),
        # LOOPBACK (the default for a job server on this machine) takes no config.
        ((*UNANSWERED, "--environment-config", "apache/beam_python3.11_sdk:2.77.0"),
         "--environment-config 'apache/beam_python3.11_sdk:2.77.0' not used: LOOPBACK, the default"),
        ((*UNANSWERED, "--environment-type", "LOOPBACK", "--environment-config", "x"),
         "--environment-config 'x' not used: --environment-type LOOPBACK runs the workers in this process"),
        ((*UNANSWERED, "--environment-type", "docker"), "--environment-type docker: not an environment type Beam knows (did you mean DOCKER?"),
        ((*UNANSWERED, "--environment-type", "beam:env:embedded_python_loopback:v1", "--environment-config", "x"),
         "--environment-config 'x' not used: --environment-type LOOPBACK runs the workers in this process"),
    ],
)
def test_bad_input_is_one_line(args, needle, tmp_path):
    args = tuple(fixture_pb("wordcount") if a == "PB" else str(tmp_path / a) if a == "MISSING.pb" else a for a in args)
    r = run_cli(*args)
    assert r.exit_code == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert any(needle in line for line in lines), r.stderr
    assert "Traceback" not in r.stderr and (len(lines) == 1 or lines[0].startswith("Usage:"))


def test_garbage_is_refused_before_any_runner(tmp_path):
    bad = tmp_path / "bad.pb"
    bad.write_bytes(b"\x00garbage\xff" * 10)
    r = run_cli("run", str(bad))
    assert r.exit_code == 2 and r.stderr.startswith(f"beaminst: {bad}: ") and len(r.stderr.splitlines()) == 1


def _read_pass(tmp_path: Path) -> tuple[str, Path, str]:
    """wordcount instrumented to read 'counts' back from a (faked, empty) cache:
    the proto, the shard it reads, and the ReadCache's name."""
    manifest = json.loads(Path(fixture_manifest("wordcount")).read_text())
    manifest["computed"] = ["counts"]
    m = tmp_path / "m.json"
    m.write_text(json.dumps(manifest))
    cache = tmp_path / "cache"
    key = json.loads(run_cli("analyze", fixture_pb("wordcount"), "-m", str(m), "--json").stdout)
    key = next(c["cache_key"] for c in key["cacheables"].values() if c["var"] == "counts")
    (cache / "full").mkdir(parents=True)
    shard = cache / "full" / f"{key}-00000-of-00001"
    shard.write_bytes(EMPTY_SHARD)
    out = tmp_path / "read.pb"
    r = run_cli("instrument", fixture_pb("wordcount"), "-m", str(m), "--cache-dir", str(cache), "-o", str(out), "--json")
    assert [x["var"] for x in json.loads(r.stdout)["reads"]] == ["counts"]
    return str(out), shard, f"ReadCache_{key}"


def test_a_read_of_a_cache_that_is_gone_is_refused_before_the_job(tmp_path, monkeypatch):
    """Beam's reader takes a missing or cut shard set for a (shorter) cache: the
    job would end DONE on wrong data, and write what follows as caches of it."""
    from beaminst.run.capture import find_cache_reads

    pb, shard, read = _read_pass(tmp_path)
    assert [(r.unique_name, r.cache_dir) for r in find_cache_reads(load(pb).index)] == [(read, str(shard.parents[1]))]
    started = []
    monkeypatch.setattr("beaminst.run.local.start_local", lambda *a: started.append(a))
    for damage, what in [
        (lambda: shard.write_bytes(EMPTY_SHARD[:-1]), "only a partial, damaged or mixed shard set"),
        (shard.unlink, "no shards of it"),
        (lambda: os.rename(shard.parents[1], shard.parents[1].with_name("moved")), "nothing: the directory does not exist"),
    ]:
        damage()
        r = run_cli("run", pb)
        assert r.exit_code == 2 and len(r.stderr.splitlines()) == 1, r.stderr
        assert f"{read} reads {shard.parent}/{read.removeprefix('ReadCache_')}*-*-of-*, which holds {what}" in r.stderr
        assert "instrument the original again" in r.stderr
    assert started == []


def test_a_read_through_a_job_server_is_only_warned_of(tmp_path, monkeypatch):
    """A job server's workers may see another filesystem than this machine's."""
    pb, shard, read = _read_pass(tmp_path)
    shard.unlink()
    _submitted(monkeypatch)
    r = run_cli("run", pb, "--job-endpoint", "localhost:8099", "--json")
    assert r.exit_code == 0, r.stderr
    (warning,) = [w for w in json.loads(r.stdout)["warnings"] if read in w]
    assert warning.endswith("here: right only if the job server's workers see another filesystem")


def test_help_has_examples_and_imports_no_sdk():
    from conftest import run_python

    probe = (
        "import sys\n"
        "from beaminst.cli import main\n"
        "try:\n"
        "    main(['run', '--help'], standalone_mode=False)\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('BEAM=' + str(any(m.startswith('apache_beam') for m in sys.modules)))\n"
    )
    proc = run_python("-c", probe)
    assert proc.returncode == 0, proc.stderr
    assert "Examples:" in proc.stdout and "beaminst run instrumented.pb --job-endpoint localhost:8099" in proc.stdout
    assert "BEAM=False" in proc.stdout


# --- slow: running real protos --------------------------------------------------------------


def _read_back(out: str, write: dict, cache: str) -> list:
    from beaminst.commands.cacheread import read_cached_values
    from beaminst.model.protoio import load_pipeline

    proto, _ = load_pipeline(out)
    return read_cached_values(proto, write["pcollection"], cache, write["cache_key"])


@pytest.mark.slow
def test_an_instrumented_fixture_runs_on_the_direct_runner_and_fills_its_cache(tmp_path):
    cache, out = str(tmp_path / "cache"), str(tmp_path / "wc.pb")
    report = instrument(fixture_pb("wordcount"), fixture_manifest("wordcount"), cache, out)
    code, doc, err = run_json(out)
    assert code == 0, err[-4000:]
    assert (doc["state"], doc["ok"], doc["runner"], doc["streaming"]) == ("DONE", True, "DirectRunner", False)
    assert doc["errors"] == [] and doc["recorded"] is None
    assert sorted(w["key"] for w in doc["cache_writes"]) == sorted(w["cache_key"] for w in report["writes"])
    assert all(w["bytes"] > 0 for w in doc["cache_writes"])
    assert any(step.startswith("beaminst show ") for step in doc["next"])
    (counts,) = [w for w in report["writes"] if w["var"] == "counts"]
    assert sorted(_read_back(out, counts, cache)) == WORD_COUNTS
    # Human output: the state, then the next step; state lines on stderr (not a terminal).
    out_text = ok("run", out)
    # Piped: the next step is a ``next`` record (``next: ...`` is the terminal's form).
    assert "DONE" in out_text and "next\tbeaminst show PIPELINE -m MANIFEST --cache-dir" in out_text


@pytest.mark.slow
def test_a_background_caching_proto_records_then_instrument_replays_it(tmp_path):
    pb, man, bg, cache = record_proto(tmp_path)
    code, doc, err = run_json(bg)
    assert code == 0, err[-4000:]
    assert doc["state"] == "DONE" and doc["streaming"] and doc["stopped_by"] is None
    rec = doc["recorded"]
    (key,) = rec["keys"]
    assert (rec["cache_dir"], rec["max_duration"], rec["max_bytes"]) == (os.path.abspath(cache), 60.0, 1_000_000_000)
    assert key["elements"] == 3 and key["source"] == "Events"
    assert key["bytes"] == rec["bytes"] == os.path.getsize(os.path.join(cache, "full", key["key"]))
    assert doc["next"][0].startswith("beaminst instrument PIPELINE -m MANIFEST --cache-dir ")
    assert f"--unbounded-urn {TEST_STREAM} " in doc["next"][0]  # what the replay below needs
    assert "DONE" in err  # the state lines
    # The recording is what the next instrument replays; the replay runs too.
    inst = instrument(pb, man, cache, str(tmp_path / "inst.pb"), "--unbounded-urn", TEST_STREAM)
    assert inst["test_stream"]["tags"] == [key["key"]] and inst["test_stream"]["events"] >= 1
    code, replay, err = run_json(str(tmp_path / "inst.pb"))
    assert code == 0, err[-4000:]
    assert replay["state"] == "DONE" and replay["streaming"] and replay["recorded"] is None
    # Recording again would append a second recording, which Beam's reader
    # refuses whole: refused before the job starts, the recording kept.
    size = os.path.getsize(key["path"])
    code, out, err = cli("run", bg)
    assert code == 2, err[-4000:]
    (line,) = [ln for ln in err.splitlines() if ln.startswith("beaminst: ")]
    assert "already holds" in line and f"rm {key['path']}" in line
    assert os.path.getsize(key["path"]) == size
    assert instrument(pb, man, cache, str(tmp_path / "inst2.pb"), "--unbounded-urn", TEST_STREAM)["test_stream"]["events"] >= 1


@pytest.mark.slow
def test_recording_limits_stop_a_long_recording_and_report_what_was_recorded(tmp_path):
    n = 4000  # several seconds of DirectRunner work per thousand events
    pb, man, bg, cache = record_proto(tmp_path, n)
    start = time.monotonic()
    code, doc, err = run_json(bg, "--max-duration", "3")
    took = time.monotonic() - start
    assert code == 0, err[-4000:]
    assert (doc["state"], doc["stopped_by"], doc["ok"]) == ("CANCELLED", "max_duration", True)
    assert 3 <= doc["seconds"] < 15 and took < 60
    (key,) = doc["recorded"]["keys"]
    assert 0 < key["elements"] < n and key["bytes"] > 0
    assert "cancelling the job" in err

    # The partial recording is a good one: instrument replays it and the replay runs.
    inst = instrument(pb, man, cache, str(tmp_path / "inst.pb"), "--unbounded-urn", TEST_STREAM)
    assert inst["test_stream"]["events"] >= 1
    code, replay, err = run_json(str(tmp_path / "inst.pb"))
    assert code == 0 and replay["state"] == "DONE", err[-4000:]

    # The size limit, on a fresh recording, in human output.
    os.remove(key["path"])
    code, out, err = cli("run", bg, "--max-bytes", "20000")
    assert code == 0, err[-4000:]
    assert "CANCELLED" in out and "stopped at --max-bytes" in out and "recorded" in out
    size = os.path.getsize(key["path"])
    assert 20_000 <= size < 400 * 1000  # cancelled soon after the limit (n events are ~4 MB)
    (record,) = [line.split("\t") for line in out.splitlines() if line.startswith("recorded\t")]
    assert record[3].isdigit() and 20_000 <= int(record[3]) <= size, record  # bytes, not "20.1 kB", on a pipe

    # Ctrl-C: the job is cancelled, the command ends at once, in one line.
    os.remove(key["path"])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([*CLI_PREFIX, "run", bg], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=str(REPO), env=env, preexec_fn=interruptible)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (os.path.exists(key["path"]) and os.path.getsize(key["path"])):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 2 and err.strip().splitlines()[-1] == "beaminst: interrupted", err
    assert "Traceback" not in err


@pytest.mark.slow
def test_a_failing_pipeline_gives_its_error_in_one_line_then_the_jobs_messages(tmp_path):
    pb, _ = failing_pipeline(str(tmp_path / "fail"))
    failure = f"beaminst: {pb}: job FAILED: ValueError: invalid literal for int() with base 10: 'x' [while running 'Parse']"
    code, out, err = cli("run", pb)
    assert code == 2
    (line,) = error_lines(err)
    assert line == f"{failure} (rerun with beaminst -v to see the job's messages and tracebacks)"
    # One line: the rest of stderr is the state lines, no traceback, no SDK log.
    assert [ln for ln in err.splitlines() if ln != line and not ln.startswith("beaminst: job: ")] == [], err
    # With -v, the job's messages after the line.
    code, out, err = cli("-v", "run", pb)
    assert code == 2
    (line,) = error_lines(err)
    assert line == failure
    after = err[err.index(line) + len(line):]
    assert "Traceback" in after and "ValueError" in after
    code, doc, _ = run_json(pb)
    assert code == 2 and doc["state"] == "FAILED" and not doc["ok"]
    assert doc["errors"] and "invalid literal" in doc["errors"][-1]


@pytest.mark.slow
def test_a_pipeline_that_cannot_be_rebuilt_is_one_line(tmp_path):
    pb, _ = failing_pipeline(str(tmp_path / "p"))
    from beaminst.model.protoio import load_pipeline, save_pipeline

    proto, _ = load_pipeline(pb)
    (t,) = [t for t in proto.components.transforms.values() if t.unique_name == "Parse"]
    from apache_beam.portability.api import beam_runner_api_pb2 as rapi

    payload = rapi.ParDoPayload.FromString(t.spec.payload)
    payload.do_fn.payload = b"not a pickle"
    t.spec.payload = payload.SerializeToString()
    save_pipeline(proto, pb)
    code, _, err = cli("run", pb)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "cannot rebuild the pipeline for the DirectRunner" in lines[0], err


# A beaminst CLI with Beam's Prism download replaced by one that notes the
# call in the file $PRISM_FETCHES names and then fails as an unreachable
# GitHub does (Beam raises RuntimeError for a URLError): no run in the tests
# depends on the network, and a fetch is seen even where Beam falls back.
NO_GITHUB_CLI = [
    CLI_PREFIX[0], "-c",
    "import os, sys\n"
    "from apache_beam.runners.portability import prism_runner\n"
    "def fetch(url, *args, **kwargs):\n"
    "    with open(os.environ['PRISM_FETCHES'], 'a') as f:\n"
    "        f.write(url + '\\n')\n"
    "    raise RuntimeError('Unable to fetch remote prism binary at ' + url + ': no network in this test')\n"
    "prism_runner.PrismJobServer._download_to_local_path = staticmethod(fetch)\n"
    "from beaminst.cli import main\n"
    "main(sys.argv[1:], prog_name='beaminst')\n",
]


def cli_without_github(fetches: Path, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PRISM_FETCHES": str(fetches), "COLUMNS": "200"}
    proc = subprocess.run([*NO_GITHUB_CLI, *args], capture_output=True, text=True, cwd=str(REPO), env=env,
                          timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.slow
def test_a_local_run_does_not_fetch_prism(tmp_path):
    """The DirectRunner (Beam's SwitchingDirectRunner) would first try Prism,
    downloading it from GitHub, then fall back; run as Interactive Beam runs,
    it goes straight to the FnApiRunner."""
    fetches = tmp_path / "fetches"
    cache, out = str(tmp_path / "cache"), str(tmp_path / "wc.pb")
    report = instrument(fixture_pb("wordcount"), fixture_manifest("wordcount"), cache, out)
    code, text, err = cli_without_github(fetches, "-v", "run", out, "--json")
    assert not fetches.exists(), f"the local run fetched Prism from {fetches.read_text()!r}"
    assert code == 0, err[-4000:]
    assert (json.loads(text)["state"], json.loads(text)["runner"]) == ("DONE", "DirectRunner")
    assert "PrismRunner" not in err, err[-4000:]  # not tried at all, not merely fallen back from
    (counts,) = [w for w in report["writes"] if w["var"] == "counts"]
    assert sorted(_read_back(out, counts, cache)) == WORD_COUNTS


@pytest.mark.slow
def test_prism_named_as_the_runner_is_the_runner(tmp_path):
    """--pipeline-arg=--runner=PrismRunner is still Prism, fetched as Beam
    fetches it (here: refused, so the job fails, and says why, in one line)."""
    fetches = tmp_path / "fetches"
    pb, _ = failing_pipeline(str(tmp_path / "p"))
    code, _, err = cli_without_github(fetches, "run", pb, "--pipeline-arg=--runner=PrismRunner")
    assert fetches.read_text().startswith("https://github.com/apache/beam/releases/download/")
    assert code == 2 and "Unable to fetch remote prism binary" in err, err[-4000:]


# --- slow: through the Job API -----------------------------------------------------------


@pytest.mark.slow
def test_an_instrumented_fixture_runs_through_the_job_api(job_service, tmp_path):
    cache, out = str(tmp_path / "cache"), str(tmp_path / "wc.pb")
    report = instrument(fixture_pb("wordcount"), fixture_manifest("wordcount"), cache, out)
    code, doc, err = run_json(out, "--job-endpoint", job_service.endpoint)
    assert code == 0, err[-4000:] + job_service.log_tail()
    assert (doc["state"], doc["runner"], doc["job_endpoint"]) == ("DONE", "PortableRunner", job_service.endpoint)
    assert doc["job_id"] and doc["states"][-1] == "DONE"
    env = doc["environment"]
    assert env["type"] == "LOOPBACK" and env["replaced"]  # only the placeholder, as PortableRunner does
    (counts,) = [w for w in report["writes"] if w["var"] == "counts"]
    assert sorted(_read_back(out, counts, cache)) == WORD_COUNTS


@pytest.mark.slow
def test_a_failing_pipeline_through_the_job_api(job_service, tmp_path):
    pb, _ = failing_pipeline(str(tmp_path / "fail"))
    code, out, err = cli("run", pb, "--job-endpoint", job_service.endpoint)
    assert code == 2
    (line,) = error_lines(err)
    assert line.startswith(f"beaminst: {pb}: job FAILED: ")
    assert "invalid literal for int() with base 10: 'x' [while running 'Parse']" in line
    # One line: the LOOPBACK worker in this process neither logs nor prints its traceback.
    assert [ln for ln in err.splitlines() if ln != line and not ln.startswith("beaminst: job ")] == [], err
    code, out, err = cli("-v", "run", pb, "--job-endpoint", job_service.endpoint)
    (line,) = error_lines(err)
    after = err[err.index(line) + len(line):]
    assert "Traceback" in after and after.count("RuntimeError: Traceback") <= 1  # sent twice, shown once
    code, doc, _ = run_json(pb, "--job-endpoint", job_service.endpoint)
    assert code == 2 and doc["state"] == "FAILED" and doc["job_id"]


@pytest.mark.slow
def test_a_recording_through_the_job_api_is_warned_about_and_fails_at_the_runner(job_service, tmp_path):
    """Beam's job service (the FnApiRunner) runs neither a TestStream nor the
    Python-only transforms of the StreamingCache sink: said before submitting,
    and the job fails there, exit 2."""
    _, _, bg, _ = record_proto(tmp_path)
    code, doc, err = run_json(bg, "--job-endpoint", job_service.endpoint)
    assert code == 2 and doc["state"] == "FAILED"
    assert any("TestStream" in w for w in doc["warnings"])
    assert any("beam:transform:pickled_python:v1" in w for w in doc["warnings"])
    assert doc["recorded"] is not None  # still measured and reported


@pytest.mark.slow
def test_a_job_outliving_the_streams_deadline_is_followed_to_its_end(job_service, tmp_path):
    """Beam opens the state and message streams with --job_server_timeout as
    their deadline: they are reopened, and what they replay is not news."""
    p = beam.Pipeline()
    _ = p | "Create" >> beam.Create([4.0]) | "Sleep" >> beam.Map(time.sleep)
    pb, _ = beaminst.export(p, {}, str(tmp_path / "sleep"))
    code, doc, err = run_json(pb, "--job-endpoint", job_service.endpoint, "--pipeline-arg=--job_server_timeout=1")
    assert code == 0, err[-4000:]
    assert doc["state"] == "DONE" and doc["seconds"] >= 4
    assert doc["states"].count("RUNNING") == 1 and doc["states"][-1] == "DONE"
    texts = [m["text"] for m in doc["messages"]]
    assert len(texts) == len(set(texts))


@pytest.mark.parametrize("state, held, expected", [
    ("DONE", 535, "summary\t2 cache write(s), 535 B in /c"),
    ("FAILED", 535, "summary\t2 cache write(s) not done (the job is FAILED); 535 B in /c was left by an earlier run "
                    "(on gs:// or s3://, maybe by this one: see the warning)"),
    ("FAILED", 0, "summary\t2 cache write(s) not done (the job is FAILED): nothing cached in /c"),
])
def test_a_failed_run_does_not_claim_its_cache_writes(state, held, expected, capsys):
    """A failed job's summary said '4 cache write(s), 535 B': stale shards
    from an earlier run, reported as this run's (trial)."""
    from beaminst.commands.humanout import human_for
    from beaminst.run.console import print_run_report
    from beaminst.run.report import RunReport

    report = RunReport("p.pb", "DirectRunner", False, state=state)
    report.cache_writes = [{"cache_dir": "/c", "bytes": held}, {"cache_dir": "/c", "bytes": 0}]
    print_run_report(human_for(), report)
    assert expected in capsys.readouterr().out.splitlines()


def test_after_a_replay_the_next_steps_name_the_source_flags(tmp_path):
    """The original's sources (and the rules that found them: a TestStream
    needs --unbounded-urn) are not in a proto that replays a recording."""
    from beaminst.commands.nextsteps import Invocation, after_run
    from beaminst.run.driver import _replays

    out = tmp_path / "i.pb"
    assert run_cli("instrument", fixture_pb("pubsub_one"), "-m", fixture_manifest("pubsub_one"), "--cache-dir",
                   str(tmp_path / "c"), "-o", str(out)).exit_code == 0
    assert _replays(load(str(out)).index) and not _replays(load(fixture_pb("wordcount")).index)
    steps = after_run(Invocation("-", "-", "c"), recording=False, replayed=True)
    assert all(s.endswith("(plus any --unbounded-urn / --infer-unbounded it was instrumented with)") for s in steps)


def test_another_sdks_pipeline_on_the_local_runner_names_the_job_api():
    """Python's from_runner_api takes one root; the TypeScript SDK writes its
    top-level transforms as roots, so the local run could only fail inside
    Beam ("too many values to unpack")."""
    code, _, err = cli("run", str(FIXTURES / "typescript" / "wordcount.pb"))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "root transforms" in lines[0] and "--job-endpoint" in lines[0] and "unpack" not in lines[0]


def test_a_missing_module_of_a_beam_extra_names_the_extra():
    from beaminst.run.local import _describe

    gcp = _describe(ModuleNotFoundError("No module named 'google.cloud'", name="google.cloud"))
    assert "pip install 'apache-beam[gcp]==" in gcp
    own = _describe(ModuleNotFoundError("No module named 'mypipeline'", name="mypipeline"))
    assert "PYTHONPATH" in own and "apache-beam[" not in own


def test_a_streaming_run_that_cached_nothing_names_no_show(tmp_path):
    """A replay of a recording that holds no event writes no cache file; its
    next steps suggested ``show``, which then said there is no cache (trial).
    A batch write of no element still writes its shards, so it keeps them."""
    from beaminst.run.capture import CacheWrite
    from beaminst.run.driver import next_steps, nothing_cached
    from beaminst.run.report import RunReport

    index = load(fixture_pb("wordcount")).index
    write = CacheWrite("k1", "t1", "WriteCache_k1", "pc", "src", True, False, str(tmp_path))

    def report(*held: tuple[bool, int]) -> RunReport:
        r = RunReport("p.pb", "DirectRunner", True, state="DONE")
        r.cache_writes = [{"streaming": streaming, "bytes": n, "cache_dir": str(tmp_path)} for streaming, n in held]
        return r

    empty = report((True, 0), (True, 0))
    assert nothing_cached(empty) and next_steps(empty, None, (write,), index) == []
    for some in (report((True, 0), (True, 12)), report((False, 0)), report()):
        assert not nothing_cached(some)
    assert next_steps(report((True, 12)), None, (write,), index)[0].startswith("beaminst show ")


@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "1e10"])
def test_max_duration_must_be_a_finite_number_of_seconds(value):
    """``nan`` meant no limit and ``inf`` none either, and --json then printed
    ``NaN``/``Infinity``, which JSON parsers refuse."""
    r = run_cli("run", fixture_pb("wordcount"), "--max-duration", value, "--json")
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.startswith("beaminst: run: invalid value for '--max-duration': ") and r.stderr.count("\n") == 1


class BlockingCancelJob(ScriptedJob):
    """A runner whose cancel waits for its threads (the DirectRunner's, behind
    a source retrying a connection)."""

    def cancel(self) -> None:
        self.cancelled = True
        time.sleep(30)


def test_a_cancel_that_blocks_is_given_up_on_at_the_grace(tmp_path):
    recording, _ = _recording(tmp_path)
    job = BlockingCancelJob()
    outcome = follow(job, Limits(recording, 0.2, 10**9), Notes(), cancel_grace=0.5)
    assert job.cancelled and outcome.cancel_unconfirmed and outcome.state == "RUNNING"
    assert outcome.seconds < 5


def test_a_cancel_that_fails_is_raised(tmp_path):
    class Refuses(ScriptedJob):
        def cancel(self) -> None:
            raise RuntimeError("no cancel for you")

    recording, _ = _recording(tmp_path)
    with pytest.raises(RuntimeError, match="no cancel for you"):
        follow(Refuses(), Limits(recording, 0.2, 10**9), Notes(), cancel_grace=5)
