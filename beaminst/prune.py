"""Pruning passes on protos: Beam's fragment rule and component trimming.

:func:`necessary_transforms` is ``PipelineFragment._mark_necessary_transforms_and_pcolls``
as a linear worklist: from the target PCollections, keep each producer, every
enclosing composite, every transform inside a kept (non-root) composite, and
the producers of everything a kept transform reads (side inputs included).

:func:`referenced_components` / :func:`trim_components` is Go's
``pipelinex.TrimCoders`` generalised: keep exactly the transitive closure of
what kept transforms reference (PCollections, coders, windowing strategies,
environments), so nothing unreferenced is left behind.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def necessary_transforms(
    transforms: Any,
    roots: Iterable[str],
    parent: Mapping[str, str | None],
    producer: Mapping[str, str],
    targets: Iterable[str],
) -> set[str]:
    """Transforms needed to produce ``targets`` (roots always kept)."""
    roots = set(roots)
    keep: set[str] = set(roots)
    work: list[str] = []

    def mark(tid: str) -> None:
        if tid not in keep:
            keep.add(tid)
            work.append(tid)

    for pc in targets:
        mark(producer[pc])
    while work:
        tid = work.pop()
        t = transforms[tid]
        for pc in t.inputs.values():
            mark(producer[pc])
        p = parent.get(tid)
        if p is not None:
            mark(p)
        if tid not in roots:
            # Beam keeps composites whole: a kept composite keeps all its parts.
            for s in t.subtransforms:
                mark(s)
    return keep


def referenced_components(pipeline: Any) -> dict[str, set[str]]:
    """Everything reachable from the roots through references."""
    c = pipeline.components
    transforms: set[str] = set()
    stack = list(pipeline.root_transform_ids)
    while stack:
        tid = stack.pop()
        if tid in transforms or tid not in c.transforms:
            continue
        transforms.add(tid)
        stack.extend(c.transforms[tid].subtransforms)
    pcolls: set[str] = set()
    envs: set[str] = set()
    for tid in transforms:
        t = c.transforms[tid]
        pcolls.update(t.inputs.values())
        pcolls.update(t.outputs.values())
        if t.environment_id:
            envs.add(t.environment_id)
    strategies = {c.pcollections[p].windowing_strategy_id for p in pcolls if p in c.pcollections}
    coders = {c.pcollections[p].coder_id for p in pcolls if p in c.pcollections}
    for w in strategies:
        ws = c.windowing_strategies[w]
        coders.add(ws.window_coder_id)
        if ws.environment_id:
            envs.add(ws.environment_id)
    # Coder ids hidden inside payloads the runner still resolves.
    coders.update(_coders_in_payloads(c, transforms))
    stack = list(coders)
    while stack:
        cid = stack.pop()
        for comp in c.coders[cid].component_coder_ids if cid in c.coders else ():
            if comp not in coders:
                coders.add(comp)
                stack.append(comp)
    return {
        "transform": transforms,
        "PCollection": pcolls,
        "coder": coders,
        "windowing strategy": strategies,
        "environment": envs,
    }


_TEST_STREAM_URN = "beam:transform:teststream:v1"
_PAR_DO_URN = "beam:transform:pardo:v1"
_COMBINE_URNS = {
    "beam:transform:combine_per_key:v1",
    "beam:transform:combine_globally:v1",
    "beam:transform:combine_per_key_precombine:v1",
    "beam:transform:combine_per_key_merge_accumulators:v1",
    "beam:transform:combine_per_key_extract_outputs:v1",
    "beam:transform:combine_grouped_values:v1",
    "beam:transform:combine_per_key_convert_to_accumulators:v1",
}


def _coders_in_payloads(c: Any, transforms: Iterable[str]) -> set[str]:
    from beaminst.beamproto import runner_api

    rapi = runner_api()
    out: set[str] = set()
    for tid in transforms:
        spec = c.transforms[tid].spec
        if not spec.payload:
            continue
        try:
            if spec.urn == _TEST_STREAM_URN:
                p = rapi.TestStreamPayload()
                p.ParseFromString(spec.payload)
                out.add(p.coder_id)
            elif spec.urn in _COMBINE_URNS:
                p = rapi.CombinePayload()
                p.ParseFromString(spec.payload)
                out.add(p.accumulator_coder_id)
            elif spec.urn == _PAR_DO_URN:
                p = rapi.ParDoPayload()
                p.ParseFromString(spec.payload)
                out.update(s.key_coder_id for s in p.state_specs.values() if s.HasField("map_spec") and s.map_spec.key_coder_id)
                for s in p.state_specs.values():
                    kind = s.WhichOneof("spec")
                    if kind is None:
                        continue
                    spec_msg = getattr(s, kind)
                    for field in ("element_coder_id", "accumulator_coder_id", "key_coder_id", "value_coder_id"):
                        v = getattr(spec_msg, field, "")
                        if v:
                            out.add(v)
                for t in p.timer_family_specs.values():
                    if t.timer_family_coder_id:
                        out.add(t.timer_family_coder_id)
        except Exception:
            continue
    out.discard("")
    return {x for x in out if x in c.coders}


def trim_components(pipeline: Any) -> Any:
    """A copy of ``pipeline`` with unreachable transforms and unreferenced
    components dropped. Root subtransform lists are filtered to what exists."""
    keep = referenced_components(pipeline)
    out = type(pipeline)()
    out.root_transform_ids.extend(pipeline.root_transform_ids)
    out.requirements.extend(pipeline.requirements)
    out.display_data.extend(pipeline.display_data)
    src, dst = pipeline.components, out.components
    for name, kind in (
        ("transforms", "transform"),
        ("pcollections", "PCollection"),
        ("coders", "coder"),
        ("windowing_strategies", "windowing strategy"),
        ("environments", "environment"),
    ):
        s, d = getattr(src, name), getattr(dst, name)
        for k in sorted(keep[kind]):
            if k in s:
                d[k].CopyFrom(s[k])
    return out
