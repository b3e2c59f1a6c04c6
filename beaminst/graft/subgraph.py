"""A Beam-built piece of pipeline, and where the key it was built with sits.

A :class:`Subgraph` is derived from a piece's proto and four facts about it
(its top-level transforms, the placeholder PCollection, the named outputs, the
key), so a piece built by the SDK a moment ago and one loaded from the
template store (:mod:`beaminst.graft.store`) are the same value. No Beam SDK.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from beaminst.graft.pickles import coder_mentions, do_fn_mentions
from beaminst.model import urns
from beaminst.model.canonical import Signatures


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


def piece(
    proto: Any, top: list[str], placeholder: str | None, outputs: dict[str, str], key: str,
    known: tuple[list[str], list[str]] | None = None,
) -> Subgraph:
    """The subgraph of ``proto`` under ``top`` (a KeyError names an id the proto lacks).
    ``known``: its ``key_coders`` and ``rewrite_sites``, as the template store
    kept them (finding them inflates the piece's pickles)."""
    ts = proto.components.transforms
    order: list[str] = []
    stack = list(reversed(top))
    while stack:
        tid = stack.pop()
        if tid not in ts:  # a protobuf map would insert an empty transform, not raise
            raise KeyError(tid)
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
    if known is not None:
        key_coders, sites = frozenset(known[0]), frozenset(known[1])
        if not (key_coders <= proto.components.coders.keys() and sites <= set(order)):
            raise KeyError(min((key_coders - proto.components.coders.keys()) | (sites - set(order))))
    else:
        key_coders = frozenset(
            cid for cid, c in proto.components.coders.items()
            if needle and c.spec.payload and coder_mentions(c.spec.payload, needle)
        )
        sites = frozenset(t for t in order if _needs_rewrite(ts[t], needle))
    return Subgraph(
        proto, tuple(top), tuple(order), tuple(pcs), placeholder, dict(outputs), key, Signatures(proto.components),
        key_coders, sites,
    )


def _needs_rewrite(t: Any, needle: bytes) -> bool:
    payload = t.spec.payload
    if not payload:
        return False
    info = urns.payload_info(t.spec.urn, payload)
    if info.coders or info.windowing_strategies or info.environments or (needle and needle in payload):
        return True
    return bool(needle) and do_fn_mentions(t.spec.urn, payload, needle)


def template_key(key: str) -> str:
    """A placeholder with the same part lengths: 'Z' never occurs in a real key part."""
    return "-".join("Z" * len(part) for part in key.split("-"))
