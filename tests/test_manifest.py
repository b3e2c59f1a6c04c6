"""The variable-binding manifest: forms, errors, and the shipped schema."""

from __future__ import annotations

import json
from importlib import resources

import pytest
from conftest import FIXTURE_NAMES, fixture_manifest, fixture_pb, load_fixture, run_cli

from beaminst.analysis.manifest import (
    Binding,
    load_manifest,
    manifest_schema,
    parse_manifest,
    resolve_bindings,
)
from beaminst.errors import ManifestError
from beaminst.graph.validate import validate

WORDS = "ref_PCollection_PCollection_9"  # Split's output in wordcount
COUNTS = "ref_PCollection_PCollection_12"  # CountWords' output
KEY = "0123456789-aaaa-bbbb-cccc"


@pytest.fixture(scope="module")
def wc_index():
    return validate(load_fixture("wordcount"))


def parse(doc) -> object:
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return parse_manifest(raw, "m.json")


def resolve(doc, index):
    return resolve_bindings(parse(doc), index)


def manifest_error(doc, index=None) -> str:
    with pytest.raises(ManifestError) as info:
        m = parse(doc)
        if index is not None:
            resolve_bindings(m, index)
    assert info.value.exit_code == 2
    message = str(info.value)
    assert message.startswith("m.json: ")
    assert "\n" not in message
    return message


# --- valid forms -----------------------------------------------------------------


def test_three_binding_forms_resolve(wc_index):
    doc = {
        "version": 1,
        "pipeline": "wordcount.pb",
        "bindings": {
            "words": WORDS,
            "counts": {"pcollection": COUNTS, "cache_key": KEY},
            "formatted": {"producer": "Format", "tag": "None"},
            "pairs": {"producer": "PairWithOne"},  # tag defaults to the main output
        },
        "computed": ["words"],
    }
    m = parse(doc)
    assert m.bindings == (
        Binding("words", pcollection=WORDS),
        Binding("counts", pcollection=COUNTS, cache_key=KEY),
        Binding("formatted", producer="Format", tag="None"),
        Binding("pairs", producer="PairWithOne"),
    )
    assert m.computed == frozenset({"words"})
    r = resolve_bindings(m, wc_index)
    assert list(r.by_var) == ["words", "counts", "formatted", "pairs"]  # manifest order
    assert r.by_var["words"].pcollection == WORDS and r.by_var["words"].computed
    assert r.by_var["counts"].cache_key == KEY and not r.by_var["counts"].computed
    assert r.by_var["formatted"].pcollection == "ref_PCollection_PCollection_13"
    assert r.by_var["pairs"].pcollection == "ref_PCollection_PCollection_10"


def test_producer_form_resolves_tagged_outputs():
    index = validate(load_fixture("multi_output"))
    r = resolve(
        {
            "bindings": {
                "evens": {"producer": "Classify/ParDo(CallableWrapperDoFn)", "tag": "even"},
                "big": {"producer": "Classify/ParDo(CallableWrapperDoFn)"},
            }
        },
        index,
    )
    assert r.by_var["evens"].pcollection == "ref_PCollection_PCollection_10"
    assert r.by_var["big"].pcollection == "ref_PCollection_PCollection_9"


def test_empty_manifests():
    assert load_manifest(None).bindings == ()
    assert parse({}).bindings == ()
    assert parse({"bindings": {}, "computed": []}).computed == frozenset()


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_committed_manifests_resolve(name):
    index = validate(load_fixture(name))
    m = load_manifest(fixture_manifest(name))
    r = resolve_bindings(m, index)
    assert r.by_var and all(b.pcollection in index.pcollections for b in r.by_var.values())


