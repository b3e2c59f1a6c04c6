"""The :class:`Grafter`: Beam's cache subgraphs for a target proto, and
copying them into it.

Building a cache-write subgraph costs ~65 ms of SDK work (and the SDK import
a second), so writes are built once per *shape* (element coder, windowing,
boundedness, capture flag and key part lengths) with a placeholder key, kept
in this process and in the template store (:mod:`beaminst.graft.store`), and
cloned per PCollection: the key is substituted in unique names and in the
pickled ``WriteImpl`` / sink DoFns (:mod:`beaminst.graft.pickles`). Reads need
their cache files to exist at construction (``ReadFromText`` validates its
glob), so they are stored by their exact key; TestStreams by their tags. A
test proves that a cloned write is byte-identical to one built directly for
the same key, and another that a stored template gives the same bytes as a
built one.

The Beam SDK is imported only to build what neither this process nor the
store holds (:mod:`beaminst.graft.templates`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from beaminst.cache.cachefs import resolve
from beaminst.cache.streaming import require_local
from beaminst.errors import UnsupportedComponentError
from beaminst.graft.environments import new_python_environment, python_environment
from beaminst.graft.pickles import rewrite_payload, substitute_in_coder
from beaminst.graft.store import TemplateStore
from beaminst.graft.subgraph import Subgraph, template_key
from beaminst.graph.index import Node, read_node
from beaminst.model import urns
from beaminst.model.canonical import Signatures, digest
from beaminst.model.ids import IdAllocator, allocators_for

__all__ = ["GraftResult", "Grafter", "Subgraph", "UnsupportedComponentError", "forget_templates", "template_key"]

# Templates are a pure function of the Beam SDK, the shape, the cache
# directory and the cache manager kind, so the process keeps them: a batch or
# a service pays for each shape once (and, with the store, once per machine).
_TEMPLATES: dict[tuple[Any, ...], Subgraph] = {}
_PCODERS: dict[tuple[Any, ...], Any] = {}  # the coder each write template's cache is written with
_MAX_TEMPLATES = 256

# Any key will do to learn a shape's pcoder; this one has beaminst's key shape.
_PCODER_PROBE_KEY = "-".join(["p" * 10, "p" * 16, "p" * 16, "p" * 16])


def forget_templates() -> None:
    """Drop the templates this process keeps (the store's stay)."""
    _TEMPLATES.clear()
    _PCODERS.clear()


def _remember(table: dict[tuple[Any, ...], Any], shape: tuple[Any, ...], value: Any) -> None:
    if len(table) >= _MAX_TEMPLATES:
        table.pop(next(iter(table)))
    table[shape] = value


@dataclass(frozen=True)
class GraftResult:
    """What one graft added to the target."""

    top: tuple[str, ...]  # its top-level transforms
    transforms: tuple[str, ...]  # all of them, hierarchy order
    outputs: Mapping[str, str]  # name -> PCollection id
    nodes: Mapping[str, Node]  # each transform's structure, as written


@dataclass
class _Referenced:
    """The components a piece's transforms and PCollections reference."""

    coders: set[str]
    windowing_strategies: set[str]
    environments: set[str]


@dataclass(frozen=True)
class _TemplateFacts:
    """What every graft of one template (the same Subgraph serves every graft
    of its shape) would otherwise recompute."""

    sub: Subgraph  # held, so its id (the key these are kept under) is not reused
    referenced: _Referenced
    coder_order: list[str]  # its referenced coders, components first
    keyed_coders: frozenset[str]  # those a key reaches
    fixed_coders: dict[str, str]  # the others' ids in the target, filled as they are mapped
    nodes: dict[str, Node]  # its transforms' structure
    keyed_display_data: dict[str, tuple[int, ...]]  # transform -> its display data holding the key


class Grafter:
    """Beam's cache subgraphs for ``target``, grafted into it (mutated)."""

    def __init__(
        self,
        target: Any,
        cache_dir: str,
        streaming: bool,
        environment_type: str | None = None,
        environment_config: str | None = None,
        trust_pickles: bool = False,
        nodes: Mapping[str, Node] | None = None,
    ) -> None:
        """``nodes``: ``target``'s transforms (:func:`beaminst.graph.index.read_nodes`),
        when read already."""
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
        self._target_sigs = Signatures(target.components)
        self._by_sig: dict[str, dict[bytes, str]] | None = None
        self._per_template: dict[int, _TemplateFacts] = {}
        self._pcoders_saved: set[str] = set()
        self._builder: Any = None
        self.store = TemplateStore.open()
        # Grafted Python transforms run in the pipeline's own Python environment;
        # one is added (and reported) only when the pipeline has none.
        self._python_env = python_environment(target, nodes)
        self._environment_options = (environment_type, environment_config)
        self.added_environment: str | None = None

    @property
    def builder(self) -> Any:
        """The SDK-side builder (:class:`beaminst.graft.templates.Builder`): the Beam SDK, only now."""
        if self._builder is None:
            from beaminst.graft import templates

            manager = templates.new_cache_manager(self.cache_dir, self.streaming)
            self._builder = templates.Builder(self.target.components, manager, self._check_pickles)
        return self._builder

    @property
    def cache_manager(self) -> Any:
        """Beam's cache manager for the cache directory (imports the SDK)."""
        return self.builder.cache_manager

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

    # -- shapes --------------------------------------------------------------

    def _check_pickles(self, pc_id: str) -> None:
        """Before the SDK loads ``pc_id``'s coder or window function (which
        unpickles them), make sure that runs no code from the file.

        A write template kept or stored for ``pc_id``'s shape under the same
        ``trust_pickles`` was built from these very bytes (the shape signs
        the coder's closure and the windowing strategy), so they passed this
        check then: a file is refused or accepted whether or not the SDK is
        asked, and a template built with ``--trust-pickles`` never serves a
        run without it."""
        if not self.trust_pickles and pc_id not in self._checked:
            from beaminst.model.safepickle import check_pcollection

            check_pcollection(self.target.components, pc_id)
            self._checked.add(pc_id)

    def _shape(self, pc_id: str) -> tuple[Any, ...]:
        p = self.target.components.pcollections[pc_id]
        return (
            self._target_sigs.coder(p.coder_id),
            self._target_sigs.windowing(p.windowing_strategy_id),
            p.is_bounded,
        )

    def _write_shape(self, pc_id: str, key: str, is_capture: bool) -> tuple[Any, ...]:
        """What a write template for ``pc_id`` depends on: the PCollection's
        shape, the capture flag, the key's part lengths (the placeholder's),
        the cache directory, the cache manager kind and whether pickles were checked."""
        return (
            *self._shape(pc_id), is_capture, tuple(len(x) for x in key.split("-")), self.cache_dir, self.streaming,
            self.trust_pickles,
        )

    def _depends_on(self, shape: tuple[Any, ...], **more: Any) -> dict[str, Any]:
        """What a template for a PCollection of ``shape`` depends on, as the store's key names it."""
        coder, windowing, bounded = shape[:3]
        return {
            "coder": coder.hex(), "windowing": windowing.hex(), "bounded": int(bounded),
            "cache_dir": self.cache_dir, "streaming": self.streaming, "trust_pickles": self.trust_pickles, **more,
        }

    def _write_key(self, shape: tuple[Any, ...]) -> str:
        """The store's key for the write template of ``shape`` (:meth:`_write_shape`)."""
        assert self.store is not None
        _, _, _, is_capture, key_parts, *_ = shape
        return self.store.key("write", self._depends_on(shape, capture=is_capture, key_parts=list(key_parts)))

    def _stored_write(self, shape: tuple[Any, ...]) -> Subgraph | None:
        return None if self.store is None else self.store.load(self._write_key(shape))

    def _save_write(self, shape: tuple[Any, ...], sub: Subgraph) -> None:
        if self.store is not None:
            self.store.save(self._write_key(shape), sub)

    def undecodable(self, pc_id: str) -> str | None:
        """What of ``pc_id`` the Python SDK cannot decode (so Beam's Python
        cache transforms cannot be built for it), named; None when all is well.
        A write template for its shape, kept or stored, was built from this
        very coder and windowing, so it answers without the SDK."""
        for is_capture in (False, True):
            shape = self._write_shape(pc_id, _PCODER_PROBE_KEY, is_capture)
            if shape in _TEMPLATES:
                return None
            stored = self._stored_write(shape)
            if stored is not None:
                _remember(_TEMPLATES, shape, stored)
                return None
        return self.builder.undecodable(pc_id)

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
        """The coder cache files of ``pc_id`` are written with (a Beam SDK object)."""
        shape = self._write_shape(pc_id, _PCODER_PROBE_KEY, False)
        if shape not in _PCODERS:
            sub, pcoder = self.builder.write(pc_id, template_key(_PCODER_PROBE_KEY), False)
            _remember(_PCODERS, shape, pcoder)
            if shape not in _TEMPLATES:
                _remember(_TEMPLATES, shape, sub)
                self._save_write(shape, sub)
        return _PCODERS[shape]

    # -- templates -----------------------------------------------------------

    def build_write(self, pc_id: str, key: str, is_capture: bool) -> Subgraph:
        """Beam's ``reify_to_cache`` after a stand-in for ``pc_id``, built with ``key`` by the SDK."""
        return self.builder.write(pc_id, key, is_capture)[0]

    def write_template(self, pc_id: str, key: str, is_capture: bool) -> Subgraph:
        """The cache write for ``pc_id``, built with a placeholder of ``key``'s
        shape (:func:`template_key`): kept, stored, or built now."""
        shape = self._write_shape(pc_id, key, is_capture)
        sub = _TEMPLATES.get(shape)
        if sub is None:
            sub = self._stored_write(shape)
            if sub is None:
                sub, pcoder = self.builder.write(pc_id, template_key(key), is_capture)
                _remember(_PCODERS, shape, pcoder)
                self._save_write(shape, sub)
            _remember(_TEMPLATES, shape, sub)
        return sub

    def build_read(self, pc_id: str, key: str) -> Subgraph:
        """Beam's ``unreify_from_cache`` for ``key`` (its files must exist when it is built)."""
        return self._stored_or_built(
            "read", self._depends_on(self._shape(pc_id), cache_key=key),
            lambda: self._build_read(pc_id, key),
        )

    def _build_read(self, pc_id: str, key: str) -> Subgraph:
        self.save_pcoder(pc_id, key)
        return self.builder.read(key)

    def build_test_stream(self, tags: list[str]) -> Subgraph:
        """The TestStream ``_replace_with_cached_inputs`` adds, one output per key."""
        depends = {"tags": list(tags), "cache_dir": self.cache_dir, "streaming": self.streaming}
        return self._stored_or_built("test_stream", depends, lambda: self.builder.test_stream(tags))

    def _stored_or_built(self, kind: str, depends: dict[str, Any], build: Callable[[], Subgraph]) -> Subgraph:
        if self.store is None:
            return build()
        key = self.store.key(kind, depends)
        sub = self.store.load(key)
        if sub is None:
            sub = build()
            self.store.save(key, sub)
        return sub

    # -- grafting ------------------------------------------------------------

    def _target_index(self) -> dict[str, dict[bytes, str]]:
        """Signature -> id of the target's coders and windowing strategies
        (ties: the smallest id)."""
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

    def _add_or_get(self, kind: str, sig: bytes, prefix: str, fill: Callable[[Any], None]) -> str:
        """The target's ``kind`` component with signature ``sig``; when it has
        none, one is added under a content-derived id and ``fill``-ed."""
        known = self._target_index()[kind]
        if sig not in known:
            added = self.alloc[kind].take(f"{prefix}{sig.hex()[:12]}")
            fill(getattr(self.target.components, kind)[added])
            known[sig] = added
        return known[sig]

    def _component_maps(
        self, sub: Subgraph, facts: _TemplateFacts, old: bytes | None, new_key: bytes | None
    ) -> dict[str, dict[str, str]]:
        """Map the piece's coders / windowing strategies / environments onto the
        target (kind -> piece id -> target id), adding what the target lacks.
        Environments all map to the pipeline's own Python environment: the
        template's is never copied. ``facts``: the template's (:meth:`_template_facts`)."""
        refs = facts.referenced
        env_map = {e: self.python_env() for e in sorted(refs.environments)}
        coder_map = self._map_coders(sub, facts.coder_order, facts.keyed_coders, facts.fixed_coders, old, new_key)
        ws_map = self._map_windowing(sub, refs.windowing_strategies, coder_map, env_map)
        return {"coders": coder_map, "windowing_strategies": ws_map, "environments": env_map}

    def _template_facts(self, sub: Subgraph) -> _TemplateFacts:
        facts = self._per_template.get(id(sub))
        if facts is None or facts.sub is not sub:
            refs = _referenced(sub)
            order = _post_order(sub.proto.components.coders, refs.coders)
            ts = sub.proto.components.transforms
            nodes = {t: read_node(ts[t], t) for t in sub.transforms}
            placeholder = sub.key.encode("utf-8")
            keyed_dd = {
                t: idx for t in sub.transforms
                if (idx := tuple(i for i, dd in enumerate(ts[t].display_data) if placeholder in dd.payload))
            }
            facts = _TemplateFacts(sub, refs, order, _keyed_coders(sub, order), {}, nodes, keyed_dd)
            self._per_template[id(sub)] = facts
        return facts

    def _map_coders(
        self, sub: Subgraph, order: list[str], keyed: frozenset[str], fixed: dict[str, str],
        old: bytes | None, new_key: bytes | None,
    ) -> dict[str, str]:
        """Components before the coders that use them (``order``). Pickled
        coders can carry the key too (a GroupByKey's deterministic key coder
        remembers its label): it is substituted, and what results is signed.
        A coder no key reaches (not in ``keyed``) maps the same way on every
        graft: it is remembered in ``fixed``."""
        src, sigs = sub.proto.components.coders, sub.signatures
        coder_map: dict[str, str] = {}
        new_sig: dict[str, bytes] = {}
        for cid in order:
            known = fixed.get(cid)
            if known is not None:
                coder_map[cid] = known
                continue
            c = src[cid]
            original = payload = c.spec.payload
            if old is not None and new_key is not None and cid in sub.key_coders:
                payload = substitute_in_coder(payload, old, new_key)
            if payload is original and not any(x in new_sig for x in c.component_coder_ids):
                sig = sigs.coder(cid)
            else:
                sig = digest(b"coder", c.spec.urn, payload, *(new_sig.get(x) or sigs.coder(x) for x in c.component_coder_ids))
                new_sig[cid] = sig

            def fill(out: Any, c: Any = c, payload: bytes = payload) -> None:
                out.CopyFrom(c)
                out.spec.payload = payload
                out.component_coder_ids[:] = [coder_map[x] for x in c.component_coder_ids]

            coder_map[cid] = self._add_or_get("coders", sig, "beaminst_coder_", fill)
            if cid not in keyed:
                fixed[cid] = coder_map[cid]
        return coder_map

    def _map_windowing(
        self, sub: Subgraph, wss: set[str], coder_map: dict[str, str], env_map: dict[str, str]
    ) -> dict[str, str]:
        src = sub.proto.components.windowing_strategies
        ws_map: dict[str, str] = {}
        for w in sorted(wss):
            env = env_map.get(src[w].environment_id, "")

            def fill(out: Any, ws: Any = src[w], env: str = env) -> None:
                out.CopyFrom(ws)
                out.window_coder_id = coder_map[ws.window_coder_id]
                out.environment_id = env

            ws_map[w] = self._add_or_get("windowing_strategies", _windowing_key(sub.signatures, w, env), "beaminst_windowing_", fill)
        return ws_map

    def graft(self, sub: Subgraph, key: str | None, input_pc: str | None, label: str) -> GraftResult:
        """Copy ``sub`` into the target under fresh ids; its placeholder input
        becomes ``input_pc``; ``key`` replaces the key it was built with."""
        src, dst = sub.proto.components, self.target.components
        old = sub.key.encode("utf-8") if key is not None and key != sub.key else None
        new = key.encode("utf-8") if old is not None else None
        facts = self._template_facts(sub)
        maps = self._component_maps(sub, facts, old, new)
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
        template_nodes = facts.nodes
        nodes: dict[str, Node] = {}
        for t in sub.transforms:
            s, n = src.transforms[t], template_nodes[t]
            tid = t_map[t]
            out = dst.transforms[tid]
            out.CopyFrom(s)
            name = n.unique_name
            if old is not None and new is not None:
                name = name.replace(sub.key, key)  # type: ignore[arg-type]
                out.unique_name = name
            info = n.info
            if t in sub.rewrite_sites:
                out.spec.payload = rewrite_payload(n.urn, s.spec.payload, old, new, maps)
                info = info.remapped(maps) if info is not None else None
            if old is not None and new is not None:
                for i in facts.keyed_display_data.get(t, ()):  # e.g. the sink's "File Pattern"
                    dd = out.display_data[i]
                    dd.payload = dd.payload.replace(old, new)
            inputs = {tag: pc_map[pc] for tag, pc in n.inputs.items()}
            outputs = {tag: pc_map[pc] for tag, pc in n.outputs.items()}
            for tag, pc in inputs.items():
                out.inputs[tag] = pc
            for tag, pc in outputs.items():
                out.outputs[tag] = pc
            subtransforms = tuple(t_map[x] for x in n.subtransforms)
            out.subtransforms[:] = subtransforms
            env = env_map[n.environment_id] if n.environment_id else ""
            if env:
                out.environment_id = env
            nodes[tid] = Node(subtransforms, inputs, outputs, env, info, n.urn, name)
        return GraftResult(
            tuple(t_map[t] for t in sub.top), tuple(t_map[t] for t in sub.transforms),
            {k: pc_map[v] for k, v in sub.outputs.items()}, nodes,
        )


def _referenced(sub: Subgraph) -> _Referenced:
    """Every coder (closed over its components), windowing strategy and
    environment the piece's PCollections, transforms, payloads and windowing
    strategies name."""
    src = sub.proto.components
    pcs = [src.pcollections[p] for p in sub.pcollections]
    ts = [src.transforms[t] for t in sub.transforms]
    refs = _Referenced(
        coders={p.coder_id for p in pcs},
        windowing_strategies={p.windowing_strategy_id for p in pcs},
        environments={t.environment_id for t in ts if t.environment_id},
    )
    for t in ts:
        info = urns.payload_info(t.spec.urn, t.spec.payload)
        refs.coders |= info.coders
        refs.windowing_strategies |= info.windowing_strategies
        refs.environments |= info.environments
    for w in refs.windowing_strategies:
        ws = src.windowing_strategies[w]
        refs.coders.add(ws.window_coder_id)
        if ws.environment_id:
            refs.environments.add(ws.environment_id)
    stack = list(refs.coders)
    while stack:
        for comp in src.coders[stack.pop()].component_coder_ids:
            if comp not in refs.coders:
                refs.coders.add(comp)
                stack.append(comp)
    return refs


def _keyed_coders(sub: Subgraph, order: list[str]) -> frozenset[str]:
    """The template's coders a key can reach: those carrying it, and those
    with such a coder among their (transitive) components."""
    src = sub.proto.components.coders
    keyed: set[str] = set()
    for cid in order:  # components first
        if cid in sub.key_coders or any(x in keyed for x in src[cid].component_coder_ids):
            keyed.add(cid)
    return frozenset(keyed)


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
