"""What people see of analyze, instrument and background-caching (machines
get ``--json``): tables on a terminal, records on a pipe (:mod:`beaminst.commands.humanout`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from beaminst.analysis.analyze import Analysis
from beaminst.commands.humanout import Cell, Human


def print_analysis(out: Human, a: Analysis, next_steps: Sequence[str] = ()) -> None:
    rows = []
    for pc in _ordered(a):
        i = a.pcollections[pc]
        c = a.cacheables.get(pc)
        state = ""
        if c:
            state = "computed" if c.cached and c.computed else ("cached" if c.cached else "missing")
        var = Cell(i.var or "", "dim", "(synthetic)") if c and c.synthetic else Cell(i.var or "")
        rows.append((pc, i.producer, i.tag, "yes" if i.is_bounded else Cell("no", "bold"), var, i.cache_key or "", state))
    out.table("pcollection", "PCollections", ("id", "producer", "tag", "bounded", "variable", "cache key", "cache"), rows)
    if a.unbounded_sources:
        out.table(
            "source", "Unbounded sources", ("transform id", "unique name", "urn", "outputs", "rule"),
            [
                (s.transform_id, s.unique_name, s.urn, ", ".join(f"{k}={v}" for k, v in sorted(s.outputs.items())), s.rule)
                for s in a.unbounded_sources
            ],
        )
    out.capped("cache", a.cache_problems, "cache problems")
    out.capped("warning", a.warnings, "warnings")
    n_cached = sum(1 for c in a.cacheables.values() if c.cached)
    out.summary(
        f"{len(a.index.transforms)} transforms, {len(a.pcollections)} PCollections, "
        f"{len(a.cacheables)} cacheable ({n_cached} cached), "
        f"{len(a.unbounded_sources)} unbounded source{'s' if len(a.unbounded_sources) != 1 else ''}"
    )
    out.next_steps(next_steps)


def _ordered(a: Analysis) -> list[str]:
    """PCollections in pipeline order (topological by producer)."""
    rank = {t: i for i, t in enumerate(a.index.leaf_order)}
    return sorted(a.pcollections, key=lambda pc: (rank.get(a.index.producer[pc], 0), pc))


def print_instrument_report(out: Human, report: Any, title: str, next_steps: Sequence[str] = ()) -> None:
    rows = [(Cell("write", "green"), w.var, w.cache_key, "WriteCache") for w in report.writes]
    rows += [(Cell("read", "cyan"), r.var, r.cache_key, r.via) for r in report.reads]
    if rows:
        if out.terminal:
            out.table("", f"beaminst {title}", ("action", "variable", "cache key", "via"), rows)
        else:  # the action is the record's kind: write<TAB>var<TAB>key<TAB>via
            for action, *fields in rows:
                out.record(action.text, *fields)
    out.capped("skipped", [(s.var, s.reason) for s in report.skipped], "skipped bindings")
    out.capped("warning", report.warnings, "warnings")
    ts = report.test_stream
    if ts:
        where = f"endpoint {ts['endpoint']}" if ts.get("endpoint") else (
            f"{ts['events']} recorded events ({ts.get('elements', 0)} elements) inlined"
        )
        out.line("test_stream", f"{len(ts['tags'])} output tag(s), {where}")
    dest = "stdout" if report.output in (None, "-") else report.output
    out.summary(
        f"{len(report.writes)} write(s), {len(report.reads)} read(s), "
        f"{len(report.rewired)} input(s) rewired, {len(report.pruned)} transform(s) pruned -> {dest}"
    )
    out.next_steps(next_steps)
