"""beaminst on Beam's own example pipelines (``apache_beam.examples``).

Every example that builds offline (:mod:`beam_examples`) is instrumented by
Beam's ``PipelineInstrument`` and by beaminst, each output of every top-level
transform bound, and the two compared: structure (:mod:`structure`) and
``requirements``, and for the Pub/Sub examples the background caching
pipeline too. Every beaminst output passes Beam Java's PipelineValidator; a
few run on the DirectRunner, then run again reading everything back.

One deliberate difference, asserted where it shows: **pass-throughs**.
Beam's ``PipelineFragment`` walks a *set* of PCollection objects (hashed by
``id()``), and whether a pass-through inside a kept composite survives
pruning (a ``MaybeReshuffle`` whose output is its input, as Beam's
``Create`` and BigQuery's ``ImpulseEmptyPC`` hold) depends on which of
two paths reaches its composite first: the same example, instrumented by
Beam in five processes, kept ``read/_PassThroughThenCleanup/Create/MaybeReshuffle``
in two of them and dropped it in three. beaminst walks the targets in id
order and gives one answer every time; a pass-through only one side kept is
left out of the comparison (and of its parent's subtransforms), and
everything else, pass-throughs both kept included, must match.

Where Beam cannot instrument at all, beaminst is checked on its own:
``streaming_wordcount_debugging`` overflows the stack in Beam's background
caching (``_required_components`` follows a pass-through's input to itself,
with no visited set); ``group_with_coder``'s custom coder makes Beam's runner
copy raise ``NotImplementedError`` in ``from_runner_api``.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from beam_examples import EXAMPLES, STREAMING, Built, build, write_inputs
from beamref import beam_instrument, export_with_keys
from conftest import beam_noise_free, keys_under_two_hash_seeds, run_cli, run_cli_subprocess
from portable import assert_java_valid
from structure import compared, diff

import beaminst
from beaminst.commands.api import analyze_files
from beaminst.model.protoio import save_pipeline
from beaminst.options import RewriteOptions
from beaminst.passes.background_caching import background_caching
from beaminst.passes.instrument import instrument

BEAM_CANNOT = ("streaming_wordcount_debugging", "cookbook.group_with_coder")
COMPARED = tuple(e for e in EXAMPLES if e not in BEAM_CANNOT)


@dataclass
class Outcome:
    beam: Any  # beamref.BeamSide
    ours: Any
    requirements: list[str]
    background: Any | None
    paths: list[Path]


@pytest.fixture(scope="module")
def data(tmp_path_factory: Any) -> Path:
    d = tmp_path_factory.mktemp("beam_examples")
    write_inputs(d / "data")
    return d


_OUTCOMES: dict[str, Outcome | BaseException] = {}


def outcome(name: str, data: Path) -> Outcome:
    """Beam's and beaminst's instrumentation of one example (built once)."""
    if name not in _OUTCOMES:
        try:
            _OUTCOMES[name] = _instrument_both(name, data)
        except Exception as e:  # each test that needs it fails with it, the others go on
            _OUTCOMES[name] = e
    got = _OUTCOMES[name]
    if isinstance(got, BaseException):
        raise got
    return got


_BUILT: dict[str, Built] = {}


def built_once(name: str, data: Path) -> Built:
    if name not in _BUILT:
        _BUILT[name] = build(name, data / "data")
    return _BUILT[name]


def _instrument_both(name: str, data: Path) -> Outcome:
    built = built_once(name, data)
    side = beam_instrument(built.pipeline, built.bindings)
    stem = data / name.replace(".", "_")
    pb, manifest = export_with_keys(built.pipeline, side, str(stem))
    analysis = analyze_files(pb, manifest, side.cache_dir)
    ours, _ = instrument(analysis, RewriteOptions(side.cache_dir))
    paths = [Path(f"{stem}.instrumented.pb")]
    save_pipeline(ours, str(paths[0]))
    background = None
    if side.background is not None:
        background, _ = background_caching(analysis, RewriteOptions(side.cache_dir))
        paths.append(Path(f"{stem}.background.pb"))
        save_pipeline(background, str(paths[1]))
    return Outcome(side, ours, sorted(ours.requirements), background, paths)


def test_the_streaming_examples_are_the_ones_with_unbounded_sources(data):
    for name in COMPARED:
        assert (outcome(name, data).beam.background is not None) == (name in STREAMING), name


@pytest.mark.parametrize("name", COMPARED)
def test_instrument_matches_beams_pipeline_instrument(name, data):
    got = outcome(name, data)
    beam_nodes, our_nodes = compared(got.beam.proto, got.ours, got.beam.root_label)
    assert diff(beam_nodes, our_nodes) == []
    assert got.requirements == sorted(got.beam.proto.requirements)
    assert any(n.startswith("WriteCache_") for n in our_nodes), "every example has a binding to write"


def _side_inputs_count_as_inputs(monkeypatch: Any) -> None:
    """Beam's side-effect rule with side inputs counted as inputs (the fix)."""
    from apache_beam.runners.interactive import pipeline_instrument as instr

    beams = instr.PipelineInstrument._all_inputs_outputs

    def fixed(self: Any, transform: Any) -> tuple[set[Any], set[Any]]:
        inputs, outputs = beams(self, transform)
        inputs.update(s.pvalue for s in transform.side_inputs)
        return inputs, outputs

    monkeypatch.setattr(instr.PipelineInstrument, "_all_inputs_outputs", fixed)


