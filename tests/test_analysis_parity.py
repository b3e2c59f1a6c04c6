"""Parity of the proto-side analysis with Interactive Beam itself.

For every fixture pipeline: build it live with the Beam SDK, save it with
``beaminst.export``, analyze the saved pair, and compare with what Beam's own
``pipeline_instrument`` / ``utils`` compute on the live pipeline.
"""

from __future__ import annotations

import re

import pytest
from conftest import FIXTURE_NAMES, UNBOUNDED_FIXTURES

from fixtures.pipelines import BUILDERS


def test_fixture_list_covers_every_builder():
    assert set(BUILDERS) == set(FIXTURE_NAMES)


def export_and_analyze(name: str, tmp_path) -> tuple:
    """(built, context, analysis): the live pipeline, its to_runner_api context
    and beaminst's analysis of the exported (proto, manifest) pair."""
    import beaminst
    from beaminst.commands.api import analyze_files

    built = BUILDERS[name]()
    pb, manifest = beaminst.export(built.pipeline, built.bindings, str(tmp_path / name), computed=built.computed)
    _, context = built.pipeline.to_runner_api(return_context=True)
    return built, context, analyze_files(pb, manifest)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_pcoll_to_pcoll_id_matches_beam(ib_env, tmp_path, name):
    from apache_beam.runners.interactive import pipeline_instrument as instr

    built, context, analysis = export_and_analyze(name, tmp_path)
    theirs = instr.pcoll_to_pcoll_id(built.pipeline, context)
    ours = analysis.pcoll_to_pcoll_id()
    assert ours == theirs
    # Every PCollection of the proto appears: nothing is dropped on either side.
    assert set(ours.values()) == set(analysis.index.pcollections)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_unbounded_sources_match_beam(ib_env, tmp_path, name):
    from apache_beam.runners.interactive import utils

    built, context, analysis = export_and_analyze(name, tmp_path)
    theirs = utils.unbounded_sources(built.pipeline)
    assert bool(theirs) == (name in UNBOUNDED_FIXTURES)
    assert [s.full_label for s in theirs] == [s.unique_name for s in analysis.unbounded_sources]
    assert analysis.has_unbounded_sources == bool(theirs)
    for node, ours in zip(theirs, analysis.unbounded_sources, strict=True):
        assert ours.transform_id == context.transforms.get_id(node)
        assert ours.main_output == context.pcollections.get_id(node.outputs[None])
        assert ours.outputs == {str(tag): context.pcollections.get_id(pc) for tag, pc in node.outputs.items()}


def _beam_cacheables(built, watch_sources: bool) -> dict:
    from apache_beam.runners.interactive import interactive_environment as ie
    from apache_beam.runners.interactive import pipeline_instrument as instr
    from apache_beam.runners.interactive import utils

    # As in a notebook: the user's variables, the pipeline among them.
    ie.current_env().watch({**built.bindings, "p": built.pipeline})
    if watch_sources:
        utils.watch_sources(built.pipeline)
    pi = instr.PipelineInstrument(built.pipeline)
    return pi.cacheables


@pytest.mark.parametrize("name", sorted(set(BUILDERS) - set(UNBOUNDED_FIXTURES)))
def test_cacheables_match_beam_bounded(ib_env, tmp_path, name):
    built, _, analysis = export_and_analyze(name, tmp_path)
    theirs = {pc: c.var for pc, c in _beam_cacheables(built, watch_sources=False).items()}
    ours = {pc: c.var for pc, c in analysis.cacheables.items()}
    assert ours == theirs
    assert not any(c.synthetic for c in analysis.cacheables.values())
    assert set(ours.values()) == set(built.bindings)


SYNTHETIC = re.compile(r"^synthetic_var_(?P<rest>.+)$")


@pytest.mark.parametrize("name", sorted(UNBOUNDED_FIXTURES))
def test_cacheables_match_beam_unbounded(ib_env, tmp_path, name):
    built, _, analysis = export_and_analyze(name, tmp_path)
    # Without watch_sources Beam only sees the user's variables; beaminst's
    # extra entries are exactly its synthetic bindings for unbound source outputs.
    ours = {pc: c.var for pc, c in analysis.cacheables.items()}
    user_only = {pc: var for pc, var in ours.items() if not analysis.cacheables[pc].synthetic}
    assert {pc: c.var for pc, c in _beam_cacheables(built, watch_sources=False).items()} == user_only

    # With watch_sources (what Beam does before recording), both sides have a
    # cacheable for every source output, under the same user variable when
    # there is one and a synthetic one otherwise.
    theirs = {pc: c.var for pc, c in _beam_cacheables(built, watch_sources=True).items()}
    assert set(theirs) == set(ours)
    source_outputs = {pc for s in analysis.unbounded_sources for pc in s.outputs.values()}
    assert source_outputs and source_outputs <= set(ours)
    for pc in theirs:
        their_synthetic = SYNTHETIC.match(theirs[pc])
        our_synthetic = SYNTHETIC.match(ours[pc])
        assert bool(their_synthetic) == bool(our_synthetic) == analysis.cacheables[pc].synthetic, pc
        if our_synthetic:
            assert pc in source_outputs
            assert re.fullmatch(r"[0-9]+", their_synthetic["rest"])  # Beam: id(pcoll)
            assert re.fullmatch(r"[0-9a-f]{16}", our_synthetic["rest"])  # ours: content digest
        else:
            assert theirs[pc] == ours[pc]


@pytest.mark.parametrize("name", ["pubsub_one", "pubsub_two"])
def test_synthetic_vars_are_deterministic(ib_env, name, tmp_path):
    """Unlike Beam's id()-based name, ours is the same for the committed fixture
    (written by another process) and a fresh build."""
    from conftest import fixture_manifest, fixture_pb

    import beaminst
    from beaminst.commands.api import analyze_files

    committed = analyze_files(fixture_pb(name), fixture_manifest(name))
    built = BUILDERS[name]()
    pb, manifest = beaminst.export(built.pipeline, built.bindings, str(tmp_path / name))
    fresh = analyze_files(pb, manifest)
    synth = {pc: (c.var, c.cache_key) for pc, c in committed.cacheables.items() if c.synthetic}
    assert synth
    assert synth == {pc: (c.var, c.cache_key) for pc, c in fresh.cacheables.items() if c.synthetic}
    assert len({var for var, _ in synth.values()}) == len(synth)  # distinct per source


def test_mixed_binds_source_output_to_user_var_not_synthetic():
    """In Beam's mixed streaming/batch shape the user already named the PubSub
    output: watch_sources must not add a second name for it, nor must we."""
    from conftest import fixture_manifest, fixture_pb

    from beaminst.commands.api import analyze_files

    a = analyze_files(fixture_pb("mixed"), fixture_manifest("mixed"))
    (source,) = a.unbounded_sources
    assert source.unique_name == "source_1"
    assert a.cacheables[source.main_output].var == "source_1"
    assert not any(c.synthetic for c in a.cacheables.values())