def test_manifest_from_stdin():
    result = run_cli(
        "analyze", fixture_pb("wordcount"), "-m", "-", "--json",
        input=json.dumps({"bindings": {"w": WORDS}}).encode(),
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["pcollections"][WORDS]["var"] == "w"


# --- errors ----------------------------------------------------------------------


def test_unknown_top_level_field():
    message = manifest_error({"bindings": {}, "bindigns": {}})
    assert "unknown top-level field 'bindigns'; did you mean 'bindings'?" in message
    assert "did you mean 'computed'?" in manifest_error({"bindings": {}, "computd": []})
    assert "did you mean" not in manifest_error({"bindings": {}, "zzz": []})


@pytest.mark.parametrize(
    ("entry", "value_text"),
    [
        (5, "5"),
        ([WORDS], json.dumps([WORDS])),
        ({}, "{}"),
        ({"tag": "None"}, '"tag"'),
        ({"pcollection": WORDS, "producer": "Split"}, '"producer": "Split"'),
        ("", '""'),
    ],
)
def test_malformed_entry_names_the_field_and_value(entry, value_text):
    message = manifest_error({"bindings": {"words": entry}})
    assert "bindings/words" in message
    assert value_text in message


def test_unexpected_field_inside_an_entry_is_named():
    message = manifest_error({"bindings": {"words": {"pcollection": WORDS, "cach_key": KEY}}})
    assert "bindings/words: unknown field 'cach_key'; did you mean 'cache_key'? (known: pcollection, cache_key)" in message
    # In words of its own, not jsonschema's ("Additional properties are not allowed").
    assert "Additional properties" not in message
    message = manifest_error({"bindings": {"words": {"producer": "Split", "tga": "None"}}})
    assert "bindings/words: unknown field 'tga'; did you mean 'tag'? (known: producer, tag, cache_key)" in message


@pytest.mark.parametrize(
    "bad_key",
    ["nope", "a-b-c", "a-b-c-d-e", "a/b-c-d-e", "a-b--d", "a b-c-d-e", ""],
)
@pytest.mark.parametrize("form", ["pcollection", "producer"])
def test_bad_cache_key_pattern_names_cache_key(bad_key, form):
    entry = {"pcollection": WORDS} if form == "pcollection" else {"producer": "Split"}
    entry["cache_key"] = bad_key
    message = manifest_error({"bindings": {"words": entry}})
    assert "bindings/words/cache_key" in message
    assert json.dumps(bad_key) in message


def test_a_pinned_key_that_begins_another_is_refused():
    """Beam reads a cache by '<key>*-*-of-*': 'a-b-c-d' would read 'a-b-c-d2''s shards too."""
    message = manifest_error({"bindings": {
        "words": {"pcollection": WORDS, "cache_key": "nums-1-0-nb"},
        "counts": {"pcollection": COUNTS, "cache_key": "nums-1-0-nb2"},
    }})
    assert message.startswith("m.json: bindings/words/cache_key: 'nums-1-0-nb' begins the cache key of 'counts' ('nums-1-0-nb2')")
    ok = parse({"bindings": {"words": {"pcollection": WORDS, "cache_key": "nums-1-0-nb"},
                             "counts": {"pcollection": COUNTS, "cache_key": "nums-1-0-na2"}}})
    assert {b.cache_key for b in ok.bindings} == {"nums-1-0-nb", "nums-1-0-na2"}


def test_unknown_pcollection_id(wc_index):
    message = manifest_error({"bindings": {"words": "ref_PCollection_nope"}}, wc_index)
    assert "bindings/words" in message and "'ref_PCollection_nope'" in message


def test_unknown_producer(wc_index):
    message = manifest_error({"bindings": {"words": {"producer": "Spilt"}}}, wc_index)
    assert "bindings/words" in message and "'Spilt'" in message


def test_composite_is_not_a_producer(wc_index):
    """Producers are the leaves that make a PCollection; naming a composite by
    its unique name is an unknown producer, not a silent guess."""
    message = manifest_error({"bindings": {"c": {"producer": "CountWords"}}}, wc_index)
    assert "'CountWords'" in message


def test_unknown_tag(wc_index):
    message = manifest_error({"bindings": {"words": {"producer": "Split", "tag": "odd"}}}, wc_index)
    assert "bindings/words" in message and "'Split'" in message and "'odd'" in message


def test_computed_naming_an_unbound_var():
    message = manifest_error({"bindings": {"words": WORDS}, "computed": ["words", "ghost"]})
    assert "computed" in message and "'ghost'" in message


def test_computed_duplicates_rejected():
    message = manifest_error({"bindings": {"words": WORDS}, "computed": ["words", "words"]})
    assert "computed" in message


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (b'{"bindings": {"words": "a", "words": "b"}}', "words"),
        (b'{"bindings": {}, "bindings": {}}', "bindings"),
        (b'{"bindings": {"w": {"pcollection": "a", "pcollection": "b"}}}', "pcollection"),
    ],
)
def test_duplicate_json_keys(raw, key):
    message = manifest_error(raw)
    assert f"duplicate key {key!r}" in message


