"""``beaminst show``: the cached elements of bound variables, as ``ib.show``
and ``ib.collect`` give them, from a process that did not write them.

A variable is named as in the manifest (or ``synthetic_var_...`` for an
unbound source output, as ``analyze`` shows it); its cache key comes from the
analysis, its layout from what is on disk (:func:`beaminst.commands.elements.locate`).
A variable with no cache is reported with the commands that make one; when
none of the requested variables has one, that is the error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from beaminst.analysis.analyze import Analysis
from beaminst.analysis.suggest import did_you_mean
from beaminst.cache.cachedir import FULL_ITSELF, INSIDE_IT
from beaminst.commands.nextsteps import Invocation
from beaminst.errors import BeaminstError, ManifestError, printable
from beaminst.options import SourceRules


class NothingCachedError(BeaminstError):
    """None of the requested variables has a cache."""


@dataclass(frozen=True)
class Variable:
    name: str
    pcollection: str
    cache_key: str
    layout: str | None  # beaminst.commands.elements.SHARDS / RECORDING; None: no cache
    files: tuple[str, ...]  # relative to the cache directory, in reading order
    source_output: bool  # an unbounded source's output: recorded by background caching
    incomplete: str  # "" or what the key's shard set lacks: "partial" (a crashed write), "truncated" (a cut copy)

    @property
    def title(self) -> str:
        from beaminst.commands.elements import LAYOUT_NAMES

        return f"{self.name} ({LAYOUT_NAMES.get(self.layout or '', 'no cache')})"


@dataclass(frozen=True)
class ShowPlan:
    proto: Any
    cache_dir: str
    variables: tuple[Variable, ...]  # in the order asked, duplicates dropped
    notes: tuple[str, ...]  # one line each: variables with no cache and how to make one
    source: str | None = None  # the pipeline's, for what its coders refuse

    @property
    def cached(self) -> tuple[Variable, ...]:
        return tuple(v for v in self.variables if v.layout is not None)


def plan_show(
    pipeline_path: str,
    manifest_path: str | None,
    cache_dir: str,
    names: Iterable[str],
    rules: SourceRules = SourceRules(),  # noqa: B008 - frozen
) -> ShowPlan:
    """Resolve ``names`` to their caches (the analysis finds unbounded
    sources by ``rules``; no names: every variable that has one). Raises on
    an unknown name (with a suggestion) and when none of them has a cache
    (with how to make one)."""
    from beaminst.commands.api import analyze_files, grafted

    try:
        analysis = analyze_files(pipeline_path, manifest_path, cache_dir, rules)
    except ManifestError as e:
        # An instrumented proto whose pruning dropped what the manifest binds:
        # the likelier mistake is the proto, not the manifest.
        if pipeline_path != "-":
            from beaminst.commands.api import load

            if grafted(load(pipeline_path).proto):
                raise ManifestError(
                    f"{e.message}; {pipeline_path} holds beaminst's cache transforms: show takes the pipeline that "
                    "was instrumented (the original)", e.source,
                ) from None
        raise
    how = Invocation(pipeline_path, manifest_path, cache_dir, rules)
    asked = list(dict.fromkeys(names))
    # No name: every variable (bound ones, then unbounded sources' synthetic
    # ones), those with a cache shown and the rest named in one note.
    every = [c.var for c in analysis.cacheables.values() if not c.synthetic] + sorted(
        c.var for c in analysis.cacheables.values() if c.synthetic
    )
    variables = tuple(resolve(analysis, asked or every, manifest_path is None))
    missing = [v for v in variables if v.layout is None]
    instrumented = grafted(analysis.index.pipeline)
    if not variables:
        if manifest_path is None:
            raise BeaminstError("no variables to show: no manifest given (pass -m MANIFEST, and VAR... to choose)", pipeline_path)
        raise BeaminstError("no variables to show: the manifest binds none", analysis.manifest_source)
    if len(missing) == len(variables):
        misplaced = next((p for p in analysis.cache.problems if FULL_ITSELF in p or INSIDE_IT in p), None)
        if misplaced is not None:  # the likelier mistake than a cache never made
            raise NothingCachedError(misplaced, cache_dir)
        where = "" if analysis.cache.exists else "the cache directory does not exist (a typo, or nothing has run yet): "
        raise NothingCachedError(where + _no_cache(missing, how, instrumented), cache_dir)
    # What analyze and instrument say of the cache directory, said here too
    # (leftover temporary directories of a failed write, mixed shard sets).
    uncached = (
        (printable(f"{cache_dir}: {_no_cache([v], how, instrumented)}") for v in missing) if asked
        else [printable(f"{cache_dir}: not shown, no cache: {', '.join(v.name for v in missing)}")] if missing else []
    )
    notes = (*(printable(f"{cache_dir}: {p}") for p in analysis.cache_problems), *uncached)
    if not asked:
        variables = tuple(v for v in variables if v.layout is not None)
    return ShowPlan(analysis.index.pipeline, cache_dir, variables, notes, "<stdin>" if pipeline_path == "-" else pipeline_path)


def resolve(analysis: Analysis, names: list[str], no_manifest: bool = False) -> list[Variable]:
    """The variables ``names`` name, each with where its cache is
    (``no_manifest``: none was given, which an unknown name's error says)."""
    from beaminst.commands.elements import locate

    by_var = {c.var: c for c in analysis.cacheables.values()}
    for name in names:
        if name not in by_var:
            raise BeaminstError(_unknown(name, analysis, no_manifest), analysis.manifest_source)
    source_outputs = {pc for s in analysis.unbounded_sources for pc in s.outputs.values()}
    out = []
    for name in names:
        c = by_var[name]
        layout, files = locate(analysis.cache, c.cache_key, analysis.streaming_cache)
        incomplete = analysis.cache.incomplete(c.cache_key)
        out.append(
            Variable(name, c.pcollection, c.cache_key, layout, files, c.pcollection in source_outputs, incomplete)
        )
    return out


def _unknown(name: str, analysis: Analysis, no_manifest: bool = False) -> str:
    bound = sorted(c.var for c in analysis.cacheables.values() if not c.synthetic)
    synthetic = sorted(c.var for c in analysis.cacheables.values() if c.synthetic)
    hint = did_you_mean(name, bound + synthetic)
    known = ", ".join(bound) if bound else ("none: no manifest given, pass -m MANIFEST" if no_manifest else "none")
    if synthetic:
        known += f"; synthetic source variables: {', '.join(synthetic)}"
    return f"no variable {name!r}{hint} (variables: {known})"


def _no_cache(variables: list[Variable], how: Invocation, instrumented: bool = False) -> str:
    """One line: which variables have no cache, and the commands that make
    one (``instrumented``: the pipeline given is an output of beaminst, whose
    keys are not its original's: that is the likelier mistake)."""
    names = ", ".join(repr(v.name) for v in variables)
    kinds = {v.incomplete for v in variables}
    state = "no cache" if "" in kinds else f"only a {'damaged' if kinds == {'truncated'} else 'partial'} shard set"
    if instrumented:
        return (
            f"{names} {'has' if len(variables) == 1 else 'have'} {state} under the keys of {how.pipeline}, which holds "
            "beaminst's cache transforms: show takes the pipeline that was instrumented (the original), whose keys "
            "the cache writes use"
        )
    record = [v.name for v in variables if v.source_output]
    write = [v.name for v in variables if not v.source_output]
    steps = []
    if record:
        out = how.output("record")
        steps.append(f"beaminst background-caching {how.inputs()} -o {out} && beaminst run {out}"
                     + (f" (records {', '.join(record)})" if write else ""))
    if write:
        out = how.output("instrumented")
        steps.append(f"beaminst instrument {how.inputs()} -o {out} && beaminst run {out}"
                     + (f" (writes {', '.join(write)})" if record else ""))
    keys = ", ".join(v.cache_key for v in variables)
    return f"{names} {'has' if len(variables) == 1 else 'have'} {state} (key {keys}); make one with: {'; then '.join(steps)}"


def write_show(
    plan: ShowPlan,
    mode: str,
    limit: int | None,
    window_info: bool,
    trust_pickles: bool,
    out: TextIO,
    console: Callable[[], Any],
    note: Callable[[str], None],
) -> None:
    """Print every cached variable of ``plan`` in ``mode`` (``showformat.TABLE``,
    ``PLAIN``, ``JSON``, ``CSV``): at most ``limit`` elements each, counting
    the rest. Outside the table, a variable cut short by ``limit`` is
    ``note``d with its total.

    Nothing is printed unless everything shown decodes and prints: tables
    are all built first; lines are written to a spool (memory, then a
    temporary file past a few MiB) and copied out at the end. A cache that
    fails half-way (an element that does not decode, a shard past a cap) is
    one error, not half an output, and each cache is read once."""
    import shutil
    import tempfile

    from beaminst.commands import showformat
    from beaminst.commands.elements import open_elements

    # Several variables asked for: each line names its own (as grep names files).
    prefix = len(plan.variables) > 1
    try:
        opened = [
            (v, open_elements(plan.proto, v.pcollection, plan.cache_dir, v.layout, v.files, trust_pickles))
            for v in plan.cached if v.layout is not None
        ]
    except BeaminstError as e:  # the pipeline's coders, checked before they load: named by its file
        raise (e.with_source(plan.source) if plan.source else e) from None
    if mode == showformat.TABLE:
        tables = []
        for v, e in opened:
            with _showing(v, plan.cache_dir):
                tables.append((v, e, showformat.table_rows(showformat.Section(v.name, v.title, e.take(limit)), window_info)))
        for v, e, (shape, rows) in tables:
            showformat.print_table(console(), v.title, shape, rows, window_info, e.total or 0, e.counted_all)
        return
    notes = []
    # newline="": the lines (and csv's) are written as they would be to ``out``.
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES, mode="w+", encoding="utf-8", newline="") as spool:
        writer = showformat.LineWriter(spool, mode, window_info, prefix)  # type: ignore[arg-type]
        for v, e in opened:
            with _showing(v, plan.cache_dir):
                shown = writer.write(showformat.Section(v.name, v.title, e.take(limit)))
            total = e.total or 0
            if not e.counted_all:
                notes.append(
                    f"{v.name}: showed {shown} of at least {total} elements "
                    f"(--limit; counting stopped at {showformat.COUNTING_CAP})"
                )
            elif shown < total:
                notes.append(f"{v.name}: showed {shown} of {total} elements (--limit)")
        spool.seek(0)
        shutil.copyfileobj(spool, out)
    for line in notes:
        note(printable(line))


_SPOOL_BYTES = 8 << 20  # what show's lines hold in memory before they go to a temporary file


@contextlib.contextmanager
def _showing(v: Variable, cache_dir: str) -> Iterator[None]:
    """Decoding and rendering variable ``v``: a problem names the variable
    (which of the several asked for has the element that does not decode,
    or the pickle that is not loaded); an element nested too deeply to print
    is bad input."""
    try:
        yield
    except RecursionError:
        raise BeaminstError(f"{v.name}: an element nests too deeply to show", cache_dir) from None
    except BeaminstError as e:
        if not e.message.startswith(f"{v.name}: "):
            e.message = f"{v.name}: {e.message}"
        raise
