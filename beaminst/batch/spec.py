"""What one ``beaminst batch`` is asked to do, as one typed value."""

from __future__ import annotations

from dataclasses import dataclass

from beaminst.batch.jobs import MODES
from beaminst.errors import BeaminstError, CacheDirError, ManifestError, OptionError
from beaminst.options import RewriteOptions, SourceRules


@dataclass(frozen=True)
class BatchSpec:
    """One batch: every pipeline file under ``src`` rewritten into ``dest``.

    ``src``: a directory (walked recursively) or a glob pattern; ``dest``:
    the directory the outputs go to, mirroring SRC's layout; ``options``:
    the rewrite's options, as for the single-file command (its ``cache_dir``,
    a path or a URL every worker reaches, is shared by every file); ``mode``:
    the rewrite, a key of :data:`beaminst.batch.MODES`; ``rules``: which
    transforms are unbounded sources; ``manifest``: one manifest for every
    file (default: ``X.manifest.json`` beside each ``X.pb``, else none);
    ``force``: rewrite outputs recorded as up to date too; ``jobs``: local
    worker processes (default: the CPU count); ``runner``: run the jobs as a
    Beam pipeline on this runner instead; ``pipeline_args``: Beam options for
    that pipeline and, with a cache dir URL, for its filesystem; ``reuse``:
    as ``instrument --reuse``, for every file (``mode`` instrument only).

    Made only when consistent: otherwise a :class:`~beaminst.errors.BeaminstError`
    names the option, the same line the CLI prints."""

    src: str
    dest: str
    options: RewriteOptions
    mode: str = "instrument"
    rules: SourceRules = SourceRules()
    manifest: str | None = None
    force: bool = False
    jobs: int | None = None
    runner: str | None = None
    pipeline_args: tuple[str, ...] = ()
    reuse: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "pipeline_args", tuple(self.pipeline_args))
        if self.mode not in MODES:
            raise BeaminstError(f"unknown mode {self.mode!r} (use one of {', '.join(MODES)})")
        if not self.options.cache_dir:
            raise CacheDirError(f"batch --mode {self.mode} needs --cache-dir: the cache transforms read and write there")
        if self.pipeline_args and not self.runner and not self.remote:
            raise OptionError("--pipeline-arg only applies with --runner, or with a --cache-dir URL (its filesystem's options)")
        if self.options.allow_empty and self.mode != "background-caching":
            raise OptionError("--allow-empty only applies with --mode background-caching")
        if self.reuse and self.mode != "instrument":
            raise OptionError(f"--reuse only applies with --mode instrument (not {self.mode})")
        if self.manifest == "-":
            raise ManifestError("batch cannot read the manifest from stdin; give a file", "--manifest")

    @property
    def remote(self) -> bool:
        """Whether the cache directory is a URL (its filesystem needs ``pipeline_args``)."""
        from beaminst.cache.cachefs import is_url

        return is_url(self.options.cache_dir)

    @property
    def filesystem_args(self) -> tuple[str, ...]:
        """The Beam options for the cache directory's filesystem: every
        ``pipeline_arg`` with a URL (Beam ignores those it does not know), none otherwise."""
        return self.pipeline_args if self.remote else ()
