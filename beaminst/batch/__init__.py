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

Everything imports only the standard library at import time: the CLI reads
:data:`MODES` for ``--help``, and workers import the SDK only when a file
needs it.
"""

from beaminst.batch.console import NoProgress, Progress, print_batch_report, progress_bar
from beaminst.batch.jobs import MODES, FileResult, Job, Outcome, rewrite_one, work
from beaminst.batch.plan import Plan, discover, plan_batch
from beaminst.batch.pool import run_local
from beaminst.batch.run import BatchReport, iter_errors, run_batch
from beaminst.batch.spec import BatchSpec

__all__ = [
    "MODES", "BatchReport", "BatchSpec", "FileResult", "Job", "NoProgress", "Outcome", "Plan", "Progress",
    "discover", "iter_errors", "plan_batch", "print_batch_report", "progress_bar", "rewrite_one",
    "run_batch", "run_local", "work",
]
