"""Grafting Beam's own interactive cache transforms into a pipeline proto.

The subgraphs are built by the Beam SDK itself (``reify_to_cache`` /
``unreify_from_cache`` over a ``FileBasedCacheManager`` or ``StreamingCache``,
and ``TestStream``), exactly as ``caching/write_cache.py`` and
``read_cache.py`` do, then copied into the target proto under fresh ids.
Identical coders, windowing strategies and environments are reused by content.

Building a cache-write subgraph costs ~65 ms of SDK work, so writes are built
once per *shape* (element coder, windowing, boundedness, capture flag and key
part lengths) with a placeholder key, and cloned per PCollection: the key is
substituted in unique names and in the pickled ``WriteImpl`` / sink DoFns
(bz2-compressed cloudpickle, where the key and the cache path are plain
strings, so a key of the same length keeps the pickle valid). Reads need their
cache files to exist at construction (``ReadFromText`` validates its glob) and
are rare, so they are built directly. A test proves that a cloned write is
byte-identical to one built directly for the same key.

This module imports the Beam SDK; it is only imported by the passes that need it.
"""

from __future__ import annotations

import base64
import bz2
import contextlib
import hashlib
import shutil
import types
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.internal import cloudpickle_pickler
from apache_beam.portability.api import beam_runner_api_pb2 as rapi
from apache_beam.runners.interactive import cache_manager as cache
from apache_beam.runners.interactive.caching.reify import WRITE_CACHE, unreify_from_cache
from apache_beam.runners.interactive.caching.streaming_cache import StreamingCache
from apache_beam.runners.pipeline_context import PipelineContext
from apache_beam.testing import test_stream

from beaminst import ipythonprobe, urns
from beaminst.cachefs import resolve
from beaminst.canonical import Signatures, digest
from beaminst.environments import new_python_environment, python_environment
from beaminst.errors import BeaminstError
from beaminst.ids import IdAllocator, allocators_for
from beaminst.labels import REIFY_BEFORE
from beaminst.streaming import require_local


class UnsupportedComponentError(BeaminstError):
    """The pipeline uses a coder or windowing the Python SDK cannot decode."""


@contextlib.contextmanager
def scratch_pipeline() -> Iterator[Any]:
    """A throwaway ``beam.Pipeline`` to build a subgraph in; Beam makes a
    local temp directory for every pipeline and only removes it on run().
    Every new ``Pipeline`` also resets Beam's filesystem options to its own:
    the caller's (a remote cache's endpoint and credentials) are put back, or
    a cache read would validate its files against another server. Building
    in it imports no IPython (:mod:`beaminst.ipythonprobe`)."""
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


# ---------------------------------------------------------------------------
# Payload surgery


def _decompress(raw: bytes) -> tuple[bytes, str] | None:
    if raw[:3] == b"BZh":
        with contextlib.suppress(Exception):
            return bz2.decompress(raw), "bz2"
    if raw[:1] == b"\x78":
        with contextlib.suppress(Exception):
            return zlib.decompress(raw), "zlib"
    return None


def _compress(data: bytes, method: str) -> bytes:
    # Beam's cloudpickle_pickler.dumps: compresslevel 9 for both.
    return bz2.compress(data, compresslevel=9) if method == "bz2" else zlib.compress(data, 9)


def substitute_in_pickle(encoded: bytes, old: bytes, new: bytes) -> bytes:
    """Replace ``old`` by ``new`` (same length) inside a Beam pickled payload."""
    try:
        raw = base64.b64decode(encoded, validate=True)
    except Exception:
        return encoded.replace(old, new)
    opened = _decompress(raw)
    if opened is None:
        return encoded.replace(old, new)
    data, method = opened
    if old not in data:
        return encoded
    return base64.b64encode(_compress(data.replace(old, new), method))


def pickle_mentions(encoded: bytes, needle: bytes) -> bool:
    try:
        raw = base64.b64decode(encoded, validate=True)
    except Exception:
        return needle in encoded
    opened = _decompress(raw)
    return needle in (opened[0] if opened else raw)


