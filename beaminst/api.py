"""The library API the CLI is a thin shell over; tests call it directly."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from beaminst.analysis import Analysis, analyze
from beaminst.cachedir import scan_cache_dir
from beaminst.errors import BeaminstError
from beaminst.graph import GraphIndex
from beaminst.manifest import load_manifest
from beaminst.options import WorkerOptions
from beaminst.protoio import STDIO, Format, load_pipeline
from beaminst.validate import validate


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
    unbounded_urns: Iterable[str] = (),
    infer_unbounded: bool = False,
    reuse: bool = False,
) -> Analysis:
    loaded = load(pipeline_path)
    manifest = load_manifest(manifest_path)
    cache = scan_cache_dir(cache_dir)
    return analyze(loaded.index, manifest, cache, unbounded_urns, infer_unbounded, reuse)


def instrument_files(
    pipeline_path: str,
    output: str,
    manifest_path: str | None,
    cache_dir: str,
    unbounded_urns: Iterable[str] = (),
    infer_unbounded: bool = False,
    output_format: str | None = None,
    test_stream_endpoint: str | None = None,
    worker: WorkerOptions = WorkerOptions(),  # noqa: B008 - frozen
    reuse: bool = False,
) -> Any:
    """``beaminst instrument``: analyze, instrument, validate, write atomically."""
    from beaminst.instrument import instrument
    from beaminst.options import parse_endpoint

    if test_stream_endpoint is not None:
        try:
            parse_endpoint(test_stream_endpoint)
        except ValueError as e:
            raise BeaminstError(f"--test-stream-endpoint: {e}") from None
    return _rewrite_file(
        lambda analysis: instrument(analysis, cache_dir, test_stream_endpoint, worker),
        pipeline_path, output, manifest_path, cache_dir, unbounded_urns, infer_unbounded, output_format, reuse,
    )


def background_caching_files(
    pipeline_path: str,
    output: str,
    manifest_path: str | None,
    cache_dir: str,
    unbounded_urns: Iterable[str] = (),
    infer_unbounded: bool = False,
    output_format: str | None = None,
    allow_empty: bool = False,
    worker: WorkerOptions = WorkerOptions(),  # noqa: B008 - frozen
) -> Any:
    """``beaminst background-caching``: analyze, cut to sources + capture
    writes, validate, write atomically (nothing is written on error)."""
    from beaminst.background_caching import background_caching

    return _rewrite_file(
        lambda analysis: background_caching(analysis, cache_dir, allow_empty, worker),
        pipeline_path, output, manifest_path, cache_dir, unbounded_urns, infer_unbounded, output_format,
    )


def _rewrite_file(
    rewrite: Callable[[Analysis], tuple[Any, Any]],
    pipeline_path: str,
    output: str,
    manifest_path: str | None,
    cache_dir: str,
    unbounded_urns: Iterable[str],
    infer_unbounded: bool,
    output_format: str | None,
    reuse: bool = False,
) -> Any:
    """The shell both rewriting commands share: check the output can be
    written, analyze, rewrite, save atomically; returns the pass's report."""
    from beaminst.protoio import output_format as choose_format
    from beaminst.protoio import save_pipeline

    fmt = choose_format(output, output_format)  # fail on a bad format before any work
    check_output_path(output, (pipeline_path, manifest_path))
    analysis = analyze_files(pipeline_path, manifest_path, cache_dir, unbounded_urns, infer_unbounded, reuse)
    try:
        out, report = rewrite(analysis)
    except BeaminstError as e:  # e.g. "no unbounded source": about the pipeline
        raise e.with_source("<stdin>" if pipeline_path == STDIO else pipeline_path) from None
    report.format = save_pipeline(out, output, fmt)
    report.output = output  # "-" for stdout, as the user spelled it
    return report


def check_output_path(output: str, inputs: Iterable[str | None] = ()) -> None:
    """Fail before any work when ``output`` can never be written, or is one
    of ``inputs`` under any name (the path itself, a symlink or a hard link:
    the same device and inode), which the rename would replace."""
    import os

    from beaminst.errors import OutputError

    if output == STDIO:
        return
    for path in inputs:
        if path and path != STDIO and _same_file(output, path):
            raise OutputError(f"is the same file as the input {path}; an output never replaces an input", output)
    if os.path.isdir(output):
        raise OutputError("is a directory, expected an output file path", output)
    directory = os.path.dirname(os.path.abspath(output))
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
    from beaminst.diff import diff_indexes

    with paused_gc():
        before, after = (_diff_side(p, s) for p, s in zip((before_path, after_path), sources, strict=True))
        return diff_indexes(before.index, after.index, before.source, after.source, show_payloads)


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector off while a pipeline pair is indexed and
    matched: that builds hundreds of thousands of objects and no cycles, and
    each full collection rescans all of them (from 5,000 to 20,000 transforms
    the collector's time grew 6 to 10x, the diff's own 4x)."""
    import gc

    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _diff_side(path: str, source: str | None) -> Loaded:
    import os

    if path != os.devnull:
        return load(path, source)
    from beaminst.beamproto import runner_api
    from beaminst.graph import build_index

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
) -> str:
    """``beaminst graph``: draw a pipeline (DOT, or SVG/PNG through Graphviz),
    written atomically; returns the format written. With ``against_path`` the
    manifest describes that original pipeline (the one instrumented).
    Composites at level ``depth`` and the grafted cache subgraphs (unless
    ``expand_cache``) are drawn as one node each."""
    from beaminst import render
    from beaminst.protoio import write_atomic

    chosen = render.graph_format(output, fmt)
    if chosen != "dot":
        render.require_graphviz(chosen)  # before any work
    check_output_path(output, (pipeline_path, against_path, manifest_path))
    loaded = load(pipeline_path)
    original = load(against_path) if against_path else None
    manifest = load_manifest(manifest_path)
    variables = render.bound_variables(manifest, (original or loaded).index)  # errors name the manifest
    title = loaded.source if original is None else f"{loaded.source} against {original.source}"
    dot = render.render_dot(loaded.index, variables, original.index if original else None, title, depth, expand_cache)
    write_atomic(output, dot.encode("utf-8") if chosen == "dot" else render.to_image(dot, chosen))
    return chosen
