"""``beaminst diff``: a structural diff of two pipeline protos, by meaning.

Nothing is matched by id or position, because ids are renumbered freely (and
instrumentation allocates new ones):

* transforms by unique name (a Python SDK synthetic root is ``<root>``);
* PCollections by (producer unique name, output tag), the producer being the
  innermost leaf that outputs it without reading it (``GraphIndex.producer``);
* coders, windowing strategies and environments by content signature
  (:class:`beaminst.model.canonical.Signatures`); payloads by
  :func:`beaminst.analysis.cachekeys.payload_signature`, which puts coder content in
  place of the coder ids some payloads carry. Pickled payloads and coders
  are compared without the site-packages path Beam's pickles embed, so the
  same pipeline built in another virtualenv is no change.

Each pass below is a pure function of the two indexed sides, linear in their
size. Only protobuf is needed: the Beam SDK is never imported. How a Diff is
printed lives in :mod:`beaminst.commands.diffformat`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from beaminst.analysis.cachekeys import payload_signature
from beaminst.graph.index import GraphIndex
from beaminst.model import urns
from beaminst.model.canonical import Signatures, coder_payload_install_independent
from beaminst.model.labels import INSTRUMENTED_PREFIXES

ROOT = "<root>"
HEX = 16
PAYLOAD_PREFIX_BYTES = 64
DESCRIPTION_CHARS, DESCRIPTION_DEPTH = 300, 6  # of a coder description
_COMPONENT_KINDS = ("coders", "windowing_strategies", "environments")


def is_instrumented(name: str) -> bool:
    return name.startswith(INSTRUMENTED_PREFIXES)


Ref = tuple[str, str]  # (producer unique name, output tag)


@dataclass(frozen=True)
class Side:
    """One pipeline, with every id translated into its meaning."""

    index: GraphIndex
    source: str
    sigs: Signatures
    name: dict[str, str]  # transform id -> unique name
    tid: dict[str, str]  # unique name -> transform id
    ref: dict[str, Ref]  # PCollection id -> (producer name, tag)
    pcoll: dict[Ref, str]  # (producer name, tag) -> PCollection id
    # Unique name -> transform message, from the one walk of the map: a
    # protobuf map lookup per pass costs more, and more so once a pipeline
    # pair outgrows the CPU cache (tens of MB).
    transform: dict[str, Any]
    # (kind, id) -> (digest, description) of a coder or windowing strategy,
    # filled as entries ask: thousands of PCollections share a few coders,
    # and each description spelled out again is time and a string kept.
    described: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def components(self) -> Any:
        return self.index.pipeline.components


def side(index: GraphIndex, source: str = "<pipeline>") -> Side:
    """Index ``index``'s ids by meaning (one linear pass)."""
    names: dict[str, str] = {}
    msgs: dict[str, Any] = {}
    for tid, t in index.transforms.items():
        names[tid] = transform_name(t, tid)
        msgs[tid] = t
    synthetic = [r for r in index.roots if is_synthetic_root(msgs[r], r)]
    for i, r in enumerate(synthetic):
        names[r] = ROOT if len(synthetic) == 1 else f"<root {i}>"
    tags = index.producer_tags
    refs: dict[str, Ref] = {pc: (names[tid], tags[pc]) for pc, tid in index.producer.items()}
    return Side(
        index, source, Signatures(index.pipeline.components, coder_payload_install_independent), names,
        {n: t for t, n in names.items()}, refs, {r: pc for pc, r in refs.items()},
        {names[tid]: t for tid, t in msgs.items()},
    )


def transform_name(t: Any, tid: str) -> str:
    """What a transform other than a synthetic root is called in a diff."""
    return t.unique_name or f"<unnamed {tid}>"


def is_synthetic_root(t: Any, tid: str) -> bool:
    """The Python SDK's root: no name of its own (its id, or empty), no I/O."""
    return t.unique_name in ("", tid) and bool(t.subtransforms) and not t.inputs and not t.outputs


