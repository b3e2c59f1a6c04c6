"""Planning a batch, once, in the calling process: find the files, pair
manifests, refuse unsafe destinations, sweep what dead writers left, and
split the jobs into those to run and those already up to date."""

from __future__ import annotations

import dataclasses
import os
import shlex
from dataclasses import dataclass

from beaminst.batch.freshness import STATE_FILE, Freshness
from beaminst.batch.jobs import FileResult, Job, result
from beaminst.batch.spec import BatchSpec
from beaminst.batch.sweep import sweep
from beaminst.errors import BeaminstError, OutputError

# What counts as a pipeline file: the extensions protoio reads as a Pipeline,
# minus the generic ``.bin``/``.txt``, and never a binding manifest.
PIPELINE_SUFFIXES = (".pb", ".binpb", ".textproto", ".pbtxt", ".txtpb", ".json")
MANIFEST_SUFFIX = ".manifest.json"


def is_pipeline_name(name: str) -> bool:
    lower = name.lower()
    if lower.startswith(".") or lower.endswith(MANIFEST_SUFFIX):
        return False
    return lower.endswith(PIPELINE_SUFFIXES)


def _glob_root(pattern: str) -> str:
    """The directory before the first wildcard: what outputs are relative to."""
    import glob

    parts = os.path.normpath(pattern).split(os.sep)
    fixed: list[str] = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    if not fixed:
        return "."
    return os.sep.join(fixed) or os.sep


def discover(src: str) -> tuple[str, list[str]]:
    """(root, sorted paths relative to root) of the pipeline files SRC names.

    A directory is walked recursively (hidden files and directories skipped,
    symlinked directories not followed); anything else is a glob pattern
    (``**`` recursive) whose root is the directory before the first wildcard.
    Either way only pipeline file names count (:func:`is_pipeline_name`).
    """
    import glob

    if os.path.isdir(src):
        root = src
        found = []
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            found += [os.path.join(dirpath, f) for f in filenames if is_pipeline_name(f)]
    else:
        root = _glob_root(src) if glob.has_magic(src) else (os.path.dirname(src) or ".")
        if not glob.has_magic(src) and not os.path.exists(src):
            raise BeaminstError("no such file or directory", src)
        found = [
            p
            for p in glob.glob(src, recursive=True)
            if os.path.isfile(p) and is_pipeline_name(os.path.basename(p))
        ]
    rels = sorted(os.path.relpath(p, root) for p in found)
    if not rels:
        raise BeaminstError(
            f"no pipeline files found (looked for {', '.join('*' + s for s in PIPELINE_SUFFIXES)}, "
            f"not *{MANIFEST_SUFFIX})",
            src,
        )
    return root, rels


def _missing_dirs(paths: list[str]) -> tuple[str, ...]:
    """The directories the files ``paths`` (absolute) would be written in,
    and their parents, that do not exist yet, deepest first: what a batch
    that writes nothing removes again."""
    missing: set[str] = set()
    for path in paths:
        d = os.path.dirname(path)
        while d not in missing and not os.path.lexists(d):
            missing.add(d)
            parent = os.path.dirname(d)
            if parent == d:
                break
            d = parent
    return tuple(sorted(missing, key=lambda d: (-d.count(os.sep), d)))


def paired_manifest(pipeline: str) -> str:
    """``X.pb`` -> ``X.manifest.json`` beside it."""
    stem, _ = os.path.splitext(pipeline)
    return stem + MANIFEST_SUFFIX


@dataclass(frozen=True)
class Plan:
    root: str
    dest: str
    jobs: list[Job]  # to run
    skipped: list[FileResult]
    freshness: Freshness  # to record what the jobs write
    made: tuple[str, ...] = ()  # directories the outputs need that did not exist (DEST's too), deepest first


def plan_batch(spec: BatchSpec) -> Plan:
    """Find the files, pair manifests, refuse unsafe destinations, and split
    into jobs to run and up-to-date outputs. Creates DEST (never under SRC).
    A cache dir URL's filesystem options go into every job."""
    from beaminst.cache.cachedir import full_dir_holding, is_within, scan_cache_dir
    from beaminst.cache.cachefs import resolve
    from beaminst.model.bounded import max_decompressed_bytes

    src, dest, cache_dir, manifest = spec.src, spec.dest, spec.options.cache_dir, spec.manifest
    root, rels = discover(src)
    root_real = os.path.realpath(root)
    dest_real = os.path.realpath(dest)
    if is_within(dest_real, root_real):
        where = "is" if dest_real == root_real else "is inside"
        # SRC a file or a glob: its files' directory is the source directory.
        whose = "" if os.path.isdir(src) else f" (where SRC {shlex.quote(src)} finds its files)"
        raise OutputError(
            f"destination {where} the source directory {root}{whose}; batch never writes into its source", dest
        )
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise OutputError("is not a directory (batch writes one output per pipeline into it)", dest)
    full = full_dir_holding(dest, cache_dir)
    if full is not None:
        raise OutputError(
            f"destination is inside the cache directory's full/ ({full}), which holds Beam's cache files only: "
            "write the outputs elsewhere", dest,
        )
    scan_cache_dir(cache_dir).refuse_if_too_deep()  # an unusable cache dir fails once, not per file
    options = dataclasses.replace(spec.options, cache_dir=resolve(cache_dir))  # a URL stays one: workers write through it
    remote = {"filesystem_args": list(spec.filesystem_args)} if spec.remote else {}
    reuse = {"reuse": True} if spec.reuse else {}  # absent otherwise: existing records keep their digests
    manifest_abs = None
    if manifest is not None:
        from beaminst.analysis.manifest import load_manifest

        load_manifest(manifest)  # malformed: one error, not one per file
        manifest_abs = os.path.abspath(manifest)
    dest_abs = os.path.abspath(dest)
    cap = max_decompressed_bytes()
    jobs: list[Job] = []
    for rel in rels:
        inp = os.path.abspath(os.path.join(root, rel))
        out = os.path.join(dest_abs, rel)
        # SRC inside DEST: dest/rel may still land in SRC (rel starting with SRC's own name).
        if is_within(os.path.realpath(out), root_real):
            raise OutputError(f"output {out} would be written into the source directory {root}", dest)
        if manifest_abs is None:
            beside = paired_manifest(inp)
            man = beside if os.path.exists(beside) else None
        else:
            man = manifest_abs
        jobs.append(
            Job(
                file=rel.replace(os.sep, "/"),
                input=inp,
                output=out,
                manifest=man,
                mode=spec.mode,
                options=options.to_json(),
                rules=spec.rules.to_json(),
                max_decompressed_bytes=cap,
                **remote,  # type: ignore[typeddict-item]
                **reuse,  # type: ignore[typeddict-item]
            )
        )
    made = _missing_dirs([job["output"] for job in jobs])
    try:
        os.makedirs(dest, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create destination directory: {e.strerror or e}", dest) from None
    sweep(dest_abs, [job["output"] for job in jobs], [os.path.join(dest_abs, STATE_FILE)])
    freshness = Freshness(dest_abs, options.cache_dir, jobs)
    if spec.force:
        return Plan(root, dest, jobs, [], freshness, made)
    todo: list[Job] = []
    skipped: list[FileResult] = []
    for j in jobs:
        if freshness.up_to_date(j):
            skipped.append({**result(j, "skipped"), **freshness.reported(j)})  # type: ignore[typeddict-item]
        else:
            todo.append(j)
    return Plan(root, dest, todo, skipped, freshness, made)
