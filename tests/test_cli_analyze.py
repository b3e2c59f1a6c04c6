"""``beaminst analyze``: JSON and human output, options, exit codes, imports."""

from __future__ import annotations

import json
import textwrap

import pytest
from conftest import (
    EMPTY_SHARD,
    FIXTURE_NAMES,
    UNBOUNDED_FIXTURES,
    beam_noise_free,
    fixture_manifest,
    fixture_pb,
    run_cli,
    run_cli_subprocess,
    run_python,
)

WC = fixture_pb("wordcount")
WC_M = fixture_manifest("wordcount")
WORDS = "ref_PCollection_PCollection_9"
IMPULSE_URN = "beam:transform:impulse:v1"


def analyze_json(*args: str) -> dict:
    result = run_cli("analyze", *args, "--json")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    return json.loads(result.stdout)


# --- JSON output --------------------------------------------------------------------


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_json_has_the_documented_fields(name):
    doc = analyze_json(fixture_pb(name), "-m", fixture_manifest(name))
    assert {"pcollections", "cacheables", "unbounded_sources", "has_unbounded_sources"} <= set(doc)
    with open(fixture_manifest(name), encoding="utf-8") as f:
        bindings = json.load(f)["bindings"]
    assert doc["pcollections"]
    for pc, info in doc["pcollections"].items():
        assert pc.startswith("ref_PCollection_")
        assert {"producer", "tag", "is_bounded", "var", "cache_key", "cached", "computed"} <= set(info)
        assert isinstance(info["producer"], str) and info["producer"]
        assert isinstance(info["tag"], str)
        assert isinstance(info["is_bounded"], bool)
        assert info["cached"] is False and info["computed"] is False  # no cache dir given
        if pc in doc["cacheables"]:
            assert info["var"] == doc["cacheables"][pc]["var"]
            assert info["cache_key"] == doc["cacheables"][pc]["cache_key"]
        else:
            assert info["var"] is None and info["cache_key"] is None
    for var, pc in bindings.items():
        assert doc["cacheables"][pc]["var"] == var
    for pc, c in doc["cacheables"].items():
        assert {"var", "cache_key"} <= set(c)
        assert pc in doc["pcollections"]
    assert isinstance(doc["unbounded_sources"], list)
    assert doc["has_unbounded_sources"] is (name in UNBOUNDED_FIXTURES)
    assert bool(doc["unbounded_sources"]) is doc["has_unbounded_sources"]
    for s in doc["unbounded_sources"]:
        assert {"transform_id", "unique_name", "urn", "outputs"} <= set(s)
        assert s["outputs"] and all(pc in doc["pcollections"] for pc in s["outputs"].values())
        for pc in s["outputs"].values():
            assert doc["pcollections"][pc]["is_bounded"] is False
            assert pc in doc["cacheables"]  # every source output is cached (synthetic or bound)


def test_json_values_for_wordcount():
    doc = analyze_json(WC, "-m", WC_M)
    words = doc["pcollections"][WORDS]
    assert words["producer"] == "Split"
    assert words["tag"] == "None"
    assert words["is_bounded"] is True
    assert words["var"] == "words"
    assert sorted(c["var"] for c in doc["cacheables"].values()) == ["counts", "formatted", "lines", "words"]
    assert len(doc["pcollections"]) == 13
    assert doc["unbounded_sources"] == []


def test_json_for_pubsub_source():
    doc = analyze_json(fixture_pb("pubsub_one"), "-m", fixture_manifest("pubsub_one"))
    (source,) = doc["unbounded_sources"]
    assert source["unique_name"] == "ReadEvents"
    assert source["transform_id"] == "ref_AppliedPTransform_ReadEvents_2"
    assert source["urn"] == "beam:transform:pickled_python:v1"
    assert source["outputs"] == {"None": "ref_PCollection_PCollection_2"}
    synthetic = doc["cacheables"]["ref_PCollection_PCollection_2"]
    assert synthetic["var"].startswith("synthetic_var_")


def test_json_without_manifest_has_no_cacheables():
    doc = analyze_json(WC)
    assert doc["cacheables"] == {}
    assert all(i["var"] is None for i in doc["pcollections"].values())


def test_computed_flag_reaches_json(tmp_path):
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"bindings": {"words": WORDS}, "computed": ["words"]}))
    doc = analyze_json(WC, "-m", str(manifest))
    assert doc["pcollections"][WORDS]["computed"] is True


