#!/usr/bin/env python
"""Benchmark: the interactive loop, full run vs. a re-run after an edit with ``--reuse``.

Not a pytest test. A 10-stage pipeline where every stage costs real time
(each element sleeps ``--delay`` seconds in each stage), every stage's output
bound to a variable:

  (a) full run: ``beaminst instrument`` (nothing cached) + run on the
      DirectRunner, in fresh processes, as a user does from the shell;
  (b) the same pipeline with stage ``--edit`` changed, ``beaminst instrument
      --reuse`` + run: stages before the edit are read from the cache, only
      the edited stage and what follows recompute.

Prints both wall times (medians of ``--repeats``, a fresh cache for every full
run) and the ratio a/b, with the ratio the pure stage work predicts
(10 / (11 - edit)) for comparison. Exit status 0 regardless.

    /work/venv/bin/python bench/bench_reuse.py
    /work/venv/bin/python bench/bench_reuse.py --stages 10 --edit 8 --elements 20 --delay 0.1 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

RUN = """
import sys
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from beaminst.model.protoio import load_pipeline
proto, _ = load_pipeline(sys.argv[1])
beam.Pipeline.from_runner_api(proto, beam.runners.DirectRunner(), PipelineOptions([])).run().wait_until_finish()
"""
CLI = [sys.executable, "-c", "import sys; from beaminst.cli import main; main(sys.argv[1:], prog_name='beaminst')"]


def stage_work(x: int, stage: int, delay: float, factor: int) -> int:
    """One stage's real cost: a sleep per element (this module runs as
    __main__, so cloudpickle pickles the function by value)."""
    time.sleep(delay)
    return (x * factor + stage) % 1_000_003


def export(stem: str, stages: int, elements: int, delay: float, edited: int | None) -> tuple[str, str]:
    import apache_beam as beam

    import beaminst

    p = beam.Pipeline()
    pc = p | "Numbers" >> beam.Create(list(range(elements)))
    bindings = {}
    for i in range(1, stages + 1):
        factor = 3 if i == edited else 2
        pc = pc | f"Stage{i}" >> beam.Map(stage_work, i, delay, factor)
        bindings[f"stage{i}"] = pc
    return beaminst.export(p, bindings, stem)


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(args[:4])}...\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def loop(work: str, pb: str, manifest: str, cache: str, out: str, *extra: str) -> float:
    return timed([*CLI, "instrument", pb, "-m", manifest, "--cache-dir", cache, "-o", out, *extra]) + timed(
        [sys.executable, "-c", RUN, out]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stages", type=int, default=10)
    ap.add_argument("--edit", type=int, default=8, help="the stage changed before the re-run")
    ap.add_argument("--elements", type=int, default=20)
    ap.add_argument("--delay", type=float, default=0.1, help="seconds per element per stage")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="beaminst-bench-reuse-")
    try:
        pb1, m1 = export(os.path.join(work, "v1"), a.stages, a.elements, a.delay, None)
        pb2, m2 = export(os.path.join(work, "v2"), a.stages, a.elements, a.delay, a.edit)
        full, rerun = [], []
        for r in range(a.repeats):
            cache = os.path.join(work, f"cache{r}")
            full.append(loop(work, pb1, m1, cache, os.path.join(work, f"full{r}.pb")))
            rerun.append(loop(work, pb2, m2, cache, os.path.join(work, f"rerun{r}.pb"), "--reuse"))
        fa, rb = statistics.median(full), statistics.median(rerun)
        result = {
            "stages": a.stages, "edit": a.edit, "elements": a.elements, "delay": a.delay,
            "full_seconds": round(fa, 2), "reuse_seconds": round(rb, 2), "ratio": round(fa / rb, 2),
            "stage_work_ratio": round(a.stages / (a.stages - a.edit + 1), 2),
        }
        if a.json:
            print(json.dumps(result, indent=2))
        else:
            print(f"{a.stages} stages, {a.elements} elements, {a.delay}s per element per stage, edit at stage {a.edit}")
            print(f"(a) full run (instrument + run, nothing cached): {fa:.2f} s")
            print(f"(b) re-run after the edit with --reuse:          {rb:.2f} s")
            print(f"a/b = {fa / rb:.2f}x (stage work alone would give {result['stage_work_ratio']}x; "
                  "the rest is process start-up and the SDK import, paid by both)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
