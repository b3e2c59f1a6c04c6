"""Submitting a proto through the Job API, as PortableRunner submits one.

The proto goes as it is (no ``Pipeline.from_runner_api`` round trip, no
pre-submission optimization), with PortableRunner's own machinery:

* only the placeholder environment (``beam:env:default:v1``) is replaced, by
  the one ``Environment.from_options`` builds for ``--environment_type`` /
  ``--environment_config`` (default LOOPBACK for a job server on this machine,
  as the Flink, Spark and Prism runners default it, else Beam's DOCKER); the
  placeholder's resource hints are kept; options given for a proto with no
  placeholder replace nothing, and the run warns so;
* ``PortableRunner.start_and_replace_loopback_environments`` starts the
  LOOPBACK worker pool in this process and points the environment at it;
* ``JobServiceHandle.submit``: DescribePipelineOptions, Prepare, artifact
  staging, Run; then the state and message streams are followed (reopened
  when their deadline, Beam's ``--job_server_timeout``, runs out) and Cancel
  stops the job.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

from beaminst.model import urns
from beaminst.run.job import ERROR, TERMINAL, UNKNOWN, WARNING, Job
from beaminst.run.local import RunError, beam_options

CONNECT_TIMEOUT = 15.0  # seconds to wait for the job server, unless --job_server_timeout says
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0", "::", ""})
_LISTED = 3  # environments a warning names
_ENDPOINT = re.compile(r"^(?P<host>\[[^\]]*\]|[^:\s]*):(?P<port>\d{1,5})$")


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) -> ``(host, port)``; RunError otherwise."""
    m = _ENDPOINT.match(endpoint)
    if not m or not 0 < int(m["port"]) < 65536:
        raise RunError(f"--job-endpoint {endpoint!r}: expected HOST:PORT, e.g. localhost:8099")
    return m["host"].strip("[]"), int(m["port"])


def default_environment_type(endpoint: str) -> str:
    """LOOPBACK for a job server on this machine (its workers can reach this
    process), else Beam's own default, DOCKER."""
    host, _ = parse_endpoint(endpoint)
    return "LOOPBACK" if host.lower() in _LOCAL_HOSTS or host.startswith("127.") else "DOCKER"


def environment_choice(
    endpoint: str, environment_type: str | None, environment_config: str | None, pipeline_args: tuple[str, ...],
) -> tuple[str, str | None, tuple[str, ...]]:
    """The ``--environment_type`` and ``--environment_config`` to submit with,
    and the options that chose them (none: defaulted): ``--environment-type`` /
    ``--environment-config``, else Beam's own among ``pipeline_args``
    (``--environment_type``, ``--environment_config``, ``--environment_options``),
    else the default for ``endpoint``. A config LOOPBACK would ignore is refused."""
    from apache_beam.options.pipeline_options import PortableOptions

    given = beam_options(pipeline_args, False).view_as(PortableOptions)
    chosen_type = environment_type or given.environment_type
    config = environment_config if environment_config is not None else given.environment_config
    env_type = chosen_type or default_environment_type(endpoint)
    if env_type in ("LOOPBACK", urns.ENV_LOOPBACK) and config is not None:  # as Beam's from_options spells it
        why = "--environment-type LOOPBACK" if chosen_type else "LOOPBACK, the default for a job server on this machine,"
        raise RunError(
            f"--environment-config {config!r} not used: {why} runs the workers in this process and takes no config; "
            "name the environment it configures with --environment-type (DOCKER, PROCESS or EXTERNAL)"
        )
    named = (
        ("--environment-type" if environment_type else "--environment_type" if given.environment_type else ""),
        ("--environment-config" if environment_config is not None
         else "--environment_config" if given.environment_config is not None else ""),
        "--environment_options" if given.environment_options else "",
    )
    return env_type, config, tuple(n for n in named if n)


