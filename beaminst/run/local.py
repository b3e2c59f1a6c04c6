"""Running a proto on Beam's Python runners in this process.

As Interactive Beam runs its jobs: the URN registrations the proto needs are
imported first (``Pipeline.from_runner_api`` only knows the transforms whose
module registered their URN: TestStream's is not imported by
``apache_beam``), streaming is switched on when the proto has UNBOUNDED
PCollections, then ``Pipeline.from_runner_api(proto, runner, options).run()``
on the runner the options name (DirectRunner by default: the FnApiRunner for
batch, the BundleBasedDirectRunner for streaming, which can be cancelled).

The runner is marked interactive, as Interactive Beam marks its underlying
runner (``InteractiveRunner.__init__``, ``RecordingManager.record_pipeline``:
``runner.is_interactive()`` where the runner has it). On the DirectRunner
(Beam's ``SwitchingDirectRunner``) that is what keeps it off Prism, which it
would otherwise try first for every pipeline Prism supports ("Prism currently
does not support interactive mode"), downloading the binary from GitHub and
falling back when it cannot: a network attempt and a delay on every run. Its
choice between the FnApiRunner and the BundleBasedDirectRunner is unchanged.
Prism when asked for: ``--runner=PrismRunner`` (``--prism_location`` for a
binary on this machine).
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import traceback
from typing import Any

from beaminst.errors import BeaminstError
from beaminst.graft.reified import retype_cache_holders
from beaminst.model import urns
from beaminst.run.job import ERROR, TERMINAL, WARNING, Job, sdk_errors_as_messages

# URN -> the module whose import registers it for from_runner_api.
REGISTERING_MODULES = {urns.TEST_STREAM: "apache_beam.testing.test_stream"}
DEFAULT_RUNNER = "DirectRunner"


class RunError(BeaminstError):
    """The pipeline cannot be built or started on the chosen runner."""


def register_urns(proto: Any) -> list[str]:
    """Import the modules that register the URNs ``proto`` uses; their names."""
    used = {t.spec.urn for t in proto.components.transforms.values()}
    modules = sorted({m for urn, m in REGISTERING_MODULES.items() if urn in used})
    for module in modules:
        importlib.import_module(module)
    return modules


def beam_options(pipeline_args: tuple[str, ...], streaming: bool) -> Any:
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    options = PipelineOptions(list(pipeline_args))
    if streaming:
        options.view_as(StandardOptions).streaming = True
    return options


def start_local(proto: Any, pipeline_args: tuple[str, ...], streaming: bool) -> LocalJob:
    """Build the pipeline from ``proto`` and start running it in a thread."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import StandardOptions
    from apache_beam.runners.runner import create_runner

    options = beam_options(pipeline_args, streaming)
    name = options.view_as(StandardOptions).runner or DEFAULT_RUNNER
    roots = len(proto.root_transform_ids)
    if roots != 1:
        # Beam's Python from_runner_api unpacks exactly one root; the
        # TypeScript, Go and Java SDKs write their top-level transforms as roots.
        raise RunError(
            f"the pipeline has {roots} root transforms, as SDKs other than Python's write them, and the "
            f"{name} in this process rebuilds only Python SDK pipelines: run it through the Job API, "
            "--job-endpoint HOST:PORT, on a runner that starts that SDK's workers"
        )
    register_urns(proto)
    try:
        runner = create_runner(name)
    except (ValueError, ImportError) as e:
        raise RunError(f"--runner {name}: {_one_line(e)}") from None
    if hasattr(runner, "is_interactive"):  # as Interactive Beam does: see the module docstring
        runner.is_interactive()
    try:
        pipeline = beam.Pipeline.from_runner_api(proto, runner, options)
    except Exception as e:  # unpickling the pipeline's functions, unknown URNs, ...
        raise RunError(f"cannot rebuild the pipeline for the {name}: {_describe(e)}") from None
    retype_cache_holders(pipeline)  # the round trip derives coders from types again
    job = LocalJob(pipeline, name)
    job.start()
    return job


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _describe(e: BaseException) -> str:
    text = f"{type(e).__name__}: {_one_line(e)}"
    if isinstance(e, ModuleNotFoundError):
        from beaminst.cache.cachefs import extra_install_hint

        hint = extra_install_hint(e.name)
        text += (f" (the pipeline's IO needs an extra of Beam's: {hint}, in the same environment as beaminst)" if hint
                 else " (the pipeline's pickles name a module this Python cannot import: put it on PYTHONPATH)")
    return text


class LocalJob(Job):
    def __init__(self, pipeline: Any, runner: str) -> None:
        super().__init__()
        self.runner = runner
        self._pipeline = pipeline
        self._result: Any = None
        self._cancelled = False
        self._cancel_requested = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="beaminst-run", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        with sdk_errors_as_messages(self):
            self._run_to_end()

    def _run_to_end(self) -> None:
        try:
            self.set_state("RUNNING")  # batch runners run inside run() itself
            result = self._pipeline.run()
            with self._lock:
                self._result = result
                pending = self._cancel_requested
            if pending and str(result.state) not in TERMINAL:
                self._cancel(result)  # asked for while run() was still starting the job
            self._report(str(result.state))
            result.wait_until_finish()
            self._report(str(result.state))
        except Exception as e:
            self.add_message(ERROR, "".join(traceback.format_exception_only(type(e), e)).strip())
            self._report("FAILED")

    def _report(self, state: str) -> None:
        with self._lock:
            if self._cancelled:  # what the runner says after a cancel is not news
                return
        self.set_state(state)

    def cancel(self) -> None:
        """Cancel now, or as soon as ``run()`` returns the job (a batch runner
        runs the whole job inside ``run()``: it cannot be cancelled)."""
        with self._lock:
            result = self._result
            if result is None:
                self._cancel_requested = True
        if result is not None:
            self._cancel(result)

    def _cancel(self, result: Any) -> None:
        with self._lock:
            self._cancelled = True
        try:
            result.cancel()
        except NotImplementedError:  # Beam's background caching job ignores this too
            with self._lock:
                self._cancelled = False
            self.add_message(WARNING, f"the {self.runner} cannot cancel a job")
            return
        self.set_state(str(result.state))
        _release_waiter(result)

    def close(self) -> None:
        with self._lock:
            cancelled = self._cancelled
        self._thread.join(1 if cancelled else 5)


def _release_waiter(result: Any) -> None:
    """Wake this job's thread, blocked in ``DirectPipelineResult.wait_until_finish``:
    after ``cancel`` the BundleBasedDirectRunner's executor never posts the
    update that call waits for (Beam 2.77), so the thread would wait forever."""
    inner = getattr(getattr(result, "_executor", None), "_executor", None)
    updates = getattr(inner, "visible_updates", None)
    update = getattr(type(inner), "_VisibleExecutorUpdate", None)
    if updates is not None and update is not None:
        with contextlib.suppress(Exception):
            updates.offer(update())
