"""Beam's IPython probe, answered without importing IPython when it can be.

Every top-level ``Pipeline.apply`` calls Beam's ``alter_label_if_ipython``
(to prefix the label with a notebook cell number, for a pipeline the
notebook's variables hold), which calls ``interactive_utils.is_in_ipython()``:
``from IPython import get_ipython`` and ask it for a shell. Where IPython is
installed (apache-beam's ``[interactive]`` extra, a notebook's environment),
the first subgraph beaminst builds therefore imports IPython, a third of a
second and a package beaminst does not need, only to hear "no".

A process that never imported IPython has no IPython shell, so the answer
there is False without asking; once IPython is imported, Beam's own probe
answers. The answers, so the labels and the bytes of every subgraph, are
Beam's. A module that binds the name ``is_in_ipython`` while it is replaced
(Beam's DirectRunner, first imported during a build) keeps a probe that
answers the same.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator

_lock = threading.Lock()
_users = 0
_beam_probe: Callable[[], bool] | None = None


def _is_in_ipython() -> bool:
    return "IPython" in sys.modules and _beam_probe is not None and _beam_probe()


@contextlib.contextmanager
def without_import() -> Iterator[None]:
    """While any caller (of any thread) is inside, Beam's ``is_in_ipython``
    imports no IPython; Beam's own is put back when the last one leaves."""
    global _users, _beam_probe
    from apache_beam.utils import interactive_utils

    with _lock:
        if _users == 0:
            _beam_probe = interactive_utils.is_in_ipython
            interactive_utils.is_in_ipython = _is_in_ipython
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                interactive_utils.is_in_ipython = _beam_probe
