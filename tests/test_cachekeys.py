"""Content-derived cache keys: Beam's format, determinism, and what re-keys."""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Callable
from typing import Any

import pytest
from conftest import (
    EMPTY_SHARD,
    FIXTURE_NAMES,
    fixture_manifest,
    fixture_pb,
    load_fixture,
    run_python,
)
from hypothesis import given
from hypothesis import strategies as st

from beaminst.analysis.cachekeys import beam_var, make_key, obfuscate, split_key
from beaminst.model.protoio import save_pipeline

KEY_RE = re.compile(r"^[0-9a-f]{10}-[0-9a-f]{16}-[0-9a-f]{16}-[0-9a-f]{16}$")


def analyze(pb: str, manifest: str | None = None, **kw):
    from beaminst.commands.api import analyze_files

    return analyze_files(pb, manifest, **kw)


def keys_by_var(analysis) -> dict[str, str]:
    return {c.var: c.cache_key for c in analysis.cacheables.values()}


def all_keys(analysis) -> dict[str, str]:
    """A key for *every* PCollection (as if each were bound to a variable named
    after its id), so re-keying can be checked beyond the bound ones."""
    d = analysis.digests
    return {pc: d.key_for("v", pc, analysis.index.producer[pc]) for pc in analysis.index.pcollections}


def downstream(index, pcoll_ids: set[str]) -> set[str]:
    """PCollections reachable from ``pcoll_ids`` through leaf transforms (main
    and side inputs), including them."""
    seen, todo = set(pcoll_ids), list(pcoll_ids)
    while todo:
        pc = todo.pop()
        for c in index.consumers.get(pc, ()):
            if not c.is_leaf:
                continue
            for out in index.transforms[c.transform_id].outputs.values():
                if index.producer.get(out) == c.transform_id and out not in seen:
                    seen.add(out)
                    todo.append(out)
    return seen


def by_producer_name(analysis) -> dict[tuple[str, str], str]:
    """(producer unique name, tag) -> PCollection id: an id-free identity."""
    return {(i.producer, i.tag): pc for pc, i in analysis.pcollections.items()}


# --- Beam's key format ----------------------------------------------------------------


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_key_format_and_beam_round_trip(name):
    from apache_beam.runners.interactive.caching.cacheable import CacheKey

    a = analyze(fixture_pb(name), fixture_manifest(name))
    assert a.cacheables
    pipeline_ids = set()
    for c in a.cacheables.values():
        assert KEY_RE.match(c.cache_key), c.cache_key
        var, version, producer_version, pipeline_id = c.cache_key.split("-")
        assert var == CacheKey(c.var, version, producer_version, pipeline_id).var
        assert var == beam_var(c.var)
        parsed = CacheKey.from_str(c.cache_key)
        assert parsed.to_str() == c.cache_key
        assert (parsed.var, parsed.version, parsed.producer_version, parsed.pipeline_id) == split_key(c.cache_key)
        pipeline_ids.add(pipeline_id)
    assert len(pipeline_ids) == 1  # one pipeline, one pipeline_id
    keys = [c.cache_key for c in a.cacheables.values()]
    assert len(set(keys)) == len(keys)


def test_pipeline_ids_differ_between_pipelines():
    ids = {analyze(fixture_pb(n), fixture_manifest(n)).digests.pipeline.hex() for n in FIXTURE_NAMES}
    assert len(ids) == len(FIXTURE_NAMES)


def test_var_only_changes_the_var_part():
    a = analyze(fixture_pb("wordcount"))
    pc = "ref_PCollection_PCollection_9"
    k1 = a.digests.key_for("words", pc, a.index.producer[pc])
    k2 = a.digests.key_for("other", pc, a.index.producer[pc])
    assert k1.split("-")[1:] == k2.split("-")[1:]
    assert k1.split("-")[0] != k2.split("-")[0]


@given(st.lists(st.one_of(st.text(), st.integers()), min_size=1, max_size=4))
def test_obfuscate_matches_beam(inputs):
    from apache_beam.runners.interactive import utils

    assert obfuscate(*inputs) == utils.obfuscate(*inputs)


