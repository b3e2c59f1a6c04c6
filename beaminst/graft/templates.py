"""Building Beam's cache subgraphs with the Beam SDK.

The only module of :mod:`beaminst.graft` that imports the SDK, and it is
imported only when a piece is not in the template store: a cache write
(``reify_to_cache`` with beaminst's per-window ``Reify``), a cache read
(``unreify_from_cache``; its files must exist) and the TestStream
``_replace_with_cached_inputs`` adds, each built in a scratch pipeline over a
stand-in for the target PCollection, as Interactive Beam builds them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import types
from collections.abc import Callable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.internal import cloudpickle_pickler
from apache_beam.portability.api import beam_runner_api_pb2 as rapi
from apache_beam.runners.interactive import cache_manager as cache
from apache_beam.runners.interactive.caching.reify import WRITE_CACHE, unreify_from_cache
from apache_beam.runners.interactive.caching.streaming_cache import StreamingCache
from apache_beam.runners.pipeline_context import PipelineContext
from apache_beam.testing import test_stream

from beaminst.errors import UnsupportedComponentError
from beaminst.graft import ipythonprobe
from beaminst.graft.reified import retype_cache_holders, type_holders
from beaminst.graft.subgraph import Subgraph, piece
from beaminst.model.labels import REIFY_BEFORE


@contextlib.contextmanager
def scratch_pipeline() -> Iterator[Any]:
    """A throwaway ``beam.Pipeline`` to build a subgraph in; Beam makes a
    local temp directory for every pipeline and only removes it on run().
    Every new ``Pipeline`` also resets Beam's filesystem options to its own:
    the caller's (a remote cache's endpoint and credentials) are put back, or
    a cache read would validate its files against another server. Building
    in it imports no IPython (:mod:`beaminst.graft.ipythonprobe`)."""
    from apache_beam.io.filesystems import FileSystems

    saved = FileSystems._pipeline_options
    with ipythonprobe.without_import():
        p = beam.Pipeline()
        FileSystems.set_options(saved)
        try:
            yield p
        finally:
            shutil.rmtree(getattr(p, "local_tempdir", ""), ignore_errors=True)


@contextlib.contextmanager
def deterministic_pickling() -> Iterator[None]:
    """Cloudpickle tags classes defined inside functions (Beam's
    ``StreamingWriteToText``, ...) with a random uuid4; derive it from the
    class's qualified name instead so the same input gives the same bytes."""
    config = cloudpickle_pickler.DEFAULT_CONFIG
    saved = config.id_generator

    def stable_id(cls: type) -> str:
        name = f"{getattr(cls, '__module__', '')}.{getattr(cls, '__qualname__', cls.__name__)}"
        return hashlib.sha256(name.encode("utf-8")).hexdigest()[:32]

    config.id_generator = stable_id
    try:
        yield
    finally:
        config.id_generator = saved


# The reify function is pickled by value into every cache write, with the
# file and module names below: they are part of every output's bytes, so they
# stay those of the module it was first defined in (beaminst/beamgraft.py)
# wherever the code lives now.
_REIFY_FILE = "beaminst/beamgraft.py"
_REIFY_MODULE = "beaminst.beamgraft"


def _reify_per_window() -> Any:
    """Beam's ``Reify``, invoked once per window.

    Beam's ``Reify`` holds each element's whole ``WindowedValue`` but is
    invoked once per *element*, so its output sits in all of the element's
    windows and the cache sink (which rewindows into the global window) writes
    it once per window: with sliding windows every element comes back k times
    in each of its k windows. Asking for the window makes the runner invoke it
    once per window with a one-window value, so the cache holds each
    (element, window) exactly once. A function defined here is pickled by
    value (workers need Beam, not beaminst); a fresh one per build, since
    unpickling a dynamic *class* in this process would mutate the one we
    pickle next (cloudpickle tracks classes by id), and bytes would drift."""

    def reify_per_window(e: Any, wv: Any = beam.DoFn.WindowedValueParam, w: Any = beam.DoFn.WindowParam) -> Any:
        yield test_stream.WindowedValueHolder(wv)

    # By value, cloudpickle keeps the code's file name, first line number and
    # the module's ``__file__``: where beaminst happens to be installed, and
    # any edit above this line, so the same input gave other bytes from an
    # editable install than from a wheel. Rebuilt over a relative name, line
    # 1, and only the globals it reads.
    code = reify_per_window.__code__.replace(co_filename=_REIFY_FILE, co_firstlineno=1)
    rebuilt = types.FunctionType(
        code, {"__name__": _REIFY_MODULE, "test_stream": test_stream}, "reify_per_window", reify_per_window.__defaults__
    )
    rebuilt.__qualname__ = reify_per_window.__qualname__
    rebuilt.__annotations__ = reify_per_window.__annotations__
    return rebuilt


