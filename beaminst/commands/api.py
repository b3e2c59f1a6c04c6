"""The library API the CLI is a thin shell over; tests call it directly."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from beaminst.analysis.analyze import Analysis, analyze
from beaminst.analysis.manifest import load_manifest
from beaminst.cache.cachedir import full_dir_holding, scan_cache_dir
from beaminst.errors import BeaminstError
from beaminst.graph.index import GraphIndex
from beaminst.graph.validate import validate
from beaminst.model.protoio import STDIO, Format, load_pipeline
from beaminst.options import RewriteOptions, SourceRules


@dataclass(frozen=True)
class Loaded:
    proto: Any
    format: Format
    index: GraphIndex
    source: str


def load(path: str, source: str | None = None) -> Loaded:
    """Load and validate a pipeline file; errors name the file (or ``source``)."""
    source = source or ("<stdin>" if path == STDIO else path)
    try:
        proto, fmt = load_pipeline(path)
        index = validate(proto)
    except BeaminstError as e:
        raise e.with_source(source) from None
    return Loaded(proto, fmt, index, source)


def analyze_files(
    pipeline_path: str,
    manifest_path: str | None = None,
    cache_dir: str | None = None,
    rules: SourceRules = SourceRules(),  # noqa: B008 - frozen
    reuse: bool = False,
) -> Analysis:
    """``beaminst analyze``: load and validate the pipeline, read the manifest
    and the state of ``cache_dir``, and analyze (:func:`beaminst.analysis.analyze.analyze`);
    ``rules`` say which transforms are unbounded sources beyond Beam's own."""
    from beaminst.graph.gcpause import paused_gc

    with paused_gc():
        loaded = load(pipeline_path)
        manifest = load_manifest(manifest_path)
        cache = scan_cache_dir(cache_dir)
        return analyze(loaded.index, manifest, cache, rules, reuse)


# A rewriting pass: instrument.instrument or background_caching.background_caching.
Rewrite = Callable[[Analysis, RewriteOptions], tuple[Any, Any]]


@dataclass(frozen=True)
class Rewritten:
    """One file rewritten: the pass's report (with the output's path and
    format), and every cache key the analysis saw, cached or not (batch's
    freshness record: the cache state the output depends on)."""

    report: Any
    cache_keys: list[str]


def instrument_files(
    pipeline_path: str,
    output: str,
    manifest_path: str | None,
    options: RewriteOptions,
    rules: SourceRules = SourceRules(),  # noqa: B008 - frozen
    output_format: str | None = None,
    reuse: bool = False,
) -> Any:
    """``beaminst instrument``: analyze (from ``options.cache_dir``), instrument,
    validate, write atomically; returns the report."""
    from beaminst.passes.instrument import instrument

    return rewrite_file(instrument, pipeline_path, output, manifest_path, options, rules, output_format, reuse).report


def background_caching_files(
    pipeline_path: str,
    output: str,
    manifest_path: str | None,
    options: RewriteOptions,
    rules: SourceRules = SourceRules(),  # noqa: B008 - frozen
    output_format: str | None = None,
) -> Any:
    """``beaminst background-caching``: analyze, cut to sources + capture
    writes, validate, write atomically (nothing is written on error);
    returns the report."""
    from beaminst.passes.background_caching import background_caching

    return rewrite_file(background_caching, pipeline_path, output, manifest_path, options, rules, output_format).report


