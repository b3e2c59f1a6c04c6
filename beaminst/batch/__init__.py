"""``beaminst batch``: rewrite every saved pipeline under a directory or glob.

One job per pipeline file, planned once in the calling process, run in a
local process pool or, with ``runner``, as a Beam pipeline; each job calls
the same file-level function as the single-file command. The modules, in the
order a batch uses them:

* ``spec``: what the batch is asked to do (:class:`BatchSpec`, built by the CLI);
* ``plan``: find the files, pair manifests, refuse unsafe destinations,
  sweep leftovers (``sweep``), skip up-to-date outputs (``freshness``);
* ``jobs``: what one job is and the per-file function workers run;
* ``pool`` / ``beamrun``: the two ways to run the jobs; ``lifecycle``: the
  pool's processes end with the batch, SIGTERM stops it like Ctrl-C;
* ``run``: the driver and its report; ``console``: progress bar and table.

Everything imports only the standard library at import time, and this
package imports each module on first use: the CLI reads :data:`MODES` for
``--help`` (and builds its commands on every run), and workers import the
SDK only when a file needs it.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> the module defining it, imported on first use: the CLI
# imports this package for --mode's choices on every command, and
# instrument should not pay for the pool, the planner and the console.
_EXPORTS = {
    "NoProgress": "console", "Progress": "console", "print_batch_report": "console", "progress_bar": "console",
    "MODES": "jobs", "FileResult": "jobs", "Job": "jobs", "Outcome": "jobs", "rewrite_one": "jobs", "work": "jobs",
    "Plan": "plan", "discover": "plan", "plan_batch": "plan",
    "run_local": "pool",
    "BatchReport": "run", "iter_errors": "run", "run_batch": "run",
    "BatchSpec": "spec",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