def reify_to_cache(pcoll: Any, cache_key: str, cache_manager: Any, is_capture: bool) -> Any:
    """Beam's ``caching.reify.reify_to_cache`` (same labels, Beam's
    ``WriteCache``), with :func:`_reify_per_window`'s ``Reify``, its output
    typed so that it, and the pcoder, fall back to cloudpickle
    (:mod:`beaminst.graft.reified`)."""
    reified = type_holders(pcoll | f"{REIFY_BEFORE}{WRITE_CACHE}{cache_key}" >> beam.FlatMap(_reify_per_window()))
    return reified | f"{WRITE_CACHE}{cache_key}" >> cache.WriteCache(cache_manager, cache_key, is_capture=is_capture)


@contextlib.contextmanager
def _sink_builds_leave_nothing(manager: Any) -> Iterator[None]:
    """Beam's ``StreamingCacheSink`` makes ``<dir>/full`` (and ``<dir>``)
    when it is built, with ``pathlib.Path.mkdir``: for the build, that
    method makes nothing at or under the cache directory. Building a template
    is not writing an output: otherwise a command that failed after a build
    left the directory behind, and whether it appeared depended on the
    template store. (Removing what a build made afterwards raced with other
    processes making it meanwhile; replacing ``streaming_cache.Path`` put the
    stand-in into the sink's pickled globals.) beaminst makes ``full/`` when
    it writes a streaming proto (:func:`beaminst.cache.streaming.make_sink_dir`)."""
    if not isinstance(manager, StreamingCache):
        yield
        return
    import pathlib

    root = os.path.abspath(manager._cache_dir)
    real = pathlib.Path.mkdir

    def mkdir(self: pathlib.Path, *args: Any, **kwargs: Any) -> None:
        path = os.path.abspath(self)
        if path == root or path.startswith(root + os.sep):
            return
        real(self, *args, **kwargs)

    pathlib.Path.mkdir = mkdir  # type: ignore[method-assign]
    try:
        yield
    finally:
        pathlib.Path.mkdir = real  # type: ignore[method-assign]


def new_cache_manager(cache_dir: str, streaming: bool) -> Any:
    if streaming:
        return StreamingCache(cache_dir, sample_resolution_sec=1.0)
    return cache.FileBasedCacheManager(cache_dir)


