"""Inputs for the diff and graph tests: instrumented fixtures (with and
without cache reads) and copies of a pipeline with every id renamed."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import EMPTY_SHARD, fixture_manifest, fixture_pb

_ID_BEARING = {
    "beam:transform:pardo:v1": "ParDoPayload",
    "beam:transform:window_into:v1": "WindowingStrategy",
    "beam:transform:teststream:v1": "TestStreamPayload",
}
_KINDS = (("transforms", "t"), ("pcollections", "p"), ("coders", "c"), ("windowing_strategies", "w"), ("environments", "e"))


def instrument_case(directory: Path, name: str, computed: tuple[str, ...] = ()) -> tuple[str, dict[str, Any]]:
    """Instrument fixture ``name``; the ``computed`` variables are given a
    complete (one-shard) cache first, so they are read back. Returns the output
    path and the ``instrument --json`` report."""
    from beaminst.commands.api import analyze_files, instrument_files
    from beaminst.options import RewriteOptions

    label = "_".join((name, *computed))
    cache = directory / f"cache_{label}"
    manifest = fixture_manifest(name)
    if computed:
        keys = {c.var: c.cache_key for c in analyze_files(fixture_pb(name), manifest).cacheables.values()}
        (cache / "full").mkdir(parents=True)
        for var in computed:
            (cache / "full" / f"{keys[var]}-00000-of-00001").write_bytes(EMPTY_SHARD)
        doc = json.loads(Path(manifest).read_text())
        doc["computed"] = list(computed)
        manifest = str(directory / f"{label}.manifest.json")
        Path(manifest).write_text(json.dumps(doc))
    out = directory / f"{label}.instrumented.pb"
    report = instrument_files(fixture_pb(name), str(out), manifest, RewriteOptions(str(cache)))
    return str(out), report.to_json()


def renamed(proto: Any, seed: int = 0) -> Any:
    """A copy of ``proto`` with every transform, PCollection, coder, windowing
    strategy and environment id replaced by a fresh one (in shuffled order),
    every reference followed, coder and environment ids inside ParDo, Combine,
    WindowInto and TestStream payloads included."""
    rng = random.Random(seed)
    out = type(proto)()
    out.CopyFrom(proto)
    c = out.components
    maps: dict[str, dict[str, str]] = {}
    for kind, prefix in _KINDS:
        old = sorted(getattr(c, kind))
        new = [f"{prefix}{seed}_{i}" for i in range(len(old))]
        rng.shuffle(new)
        maps[kind] = dict(zip(old, new, strict=True))
        entries = {k: type(v)() for k, v in getattr(c, kind).items()}
        for k, v in getattr(c, kind).items():
            entries[k].CopyFrom(v)
        getattr(c, kind).clear()
        for k in rng.sample(old, len(old)):
            getattr(c, kind)[maps[kind][k]].CopyFrom(entries[k])
    tr, pc, co, ws, env = (maps[k] for k, _ in _KINDS)
    out.root_transform_ids[:] = [tr[r] for r in out.root_transform_ids]
    for old_id, new_id in tr.items():
        t = c.transforms[new_id]
        if t.unique_name == old_id:  # the Python SDK's root is named by its id
            t.unique_name = new_id
        t.subtransforms[:] = [tr[s] for s in t.subtransforms]
        for io in (t.inputs, t.outputs):
            for tag in list(io):
                io[tag] = pc[io[tag]]
        if t.environment_id:
            t.environment_id = env[t.environment_id]
        _rename_in_payload(t.spec, co, env)
    for p in c.pcollections.values():
        p.coder_id, p.windowing_strategy_id = co[p.coder_id], ws[p.windowing_strategy_id]
    for coder in c.coders.values():
        coder.component_coder_ids[:] = [co[x] for x in coder.component_coder_ids]
    for w in c.windowing_strategies.values():
        w.window_coder_id = co[w.window_coder_id]
        if w.environment_id:
            w.environment_id = env[w.environment_id]
    return out


def _rename_in_payload(spec: Any, coders: dict[str, str], envs: dict[str, str]) -> None:
    from beaminst.model.beamproto import runner_api

    name = _ID_BEARING.get(spec.urn) or ("CombinePayload" if spec.urn.startswith("beam:transform:combine_") else None)
    if name is None or not spec.payload:
        return
    msg = getattr(runner_api(), name).FromString(spec.payload)
    if _rename_ids(msg, coders, envs):
        spec.payload = msg.SerializeToString(deterministic=True)


def _rename_ids(msg: Any, coders: dict[str, str], envs: dict[str, str]) -> bool:
    changed = False
    for fd, value in msg.ListFields():
        if fd.message_type is not None:
            if fd.message_type.GetOptions().map_entry:
                is_message = fd.message_type.fields_by_name["value"].message_type is not None
                children = list(value.values()) if is_message else []
            else:
                children = list(value) if fd.is_repeated else [value]
            for child in children:
                changed |= _rename_ids(child, coders, envs)
        elif fd.name.endswith("coder_id") and value in coders:
            setattr(msg, fd.name, coders[value])
            changed = True
        elif fd.name == "environment_id" and value in envs:
            setattr(msg, fd.name, envs[value])
            changed = True
    return changed


def pcollection_refs(proto: Any) -> dict[str, tuple[str, str]]:
    """PCollection id -> (producer unique name, tag), computed here from
    scratch (the innermost leaf that outputs it without reading it)."""
    out = {}
    for t in proto.components.transforms.values():
        if t.subtransforms:
            continue
        ins = set(t.inputs.values())
        for tag, p in t.outputs.items():
            if p not in ins:
                out[p] = (t.unique_name, tag)
    return out


# --- hand-built shapes, for the growth tests (no SDK, any size, in milliseconds) ----------------

_ENV, _BYTES, _WS = "env", "bytes", "global"


def shape_pipeline(shape: str, n: int) -> Any:
    """A valid pipeline of about ``n`` of one thing: ``chain`` (a line of
    ``n`` ParDo-like leaves), ``wide`` (one leaf with ``n`` outputs), ``deep``
    (``n`` composites nested one in the next) or ``coders`` (a coder DAG,
    each level holding the one below ``n`` times, six levels deep: a tree of
    ``n**6`` leaves if it were expanded)."""
    from beaminst.model.beamproto import runner_api

    r = runner_api()
    p = r.Pipeline()
    c = p.components
    c.environments[_ENV].urn = "beam:env:embedded_python:v1"
    c.coders[_BYTES].spec.urn = "beam:coder:bytes:v1"
    c.coders["gw"].spec.urn = "beam:coder:global_window:v1"
    ws = c.windowing_strategies[_WS]
    ws.window_fn.urn = "beam:window_fn:global_windows:v1"
    ws.window_coder_id = "gw"
    ws.environment_id = _ENV

    def pcoll(pid: str, coder: str = _BYTES) -> str:
        pc = c.pcollections[pid]
        pc.unique_name, pc.coder_id, pc.windowing_strategy_id = pid, coder, _WS
        pc.is_bounded = r.IsBounded.BOUNDED
        return pid

    def leaf(tid: str, inputs: dict[str, str], outputs: dict[str, str]) -> str:
        t = c.transforms[tid]
        t.unique_name, t.spec.urn, t.environment_id = tid, "beam:transform:shape_step:v1", _ENV
        t.inputs.update(inputs)
        t.outputs.update(outputs)
        return tid

    root = c.transforms["root"]
    root.unique_name = "root"
    p.root_transform_ids.append("root")
    impulse = c.transforms["Impulse"]
    impulse.unique_name, impulse.spec.urn = "Impulse", "beam:transform:impulse:v1"
    impulse.outputs["out"] = pcoll("impulse")
    root.subtransforms.append("Impulse")
    if shape == "chain":
        prev = "impulse"
        for i in range(n):
            root.subtransforms.append(leaf(f"Step{i}", {"in": prev}, {"out": pcoll(f"p{i}")}))
            prev = f"p{i}"
    elif shape == "wide":
        root.subtransforms.append(leaf("Split", {"in": "impulse"}, {f"out{i}": pcoll(f"p{i}") for i in range(n)}))
    elif shape == "deep":
        parent = root
        for i in range(n):
            t = c.transforms[f"C{i}"]
            t.unique_name = f"C{i}"
            t.inputs["in"] = "impulse"
            t.outputs["out"] = "last"
            parent.subtransforms.append(f"C{i}")
            parent = t
        parent.subtransforms.append(leaf("Last", {"in": "impulse"}, {"out": pcoll("last")}))
    elif shape == "coders":
        below = _BYTES
        for level in range(6):
            coder = c.coders[f"tuple{level}"]
            coder.spec.urn = "beam:coder:kv:v1"
            coder.component_coder_ids.extend([below] * n)
            below = f"tuple{level}"
        root.subtransforms.append(leaf("Encode", {"in": "impulse"}, {"out": pcoll("encoded", below)}))
    else:
        raise ValueError(shape)
    return p


def renamed_transforms(proto: Any, prefix: str = "v2/") -> Any:
    """A copy whose transforms all have new unique names (the root's too):
    to a diff, everything removed and everything added."""
    out = type(proto)()
    out.CopyFrom(proto)
    for t in out.components.transforms.values():
        t.unique_name = prefix + t.unique_name
    return out


def lines_run(fn: Callable[[], Any]) -> int:
    """Python lines run by ``fn()``: work counted, not timed (a loaded machine
    runs slower, never longer; work inside one C call shows only in the benchmark)."""
    import sys

    lines = 0

    def trace(frame: Any, event: str, _arg: Any) -> Any:
        nonlocal lines
        lines += event == "line"
        return trace

    sys.settrace(trace)
    try:
        fn()
    finally:
        sys.settrace(None)
    return lines
