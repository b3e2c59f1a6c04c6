"""beaminst against Beam's PipelineInstrument on Beam's transform snippets.

``apache_beam/examples/snippets/transforms/`` holds the pipelines Beam's
documentation shows for each transform (aggregations, element-wise
transforms, windowing, ``GroupBy`` on schemas, combiners with side inputs, ...):
each a function that builds ``with beam.Pipeline() as p:`` and hands its
result to ``test``. Here ``Pipeline.run`` keeps the pipeline instead of
running it, ``test`` binds what it is handed, and the instrumented protos
of Beam and beaminst are compared as in ``test_beam_examples.py``
(structure, pass-throughs only one side kept aside, and ``requirements``).
Every output also passes Beam Java's PipelineValidator.

Snippets are found by reading the files (functions with a ``test``
parameter), so a new Beam's new snippets join without a list to keep.
"""

from __future__ import annotations

import ast
import importlib
import textwrap
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.runners.runner import PipelineResult
from beam_examples import DoneResult
from beamref import beam_instrument, export_with_keys
from conftest import keys_under_two_hash_seeds
from portable import assert_java_valid
from structure import compared, diff

from beaminst.commands.api import analyze_files
from beaminst.model.protoio import save_pipeline
from beaminst.options import RewriteOptions
from beaminst.passes.instrument import instrument

SNIPPETS = Path(beam.__file__).parent / "examples" / "snippets" / "transforms"
# Their models need packages the test extra does not install.
NEEDS_ML = {"elementwise.mltransform": "tensorflow_transform", "elementwise.runinference": "torch",
            "elementwise.runinference_sklearn_keyed_model_handler": "sklearn",
            "elementwise.runinference_sklearn_unkeyed_model_handler": "sklearn"}


def _snippets() -> list[tuple[str, str]]:
    found = []
    for path in sorted(SNIPPETS.glob("*/*.py")):
        if path.name.endswith("_test.py") or path.name == "__init__.py":
            continue
        module = f"{path.parent.name}.{path.stem}"
        if module in NEEDS_ML:
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and any(a.arg == "test" for a in node.args.args + node.args.kwonlyargs):
                found.append((module, node.name))
    return found


CASES = _snippets()


def _build(module: str, function: str, monkeypatch: Any) -> tuple[Any, dict[str, Any]]:
    built: list[Any] = []
    handed: dict[str, Any] = {}

    def keep(self: Any, test_runner_api: Any = "AUTO") -> PipelineResult:
        built.append(self)
        return DoneResult()

    def test(*values: Any) -> None:
        for i, v in enumerate(values):
            if isinstance(v, beam.pvalue.PCollection):
                handed[f"result{i}"] = v

    monkeypatch.setattr(beam.Pipeline, "run", keep)
    fn = getattr(importlib.import_module(f"apache_beam.examples.snippets.transforms.{module}"), function)
    fn(test=test)
    assert len(built) == 1, f"{len(built)} pipelines run"
    pipeline = built[0]
    bindings = {var: pc for var, pc in handed.items() if pc.pipeline is pipeline}
    assert bindings, "test was handed no PCollection of the pipeline"
    return pipeline, bindings


_OUTPUTS: list[Path] = []


def test_there_are_snippets():
    assert len(CASES) > 80, CASES  # 111 in Beam 2.77


@pytest.mark.parametrize(("module", "function"), CASES, ids=[f"{m}.{f}" for m, f in CASES])
def test_instrument_matches_beams_on_a_snippet(module, function, monkeypatch, tmp_path_factory):
    pipeline, bindings = _build(module, function, monkeypatch)
    side = beam_instrument(pipeline, bindings)
    stem = tmp_path_factory.mktemp("snippet") / function
    pb, manifest = export_with_keys(pipeline, side, str(stem))
    ours, report = instrument(analyze_files(pb, manifest, side.cache_dir), RewriteOptions(side.cache_dir))
    beam_nodes, our_nodes = compared(side.proto, ours, side.root_label)
    assert diff(beam_nodes, our_nodes) == []
    assert sorted(ours.requirements) == sorted(side.proto.requirements)
    assert report.writes
    save_pipeline(ours, f"{stem}.instrumented.pb")
    _OUTPUTS.append(Path(f"{stem}.instrumented.pb"))


def test_every_snippet_output_passes_beam_javas_validator():
    """Runs after the comparisons (one module, one worker: file order), on all they wrote."""
    if len(_OUTPUTS) < len(CASES):
        pytest.skip(f"{len(CASES) - len(_OUTPUTS)} comparison(s) did not write their output (run the whole file)")
    assert_java_valid(_OUTPUTS)


# Snippets whose keys once died with the process (an unnamed context
# parameter's id() in map_context; a Row schema's uuid inside the pickled
# RowCoder of a Create of beam.Rows in groupby_attr), and a few plain ones.
KEYED = (("elementwise.map_context", "map_context"), ("aggregation.groupby_attr", "groupby_attr"),
         ("elementwise.pardo_dofn", "pardo_dofn"),
         ("aggregation.combineperkey_side_inputs_dict", "combineperkey_side_inputs_dict"))
_KEYS = textwrap.dedent(
    """
    import json, sys, tempfile
    sys.path.insert(0, sys.argv[1])
    import test_beam_snippets as snippets
    import beaminst
    from beaminst.commands.api import analyze_files

    class Patch:
        def setattr(self, obj, name, value):
            setattr(obj, name, value)

    keys = {}
    for case in sys.argv[2:]:
        module, function = case.split(":")
        pipeline, bindings = snippets._build(module, function, Patch())
        pb, man = beaminst.export(pipeline, bindings, tempfile.mkdtemp() + "/p")
        keys[case] = {c.var: c.cache_key for c in analyze_files(pb, man).cacheables.values()}
    print("KEYS" + json.dumps(keys))
    """
)


def test_snippet_cache_keys_survive_the_process():
    """Built in two processes (two hash seeds), the same keys. Not every
    snippet can: a Create of sets encodes each set in its strings' hash
    order, and approximateunique draws its data at random."""
    first, again = keys_under_two_hash_seeds(_KEYS, str(Path(__file__).parent), *(f"{m}:{f}" for m, f in KEYED))
    assert len(first) == len(KEYED) and all(first.values())
    assert first == again