def test_non_utf8():
    raw = b'{"bindings": {"w\xe9": "x"}}'
    message = manifest_error(raw)
    assert "UTF-8" in message and f"byte {raw.index(0xE9)}" in message


@pytest.mark.parametrize("raw", [b"", b"not json", b'{"bindings": ', b"[1, 2"])
def test_not_json(raw):
    assert "not valid JSON" in manifest_error(raw)


@pytest.mark.parametrize("raw", [b"", b"  \n\t", b"\xef\xbb\xbf\n"])
def test_an_empty_manifest_is_said_to_be_empty(raw):
    assert "not valid JSON: empty, expected a binding manifest" in manifest_error(raw)


@pytest.mark.parametrize(
    ("doc", "needle"),
    [([], "(top level)"), ({"version": 2}, "version"), ({"bindings": []}, "bindings"), ({"bindings": {"": WORDS}}, "bindings")],
)
def test_wrong_shapes(doc, needle):
    assert needle in manifest_error(doc)


def test_two_vars_for_one_pcollection(wc_index):
    message = manifest_error(
        {"bindings": {"words": WORDS, "same_words": {"producer": "Split"}}}, wc_index
    )
    assert "bindings/same_words" in message
    assert repr(WORDS) in message and "'words'" in message


def test_manifest_file_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(ManifestError) as info:
        load_manifest(str(missing))
    assert str(info.value).startswith(f"{missing}: ")
    bad = tmp_path / "bad.json"
    bad.write_text('{"bindings": {"w": 1}}')
    with pytest.raises(ManifestError) as info:
        load_manifest(str(bad))
    assert str(info.value).startswith(f"{bad}: bindings/w")


def test_manifest_errors_through_cli_exit_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"bindings": {"words": {"pcollection": WORDS, "cache_key": "x"}}}))
    result = run_cli("analyze", fixture_pb("wordcount"), "-m", str(bad))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f'beaminst: {bad}: bindings/words/cache_key: expected a Beam cache key '
                     f"var-version-producer_version-pipeline_id, four parts of ASCII letters, digits, '_' and '.', "
                     f'joined by \'-\' (got "x")']
    assert result.stdout == ""

    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"bindings": {"words": "ref_nope"}}))
    result = run_cli("analyze", fixture_pb("wordcount"), "-m", str(unknown))
    assert result.exit_code == 2
    assert str(unknown) in result.stderr and "'ref_nope'" in result.stderr


# --- the schema ships in the package ----------------------------------------------------


def test_schema_is_package_data():
    resource = resources.files("beaminst.analysis").joinpath("manifest.schema.json")
    assert resource.is_file()
    schema = json.loads(resource.read_text("utf-8"))
    assert schema == manifest_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["properties"]) == {"version", "pipeline", "bindings", "computed"}


def test_schema_is_itself_valid_and_accepts_committed_manifests():
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(manifest_schema())
    validator = jsonschema.Draft202012Validator(manifest_schema())
    for name in FIXTURE_NAMES:
        with open(fixture_manifest(name), encoding="utf-8") as f:
            validator.validate(json.load(f))