# --- --unbounded-urn ---------------------------------------------------------------------


def test_unbounded_urn_adds_a_source():
    before = analyze_json(WC, "-m", WC_M)
    after = analyze_json(WC, "-m", WC_M, "--unbounded-urn", IMPULSE_URN)
    assert before["has_unbounded_sources"] is False
    assert after["has_unbounded_sources"] is True
    (source,) = after["unbounded_sources"]
    assert source["unique_name"] == "ReadLines/Impulse"
    assert source["urn"] == IMPULSE_URN
    assert source["transform_id"] == "ref_AppliedPTransform_ReadLines-Impulse_3"
    assert source["outputs"] == {"None": "ref_PCollection_PCollection_1"}
    # Beam's watch_sources: the unbound source output gets a synthetic variable.
    assert after["cacheables"]["ref_PCollection_PCollection_1"]["var"].startswith("synthetic_var_")
    assert "ref_PCollection_PCollection_1" not in before["cacheables"]


def test_unbounded_urn_is_repeatable_and_unknown_urns_are_harmless():
    doc = analyze_json(WC, "--unbounded-urn", "beam:transform:nothing:v1", "--unbounded-urn", IMPULSE_URN)
    assert [s["urn"] for s in doc["unbounded_sources"]] == [IMPULSE_URN]
    doc = analyze_json(WC, "--unbounded-urn", "beam:transform:nothing:v1")
    assert doc["unbounded_sources"] == []


def test_nested_matches_count_once_as_the_outer_transform():
    doc = analyze_json(
        WC, "--unbounded-urn", IMPULSE_URN, "--unbounded-urn", "beam:transform:pickled_python:v1"
    )
    # ReadLines (a pickled composite) encloses ReadLines/Impulse: one source, the outer.
    assert [s["unique_name"] for s in doc["unbounded_sources"]] == ["ReadLines"]
    assert doc["unbounded_sources"][0]["outputs"] == {"None": "ref_PCollection_PCollection_8"}


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_infer_unbounded_agrees_with_the_explicit_rules_on_fixtures(name):
    plain = analyze_json(fixture_pb(name))
    inferred = analyze_json(fixture_pb(name), "--infer-unbounded")
    assert [s["unique_name"] for s in inferred["unbounded_sources"]] == [
        s["unique_name"] for s in plain["unbounded_sources"]
    ]


# --- --cache-dir -----------------------------------------------------------------------------


def _words_key() -> str:
    return analyze_json(WC, "-m", WC_M)["cacheables"][WORDS]["cache_key"]


def test_complete_shard_set_marks_cached(tmp_path):
    key = _words_key()
    full = tmp_path / "cache" / "full"
    full.mkdir(parents=True)
    (full / f"{key}-00000-of-00001").write_bytes(EMPTY_SHARD)
    doc = analyze_json(WC, "-m", WC_M, "--cache-dir", str(tmp_path / "cache"))
    assert doc["pcollections"][WORDS]["cached"] is True
    assert doc["cacheables"][WORDS]["cached"] is True
    others = [pc for pc in doc["cacheables"] if pc != WORDS]
    assert others and not any(doc["cacheables"][pc]["cached"] for pc in others)


def test_multi_shard_set(tmp_path):
    key = _words_key()
    full = tmp_path / "full"
    full.mkdir()
    (full / f"{key}-00000-of-00003").write_bytes(EMPTY_SHARD)
    (full / f"{key}-00002-of-00003").write_bytes(EMPTY_SHARD)
    doc = analyze_json(WC, "-m", WC_M, "--cache-dir", str(tmp_path))
    assert doc["cacheables"][WORDS]["cached"] is False  # shard 1 is missing
    assert any(key in p and "partial" in p for p in doc["cache_problems"])
    (full / f"{key}-00001-of-00003").write_bytes(EMPTY_SHARD)
    doc = analyze_json(WC, "-m", WC_M, "--cache-dir", str(tmp_path))
    assert doc["cacheables"][WORDS]["cached"] is True
    assert doc["cache_problems"] == []