class Builder:
    """Builds pieces for PCollections of ``components`` (the target's, read
    only) with ``cache_manager``. ``check_pickles(pc_id)`` runs before the SDK
    loads a PCollection's coder or window function (which unpickles them)."""

    def __init__(self, components: Any, cache_manager: Any, check_pickles: Callable[[str], None]) -> None:
        self._components = components
        self.cache_manager = cache_manager
        self.check_pickles = check_pickles
        self._context = PipelineContext(components)

    def undecodable(self, pc_id: str) -> str | None:
        """What of ``pc_id`` the Python SDK cannot decode (so Beam's Python
        cache transforms cannot be built for it), named; None when all is well."""
        self.check_pickles(pc_id)
        c = self._components
        p = c.pcollections[pc_id]
        try:
            self._context.coders.get_by_id(p.coder_id)
        except Exception:
            return f"cannot decode coder {p.coder_id!r} ({_coder_urns(c.coders, p.coder_id)})"
        try:
            self._context.element_type_from_coder_id(p.coder_id)
        except Exception as e:
            # A custom coder without to_type_hint: it decodes, but the cache
            # transforms' PCollections cannot be typed (Interactive Beam
            # fails on the same call).
            return (
                f"coder {p.coder_id!r} ({_coder_urns(c.coders, p.coder_id)}) gives no element type "
                f"(its to_type_hint raises {type(e).__name__}; Interactive Beam fails the same way)"
            )
        try:
            self._context.windowing_strategies.get_by_id(p.windowing_strategy_id)
        except Exception:
            ws = c.windowing_strategies[p.windowing_strategy_id]
            return f"cannot decode windowing strategy {p.windowing_strategy_id!r} ({ws.window_fn.urn})"
        return None

    def _element_type(self, pc_id: str) -> Any:
        self.check_pickles(pc_id)
        coder_id = self._components.pcollections[pc_id].coder_id
        try:
            return self._context.element_type_from_coder_id(coder_id)
        except Exception:
            raise UnsupportedComponentError(self.undecodable(pc_id) or f"PCollection {pc_id!r}: coder {coder_id!r}") from None

    def _windowing(self, pc_id: str) -> Any:
        self.check_pickles(pc_id)
        ws_id = self._components.pcollections[pc_id].windowing_strategy_id
        try:
            return self._context.windowing_strategies.get_by_id(ws_id)
        except Exception:
            raise UnsupportedComponentError(self.undecodable(pc_id) or f"PCollection {pc_id!r}: windowing {ws_id!r}") from None

    def write(self, pc_id: str, key: str, is_capture: bool) -> tuple[Subgraph, Any]:
        """Beam's ``reify_to_cache`` after a stand-in for ``pc_id``, built with
        ``key``, and the pcoder its ``WriteCache`` saved for the key."""
        p = self._components.pcollections[pc_id]
        with deterministic_pickling(), scratch_pipeline() as tmp, _sink_builds_leave_nothing(self.cache_manager):
            ph = tmp | "CreatePInput" >> beam.Create([], reshuffle=False)
            ph.element_type = self._element_type(pc_id)
            ph.is_bounded = p.is_bounded != rapi.IsBounded.UNBOUNDED
            ph._windowing = self._windowing(pc_id)
            out = reify_to_cache(ph, key, self.cache_manager, is_capture)
            proto, ctx = tmp.to_runner_api(return_context=True)
        ph_id = ctx.pcollections.get_id(ph)
        root = proto.components.transforms[proto.root_transform_ids[0]]
        top = [t for t in root.subtransforms if proto.components.transforms[t].unique_name != "CreatePInput"]
        outputs = {"main": ctx.pcollections.get_id(out)} if isinstance(out, beam.pvalue.PCollection) else {}
        return piece(proto, top, ph_id, outputs, key), self.cache_manager.load_pcoder("reify", key)

    def read(self, key: str) -> Subgraph:
        """Beam's ``unreify_from_cache`` for ``key`` (its files must exist, and
        its pcoder be saved in the cache manager)."""
        with deterministic_pickling(), scratch_pipeline() as tmp:
            out = unreify_from_cache(pipeline=tmp, cache_key=key, cache_manager=self.cache_manager)
            retype_cache_holders(tmp)
            proto, ctx = tmp.to_runner_api(return_context=True)
        root = proto.components.transforms[proto.root_transform_ids[0]]
        return piece(proto, list(root.subtransforms), None, {"main": ctx.pcollections.get_id(out)}, key)

    def test_stream(self, tags: list[str]) -> Subgraph:
        """The TestStream ``_replace_with_cached_inputs`` adds, one output per key."""
        with deterministic_pickling(), scratch_pipeline() as tmp:
            stream = test_stream.TestStream(output_tags=set(tags), coder=self.cache_manager._default_pcoder)
            # Beam keeps the tags in a set and makes one output per tag in its
            # iteration order, which string hashing changes from process to
            # process: the output PCollections' ids (and so the output's
            # bytes) swapped between runs. A view ordered by tag iterates the same.
            stream.output_tags = dict.fromkeys(sorted(tags)).keys()
            outs = tmp | stream
            proto, ctx = tmp.to_runner_api(return_context=True)
        if isinstance(outs, beam.pvalue.PCollection):
            outs = {tags[0]: outs}
        root = proto.components.transforms[proto.root_transform_ids[0]]
        return piece(proto, list(root.subtransforms), None, {t: ctx.pcollections.get_id(outs[t]) for t in tags}, "")


def _coder_urns(coders: Any, coder_id: str) -> str:
    """The URNs of a coder and its components the Python SDK does not know
    (all of them when it knows each one alone)."""
    from apache_beam.coders.coders import Coder

    known = set(Coder._known_urns)
    seen, stack, unknown, every = set(), [coder_id], [], []
    while stack:
        cid = stack.pop()
        if cid in seen or cid not in coders:
            continue
        seen.add(cid)
        every.append(coders[cid].spec.urn)
        if coders[cid].spec.urn not in known:
            unknown.append(coders[cid].spec.urn)
        stack.extend(coders[cid].component_coder_ids)
    return ", ".join(dict.fromkeys(unknown or every))