def _unwrap_pickled_coder(payload: bytes) -> tuple[Any, bytes, bytes] | None:
    """``beam:coder:pickled_python:v1`` payloads are a BytesValue holding
    ``ClassName$<base64 zlib pickle>`` (``coders.serialize_coder``)."""
    from google.protobuf import wrappers_pb2

    try:
        value = wrappers_pb2.BytesValue.FromString(payload)
    except Exception:
        return None
    name, sep, encoded = value.value.partition(b"$")
    if not sep:
        return None
    return value, name, encoded


def substitute_in_coder(payload: bytes, old: bytes, new: bytes) -> bytes:
    unwrapped = _unwrap_pickled_coder(payload)
    if unwrapped is None:
        return substitute_in_pickle(payload, old, new)
    value, name, encoded = unwrapped
    replaced = substitute_in_pickle(encoded, old, new)
    if replaced is encoded:
        return payload
    value.value = name + b"$" + replaced
    return value.SerializeToString()


def coder_mentions(payload: bytes, needle: bytes) -> bool:
    unwrapped = _unwrap_pickled_coder(payload)
    if unwrapped is None:
        return pickle_mentions(payload, needle)
    return pickle_mentions(unwrapped[2], needle)


def rewrite_payload(
    urn: str, payload: bytes, old: bytes | None, new: bytes | None, maps: dict[str, dict[str, str]]
) -> bytes:
    """Substitute the key and remap the ids held inside a transform payload
    (:mod:`beaminst.urns` says where they are); table payloads come out
    deterministically serialized, so a clone matches a direct build."""
    if not payload:
        return payload
    out = payload
    if old is not None and new is not None:
        if urn in urns.PAR_DO_FAMILY:
            p = rapi.ParDoPayload.FromString(payload)
            p.do_fn.payload = substitute_in_pickle(p.do_fn.payload, old, new)
            out = p.SerializeToString(deterministic=True)
        elif urn == urns.PICKLED_TRANSFORM:
            out = substitute_in_pickle(payload, old, new)
    out = urns.remap_payload(urn, out, maps)
    msg = urns.parse_payload(urn, out)
    if msg is not None:
        out = msg.SerializeToString(deterministic=True)
    if old is not None and new is not None and old in out:
        out = out.replace(old, new)  # plain strings (composite reprs and the like)
    return out


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
    code = reify_per_window.__code__.replace(co_filename="beaminst/beamgraft.py", co_firstlineno=1)
    rebuilt = types.FunctionType(
        code, {"__name__": __name__, "test_stream": test_stream}, "reify_per_window", reify_per_window.__defaults__
    )
    rebuilt.__qualname__ = reify_per_window.__qualname__
    rebuilt.__annotations__ = reify_per_window.__annotations__
    return rebuilt


def reify_to_cache(pcoll: Any, cache_key: str, cache_manager: Any, is_capture: bool) -> Any:
    """Beam's ``caching.reify.reify_to_cache`` (same labels, Beam's
    ``WriteCache``), with :func:`_reify_per_window`'s ``Reify``."""
    return (
        pcoll
        | f"{REIFY_BEFORE}{WRITE_CACHE}{cache_key}" >> beam.FlatMap(_reify_per_window())
        | f"{WRITE_CACHE}{cache_key}" >> cache.WriteCache(cache_manager, cache_key, is_capture=is_capture)
    )


_TEMPLATES: dict[tuple[Any, ...], tuple[Subgraph, Any]] = {}
_MAX_TEMPLATES = 256

# Any key will do to learn a shape's pcoder; this one has beaminst's key shape.
_PCODER_PROBE_KEY = "-".join(["p" * 10, "p" * 16, "p" * 16, "p" * 16])


# ---------------------------------------------------------------------------
# Subgraphs


@dataclass(frozen=True)
class Subgraph:
    """A Beam-built piece of pipeline: components of ``proto`` to graft."""

    proto: Any
    top: tuple[str, ...]  # top-level transforms of the piece, in order
    transforms: tuple[str, ...]  # all of them, hierarchy order
    pcollections: tuple[str, ...]  # PCollections the piece creates
    placeholder: str | None  # PCollection standing for the grafted input
    outputs: dict[str, str]  # name -> PCollection id (e.g. "main", or TestStream tags)
    key: str
    signatures: Signatures
    key_coders: frozenset[str]  # coders whose (pickled) payload holds the key
    # Transforms whose payload holds the key or coder ids; every other payload
    # is copied as it is (decompressing and re-serializing it would change nothing).
    rewrite_sites: frozenset[str]


