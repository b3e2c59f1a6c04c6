"""Pipeline validation, run on every input and on every proto beaminst writes.

Modelled on Java's ``PipelineValidator``: every reference is checked (roots,
subtransforms, inputs and outputs, coders and their components, windowing
strategies, environments), unique names are unique, and the walk in
:func:`beaminst.graph.index.build_index` adds producers, side inputs and cycles.
Each message names the offending id. Linear in the size of the proto.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from functools import partial
from itertools import chain
from operator import attrgetter, is_, itemgetter, methodcaller
from typing import Any

from beaminst.errors import ValidationError
from beaminst.graph.index import GraphIndex, Node, Snapshot, build_index, info_of, read_nodes
from beaminst.model import bounded, canonical, urns
from beaminst.model.urns import PICKLED_CODER as PICKLED_CODER_URN


def check_references(
    pipeline: Any, referenced: dict[str, set[str]] | None = None, nodes: Mapping[str, Node] | None = None,
    pickle_sizes: bool = True,
) -> None:
    """Raise ValidationError for the first dangling or duplicated reference.
    With ``referenced``, also collect there (by kind, as
    :func:`beaminst.graph.prune.referenced_components` names them) every component
    the transforms and PCollections reference, from the same reads. The
    transforms' and PCollections' checks are decided in bulk, with set
    operations over all of them; a walk in id order runs only to name the
    first problem (the same message it always gave). ``nodes``:
    the transforms' (:func:`beaminst.graph.index.read_nodes`), when read already.
    ``pickle_sizes``: also inflate every pickle within the cap (inputs)."""
    c = pipeline.components
    transforms, pcolls, coders = c.transforms, c.pcollections, c.coders
    strategies, envs = c.windowing_strategies, c.environments

    if not pipeline.root_transform_ids:
        raise ValidationError("pipeline has no root transform")
    seen_roots: set[str] = set()
    for r in pipeline.root_transform_ids:
        if r not in transforms:
            raise ValidationError(f"root transform {r!r} does not exist")
        if r in seen_roots:
            raise ValidationError(f"root transform {r!r} is listed twice")
        seen_roots.add(r)

    if nodes is None:
        nodes = read_nodes(transforms)
    # Membership in a set, not through protobuf's map, once per reference.
    pcoll_ids, env_ids = set(pcolls), set(envs)
    used = _references(nodes)
    if not _transforms_pass(nodes, used, pcoll_ids, env_ids, c):
        _first_transform_problem(nodes, pcoll_ids, env_ids, transforms, c)  # raises it
    pcs_used, coders_used, strategies_used, envs_used = used

    # One read of each PCollection; the walk in id order only to name a problem.
    pc_refs = {pid: (p.coder_id, p.windowing_strategy_id) for pid, p in pcolls.items()}
    pc_coders, pc_strategies = set(map(itemgetter(0), pc_refs.values())), set(map(itemgetter(1), pc_refs.values()))
    if not (pc_coders <= set(coders) and pc_strategies <= set(strategies)):
        for pid in sorted(pc_refs):
            coder_id, strategy_id = pc_refs[pid]
            if coder_id not in coders:
                raise ValidationError(f"PCollection {pid!r} names coder {coder_id!r} that does not exist")
            if strategy_id not in strategies:
                raise ValidationError(f"PCollection {pid!r} names windowing strategy {strategy_id!r} that does not exist")
    if referenced is not None:
        for pid in pcs_used:
            coder_id, strategy_id = pc_refs[pid]
            coders_used.add(coder_id)
            strategies_used.add(strategy_id)
    for cid in sorted(coders):
        for comp in coders[cid].component_coder_ids:
            if comp not in coders:
                raise ValidationError(f"coder {cid!r} has component coder {comp!r} that does not exist")
    _check_coder_cycles(coders)
    budget = bounded.Budget() if pickle_sizes else None  # one file's pickles, in all
    _check_pickled_coders(coders, budget)
    if pickle_sizes:
        _check_pickle_sizes(c, budget)
    for wid in sorted(strategies):
        w = strategies[wid]
        if w.window_coder_id not in coders:
            raise ValidationError(f"windowing strategy {wid!r} names window coder {w.window_coder_id!r} that does not exist")
        if w.environment_id and w.environment_id not in envs:
            raise ValidationError(f"windowing strategy {wid!r} names environment {w.environment_id!r} that does not exist")
        if referenced is not None and wid in strategies_used:
            coders_used.add(w.window_coder_id)
            if w.environment_id:
                envs_used.add(w.environment_id)
    if referenced is not None:
        stack = list(coders_used)
        while stack:
            for comp in coders[stack.pop()].component_coder_ids:
                if comp not in coders_used:
                    coders_used.add(comp)
                    stack.append(comp)
        referenced.update({"PCollection": pcs_used, "coder": coders_used, "windowing strategy": strategies_used,
                           "environment": envs_used})


_KIND_NAMES = {"coders": "coder", "windowing_strategies": "windowing strategy", "environments": "environment"}


# Node fields by position (a NamedTuple), for C-level maps over every node.
_SUBS, _INPUTS, _OUTPUTS, _ENV, _INFO, _URN, _NAME = (itemgetter(i) for i in range(7))
_VALUES = methodcaller("values")
_IS_NONE = partial(is_, None)


def _references(nodes: Mapping[str, Node]) -> tuple[set[str], set[str], set[str], set[str]]:
    """The PCollections, coders, windowing strategies and environments the
    transforms name (in their fields and, through ``info``, their payloads),
    gathered with set unions over every node at once."""
    vals = nodes.values()
    infos = [i for i in map(_INFO, vals) if i is not None]
    pcs = set(chain.from_iterable(map(_VALUES, map(_INPUTS, vals))))
    pcs.update(chain.from_iterable(map(_VALUES, map(_OUTPUTS, vals))))
    coders = set().union(*map(attrgetter("coders"), infos))
    strategies = set().union(*map(attrgetter("windowing_strategies"), infos))
    envs = set().union(*map(attrgetter("environments"), infos))
    envs.update(map(_ENV, vals))
    envs.discard("")
    return pcs, coders, strategies, envs


def _transforms_pass(
    nodes: Mapping[str, Node], used: tuple[set[str], set[str], set[str], set[str]], pcoll_ids: set[str],
    env_ids: set[str], c: Any,
) -> bool:
    """Whether every per-transform check of :func:`_first_transform_problem`
    passes, decided in bulk: the same conditions over all nodes at once, in
    C where it can be. The walk that names the first problem runs only when
    one does not pass."""
    vals = nodes.values()
    pcs, coders, strategies, envs = used
    if sum(map(_IS_NONE, map(_INFO, vals))):
        return False  # a payload that does not parse
    if not nodes.keys() >= set(chain.from_iterable(map(_SUBS, vals))):
        return False
    # envs: the transforms' own and their payloads'.
    if not (pcs <= pcoll_ids and envs <= env_ids and coders <= set(c.coders) and strategies <= set(c.windowing_strategies)):
        return False
    for n in vals:
        if not n.urn and not n.subtransforms and not set(n.outputs.values()) <= set(n.inputs.values()):
            return False
    if any(n.environment_id and n.urn in urns.RUNNER_IMPLEMENTED for n in vals):
        return False
    names = [name for name in map(_NAME, vals) if name]
    return len(set(names)) == len(names)


def _first_transform_problem(
    nodes: Mapping[str, Node], pcoll_ids: set[str], env_ids: set[str], transforms: Any, c: Any
) -> None:
    """Raise ValidationError for the first transform, in id order, that fails
    a check: dangling references (subtransforms, inputs and outputs,
    environment, ids in its payload), a leaf with outputs but no URN, a
    runner-implemented transform with an environment, a duplicated unique name."""
    names: dict[str, str] = {}
    for tid in sorted(nodes):
        n = nodes[tid]
        for s in n.subtransforms:
            if s not in nodes:
                raise ValidationError(f"transform {tid!r} has subtransform {s!r} that does not exist")
        ins, outs = n.inputs.values(), n.outputs.values()
        if not (pcoll_ids.issuperset(ins) and pcoll_ids.issuperset(outs)):
            for kind, refs in (("input", n.inputs), ("output", n.outputs)):
                for tag, pc in refs.items():
                    if pc not in pcoll_ids:
                        raise ValidationError(f"transform {tid!r} {kind} {tag!r} names PCollection {pc!r} that does not exist")
        env = n.environment_id
        if env and env not in env_ids:
            raise ValidationError(f"transform {tid!r} names environment {env!r} that does not exist")
        _check_payload_references(tid, info_of(n, transforms, tid), n.urn, c)
        urn = n.urn
        if not urn and not n.subtransforms and not set(outs) <= set(ins):
            # Java's PipelineValidator: only a composite (or a pass-through) may have no URN.
            raise ValidationError(f"transform {tid!r} ({n.unique_name!r}) has no URN and no subtransforms, yet produces outputs")
        if env and urn in urns.RUNNER_IMPLEMENTED:
            raise ValidationError(
                f"transform {tid!r} ({urn}) names environment {env!r}, "
                "but the runner implements it and it must name none"
            )
        name = n.unique_name
        if name:
            if name in names:
                raise ValidationError(
                    f"transforms {names[name]!r} and {tid!r} share the unique name {name!r}"
                )
            names[name] = tid




def _check_payload_references(tid: str, info: urns.PayloadInfo, urn: str, components: Any) -> urns.PayloadInfo:
    """References inside the payload (a Combine's accumulator coder, ParDo
    state and restriction coders, ...) must exist too, as Java checks them."""
    if not (info.coders or info.windowing_strategies or info.environments):
        return info
    for kind, label in _KIND_NAMES.items():
        existing = getattr(components, kind)
        for ref in sorted(info.references(kind)):
            if ref not in existing:
                raise ValidationError(
                    f"transform {tid!r} ({urn}) names {label} {ref!r} in its payload, which does not exist"
                )
    return info


def _check_coder_cycles(coders: Any) -> None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    for start in sorted(coders):
        if state.get(start):
            continue
        stack = [(start, iter(coders[start].component_coder_ids))]
        state[start] = 1
        while stack:
            cid, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[cid] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                raise ValidationError(f"coder {nxt!r} is (transitively) its own component")
            elif not state.get(nxt):
                state[nxt] = 1
                stack.append((nxt, iter(coders[nxt].component_coder_ids)))


def _check_pickled_coders(coders: Any, budget: bounded.Budget | None = None) -> None:
    """A ``pickled_python`` coder's payload must get as far as Beam's
    ``deserialize_coder`` gets before unpickling: a ``BytesValue`` holding
    ``Name$<base64 of zlib>``. Checked without unpickling (which would run code
    from the file) and in bounded memory and time (:mod:`beaminst.model.bounded`);
    the zlib checksum catches a corrupted pickle."""
    from google.protobuf import wrappers_pb2

    for cid in sorted(coders):
        spec = coders[cid].spec
        if spec.urn != PICKLED_CODER_URN:
            continue
        problem = None
        try:
            value = wrappers_pb2.BytesValue.FromString(spec.payload).value
        except Exception:
            value, problem = b"", "is not a BytesValue"
        if problem is None and b"$" not in value:
            problem = "has no 'Name$' prefix"
        if problem is None:
            try:
                raw = base64.b64decode(value.split(b"$", 1)[1])
            except (binascii.Error, ValueError):
                raw, problem = b"", "is not base64"
        if problem is None:
            try:
                bounded.decompress(raw, f"coder {cid!r} ({PICKLED_CODER_URN})", keep=False, budget=budget)
            except bounded.CorruptStream as e:
                problem = f"does not decompress ({e})"
        if problem is not None:
            raise ValidationError(f"coder {cid!r} ({PICKLED_CODER_URN}) has a corrupt payload: it {problem}")


_INFLATE_CHECKED: set[tuple[int, bytes]] = set()  # (cap, payload digest) found within it


def _check_pickle_sizes(c: Any, budget: bounded.Budget | None = None) -> None:
    """Every pickled function in the file (a ``pickled_python`` transform, a
    DoFn, CombineFn, source or view fn inside a payload, a window fn) inflates
    within the cap, and all of them within ``budget``, so no later pass (cache keys, diff, the SDK loading a
    window fn) meets a decompression bomb, and the error names the component.
    Corrupt pickles are not this check's business. Payloads seen once (the
    output repeats the input's) are not inflated again (nor charged: it is
    the work the budget bounds); the memo holds
    digests, not payloads, so a long batch does not grow it by megabytes.
    What was inflated is handed to :func:`beaminst.model.canonical.remember_inflated`,
    which keeps at most 64 MiB of it until a cache key signs it."""
    if len(_INFLATE_CHECKED) > 100_000:
        _INFLATE_CHECKED.clear()
    cap = bounded.max_decompressed_bytes()

    def check(encoded: bytes, what: str) -> None:
        if len(encoded) < 8:
            return
        seen = (cap, hashlib.sha256(encoded).digest())
        if seen in _INFLATE_CHECKED:
            return
        try:
            data = bounded.decompress(base64.b64decode(encoded, validate=True), what, budget=budget)
        except (binascii.Error, ValueError):  # not base64, or not compressed: not a pickle
            pass
        else:
            # Cache keys sign this pickle without its install path: from the
            # bytes in hand, not a second inflation.
            canonical.remember_inflated(encoded, data)
        _INFLATE_CHECKED.add(seen)

    for tid in sorted(c.transforms):
        t = c.transforms[tid]
        what = f"transform {tid!r} ({t.unique_name!r}) payload"
        if t.spec.urn == urns.PICKLED_TRANSFORM:
            check(t.spec.payload, what)
            continue
        payload = t.spec.payload
        if not payload or urns.payload_message_name(t.spec.urn) is None:
            continue
        # A payload seen whole (the output repeats the input's; a batch
        # repeats its files') had every pickle in it checked: one digest
        # instead of a parse and a walk.
        whole = (cap, hashlib.sha256(payload).digest())
        if whole in _INFLATE_CHECKED:
            continue
        try:
            msg = urns.parse_payload(t.spec.urn, payload)
        except ValueError:
            continue  # reported by the reference check
        for _m, fd, value in urns.scalar_fields(msg) if msg is not None else ():
            if fd.name == "payload" and fd.type == fd.TYPE_BYTES:
                check(value, what)
        _INFLATE_CHECKED.add(whole)
    for wid in sorted(c.windowing_strategies):
        fn = c.windowing_strategies[wid].window_fn
        if fn.urn == urns.PICKLED_WINDOW_FN:
            check(fn.payload, f"windowing strategy {wid!r} window_fn")


def validate(pipeline: Any) -> GraphIndex:
    """Check ``pipeline`` completely and return its graph index."""
    nodes = read_nodes(pipeline.components.transforms)
    check_references(pipeline, nodes=nodes)
    return build_index(pipeline, nodes)


def validate_output(pipeline: Any, base: Snapshot | None = None) -> GraphIndex:
    """:func:`validate`, and also refuse anything unreferenced (Go's
    TrimCoders rule, which every output of beaminst keeps), in the same walk;
    returns the graph index.

    Pickle sizes are not checked again: an output's pickles are the input's,
    which passed that check at load, or ones the Beam SDK built for beaminst
    (in this process, or earlier into the template store, whose entries are
    checked against the digest they were written with), or either with a
    cache key substituted (same length, so the same size). The check guards
    against what a file brings, and an output brings nothing new.

    ``base``: a snapshot of the validated input taken before the rewrite.
    A transform whose fingerprint is the one under its id there is not read
    again (:func:`beaminst.graph.index.read_nodes`): every check still runs
    on every transform, on what the output holds."""
    referenced: dict[str, set[str]] = {}
    nodes = read_nodes(pipeline.components.transforms, base)
    check_references(pipeline, referenced, nodes, pickle_sizes=False)
    index = build_index(pipeline, nodes)  # every transform is reachable from a root
    _refuse_unreferenced(pipeline, referenced)
    return index


def check_unreferenced(pipeline: Any) -> None:
    """Outputs must also carry nothing nobody references (TrimCoders' rule)."""
    from beaminst.graph.prune import referenced_components

    _refuse_unreferenced(pipeline, referenced_components(pipeline))


def _refuse_unreferenced(pipeline: Any, referenced: dict[str, set[str]]) -> None:
    c = pipeline.components
    for kind, existing in (
        ("PCollection", c.pcollections),
        ("coder", c.coders),
        ("windowing strategy", c.windowing_strategies),
        ("environment", c.environments),
    ):
        extra = sorted(k for k in existing if k not in referenced[kind])
        if extra:
            raise ValidationError(f"{kind} {extra[0]!r} is not referenced by anything")
