"""Producing a (pipeline proto, manifest) pair from a live Beam pipeline.

    import beaminst
    beaminst.export(p, {"words": words, "counts": counts}, "out/wordcount",
                    computed=["words"])

writes ``out/wordcount.pb`` and ``out/wordcount.manifest.json``. PCollection ids
come from the same ``to_runner_api`` context that produced the saved proto, so
they match it exactly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from beaminst.model.protoio import serialize_pipeline, write_atomic


def export(
    pipeline: Any,
    bindings: Mapping[str, Any],
    stem: str,
    computed: Iterable[str] = (),
    cache_keys: Mapping[str, str] | None = None,
    default_environment: Any = None,
) -> tuple[str, str]:
    """Save ``pipeline`` as ``stem.pb`` and its bindings as ``stem.manifest.json``.

    ``bindings`` maps variable names to PCollections of ``pipeline``;
    ``computed`` names variables whose cache is complete; ``cache_keys``
    optionally pins explicit cache keys (e.g. a live notebook's);
    ``default_environment`` (a Beam ``Environment``, e.g.
    ``Environment.from_options(options)``) replaces the placeholder
    environment, as a runner does at submission. Returns the two paths.
    """
    proto, context = pipeline.to_runner_api(return_context=True, default_environment=default_environment)
    cache_keys = dict(cache_keys or {})
    doc_bindings: dict[str, Any] = {}
    for var, pcoll in bindings.items():
        if getattr(pcoll, "pipeline", None) is not pipeline:
            raise ValueError(f"{var!r} is not a PCollection of the exported pipeline")
        pc_id = context.pcollections.get_id(pcoll)
        if pc_id not in proto.components.pcollections:
            raise ValueError(f"{var!r} resolved to {pc_id!r}, which is not in the pipeline proto")
        if var in cache_keys:
            doc_bindings[var] = {"pcollection": pc_id, "cache_key": cache_keys[var]}
        else:
            doc_bindings[var] = pc_id
    computed = list(computed)
    unknown = [v for v in computed if v not in bindings]
    if unknown:
        raise ValueError(f"computed names unbound variables: {unknown}")
    pb_path, manifest_path = f"{stem}.pb", f"{stem}.manifest.json"
    manifest = {"version": 1, "pipeline": os.path.basename(pb_path), "bindings": doc_bindings}
    if computed:
        manifest["computed"] = computed
    parent = os.path.dirname(os.path.abspath(stem))
    os.makedirs(parent, exist_ok=True)
    write_atomic(pb_path, serialize_pipeline(proto))
    write_atomic(manifest_path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return pb_path, manifest_path
