"""Cache keys of DataFrame pipelines survive the process that built them.

Beam's DataFrame API writes ``id()``s into expression and stage names (labels,
output tags, pickled expressions), gives every schema a fresh uuid4 and keeps
stage inputs in sets pickled in hash order; the same notebook code rebuilt in
a new process must still find its cache, and a changed DataFrame operation
must still re-key what it computes.
"""

from __future__ import annotations

import functools
import re
import textwrap

import pytest
from conftest import environ, run_python

from beaminst.model.canonical import process_ids_cleared

# Beam's dataframe wordcount shape: to_dataframe -> groupby().sum() ->
# to_pcollection, a DataframeTransform, and a second DataFrame step (max).
# argv: output stem, the aggregation of 'counted' (sum or min).
_BUILD = textwrap.dedent(
    """
    import sys
    import apache_beam as beam
    import beaminst
    from apache_beam.dataframe.convert import to_dataframe, to_pcollection
    from apache_beam.dataframe.transforms import DataframeTransform
    from fixtures import pipelines as fp

    def to_row(word):
        return beam.Row(word=word)

    def counted_by_dt(df):
        df['n'] = 1
        return df.groupby('word').sum()

    p = fp._pipeline()
    lines = p | 'Read' >> beam.Create(['to be or not to be', 'that is the question'])
    words = lines | 'Split' >> beam.FlatMap(fp.split_words).with_output_types(str) | 'ToRows' >> beam.Map(to_row)
    # Built before 'counted': the GroupByKeys' shared key coder pickles the
    # label of the first one (Beam's step_label), which would tie them.
    via_dt = words | 'DT' >> DataframeTransform(counted_by_dt, include_indexes=True)
    df = to_dataframe(words)
    df['count'] = 1
    grouped = df.groupby('word')
    most = grouped.max()
    maxed = to_pcollection(most, include_indexes=True)
    counted_df = getattr(grouped, sys.argv[2])()
    counted = to_pcollection(counted_df, include_indexes=True)
    filtered = counted | 'Filter' >> beam.Filter(lambda row: row.count > 1)
    bindings = {'words': words, 'via_dt': via_dt, 'maxed': maxed, 'counted': counted, 'filtered': filtered}
    beaminst.export(p, bindings, sys.argv[1])
    """
)


