"""Run pipeline protos the way portable runners receive them: through the Job API.

Helpers for the portable end-to-end tests (import as ``from portable import ...``,
as the other test helpers are imported; pytest puts ``tests/`` on ``sys.path``):

* :func:`running_job_service` starts Beam's own job service
  (``python -m apache_beam.runners.portability.local_job_service_main --port N``)
  in a subprocess, waits (bounded) until it accepts connections, and stops it
  afterwards (terminate, then kill); ``test_portable.py`` wraps it in a
  session-scoped ``job_service`` fixture;
* :func:`submit` sends a ``beam_runner_api_pb2.Pipeline`` *proto* (no
  ``Pipeline`` object, no ``to_runner_api`` round trip that would recompute
  requirements or environments) with PortableRunner's own machinery:
  ``PortableRunner.start_and_replace_loopback_environments`` (starts a
  ``BeamFnExternalWorkerPoolServicer`` in this process and points the
  environment at it: ``beam:env:external:v1``) and ``JobServiceHandle.submit``
  (Prepare, artifact staging, Run); then follows the state and message streams
  to a terminal state, bounded by a timeout;
* :func:`loopback_environment` / :func:`swap_environment` give and put in the
  LOOPBACK environment exactly as PortableRunner writes it for
  ``--environment_type=LOOPBACK`` (the ``beam:env:embedded_python_loopback:v1``
  stub that ``submit`` then turns into an EXTERNAL one);
* :func:`java_validate` runs Beam Java's ``PipelineValidator``
  (``../shared/tools/beam-java-validator/validate.sh``), :func:`require_java_validator`
  skips when it or ``java`` is absent.

The SDK worker runs in this process (LOOPBACK, threads), so ``submit`` can also
report which transforms the runner actually sent to the worker for execution
(``JobResult.executed``).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
JAVA_VALIDATOR = REPO.parent / "shared" / "tools" / "beam-java-validator" / "validate.sh"

DEFAULT_ENV_URN = "beam:env:default:v1"  # the placeholder; common_urns.environments.DEFAULT
JOB_SERVICE_MODULE = "apache_beam.runners.portability.local_job_service_main"
TERMINAL_STATES = ("DONE", "FAILED", "CANCELLED", "DRAINED")


# --- the job service ------------------------------------------------------------------


@dataclass
class JobService:
    endpoint: str  # host:port, what --job_endpoint takes
    port: int
    process: subprocess.Popen
    log_path: Path
    staging_dir: Path  # where the service puts staged artifacts

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, grace: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()  # the service maps SIGTERM to sys.exit(0)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(grace)


@contextlib.contextmanager
def running_job_service(log_dir: str | Path, startup_timeout: float = 60.0) -> Iterator[JobService]:
    """Beam's local job service on a free port, in a subprocess; its stdout and
    stderr go to ``log_dir/job_service.log`` (never a pipe nobody reads), what it
    stages to ``log_dir/staging``."""
    import grpc

    log_dir = Path(log_dir)
    log_path = log_dir / "job_service.log"
    staging = log_dir / "staging"
    staging.mkdir(exist_ok=True)
    last_error: str = ""
    for _attempt in range(3):  # the picked port can be taken before the service binds it
        port = free_port()
        endpoint = f"localhost:{port}"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", JOB_SERVICE_MODULE, "--port", str(port), "--staging_dir", str(staging)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=str(log_dir),
            )
        service = JobService(endpoint, port, proc, log_path, staging)
        try:
            deadline = time.monotonic() + startup_timeout
            ready = False
            while time.monotonic() < deadline and proc.poll() is None:
                channel = grpc.insecure_channel(endpoint)
                try:
                    grpc.channel_ready_future(channel).result(timeout=0.5)
                    ready = True
                    break
                except grpc.FutureTimeoutError:
                    pass
                finally:
                    channel.close()
            if ready:
                try:
                    yield service
                finally:
                    _stop(proc)
                return
            last_error = (
                f"job service exited with {proc.returncode}"
                if proc.poll() is not None
                else f"job service not accepting connections on {endpoint} after {startup_timeout:.0f} s"
            )
            last_error += "\n" + service.log_tail()
        finally:
            _stop(proc)
    raise RuntimeError(last_error)


# --- environments ---------------------------------------------------------------------


def _options(
    job_endpoint: str | None = None,
    timeout: float = 120.0,
    optimize: bool = False,
    process_worker: bool = False,
) -> Any:
    from apache_beam.options.pipeline_options import PipelineOptions

    args = [
        # As PortableRunner.run_pipeline builds the default environment: runner still
        # set (so the environment lists the submission environment's dependencies, an
        # artifact to stage, as a real submission has), sdk_location 'container'.
        "--runner=PortableRunner",
        "--environment_type=LOOPBACK",
        "--sdk_location=container",
        f"--job_server_timeout={int(timeout)}",
    ]
    if job_endpoint:
        args.append(f"--job_endpoint={job_endpoint}")
    if not optimize:
        # PortableRunner pre-optimizes batch pipelines (combiner packing and
        # lifting) before submission; by default send the proto as it is.
        args.append("--experiments=pre_optimize=none")
    if process_worker:
        # The worker pool starts each SDK worker as `python -c ...SdkHarness...`.
        args.append("--experiments=use_loopback_process_worker")
    return PipelineOptions(args)


def loopback_environment(options: Any = None) -> Any:
    """The ``beam:env:embedded_python_loopback:v1`` environment proto PortableRunner
    writes for ``--environment_type=LOOPBACK`` (``Environment.from_options``: the
    Python SDK's capabilities, and as dependency the submission environment's
    package list, a file artifact to stage); ``submit`` starts the worker pool and
    turns it into ``beam:env:external:v1``. A fresh copy each call."""
    if options is None:
        env = _default_loopback_environment()
    else:
        env = _loopback_environment(options)
    out = type(env)()
    out.CopyFrom(env)
    return out


def _loopback_environment(options: Any) -> Any:
    from apache_beam.options.pipeline_options import PortableOptions
    from apache_beam.runners.pipeline_context import PipelineContext
    from apache_beam.transforms import environments

    env = environments.Environment.from_options(options.view_as(PortableOptions))
    return env.to_runner_api(PipelineContext())


@functools.lru_cache(maxsize=1)
def _default_loopback_environment() -> Any:
    # Building it lists the installed packages (0.3 s): once a process. The
    # listing is a file in a temporary directory that stays until the process ends.
    return _loopback_environment(_options())


def _set_loopback(pipeline: Any, env_id: str, loopback: Any) -> None:
    env = pipeline.components.environments[env_id]
    hints = dict(env.resource_hints)
    env.CopyFrom(loopback)
    for k, v in hints.items():  # resource hints are the pipeline's, keep them
        env.resource_hints[k] = v


def swap_environment(proto: Any, env_id: str, options: Any = None) -> Any:
    """A copy of ``proto`` whose environment ``env_id`` (DOCKER, PROCESS, EXTERNAL,
    ...) is replaced by the LOOPBACK one; everything else, transforms' environment
    ids included, is unchanged."""
    if env_id not in proto.components.environments:
        raise KeyError(f"no environment {env_id!r}; have {sorted(proto.components.environments)}")
    out = type(proto)()
    out.CopyFrom(proto)
    _set_loopback(out, env_id, loopback_environment(options))
    return out


def environments_by_urn(proto: Any, urn: str) -> list[str]:
    return sorted(k for k, e in proto.components.environments.items() if e.urn == urn)


# --- submission -----------------------------------------------------------------------


@dataclass
class JobResult:
    job_id: str | None
    state: str  # a JobState name (DONE, FAILED, ...), or the last one seen on a timeout
    errors: list[str]  # JOB_MESSAGE_ERROR texts (the runner's traceback on failure)
    messages: list[tuple[str, str]] = field(repr=False)  # (importance, text), all of them
    states: list[str]  # every state seen, in order
    seconds: float
    timed_out: bool = False
    # unique names of the transforms in the bundles the in-process worker ran
    executed: set[str] = field(default_factory=set, repr=False)
    submitted: Any = field(default=None, repr=False)  # the proto as sent (environments swapped)

    @property
    def ok(self) -> bool:
        return self.state == "DONE" and not self.timed_out

    def describe(self, chars: int = 2500) -> str:
        """One line of state, then each distinct error's tail (the job service
        sends a failure twice: the traceback, and its log record of it)."""
        head = f"job {self.job_id}: {self.state}{' (timed out)' if self.timed_out else ''} after {self.seconds:.1f} s"
        seen: set[str] = set()
        parts = [head]
        for e in self.errors:
            last = e.strip().splitlines()[-1] if e.strip() else ""
            if last in seen:
                continue
            seen.add(last)
            parts.append(e if len(e) <= chars else "..." + e[-chars:])
        return "\n".join(parts)


class _ExecutedTransforms:
    """Records the unique names of every transform in the bundles the in-process
    SDK worker processes (``BundleProcessor.process_bundle``), i.e. what the
    runner actually had executed."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def recording(self) -> Iterator[set[str]]:
        from apache_beam.runners.worker import bundle_processor

        original = bundle_processor.BundleProcessor.process_bundle
        names, lock = self.names, self._lock

        def process_bundle(bp: Any, *args: Any, **kwargs: Any) -> Any:
            with lock:
                names.update(t.unique_name for t in bp.process_bundle_descriptor.transforms.values())
            return original(bp, *args, **kwargs)

        bundle_processor.BundleProcessor.process_bundle = process_bundle
        try:
            yield names
        finally:
            bundle_processor.BundleProcessor.process_bundle = original


