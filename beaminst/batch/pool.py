"""Running jobs in a local process pool.

Workers come from a forkserver (never plain fork: the parent may have
imported the Beam SDK, whose grpc threads are not fork-safe) and exit when
the parent dies (``lifecycle``). A worker that dies itself (crash,
out-of-memory kill) breaks the whole pool and takes every unfinished job with
it; those are rerun in fresh pools, halving the set on each break, so the
file that kills its worker ends up alone with an error and every other file
still completes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from beaminst.batch.jobs import Job, Outcome, failed, work
from beaminst.batch.lifecycle import parent_lifeline, watch_parent


def run_local(jobs: list[Job], workers: int, done: Callable[[Outcome], None]) -> list[Outcome]:
    """Run ``jobs`` (in this process for one worker or one job), calling
    ``done`` with each outcome as it arrives; returns them all."""
    outcomes: list[Outcome] = []

    def finish(outcome: Outcome) -> None:
        outcomes.append(outcome)
        done(outcome)

    if workers <= 1 or len(jobs) <= 1:
        preload()
        for job in jobs:
            finish(work(job))
        return outcomes
    with parent_lifeline() as lifeline:
        todo = [jobs]
        while todo:
            lost = _pool_round(todo.pop(), workers, lifeline, finish)
            if len(lost) == 1:
                (job,) = lost
                finish(failed(job, f"{job['input']}: a worker process died rewriting this file "
                                   "(crashed, or killed: out of memory?)"))
            elif lost:
                half = len(lost) // 2
                todo += [lost[half:], lost[:half]]
    return outcomes


# What every file needs, never the Beam SDK (with the templates on disk no
# file needs it): imported once in the fork server, so each worker starts with
# them and its first file costs what the later ones do.
WORKER_PRELOAD = (
    "beaminst.commands.api", "beaminst.passes.instrument", "beaminst.passes.background_caching", "beaminst.graft",
    "google.protobuf.wrappers_pb2", "beaminst.graph.gcpause",  # imported lazily by every rewrite
)


def preload() -> None:
    """Import what every file needs before the first one (a no-op where the
    fork server did), so no file's time includes it."""
    import importlib

    from beaminst.graft import store
    from beaminst.model.beamproto import runner_api

    for module in WORKER_PRELOAD:
        importlib.import_module(module)
    runner_api()  # protobuf and Beam's generated modules (not the SDK)
    store.environment()  # the template store's key prefix: Beam's version, beaminst's source digest


def _init_worker(log_level: int, lifeline: Connection) -> None:
    import logging
    import signal

    # Ctrl-C is the parent's to handle (a terminal sends it to the whole
    # process group): it lets the files in flight finish and cancels the rest.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    preload()
    watch_parent(lifeline)
    # Workers do not inherit the CLI's logging setup; without this the SDK's
    # import-time warnings would print once per worker.
    logging.basicConfig(level=log_level, format="beaminst: %(name)s: %(message)s")


def _pool_context() -> Any:
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(WORKER_PRELOAD))
    _start_forkserver_deaf_to_ctrl_c()
    return ctx


def _start_forkserver_deaf_to_ctrl_c() -> None:
    """Start the fork server (if it is not running) with SIGINT ignored, a
    disposition exec keeps: the server and every worker it forks then leave a
    terminal's Ctrl-C to the parent from their first instruction (a worker's
    initializer comes too late for one that is still starting, and printed a
    KeyboardInterrupt traceback). SIGINT is blocked meanwhile, so a Ctrl-C in
    that moment waits for the parent's own handler instead of being lost."""
    import signal
    import threading
    from multiprocessing import forkserver

    if threading.current_thread() is not threading.main_thread():  # signal.signal is the main thread's
        forkserver.ensure_running()
        return
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            forkserver.ensure_running()
        finally:
            signal.signal(signal.SIGINT, handler)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _pool_round(jobs: list[Job], workers: int, lifeline: Connection, finish: Callable[[Outcome], None]) -> list[Job]:
    """One process pool over ``jobs``; returns the jobs lost to a dead worker."""
    import logging
    from concurrent.futures import Future, ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)),
        mp_context=_pool_context(),
        initializer=_init_worker,
        initargs=(logging.getLogger().getEffectiveLevel(), lifeline),
    )
    lost: list[Job] = []
    # A future counts as seen only once its outcome is recorded: an interrupt
    # between the two used to leave a written file unrecorded (the re-run
    # rewrote it), which the SIGINT test caught now and then.
    seen: set[Future[Outcome]] = set()
    futures: dict[Future[Outcome], Job] = {}
    try:
        for job in jobs:
            futures[pool.submit(work, job)] = job
        for fut in as_completed(futures):
            job = futures[fut]
            try:
                outcome = fut.result()
            except BrokenProcessPool:
                lost.append(job)
                seen.add(fut)
                continue
            except Exception as e:  # e.g. a job that cannot be sent to a worker
                if os.environ.get("BEAMINST_DEBUG"):
                    raise
                outcome = failed(job, f"{job['input']}: worker failed: {type(e).__name__}: {e}")
            finish(outcome)
            seen.add(fut)
    except BaseException:  # interrupted: files in flight finish, the rest are cancelled
        pool.shutdown(wait=True, cancel_futures=True)
        for fut in futures:  # what finished meanwhile was written: report it (and record it)
            if fut not in seen and fut.done() and not fut.cancelled() and fut.exception() is None:
                finish(fut.result())
        raise
    pool.shutdown(wait=True)
    order = {id(job): i for i, job in enumerate(jobs)}
    return sorted(lost, key=lambda job: order[id(job)])
