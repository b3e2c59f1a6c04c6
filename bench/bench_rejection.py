#!/usr/bin/env python
"""Benchmark: how long each command takes to reject a huge input.

Not a pytest test: wall-clock time depends on the machine and its load, so
the hardening suite bounds the same runs by work (function calls) instead,
and the time is measured here. Inputs, each with the word-count manifest:

  * 50 MB of zero bytes as ``pipeline.pb``;
  * JSON nested a million levels deep as ``pipeline.json``.

Every command (analyze, instrument, background-caching, diff, batch) runs
in this process through the CLI, after one warm-up run; times are medians of
``--repeats`` runs. Target (PASS/FAIL printed, exit status 0 regardless):
every rejection takes under 10 s (what the suite once asserted).

    /work/venv/bin/python bench/bench_rejection.py [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_S = 10.0
INPUTS = {
    "zeros.pb": lambda: bytes(50 * 1024 * 1024),
    "deep.json": lambda: b"[" * 1_000_000 + b"]" * 1_000_000,
}
COMMANDS = ("analyze", "instrument", "background-caching", "diff", "batch")


def command_line(cmd: str, pipeline: str, manifest: str, work: str) -> list[str]:
    out = os.path.join(work, "out")
    cache = ["--cache-dir", os.path.join(work, "cache")]
    if cmd == "analyze":
        return [cmd, pipeline, "-m", manifest, *cache]
    if cmd in ("instrument", "background-caching"):
        return [cmd, pipeline, "-m", manifest, *cache, "-o", os.path.join(out, "result.pb")]
    if cmd == "diff":
        return [cmd, pipeline, os.path.join(REPO, "fixtures", "wordcount.pb")]
    return [cmd, os.path.dirname(pipeline), "-o", out, *cache, "-m", manifest, "--jobs", "1", "--force"]


def run(args: list[str]) -> tuple[int, float]:
    """(exit code, seconds) of ``beaminst ARGS`` in this process, output discarded."""
    import contextlib
    import io

    from beaminst.cli import main

    start = time.perf_counter()
    code = 0
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            main(args, standalone_mode=False)
        except SystemExit as e:
            code = int(e.code or 0)
    return code, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = ap.parse_args(argv)
    sys.path.insert(0, REPO)
    manifest = os.path.join(REPO, "fixtures", "wordcount.manifest.json")
    rows = []
    for label, make in INPUTS.items():
        work = tempfile.mkdtemp(prefix="beaminst-bench-rejection-")
        try:
            os.makedirs(os.path.join(work, "in"))
            os.makedirs(os.path.join(work, "out"))
            pipeline = os.path.join(work, "in", "pipeline" + os.path.splitext(label)[1])
            with open(pipeline, "wb") as f:
                f.write(make())
            for cmd in COMMANDS:
                line = command_line(cmd, pipeline, manifest, work)
                run(line)  # warm-up: imports, first-call caches
                times, codes = [], set()
                for _ in range(args.repeats):
                    code, seconds = run(line)
                    times.append(seconds)
                    codes.add(code)
                rows.append({"input": label, "command": cmd, "exit": sorted(codes), "median_s": statistics.median(times)})
        finally:
            shutil.rmtree(work, ignore_errors=True)
    slow = [r for r in rows if r["median_s"] >= TARGET_S or r["exit"] != [2]]
    verdict = {"target": f"every command rejects every huge input (exit 2) in < {TARGET_S:.0f} s",
               "status": "FAIL" if slow else "PASS"}
    if args.json:
        print(json.dumps({"rows": rows, "targets": [verdict]}, indent=2))
        return 0
    print(f"{'input':<10} {'command':<20} {'exit':>5} {'median':>9}")
    for r in rows:
        print(f"{r['input']:<10} {r['command']:<20} {','.join(map(str, r['exit'])):>5} {r['median_s']:>8.2f}s")
    print(f"{verdict['status']}: {verdict['target']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