def test_schema_is_declared_package_data():
    """An editable install reads the file from the checkout; a wheel only
    carries it if pyproject declares it as package data."""
    import fnmatch

    import tomllib
    from conftest import REPO

    with open(REPO / "pyproject.toml", "rb") as f:
        pyproject = tomllib.load(f)
    patterns = pyproject["tool"]["setuptools"]["package-data"]["beaminst.analysis"]
    assert any(fnmatch.fnmatch("manifest.schema.json", pat) for pat in patterns)


def test_leading_utf8_bom_is_ignored_and_offsets_stay_file_offsets():
    assert parse(b'\xef\xbb\xbf{"bindings": {"w": "x"}}').bindings == (Binding("w", pcollection="x"),)
    raw = b'\xef\xbb\xbf{"bindings": {"w\xe9": "x"}}'
    assert f"byte {raw.index(0xE9)}" in manifest_error(raw)


_PLAIN_CASES = [
    {}, {"version": 1}, {"version": True}, {"version": 1.0}, {"version": 2}, {"pipeline": "p.pb"}, {"pipeline": 3},
    {"bindings": {"a": "pc1"}}, {"bindings": {"": "pc1"}}, {"bindings": {"a" * 256: "p"}}, {"bindings": {"a" * 257: "p"}},
    {"bindings": {"a": ""}}, {"bindings": {"a": 1}}, {"bindings": {"a": {"pcollection": "p"}}}, {"bindings": []},
    {"computed": []}, {"computed": ["a"]}, {"computed": ["a", "a"]}, {"computed": [""]}, {"computed": "auto"},
    {"computed": "Auto"}, {"computed": [1]}, {"other": 1}, [], "x", None,
    {"version": 1, "pipeline": "p", "bindings": {"a": "p1", "b": "p2"}, "computed": ["a"]},
]


@pytest.mark.parametrize("doc", _PLAIN_CASES, ids=[json.dumps(d)[:40] for d in _PLAIN_CASES])
def test_the_plain_manifest_fast_path_accepts_only_what_the_schema_accepts(doc):
    """The schema check skips jsonschema for plainly valid manifests: never
    for one jsonschema would refuse (and it does take the common ones)."""
    import jsonschema

    from beaminst.analysis.manifest import _plainly_valid

    valid = jsonschema.Draft202012Validator(manifest_schema()).is_valid(doc)
    if _plainly_valid(doc):
        assert valid
    assert _plainly_valid(json.loads(open(fixture_manifest("wordcount")).read()))


def test_a_directory_as_the_manifest_says_a_manifest_was_expected(tmp_path):
    r = run_cli("analyze", fixture_pb("wordcount"), "-m", str(tmp_path))
    assert r.exit_code == 2
    assert "is a directory, expected a manifest file" in r.stderr and "pipeline" not in r.stderr


def test_a_producers_name_given_for_an_id_names_the_producer_form(wc_index):
    msg = manifest_error({"bindings": {"c": "Split"}}, wc_index)
    assert msg.endswith("""PCollection 'Split' does not exist in the pipeline; 'Split' is a transform's name: """
                        """bind its output as {"producer": "Split"}""")
    assert "transform's name" not in manifest_error({"bindings": {"c": "Splitt"}}, wc_index)


def test_a_name_computed_twice_is_named():
    msg = manifest_error({"bindings": {"c": "ref_PCollection_PCollection_9"}, "computed": ["c", "c"]})
    assert "computed: 'c' is listed twice" in msg


def test_a_number_past_pythons_digit_limit_is_no_sys_advice():
    import sys

    raw = b'{"version": ' + b"9" * (sys.get_int_max_str_digits() + 1) + b"}"
    with pytest.raises(ManifestError) as e:
        parse_manifest(raw, "m.json")
    assert e.value.message == f"holds a number of more than {sys.get_int_max_str_digits()} digits; not a binding manifest"