_SUBMIT_LOCK = threading.Lock()  # the executed-transform recorder patches a class


@contextlib.contextmanager
def _worker_process_env(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    from conftest import environ

    path, pythonpath = os.environ.get("PATH", ""), os.environ.get("PYTHONPATH")
    with environ({
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), path]),
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), pythonpath) if p),
    }):
        yield


def submit(
    proto: Any,
    job_endpoint: str,
    timeout: float = 180.0,
    replace_default: bool = True,
    optimize: bool = False,
    stage_artifacts: bool = True,
    process_worker: bool = False,
) -> JobResult:
    """Submit a pipeline proto through the Job API and follow it to a terminal
    state (at most ``timeout`` seconds, then cancelled and ``timed_out``).

    * ``replace_default``: every ``beam:env:default:v1`` placeholder environment
      becomes the LOOPBACK one (other environments are left alone: use
      :func:`swap_environment` first);
    * LOOPBACK environments are started and replaced by
      ``PortableRunner.start_and_replace_loopback_environments``: a
      ``BeamFnExternalWorkerPoolServicer`` in this process, the environment made
      ``beam:env:external:v1`` with its address;
    * ``optimize``: apply PortableRunner's pre-submission optimization
      (``_optimize_pipeline``: pack and lift combiners, sort stages) as
      ``PortableRunner.run_portable_pipeline`` does; off by default, so the job
      service gets the proto as given, requirements included;
    * ``JobServiceHandle.submit``: DescribePipelineOptions, Prepare, artifact
      staging (``offer_artifacts`` to the endpoint Prepare returns; skipped with
      ``stage_artifacts=False``), Run, then the state and message streams;
    * ``process_worker``: the worker pool runs each SDK worker in a fresh
      ``python`` process (Beam's ``use_loopback_process_worker`` experiment; this
      interpreter's directory goes first on PATH and the repository on
      PYTHONPATH while the job runs), so nothing the submitting process imported
      helps; ``executed`` stays empty then.
    """
    import grpc
    from apache_beam.portability.api import beam_job_api_pb2, beam_job_api_pb2_grpc
    from apache_beam.runners.portability import portable_runner

    options = _options(job_endpoint, timeout, optimize, process_worker)
    pipeline = type(proto)()
    pipeline.CopyFrom(proto)
    if replace_default:
        loopback = loopback_environment()
        for env_id in environments_by_urn(pipeline, DEFAULT_ENV_URN):
            _set_loopback(pipeline, env_id, loopback)

    start = time.monotonic()
    messages: list[tuple[str, str]] = []
    errors: list[str] = []
    states: list[str] = []
    state_name = "UNSPECIFIED"
    job_id = None
    timed_out = False
    recorder = _ExecutedTransforms()
    importance_name = beam_job_api_pb2.JobMessage.MessageImportance.Name
    state_of = beam_job_api_pb2.JobState.Enum.Name

    channel = None
    with _SUBMIT_LOCK, recorder.recording(), _worker_process_env(process_worker):
        cleanups = portable_runner.PortableRunner.start_and_replace_loopback_environments(
            pipeline, options
        )
        try:
            if optimize:
                pipeline = portable_runner.PortableRunner._optimize_pipeline(pipeline, options)
            # job_server.ExternalJobServer(endpoint, timeout).start(), on a channel
            # this function closes.
            channel = grpc.insecure_channel(job_endpoint)
            grpc.channel_ready_future(channel).result(timeout=timeout)
            stub = beam_job_api_pb2_grpc.JobServiceStub(channel)
            handle = portable_runner.JobServiceHandle(stub, options)
            if not stage_artifacts:
                handle.stage = lambda *args, **kwargs: None  # type: ignore[method-assign]
            submitted = copy.deepcopy(pipeline)
            job_id, message_stream, state_stream = handle.submit(pipeline)

            def read_messages() -> None:
                try:
                    for m in message_stream:
                        if m.HasField("message_response"):
                            r = m.message_response
                            messages.append((importance_name(r.importance), r.message_text))
                            if r.importance == beam_job_api_pb2.JobMessage.JOB_MESSAGE_ERROR:
                                errors.append(r.message_text)
                except grpc.RpcError:
                    pass  # cancelled at the end, or the stream's deadline

            reader = threading.Thread(target=read_messages, name="job-messages", daemon=True)
            reader.start()
            try:
                for event in state_stream:
                    state_name = state_of(event.state)
                    states.append(state_name)
                    if state_name in TERMINAL_STATES:
                        break
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise
                timed_out = True
            if timed_out or state_name not in TERMINAL_STATES:
                timed_out = True
                with contextlib.suppress(grpc.RpcError):
                    stub.Cancel(beam_job_api_pb2.CancelJobRequest(job_id=job_id), timeout=10)
            reader.join(10)  # the last messages arrive just after the terminal state
            message_stream.cancel()
        finally:
            if channel is not None:
                channel.close()
            for cleanup in cleanups:  # stops the worker pool
                with contextlib.suppress(Exception):
                    cleanup()
    return JobResult(
        job_id=job_id,
        state=state_name,
        errors=list(errors),
        messages=list(messages),
        states=states,
        seconds=time.monotonic() - start,
        timed_out=timed_out,
        executed=set(recorder.names),
        submitted=submitted,
    )