@dataclass
class Diff:
    before: str
    after: str
    transforms: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    rewired: list[dict[str, Any]] = field(default_factory=list)
    pcollections: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    components: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    requirements: dict[str, list[str]] = field(default_factory=dict)

    @property
    def identical(self) -> bool:
        return not any(self.summary().values())

    def summary(self) -> dict[str, int]:
        out = {f"transforms_{k}": len(v) for k, v in self.transforms.items()}
        out["inputs_rewired"] = len(self.rewired)
        out.update({f"pcollections_{k}": len(v) for k, v in self.pcollections.items()})
        for kind, changes in (("components", self.components.values()), ("requirements", [self.requirements])):
            for change in ("added", "removed"):
                out[f"{kind}_{change}"] = sum(len(c.get(change, ())) for c in changes)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "identical": self.identical,
            "before": self.before,
            "after": self.after,
            "summary": self.summary(),
            "transforms": self.transforms,
            "rewired": self.rewired,
            "pcollections": self.pcollections,
            "components": self.components,
            "requirements": self.requirements,
        }


def diff_indexes(
    before: GraphIndex,
    after: GraphIndex,
    before_source: str = "<before>",
    after_source: str = "<after>",
    show_payloads: bool = False,
) -> Diff:
    """The structural difference from ``before`` to ``after`` (both validated)."""
    b, a = side(before, before_source), side(after, after_source)
    d = Diff(before_source, after_source)
    common = common_transforms(b, a)
    d.transforms = transform_changes(b, a, common, show_payloads)
    added = {t["name"] for t in d.transforms["added"]}
    removed = {t["name"] for t in d.transforms["removed"]}
    d.rewired = rewired_inputs(b, a, common)
    d.pcollections = pcollection_changes(b, a, added, removed)
    d.components = component_changes(b, a)
    req_b, req_a = set(before.pipeline.requirements), set(after.pipeline.requirements)
    d.requirements = {"added": sorted(req_a - req_b), "removed": sorted(req_b - req_a)}
    return d


# --- transforms ---------------------------------------------------------------


Common = list[tuple[str, Any, Any]]  # (unique name, before transform, after transform)


def common_transforms(b: Side, a: Side) -> Common:
    """The transforms on both sides, by name."""
    tb, ta = b.transform, a.transform
    return [(n, tb[n], ta[n]) for n in sorted(ta.keys() & tb.keys())]


def transform_changes(b: Side, a: Side, common: Common, show_payloads: bool = False) -> dict[str, list[dict[str, Any]]]:
    # Sets built once: an entry asks whether its parent is in the same change.
    added_set, removed_set = a.tid.keys() - b.tid.keys(), b.tid.keys() - a.tid.keys()
    added, removed = sorted(added_set), sorted(removed_set)
    gone = added_set | removed_set
    changed = []
    for name, tb, ta in common:
        changes = _transform_fields(b, a, tb, ta, gone, show_payloads)
        if changes:
            changed.append({"name": name, "urn": ta.spec.urn, "changes": changes})
    return {
        "added": [_transform_entry(a, n, added_set, show_payloads) for n in added],
        "removed": [_transform_entry(b, n, removed_set, show_payloads) for n in removed],
        "changed": changed,
    }


def _transform_entry(s: Side, name: str, same_change: set[str], show_payloads: bool) -> dict[str, Any]:
    tid = s.tid[name]
    t = s.transform[name]
    parent = s.index.parent.get(tid)
    parent_name = s.name[parent] if parent is not None else None
    return {
        "name": name,
        "id": tid,
        "urn": t.spec.urn,
        "leaf": not t.subtransforms,
        "parent": parent_name,
        # The top of an added (removed) subtree: its parent was there before (is still there).
        "outermost": parent_name not in same_change,
        "instrumented": is_instrumented(name),
        "payload": _payload(s, t, show_payloads),
        "environment": _environment(s, t.environment_id),
    }


