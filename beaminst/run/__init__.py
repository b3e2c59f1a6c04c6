"""``beaminst run``: run a saved pipeline proto as it is.

Locally on Beam's Python runners (:mod:`beaminst.run.local`), or through the
Job API on any job server (:mod:`beaminst.run.jobapi`); either way the job is
followed to a terminal state by one loop (:mod:`beaminst.run.watch`) that also
applies Interactive Beam's recording limits to a background caching proto,
found and measured by :mod:`beaminst.run.capture` and
:mod:`beaminst.run.recording`. :mod:`beaminst.run.report` is the result and
how people see it.

Importing this package does not import the Beam SDK (``beaminst run --help``
stays fast): the modules that need it import it inside their functions.
"""

from __future__ import annotations

from beaminst.run.driver import run_file
from beaminst.run.options import RunOptions
from beaminst.run.report import RunReport

__all__ = ["RunOptions", "RunReport", "run_file"]
