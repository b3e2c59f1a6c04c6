"""Temporary files of atomic writes, and sweeping those of writers that died.

``write_atomic`` writes ``.<name>.<writer pid>.XXXXXXXX.tmp`` beside the
output and renames it into place; a writer killed mid-write (SIGKILL, SIGTERM)
leaves it behind. The pid in the name tells, later, whether its writer is
gone. Standard library only: batch imports this from ``--help``'s path.
"""

from __future__ import annotations

import contextlib
import os
import re

# ``.<base>.<writer pid>.<mkstemp's 8 of [a-z0-9_]>.tmp``
TEMP_NAME = re.compile(r"\.(?P<base>.+)\.(?P<pid>[0-9]+)\.[a-z0-9_]{8}\.tmp")


def temp_prefix(base: str) -> str:
    return f".{base}.{os.getpid()}."


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process here (one we may not signal counts;
    a zombie does not: it writes nothing more)."""
    if pid <= 0:
        return True  # not a process id: never sweep on it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has exited and awaits its parent (Linux's /proc; False
    where there is none). A writer killed mid-write stays one until its new
    parent reaps it, which in a container whose init never reaps is forever:
    signalling it still succeeds, so without this its temp file was never swept."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2:][:1] in (b"Z", b"X")


def sweep_dead_writers(directory: str, base: str) -> None:
    """Remove temp files of ``base`` whose writer process is gone."""
    try:
        with os.scandir(directory) as entries:
            names = [e.name for e in entries if e.name.startswith(f".{base}.") and e.name.endswith(".tmp")]
    except OSError:
        return
    for name in names:
        m = TEMP_NAME.fullmatch(name)
        if m and m["base"] == base and not pid_alive(int(m["pid"])):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))