def rewrite_file(
    rewrite: Rewrite,
    pipeline_path: str,
    output: str,
    manifest_path: str | None,
    options: RewriteOptions,
    rules: SourceRules = SourceRules(),  # noqa: B008 - frozen
    output_format: str | None = None,
    reuse: bool = False,
) -> Rewritten:
    """The shell both rewriting commands (and every ``batch`` job) share:
    check the output can be written, analyze, run the pass, save atomically.
    Returns the report and the analysis's cache keys, not the analysis: it
    is freed inside the pause, since the collector's first pass after one
    walks everything the pause left alive (18 ms of a 5,000-transform
    analysis)."""
    from beaminst.graph.gcpause import paused_gc
    from beaminst.model.protoio import output_format as choose_format
    from beaminst.model.protoio import save_pipeline

    fmt = choose_format(output, output_format)  # fail on a bad format before any work
    check_output_path(output, (pipeline_path, manifest_path), options.cache_dir)
    with paused_gc():  # one pause from load to save, not a collection over both protos between the phases
        analysis = analyze_files(pipeline_path, manifest_path, options.cache_dir, rules, reuse)
        try:
            out, report = rewrite(analysis, options)
        except BeaminstError as e:  # e.g. "no unbounded source": about the pipeline
            raise e.with_source("<stdin>" if pipeline_path == STDIO else pipeline_path) from None
        report.format = save_pipeline(out, output, fmt)
        cache_keys = sorted({c.cache_key for c in analysis.cacheables.values()})
        streaming = analysis.streaming_cache
        del out, analysis
    if streaming and report.writes and options.cache_dir is not None:
        report.warnings.extend(_make_sink_dir(options.cache_dir))
    report.output = output  # "-" for stdout, as the user spelled it
    guessed = _unknown_extension(output, output_format)
    if guessed:
        report.warnings.append(guessed)
    return Rewritten(report, cache_keys)


def _make_sink_dir(cache_dir: str) -> list[str]:
    """``<cache_dir>/full`` for the streaming writes just saved (Beam's sink
    needs it before its first bundle); a warning when it cannot be made."""
    from beaminst.analysis.cachewarnings import sink_dir_not_made
    from beaminst.cache.streaming import make_sink_dir

    try:
        make_sink_dir(cache_dir)
    except OSError as e:
        return [sink_dir_not_made(os.path.join(cache_dir, "full"), e.strerror or str(e))]
    return []


def _unknown_extension(output: str, requested: str | None) -> str | None:
    """A warning when the output's extension names no format (``out.pbb``, a
    typo?) and binary was written for want of one; ``graph`` refuses those,
    but a rewrite's output is always a pipeline, so it is written and said."""
    import os

    from beaminst.model.protoio import FORMATS, format_from_extension

    ext = os.path.splitext(output)[1] if output != STDIO else ""
    if requested or not ext or format_from_extension(output):
        return None
    return (f"{output}: the extension {ext!r} names no format, so binary was written "
            f"(.pb, .textproto or .json choose one; or pass --output-format {'|'.join(FORMATS)})")


def check_output_path(output: str, inputs: Iterable[str | None] = (), cache_dir: str | None = None) -> None:
    """Fail before any work when ``output`` can never be written, or is one
    of ``inputs`` under any name (the path itself, a symlink or a hard link:
    the same device and inode), which the rename would replace, or lies in
    ``cache_dir``'s ``full/``, Beam's own (a file there reads as a recording of
    its name, and a Beam cache cleanup removes it with the rest)."""
    import os

    from beaminst.errors import OutputError
    from beaminst.model.protoio import output_target

    if output == STDIO:
        return
    target, stream = output_target(output)  # a directory, a socket: refused here
    full = full_dir_holding(os.path.dirname(os.path.abspath(target)), cache_dir)
    if full is not None:
        raise OutputError(
            f"is inside the cache directory's full/ ({full}), which holds Beam's cache files only: "
            "write the output elsewhere", output,
        )
    for path in inputs:
        if path and path != STDIO and _same_file(output, path):
            raise OutputError(f"is the same file as the input {path}; an output never replaces an input", output)
    if stream:
        return  # written through, as stdout is: its directory is not written to
    directory = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(directory):
        raise OutputError(f"output directory {directory} does not exist", output)
    if not os.access(directory, os.W_OK):
        raise OutputError(f"output directory {directory} is not writable", output)


def _same_file(a: str, b: str) -> bool:
    import os

    try:
        sa, sb = os.stat(a), os.stat(b)  # both follow symlinks
    except (OSError, ValueError):  # a missing output, an embedded NUL
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def diff_files(
    before_path: str, after_path: str, show_payloads: bool = False, sources: tuple[str | None, str | None] = (None, None)
) -> Any:
    """``beaminst diff``: load and validate both pipelines, then diff them by
    meaning. ``/dev/null`` is the empty pipeline, as for diff(1) and git (an
    added or deleted file); ``sources`` name the sides instead of the paths."""
    from beaminst.commands.diff import diff_indexes
    from beaminst.graph.gcpause import paused_gc

    with paused_gc():
        before, after = (_diff_side(p, s) for p, s in zip((before_path, after_path), sources, strict=True))
        result = diff_indexes(before.index, after.index, before.source, after.source, show_payloads)
        # Freed before the collector resumes: its first collection would walk them all.
        del before, after
    return result


