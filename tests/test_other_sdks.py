"""Protos written by another SDK: Beam's TypeScript SDK (fixtures/typescript).

They differ from the Python SDK's in ways that matter here: one root per
top-level transform (no synthetic root), an environment that is not Python's
(``js_default``), the TypeScript SDK's own coder
(``beam:coder:genericobjectjs:v1``) on most PCollections, and windowing done by
ParDos. ``analyze``, ``diff``, ``graph`` and ``background-caching`` work on
them; ``instrument`` works on PCollections with Beam's standard coders and
refuses, by name, the ones the Python SDK cannot decode.
"""

from __future__ import annotations

import json

import pytest
from conftest import EMPTY_SHARD, FIXTURES, run_cli

from beaminst.model.protoio import load_pipeline

TS = FIXTURES / "typescript"
NAMES = ("wordcount", "gbk_kv", "windowing", "js_objects")


def _pair(name: str, kind: str = "manifest") -> tuple[str, str]:
    return str(TS / f"{name}.pb"), str(TS / f"{name}.{kind}.json")


@pytest.mark.parametrize("name", NAMES)
def test_analyze_diff_graph(name, tmp_path):
    pb, man = _pair(name)
    r = run_cli("analyze", pb, "-m", man, "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    bound = json.loads(open(man).read())["bindings"]
    assert {c["var"] for c in doc["cacheables"].values()} == set(bound)
    assert not doc["has_unbounded_sources"]
    assert run_cli("diff", pb, pb).exit_code == 0
    r = run_cli("graph", pb, "-m", man)
    assert r.exit_code == 0 and r.stdout.startswith("digraph")


@pytest.mark.parametrize("name", NAMES)
def test_instrument_write_then_read(name, tmp_path):
    pb, man = _pair(name)
    cache = tmp_path / "cache"
    write = tmp_path / "write.pb"
    r = run_cli("instrument", pb, "-m", man, "--cache-dir", str(cache), "-o", str(write), "--json")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    bound = json.loads(open(man).read())["bindings"]
    assert {w["var"] for w in report["writes"]} == set(bound)
    # No Python environment in a TypeScript proto: one is added, and said so.
    assert report["environment"]["added"] and report["environment"]["urn"] == "beam:env:docker:v1"
    assert any("no Python SDK environment" in w for w in report["warnings"])
    proto, _ = load_pipeline(str(write))
    assert "jsEnvironment" in proto.components.environments  # the SDK's own stays
    # Diff against the original names exactly the grafted writes as added.
    r = run_cli("diff", pb, str(write), "--json")
    assert r.exit_code == 1
    added = {t["name"] for t in json.loads(r.stdout)["transforms"]["added"] if t["outermost"]}
    assert added == {t for w in report["writes"] for t in w["transforms"]}

    (cache / "full").mkdir(parents=True, exist_ok=True)
    for w in report["writes"]:
        (cache / "full" / f"{w['cache_key']}-00000-of-00001").write_bytes(EMPTY_SHARD)
    doc = json.loads(open(man).read())
    doc["computed"] = sorted(bound)
    computed = tmp_path / "computed.json"
    computed.write_text(json.dumps(doc))
    read = tmp_path / "read.pb"
    r = run_cli("instrument", pb, "-m", str(computed), "--cache-dir", str(cache), "-o", str(read), "--json")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["reads"] and not report["writes"]
    proto, _ = load_pipeline(str(read))
    # Pruned top-level transforms leave the roots too (each is a root here).
    assert set(proto.root_transform_ids) <= set(proto.components.transforms)
    names = {proto.components.transforms[r].unique_name for r in proto.root_transform_ids}
    assert not names & set(report["pruned"])
    # The model wants the roots in shallow topological order: each after those producing its inputs
    # (appended, a grafted read came after what reads it).
    for out in (write, read):
        proto, _ = load_pipeline(str(out))
        ts, made = proto.components.transforms, set()
        produced_by_roots = {pc for r in proto.root_transform_ids for pc in ts[r].outputs.values()}
        for root in proto.root_transform_ids:
            waiting = [pc for pc in ts[root].inputs.values() if pc in produced_by_roots and pc not in made]
            assert not waiting, (out.name, ts[root].unique_name, waiting)
            made.update(ts[root].outputs.values())


@pytest.mark.parametrize("name", NAMES)
def test_instrument_refuses_the_typescript_sdks_own_coder_by_name(name, tmp_path):
    pb, man = _pair(name, "nonstandard.manifest")
    out = tmp_path / "out.pb"
    r = run_cli("instrument", pb, "-m", man, "--cache-dir", str(tmp_path / "c"), "-o", str(out))
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert "beam:coder:genericobjectjs:v1" in r.stderr and "Traceback" not in r.stderr
    bound = json.loads(open(man).read())["bindings"]
    for var in bound:  # every bad binding named at once
        assert f"'{var}'" in r.stderr
    assert not out.exists()


@pytest.mark.parametrize("name", NAMES)
def test_background_caching_without_a_source(name, tmp_path):
    pb, man = _pair(name)
    r = run_cli("background-caching", pb, "-m", man, "--cache-dir", str(tmp_path / "c"), "-o", str(tmp_path / "b.pb"))
    assert r.exit_code == 2 and "no unbounded source" in r.stderr
    r = run_cli("background-caching", pb, "--cache-dir", str(tmp_path / "c"), "-o", str(tmp_path / "b.pb"),
                "--allow-empty", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["empty"]


def test_background_caching_with_an_inferred_source(tmp_path):
    # Mark a TypeScript PCollection UNBOUNDED, as a streaming source of that SDK
    # would produce it: --infer-unbounded finds it and records it.
    from beaminst.model.beamproto import runner_api
    from beaminst.model.protoio import save_pipeline

    proto, _ = load_pipeline(str(TS / "gbk_kv.pb"))
    impulse = next(t for t in proto.components.transforms.values() if t.spec.urn == "beam:transform:impulse:v1")
    pc = next(iter(impulse.outputs.values()))
    proto.components.pcollections[pc].is_bounded = runner_api().IsBounded.UNBOUNDED
    pb = tmp_path / "stream.pb"
    save_pipeline(proto, str(pb))
    out = tmp_path / "b.pb"
    r = run_cli("background-caching", str(pb), "--infer-unbounded", "--cache-dir", str(tmp_path / "c"),
                "-o", str(out), "--json")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    assert [s["unique_name"] for s in report["sources"]] == [impulse.unique_name]
    assert report["environment"]["added"]
    assert "beam:requirement:pardo:stateful:v1" in report["requirements"]