def _build(tmp_path, stem: str, aggregation: str, hash_seed: str):
    """Export the pipeline from a fresh interpreter; its analysis."""
    from beaminst.commands.api import analyze_files

    # Seeds that order the DataFrame stages' sets differently.
    with environ({"PYTHONHASHSEED": hash_seed}):
        proc = run_python("-c", _BUILD, str(tmp_path / stem), aggregation, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return analyze_files(str(tmp_path / f"{stem}.pb"), str(tmp_path / f"{stem}.manifest.json"))


def _keys_by_var(analysis) -> dict[str, str]:
    return {c.var: c.cache_key for c in analysis.cacheables.values()}


def _all_keys(analysis) -> dict[tuple[str, str], str]:
    """A key for every PCollection, by producer name and tag with the ids
    cleared (the only identity two builds share)."""
    d, index = analysis.digests, analysis.index
    return {
        (process_ids_cleared(i.producer), process_ids_cleared(i.tag)): d.key_for("v", pc, index.producer[pc])
        for pc, i in analysis.pcollections.items()
    }


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dataframe")
    return {
        "first": _build(tmp, "first", "sum", "1"),
        "again": _build(tmp, "again", "sum", "2"),
        "changed": _build(tmp, "changed", "min", "3"),
    }


def test_the_premise_beam_names_dataframe_steps_after_ids(builds):
    first = {i.producer for i in builds["first"].pcollections.values()}
    again = {i.producer for i in builds["again"].pcollections.values()}
    assert any("_DataFrame_" in name for name in first)
    assert first != again
    assert {process_ids_cleared(n) for n in first} == {process_ids_cleared(n) for n in again}


def test_same_dataframe_code_in_two_processes_gives_the_same_keys(builds):
    first, again = builds["first"], builds["again"]
    assert _keys_by_var(first) == _keys_by_var(again)
    assert len(_all_keys(first)) == len(first.pcollections)  # cleared names stay apart
    assert _all_keys(first) == _all_keys(again)


def test_a_changed_dataframe_operation_rekeys_it_and_downstream(builds):
    first, changed = _keys_by_var(builds["first"]), _keys_by_var(builds["changed"])
    rekeyed = {v for v in first if first[v].split("-")[1] != changed[v].split("-")[1]}
    assert rekeyed == {"counted", "filtered"}
    assert all(first[v] == changed[v] for v in first if v not in rekeyed)


def test_two_dataframe_steps_keep_different_keys(builds):
    keys = _keys_by_var(builds["first"])
    versions = {v: k.split("-")[1] for v, k in keys.items()}
    assert len(set(versions.values())) == len(versions)  # sum, max and the DataframeTransform apart


@pytest.mark.parametrize(
    ("label", "cleared"),
    [
        ("Unbatch 'post_combine_sum_DataFrame_140639040733968' with indexes", "Unbatch 'post_combine_sum_DataFrame_#' with indexes"),
        (
            "ToPCollection(c)/[ComputedExpression[set_column_DataFrame_140094574416400]]:140094574416784/Map",
            "ToPCollection(c)/[ComputedExpression[set_column_DataFrame_#]]:#/Map",
        ),
        ("placeholder_Series_94558712345664", "placeholder_Series_#"),
        # Not an id (an address is 8-aligned), and names Beam did not build.
        ("post_combine_sum_DataFrame_140639040733969", "post_combine_sum_DataFrame_140639040733969"),
        ("Read_v2_20240101", "Read_v2_20240101"),
        ("ReadLines/FlatMap(<lambda at core.py:4094>)", "ReadLines/FlatMap(<lambda at core.py:4094>)"),
        ("Stage_140639040733968", "Stage_140639040733968"),
        ("Read logs_day_20240104", "Read logs_day_20240104"),  # a word, not a proxy type: content
    ],
)
def test_process_ids_cleared(label, cleared):
    assert process_ids_cleared(label) == cleared


# A script's (a notebook's) own DoFn class, pickled by value: cloudpickle names
# it with a class tracker id, a fresh uuid4 per process. argv: stem, increment.
_MAIN_CLASS = textwrap.dedent(
    """
    import sys
    import apache_beam as beam
    import beaminst
    from fixtures import pipelines as fp

    class AddSome(beam.DoFn):
        INCREMENT = int(sys.argv[2])  # pickled with the class

        def process(self, x):
            yield x + self.INCREMENT

    p = fp._pipeline()
    added = p | beam.Create([1, 2, 3]) | 'AddSome' >> beam.ParDo(AddSome())
    doubled = added | 'Double' >> beam.Map(lambda x: 2 * x)
    beaminst.export(p, {'added': added, 'doubled': doubled}, sys.argv[1])
    """
)


def test_a_scripts_own_dofn_class_keeps_its_keys_in_a_new_process(tmp_path):
    from beaminst.commands.api import analyze_files

    def build(stem: str, increment: str) -> dict[str, str]:
        proc = run_python("-c", _MAIN_CLASS, str(tmp_path / stem), increment, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return _keys_by_var(analyze_files(str(tmp_path / f"{stem}.pb"), str(tmp_path / f"{stem}.manifest.json")))

    first, again, changed = build("first", "1"), build("again", "1"), build("changed", "2")
    assert first == again
    # The class's behaviour is its content: a different increment is another key.
    assert all(first[v] != changed[v] for v in first)


def _keys_of(tmp_path, stem: str, build) -> dict[str, str]:
    import apache_beam as beam

    import beaminst
    from beaminst.commands.api import analyze_files
    from fixtures import pipelines as fp

    p = fp._pipeline()
    lines = p | "Read" >> beam.Create(["a", "b"])
    beaminst.export(p, {"lines": lines, "tagged": build(lines, beam)}, str(tmp_path / stem))
    return _keys_by_var(analyze_files(str(tmp_path / f"{stem}.pb"), str(tmp_path / f"{stem}.manifest.json")))


@pytest.mark.parametrize(
    "first,second",
    [
        # 8-aligned, 7+ digits after a word: the shape of an id, but a user's table name.
        ("logs_day_20240104", "logs_day_20240112"),
        # uuid4-shaped and 32-hex strings next to a trailing None: the shapes of
        # Beam's schema ids and cloudpickle's tracker ids, passed by nobody's rule.
        ("8989daae-0273-4b3a-9731-224d2db83af1", "1f2e3d4c-0273-4b3a-9731-224d2db83af1"),
        ("43226289165c484f957c6448dc05fa6d", "00000000165c484f957c6448dc05fa6d"),
    ],
)
def test_content_that_looks_like_a_process_id_still_keys(tmp_path, first, second):
    """Clearing a string of an id's form anywhere would give two pipelines
    that differ in it one key: the second would read the first's cache."""
    from apache_beam.typehints import row_type

    def tagging(table: str):
        def build(lines, beam):
            # Holds a RowTypeConstraint too, so the pickle is one the id rules read.
            rows = row_type.RowTypeConstraint.from_fields([("word", str)])
            return lines | "Tag" >> beam.Map(lambda x, t=(1, 2, 3, table, None), r=rows: (t, x, r))
        return build

    one, two = _keys_of(tmp_path, "one", tagging(first)), _keys_of(tmp_path, "two", tagging(second))
    assert one["lines"] == two["lines"]
    assert one["tagged"] != two["tagged"]


@functools.cache
def _the_one_regex() -> re.Pattern[bytes]:
    """The expression-id test as one regex (what _holds_expression_id replaced for speed)."""
    from beaminst.model.canonical import _PROXY_TYPES

    return re.compile(rf"[A-Za-z0-9]_(?:{_PROXY_TYPES})_[0-9]{{7,}}".encode())


def _one_regex(data: bytes) -> bool:
    return bool(_the_one_regex().search(data))


_PIECES = ["_", "a", "Z", "9", "0", "-", "\x8c", "DataFrame", "bool_", "int64", "Series", "Index", "1234567", "99999999",
           "_DataFrame_", "_bool__", "_int64_", "x_Series_"]


@pytest.mark.parametrize("seed", range(3))
def test_expression_id_search_is_the_one_regex(seed: int) -> None:
    """The hand-rolled search (a literal-start regex, the character before
    checked apart) finds an expression id exactly where the single regex
    did, on strings built to sit at its edges (ids at the start, after a
    non-alphanumeric, overlapping near-misses)."""
    import random

    from beaminst.model.canonical import _holds_expression_id

    rng = random.Random(seed)
    found = 0
    for _ in range(20_000):
        text = "".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 9))).encode("latin-1")
        expected = _one_regex(text)
        found += expected
        assert _holds_expression_id(text) == expected, text
    assert found > 100  # the strings do reach ids
    for text in (b"x_DataFrame_1234567", b"_DataFrame_1234567", b"-_int64_12345678", b"-_int64_1234567a_int64_1234567",
                 b"a_bool__1234567", b"__bool__1234567", b"\xe9_Series_1234567"):
        assert _holds_expression_id(text) == _one_regex(text), text