def submission_options(
    endpoint: str, environment_type: str, environment_config: str | None,
    pipeline_args: tuple[str, ...], streaming: bool,
) -> Any:
    args = [*pipeline_args, "--runner=PortableRunner", f"--job_endpoint={endpoint}", f"--environment_type={environment_type}"]
    if environment_config is not None:
        args.append(f"--environment_config={environment_config}")
    if not any(a.startswith("--sdk_location") for a in pipeline_args):
        args.append("--sdk_location=container")  # the SDK is in the worker's container, as PortableRunner assumes
    return beam_options(tuple(args), streaming)


def placeholder_replaced(proto: Any, options: Any) -> tuple[Any, list[str]]:
    """A copy of ``proto`` whose placeholder environments are the one
    ``options`` describe (resource hints kept); the ids replaced that
    something runs in (one nothing names changes nothing: the options are
    then not used, and the caller says so)."""
    from beaminst.graft.environments import environment_from_options

    out = type(proto)()
    out.CopyFrom(proto)
    ids = sorted(k for k, e in out.components.environments.items() if e.urn == urns.ENV_DEFAULT)
    if not ids:
        return out, []
    try:
        env = environment_from_options(options)
    except ValueError as e:
        raise RunError(f"--environment-type/--environment-config: {' '.join(str(e).split())}") from None
    for env_id in ids:
        target = out.components.environments[env_id]
        hints = dict(target.resource_hints)
        target.CopyFrom(env)
        for k, v in hints.items():
            target.resource_hints[k] = v
    c = proto.components
    named = {t.environment_id for t in c.transforms.values()} | {w.environment_id for w in c.windowing_strategies.values()}
    return out, [i for i in ids if i in named]


def unused_environment_warning(proto: Any, options: tuple[str, ...] = ("--environment-type",)) -> str:
    """What a run says when the environment ``options`` given replace
    nothing: the environments the transforms run in instead (a few)."""
    used = sorted({t.environment_id for t in proto.components.transforms.values()
                   if t.environment_id in proto.components.environments})
    named = [f"{e!r} ({proto.components.environments[e].urn})" for e in used[:_LISTED]]
    more = f" and {len(used) - _LISTED} more" if len(used) > _LISTED else ""
    runs_in = f"its transforms run in {', '.join(named)}{more}" if named else "its transforms name no environment"
    return (
        f"{' / '.join(options)} not used: nothing in the pipeline runs in a placeholder environment "
        f"({urns.ENV_DEFAULT}) to replace, {runs_in}; to change that, re-run beaminst instrument --environment-type "
        "... on the original (for an environment instrument added), set it where the pipeline is built, or edit the proto"
    )


def connect_wait(options: Any) -> float:
    """Seconds to wait for the job server to answer: ``--job_server_timeout``
    when the user set it (to anything but the installed Beam's default: 60 s
    in older Beams, 300 s in 2.77), else :data:`CONNECT_TIMEOUT`."""
    from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions

    given = options.view_as(PortableOptions).job_server_timeout
    default = PipelineOptions([]).view_as(PortableOptions).job_server_timeout
    return CONNECT_TIMEOUT if given == default else float(given)


def submit(proto: Any, endpoint: str, options: Any) -> PortableJob:
    """Submit ``proto`` (environments already chosen) and start following it."""
    import grpc
    from apache_beam.options.pipeline_options import StandardOptions
    from apache_beam.portability.api import beam_job_api_pb2_grpc
    from apache_beam.runners.portability import portable_runner

    pipeline = type(proto)()
    pipeline.CopyFrom(proto)
    # As run_portable_pipeline: no runner in the options the job server sees.
    options.view_as(StandardOptions).runner = None
    wait = connect_wait(options)
    channel = grpc.insecure_channel(endpoint)
    try:
        grpc.channel_ready_future(channel).result(timeout=wait)
    except grpc.FutureTimeoutError:
        channel.close()
        raise RunError(f"no job service answering at {endpoint} (waited {wait:g} s)") from None
    job = PortableJob(channel, beam_job_api_pb2_grpc.JobServiceStub(channel), endpoint)
    try:
        job.cleanups = portable_runner.PortableRunner.start_and_replace_loopback_environments(pipeline, options)
        handle = portable_runner.JobServiceHandle(job.stub, options)
        try:
            job_id, message_stream, state_stream = handle.submit(pipeline)
        except grpc.RpcError as e:  # refused at Prepare or Run: the job never started
            job.add_message(ERROR, e.details() or str(e.code()))
            job.set_state("FAILED")
            return job
        job.follow(job_id, message_stream, state_stream)
    except BaseException:
        job.close()
        raise
    return job


