"""The analysis stage: what Interactive Beam would see in a saved pipeline.

:func:`analyze` is a pure function of (indexed proto, manifest, cache dir
state, unbounded-source rules: :class:`~beaminst.options.SourceRules`). It
returns a plain :class:`Analysis` value that ``analyze`` prints and that
``instrument`` / ``background-caching`` plan from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from beaminst.analysis.cachekeys import ContentDigests, content_digests
from beaminst.analysis.cachewarnings import cache_problem, missing_dir
from beaminst.analysis.manifest import Manifest, resolve_bindings
from beaminst.analysis.sources import UnboundedSource, find_unbounded_sources, under_source
from beaminst.cache.cachedir import CacheDir
from beaminst.errors import shell_word
from beaminst.graph.index import GraphIndex
from beaminst.model.beamproto import runner_api
from beaminst.model.labels import holds_cache_transforms
from beaminst.options import SourceRules


@dataclass(frozen=True)
class Cacheable:
    pcollection: str
    var: str
    cache_key: str
    synthetic: bool  # bound by beaminst to an unbound unbounded-source output
    computed: bool
    cached: bool
    under_source: bool  # produced inside an unbounded source: never written
    reused: bool = False  # computed only because its complete cache exists (--reuse)


@dataclass(frozen=True)
class PCollectionInfo:
    id: str
    producer: str  # unique_name
    producer_id: str
    tag: str
    is_bounded: bool
    var: str | None
    cache_key: str | None
    cached: bool
    computed: bool

    @property
    def beam_str(self) -> str:
        """Beam's ``str(pcoll)``: the key of ``pcoll_to_pcoll_id``."""
        tag = None if self.tag == "None" else self.tag
        return f"PCollection[{self.producer}.{tag}]"


@dataclass(frozen=True)
class Analysis:
    index: GraphIndex
    digests: ContentDigests
    pcollections: dict[str, PCollectionInfo]
    cacheables: dict[str, Cacheable]  # by PCollection id, in manifest order
    unbounded_sources: tuple[UnboundedSource, ...]
    cache: CacheDir
    manifest_source: str = "<manifest>"  # for errors about bindings found later
    rules: SourceRules = SourceRules()  # noqa: RUF009 - frozen; which rules found the unbounded sources

    @property
    def has_unbounded_sources(self) -> bool:
        return bool(self.unbounded_sources)

    @property
    def streaming_cache(self) -> bool:
        """Beam switches to its StreamingCache when there are unbounded sources."""
        return self.has_unbounded_sources

    @property
    def cache_problems(self) -> tuple[str, ...]:
        """The cache directory's problems, a damaged set worded by whether a
        binding of this pipeline uses its key (:meth:`CacheDir.problems_for`)."""
        return self.cache.problems_for(c.cache_key for c in self.cacheables.values())

    @property
    def cache_problem_warnings(self) -> tuple[str, ...]:
        """The cache directory's problems, as the rewriting commands warn of them."""
        return tuple(map(cache_problem, self.cache_problems))

    @property
    def rewritten_already(self) -> bool:
        """Whether the pipeline holds beaminst's (Beam's) cache transforms: an
        instrumented or background-caching output, not an original."""
        return holds_cache_transforms(n.unique_name for n in self.index.nodes.values())

    @property
    def warnings(self) -> list[str]:
        """What would otherwise pass silently as "recompute everything": a
        cache directory that is not there, a computed variable with nothing
        complete to read back."""
        out = []
        if self.rewritten_already:
            out.append(
                "the pipeline already holds cache writes or reads (WriteCache_/ReadCache_ transforms: an instrumented "
                "output?); instrumenting it again adds a second write per binding: give the original pipeline"
            )
        path = self.cache.path
        if path is not None and not self.cache.exists:
            out.append(missing_dir(path, self.streaming_cache))
        source_outputs = {pc for s in self.unbounded_sources for pc in s.outputs.values()}
        for c in self.cacheables.values():
            if not c.computed or c.cached or c.synthetic or c.pcollection in source_outputs:
                continue  # a source output is replayed from its recording, computed or not
            if path is None:
                why = "there is no --cache-dir to read it from"
            elif self.cache.incomplete(c.cache_key):
                why = f"its cache {c.cache_key!r} is incomplete (shards missing or truncated)"
            elif self.cache.exists:
                why = f"{path!r} holds no complete cache under its key {c.cache_key!r}"
            else:
                continue  # said once, above
            out.append(f"{c.var!r} is listed as computed, but {why}: it is recomputed and written")
        out.extend(self._older_than_the_recording(source_outputs))
        if not self.unbounded_sources:
            unbounded = [pc for pc, i in self.pcollections.items() if not i.is_bounded]
            if unbounded:
                out.append(
                    f"{len(unbounded)} PCollection(s) are UNBOUNDED ({', '.join(sorted(unbounded)[:3])}"
                    f"{', ...' if len(unbounded) > 3 else ''}) but no unbounded source was recognised: instrument "
                    "will refuse; name the source's URN with --unbounded-urn, or pass --infer-unbounded"
                )
        return out

    def _older_than_the_recording(self, source_outputs: set[str]) -> list[str]:
        """Caches of what a source feeds that were written before that
        source's latest recording. A key does not change with the recording
        (Beam clears its cache when a background caching job starts again;
        keys here outlive it), so such a cache holds what an earlier
        recording gave: read back (computed, --reuse) it shows stale data
        next to the new recording. Local StreamingCache files only."""
        cache = self.cache
        if not self.streaming_cache or cache.path is None or not cache.exists or cache.remote:
            return []
        full = cache.full_dir()
        recorded_at: dict[str, float] = {}  # PCollection -> its newest upstream recording
        for pc in sorted(source_outputs):
            c = self.cacheables.get(pc)
            t = _mtime(os.path.join(full, c.cache_key)) if c is not None and c.cached else None
            if t is None:
                continue
            for fed in _fed_by(self.index, {pc}):  # one walk a source output: there are few
                recorded_at[fed] = max(t, recorded_at.get(fed, t))
        out = []
        for c in self.cacheables.values():
            if c.synthetic or not c.cached or c.pcollection in source_outputs or c.pcollection not in recorded_at:
                continue
            path = os.path.join(full, c.cache_key)
            written = _mtime(path)
            if written is not None and written < recorded_at[c.pcollection]:
                out.append(
                    f"{c.var!r} was cached before its source's latest recording: its cache holds what an earlier "
                    f"recording gave (keys do not change with the recording); rm {shell_word(path)} to compute "
                    "it from this one"
                )
        return out

    def pcoll_to_pcoll_id(self) -> dict[str, str]:
        """The proto-side counterpart of Beam's ``pipeline_instrument.pcoll_to_pcoll_id``."""
        return {info.beam_str: pc for pc, info in self.pcollections.items()}

    def to_json(self) -> dict[str, Any]:
        return {
            "pcollections": {
                pc: {
                    "producer": i.producer,
                    "producer_id": i.producer_id,
                    "tag": i.tag,
                    "is_bounded": i.is_bounded,
                    "var": i.var,
                    "cache_key": i.cache_key,
                    "cached": i.cached,
                    "computed": i.computed,
                }
                for pc, i in sorted(self.pcollections.items())
            },
            "cacheables": {
                pc: {
                    "var": c.var,
                    "cache_key": c.cache_key,
                    "synthetic": c.synthetic,
                    "cached": c.cached,
                    "computed": c.computed,
                }
                for pc, c in self.cacheables.items()
            },
            "unbounded_sources": [
                {
                    "transform_id": s.transform_id,
                    "unique_name": s.unique_name,
                    "urn": s.urn,
                    "outputs": dict(sorted(s.outputs.items())),
                    "rule": s.rule,
                }
                for s in self.unbounded_sources
            ],
            "has_unbounded_sources": self.has_unbounded_sources,
            "cache_dir": self.cache.path,
            "cache_problems": list(self.cache_problems),
            "warnings": self.warnings,
        }


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def _fed_by(index: GraphIndex, pcollections: set[str]) -> set[str]:
    """Every PCollection computed from ``pcollections`` (leaf consumers'
    outputs, followed downstream), in one walk."""
    seen: set[str] = set()
    stack = list(pcollections)
    while stack:
        for use in index.consumers.get(stack.pop(), ()):
            if use.is_leaf:
                for out in index.nodes[use.transform_id].outputs.values():
                    if out not in seen:
                        seen.add(out)
                        stack.append(out)
    return seen


