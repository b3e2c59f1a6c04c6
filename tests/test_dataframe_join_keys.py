"""Cache keys of DataFrame joins survive the process that built them.

A DataFrame stage with several inputs (a merge, a join) joins them with a
``CoGroupByKey`` tagged by their expression ids, taken from a set: which
input is branch 0 (``Tag[0]``) and the order of the tags ``RestoreTags``
holds follow the expressions' hashes, ``hash(expr._id)``, which mixes
PYTHONHASHSEED with an ``id()``. The same merge built in two processes must
still key its result alike. It does not yet: this file pins the defect
(strict xfail), so the day it is fixed the test says so.
"""

from __future__ import annotations

import textwrap

import pytest
from conftest import environ, run_python

# argv: output stem, the merge's on= column, 'plain' or 'swapped' (which
# frame is on the left). Beam hashes an expression by its id, which holds an
# id(): hashed here by the rest of it, the set order follows the hash seed
# alone, so two seeds reproduce the two orders every time.
_BUILD = textwrap.dedent(
    """
    import re, sys
    import apache_beam as beam
    import beaminst
    from apache_beam.dataframe import expressions
    from apache_beam.dataframe.convert import to_dataframe, to_pcollection
    from fixtures import pipelines as fp

    expressions.Expression.__hash__ = lambda self: hash(re.sub(r'_[0-9]+$', '', self._id))

    def left_row(t):
        return beam.Row(word=t[0], k=t[1], n=t[2])

    def right_row(t):
        return beam.Row(word=t[0], k=t[1], m=t[2])

    p = fp._pipeline()
    left = p | 'Left' >> beam.Create([('a', 1, 1), ('b', 2, 2)]) | 'LRows' >> beam.Map(left_row)
    right = p | 'Right' >> beam.Create([('a', 1, 10), ('b', 3, 20)]) | 'RRows' >> beam.Map(right_row)
    l, r = to_dataframe(left), to_dataframe(right)
    if sys.argv[3] == 'swapped':
        l, r = r, l
    with expressions.allow_non_parallel_operations():
        merged = l.merge(r, on=sys.argv[2])
    out = to_pcollection(merged, include_indexes=False)
    beaminst.export(p, {'left': left, 'right': right, 'merged': out}, sys.argv[1])
    """
)


def _build(tmp_path, stem: str, on: str, sides: str, hash_seed: str):
    from beaminst.commands.api import analyze_files

    with environ({"PYTHONHASHSEED": hash_seed}):
        proc = run_python("-c", _BUILD, str(tmp_path / stem), on, sides, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return analyze_files(str(tmp_path / f"{stem}.pb"), str(tmp_path / f"{stem}.manifest.json"))


def _keys_by_var(analysis) -> dict[str, str]:
    return {c.var: c.cache_key for c in analysis.cacheables.values()}


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dataframe_join")
    return {"first": _build(tmp, "first", "word", "plain", "1"), "again": _build(tmp, "again", "word", "plain", "3")}


def test_the_inputs_key_alike(builds):
    first, again = builds["first"], builds["again"]
    assert _keys_by_var(first)["left"] == _keys_by_var(again)["left"]
    assert _keys_by_var(first)["right"] == _keys_by_var(again)["right"]


@pytest.mark.xfail(
    strict=True,
    reason="two process-dependent orders: the join's RestoreTags pickles its tags in the set order of the "
    "stage's inputs (which input is Tag[0] follows hash(expr._id)), and FlatMap(evaluate), the step after the "
    "join, pickles the stage's inputs in that order too, each expression pickled whole at its first mention "
    "(not memo references the set rule can sort)",
)
def test_same_merge_in_two_processes_gives_the_same_keys(builds):
    assert _keys_by_var(builds["first"])["merged"] == _keys_by_var(builds["again"])["merged"]