def _read_half(name: str, data: Path) -> tuple[Any, Any, Any]:
    """Beam's and beaminst's instrumentation with the first half of the
    bindings cached and computed: reads, rewiring, the upstream pruned."""
    built = built_once(name, data)
    half = tuple(list(built.bindings)[: max(1, len(built.bindings) // 2)])
    side = beam_instrument(built.pipeline, built.bindings, {v: ["x"] for v in half}, half)
    pb, manifest = export_with_keys(built.pipeline, side, str(data / f"{name.replace('.', '_')}_half"), half)
    ours, report = instrument(analyze_files(pb, manifest, side.cache_dir), RewriteOptions(side.cache_dir))
    return side, ours, report


@pytest.mark.parametrize("name", COMPARED)
def test_reads_match_beams_pipeline_instrument(name, data, monkeypatch):
    """The read path on every example, against Beam with its side-effect rule
    fixed: Beam takes for a side effect (a target kept whatever reads it)
    every output no transform takes as a *main* input, so a PCollection only
    a side input reads keeps its producers running after the transform that
    reads it is pruned (:func:`test_beam_keeps_computing_a_side_input_nothing_reads`).
    beaminst counts side inputs as inputs."""
    _side_inputs_count_as_inputs(monkeypatch)
    side, ours, report = _read_half(name, data)
    # bigquery_side_input's first four bindings feed only side inputs, which
    # neither Beam nor beaminst replaces by a cache read.
    assert bool(report.reads) == (name != "cookbook.bigquery_side_input"), report.reads
    beam_nodes, our_nodes = compared(side.proto, ours, side.root_label)
    assert diff(beam_nodes, our_nodes) == []
    assert sorted(ours.requirements) == sorted(side.proto.requirements)


def test_beam_keeps_computing_a_side_input_nothing_reads(data):
    """game_stats with its first bindings cached: CalculateSpammyUsers' result
    is read back, so nothing needs the global mean score computed inside it,
    which only CalculateSpammyUsers' own (pruned) filter takes as a side
    input. Beam keeps computing it (a per-user sum over every event, then a
    mean); beaminst prunes it. That is all that differs."""
    side, ours, _ = _read_half("complete.game.game_stats", data)
    beam_nodes, our_nodes = compared(side.proto, ours, side.root_label)
    only_beam = set(beam_nodes) - set(our_nodes)
    assert "CalculateSpammyUsers/CombineGlobally(MeanCombineFn)" in only_beam
    assert all(n == "CalculateSpammyUsers" or n.startswith("CalculateSpammyUsers/") for n in only_beam), only_beam
    assert not set(our_nodes) - set(beam_nodes)
    for line in diff(beam_nodes, our_nodes):
        assert line.startswith("only in first: CalculateSpammyUsers"), line


@pytest.mark.parametrize("name", [n for n in COMPARED if n in STREAMING])
def test_background_caching_matches_beams(name, data):
    got = outcome(name, data)
    beam_nodes, our_nodes = compared(got.beam.background, got.background, got.beam.root_label)
    assert diff(beam_nodes, our_nodes) == []
    # Deliberate difference (as in test_background_caching): the capture writes
    # hold stateful DoFns; Beam builds this proto by hand without declaring it,
    # beaminst declares it (portable runners refuse the undeclared one).
    assert list(got.beam.background.requirements) == []
    assert list(got.background.requirements) == ["beam:requirement:pardo:stateful:v1"]


def _beaminst_only(name: str, data: Path) -> Outcome:
    built = build(name, data / "data")
    stem = data / name.replace(".", "_")
    pb, manifest = beaminst.export(built.pipeline, built.bindings, str(stem))
    cache = str(data / f"{stem.name}_cache")
    analysis = analyze_files(pb, manifest, cache)
    ours, report = instrument(analysis, RewriteOptions(cache))
    background, _ = background_caching(analysis, RewriteOptions(cache))
    paths = [Path(f"{stem}.instrumented.pb"), Path(f"{stem}.background.pb")]
    save_pipeline(ours, str(paths[0]))
    save_pipeline(background, str(paths[1]))
    return Outcome(None, ours, sorted(ours.requirements), background, paths)


def _beam_cannot(data: Path) -> Outcome:
    """beaminst's outputs for streaming_wordcount_debugging, made once."""
    got = _OUTCOMES.get("streaming_wordcount_debugging")
    if not isinstance(got, Outcome):
        got = _OUTCOMES["streaming_wordcount_debugging"] = _beaminst_only("streaming_wordcount_debugging", data)
    return got


def test_beaminst_instruments_what_beam_cannot(data):
    """Beam's background caching recurses without end on this example; beaminst
    writes both pipelines (Java-validated below with the rest): a TestStream
    replays the Pub/Sub source, every binding downstream is written."""
    got = _beam_cannot(data)
    urns = [t.spec.urn for t in got.ours.components.transforms.values()]
    assert "beam:transform:teststream:v1" in urns
    assert "beam:transform:pubsub_read:v1" not in urns
    assert any(t.unique_name.startswith("WriteCache_") for t in got.background.components.transforms.values())


def test_a_custom_coder_is_one_clear_line(data):
    """group_with_coder binds PCollections whose coder is the example's own
    pickled class: without --trust-pickles beaminst will not load it; with it,
    the coder gives no element type, which Beam's cache transforms need (as in
    Interactive Beam), and that is said instead."""
    built = build("cookbook.group_with_coder", data / "data")
    pb, manifest = beaminst.export(built.pipeline, built.bindings, str(data / "group_with_coder"))
    base = ("instrument", pb, "-m", manifest, "--cache-dir", str(data / "gwc_cache"), "-o", str(data / "gwc.pb"))
    untrusted = run_cli(*base)
    assert untrusted.exit_code == 2
    lines = beam_noise_free(untrusted.stderr)
    assert len(lines) == 1 and "PlayerCoder" in lines[0] and "--trust-pickles" in lines[0], lines
    trusted = run_cli(*base, "--trust-pickles")
    assert trusted.exit_code == 2
    lines = beam_noise_free(trusted.stderr)
    assert len(lines) == 1 and "gives no element type" in lines[0], lines
    assert not (data / "gwc.pb").exists()


def test_every_output_passes_beam_javas_validator(data):
    paths = []
    for name in COMPARED:
        paths.extend(outcome(name, data).paths)
    paths.extend(_beam_cannot(data).paths)
    assert len(paths) == len(COMPARED) + len(STREAMING) + 1  # streaming_wordcount_debugging counted in both
    assert_java_valid(paths)


# Examples whose cache keys once died with the process: Beam's IO mints a
# random id while the pipeline is built (BigQuery's export id, fileio's
# temporary directory), and the DataFrame API puts id()s in names.
KEYED = ("cookbook.bigquery_tornadoes", "cookbook.filters", "dataframe.flight_delays", "wordcount_dataframe",
         "complete.tfidf", "complete.game.hourly_team_score")
_KEYS = textwrap.dedent(
    """
    import json, sys, tempfile
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from beam_examples import build, write_inputs
    import beaminst
    from beaminst.commands.api import analyze_files
    data = Path(sys.argv[2])
    write_inputs(data)
    keys = {}
    for name in sys.argv[3:]:
        b = build(name, data)
        pb, man = beaminst.export(b.pipeline, b.bindings, tempfile.mkdtemp() + "/p")
        keys[name] = {c.var: c.cache_key for c in analyze_files(pb, man).cacheables.values()}
    print("KEYS" + json.dumps(keys))
    """
)


def test_cache_keys_survive_the_process(data):
    """The same examples built in two processes (two hash seeds, new uuids)
    key every binding alike: what a run cached, a later process reads back.
    Not bigquery_side_input: its functions close over ``random.randrange``,
    whose generator pickles with its state (drawn from the OS)."""
    first, again = keys_under_two_hash_seeds(_KEYS, str(Path(__file__).parent), str(data / "keys"), *KEYED)
    assert set(first) == set(KEYED) and all(first[n] for n in KEYED)
    assert first == again


def _run(*args: str) -> Any:
    proc = run_cli_subprocess(*args, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _written(out: Path) -> list[str]:
    return sorted(line for f in sorted(out.parent.glob(out.name + "*")) for line in f.read_text().splitlines())


RUNS = [
    ("complete.tfidf", "direct"), ("complete.autocomplete", "direct"), ("cookbook.multiple_output_pardo", "direct"),
    ("complete.tfidf", "job service"), ("cookbook.multiple_output_pardo", "job service"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "runner"), RUNS)
def test_an_example_runs_then_runs_again_from_its_cache(name, runner, tmp_path, request):
    """The interactive loop on an example: instrument, run (every binding
    written), instrument with --reuse (everything read back, nothing
    written), run again; the example's own output is the same both times.
    Run by ``beaminst run`` (the DirectRunner), or submitted as the proto
    it is through the Job API to Beam's job service (:func:`portable.submit`)."""

    def execute(path: Path) -> None:
        if runner == "direct":
            _run("run", str(path))
            return
        from portable import submit

        from beaminst.model.protoio import load_pipeline

        job = submit(load_pipeline(str(path))[0], request.getfixturevalue("job_service").endpoint, timeout=300)
        assert job.ok, job.describe()

    write_inputs(tmp_path / "data")
    built = build(name, tmp_path / "data")
    pb, manifest = beaminst.export(built.pipeline, built.bindings, str(tmp_path / "p"))
    cache = str(tmp_path / "cache")
    out = tmp_path / "data" / "out"
    first = json.loads(_run("instrument", pb, "-m", manifest, "--cache-dir", cache, "-o", str(tmp_path / "1.pb"), "--json").stdout)
    assert first["writes"] and not first["reads"]
    execute(tmp_path / "1.pb")
    before = _written(out)
    assert before
    for f in out.parent.glob(out.name + "*"):
        f.unlink()
    again = json.loads(
        _run("instrument", pb, "-m", manifest, "--cache-dir", cache, "--reuse", "-o", str(tmp_path / "2.pb"), "--json").stdout
    )
    assert again["reads"] and not again["writes"], again
    execute(tmp_path / "2.pb")
    assert _written(out) == before
