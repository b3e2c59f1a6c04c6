"""Unbounded source detection on the proto.

Interactive Beam's rule (``utils.unbounded_sources``) is an ``isinstance``
check against ``ib.options.recordable_sources``, by default ``{ReadFromPubSub}``.
On a proto that becomes:

* ``beam:transform:pubsub_read:v1``. The Python SDK wraps that primitive in
  the ``ReadFromPubSub`` composite (pickled, with a metrics ParDo after the
  read); Beam records the composite's output, so when the direct parent is that
  composite, it is the source. Other SDKs emit the primitive alone;
* ``beam:transform:read:v1`` whose ``ReadPayload.is_bounded`` is UNBOUNDED;
* any URN in :class:`~beaminst.options.SourceRules` ``urns``
  (``--unbounded-urn``, for example ``beam:transform:teststream:v1``);
* optionally (``SourceRules.infer``, ``--infer-unbounded``) the general rule: a leaf transform whose
  outputs are UNBOUNDED while its inputs are bounded or absent.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from beaminst.graph.index import GraphIndex
from beaminst.model import bounded, urns
from beaminst.model.beamproto import runner_api
from beaminst.options import SourceRules


@dataclass(frozen=True)
class UnboundedSource:
    transform_id: str
    unique_name: str
    urn: str
    outputs: dict[str, str]  # tag -> PCollection id
    rule: str  # which rule found it

    @property
    def main_output(self) -> str | None:
        """``source.outputs[None]`` in Beam: the main output, else the only one."""
        if "None" in self.outputs:
            return self.outputs["None"]
        if len(self.outputs) == 1:
            return next(iter(self.outputs.values()))
        return None


def unpickled_payload_mentions(payload: bytes, needle: bytes, what: str = "a pickled payload") -> bool:
    """Whether a Beam pickled payload (base64 of bz2/zlib cloudpickle) names ``needle``.

    Decompresses only, within the cap (a bomb is an error naming ``what``);
    never unpickles (that would run code from the file)."""
    try:
        raw = base64.b64decode(payload, validate=True)
    except Exception:
        return needle in payload
    try:
        return needle in bounded.decompress(raw, what)
    except bounded.CorruptStream:
        return needle in raw


def _is_read_from_pubsub_wrapper(index: GraphIndex, tid: str | None) -> bool:
    if tid is None or tid in index.roots:
        return False
    t = index.transforms[tid]
    return t.spec.urn == urns.PICKLED_TRANSFORM and not t.inputs and unpickled_payload_mentions(
        t.spec.payload, b"ReadFromPubSub", f"transform {tid!r} ({t.unique_name!r}) payload"
    )


def find_unbounded_sources(
    index: GraphIndex, rules: SourceRules = SourceRules()  # noqa: B008 - frozen
) -> tuple[UnboundedSource, ...]:
    """Unbounded sources in hierarchy order (Beam's visit order): the rules
    above, with ``rules``' URNs and inference."""
    rapi = runner_api()
    extra = set(rules.urns)  # never blank: SourceRules refuses that
    infer = rules.infer
    unbounded = rapi.IsBounded.UNBOUNDED
    found: dict[str, str] = {}
    for tid in index.hierarchy_order:
        t = index.transforms[tid]
        urn = t.spec.urn
        rule = None
        if urn == urns.PUBSUB_READ:
            rule = "pubsub"
            parent = index.parent.get(tid)
            if _is_read_from_pubsub_wrapper(index, parent):
                assert parent is not None
                tid = parent
        elif urn == urns.READ and t.spec.payload:
            payload = rapi.ReadPayload()
            try:
                payload.ParseFromString(t.spec.payload)
            except Exception:
                payload = None
            if payload is not None and payload.is_bounded == unbounded:
                rule = "read"
        if rule is None and urn in extra:
            rule = "urn"
        if rule is None and infer and not t.subtransforms and t.outputs:
            outs_unbounded = all(index.pcollections[pc].is_bounded == unbounded for pc in t.outputs.values())
            ins_bounded = all(index.pcollections[pc].is_bounded != unbounded for pc in t.inputs.values())
            if outs_unbounded and ins_bounded:
                rule = "inferred"
        if rule is not None:
            found.setdefault(tid, rule)
    # Nested matches (a composite and its own primitive) count once: the outer.
    out = []
    for tid in index.hierarchy_order:
        if tid in found and not any(a in found for a in index.ancestors(tid)):
            t = index.transforms[tid]
            out.append(UnboundedSource(tid, t.unique_name, t.spec.urn, dict(t.outputs), found[tid]))
    return tuple(out)


def under_source(index: GraphIndex, transform_id: str, source_ids: set[str]) -> bool:
    """Whether ``transform_id`` is a source or nested inside one."""
    return transform_id in source_ids or any(a in source_ids for a in index.ancestors(transform_id))