def _piece(proto: Any, top: list[str], placeholder: str | None, outputs: dict[str, str], key: str) -> Subgraph:
    ts = proto.components.transforms
    order: list[str] = []
    stack = list(reversed(top))
    while stack:
        tid = stack.pop()
        order.append(tid)
        stack.extend(reversed(ts[tid].subtransforms))
    pcs: list[str] = []
    seen = {placeholder}
    for tid in order:
        # By tag: a proto map's iteration order can differ between processes,
        # and this order names the grafted PCollections (beaminst_X_p0, p1...).
        for _, pc in sorted(ts[tid].outputs.items()):
            if pc not in seen:
                seen.add(pc)
                pcs.append(pc)
    needle = key.encode("utf-8")
    key_coders = frozenset(
        cid for cid, c in proto.components.coders.items() if needle and c.spec.payload and coder_mentions(c.spec.payload, needle)
    )
    sites = frozenset(t for t in order if _needs_rewrite(ts[t], needle))
    return Subgraph(
        proto, tuple(top), tuple(order), tuple(pcs), placeholder, outputs, key, Signatures(proto.components),
        key_coders, sites,
    )


def _needs_rewrite(t: Any, needle: bytes) -> bool:
    payload = t.spec.payload
    if not payload:
        return False
    info = urns.payload_info(t.spec.urn, payload)
    if info.coders or info.windowing_strategies or info.environments or (needle and needle in payload):
        return True
    if not needle:
        return False
    if t.spec.urn in urns.PAR_DO_FAMILY:
        return pickle_mentions(rapi.ParDoPayload.FromString(payload).do_fn.payload, needle)
    return t.spec.urn == urns.PICKLED_TRANSFORM and pickle_mentions(payload, needle)


def template_key(key: str) -> str:
    """A placeholder with the same part lengths: 'Z' never occurs in a real key part."""
    return "-".join("Z" * len(part) for part in key.split("-"))


@dataclass
class GraftResult:
    top: list[str]
    transforms: list[str]
    outputs: dict[str, str]