# --- Beam Java's PipelineValidator ----------------------------------------------------


def java_validator_problem() -> str | None:
    """Why the Java validator cannot run here, or None."""
    if shutil.which("java") is None:
        return "no java on PATH"
    if not JAVA_VALIDATOR.is_file():
        return f"no Java validator at {JAVA_VALIDATOR}"
    if not (JAVA_VALIDATOR.parent / "validator.jar").is_file():
        return f"no {JAVA_VALIDATOR.parent / 'validator.jar'}"
    return None


def require_java_validator() -> None:
    """``pytest.skip`` unless ``java`` and the validator are there; in CI
    (``CI`` set) a missing validator fails instead, so the check cannot
    silently stop running."""
    problem = java_validator_problem()
    if problem and os.environ.get("CI"):
        pytest.fail(f"Beam Java validator unavailable in CI: {problem}")
    if problem:
        pytest.skip(f"Beam Java validator unavailable: {problem}")


def java_validate(paths: Iterable[str | os.PathLike[str]], timeout: float = 300.0) -> tuple[bool, str]:
    """Beam Java's ``PipelineValidator.validate`` over binary pipeline protos:
    ``(every file OK, the validator's output)``; one JVM for all of them."""
    paths = [str(p) for p in paths]
    if not paths:
        return True, ""
    proc = subprocess.run(
        ["bash", str(JAVA_VALIDATOR), *paths],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(REPO),
    )
    output = (proc.stdout + proc.stderr).strip()
    return proc.returncode == 0, output