class PortableJob(Job):
    runner = "PortableRunner"

    def __init__(self, channel: Any, stub: Any, endpoint: str) -> None:
        super().__init__()
        self.channel = channel
        self.stub = stub
        self.endpoint = endpoint
        self.cleanups: list[Callable[[], Any]] = []
        self._closing = threading.Event()
        self._streams: list[Any] = []
        self._threads: list[threading.Thread] = []

    def follow(self, job_id: str, message_stream: Any, state_stream: Any) -> None:
        from apache_beam.portability.api import beam_job_api_pb2 as japi

        self.job_id = job_id
        state_name = japi.JobState.Enum.Name
        importance_name = japi.JobMessage.MessageImportance.Name

        # A reopened stream starts over from the job's first event: skip what was seen.
        last_event = [(-1, -1)]
        seen_messages: set[str] = set()

        def on_state(event: Any) -> bool:
            stamp = (event.timestamp.seconds, event.timestamp.nanos)
            if event.HasField("timestamp") and stamp <= last_event[0]:
                return False
            last_event[0] = stamp
            self.set_state(state_name(event.state))
            return state_name(event.state) in TERMINAL

        def on_message(m: Any) -> bool:
            if m.HasField("message_response"):
                r = m.message_response
                if r.message_id:
                    if r.message_id in seen_messages:
                        return False
                    seen_messages.add(r.message_id)
                self.add_message(importance_name(r.importance), r.message_text)
            return False

        req = japi.GetJobStateRequest(job_id=job_id)
        self._reader("job-state", state_stream, lambda: self.stub.GetStateStream(req), on_state, lost=True)
        mreq = japi.JobMessagesRequest(job_id=job_id)
        self._reader("job-messages", message_stream, lambda: self.stub.GetMessageStream(mreq), on_message, lost=False)

    def _reader(
        self, name: str, first: Any, reopen: Callable[[], Any], on_item: Callable[[Any], bool], lost: bool
    ) -> None:
        import grpc

        def read() -> None:
            stream = first
            while not self._closing.is_set():
                self._streams.append(stream)
                try:
                    for item in _items(stream):
                        if on_item(item):
                            return
                    return
                except grpc.RpcError as e:
                    if self._closing.is_set() or self.state in TERMINAL:
                        return
                    if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                        stream = reopen()  # Beam opens the streams with --job_server_timeout
                        continue
                    if lost:
                        self.add_message(ERROR, f"lost the job service at {self.endpoint}: {e.details() or e.code()}")
                        self.set_state(UNKNOWN)
                    return

        t = threading.Thread(target=read, name=name, daemon=True)
        self._threads.append(t)
        t.start()

    def cancel(self) -> None:
        import grpc
        from apache_beam.portability.api import beam_job_api_pb2 as japi

        if self.job_id is None:
            return
        try:
            self.stub.Cancel(japi.CancelJobRequest(job_id=self.job_id), timeout=10)
        except grpc.RpcError as e:
            self.add_message(WARNING, f"Cancel refused: {e.details() or e.code()}")

    def close(self) -> None:
        # The last messages arrive just after the terminal state.
        for t in self._threads[1:]:
            t.join(2 if self.state in TERMINAL else 0)
        self._closing.set()
        for s in self._streams:
            with contextlib.suppress(Exception):
                s.cancel()
        with contextlib.suppress(Exception):
            self.channel.close()
        for cleanup in self.cleanups:  # stops the LOOPBACK worker pool
            with contextlib.suppress(Exception):
                cleanup()
        self.cleanups = []


def _items(stream: Any) -> Iterator[Any]:
    yield from stream