def _diff_side(path: str, source: str | None) -> Loaded:
    import os

    if path != os.devnull:
        return load(path, source)
    from beaminst.graph.index import build_index
    from beaminst.model.beamproto import runner_api

    empty = runner_api().Pipeline()  # not valid (no root), but nothing in it to check
    return Loaded(empty, "binary", build_index(empty), source or path)


def graph_files(
    pipeline_path: str,
    output: str = STDIO,
    fmt: str | None = None,
    manifest_path: str | None = None,
    against_path: str | None = None,
    depth: int | None = None,
    expand_cache: bool = False,
    warn: Callable[[str], None] = lambda _line: None,
) -> str:
    """``beaminst graph``: draw a pipeline (DOT, or SVG/PNG through Graphviz),
    written atomically; returns the format written; ``warn`` hears what
    looks wrong (an instrumented ``against_path`` and an original pipeline:
    swapped?). With ``against_path`` the
    manifest describes that original pipeline (the one instrumented).
    Composites at level ``depth`` and the grafted cache subgraphs (unless
    ``expand_cache``) are drawn as one node each."""
    from beaminst.commands import render
    from beaminst.graph.gcpause import paused_gc
    from beaminst.model.canonical import nothing_to_sign
    from beaminst.model.protoio import write_atomic

    chosen = render.graph_format(output, fmt)
    if chosen != "dot":
        render.require_graphviz(chosen)  # before any work
    check_output_path(output, (pipeline_path, against_path, manifest_path))
    # Loading and drawing with the collector off, as diff_files loads and
    # matches. Both pipelines are gone when _draw returns, before it is back
    # on: its first collection after a pause walks every object the pause let
    # pile up in the young generation, which was all of them (65 ms at 20,000
    # transforms) when they were still alive here.
    with paused_gc(), nothing_to_sign():
        dot = _draw(pipeline_path, manifest_path, against_path, depth, expand_cache, warn,
                    _graph_command(against_path or "", pipeline_path, manifest_path, output, fmt, depth, expand_cache))
    write_atomic(output, dot.encode("utf-8") if chosen == "dot" else render.to_image(dot, chosen))
    return chosen


def _graph_command(
    pipeline_path: str, against_path: str, manifest_path: str | None, output: str, fmt: str | None,
    depth: int | None, expand_cache: bool,
) -> str:
    """The ``beaminst graph`` command line drawing ``pipeline_path`` against
    ``against_path`` with the other options as given, quoted for a shell."""
    from beaminst.errors import shell_word

    words = ["beaminst", "graph", pipeline_path, "--against", against_path]
    if manifest_path:
        words += ["-m", manifest_path]
    if fmt:
        words += ["--format", fmt]
    if depth is not None:
        words += ["--depth", str(depth)]
    if expand_cache:
        words.append("--expand-cache")
    if output != "-":
        words += ["-o", output]
    return " ".join(shell_word(w) for w in words)


def _draw(
    pipeline_path: str, manifest_path: str | None, against_path: str | None, depth: int | None,
    expand_cache: bool, warn: Callable[[str], None], swapped_command: str,
) -> str:
    """:func:`graph_files`' DOT text; ``swapped_command`` draws the two pipelines the other way round."""
    from beaminst.commands import render

    loaded = load(pipeline_path)
    original = load(against_path) if against_path else None
    if original is not None and grafted(original.proto) and not grafted(loaded.proto):
        warn(f"--against {original.source} has beaminst's cache transforms and {loaded.source} has none: "
             f"swapped? the instrumented pipeline is drawn against its original "
             f"({swapped_command})")
    manifest = load_manifest(manifest_path)
    variables = render.bound_variables(manifest, (original or loaded).index)  # errors name the manifest
    title = loaded.source if original is None else f"{loaded.source} against {original.source}"
    return render.render_dot(loaded.index, variables, original.index if original else None, title, depth, expand_cache)


def grafted(proto: Any) -> bool:
    """Whether ``proto`` holds a cache write or read beaminst grafted."""
    from beaminst.model.labels import holds_cache_transforms

    return holds_cache_transforms(t.unique_name for t in proto.components.transforms.values())