def java_verdicts(output: str) -> dict[str, str]:
    """``{path: "OK" | "FAIL <reason>"}`` from the validator's output: one line a
    file, ``<path>: OK`` or ``<path>: FAIL <exception chain>`` (the README's
    ``OK <path>`` / ``FAIL <path>: ...`` form is accepted too)."""
    verdicts: dict[str, str] = {}
    for line in output.splitlines():
        m = re.match(r"^(.*?): (OK|FAIL)(?: (.*))?$", line)
        if m:
            verdicts[m.group(1)] = m.group(2) + (f" {m.group(3)}" if m.group(3) else "")
            continue
        m = re.match(r"^(OK|FAIL) (.*?)(?:: (.*))?$", line)
        if m:
            verdicts[m.group(2)] = m.group(1) + (f" {m.group(3)}" if m.group(3) else "")
    return verdicts


def assert_java_valid(paths: Iterable[str | os.PathLike[str]]) -> None:
    """Every file passes Beam Java's PipelineValidator (skips without java)."""
    require_java_validator()
    paths = [str(p) for p in paths]
    ok, output = java_validate(paths)
    verdicts = java_verdicts(output)
    bad = {p: verdicts.get(p, "no verdict") for p in paths if verdicts.get(p) != "OK"}
    assert ok and not bad, f"Beam Java PipelineValidator rejects: {bad}\n{output[-4000:]}"