@given(st.text(min_size=1))
def test_beam_var_matches_cache_key_post_init(var):
    from apache_beam.runners.interactive.caching.cacheable import CacheKey

    assert beam_var(var) == CacheKey(var, "1", "2", "3").var


def test_split_key_rejects_non_keys():
    for bad in ("a-b-c", "a-b-c-d-e", "a--c-d", ""):
        with pytest.raises(ValueError):
            split_key(bad)
    assert split_key(make_key("x", "v", "p", "q")) == (beam_var("x"), "v", "p", "q")


# --- determinism ---------------------------------------------------------------------------

_EXPORT_IN_SUBPROCESS = textwrap.dedent(
    """
    import sys
    import beaminst
    from fixtures.pipelines import wordcount
    built = wordcount()
    beaminst.export(built.pipeline, built.bindings, sys.argv[1])
    """
)


def test_same_pipeline_in_a_fresh_process_gives_same_bytes_and_keys(ib_env, tmp_path):
    import beaminst
    from fixtures.pipelines import wordcount

    proc = run_python("-c", _EXPORT_IN_SUBPROCESS, str(tmp_path / "sub"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    built = wordcount()
    here_pb, here_manifest = beaminst.export(built.pipeline, built.bindings, str(tmp_path / "here"))
    sub_bytes = (tmp_path / "sub.pb").read_bytes()
    assert sub_bytes == (tmp_path / "here.pb").read_bytes()
    sub = analyze(str(tmp_path / "sub.pb"), str(tmp_path / "sub.manifest.json"))
    here = analyze(here_pb, here_manifest)
    assert keys_by_var(sub) == keys_by_var(here)
    assert set(keys_by_var(here)) == {"lines", "words", "counts", "formatted"}
    # ... and the committed fixture, built in another virtualenv, has the same keys.
    committed = analyze(fixture_pb("wordcount"), fixture_manifest("wordcount"))
    assert keys_by_var(committed) == keys_by_var(here)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_committed_fixture_keys_equal_a_fresh_build(ib_env, tmp_path, name):
    """Keys survive the process that built the pipeline, for every fixture
    (including side_inputs, whose .pb bytes are not reproducible: Create([x])
    pickles a locally defined class with a random cloudpickle tracker id into
    a pass-through leaf, which must not reach any key)."""
    import beaminst
    from fixtures.pipelines import BUILDERS

    built = BUILDERS[name]()
    pb, manifest = beaminst.export(built.pipeline, built.bindings, str(tmp_path / name))
    fresh, committed = analyze(pb, manifest), analyze(fixture_pb(name), fixture_manifest(name))
    assert keys_by_var(fresh) == keys_by_var(committed)
    assert all_keys(fresh) == all_keys(committed)
    # The committed fixtures are current: same manifest, and the same proto up
    # to pickled payloads, whose bytes carry the absolute path of the
    # virtualenv that built them (and, in side_inputs, one random cloudpickle
    # tracker id); the equal keys above cover their content.
    assert open(manifest, "rb").read() == open(fixture_manifest(name), "rb").read()
    fresh_proto, committed_proto = fresh.index.pipeline, committed.index.pipeline
    assert set(fresh_proto.components.transforms) == set(committed_proto.components.transforms)
    for tid, t in fresh_proto.components.transforms.items():
        c = committed_proto.components.transforms[tid]
        assert (t.unique_name, t.spec.urn, dict(t.inputs), dict(t.outputs), list(t.subtransforms)) == (
            c.unique_name, c.spec.urn, dict(c.inputs), dict(c.outputs), list(c.subtransforms)
        ), f"fixtures/{name}.pb is stale: python -m fixtures.generate"


# --- what re-keys and what does not -----------------------------------------------------


def pair_with_two(word: str) -> tuple[str, int]:
    return (word, 2)


def _wordcount_variant(lines: list[str], pair_fn: Callable[[str], Any]) -> Any:
    import apache_beam as beam

    from fixtures import pipelines as fp

    p = fp._pipeline()
    lines_pc = p | "ReadLines" >> beam.Create(lines)
    words = lines_pc | "Split" >> beam.FlatMap(fp.split_words)
    counts = words | "PairWithOne" >> beam.Map(pair_fn) | "CountWords" >> beam.CombinePerKey(sum)
    formatted = counts | "Format" >> beam.Map(fp.format_count)
    return fp.Built(p, {"lines": lines_pc, "words": words, "counts": counts, "formatted": formatted})


def _compare_variant(tmp_path, base, variant, changed_producer: str) -> tuple[set[str], set[str]]:
    """Export both, check that exactly the PCollections downstream of
    ``changed_producer`` (a leaf unique name) changed key. Returns the
    (changed, unchanged) bound variables."""
    import beaminst

    a_pb, a_m = beaminst.export(base.pipeline, base.bindings, str(tmp_path / "base"))
    b_pb, b_m = beaminst.export(variant.pipeline, variant.bindings, str(tmp_path / "variant"))
    a, b = analyze(a_pb, a_m), analyze(b_pb, b_m)
    a_names, b_names = by_producer_name(a), by_producer_name(b)
    assert set(a_names) == set(b_names)
    changed_leaf = next(t for t in a.index.leaf_order if a.index.transforms[t].unique_name == changed_producer)
    affected = downstream(a.index, {pc for pc in a.index.transforms[changed_leaf].outputs.values()})
    a_keys, b_keys = all_keys(a), all_keys(b)
    for ident, a_pc in a_names.items():
        b_pc = b_names[ident]
        if a_pc in affected:
            assert a_keys[a_pc].split("-")[1] != b_keys[b_pc].split("-")[1], ident
        else:
            assert a_keys[a_pc] == b_keys[b_pc], ident
    assert a.digests.pipeline == b.digests.pipeline  # same sources, same pipeline_id
    ka, kb = keys_by_var(a), keys_by_var(b)
    return {v for v in ka if ka[v] != kb[v]}, {v for v in ka if ka[v] == kb[v]}


def test_different_map_function_rekeys_only_downstream(ib_env, tmp_path):
    from fixtures.pipelines import pair_with_one

    lines = ["to be or not to be", "that is the question"]
    changed, unchanged = _compare_variant(
        tmp_path, _wordcount_variant(lines, pair_with_one), _wordcount_variant(lines, pair_with_two), "PairWithOne"
    )
    assert changed == {"counts", "formatted"}
    assert unchanged == {"lines", "words"}


def test_different_create_value_rekeys_only_downstream(ib_env, tmp_path):
    from fixtures.pipelines import pair_with_one

    changed, unchanged = _compare_variant(
        tmp_path,
        _wordcount_variant(["to be or not to be"], pair_with_one),
        _wordcount_variant(["to be or not to be!"], pair_with_one),
        "ReadLines/FlatMap(<lambda at core.py:4094>)",
    )
    assert changed == {"lines", "words", "counts", "formatted"}
    assert unchanged == set()


def _windowing_variant(extra_branch: bool) -> Any:
    import apache_beam as beam
    from apache_beam.transforms import window

    from fixtures import pipelines as fp

    p = fp._pipeline()
    nums = p | "Nums" >> beam.Create(list(range(20))) | "Stamp" >> beam.Map(fp.timestamp_it)
    if extra_branch:
        # A new branch, applied first: it registers a new coder, which shifts
        # the ids Beam gives every coder registered after it.
        nums | "AsStr" >> beam.Map(str).with_output_types(str) | "Len" >> beam.Map(len).with_output_types(int)
    windowed = nums | "Fixed5" >> beam.WindowInto(window.FixedWindows(5))
    sums = windowed | "SumPerWindow" >> beam.CombineGlobally(sum).without_defaults()
    sessions = nums | "Sessions" >> beam.WindowInto(window.Sessions(3))
    return fp.Built(p, {"nums": nums, "windowed": windowed, "sums": sums, "sessions": sessions})


def test_added_branch_does_not_rekey_the_rest(ib_env, tmp_path):
    """Beam names coders in registration order and the Python SDK's window_into
    payload embeds the window coder's id, so an unrelated branch renumbers it;
    keys must follow content, not those ids."""
    import beaminst

    base, variant = _windowing_variant(False), _windowing_variant(True)
    a_pb, a_m = beaminst.export(base.pipeline, base.bindings, str(tmp_path / "base"))
    b_pb, b_m = beaminst.export(variant.pipeline, variant.bindings, str(tmp_path / "variant"))
    a_coders = set(load_pipeline_components(a_pb).coders)
    b_coders = set(load_pipeline_components(b_pb).coders)
    assert a_coders != b_coders  # the premise: ids did shift
    assert keys_by_var(analyze(a_pb, a_m)) == keys_by_var(analyze(b_pb, b_m))


def load_pipeline_components(path: str) -> Any:
    from beaminst.model.protoio import load_pipeline

    return load_pipeline(path)[0].components


# --- renumbering ids -----------------------------------------------------------------------


def rename_ids(proto: Any, kinds: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Rename every id of the given component kinds throughout the proto: the
    maps, every structural reference, and the ids the Python SDK's window_into
    payload (a WindowingStrategy) carries, as Beam itself would write them."""
    c = proto.components
    maps = {
        "transforms": c.transforms,
        "pcollections": c.pcollections,
        "coders": c.coders,
        "windowing_strategies": c.windowing_strategies,
        "environments": c.environments,
    }
    renames: dict[str, dict[str, str]] = {}
    for kind in kinds:
        # Reversed numbering so that sort orders change too.
        old = sorted(maps[kind])
        renames[kind] = {o: f"renamed_{kind}_{len(old) - i}" for i, o in enumerate(old)}
    t_ren = renames.get("transforms", {})
    pc_ren = renames.get("pcollections", {})
    coder_ren = renames.get("coders", {})
    ws_ren = renames.get("windowing_strategies", {})
    env_ren = renames.get("environments", {})

    for kind, mapping in renames.items():
        m = maps[kind]
        items = {k: type(m[k])() for k in m}
        for k in items:
            items[k].CopyFrom(m[k])
        for k in list(m):
            del m[k]
        for k, v in items.items():
            m[mapping[k]].CopyFrom(v)

    for t in c.transforms.values():
        for field in (t.inputs, t.outputs):
            for tag in list(field):
                field[tag] = pc_ren.get(field[tag], field[tag])
        subs = [t_ren.get(s, s) for s in t.subtransforms]
        del t.subtransforms[:]
        t.subtransforms.extend(subs)
        if t.environment_id:
            t.environment_id = env_ren.get(t.environment_id, t.environment_id)
        # Ids inside payloads too (window_into's WindowingStrategy, a Combine's
        # accumulator coder, ParDo state coders), as an SDK would write them.
        from beaminst.model.urns import remap_payload

        t.spec.payload = remap_payload(
            t.spec.urn, t.spec.payload, {"coders": coder_ren, "windowing_strategies": ws_ren, "environments": env_ren}
        )
    roots = [t_ren.get(r, r) for r in proto.root_transform_ids]
    del proto.root_transform_ids[:]
    proto.root_transform_ids.extend(roots)
    for p in c.pcollections.values():
        p.coder_id = coder_ren.get(p.coder_id, p.coder_id)
        p.windowing_strategy_id = ws_ren.get(p.windowing_strategy_id, p.windowing_strategy_id)
    for cd in c.coders.values():
        comps = [coder_ren.get(x, x) for x in cd.component_coder_ids]
        del cd.component_coder_ids[:]
        cd.component_coder_ids.extend(comps)
    for w in c.windowing_strategies.values():
        w.window_coder_id = coder_ren.get(w.window_coder_id, w.window_coder_id)
        if w.environment_id:
            w.environment_id = env_ren.get(w.environment_id, w.environment_id)
    return renames


def _renamed_manifest(name: str, pc_ren: dict[str, str], path) -> str:
    with open(fixture_manifest(name), encoding="utf-8") as f:
        doc = json.load(f)
    doc["bindings"] = {v: pc_ren.get(pc, pc) for v, pc in doc["bindings"].items()}
    path.write_text(json.dumps(doc))
    return str(path)


def test_renaming_one_pcollection_keeps_every_key(tmp_path):
    proto = load_fixture("wordcount")
    old = "ref_PCollection_PCollection_9"
    renames = {"pcollections": {pc: pc for pc in proto.components.pcollections}}
    renames["pcollections"][old] = "words_renamed"
    c = proto.components
    c.pcollections["words_renamed"].CopyFrom(c.pcollections[old])
    del c.pcollections[old]
    for t in c.transforms.values():
        for field in (t.inputs, t.outputs):
            for tag in list(field):
                if field[tag] == old:
                    field[tag] = "words_renamed"
    pb = tmp_path / "renamed.pb"
    save_pipeline(proto, str(pb))
    manifest = _renamed_manifest("wordcount", renames["pcollections"], tmp_path / "renamed.manifest.json")
    before = analyze(fixture_pb("wordcount"), fixture_manifest("wordcount"))
    after = analyze(str(pb), manifest)
    assert keys_by_var(after) == keys_by_var(before)
    assert after.cacheables["words_renamed"].var == "words"
    assert {renames["pcollections"][pc]: k for pc, k in all_keys(before).items()} == all_keys(after)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_renumbering_every_id_keeps_every_key(tmp_path, name):
    kinds = ("transforms", "pcollections", "coders", "windowing_strategies", "environments")
    proto = load_fixture(name)
    renames = rename_ids(proto, kinds)
    pb = tmp_path / "renamed.pb"
    save_pipeline(proto, str(pb))
    manifest = _renamed_manifest(name, renames["pcollections"], tmp_path / "renamed.manifest.json")
    before = analyze(fixture_pb(name), fixture_manifest(name))
    after = analyze(str(pb), manifest)
    assert set(after.index.pcollections).isdisjoint(before.index.pcollections)  # really renamed
    assert keys_by_var(after) == keys_by_var(before)
    pc_ren = renames["pcollections"]
    assert {pc_ren[pc]: k for pc, k in all_keys(before).items()} == all_keys(after)
    # Synthetic variables follow content too.
    assert sorted(c.var for c in after.cacheables.values()) == sorted(c.var for c in before.cacheables.values())


# --- explicit keys ---------------------------------------------------------------------------


def test_explicit_cache_key_overrides(tmp_path):
    explicit = "abcdef0123-140234-140567-139999"
    manifest = tmp_path / "m.json"
    manifest.write_text(
        json.dumps(
            {
                "bindings": {
                    "words": {"pcollection": "ref_PCollection_PCollection_9", "cache_key": explicit},
                    "counts": "ref_PCollection_PCollection_12",
                }
            }
        )
    )
    cache = tmp_path / "cache"
    (cache / "full").mkdir(parents=True)
    (cache / "full" / f"{explicit}-00000-of-00001").write_bytes(EMPTY_SHARD)
    a = analyze(fixture_pb("wordcount"), str(manifest), cache_dir=str(cache))
    words = a.cacheables["ref_PCollection_PCollection_9"]
    assert words.cache_key == explicit
    assert words.cached  # looked up under the explicit key
    assert a.pcollections["ref_PCollection_PCollection_9"].cache_key == explicit
    derived = a.digests.key_for("words", "ref_PCollection_PCollection_9", a.index.producer["ref_PCollection_PCollection_9"])
    assert derived != explicit
    assert not (a.cacheables["ref_PCollection_PCollection_12"].cached)
    assert KEY_RE.match(a.cacheables["ref_PCollection_PCollection_12"].cache_key)


# --- install location ---------------------------------------------------------------------


def _beam_pickle(data: bytes, zlib_: bool = False) -> bytes:
    import base64
    import bz2
    import zlib

    return base64.b64encode(zlib.compress(data, 9) if zlib_ else bz2.compress(data, 9))


def test_pickles_are_signed_without_the_install_path():
    from beaminst.model.canonical import install_independent

    body = b"\x8c\x08__main__\x94\x8c\x04square\x94"
    a = b"\x8c\x3f/work/venv/lib/python3.11/site-packages/apache_beam/transforms/core.py\x94" + body
    b = b"\x8c\x4b/tmp/beaminst-ci.Xy12/lib/python3.11/site-packages/apache_beam/transforms/core.py\x94" + body
    c = b"\x8c\x3f/work/venv/lib/python3.11/dist-packages/apache_beam/transforms/core.py\x94" + body
    other = a.replace(b"square", b"cube__")
    assert install_independent(_beam_pickle(a)) == install_independent(_beam_pickle(b))
    assert install_independent(_beam_pickle(a)) == install_independent(_beam_pickle(c, zlib_=True))
    assert install_independent(_beam_pickle(a)) != install_independent(_beam_pickle(other))
    # A user's own file outside site-packages stays part of the signature.
    user = a.replace(b"/work/venv/lib/python3.11/site-packages/apache_beam", b"/home/me/notebooks/my_pipeline")
    assert install_independent(_beam_pickle(user)) != install_independent(_beam_pickle(a))
    # Not a pickle: unchanged.
    assert install_independent(b"plain bytes") == b"plain bytes"


def test_pickle_frame_lengths_do_not_leak_the_install_path():
    """Protocol 5 pickles start with a FRAME whose length counts the path."""
    from beaminst.model.canonical import install_independent

    def framed(path: bytes) -> bytes:
        body = b"\x8c" + bytes([len(path)]) + path + b"\x94\x8c\x04core\x94."
        return b"\x80\x05\x95" + len(body).to_bytes(8, "little") + body

    short = framed(b"/work/venv/lib/python3.11/site-packages/apache_beam/transforms/core.py")
    long_ = framed(b"/tmp/beaminst-ci.Ab12Cd/lib/python3.11/site-packages/apache_beam/transforms/core.py")
    assert short[3:11] != long_[3:11]
    assert install_independent(_beam_pickle(short)) == install_independent(_beam_pickle(long_))


def test_the_validator_keeps_what_it_inflated_for_signing_without_a_second_inflation(monkeypatch):
    """Validation inflates every pickle of a file once and keeps it, so cache
    keys do not inflate it again; signing waits for the first key (graph
    never signs): what is signed then is what install_independent computes
    from scratch."""
    from beaminst.graph import validate as validate_module
    from beaminst.graph.validate import validate
    from beaminst.model import canonical, urns

    proto = load_fixture("wordcount")
    pickles = []
    for t in proto.components.transforms.values():
        msg = urns.parse_payload(t.spec.urn, t.spec.payload) if t.spec.payload else None
        for _m, fd, value in urns.scalar_fields(msg) if msg is not None else ():
            if fd.name == "payload" and fd.type == fd.TYPE_BYTES and len(value) >= 8:
                pickles.append(value)
    assert len(pickles) >= 5
    canonical._STABLE_MEMO.clear()
    computed = [canonical.install_independent(p) for p in pickles]
    signed = [p for p, c in zip(pickles, computed, strict=True) if c.startswith(b"pickle:")]
    assert signed
    canonical._STABLE_MEMO.clear()
    validate_module._INFLATE_CHECKED.clear()
    validate(proto)
    assert not any(p in canonical._STABLE_MEMO for p in pickles)  # nothing signed yet
    assert all(p in canonical._INFLATED.data for p in signed)
    with monkeypatch.context() as m:
        m.setattr(canonical, "decompress_pickle", lambda *_a: pytest.fail("inflated a second time"))
        assert [canonical.install_independent(p) for p in signed] == [c for c in computed if c.startswith(b"pickle:")]
    assert [canonical.install_independent(p) for p in pickles] == computed
    assert not any(p in canonical._INFLATED.data for p in pickles)  # handed over, not kept twice


def test_graph_keeps_no_inflated_pickle_and_later_loads_still_do(tmp_path):
    """``graph`` signs no pickle, so its loads keep none of the ones they
    inflate (a 20,000-transform drawing held 16 MB of them); the opt-out ends
    with the call."""
    from beaminst.commands import api
    from beaminst.graph import validate as validate_module
    from beaminst.model import canonical

    def fresh() -> None:
        canonical._STABLE_MEMO.clear()
        canonical._INFLATED.data.clear()
        canonical._INFLATED.size = 0
        validate_module._INFLATE_CHECKED.clear()

    fresh()
    api.graph_files(str(fixture_pb("wordcount")), str(tmp_path / "g.dot"))
    assert (tmp_path / "g.dot").read_text().startswith("digraph")
    assert canonical._INFLATED.data == {}
    fresh()
    api.load(str(fixture_pb("wordcount")))
    assert canonical._INFLATED.data, "a load outside graph keeps what it inflated for the keys"


def test_kept_inflations_stay_within_their_cap(monkeypatch):
    from beaminst.model import canonical

    kept = canonical._Inflated()
    monkeypatch.setattr(canonical._Inflated, "CAP", 100)
    monkeypatch.setattr(canonical._Inflated, "OVERHEAD", 8)
    for i in range(10):
        kept.add(b"e%d" % i, b"x" * 20)  # 2 + 20 + 8 = 30 each
        assert kept.size == 30 * len(kept.data) <= 100
    assert list(kept.data) == [b"e7", b"e8", b"e9"]  # the oldest went first
    kept.add(b"huge", b"x" * 89)
    assert b"huge" not in kept.data
    assert kept.pop(b"e8") == b"x" * 20 and kept.size == 60 and kept.pop(b"e8") is None
    # Entries that inflate to nothing still count (zlib ignores trailing bytes: many payloads, b"" each).
    for i in range(1000):
        kept.add(b"empty%04d" % i, b"")
    assert kept.size <= 100 and len(kept.data) <= 100 // 8


def test_ids_beams_io_mints_at_construction_are_cleared_and_nothing_else():
    """fileio's temporary directory and BigQuery's export id are new at every
    build; a uuid anywhere else (a user's path) is content."""
    import uuid

    from beaminst.model.canonical import io_ids_cleared

    temp = f"gs://bucket/tmp/.temp{uuid.uuid4()}"
    assert io_ids_cleared(temp) == "gs://bucket/tmp/.temp<uuid>"
    assert io_ids_cleared(str(uuid.uuid4())[:10]) == "<io id>"
    for content in (
        f"gs://bucket/run-{uuid.uuid4()}/part", f"gs://bucket/.temp{uuid.uuid4()}/x", str(uuid.uuid4()),
        str(uuid.uuid4())[:11], f".temp{uuid.uuid1()}", "select 1",
    ):
        assert io_ids_cleared(content) == content


def test_an_unnamed_context_parameters_id_is_cleared_and_a_named_one_kept():
    from beaminst.model.canonical import context_param_id_cleared

    assert context_param_id_cleared("SetupContextParam_139780621574096") == "SetupContextParam_#"
    assert context_param_id_cleared("BundleContextParam_140347540370000") == "BundleContextParam_#"
    for content in ("SetupContextParam_139780621574097", "SetupContextParam_conn", "SetupContextParam_12", "x_SetupContextParam_139780621574096"):
        assert context_param_id_cleared(content) == content


def test_a_pickled_row_coders_schema_id_is_not_content():
    """A RowCoder pickles as RowCoder.from_payload(<Schema>), the schema
    carrying the uuid4 Beam gave it; its fields are content."""
    import base64
    import bz2
    import uuid

    from apache_beam.coders.row_coder import RowCoder
    from apache_beam.internal import pickler
    from apache_beam.portability.api import schema_pb2

    from beaminst.model.canonical import install_independent

    def pickled(field: str, schema_id: str) -> bytes:
        schema = schema_pb2.Schema(id=schema_id, fields=[schema_pb2.Field(
            name=field, type=schema_pb2.FieldType(atomic_type=schema_pb2.STRING))])
        data = pickler.dumps(RowCoder(schema))
        assert b"RowCoder.from_payload" in bz2.decompress(base64.b64decode(data))
        return data

    one, other = pickled("word", str(uuid.uuid4())), pickled("word", str(uuid.uuid4()))
    assert one != other and install_independent(one) == install_independent(other)
    assert install_independent(pickled("count", str(uuid.uuid4()))) != install_independent(one)

