"""Validation of pipeline protos, and the graph index built on valid ones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from conftest import FIXTURE_NAMES, FIXTURES, load_fixture

from beaminst.errors import BeaminstError, ValidationError
from beaminst.graph.index import Consumer, build_index
from beaminst.graph.validate import validate

ROOT = "ref_AppliedPTransform_AppliedPTransform_1"


def tid(proto: Any, unique_name: str) -> str:
    """The id of the transform with ``unique_name``."""
    (found,) = [t for t, x in proto.components.transforms.items() if x.unique_name == unique_name]
    return found


def out(proto: Any, unique_name: str) -> str:
    """The main output PCollection id of the transform with ``unique_name``."""
    return proto.components.transforms[tid(proto, unique_name)].outputs["None"]


def expect_invalid(proto: Any, *needles: str) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        validate(proto)
    message = str(info.value)
    for needle in needles:
        assert repr(needle) in message, f"{needle!r} not named in: {message}"
    assert info.value.exit_code == 2
    assert isinstance(info.value, BeaminstError)
    assert "\n" not in message
    return info.value


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_every_fixture_is_valid(name):
    index = validate(load_fixture(name))
    assert index.leaf_order  # and no exception


# --- each error kind, by mutating a copy of a real pipeline -------------------


def _dangling_input(p: Any) -> tuple[str, ...]:
    p.components.transforms[tid(p, "Split")].inputs["None"] = "ghost_pc"
    return (tid(p, "Split"), "ghost_pc")


def _dangling_output(p: Any) -> tuple[str, ...]:
    p.components.transforms[tid(p, "Format")].outputs["None"] = "ghost_out"
    return (tid(p, "Format"), "ghost_out")


def _dangling_subtransform(p: Any) -> tuple[str, ...]:
    p.components.transforms[tid(p, "CountWords")].subtransforms.append("ghost_transform")
    return (tid(p, "CountWords"), "ghost_transform")


def _dangling_coder_component(p: Any) -> tuple[str, ...]:
    coder = p.components.coders["ref_Coder_TupleCoder_3"]
    coder.component_coder_ids[1] = "ghost_coder"
    return ("ref_Coder_TupleCoder_3", "ghost_coder")


def _dangling_pcollection_coder(p: Any) -> tuple[str, ...]:
    pc = out(p, "Split")
    p.components.pcollections[pc].coder_id = "ghost_coder"
    return (pc, "ghost_coder")


def _dangling_windowing_strategy(p: Any) -> tuple[str, ...]:
    pc = out(p, "Format")
    p.components.pcollections[pc].windowing_strategy_id = "ghost_ws"
    return (pc, "ghost_ws")


def _dangling_window_coder(p: Any) -> tuple[str, ...]:
    p.components.windowing_strategies["ref_Windowing_Windowing_1"].window_coder_id = "ghost_wc"
    return ("ref_Windowing_Windowing_1", "ghost_wc")


def _dangling_environment(p: Any) -> tuple[str, ...]:
    p.components.transforms[tid(p, "PairWithOne")].environment_id = "ghost_env"
    return (tid(p, "PairWithOne"), "ghost_env")


def _dangling_windowing_environment(p: Any) -> tuple[str, ...]:
    p.components.windowing_strategies["ref_Windowing_Windowing_2"].environment_id = "ghost_env"
    return ("ref_Windowing_Windowing_2", "ghost_env")


def _dangling_root(p: Any) -> tuple[str, ...]:
    p.root_transform_ids[0] = "ghost_root"
    return ("ghost_root",)


def _no_producer(p: Any) -> tuple[str, ...]:
    orphan = p.components.pcollections["orphan_pc"]
    orphan.CopyFrom(p.components.pcollections[out(p, "Split")])
    orphan.unique_name = "orphan"
    return ("orphan_pc",)


def _two_producers(p: Any) -> tuple[str, ...]:
    words = out(p, "Split")
    p.components.transforms[tid(p, "Format")].outputs["None"] = words
    return (words, tid(p, "Split"), tid(p, "Format"))


def _data_cycle(p: Any) -> tuple[str, ...]:
    # ReadLines/Impulse now also consumes Format's output: every leaf depends on itself.
    impulse = tid(p, "ReadLines/Impulse")
    p.components.transforms[impulse].inputs["loop"] = out(p, "Format")
    return (impulse,)


def _subtransform_cycle(p: Any) -> tuple[str, ...]:
    # CountWords -> CountWords/GroupByKey -> CountWords
    count = tid(p, "CountWords")
    p.components.transforms[tid(p, "CountWords/GroupByKey")].subtransforms.append(count)
    return (count,)


def _no_roots(p: Any) -> tuple[str, ...]:
    del p.root_transform_ids[:]
    return ()


def _duplicate_root(p: Any) -> tuple[str, ...]:
    p.root_transform_ids.append(ROOT)
    return (ROOT,)


def _root_also_subtransform(p: Any) -> tuple[str, ...]:
    split = tid(p, "Split")
    p.root_transform_ids.append(split)
    return (split, ROOT)


def _unreachable(p: Any) -> tuple[str, ...]:
    ghost = p.components.transforms["ghost_transform"]
    ghost.unique_name = "Ghost"
    ghost.spec.urn = "beam:transform:impulse:v1"
    return ("ghost_transform",)


def _duplicate_unique_names(p: Any) -> tuple[str, ...]:
    split, fmt = tid(p, "Split"), tid(p, "Format")
    p.components.transforms[split].unique_name = "Format"
    return (split, fmt, "Format")


def _coder_cycle(p: Any) -> tuple[str, ...]:
    a, b = p.components.coders["cyc_a"], p.components.coders["cyc_b"]
    a.spec.urn = b.spec.urn = "beam:coder:kv:v1"
    a.component_coder_ids.extend(["ref_Coder_VarIntCoder_4", "cyc_b"])
    b.component_coder_ids.extend(["cyc_a", "ref_Coder_BytesCoder_1"])
    return ("cyc_a",)


def _coder_self_cycle(p: Any) -> tuple[str, ...]:
    p.components.coders["ref_Coder_IterableCoder_16"].component_coder_ids[0] = "ref_Coder_IterableCoder_16"
    return ("ref_Coder_IterableCoder_16",)


WORDCOUNT_MUTATIONS: dict[str, tuple[Callable[[Any], tuple[str, ...]], str]] = {
    "dangling input PCollection": (_dangling_input, "does not exist"),
    "dangling output PCollection": (_dangling_output, "does not exist"),
    "dangling subtransform": (_dangling_subtransform, "does not exist"),
    "dangling coder component": (_dangling_coder_component, "does not exist"),
    "dangling PCollection coder": (_dangling_pcollection_coder, "does not exist"),
    "dangling windowing strategy": (_dangling_windowing_strategy, "does not exist"),
    "dangling window coder": (_dangling_window_coder, "does not exist"),
    "dangling environment": (_dangling_environment, "does not exist"),
    "dangling windowing environment": (_dangling_windowing_environment, "does not exist"),
    "dangling root": (_dangling_root, "does not exist"),
    "PCollection with no producer": (_no_producer, "no producing transform"),
    "PCollection with two producers": (_two_producers, "two producers"),
    "data cycle among leaves": (_data_cycle, "cycle"),
    "subtransform cycle": (_subtransform_cycle, "appears twice"),
    "no roots": (_no_roots, "no root transform"),
    "duplicate root": (_duplicate_root, "listed twice"),
    "root that is also a subtransform": (_root_also_subtransform, "a root and a subtransform of"),
    "transform unreachable from roots": (_unreachable, "not reachable"),
    "duplicate unique names": (_duplicate_unique_names, "unique name"),
    "coder cycle": (_coder_cycle, "its own component"),
    "coder that is its own component": (_coder_self_cycle, "its own component"),
}


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_the_bulk_transform_check_passes_valid_pipelines_without_the_walk(name, monkeypatch):
    """check_references decides the per-transform checks with set unions over
    every node; the walk in id order runs only to name a problem. On a valid
    pipeline it does not run (the mutations below prove the walk names each)."""
    from beaminst.graph import validate as v

    def walk(*_a: Any) -> None:
        raise AssertionError("the bulk check failed a valid pipeline")

    monkeypatch.setattr(v, "_first_transform_problem", walk)
    validate(load_fixture(name))


@pytest.mark.parametrize("case", sorted(WORDCOUNT_MUTATIONS))
def test_invalid_wordcount_mutation(case):
    mutate, phrase = WORDCOUNT_MUTATIONS[case]
    proto = load_fixture("wordcount")
    validate(proto)  # the unmutated copy is fine
    named = mutate(proto)
    err = expect_invalid(proto, *named)
    assert phrase in str(err)


def test_side_input_declared_but_not_among_inputs():
    proto = load_fixture("side_inputs")
    add_sizes = tid(proto, "AddSizes")
    del proto.components.transforms[add_sizes].inputs["python_side_input0"]
    expect_invalid(proto, add_sizes, "python_side_input0")


def test_unparseable_pardo_payload_is_a_validation_error():
    proto = load_fixture("wordcount")
    proto.components.transforms[tid(proto, "Split")].spec.payload = b"\xff\xff\xff"
    with pytest.raises(ValidationError, match="Split"):
        validate(proto)


def test_mutations_leave_the_fixture_alone():
    """load_fixture gives independent copies (otherwise the tests above would
    leak into each other)."""
    a = load_fixture("wordcount")
    _dangling_input(a)
    validate(load_fixture("wordcount"))


# --- the graph index ------------------------------------------------------------


@pytest.fixture(scope="module")
def wordcount():
    proto = load_fixture("wordcount")
    return proto, validate(proto)


def test_producers(wordcount):
    proto, index = wordcount
    assert index.producer[out(proto, "Split")] == tid(proto, "Split")
    assert index.producer[out(proto, "Format")] == tid(proto, "Format")
    # The composite's output is produced by its innermost leaf, not the composite.
    assert index.producer[out(proto, "CountWords")] == tid(proto, "CountWords/Combine/ParDo(CombineValuesDoFn)")
    assert index.producer[out(proto, "ReadLines")] == tid(proto, "ReadLines/Map(decode)")
    assert set(index.producer) == set(proto.components.pcollections)
    assert all(index.is_leaf(t) for t in index.producer.values())
    assert index.producer_name(out(proto, "Split")) == "Split"
    assert index.producer_tag(out(proto, "Split")) == "None"


def test_consumers(wordcount):
    proto, index = wordcount
    words = out(proto, "Split")
    assert index.consumers[words] == (Consumer(tid(proto, "PairWithOne"), "None", False, True),)
    pairs = out(proto, "PairWithOne")
    # Used by the composite and by its first leaf.
    assert {c.transform_id for c in index.consumers[pairs]} == {
        tid(proto, "CountWords"),
        tid(proto, "CountWords/GroupByKey"),
    }
    assert {c.is_leaf for c in index.consumers[pairs]} == {True, False}
    assert out(proto, "Format") not in index.consumers  # nothing reads the last output


def test_parents_and_top_level(wordcount):
    proto, index = wordcount
    assert index.parent[ROOT] is None
    assert index.parent[tid(proto, "Split")] == ROOT
    assert index.parent[tid(proto, "CountWords/GroupByKey")] == tid(proto, "CountWords")
    inner = tid(proto, "CountWords/Combine/ParDo(CombineValuesDoFn)")
    assert index.ancestors(inner) == [tid(proto, "CountWords/Combine"), tid(proto, "CountWords"), ROOT]
    assert index.top_level() == tuple(
        tid(proto, n) for n in ("ReadLines", "Split", "PairWithOne", "CountWords", "Format")
    )
    assert index.roots == (ROOT,)
    assert index.hierarchy_order[0] == ROOT
    assert set(index.hierarchy_order) == set(proto.components.transforms)


def test_leaf_order_is_topological(wordcount):
    proto, index = wordcount
    leaves = [t for t in proto.components.transforms if not proto.components.transforms[t].subtransforms]
    assert sorted(index.leaf_order) == sorted(leaves)
    position = {t: i for i, t in enumerate(index.leaf_order)}
    for t in index.leaf_order:
        for pc in proto.components.transforms[t].inputs.values():
            producer = index.producer[pc]
            if producer != t:
                assert position[producer] < position[t]


def test_main_and_side_consumers_told_apart():
    proto = load_fixture("side_inputs")
    index = validate(proto)
    add_sizes, scale = tid(proto, "AddSizes"), tid(proto, "Scale")
    sizes, words, factor = out(proto, "Sizes"), out(proto, "Words"), out(proto, "Factor")
    assert index.consumers[sizes] == (Consumer(add_sizes, "python_side_input0", True, True),)
    assert index.main_consumers(sizes) == []
    assert index.consumers[words] == (Consumer(add_sizes, "None", False, True),)
    assert index.main_consumers(words) == [Consumer(add_sizes, "None", False, True)]
    assert [c.is_side for c in index.consumers[factor]] == [True]
    assert index.consumers[factor][0].transform_id == scale
    assert index.side_input_tags[add_sizes] == frozenset({"python_side_input0"})
    assert index.side_input_tags[scale] == frozenset({"python_side_input0"})
    assert tid(proto, "Lengths") not in index.side_input_tags
    # The side input's producer runs before its consumer.
    position = {t: i for i, t in enumerate(index.leaf_order)}
    assert position[index.producer[factor]] < position[scale]


def test_pass_through_leaf_is_not_a_producer():
    """Create([10]) emits a MaybeReshuffle leaf whose output is its input; the
    producer stays the transform that made the PCollection."""
    proto = load_fixture("side_inputs")
    index = validate(proto)
    reshuffle = tid(proto, "Factor/MaybeReshuffle")
    t = proto.components.transforms[reshuffle]
    assert not t.subtransforms and set(t.outputs.values()) == set(t.inputs.values())
    assert reshuffle not in index.producer.values()
    assert index.producer[t.outputs["None"]] == tid(proto, "Factor/FlatMap(<lambda at core.py:4094>)")


def test_multi_output_producers_and_tags():
    proto = load_fixture("multi_output")
    index = validate(proto)
    classify = tid(proto, "Classify")
    outputs = dict(proto.components.transforms[classify].outputs)
    # The main output ("big" in the SDK) is under Beam's main tag "None".
    assert set(outputs) == {"None", "even", "odd"}
    leaf = tid(proto, "Classify/ParDo(CallableWrapperDoFn)")
    assert proto.components.transforms[leaf].outputs == proto.components.transforms[classify].outputs
    for tag, pc in outputs.items():
        assert index.producer[pc] == leaf
        assert index.producer_tag(pc) == tag


def test_build_index_is_linear_on_a_long_chain():
    """A 5000-deep chain must not hit the recursion limit anywhere."""
    from beaminst.model.beamproto import runner_api

    rapi = runner_api()
    p = rapi.Pipeline()
    c = p.components
    c.coders["c"].spec.urn = "beam:coder:bytes:v1"
    c.coders["w"].spec.urn = "beam:coder:global_window:v1"
    c.windowing_strategies["ws"].window_coder_id = "w"
    root = c.transforms["root"]
    root.unique_name = "root"
    p.root_transform_ids.append("root")
    prev = None
    n = 5000
    for i in range(n):
        t = c.transforms[f"t{i}"]
        t.unique_name = f"T{i}"
        t.spec.urn = "beam:transform:impulse:v1" if prev is None else "beam:transform:flatten:v1"
        if prev is not None:
            t.inputs["in"] = prev
        t.outputs["out"] = f"pc{i}"
        c.pcollections[f"pc{i}"].coder_id = "c"
        c.pcollections[f"pc{i}"].windowing_strategy_id = "ws"
        root.subtransforms.append(f"t{i}")
        prev = f"pc{i}"
    index = validate(p)
    assert index.leaf_order == tuple(f"t{i}" for i in range(n))
    assert build_index(p).producer[f"pc{n - 1}"] == f"t{n - 1}"


def test_the_output_check_compares_with_the_input_as_it_was(tmp_path):
    """The output check does not read again what equals the input, but
    "equal" is against a snapshot taken before the passes: a pass that broke
    the input and its copy the same way (a bug) is still caught."""
    from beaminst.errors import InternalError
    from beaminst.graph.validate import validate
    from beaminst.model.protoio import load_pipeline
    from beaminst.passes.rewrite import check_output

    proto, _ = load_pipeline(str(FIXTURES / "wordcount.pb"))
    index = validate(proto)
    snapshot = index.snapshot()
    out = type(proto)()
    out.CopyFrom(proto)
    tid = next(t for t, tr in proto.components.transforms.items() if tr.inputs and not tr.subtransforms)
    tag = next(iter(proto.components.transforms[tid].inputs))
    for p in (proto, out):
        p.components.transforms[tid].inputs[tag] = "dangling"
    with pytest.raises(InternalError, match="dangling"):
        check_output(out, snapshot)


def test_a_pickle_bomb_is_reported_before_later_reference_errors(monkeypatch):
    """The pickle-size check keeps its place among the reference checks:
    before the windowing strategies'."""
    import base64
    import zlib

    from beaminst.graph.validate import validate
    from beaminst.model import bounded
    from beaminst.model.beamproto import runner_api
    from beaminst.model.protoio import load_pipeline

    monkeypatch.setattr(bounded, "max_decompressed_bytes", lambda: 1 << 20)
    proto, _ = load_pipeline(str(FIXTURES / "wordcount.pb"))
    ts = proto.components.transforms
    tid = next(t for t, tr in ts.items() if tr.spec.urn == "beam:transform:pardo:v1")
    payload = runner_api().ParDoPayload.FromString(ts[tid].spec.payload)
    payload.do_fn.payload = base64.b64encode(zlib.compress(b"\0" * (4 << 20)))
    ts[tid].spec.payload = payload.SerializeToString()
    ws = next(iter(proto.components.windowing_strategies))
    proto.components.windowing_strategies[ws].window_coder_id = "nope"
    with pytest.raises(ValidationError, match="decompresses"):
        validate(proto)


def test_the_output_check_refuses_an_undeclared_requirement():
    """A rewritten pipeline whose transforms imply a requirement it does not
    declare (here a splittable DoFn) is a beaminst bug, reported as one."""
    from beaminst.errors import InternalError
    from beaminst.model.beamproto import runner_api
    from beaminst.model.protoio import load_pipeline
    from beaminst.passes.rewrite import check_output

    proto, _ = load_pipeline(str(FIXTURES / "wordcount.pb"))
    snapshot = validate(proto).snapshot()
    out = type(proto)()
    out.CopyFrom(proto)
    ts = out.components.transforms
    tid = next(t for t, tr in ts.items() if tr.spec.urn == "beam:transform:pardo:v1")
    payload = runner_api().ParDoPayload.FromString(ts[tid].spec.payload)
    payload.restriction_coder_id = next(iter(out.components.coders))
    ts[tid].spec.payload = payload.SerializeToString()
    del out.requirements[:]
    with pytest.raises(InternalError, match="requirement 'beam:requirement:pardo:splittable_dofn:v1' is not declared"):
        check_output(out, snapshot)
    out.requirements.append("beam:requirement:pardo:splittable_dofn:v1")
    check_output(out, snapshot)
