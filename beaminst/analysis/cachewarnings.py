"""The warnings about the cache directory as a whole, made in one place so
that what repeats reports (a batch skip) can tell them from the rest."""

from __future__ import annotations

_PROBLEM = "cache: "
_MISSING = " does not exist: nothing is read from it"
_NOT_MADE = "could not create "


def cache_problem(problem: str) -> str:
    """One of the directory's problems (damaged shards, stray files: any key's)."""
    return f"{_PROBLEM}{problem}"


def missing_dir(path: str, streaming: bool) -> str:
    # Beam's file sinks make their directory when they run; its
    # StreamingCacheSink only when it is built, so beaminst makes it.
    creates = (
        "instrument and background-caching create it, with the full/ directory Beam's StreamingCache "
        "sink needs before its first bundle" if streaming else "the pipeline creates it"
    )
    return f"cache directory {path!r}{_MISSING}, every binding is computed and written ({creates})"


def sink_dir_not_made(full: str, why: str) -> str:
    """``<dir>/full`` could not be made for the streaming writes just saved."""
    return (
        f"{_NOT_MADE}{full!r} ({why}): Beam's StreamingCache sink needs it before its first bundle "
        "(beaminst run creates it before the job starts)"
    )


def about_whole_cache_dir(warning: str) -> bool:
    """Whether a warning is about the cache directory as a whole (its
    problems, which may be other pipelines' entries; that it is missing)
    rather than the pipeline and its own keys: what a batch skip, vouched for
    by the entries of the file's own keys only, cannot repeat as still true."""
    return (
        warning.startswith((_PROBLEM, _NOT_MADE))
        or (warning.startswith("cache directory ") and _MISSING in warning)
    )