def test_truncated_shard_is_no_cache(tmp_path):
    """A shard cut anywhere is not a cache (Beam's reader would read it back
    short, silently); the whole one is, as is a file of several bz2 streams."""
    import base64
    import bz2

    key = _words_key()
    full = tmp_path / "full"
    full.mkdir()
    shard = full / f"{key}-00000-of-00001"
    manifest = json.loads(open(WC_M).read())
    manifest["computed"] = ["words"]  # so the recompute is warned of
    computed = tmp_path / "computed.json"
    computed.write_text(json.dumps(manifest))
    whole = bz2.compress(b"".join(base64.b64encode(f"element {i}".encode()) + b"\n" for i in range(3000)))
    for cut in (0, 1, 13, len(whole) // 2, len(whole) - 11, len(whole) - 1):
        shard.write_bytes(whole[:cut])
        doc = analyze_json(WC, "-m", str(computed), "--cache-dir", str(tmp_path))
        assert doc["cacheables"][WORDS]["cached"] is False, cut
        assert doc["cache_problems"] == [f"full/{shard.name}: does not end as a bz2 stream does (cut short, or not bz2), will be rewritten"]
        assert "shards missing or truncated" in " ".join(doc["warnings"])
    for content in (whole, EMPTY_SHARD, whole + EMPTY_SHARD):
        shard.write_bytes(content)
        doc = analyze_json(WC, "-m", WC_M, "--cache-dir", str(tmp_path))
        assert doc["cacheables"][WORDS]["cached"] is True and doc["cache_problems"] == []


def test_another_pipelines_damaged_sets_are_left_as_they_are(tmp_path):
    """In a cache directory pipelines share, a damaged set under a key no
    binding uses is reported as such, not as something this pipeline's run
    will rewrite; its own keys' are; and one whose stem only begins with a
    key (Beam reads '<key>*' with that key, and no rewrite removes it) says
    so (analyze, instrument and the JSON alike)."""
    own, other = _words_key(), "0123456789-0123456789abcdef-0123456789abcdef-0123456789abcdef"
    full = tmp_path / "full"
    full.mkdir()
    for key in (own, other):
        (full / f"{key}-00000-of-00002").write_bytes(EMPTY_SHARD)  # shard 1 missing
        (full / f"{key}-00000-of-00003").write_bytes(EMPTY_SHARD)  # ... and a set of another count
        (full / f"{key}y-00000-of-00001").write_bytes(b"not bz2")  # a longer stem, cut
    doc = analyze_json(WC, "-m", WC_M, "--cache-dir", str(tmp_path))
    left = " (no binding of this pipeline uses that key: left as it is)"
    read_with = f" (Beam reads it with {own!r}'s cache, as it reads '<key>*'; rm full/{own}y-* to stop that)"
    cut = "does not end as a bz2 stream does (cut short, or not bz2)"
    assert sorted(doc["cache_problems"]) == sorted([
        f"full/{own}y-00000-of-00001: {cut}{read_with}",
        f"full/{other}y-00000-of-00001: {cut}{left}",
        f"{own}: shard sets -of-00002 and -of-00003 are mixed (Beam reads them all as one cache): not cached; "
        f"beaminst run removes them before rewriting it (or rm full/{own}-*-of-*)",
        f"{other}: shard sets -of-00002 and -of-00003 are mixed (Beam reads them all as one cache){left}",
    ])
    (full / f"{own}-00000-of-00003").unlink()
    (full / f"{other}-00000-of-00003").unlink()
    doc = analyze_json(WC, "-m", WC_M, "--cache-dir", str(tmp_path))
    assert f"{own}: partial shard set, will be rewritten" in doc["cache_problems"]
    assert f"{other}: partial shard set{left}" in doc["cache_problems"]
    r = run_cli("instrument", WC, "-m", WC_M, "--cache-dir", str(tmp_path), "-o", str(tmp_path / "o.pb"), "--json")
    assert r.exit_code == 0, r.stderr
    warned = [w for w in json.loads(r.stdout)["warnings"] if w.startswith("cache: ")]
    assert warned == [f"cache: {p}" for p in doc["cache_problems"]]


def test_mixed_shard_sets_are_no_cache(tmp_path):
    """A rewrite with another shard count leaves the old set beside the new
    one, and Beam's reader globs both: no cache, said once per key."""
    key = _words_key()
    full = tmp_path / "full"
    full.mkdir()
    for name in ("00000-of-00001", "00000-of-00002", "00001-of-00002"):
        (full / f"{key}-{name}").write_bytes(EMPTY_SHARD)
    doc = analyze_json(WC, "-m", WC_M, "--cache-dir", str(tmp_path))
    assert doc["cacheables"][WORDS]["cached"] is False
    assert doc["cache_problems"] == [
        f"{key}: shard sets -of-00001 and -of-00002 are mixed (Beam reads them all as one cache): not cached; "
        f"beaminst run removes them before rewriting it (or rm full/{key}-*-of-*)"
    ]
    from beaminst.cache.cachedir import scan_cache_dir

    assert scan_cache_dir(str(tmp_path)).stale_shards(key) == tuple(sorted(p.name for p in full.iterdir()))


def test_streaming_cache_layout(tmp_path):
    """With unbounded sources Beam uses its StreamingCache: one file full/<key>.
    A FileBasedCacheManager shard does not count there, and vice versa."""
    doc = analyze_json(fixture_pb("pubsub_one"), "-m", fixture_manifest("pubsub_one"))
    pc = "ref_PCollection_PCollection_3"  # 'decoded'
    key = doc["cacheables"][pc]["cache_key"]
    full = tmp_path / "full"
    full.mkdir()
    (full / f"{key}-00000-of-00001").write_bytes(EMPTY_SHARD)
    doc = analyze_json(fixture_pb("pubsub_one"), "-m", fixture_manifest("pubsub_one"), "--cache-dir", str(tmp_path))
    assert doc["cacheables"][pc]["cached"] is False
    (full / key).write_bytes(b"")
    doc = analyze_json(fixture_pb("pubsub_one"), "-m", fixture_manifest("pubsub_one"), "--cache-dir", str(tmp_path))
    assert doc["cacheables"][pc]["cached"] is True
    # ... and a bare key file does not make a bounded pipeline's PCollection cached.
    words_key = _words_key()
    (full / words_key).write_bytes(b"")
    doc = analyze_json(WC, "-m", WC_M, "--cache-dir", str(tmp_path))
    assert doc["cacheables"][WORDS]["cached"] is False


def test_missing_cache_dir_is_an_empty_cache(tmp_path):
    doc = analyze_json(WC, "-m", WC_M, "--cache-dir", str(tmp_path / "not-yet"))
    assert not any(c["cached"] for c in doc["cacheables"].values())
    assert doc["cache_dir"] == str(tmp_path / "not-yet")


@pytest.mark.parametrize("where", ["cache_dir", "full"])
def test_cache_dir_that_is_a_file_is_exit_2(tmp_path, where):
    if where == "cache_dir":
        cache = tmp_path / "cache"
        cache.write_text("not a dir")
    else:
        cache = tmp_path
        (tmp_path / "full").write_text("not a dir")
    result = run_cli("analyze", WC, "-m", WC_M, "--cache-dir", str(cache))
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"beaminst: {cache}: ")
    assert "not a directory" in lines[0]


