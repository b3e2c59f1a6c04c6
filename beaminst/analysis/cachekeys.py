"""Content-derived cache keys in Beam's ``CacheKey`` string form.

Beam's key is ``var-version-producer_version-pipeline_id`` where ``var`` is
``md5(var_name)[:10]`` and the other three are Python ``id()`` values: they die
with the notebook process, so a cache written yesterday can never be found
again. beaminst keeps Beam's form and the obfuscated ``var`` (Beam's cache
managers split and parse keys), but derives the other parts from content:

* ``version``: digest of the PCollection and everything upstream of it: each
  upstream leaf transform's unique name, URN and payload (with the coder and
  environment ids some payloads carry replaced by content, see
  :func:`payload_signature`), and each upstream
  PCollection's tag, coder (resolved structurally, not by id), windowing
  strategy and boundedness;
* ``producer_version``: digest of the producing transform (same recursive rule);
* ``pipeline_id``: digest of the unique names of the pipeline's source
  transforms (leaves without inputs), so unrelated pipelines sharing one cache
  directory do not collide while a change in the middle of a pipeline only
  re-keys what lies downstream of it.

All three are 16 hex digits, so every beaminst key has the same length (the
write-cache templates rely on that). Ids and environments are not part of the
digest, and pickled payloads are signed without the absolute path of the
site-packages directory their by-value functions were loaded from: renumbering
ids, or building the same pipeline in another virtualenv or on another
machine, keeps every key. Nor are the ids a process invents: the ``id()``s in
Beam's DataFrame names and tags, schema uuids, cloudpickle class tracker ids
(:func:`beaminst.model.canonical.process_ids_cleared` and the pickle rules
beside it), so DataFrame pipelines keep their keys in a new process too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from beaminst.graph.index import GraphIndex
from beaminst.model import urns
from beaminst.model.canonical import (
    Signatures,
    coder_payload_install_independent,
    digest,
    install_independent,
    process_ids_cleared,
)

DIGEST_HEX = 16


def obfuscate(*inputs: Any) -> str:
    """Beam's ``utils.obfuscate``: md5 of the ``_``-joined str() of the inputs."""
    return hashlib.md5("_".join(str(i) for i in inputs).encode("utf-8")).hexdigest()


def beam_var(var: str) -> str:
    """The ``var`` part of a Beam CacheKey (``CacheKey.__post_init__``)."""
    return obfuscate(var)[:10]


def make_key(var: str, version: str, producer_version: str, pipeline_id: str) -> str:
    return "-".join([beam_var(var), version, producer_version, pipeline_id])


def split_key(key: str) -> tuple[str, str, str, str]:
    """``CacheKey.from_str``: the four parts of a key string."""
    parts = key.split("-")
    if len(parts) != 4 or not all(parts):
        raise ValueError(f"not a Beam cache key: {key!r}")
    return parts[0], parts[1], parts[2], parts[3]


def payload_signature(spec: Any, coder_sig: Callable[[str], bytes], coder_ids: Any) -> bytes:
    """``spec.payload`` with every coder id in it replaced by that coder's
    content digest and every environment id cleared (the references
    :mod:`beaminst.model.urns` knows), and pickled function payloads signed without
    their install path. Ids follow registration order, so an unrelated branch
    elsewhere shifts them: left as they are, they would re-key PCollections
    that did not change. The raw payload when the URN has no payload message
    in the table, or it does not parse."""
    if spec.urn == urns.PICKLED_TRANSFORM:
        return install_independent(spec.payload)
    if not spec.payload:
        return spec.payload
    try:
        msg = urns.parse_payload(spec.urn, spec.payload)
    except ValueError:
        return spec.payload
    if msg is None:
        return spec.payload

    def by_content(kind: str, value: str) -> str | None:
        if kind == "coders":
            return coder_sig(value).hex() if value in coder_ids else None
        return "" if kind == "environments" else None

    changed = urns.replace_references(msg, by_content)
    changed |= _stable_function_payloads(msg)
    return msg.SerializeToString(deterministic=True) if changed else spec.payload


def _stable_function_payloads(msg: Any) -> bool:
    """Pickled DoFns, CombineFns, sources, view fns (``payload`` bytes fields,
    at any depth): signed without the install path their by-value functions carry."""
    changed = False
    for m, fd, value in list(urns.scalar_fields(msg)):
        if fd.name == "payload" and fd.type == fd.TYPE_BYTES:
            stable = install_independent(value)
            if stable is not value:
                setattr(m, fd.name, stable)
                changed = True
    return changed


@dataclass(frozen=True)
class ContentDigests:
    pcollection: Mapping[str, bytes]
    transform: Mapping[str, bytes]
    pipeline: bytes

    def key_for(self, var: str, pcoll_id: str, producer_id: str) -> str:
        return make_key(
            var,
            self.pcollection[pcoll_id].hex()[:DIGEST_HEX],
            self.transform[producer_id].hex()[:DIGEST_HEX],
            self.pipeline.hex()[:DIGEST_HEX],
        )

    def synthetic_var(self, pcoll_id: str) -> str:
        # Beam uses 'synthetic_var_' + str(id(pcoll)); ours survives the process.
        return "synthetic_var_" + self.pcollection[pcoll_id].hex()[:DIGEST_HEX]


def content_digests(index: GraphIndex) -> ContentDigests:
    """Digest every PCollection and leaf transform, in one topological pass.
    Names and tags are signed without the ``id()``s Beam's DataFrame API puts
    in them (:func:`process_ids_cleared`)."""
    sigs = Signatures(index.pipeline.components, coder_payload_install_independent)
    pc_sig: dict[str, bytes] = {}
    t_sig: dict[str, bytes] = {}
    nodes, coders = index.nodes, index.pipeline.components.coders
    # A payload's signature depends only on its bytes and this pipeline's
    # coders: transforms applied in a loop repeat theirs, signed once.
    payload_sigs: dict[tuple[str, bytes], bytes] = {}
    for tid in index.leaf_order:
        t, n = index.transforms[tid], nodes[tid]
        spec = t.spec
        seen = (n.urn, spec.payload)
        signed = payload_sigs.get(seen)
        if signed is None:
            signed = payload_sigs[seen] = payload_signature(spec, sigs.coder, coders)
        t_sig[tid] = digest(
            b"transform",
            process_ids_cleared(n.unique_name),
            n.urn,
            signed,
            *(x for tag, pc in _stable_tags(n.inputs) for x in (tag, pc_sig[pc])),
        )
        for tag, pc in _stable_tags(n.outputs):
            if index.producer.get(pc) != tid:
                continue
            p = index.pcollections[pc]
            pc_sig[pc] = digest(
                b"pcollection", t_sig[tid], tag, sigs.coder(p.coder_id), sigs.windowing(p.windowing_strategy_id, with_environment=False), str(p.is_bounded)
            )
    sources = sorted(process_ids_cleared(nodes[t].unique_name) for t in index.leaf_order if not nodes[t].inputs)
    return ContentDigests(pc_sig, t_sig, digest(b"pipeline", *sources))


def _stable_tags(tagged: Mapping[str, str]) -> list[tuple[str, str]]:
    """``(tag, pcollection)`` sorted, tags without process ids; the tags as
    they are when clearing would make two of them one (two outputs of one
    DataFrame stage named alike): a key that survives no process beats two
    outputs sharing one."""
    stable = {process_ids_cleared(tag): pc for tag, pc in tagged.items()}
    return sorted(stable.items() if len(stable) == len(tagged) else tagged.items())