def analyze(
    index: GraphIndex,
    manifest: Manifest,
    cache: CacheDir,
    rules: SourceRules = SourceRules(),  # noqa: B008 - frozen
    reuse: bool = False,
) -> Analysis:
    """Run the analysis stage. Linear in the size of the pipeline.

    ``rules`` say which transforms are unbounded sources beyond Beam's own
    rule (:mod:`beaminst.analysis.sources`). With ``reuse`` (or ``"computed":
    "auto"`` in the manifest) every binding whose complete cache exists under
    its content-derived key counts as computed: keys change with everything
    upstream, so after an edit only what lies downstream of it misses the
    cache and recomputes."""
    reuse = reuse or manifest.reuse
    digests = content_digests(index)
    resolved = resolve_bindings(manifest, index)
    sources = find_unbounded_sources(index, rules)
    source_ids = {s.transform_id for s in sources}
    streaming = bool(sources)

    def cacheable(pc: str, var: str, explicit_key: str | None, synthetic: bool, computed: bool) -> Cacheable:
        key = explicit_key or digests.key_for(var, pc, index.producer[pc])
        cached = cache.is_cached(key, streaming)
        reused = reuse and cached and not computed and not synthetic
        return Cacheable(
            pc, var, key, synthetic, computed or reused, cached,
            under_source(index, index.producer[pc], source_ids), reused,
        )

    cacheables: dict[str, Cacheable] = {}
    for b in resolved.by_var.values():
        cacheables[b.pcollection] = cacheable(b.pcollection, b.var, b.cache_key, False, b.computed)
    # Beam's utils.watch_sources: every unbound source output gets a variable.
    for s in sources:
        for pc in s.outputs.values():
            if pc not in cacheables:
                cacheables[pc] = cacheable(pc, digests.synthetic_var(pc), None, True, False)

    unbounded = runner_api().IsBounded.UNBOUNDED
    infos = {}
    nodes, pcolls = index.nodes, index.pcollections
    for pc, tid in index.producer.items():
        c = cacheables.get(pc)
        infos[pc] = PCollectionInfo(
            id=pc,
            producer=nodes[tid].unique_name,
            producer_id=tid,
            tag=index.producer_tag(pc),
            is_bounded=pcolls[pc].is_bounded != unbounded,
            var=c.var if c else None,
            cache_key=c.cache_key if c else None,
            cached=c.cached if c else False,
            computed=c.computed if c else False,
        )
    return Analysis(index, digests, infos, cacheables, sources, cache, manifest.source, rules)