# --- human output -------------------------------------------------------------------------------


def test_human_output_has_table_and_summary():
    result = run_cli("analyze", WC, "-m", WC_M)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("pcollection\t") == 13
    assert "20 transforms, 13 PCollections, 4 cacheable (0 cached), 0 unbounded sources" in result.stdout
    for var in ("lines", "words", "counts", "formatted"):
        assert var in result.stdout
    assert "Unbounded sources" not in result.stdout


def test_human_output_with_sources_and_cache(tmp_path):
    doc = analyze_json(fixture_pb("pubsub_two"), "-m", fixture_manifest("pubsub_two"))
    key = doc["cacheables"]["ref_PCollection_PCollection_6"]["cache_key"]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / key).write_bytes(b"")
    result = run_cli("analyze", fixture_pb("pubsub_two"), "-m", fixture_manifest("pubsub_two"), "--cache-dir", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    # Piped: one record a line, its kind first (tables are for terminals).
    sources = [line.split("\t") for line in result.stdout.splitlines() if line.startswith("source\t")]
    assert sorted(f[2] for f in sources) == ["ReadA", "ReadB"]
    # Piped, a synthetic variable is its bare name (show takes it as it is); "(synthetic)" is for terminals.
    assert any(f[5].startswith("synthetic_var_") for f in (line.split("\t") for line in result.stdout.splitlines()) if f[0] == "pcollection")
    assert "3 cacheable (1 cached), 2 unbounded sources" in result.stdout


# --- exit codes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("analyze",),  # missing PIPELINE
        ("analyze", WC, "--no-such-option"),
        ("no-such-command",),
        ("analyze", WC, "-m"),  # option without value
    ],
)
def test_bad_usage_is_exit_2(args):
    result = run_cli(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()  # beaminst's style, not click's three lines
    assert line.startswith("beaminst") and "--help" in line


@pytest.mark.parametrize(
    "args",
    [
        ("analyze", "/no/such/file.pb"),
        ("analyze", WC, "-m", "/no/such/manifest.json"),
        ("analyze", fixture_pb("corrupt/garbage")),
    ],
)
def test_bad_input_is_exit_2_one_line(args):
    result = run_cli(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("beaminst: ")


def test_success_is_exit_0_in_a_real_process():
    proc = run_cli_subprocess("analyze", WC, "-m", WC_M, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["pcollections"][WORDS]["var"] == "words"
    assert beam_noise_free(proc.stderr) == []


def test_version():
    result = run_cli("--version")
    assert result.exit_code == 0
    assert "beaminst" in result.stdout


# --- help and imports ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "example"),
    [
        (("--help",), "beaminst analyze fixtures/wordcount.pb"),
        (("analyze", "--help"), "beaminst analyze wordcount.pb -m wordcount.manifest.json"),
        (("-h",), "Examples:"),
    ],
)
def test_help_shows_examples(args, example):
    result = run_cli(*args)
    assert result.exit_code == 0
    assert "Examples:" in result.stdout
    assert example in result.stdout


_IMPORT_PROBE = textwrap.dedent(
    """
    import sys
    from beaminst.cli import main
    try:
        main(sys.argv[1:], standalone_mode=False)
    except SystemExit:
        pass
    sys.stdout.flush()
    loaded = sorted(m for m in sys.modules if m.startswith("apache_beam"))
    print("BEAM_MODULES=" + ",".join(loaded))
    print("RUNNERS=" + str(any(m.startswith("apache_beam.runners") for m in sys.modules)))
    """
)


def _probe(*cli_args: str) -> tuple[list[str], bool, str]:
    proc = run_python("-c", _IMPORT_PROBE, *cli_args)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    beam_line = next(line for line in lines if line.startswith("BEAM_MODULES="))
    runners_line = next(line for line in lines if line.startswith("RUNNERS="))
    modules = [m for m in beam_line.split("=", 1)[1].split(",") if m]
    return modules, runners_line == "RUNNERS=True", proc.stdout


@pytest.mark.parametrize("args", [("--help",), ("analyze", "--help")])
def test_help_does_not_import_beam(args):
    modules, runners, stdout = _probe(*args)
    assert "Examples:" in stdout
    assert modules == []
    assert not runners


def test_analyze_does_not_import_beam_runners():
    modules, runners, stdout = _probe("analyze", fixture_pb("pubsub_one"), "-m", fixture_manifest("pubsub_one"), "--json")
    assert '"has_unbounded_sources": true' in stdout  # it really ran
    assert not runners
    assert modules == []  # the lean loader needs no part of the SDK at all


def test_lean_proto_classes_are_the_sdks_classes():
    probe = textwrap.dedent(
        """
        import sys
        import beaminst.model.beamproto as bp
        from beaminst.model.protoio import load_pipeline
        proto, _ = load_pipeline(sys.argv[1])
        lean_pipeline = bp.runner_api().Pipeline
        assert not any(m.startswith("apache_beam") for m in sys.modules), "SDK loaded early"
        import apache_beam  # noqa: F401
        from apache_beam.portability.api import beam_runner_api_pb2
        assert bp.runner_api().Pipeline is beam_runner_api_pb2.Pipeline
        assert lean_pipeline is beam_runner_api_pb2.Pipeline
        assert isinstance(proto, beam_runner_api_pb2.Pipeline)
        print("SAME")
        """
    )
    proc = run_python("-c", probe, WC)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "SAME"


def test_lean_interactive_api_before_the_sdk():
    probe = textwrap.dedent(
        """
        import sys
        import beaminst.model.beamproto as bp
        lean_record = bp.interactive_api().TestStreamFileRecord
        assert not any(m.startswith("apache_beam") for m in sys.modules), "SDK loaded early"
        import apache_beam  # noqa: F401
        from apache_beam.portability.api import beam_interactive_api_pb2
        assert lean_record is beam_interactive_api_pb2.TestStreamFileRecord
        print("SAME")
        """
    )
    proc = run_python("-c", probe)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "SAME"


def test_lean_loader_after_beam_uses_the_canonical_module():
    probe = textwrap.dedent(
        """
        import apache_beam  # noqa: F401
        from apache_beam.portability.api import beam_runner_api_pb2
        import beaminst.model.beamproto as bp
        assert bp.runner_api() is beam_runner_api_pb2
        print("CANONICAL")
        """
    )
    proc = run_python("-c", probe)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "CANONICAL"
