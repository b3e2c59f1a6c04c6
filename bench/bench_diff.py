#!/usr/bin/env python
"""Benchmark: ``beaminst diff`` on synthetic pipelines of 5,000 and 20,000 transforms.

Not a pytest test. Builds ``synthetic.py`` pipelines of about ``--sizes``
transforms with the Beam SDK (one PCollection in ten bound, as in
``bench_instrument.py``), instruments each with beaminst, and times, in this
process after one warm-up (sizes interleaved), per size and scenario:

  instrumented  the pipeline against its instrumented version (cache writes added);
  renamed       against a copy with every transform renamed (everything removed
                and added: the case that was quadratic in ``set(added)``);
  identical     against itself (every transform compared field by field).

Phases: ``load`` (parse + validate both sides), ``match`` (``diff_indexes``),
both with the cyclic GC paused as ``api.diff_files`` pauses it,
and printing in each format (``plain``, ``markdown``, ``json``, ``human``
tree), each to memory. The best of ``--repeats`` runs of process CPU time
(wall time too; medians in the JSON), each after ``gc.collect()``. The target: the whole command
(load + match + print) in every format grows at most 4.5x from 5,000 to
20,000 transforms (4x the transforms; linear with some slack for sorting),
measured in this one run. Prints PASS/FAIL; exit status 1 on a FAIL.

    /work/venv/bin/python bench/bench_diff.py                       # builds 5,000 and 20,000 (minutes)
    /work/venv/bin/python bench/bench_diff.py --keep /tmp/bench     # keep (and reuse) the built pipelines
    /work/venv/bin/python bench/bench_diff.py --sizes 1000 4000 --repeats 5 --json out.json
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GROWTH_LIMIT = 4.5
SCENARIOS = ("instrumented", "renamed", "identical")
FORMATS = ("plain", "markdown", "json", "human")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_synthetic(size: int, directory: str) -> tuple[str, str]:
    """``synthetic_<size>.pb`` and its manifest in ``directory`` (reused when
    there; bench_instrument.py --keep makes the same files); returns their paths.

    Built in a child process: a parent grown by a live pipeline of 20,000
    transforms would pass its size on to every benchmarked child, since Linux
    carries the pre-exec RSS high-water mark into the child's ``ru_maxrss``
    (bench_scale.py read 706 MB for every command, wordcount included)."""
    stem = os.path.join(directory, f"synthetic_{size}")
    pb, manifest = f"{stem}.pb", f"{stem}.manifest.json"
    if not (os.path.exists(pb) and os.path.exists(manifest)):
        import subprocess

        t0 = time.perf_counter()
        here = os.path.dirname(os.path.abspath(__file__))
        subprocess.run([sys.executable, "-c", "import sys; sys.path[:0] = sys.argv[1:3]; "
                        "from bench_diff import export_synthetic; export_synthetic(int(sys.argv[3]), sys.argv[4])",
                        here, REPO, str(size), stem], check=True)
        log(f"[{size}] built and exported in {time.perf_counter() - t0:.1f}s")
    return pb, manifest


def export_synthetic(size: int, stem: str) -> None:
    """Build the synthetic pipeline of about ``size`` transforms and export it to ``stem``.pb/.manifest.json."""
    import logging
    import warnings

    from synthetic import bindings_for, branches_for, build_pipeline, proto_counts

    import beaminst

    logging.getLogger().setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    pipeline, user_pcolls = build_pipeline(branches_for(size))
    _, n_pcolls = proto_counts(pipeline)
    beaminst.export(pipeline, bindings_for(user_pcolls, n_pcolls), stem)


def build(size: int, directory: str) -> tuple[str, str]:
    """``synthetic_<size>.pb`` and its instrumented and renamed versions in
    ``directory`` (reused when there); returns (pipeline, manifest) paths."""
    pb, manifest = build_synthetic(size, directory)
    stem = pb[: -len(".pb")]
    if not os.path.exists(f"{stem}.instrumented.pb"):
        from beaminst.commands.api import instrument_files
        from beaminst.options import RewriteOptions

        cache = tempfile.mkdtemp(prefix="beaminst-bench-cache-")
        instrument_files(pb, f"{stem}.instrumented.pb", manifest, RewriteOptions(cache))
    if not os.path.exists(f"{stem}.renamed.pb"):
        from beaminst.model.protoio import load_pipeline, save_pipeline

        proto = load_pipeline(pb)[0]
        for t in proto.components.transforms.values():
            if t.unique_name:  # the SDK's synthetic root stays unnamed
                t.unique_name = "v2/" + t.unique_name
        save_pipeline(proto, f"{stem}.renamed.pb")
    return pb, manifest


def renderers() -> dict[str, Callable[[Any], None]]:
    from rich.console import Console

    from beaminst.commands import diffformat

    return {
        "plain": lambda d: diffformat.write_plain(io.StringIO(), d),
        "markdown": diffformat.markdown,
        "json": lambda d: json.dumps(d.to_json(), indent=2, sort_keys=True),
        "human": lambda d: diffformat.print_tree(Console(file=io.StringIO(), width=100), d),
    }


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``fn()`` and its CPU and wall seconds. What exists before (the bench's
    own heap, earlier sides) is collected and frozen, so the cyclic GC walks
    only what the timed step makes, as in a fresh ``beaminst diff``."""
    gc.collect()
    gc.freeze()
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        return out, time.process_time() - cpu, time.perf_counter() - wall
    finally:
        gc.unfreeze()