def _payload(s: Side, t: Any, show_payloads: bool, start: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {"length": len(t.spec.payload), "digest": _payload_digest(s, t)}
    if show_payloads:
        out["prefix_offset"] = start
        out["prefix"] = escape_bytes(t.spec.payload[start : start + PAYLOAD_PREFIX_BYTES])
    return out


def _payload_digest(s: Side, t: Any) -> str:
    signed = payload_signature(t.spec, s.sigs.coder, s.components.coders)
    return hashlib.sha256(signed).hexdigest()[:HEX]


def _environment(s: Side, eid: str) -> dict[str, str] | None:
    if not eid:
        return None
    return {"digest": s.sigs.environment(eid).hex()[:HEX], "urn": s.components.environments[eid].urn, "id": eid}


def _transform_fields(b: Side, a: Side, tb: Any, ta: Any, gone: set[str], show_payloads: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if tb.spec.urn != ta.spec.urn:
        out["urn"] = {"before": tb.spec.urn, "after": ta.spec.urn}
    if not _same_payload(b, a, tb, ta):
        first = first_difference(tb.spec.payload, ta.spec.payload)
        start = max(0, (first or 0) - 16)
        out["payload"] = {
            "before": _payload(b, tb, show_payloads, start),
            "after": _payload(a, ta, show_payloads, start),
            "first_difference": first,
            "fields": changed_fields(tb.spec.urn, tb.spec.payload, ta.spec.payload, _same_reference(b, a))
            if tb.spec.urn == ta.spec.urn else [],
        }
    if _environment_signature(b, tb.environment_id) != _environment_signature(a, ta.environment_id):
        out["environment"] = {"before": _environment(b, tb.environment_id), "after": _environment(a, ta.environment_id)}
    # Added and removed children are reported as such; what is left must match
    # in order (a move or a reorder is a change of the parent).
    subs_b = [b.name[s] for s in tb.subtransforms if b.name[s] not in gone]
    subs_a = [a.name[s] for s in ta.subtransforms if a.name[s] not in gone]
    if subs_b != subs_a:
        out["subtransforms"] = {"before": subs_b, "after": subs_a}
    # Inputs present on both sides but reading elsewhere are "rewired"; here:
    # tags that exist on one side only.
    ins_b, ins_a = dict(tb.inputs), dict(ta.inputs)
    if ins_b.keys() != ins_a.keys():
        only_b = {tag: _ref_json(b.ref[pc]) for tag, pc in sorted(ins_b.items()) if tag not in ins_a}
        only_a = {tag: _ref_json(a.ref[pc]) for tag, pc in sorted(ins_a.items()) if tag not in ins_b}
        out["inputs"] = {"before": only_b, "after": only_a}
    outs_b = {tag: b.ref[pc] for tag, pc in tb.outputs.items()}
    outs_a = {tag: a.ref[pc] for tag, pc in ta.outputs.items()}
    if outs_b != outs_a:
        tags = sorted(t for t in set(outs_b) | set(outs_a) if outs_b.get(t) != outs_a.get(t))
        out["outputs"] = {
            "before": {t: _ref_json(outs_b[t]) for t in tags if t in outs_b},
            "after": {t: _ref_json(outs_a[t]) for t in tags if t in outs_a},
        }
    return out


def _same_payload(b: Side, a: Side, tb: Any, ta: Any) -> bool:
    """Whether the payloads sign the same. Equal bytes under one URN sign the
    same unless a coder they name differs in content, which the references
    (parsed once, in validation) tell without signing: most transforms of a
    pipeline against its next version. Under another URN the same bytes
    normalise differently, and the URN change is reported already."""
    if tb.spec.payload == ta.spec.payload:
        if tb.spec.urn != ta.spec.urn:
            return True
        coders = urns.payload_info(tb.spec.urn, tb.spec.payload).coders
        return all(b.sigs.coder(c) == a.sigs.coder(c) for c in coders)
    return _payload_digest(b, tb) == _payload_digest(a, ta)


def _environment_signature(s: Side, eid: str) -> bytes | None:
    return s.sigs.environment(eid) if eid else None


def _same_reference(b: Side, a: Side) -> Callable[[str, str, str], bool]:
    """Whether two ids a payload field holds name the same component by content
    (renumbered ids are no change, as everywhere in the diff)."""
    signers = {
        "coders": (b.sigs.coder, a.sigs.coder),
        "windowing_strategies": (b.sigs.windowing, a.sigs.windowing),
        "environments": (b.sigs.environment, a.sigs.environment),
    }

    def same(kind: str, x: str, y: str) -> bool:
        sign = signers.get(kind)
        if sign is None or not x or not y:
            return x == y
        try:
            return sign[0](x) == sign[1](y)
        except KeyError:  # an id the components lack: validation says so; here, a difference
            return False

    return same


def changed_fields(
    urn: str, before: bytes, after: bytes, same_reference: Callable[[str, str, str], bool] | None = None,
) -> list[str]:
    """The payload fields that differ, dotted (``do_fn.payload``), in field
    order: the byte offset alone points into the outer message (a length
    that changed makes it byte 1). ``same_reference(kind, id, id)``: whether
    two ids (``accumulator_coder_id``) name the same component by content.
    Empty when the URN's payload is not one beaminst parses, or either side
    does not parse."""
    try:
        x, y = urns.parse_payload(urn, before), urns.parse_payload(urn, after)
    except ValueError:
        return []
    same = same_reference or (lambda _kind, p, q: p == q)
    return [] if x is None or y is None else _changed_fields(x, y, "", 0, same)


_FIELD_DEPTH = 3  # do_fn.payload, window_fn.spec.payload: deeper names nothing a user knows


def _changed_fields(x: Any, y: Any, prefix: str, depth: int, same: Callable[[str, str, str], bool]) -> list[str]:
    fx = {fd.number: (fd, v) for fd, v in x.ListFields()}
    fy = {fd.number: (fd, v) for fd, v in y.ListFields()}
    out: list[str] = []
    for number in sorted(fx.keys() | fy.keys()):
        fd = (fx.get(number) or fy[number])[0]
        name = prefix + fd.name
        if number not in fx or number not in fy:
            out.append(name)
            continue
        vx, vy = fx[number][1], fy[number][1]
        kind = urns.id_kind(fd.name) if fd.type == fd.TYPE_STRING and fd.label != fd.LABEL_REPEATED else None
        if vx == vy or (kind is not None and same(kind, vx, vy)):
            continue
        singular_message = fd.message_type is not None and fd.label != fd.LABEL_REPEATED
        inner = _changed_fields(vx, vy, name + ".", depth + 1, same) if singular_message and depth + 1 < _FIELD_DEPTH else []
        out.extend(inner or [name])
    return out


def first_difference(x: bytes, y: bytes) -> int | None:
    """Offset of the first differing byte (the shorter length if one is a
    prefix of the other), None when equal."""
    if x == y:
        return None
    for i, (p, q) in enumerate(zip(x, y, strict=False)):
        if p != q:
            return i
    return min(len(x), len(y))


def escape_bytes(data: bytes) -> str:
    """Printable ASCII as is, everything else (and backslash) as ``\\xNN``."""
    return "".join(chr(c) if 0x20 <= c < 0x7F and c != 0x5C else f"\\x{c:02x}" for c in data)


# --- wiring -------------------------------------------------------------------


def _ref_json(ref: Ref) -> dict[str, str]:
    return {"producer": ref[0], "tag": ref[1]}


def rewired_inputs(b: Side, a: Side, common: Common) -> list[dict[str, Any]]:
    """Inputs of a transform present on both sides whose tag now reads a
    different PCollection (compared as producer name + tag)."""
    out = []
    for name, tb, ta in common:
        ins_b, ins_a = dict(tb.inputs), dict(ta.inputs)
        for tag in sorted(ins_b.keys() & ins_a.keys()):
            was, now = b.ref[ins_b[tag]], a.ref[ins_a[tag]]
            if was != now:
                sides = a.index.side_input_tags.get(a.tid[name], frozenset())
                out.append({
                    "transform": name,
                    "tag": tag,
                    "side_input": tag in sides,
                    "leaf": not ta.subtransforms,
                    "before": _ref_json(was),
                    "after": _ref_json(now),
                    "instrumented": is_instrumented(now[0]),
                })
    return out


# --- PCollections -------------------------------------------------------------


def pcollection_changes(b: Side, a: Side, added: set[str], removed: set[str]) -> dict[str, list[dict[str, Any]]]:
    changed = []
    for ref in sorted(set(a.pcoll) & set(b.pcoll)):
        pb, pa = b.index.pcollections[b.pcoll[ref]], a.index.pcollections[a.pcoll[ref]]
        changes: dict[str, Any] = {}
        if b.sigs.coder(pb.coder_id) != a.sigs.coder(pa.coder_id):
            changes["coder"] = {"before": _coder_json(b, pb.coder_id), "after": _coder_json(a, pa.coder_id)}
        if b.sigs.windowing(pb.windowing_strategy_id) != a.sigs.windowing(pa.windowing_strategy_id):
            changes["windowing"] = {
                "before": _windowing_json(b, pb.windowing_strategy_id),
                "after": _windowing_json(a, pa.windowing_strategy_id),
            }
        if pb.is_bounded != pa.is_bounded:
            changes["is_bounded"] = {"before": _enum_name(pb, "is_bounded"), "after": _enum_name(pa, "is_bounded")}
        if changes:
            changed.append({**_ref_json(ref), "changes": changes})
    return {
        "added": [_pcollection_entry(a, r, added) for r in sorted(set(a.pcoll) - set(b.pcoll))],
        "removed": [_pcollection_entry(b, r, removed) for r in sorted(set(b.pcoll) - set(a.pcoll))],
        "changed": changed,
    }


def _pcollection_entry(s: Side, ref: Ref, same_change: set[str]) -> dict[str, Any]:
    pc = s.pcoll[ref]
    p = s.index.pcollections[pc]
    return {
        **_ref_json(ref),
        "id": pc,
        "coder": _coder_json(s, p.coder_id),
        "windowing": _windowing_json(s, p.windowing_strategy_id),
        "is_bounded": _enum_name(p, "is_bounded"),
        # Follows from its producer being added (removed) itself.
        "implied": ref[0] in same_change,
        "instrumented": is_instrumented(ref[0]),
    }


def _coder_json(s: Side, cid: str) -> dict[str, str]:
    return _described(s, "coders", cid)


def _windowing_json(s: Side, wid: str) -> dict[str, str]:
    return _described(s, "windowing_strategies", wid)


def _described(s: Side, kind: str, cid: str) -> dict[str, str]:
    got = s.described.get((kind, cid))
    if got is None:
        describe = describe_coder if kind == "coders" else describe_windowing
        got = s.described[(kind, cid)] = (_signature(s, kind, cid).hex()[:HEX], describe(s.components, cid))
    return {"digest": got[0], "description": got[1]}


def _enum_name(msg: Any, field_name: str) -> str:
    value = getattr(msg, field_name)
    enum = msg.DESCRIPTOR.fields_by_name[field_name].enum_type
    v = enum.values_by_number.get(value)
    return v.name if v is not None else str(value)


def _short_urn(urn: str) -> str:
    # beam:coder:kv:v1 -> kv; anything unusual stays whole.
    parts = urn.split(":")
    return parts[2] if len(parts) == 4 and parts[0] == "beam" else urn


def describe_coder(components: Any, cid: str) -> str:
    """``kv(bytes, iterable(varint))``: for people; the digest is the identity.

    Coders form a DAG that this spells out as a tree: a few hundred bytes of
    coders sharing components could expand to terabytes. The text stops at
    DESCRIPTION_CHARS (and DESCRIPTION_DEPTH), so the work does too."""
    parts: list[str] = []
    size = 0

    def emit(text: str) -> None:
        nonlocal size
        parts.append(text)
        size += len(text)

    def walk(c_id: str, depth: int) -> None:
        c = components.coders[c_id]
        emit(_short_urn(c.spec.urn) + (f"[{len(c.spec.payload)} B]" if c.spec.payload else ""))
        if not c.component_coder_ids:
            return
        emit("(")
        if depth >= DESCRIPTION_DEPTH:
            emit("…")
        for i, sub in enumerate(c.component_coder_ids if depth < DESCRIPTION_DEPTH else ()):
            if size > DESCRIPTION_CHARS:
                break
            emit(", " if i else "")
            walk(sub, depth + 1)
        emit(")")

    walk(cid, 0)
    text = "".join(parts)
    return text if size <= DESCRIPTION_CHARS else text[:DESCRIPTION_CHARS] + "…"


def describe_windowing(components: Any, wid: str) -> str:
    w = components.windowing_strategies[wid]
    trigger = w.trigger.WhichOneof("trigger") or "default"
    return (
        f"{describe_window_fn(w.window_fn)}, trigger {trigger}, {_enum_name(w, 'accumulation_mode').lower()}, "
        f"lateness {w.allowed_lateness} ms, window coder {describe_coder(components, w.window_coder_id)}"
    )


def describe_window_fn(fn: Any) -> str:
    """``sliding_windows(size 10 s, period 5 s, offset 0 s)`` for Beam's
    standard window fns (their parameters are what a change changes); any
    other, or a payload that does not parse, by URN and payload size."""
    from google.protobuf.message import DecodeError

    from beaminst.model.beamproto import window_fns_api

    name = urns.WINDOW_FN_PAYLOADS.get(fn.urn)
    sized = _short_urn(fn.urn) + (f"[{len(fn.payload)} B]" if fn.payload else "")
    if name is None:
        return sized
    payload = getattr(window_fns_api(), name)()
    try:
        payload.ParseFromString(fn.payload)
    except DecodeError:
        return sized
    fields = [f"{f.name.replace('_', ' ')} {_duration(v)}" for f, v in payload.ListFields() if f.message_type]
    return _short_urn(fn.urn) + (f"({', '.join(fields)})" if fields else "")


def _duration(d: Any) -> str:
    """A Duration or Timestamp (seconds, nanos) for people: ``10 s``, ``1.5 s``, ``250 ms``."""
    ns = d.seconds * 10**9 + d.nanos
    if ns % 10**9 == 0:
        return f"{ns // 10**9} s"
    if ns % 10**6 == 0 and abs(ns) < 10**9:
        return f"{ns // 10**6} ms"
    whole, frac = divmod(abs(ns), 10**9)
    return f"{'-' if ns < 0 else ''}{whole}.{frac:09d}".rstrip("0") + " s"


def describe_environment(components: Any, eid: str) -> str:
    e = components.environments[eid]
    return f"{e.urn or '(no urn)'} [{len(e.payload)} B], {len(e.dependencies)} dependencies, {len(e.capabilities)} capabilities"


# --- components ---------------------------------------------------------------


def component_changes(b: Side, a: Side) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Coders, windowing strategies and environments whose content exists on
    one side only (ids are irrelevant; duplicates by content count once)."""
    out = {}
    for kind in _COMPONENT_KINDS:
        by_b, by_a = _by_signature(b, kind), _by_signature(a, kind)
        out[kind] = {
            "added": _component_entries(a, kind, by_a, set(by_a) - set(by_b)),
            "removed": _component_entries(b, kind, by_b, set(by_b) - set(by_a)),
        }
    return out


def _signature(s: Side, kind: str, cid: str) -> bytes:
    if kind == "coders":
        return s.sigs.coder(cid)
    if kind == "windowing_strategies":
        return s.sigs.windowing(cid)
    return s.sigs.environment(cid)


def _by_signature(s: Side, kind: str) -> dict[bytes, list[str]]:
    out: dict[bytes, list[str]] = {}
    for cid in sorted(getattr(s.components, kind)):
        out.setdefault(_signature(s, kind, cid), []).append(cid)
    return out


def _component_entries(s: Side, kind: str, by_sig: dict[bytes, list[str]], sigs: Iterable[bytes]) -> list[dict[str, Any]]:
    describe = {"coders": describe_coder, "windowing_strategies": describe_windowing, "environments": describe_environment}[kind]
    entries = [
        {"digest": sig.hex()[:HEX], "description": describe(s.components, by_sig[sig][0]), "ids": by_sig[sig]}
        for sig in sigs
    ]
    return sorted(entries, key=lambda e: (e["description"], e["digest"]))
