"""Rich output for people. Machines get ``--json`` instead."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from beaminst.analysis import Analysis


def print_analysis(console: Any, a: Analysis) -> None:
    from rich.table import Table

    from beaminst.terminal import markup as e

    table = Table(title="PCollections", show_lines=False)
    for col in ("id", "producer", "tag", "bounded", "variable", "cache key", "cache"):
        table.add_column(col, overflow="fold")
    for pc in _ordered(a):
        i = a.pcollections[pc]
        c = a.cacheables.get(pc)
        state = ""
        if c:
            state = "computed" if c.cached and c.computed else ("cached" if c.cached else "missing")
        var = i.var or ""
        if c and c.synthetic:
            var = f"[dim]{e(var)}[/dim] (synthetic)"
        else:
            var = e(var)
        table.add_row(
            e(pc), e(i.producer), e(i.tag), "yes" if i.is_bounded else "[bold]no[/bold]", var,
            e(i.cache_key or ""), state,
        )
    console.print(table)
    if a.unbounded_sources:
        src = Table(title="Unbounded sources")
        for col in ("transform id", "unique name", "urn", "outputs", "rule"):
            src.add_column(col, overflow="fold")
        for s in a.unbounded_sources:
            outs = ", ".join(f"{k}={v}" for k, v in sorted(s.outputs.items()))
            src.add_row(e(s.transform_id), e(s.unique_name), e(s.urn), e(outs), s.rule)
        console.print(src)
    _print_capped(console, a.cache.problems, lambda p: f"[yellow]cache:[/yellow] {e(p)}", "cache problems")
    n_cached = sum(1 for c in a.cacheables.values() if c.cached)
    console.print(
        f"{len(a.index.transforms)} transforms, {len(a.pcollections)} PCollections, "
        f"{len(a.cacheables)} cacheable ({n_cached} cached), "
        f"{len(a.unbounded_sources)} unbounded source{'s' if len(a.unbounded_sources) != 1 else ''}"
    )


MAX_LISTED = 20  # a cache directory of junk must not bury the report


def _print_capped(console: Any, items: Sequence[Any], line: Callable[[Any], str], what: str) -> None:
    """The first MAX_LISTED items, then one line saying how many were left out."""
    for item in items[:MAX_LISTED]:
        console.print(line(item))
    if len(items) > MAX_LISTED:
        console.print(f"[yellow]... and {len(items) - MAX_LISTED} more {what}[/yellow] (--json lists them all)")


def _ordered(a: Analysis) -> list[str]:
    """PCollections in pipeline order (topological by producer)."""
    rank = {t: i for i, t in enumerate(a.index.leaf_order)}
    return sorted(a.pcollections, key=lambda pc: (rank.get(a.index.producer[pc], 0), pc))


def print_instrument_report(console: Any, report: Any, title: str) -> None:
    from rich.table import Table

    from beaminst.terminal import markup as e

    table = Table(title=f"beaminst {title}")
    for col in ("action", "variable", "cache key", "via"):
        table.add_column(col, overflow="fold")
    for w in report.writes:
        table.add_row("[green]write[/green]", e(w["var"]), e(w["cache_key"]), "WriteCache")
    for r in report.reads:
        table.add_row("[cyan]read[/cyan]", e(r["var"]), e(r["cache_key"]), r["via"])
    if report.writes or report.reads:
        console.print(table)
    _print_capped(
        console, report.skipped, lambda s: f"[yellow]skipped[/yellow] {e(s['var'])}: {e(s['reason'])}", "skipped bindings"
    )
    _print_capped(console, report.warnings, lambda w: f"[yellow]warning:[/yellow] {e(w)}", "warnings")
    ts = report.test_stream
    if ts:
        where = f"endpoint {e(ts['endpoint'])}" if ts.get("endpoint") else f"{ts['events']} recorded events inlined"
        console.print(f"TestStream with {len(ts['tags'])} output tag(s), {where}")
    dest = report.output or "stdout"
    console.print(
        f"{len(report.writes)} write(s), {len(report.reads)} read(s), "
        f"{len(report.rewired)} input(s) rewired, {len(report.pruned)} transform(s) pruned -> {e(dest)}"
    )