class Grafter:
    """Builds Beam's cache subgraphs and grafts them into ``target`` (mutated)."""

    def __init__(
        self,
        target: Any,
        cache_dir: str,
        streaming: bool,
        environment_type: str | None = None,
        environment_config: str | None = None,
        trust_pickles: bool = False,
    ) -> None:
        self.target = target
        self.trust_pickles = trust_pickles
        self._checked: set[str] = set()
        # A URL stays a URL (the workers write through Beam's filesystems);
        # a local path is made absolute. Beam's StreamingCache is local only.
        if streaming:
            require_local(cache_dir)
        self.cache_dir = resolve(cache_dir)
        self.streaming = streaming
        self.alloc: dict[str, IdAllocator] = allocators_for(target)
        self._context = PipelineContext(target.components)
        self._target_sigs = Signatures(target.components)
        self._by_sig: dict[str, dict[bytes, str]] | None = None
        self._pcoders_saved: set[str] = set()
        self.cache_manager = self._new_cache_manager()
        # Grafted Python transforms run in the pipeline's own Python environment;
        # one is added (and reported) only when the pipeline has none.
        self._python_env = python_environment(target)
        self._environment_options = (environment_type, environment_config)
        self.added_environment: str | None = None

    def python_env(self) -> str:
        """The environment id grafted Python transforms and windowing strategies name."""
        if self._python_env is None:
            env = new_python_environment(*self._environment_options)
            eid = self.alloc["environments"].take("beaminst_python_env")
            self.target.components.environments[eid].CopyFrom(env)
            self._python_env = self.added_environment = eid
        return self._python_env

    @property
    def python_env_if_any(self) -> str | None:
        """The environment grafted transforms use, without adding one."""
        return self._python_env

    def _new_cache_manager(self) -> Any:
        if self.streaming:
            return StreamingCache(self.cache_dir, sample_resolution_sec=1.0)
        return cache.FileBasedCacheManager(self.cache_dir)

    # -- shapes --------------------------------------------------------------

    def _check_pickles(self, pc_id: str) -> None:
        """Before the SDK loads ``pc_id``'s coder or window function (which
        unpickles them), make sure that runs no code from the file."""
        if not self.trust_pickles and pc_id not in self._checked:
            from beaminst.safepickle import check_pcollection

            check_pcollection(self.target.components, pc_id)
            self._checked.add(pc_id)

    def _element_type(self, pc_id: str) -> Any:
        self._check_pickles(pc_id)
        coder_id = self.target.components.pcollections[pc_id].coder_id
        try:
            return self._context.element_type_from_coder_id(coder_id)
        except Exception:
            raise UnsupportedComponentError(self.undecodable(pc_id) or f"PCollection {pc_id!r}: coder {coder_id!r}") from None

    def _windowing(self, pc_id: str) -> Any:
        self._check_pickles(pc_id)
        ws_id = self.target.components.pcollections[pc_id].windowing_strategy_id
        try:
            return self._context.windowing_strategies.get_by_id(ws_id)
        except Exception:
            raise UnsupportedComponentError(self.undecodable(pc_id) or f"PCollection {pc_id!r}: windowing {ws_id!r}") from None

    def undecodable(self, pc_id: str) -> str | None:
        """What of ``pc_id`` the Python SDK cannot decode (so Beam's Python
        cache transforms cannot be built for it), named; None when all is well."""
        self._check_pickles(pc_id)
        c = self.target.components
        p = c.pcollections[pc_id]
        try:
            self._context.element_type_from_coder_id(p.coder_id)
            self._context.coders.get_by_id(p.coder_id)
        except Exception:
            return f"coder {p.coder_id!r} ({_coder_urns(c.coders, p.coder_id)})"
        try:
            self._context.windowing_strategies.get_by_id(p.windowing_strategy_id)
        except Exception:
            ws = c.windowing_strategies[p.windowing_strategy_id]
            return f"windowing strategy {p.windowing_strategy_id!r} ({ws.window_fn.urn})"
        return None

    def _shape(self, pc_id: str) -> tuple[Any, ...]:
        p = self.target.components.pcollections[pc_id]
        return (
            self._target_sigs.coder(p.coder_id),
            self._target_sigs.windowing(p.windowing_strategy_id),
            p.is_bounded,
        )

    def save_pcoder(self, pc_id: str, key: str) -> None:
        """Save, for ``key``, the pcoder ``WriteCache.expand`` saved when the
        cache of ``pc_id`` was written.

        Beam keeps pcoders only in the memory of the process that wrote the
        cache, so a read in a later process decodes with the wrong coder.
        beaminst takes the coder from Beam's own write subgraph for this
        PCollection's shape, so reads work in any process."""
        if key in self._pcoders_saved:
            return
        self.cache_manager.save_pcoder(self.written_pcoder(pc_id), "reify", key)
        self._pcoders_saved.add(key)

    def written_pcoder(self, pc_id: str) -> Any:
        """The coder cache files of ``pc_id`` are written with."""
        return self._write_template_and_pcoder(pc_id, _PCODER_PROBE_KEY, is_capture=False)[1]

    # -- building ------------------------------------------------------------

    def build_write(self, pc_id: str, key: str, is_capture: bool) -> Subgraph:
        """Beam's ``reify_to_cache`` after a stand-in for ``pc_id``, built with ``key``."""
        p = self.target.components.pcollections[pc_id]
        with deterministic_pickling(), scratch_pipeline() as tmp:
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
        return _piece(proto, top, ph_id, outputs, key)

    def write_template(self, pc_id: str, key: str, is_capture: bool) -> Subgraph:
        return self._write_template_and_pcoder(pc_id, key, is_capture)[0]

    def _write_template_and_pcoder(self, pc_id: str, key: str, is_capture: bool) -> tuple[Subgraph, Any]:
        # Templates are a pure function of the Beam SDK, the shape, the cache
        # directory and the cache manager kind, so the process keeps them: a
        # batch or a service pays for each shape once.
        shape = (
            *self._shape(pc_id), is_capture, tuple(len(x) for x in key.split("-")), self.cache_dir, self.streaming
        )
        entry = _TEMPLATES.get(shape)
        if entry is None:
            sub = self.build_write(pc_id, template_key(key), is_capture)
            entry = (sub, self.cache_manager.load_pcoder("reify", sub.key))
            if len(_TEMPLATES) >= _MAX_TEMPLATES:
                _TEMPLATES.pop(next(iter(_TEMPLATES)))
            _TEMPLATES[shape] = entry
        return entry

    def build_read(self, pc_id: str, key: str) -> Subgraph:
        """Beam's ``unreify_from_cache`` for ``key`` (its files must exist)."""
        self.save_pcoder(pc_id, key)
        with deterministic_pickling(), scratch_pipeline() as tmp:
            out = unreify_from_cache(pipeline=tmp, cache_key=key, cache_manager=self.cache_manager)
            proto, ctx = tmp.to_runner_api(return_context=True)
        root = proto.components.transforms[proto.root_transform_ids[0]]
        return _piece(proto, list(root.subtransforms), None, {"main": ctx.pcollections.get_id(out)}, key)

    def build_test_stream(self, tags: list[str]) -> Subgraph:
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
        return _piece(proto, list(root.subtransforms), None, {t: ctx.pcollections.get_id(outs[t]) for t in tags}, "")

    # -- grafting ------------------------------------------------------------

    def _target_index(self) -> dict[str, dict[bytes, str]]:
        if self._by_sig is None:
            c, s = self.target.components, self._target_sigs
            self._by_sig = {
                "coders": {s.coder(k): k for k in sorted(c.coders, reverse=True)},
                "windowing_strategies": {
                    _windowing_key(s, k, c.windowing_strategies[k].environment_id): k
                    for k in sorted(c.windowing_strategies, reverse=True)
                },
            }
        return self._by_sig

    def _component_maps(self, sub: Subgraph, old: bytes | None, new_key: bytes | None) -> dict[str, dict[str, str]]:
        """Map the piece's coders / windowing strategies / environments onto the
        target (kind -> piece id -> target id), adding what the target lacks
        under content-derived ids. Environments all map to the pipeline's own
        Python environment: the template's is never copied."""
        src = sub.proto.components
        sigs = sub.signatures
        by_sig = self._target_index()
        dst = self.target.components
        envs = {src.transforms[t].environment_id for t in sub.transforms if src.transforms[t].environment_id}
        wss = {src.pcollections[p].windowing_strategy_id for p in sub.pcollections}
        coders = {src.pcollections[p].coder_id for p in sub.pcollections}
        for t in sub.transforms:
            info = urns.payload_info(src.transforms[t].spec.urn, src.transforms[t].spec.payload)
            coders |= info.coders
            wss |= info.windowing_strategies
            envs |= info.environments
        for w in wss:
            coders.add(src.windowing_strategies[w].window_coder_id)
            if src.windowing_strategies[w].environment_id:
                envs.add(src.windowing_strategies[w].environment_id)
        # Close coders over their components.
        stack = list(coders)
        while stack:
            for comp in src.coders[stack.pop()].component_coder_ids:
                if comp not in coders:
                    coders.add(comp)
                    stack.append(comp)

        env_map = {e: self.python_env() for e in sorted(envs)}
        coder_map: dict[str, str] = {}
        # Pickled coders can carry the key too (a GroupByKey's deterministic key
        # coder remembers its label): substitute it, and sign what results.
        new_sig: dict[str, bytes] = {}
        for cid in _post_order(src.coders, coders):
            c = src.coders[cid]
            payload = c.spec.payload
            if old is not None and new_key is not None and cid in sub.key_coders:
                payload = substitute_in_coder(payload, old, new_key)
            if payload is c.spec.payload and not any(x in new_sig for x in c.component_coder_ids):
                sig = sigs.coder(cid)
            else:
                sig = digest(
                    b"coder", c.spec.urn, payload,
                    *(new_sig.get(x) or sigs.coder(x) for x in c.component_coder_ids),
                )
                new_sig[cid] = sig
            if sig not in by_sig["coders"]:
                added = self.alloc["coders"].take(f"beaminst_coder_{sig.hex()[:12]}")
                dst.coders[added].CopyFrom(c)
                dst.coders[added].spec.payload = payload
                dst.coders[added].component_coder_ids[:] = [coder_map[x] for x in c.component_coder_ids]
                by_sig["coders"][sig] = added
            coder_map[cid] = by_sig["coders"][sig]
        ws_map: dict[str, str] = {}
        for w in sorted(wss):
            env = env_map.get(src.windowing_strategies[w].environment_id, "")
            sig = _windowing_key(sigs, w, env)
            if sig not in by_sig["windowing_strategies"]:
                added = self.alloc["windowing_strategies"].take(f"beaminst_windowing_{sig.hex()[:12]}")
                dst.windowing_strategies[added].CopyFrom(src.windowing_strategies[w])
                ws = dst.windowing_strategies[added]
                ws.window_coder_id = coder_map[ws.window_coder_id]
                ws.environment_id = env
                by_sig["windowing_strategies"][sig] = added
            ws_map[w] = by_sig["windowing_strategies"][sig]
        return {"coders": coder_map, "windowing_strategies": ws_map, "environments": env_map}

    def graft(self, sub: Subgraph, key: str | None, input_pc: str | None, label: str) -> GraftResult:
        """Copy ``sub`` into the target under fresh ids; its placeholder input
        becomes ``input_pc``; ``key`` replaces the key it was built with."""
        src, dst = sub.proto.components, self.target.components
        old = sub.key.encode("utf-8") if key is not None and key != sub.key else None
        new = key.encode("utf-8") if old is not None else None
        maps = self._component_maps(sub, old, new)
        coder_map, ws_map, env_map = maps["coders"], maps["windowing_strategies"], maps["environments"]
        t_alloc, pc_alloc = self.alloc["transforms"], self.alloc["pcollections"]
        t_map = {t: t_alloc.take(f"beaminst_{label}_t{i}") for i, t in enumerate(sub.transforms)}
        pc_map = {p: pc_alloc.take(f"beaminst_{label}_p{i}") for i, p in enumerate(sub.pcollections)}
        if sub.placeholder is not None:
            assert input_pc is not None
            pc_map[sub.placeholder] = input_pc
        for p in sub.pcollections:
            out = dst.pcollections[pc_map[p]]
            out.CopyFrom(src.pcollections[p])
            if old is not None:
                out.unique_name = out.unique_name.replace(sub.key, key)  # type: ignore[arg-type]
            out.coder_id = coder_map[out.coder_id]
            out.windowing_strategy_id = ws_map[out.windowing_strategy_id]
        for t in sub.transforms:
            s = src.transforms[t]
            out = dst.transforms[t_map[t]]
            out.CopyFrom(s)
            if old is not None and new is not None:
                out.unique_name = s.unique_name.replace(sub.key, key)  # type: ignore[arg-type]
            if t in sub.rewrite_sites:
                out.spec.payload = rewrite_payload(s.spec.urn, s.spec.payload, old, new, maps)
            if old is not None and new is not None:
                for dd in out.display_data:  # e.g. the sink's "File Pattern"
                    if old in dd.payload:
                        dd.payload = dd.payload.replace(old, new)
            for tag, pc in s.inputs.items():
                out.inputs[tag] = pc_map[pc]
            for tag, pc in s.outputs.items():
                out.outputs[tag] = pc_map[pc]
            out.subtransforms[:] = [t_map[x] for x in s.subtransforms]
            if s.environment_id:
                out.environment_id = env_map[s.environment_id]
        return GraftResult([t_map[t] for t in sub.top], [t_map[t] for t in sub.transforms], {k: pc_map[v] for k, v in sub.outputs.items()})


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


def _windowing_key(sigs: Signatures, ws_id: str, environment_id: str) -> bytes:
    """A windowing strategy by content, with the environment it ends up naming
    in the target (an id there, not a signature: pieces map theirs first)."""
    return digest(b"windowing-in-target", sigs.windowing(ws_id, with_environment=False), environment_id)


def _post_order(coders: Any, ids: set[str]) -> list[str]:
    """Coder ids with components before the coders that use them; sorted ties."""
    out: list[str] = []
    done: set[str] = set()
    for start in sorted(ids):
        stack = [start]
        while stack:
            top = stack[-1]
            if top in done:
                stack.pop()
                continue
            pending = [c for c in coders[top].component_coder_ids if c not in done]
            if pending:
                stack.extend(pending)
                continue
            done.add(top)
            out.append(top)
            stack.pop()
    return out
