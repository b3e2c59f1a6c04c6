"""Temporary files of writers that died, removed by the next batch over DEST.

SIGKILL during an atomic write leaves ``.<name>.<pid>.XXXXXXXX.tmp`` beside
the output (``protoio.write_atomic``), and a killed ``--runner`` batch leaves
its ``.beaminst-batch-results-<pid>-*`` files and Beam's ``beam-temp-*``
directory for them. A batch removes those of the files it is about to write
whose writer pid is not a live process on this machine: never another live
run's, never a file it would not have written itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from collections.abc import Iterable

from beaminst.model.tempfiles import TEMP_NAME, pid_alive

RESULTS_PREFIX = ".beaminst-batch-results-"

_RESULTS = re.compile(rf"(?:beam-temp-)?{re.escape(RESULTS_PREFIX)}(?P<pid>[0-9]+)-[0-9a-f]{{32}}.*")

log = logging.getLogger(__name__)


def results_prefix(dest: str, run_id: str) -> str:
    """Where a ``--runner`` batch's results go; the pid lets a later run sweep them."""
    return os.path.join(os.path.abspath(dest), f"{RESULTS_PREFIX}{os.getpid()}-{run_id}")


def stale(name: str, bases: set[str], results: bool) -> bool:
    """Whether ``name`` is a temp file of one of ``bases`` (or, with
    ``results``, a results leftover) whose writer pid is dead."""
    m = TEMP_NAME.fullmatch(name)
    if m and m["base"] in bases:
        return not pid_alive(int(m["pid"]))
    m = _RESULTS.fullmatch(name) if results else None
    return bool(m) and not pid_alive(int(m["pid"]))


def sweep(dest: str, outputs: Iterable[str], extra: Iterable[str] = ()) -> list[str]:
    """Remove stale leftovers beside ``outputs`` (and ``extra``, more files
    batch writes) and of results files in ``dest``; returns what went."""
    root = os.path.abspath(dest)
    bases: dict[str, set[str]] = {root: set()}
    for path in (*outputs, *extra):
        bases.setdefault(os.path.dirname(os.path.abspath(path)), set()).add(os.path.basename(path))
    removed = []
    for directory, names in sorted(bases.items()):
        try:
            with os.scandir(directory) as entries:
                leftovers = [e for e in entries if stale(e.name, names, directory == root)]
        except OSError:  # not created yet
            continue
        for e in leftovers:
            with contextlib.suppress(FileNotFoundError):  # another run swept it first
                if e.is_dir(follow_symlinks=False):
                    shutil.rmtree(e.path)
                else:
                    os.unlink(e.path)
                removed.append(e.path)
    if removed:
        log.info("removed %d temporary file(s) of writers that died", len(removed))
    return removed
