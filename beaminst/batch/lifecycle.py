"""A batch's processes end with it.

* Workers exit when the parent dies, even by SIGKILL: each holds the read end
  of a pipe only the parent can write to, and a daemon thread blocked on it
  sees EOF when the parent is gone. (Polling ``os.getppid()`` would not do:
  forkserver workers are the forkserver's children.) The forkserver and
  Python's resource tracker then exit by themselves: each waits for EOF on a
  pipe that the parent and the workers hold.
* SIGTERM stops a batch as Ctrl-C does: files being rewritten finish, the
  rest are cancelled, the CLI exits 2 with "interrupted".
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

PARENT_GONE_EXIT = 3  # a worker's exit status when its parent died


@contextlib.contextmanager
def parent_lifeline() -> Iterator[Connection]:
    """A pipe whose write end only this process holds, for the whole block;
    yields the read end, to give to workers (see :func:`watch_parent`)."""
    import multiprocessing

    # Neither end is inheritable; forkserver and spawn workers get the read
    # end only, passed explicitly (a Connection pickled while spawning).
    reader, writer = multiprocessing.Pipe(duplex=False)
    try:
        yield reader
    finally:
        writer.close()
        reader.close()


def watch_parent(lifeline: Connection) -> None:
    """In a worker: exit at once when the parent's end of ``lifeline`` closes.
    The parent closes it only after the pool has shut down, so in a normal
    run the worker has already exited; otherwise the parent is gone and
    nobody waits for what the worker would write."""

    def wait() -> None:
        with contextlib.suppress(EOFError, OSError):
            while True:
                lifeline.recv_bytes()  # the parent never sends: returns only at EOF
        os._exit(PARENT_GONE_EXIT)

    threading.Thread(target=wait, name="beaminst-parent-watch", daemon=True).start()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt in the main thread,
    so it takes Ctrl-C's path. Elsewhere than the main thread, no change."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