def run_once(before: str, after: str, render: dict[str, Callable[[Any], None]]) -> dict[str, tuple[float, float]]:
    """{phase: (cpu, wall)} of one diff of ``before`` against ``after``."""
    from beaminst.commands.api import load
    from beaminst.commands.diff import diff_indexes
    from beaminst.graph.gcpause import paused_gc

    def loaded() -> Any:
        with paused_gc():  # as api.diff_files (the command) loads and matches
            return load(before), load(after)

    def matched() -> Any:
        with paused_gc():
            return diff_indexes(b.index, a.index, b.source, a.source)

    (b, a), cpu, wall = timed(loaded)
    phases = {"load": (cpu, wall)}
    d, cpu, wall = timed(matched)
    phases["match"] = (cpu, wall)
    for fmt, fn in render.items():
        _, cpu, wall = timed(lambda fn=fn: fn(d))
        phases[fmt] = (cpu, wall)
    return phases


def best(runs: list[dict[str, tuple[float, float]]]) -> dict[str, dict[str, float]]:
    """{phase: {"cpu", "wall", "cpu_median"}}: the best of the runs (the least
    disturbed by other work on the machine, as timeit reports), the median for
    reference; with ``total_<format>``: the whole command."""
    out = {
        k: {"cpu": min(r[k][0] for r in runs), "wall": min(r[k][1] for r in runs), "cpu_median": statistics.median(r[k][0] for r in runs)}
        for k in runs[0]
    }
    for fmt in FORMATS:
        out[f"total_{fmt}"] = {m: out["load"][m] + out["match"][m] + out[fmt][m] for m in ("cpu", "wall", "cpu_median")}
    return out


def fmt_s(x: float) -> str:
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs=2, default=[5000, 20000], metavar=("SMALL", "LARGE"), help="target transform counts (default 5000 20000)")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats (default 5)")
    ap.add_argument("--keep", metavar="DIR", help="build into DIR and reuse what is there")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args(argv)
    sys.path[:0] = [REPO, os.path.join(REPO, "bench")]
    directory = args.keep or tempfile.mkdtemp(prefix="beaminst-bench-diff-")
    os.makedirs(directory, exist_ok=True)

    from beaminst.model.protoio import load_pipeline

    results: dict[int, dict[str, Any]] = {}
    pairs: dict[tuple[int, str], tuple[str, str]] = {}
    for size in args.sizes:
        pb, _ = build(size, directory)
        stem = pb[: -len(".pb")]
        results[size] = {"transforms": len(load_pipeline(pb)[0].components.transforms), "scenarios": {}}
        for scenario, after in zip(SCENARIOS, (f"{stem}.instrumented.pb", f"{stem}.renamed.pb", pb), strict=True):
            pairs[(size, scenario)] = (pb, after)
    # Sizes interleaved, so both see the same process (heap, caches); run 0 warms up.
    render = renderers()
    runs: dict[tuple[int, str], list[dict[str, tuple[float, float]]]] = {k: [] for k in pairs}
    for i in range(args.repeats + 1):
        log(f"run {i} of {args.repeats} ...")
        for key, (before, after) in pairs.items():
            phases = run_once(before, after, render)
            if i:
                runs[key].append(phases)
    for (size, scenario), r in runs.items():
        results[size]["scenarios"][scenario] = best(r)

    small, large = args.sizes
    print(f"beaminst diff benchmark (best of {args.repeats}, process CPU time; wall in parentheses), {os.cpu_count()} CPUs")
    print(f"transforms: {small} -> {results[small]['transforms']}, {large} -> {results[large]['transforms']} "
          f"(x{results[large]['transforms'] / results[small]['transforms']:.2f})")
    phases = ("load", "match", *FORMATS)
    head = ["scenario", "size", *phases]
    rows = []
    for scenario in SCENARIOS:
        for size in args.sizes:
            m = results[size]["scenarios"][scenario]
            rows.append([scenario, str(size), *(f"{fmt_s(m[p]['cpu'])} ({fmt_s(m[p]['wall'])})" for p in phases)])
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    print("  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)))
    for r in rows:
        print("  ".join(x.rjust(w) for x, w in zip(r, widths, strict=True)))
    verdicts = []
    for scenario in SCENARIOS:
        lo, hi = (results[s]["scenarios"][scenario] for s in args.sizes)
        growth = {fmt: hi[f"total_{fmt}"]["cpu"] / lo[f"total_{fmt}"]["cpu"] for fmt in FORMATS}
        worst = max(growth, key=growth.__getitem__)
        ok = growth[worst] <= GROWTH_LIMIT
        detail = ", ".join(f"{f} {fmt_s(lo[f'total_{f}']['cpu'])} -> {fmt_s(hi[f'total_{f}']['cpu'])} = {g:.2f}x" for f, g in growth.items())
        verdicts.append({"scenario": scenario, "status": "PASS" if ok else "FAIL", "growth": growth})
        print(f"{'PASS' if ok else 'FAIL'}: {scenario}: whole diff grows <= {GROWTH_LIMIT}x from {small} to {large} transforms: {detail}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "verdicts": verdicts}, f, indent=2)
            f.write("\n")
    return 0 if all(v["status"] == "PASS" for v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
