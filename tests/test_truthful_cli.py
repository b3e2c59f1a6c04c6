"""Issue 12, a CLI that tells the truth: what used to pass silently now says
so by name, a wrong name gets the closest right one, and what is printed for a
pipe reads back with grep and cut."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import pytest
from conftest import (
    EMPTY_SHARD,
    FIXTURES,
    REPO,
    fixture_manifest,
    fixture_pb,
    run_cli,
    run_cli_in_terminal,
)

WC, WC_M = fixture_pb("wordcount"), fixture_manifest("wordcount")


def _manifest(tmp_path, doc) -> str:
    path = tmp_path / "m.json"
    path.write_text(json.dumps(doc))
    return str(path)


def _keys(cache_dir) -> dict[str, str]:
    doc = json.loads(run_cli("analyze", WC, "-m", WC_M, "--cache-dir", str(cache_dir), "--json").stdout)
    return {c["var"]: c["cache_key"] for c in doc["cacheables"].values()}


def _cache(cache_dir, keys) -> None:
    os.makedirs(cache_dir / "full", exist_ok=True)
    for key in keys:
        (cache_dir / "full" / f"{key}-00000-of-00001").write_bytes(EMPTY_SHARD)


# --- silent no-ops, by name -------------------------------------------------


def test_a_misspelt_cache_dir_with_computed_variables_is_named(tmp_path):
    man = _manifest(tmp_path, {**json.loads(open(WC_M).read()), "computed": ["words", "lines"]})
    r = run_cli("instrument", WC, "-m", man, "--cache-dir", str(tmp_path / "cahce"), "-o", str(tmp_path / "o.pb"), "--json")
    assert r.exit_code == 0, r.stderr
    warnings = json.loads(r.stdout)["warnings"]
    assert any("cahce" in w and "does not exist" in w for w in warnings), warnings
    a = run_cli("analyze", WC, "-m", man, "--cache-dir", str(tmp_path / "cahce"))
    assert "cahce" in a.stdout and "does not exist" in a.stdout


def test_a_computed_variable_with_no_cache_is_named(tmp_path):
    cache = tmp_path / "cache"
    keys = _keys(cache)
    _cache(cache, [keys["lines"]])
    man = _manifest(tmp_path, {**json.loads(open(WC_M).read()), "computed": ["lines", "words"]})
    r = run_cli("instrument", WC, "-m", man, "--cache-dir", str(cache), "-o", str(tmp_path / "o.pb"), "--json")
    assert r.exit_code == 0, r.stderr
    warnings = json.loads(r.stdout)["warnings"]
    assert [w for w in warnings if "'words' is listed as computed" in w and keys["words"] in w], warnings
    assert not [w for w in warnings if "'lines'" in w], warnings
    doc = json.loads(run_cli("analyze", WC, "-m", man, "--cache-dir", str(cache), "--json").stdout)
    assert any("'words' is listed as computed" in w for w in doc["warnings"])


def test_an_incomplete_cache_is_named_as_such(tmp_path):
    cache = tmp_path / "cache"
    key = _keys(cache)["words"]
    os.makedirs(cache / "full")
    (cache / "full" / f"{key}-00000-of-00002").write_bytes(EMPTY_SHARD)
    man = _manifest(tmp_path, {**json.loads(open(WC_M).read()), "computed": ["words"]})
    doc = json.loads(run_cli("analyze", WC, "-m", man, "--cache-dir", str(cache), "--json").stdout)
    assert any("'words'" in w and "incomplete" in w for w in doc["warnings"]), doc["warnings"]


def test_a_binding_neither_written_nor_read_is_named(tmp_path):
    """``counts`` is cached and computed, but only ``formatted`` (downstream,
    also cached and computed) is read: nothing reads ``counts``'s cache."""
    cache = tmp_path / "cache"
    keys = _keys(cache)
    _cache(cache, keys.values())
    man = _manifest(tmp_path, {**json.loads(open(WC_M).read()), "computed": sorted(keys)})
    r = run_cli("instrument", WC, "-m", man, "--cache-dir", str(cache), "-o", str(tmp_path / "o.pb"), "--json")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    acted = {e["var"] for e in report["reads"] + report["writes"] + report["skipped"]}
    idle = sorted(set(keys) - acted)
    assert idle, report
    for var in idle:
        assert any(w.startswith(f"{var!r} is neither written nor read") for w in report["warnings"]), report["warnings"]
    for var in acted:
        assert not any(w.startswith(f"{var!r} is neither") for w in report["warnings"])


def test_reuse_of_a_whole_cache_warns_about_nothing(tmp_path):
    """With --reuse and every binding cached, only the last caches are read:
    that the earlier ones go unread is reuse working, not a warning (trial)."""
    cache = tmp_path / "cache"
    keys = _keys(cache)
    _cache(cache, keys.values())
    r = run_cli("instrument", WC, "-m", WC_M, "--cache-dir", str(cache), "-o", str(tmp_path / "o.pb"), "--reuse", "--json")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["reused"] and len({e["var"] for e in report["reads"]}) < len(keys)  # some go unread
    assert not any("neither written nor read" in w for w in report["warnings"]), report["warnings"]


def test_instrument_with_nothing_bound_exits_2_saying_how_to_bind(tmp_path):
    out = tmp_path / "o.pb"
    r = run_cli("instrument", WC, "--cache-dir", str(tmp_path / "c"), "-o", str(out))
    assert r.exit_code == 2
    (line,) = r.stderr.splitlines()
    assert "nothing to instrument" in line and "-m" in line and "beaminst analyze" in line
    assert not out.exists()
    empty = _manifest(tmp_path, {"bindings": {}})
    r = run_cli("instrument", WC, "-m", empty, "--cache-dir", str(tmp_path / "c"), "-o", str(out))
    assert r.exit_code == 2 and "nothing to instrument" in r.stderr


def test_a_pipeline_with_only_sources_still_instruments_without_a_manifest(tmp_path):
    r = run_cli("instrument", fixture_pb("pubsub_one"), "--cache-dir", str(tmp_path / "c"), "-o", str(tmp_path / "o.pb"))
    assert r.exit_code == 0, r.stderr


# --- did you mean -----------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"bindings": {"words": "ref_PCollection_PCollection_9"}, "computed": ["word"]}, "did you mean 'words'?"),
        ({"bindings": {"c": "ref_PCollection_PCollection_1x"}}, "did you mean 'ref_PCollection_PCollection_1'?"),
        ({"bindings": {"c": {"producer": "CountWord"}}}, "did you mean 'CountWords'?"),
        ({"bindings": {"c": {"producer": "countwords/groupbykey"}}}, "did you mean 'CountWords/GroupByKey'?"),
        ({"bindings": {"c": {"producer": "Format", "tag": "Non"}}}, "did you mean 'None'?"),
    ],
)
def test_a_wrong_name_gets_the_closest_right_one(tmp_path, doc, needle):
    r = run_cli("analyze", WC, "-m", _manifest(tmp_path, doc))
    assert r.exit_code == 2
    (line,) = r.stderr.splitlines()
    assert needle in line, line


def test_a_composite_named_as_producer_names_its_inner_producer(tmp_path):
    """The README's own example binds ``CountWords``, a composite: the error
    names the leaf that produces its output, and that binding works."""
    r = run_cli("analyze", WC, "-m", _manifest(tmp_path, {"bindings": {"counts": {"producer": "CountWords"}}}))
    assert r.exit_code == 2
    (line,) = r.stderr.splitlines()
    assert "'CountWords' is a composite" in line
    suggested = json.loads(line[line.index("bind {") + len("bind ") : line.index("} (or") + 1])
    ok = run_cli("analyze", WC, "-m", _manifest(tmp_path, {"bindings": {"counts": suggested}}), "--json")
    assert ok.exit_code == 0, ok.stderr
    (c,) = json.loads(ok.stdout)["cacheables"]
    assert c == json.loads(open(WC_M).read())["bindings"]["counts"]


def test_a_composite_with_no_such_tag_lists_its_tags(tmp_path):
    r = run_cli("analyze", WC, "-m", _manifest(tmp_path, {"bindings": {"c": {"producer": "CountWords", "tag": "x"}}}))
    assert r.exit_code == 2
    assert "composite with no output tag 'x'" in r.stderr and "None" in r.stderr


# --- pipes and terminals ----------------------------------------------------


def _piped(command: str) -> subprocess.CompletedProcess:
    """``command`` through bash, beaminst as ``python -m beaminst`` from this checkout."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("COLUMNS", None)  # a pipe has no width: none must be assumed
    env.pop("BEAMINST_DEBUG", None)
    beaminst = f"{shlex.quote(sys.executable)} -m beaminst"
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", command.replace("beaminst ", beaminst + " ")],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
    )


def test_piped_analyze_rows_read_back_with_grep_and_cut(tmp_path):
    keys = _keys(tmp_path / "c")
    for var, key in keys.items():
        proc = _piped(f"beaminst analyze {WC} -m {WC_M} | grep -F {key} | cut -f6,7")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == f"{var}\t{key}\n"
    long_name = "ReadLines/MaybeReshuffle/Reshuffle/ReshufflePerKey/FlatMap(restore_metadata_default_window)"
    proc = _piped(f"beaminst analyze {WC} | grep -F '{long_name}' | cut -f1,3")
    assert proc.stdout == f"pcollection\t{long_name}\n", proc.stdout


def test_piped_instrument_report_reads_back_with_grep_and_cut(tmp_path):
    keys = _keys(tmp_path / "c")
    out = tmp_path / "o.pb"
    proc = _piped(f"beaminst instrument {WC} -m {WC_M} --cache-dir {tmp_path / 'c'} -o {out} | grep ^write | cut -f2,3")
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.splitlines()) == sorted(f"{v}\t{k}" for v, k in keys.items())


def test_piped_lines_never_wrap_and_stay_escaped(tmp_path):
    """A 300-character unique name with a tab and an escape in it: one line,
    the tab and escape shown escaped, no field split."""
    from beaminst.model import protoio

    proto, _ = protoio.load_pipeline(WC)
    tid = next(t for t, x in proto.components.transforms.items() if x.unique_name == "Split")
    proto.components.transforms[tid].unique_name = "S" * 300 + "\t\x1b[31m"
    pb = tmp_path / "p.pb"
    pb.write_bytes(proto.SerializeToString())
    man = _manifest(tmp_path, {"bindings": {"words": "ref_PCollection_PCollection_9"}})
    proc = _piped(f"beaminst analyze {pb} -m {man} | grep -F words")
    (line,) = proc.stdout.splitlines()
    fields = line.split("\t")
    assert fields[2] == "S" * 300 + "\\x09\\x1b[31m" and fields[5] == "words"
    assert "\x1b" not in proc.stdout


def test_a_terminal_gets_tables_and_next_steps(tmp_path):
    code, shown, err = run_cli_in_terminal("analyze", WC, "-m", WC_M, "--cache-dir", str(tmp_path / "c"))
    assert code == 0, err
    shown = re.sub(r"\x1b\[[0-9;]*m", "", shown).replace("\r\n", "\n")
    assert "┏" in shown and "PCollections" in shown and "pcollection\t" not in shown
    assert f"next: beaminst instrument {WC} -m {WC_M} --cache-dir {tmp_path / 'c'} -o wordcount.instrumented.pb" in shown


def test_binary_proto_to_a_terminal_is_refused_with_a_hint(tmp_path):
    code, shown, err = run_cli_in_terminal("instrument", WC, "-m", WC_M, "--cache-dir", str(tmp_path / "c"), "-o", "-")
    assert code == 2
    assert "refusing to write a binary pipeline proto to the terminal" in err and "-o - > out.pb" in err
    assert shown.strip() == ""
    code, shown, err = run_cli_in_terminal(
        "instrument", WC, "-m", WC_M, "--cache-dir", str(tmp_path / "c"), "-o", "-", "--output-format", "text"
    )
    assert code == 0, err
    assert "root_transform_ids" in shown


def test_a_terminal_named_as_a_file_is_a_terminal_too(tmp_path):
    """``-o /dev/tty`` (or ``-o $(tty)``) wrote the binary proto through to
    the terminal, where ``-o -`` is refused; and ``-`` read from a terminal
    waited in silence for a pipeline nobody types (trial)."""
    import contextlib
    import pty
    import time

    leader, follower = pty.openpty()
    try:
        name = os.ttyname(follower)
        base = [sys.executable, "-m", "beaminst"]
        r = subprocess.run([*base, "instrument", WC, "-m", WC_M, "--cache-dir", str(tmp_path / "c"), "-o", name],
                           capture_output=True, text=True, timeout=120, cwd=REPO)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert f"-o {name}: refusing to write a binary pipeline proto to the terminal" in r.stderr
        import threading

        shown = bytearray()

        def drain() -> None:  # a terminal's buffer is small: read it as it is written
            with contextlib.suppress(OSError):
                while chunk := os.read(leader, 1 << 16):
                    shown.extend(chunk)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        r = subprocess.run([*base, "instrument", WC, "-m", WC_M, "--cache-dir", str(tmp_path / "c"), "-o", name,
                            "--output-format", "text"], capture_output=True, text=True, timeout=120, cwd=REPO)
        assert r.returncode == 0, r.stderr
        for _ in range(200):  # what the writer left in the terminal's buffer, read
            if b"root_transform_ids" in shown:
                break
            time.sleep(0.05)
        assert b"root_transform_ids" in shown
        for args in (["analyze", "-"], ["analyze", WC, "-m", "-"]):
            r = subprocess.run([*base, *args], stdin=follower, capture_output=True, text=True, timeout=120, cwd=REPO)
            assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
            assert r.stderr.startswith("beaminst: -: stdin is a terminal: pipe a ") and "(- < FILE)" in r.stderr
    finally:
        os.close(leader)
        os.close(follower)
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


# --- the next step ----------------------------------------------------------


def _next(stdout: str) -> list[str]:
    return [line.split("\t", 1)[1] for line in stdout.splitlines() if line.startswith("next\t")]


def test_each_command_names_the_next_one_and_it_runs(tmp_path):
    """analyze -> instrument -> show, each named by the one before, each
    working as printed (in tmp_path, where the suggested outputs go)."""
    cache = tmp_path / "cache"
    r = run_cli("analyze", WC, "-m", WC_M, "--cache-dir", str(cache))
    (step,) = _next(r.stdout)
    assert step == f"beaminst instrument {WC} -m {WC_M} --cache-dir {cache} -o wordcount.instrumented.pb"
    os.chdir(tmp_path)
    r = run_cli(*shlex.split(step)[1:])
    assert r.exit_code == 0, r.stderr
    run, show = _next(r.stdout)
    assert run == "beaminst run wordcount.instrumented.pb"
    assert show.startswith(f"beaminst show {WC} -m {WC_M} --cache-dir {cache} ")
    assert set(shlex.split(show)[7:]) == {"lines", "words", "counts", "formatted"}


def test_background_caching_and_sources_name_their_next_steps(tmp_path):
    pb, man = fixture_pb("pubsub_one"), fixture_manifest("pubsub_one")
    cache = tmp_path / "c"
    steps = _next(run_cli("analyze", pb, "-m", man, "--cache-dir", str(cache)).stdout)
    assert steps[0].startswith(f"beaminst background-caching {pb} -m {man} --cache-dir {cache} -o pubsub_one.record.pb")
    r = run_cli("background-caching", pb, "-m", man, "--cache-dir", str(cache), "-o", str(tmp_path / "bg.pb"))
    run, replay = _next(r.stdout)
    assert run.startswith(f"beaminst run {tmp_path / 'bg.pb'}")
    assert replay.startswith(f"beaminst instrument {pb} -m {man} --cache-dir {cache} -o ")


def test_with_the_bindings_cached_the_next_step_reads_them_back(tmp_path):
    """Every binding cached but none listed as computed: instrument without
    --reuse writes a proto that neither writes nor reads (the run caches
    nothing), so analyze and instrument both name --reuse, which reads them."""
    cache = tmp_path / "cache"
    keys = _keys(cache)
    _cache(cache, keys.values())
    (step,) = _next(run_cli("analyze", WC, "-m", WC_M, "--cache-dir", str(cache)).stdout)
    assert step == (f"beaminst instrument {WC} -m {WC_M} --cache-dir {cache} --reuse -o wordcount.instrumented.pb  "
                    f"# reads back the {len(keys)} cached variable(s)")
    os.chdir(tmp_path)
    r = run_cli("instrument", WC, "-m", WC_M, "--cache-dir", str(cache), "-o", "plain.pb")
    assert r.exit_code == 0 and "0 write(s), 0 read(s)" in r.stdout
    (again,) = _next(r.stdout)
    assert again.startswith(f"beaminst instrument {WC} -m {WC_M} --cache-dir {cache} --reuse -o ")
    r = run_cli(*shlex.split(step, comments=True)[1:])
    assert r.exit_code == 0 and "0 write(s), 1 read(s)" in r.stdout, r.stdout  # the rest is pruned


def test_another_sdks_pipeline_is_run_through_the_job_api(tmp_path):
    pb, man = str(FIXTURES / "typescript" / "wordcount.pb"), str(FIXTURES / "typescript" / "wordcount.manifest.json")
    r = run_cli("instrument", pb, "-m", man, "--cache-dir", str(tmp_path / "c"), "-o", str(tmp_path / "o.pb"))
    assert r.exit_code == 0, r.stderr
    run = _next(r.stdout)[0]
    assert run.startswith(f"beaminst run {tmp_path / 'o.pb'} --job-endpoint HOST:PORT  # another SDK's pipeline")
    local = run_cli("run", str(tmp_path / "o.pb"))
    assert local.exit_code == 2 and "--job-endpoint" in local.stderr  # what the step avoids


def test_a_source_recorded_already_is_replayed_or_removed_first(tmp_path):
    """background-caching warns that run refuses to append to a recording
    there is; its next steps then replay it, or remove it before recording."""
    from apache_beam.portability.api import beam_interactive_api_pb2 as iapi
    from apache_beam.runners.interactive.caching.streaming_cache import StreamingCache

    pb, man = fixture_pb("pubsub_one"), fixture_manifest("pubsub_one")
    cache = tmp_path / "c"
    analysis = json.loads(run_cli("analyze", pb, "-m", man, "--json").stdout)
    (key,) = [c["cache_key"] for c in analysis["cacheables"].values() if c["synthetic"]]
    StreamingCache(str(cache)).write([iapi.TestStreamFileHeader(tag=key)], "full", key)
    r = run_cli("background-caching", pb, "-m", man, "--cache-dir", str(cache), "-o", str(tmp_path / "bg.pb"))
    assert r.exit_code == 0 and "beaminst run refuses until it is removed" in r.stdout
    replay, again = _next(r.stdout)
    assert replay.startswith(f"beaminst instrument {pb} -m {man} --cache-dir {cache} -o ")
    assert again.startswith(f"rm {cache / 'full' / key} && beaminst run {tmp_path / 'bg.pb'}  # then records")


def test_analyze_with_nothing_bound_says_how_to_bind():
    (step,) = _next(run_cli("analyze", WC).stdout)
    assert "manifest" in step and f"beaminst analyze {WC} -m bindings.json" in step


def test_json_reports_hold_no_next_lines(tmp_path):
    r = run_cli("analyze", WC, "-m", WC_M, "--json")
    json.loads(r.stdout)


# --- batch ------------------------------------------------------------------


def test_batch_error_rows_carry_their_reason(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    import shutil

    shutil.copyfile(WC, src / "good.pb")
    shutil.copyfile(WC_M, src / "good.manifest.json")
    (src / "bad.pb").write_bytes(b"\x00\x01garbage")
    shutil.copyfile(WC, src / "unbound.pb")
    r = run_cli("batch", str(src), "-o", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c"), "--jobs", "1")
    assert r.exit_code == 2
    rows = {f[1]: f for f in (line.split("\t") for line in r.stdout.splitlines()) if f[0] == "file"}
    assert rows["good.pb"][2] == "ok" and rows["good.pb"][7] == ""
    assert rows["bad.pb"][2] == "error" and rows["bad.pb"][7].startswith("not a valid Beam pipeline proto")
    assert rows["unbound.pb"][2] == "error" and rows["unbound.pb"][7].startswith("nothing to instrument")
    assert all(len(f) == 8 for f in rows.values())
    (step,) = [line.split("\t", 1)[1] for line in r.stdout.splitlines() if line.startswith("next\t")]
    assert step.startswith(f"beaminst run {tmp_path / 'out' / 'good.pb'}  # runs it"), step


# --- the README's claims, checked against the program -----------------------

README = (REPO / "README.md").read_text("utf-8")


def test_the_readme_manifest_example_works_on_the_fixture_it_names(tmp_path):
    section = README[README.index("## The binding manifest") :]
    example = section[section.index("```json") + len("```json") : section.index("```", section.index("```json") + 7)]
    assert "fixtures/wordcount.pb" in section[: section.index("A binding names")]
    path = tmp_path / "m.json"
    path.write_text(example)
    r = run_cli("analyze", WC, "-m", str(path), "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert {c["var"] for c in doc["cacheables"].values()} == {"words", "counts", "lines"}
    assert doc["cacheables"]["ref_PCollection_PCollection_8"]["cache_key"] == "lines-v1-0-notebook"


def test_the_readme_lists_every_output_extension():
    from beaminst.model.protoio import _EXTENSIONS

    claimed = README[README.index("extension (binary:") :].split("else binary")[0]
    for ext, fmt in _EXTENSIONS.items():
        part = {"binary": "binary:", "text": "text format:", "json": "JSON:"}[fmt]
        assert f"`{ext}`" in claimed.split(part)[1].split(";")[0], (ext, fmt)


def test_analyze_json_cacheables_are_sorted_by_id_as_the_readme_says():
    doc = json.loads(run_cli("analyze", WC, "-m", WC_M, "--json").stdout)
    assert list(doc["cacheables"]) == sorted(doc["cacheables"])
    assert "# sorted by id" in README


# --- errors that help -------------------------------------------------------


def _one_line(r) -> str:
    assert r.exit_code == 2, r.stdout
    (line,) = r.stderr.splitlines()
    return line


def test_json_that_is_no_pipeline_says_so_in_its_own_words(tmp_path):
    """A package.json beside the protos (batch reads every *.json in SRC):
    what it is, not protobuf's list of every Pipeline field."""
    package = REPO / "fixtures" / "typescript" / "package.json"
    line = _one_line(run_cli("analyze", str(package)))
    assert "JSON, but not a Beam pipeline" in line and "name" in line and "Available Fields" not in line, line
    json_pipeline = str(REPO / "fixtures" / "wordcount.json")
    assert run_cli("analyze", json_pipeline, "-m", WC_M).exit_code == 0  # a pipeline as JSON still loads


def test_swapped_pipeline_and_manifest_are_named_as_such():
    line = _one_line(run_cli("analyze", WC_M))
    assert line == (
        f"beaminst: {WC_M}: this is a binding manifest (JSON with \"bindings\"), not a pipeline proto "
        "(a manifest goes with -m, or, for batch, beside X.pb as X.manifest.json)"
    )
    for pipeline in (WC, str(REPO / "fixtures" / "wordcount.textproto"), str(REPO / "fixtures" / "wordcount.json")):
        line = _one_line(run_cli("analyze", WC, "-m", pipeline))
        assert "this is a pipeline proto, not a binding manifest" in line, line


def test_a_file_as_cache_dir_names_the_option(tmp_path):
    (tmp_path / "afile").write_bytes(b"")
    for command in ("analyze", "instrument"):
        r = run_cli(command, WC, "-m", WC_M, "--cache-dir", str(tmp_path / "afile"), "-o", str(tmp_path / "o.pb"))
        if command == "analyze":
            r = run_cli(command, WC, "-m", WC_M, "--cache-dir", str(tmp_path / "afile"))
        assert _one_line(r) == f"beaminst: {tmp_path / 'afile'}: --cache-dir names a file, not a directory"


def test_long_parser_errors_are_cut_at_a_word(tmp_path):
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps({"nosuchfield": 1}))
    line = _one_line(run_cli("analyze", str(bad)))
    assert line.endswith(" ...)") or len(line) < 300, line
    assert "requirem)" not in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("instrument", WC, "-m", WC_M, "--cache-dir", "c"),
         "beaminst: instrument: missing option '-o' / '--output' (see beaminst instrument --help)"),
        (("analyze", WC, "--nosuch"), "beaminst: analyze: no such option '--nosuch' (see beaminst analyze --help)"),
        (("nosuch",), "beaminst: no such command 'nosuch' (see beaminst --help)"),
    ],
)
def test_usage_errors_are_one_line_in_beaminsts_style(args, expected):
    assert _one_line(run_cli(*args)) == expected


def test_an_unquoted_glob_is_named_and_batch_suggested():
    files = sorted(str(p) for p in (REPO / "fixtures").glob("*.pb"))
    for command in (("analyze",), ("diff",)):
        line = _one_line(run_cli(*command, *files))
        assert "an unquoted glob?" in line and "beaminst batch 'SRC/*.pb'" in line, line


# --- found trying it as a newcomer ------------------------------------------


@pytest.mark.parametrize("computed", ['"words"', '"Auto"', '{"words": true}', "5", '[{"pcollection": "x"}]'])
def test_a_mistyped_computed_says_what_computed_takes(tmp_path, computed):
    path = tmp_path / "m.json"
    path.write_text('{"bindings": {"words": "ref_PCollection_PCollection_9"}, "computed": ' + computed + "}")
    line = _one_line(run_cli("analyze", WC, "-m", str(path)))
    assert 'computed: expected a list of bound variable names, or "auto"' in line, line


def test_a_cache_dir_one_level_too_deep_is_named(tmp_path):
    keys = _keys(tmp_path / "cache")
    _cache(tmp_path / "cache", keys.values())
    r = run_cli("analyze", WC, "-m", WC_M, "--cache-dir", str(tmp_path / "cache" / "full"), "--json")
    problems = json.loads(r.stdout)["cache_problems"]
    assert any("looks like the full/ directory itself" in p and f"--cache-dir {tmp_path / 'cache'}" in p for p in problems)
    # analyze only reads it; a rewrite would put its cache in full/full/, where no run finds it: refused,
    # once for a whole batch, nothing written.
    deep = str(tmp_path / "cache" / "full")
    src = tmp_path / "src"
    src.mkdir()
    (src / "wc.pb").write_bytes(open(WC, "rb").read())
    for argv in (
        ("instrument", WC, "-m", WC_M, "--cache-dir", deep, "--reuse", "-o", str(tmp_path / "i.pb")),
        ("background-caching", WC, "--cache-dir", deep, "--allow-empty", "-o", str(tmp_path / "i.pb")),
        ("batch", str(src), "-o", str(tmp_path / "out"), "--cache-dir", deep),
    ):
        line = _one_line(run_cli(*argv))
        assert line.startswith(f"beaminst: {deep}: holds cache shards (") and line.endswith(
            f"it looks like the full/ directory itself; pass its parent, --cache-dir {tmp_path / 'cache'} "
            "(its cache writes would go to full/full/)"
        ), line
    assert not (tmp_path / "i.pb").exists() and not (tmp_path / "out").exists()
    assert not (tmp_path / "cache" / "full" / "full").exists()
    # Not named full/: any directory of *-N-of-M files (a WriteToText output) looks the same, and a
    # cache made there is a new one, found again by the same --cache-dir: a warning only.
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "counts-00000-of-00001").write_bytes(b"a: 1\n")
    r = run_cli("instrument", WC, "-m", WC_M, "--cache-dir", str(texts), "-o", str(tmp_path / "i.pb"), "--json")
    assert r.exit_code == 0, r.stderr
    assert any("looks like the full/ directory itself" in w for w in json.loads(r.stdout)["warnings"])


def test_a_cache_dir_one_level_too_shallow_is_named(tmp_path):
    """The directory that holds the cache directory, given for it: every
    key would read as missing, silently; analyze names the cache inside, and
    show makes that its error instead of "no cache"."""
    keys = _keys(tmp_path / "cache")
    _cache(tmp_path / "cache", keys.values())
    r = run_cli("analyze", WC, "-m", WC_M, "--cache-dir", str(tmp_path), "--json")
    problems = json.loads(r.stdout)["cache_problems"]
    assert problems == [
        f"{str(tmp_path)!r} holds no full/ directory, but a directory in it does: {str(tmp_path / 'cache')!r}; "
        f"if that is the cache, pass --cache-dir {tmp_path / 'cache'}"
    ]
    line = _one_line(run_cli("show", WC, "-m", WC_M, "--cache-dir", str(tmp_path), "words"))
    assert f"pass --cache-dir {tmp_path / 'cache'}" in line, line
    assert json.loads(run_cli("analyze", WC, "-m", WC_M, "--cache-dir", str(tmp_path / "cache"), "--json").stdout)[
        "cache_problems"] == []
    (tmp_path / "empty").mkdir()
    assert json.loads(run_cli("analyze", WC, "-m", WC_M, "--cache-dir", str(tmp_path / "empty"), "--json").stdout)[
        "cache_problems"] == []


def test_cached_but_not_computed_says_how_to_read_it_back(tmp_path):
    keys = _keys(tmp_path / "cache")
    _cache(tmp_path / "cache", keys.values())
    r = run_cli("instrument", WC, "-m", WC_M, "--cache-dir", str(tmp_path / "cache"), "-o", str(tmp_path / "o.pb"), "--json")
    skipped = json.loads(r.stdout)["skipped"]
    assert len(skipped) == 4 and all("--reuse" in s["reason"] and '"computed"' in s["reason"] for s in skipped)
    # Piped, as the README's table has it: `skipped`, the variable, the reason (cut -f2 lists the variables).
    r = run_cli("instrument", WC, "-m", WC_M, "--cache-dir", str(tmp_path / "cache"), "-o", str(tmp_path / "o.pb"))
    records = [line.split("\t") for line in r.stdout.splitlines() if line.startswith("skipped\t")]
    assert sorted(f[1] for f in records) == sorted(s["var"] for s in skipped)
    assert all(len(f) == 3 and f[2] == next(s["reason"] for s in skipped if s["var"] == f[1]) for f in records)


def test_unbounded_pcollections_with_no_source_are_warned_about_in_analyze(tmp_path):
    from beaminst.model import protoio

    proto, _ = protoio.load_pipeline(fixture_pb("pubsub_one"))
    for t in proto.components.transforms.values():
        if "pubsub" in t.spec.urn:
            t.spec.urn = "example:transform:my_source:v1"
    pb = tmp_path / "p.pb"
    pb.write_bytes(proto.SerializeToString())
    doc = json.loads(run_cli("analyze", str(pb), "--json").stdout)
    assert not doc["unbounded_sources"]
    assert any("UNBOUNDED" in w and "--unbounded-urn" in w for w in doc["warnings"]), doc["warnings"]
    fine = json.loads(run_cli("analyze", str(pb), "--unbounded-urn", "example:transform:my_source:v1", "--json").stdout)
    assert not any("UNBOUNDED" in w for w in fine["warnings"])


def test_a_piped_synthetic_variable_is_the_bare_name_show_takes(tmp_path):
    pb, man = fixture_pb("pubsub_one"), fixture_manifest("pubsub_one")
    rows = [line.split("\t") for line in run_cli("analyze", pb, "-m", man).stdout.splitlines()]
    synthetic = [f[5] for f in rows if f[0] == "pcollection" and f[5].startswith("synthetic_var_")]
    assert synthetic and all(" " not in v for v in synthetic)
    code, shown, _ = run_cli_in_terminal("analyze", pb, "-m", man)
    assert "(synthetic)" in shown


def test_after_stdout_output_the_run_step_names_no_guessed_file(tmp_path):
    r = run_cli("instrument", WC, "-m", WC_M, "--cache-dir", str(tmp_path / "c"), "-o", "-")
    steps = [line.split("\t", 1)[1] for line in r.stderr.splitlines() if line.startswith("next\t")]
    assert steps[0].startswith("beaminst run FILE"), steps


def test_batch_shows_each_files_warnings(tmp_path):
    import shutil

    src = tmp_path / "src"
    src.mkdir()
    shutil.copyfile(WC, src / "a.pb")
    shutil.copyfile(WC_M, src / "a.manifest.json")
    r = run_cli("batch", str(src), "-o", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "nosuch"), "--jobs", "1")
    assert r.exit_code == 0, r.stderr
    warnings = [line for line in r.stdout.splitlines() if line.startswith("warning\t")]
    # Piped, as the README's table has it: the file, then the text (cut -f2 is the file).
    assert any(w.startswith("warning\ta.pb\tcache directory") and "does not exist" in w for w in warnings), r.stdout


def test_a_computed_source_output_is_not_said_to_be_recomputed(tmp_path):
    pb, man = fixture_pb("mixed"), json.loads(open(fixture_manifest("mixed")).read())
    man["computed"] = sorted(man["bindings"])
    path = _manifest(tmp_path, man)
    cache = tmp_path / "c"
    cache.mkdir()
    report = json.loads(run_cli("instrument", pb, "-m", path, "--cache-dir", str(cache), "-o", str(tmp_path / "o.pb"), "--json").stdout)
    read_by_test_stream = {r["var"] for r in report["reads"] if r["via"] == "TestStream"}
    assert read_by_test_stream
    for var in read_by_test_stream:
        assert not any(w.startswith(f"{var!r} is listed as computed") for w in report["warnings"]), report["warnings"]


def test_an_output_extension_that_names_no_format_is_written_binary_and_said(tmp_path):
    out = tmp_path / "out.pbb"
    r = run_cli("instrument", WC, "-m", WC_M, "--cache-dir", str(tmp_path / "cache"), "-o", str(out), "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["format"] == "binary" and out.exists()
    assert any("'.pbb' names no format" in w and "--output-format" in w for w in doc["warnings"]), doc["warnings"]
    for named in ("out.pb", "out"):  # a known extension, or none: nothing to say
        r = run_cli("instrument", WC, "-m", WC_M, "--cache-dir", str(tmp_path / "cache"), "-o", str(tmp_path / named), "--json")
        assert not any("names no format" in w for w in json.loads(r.stdout)["warnings"])


def test_graph_with_the_pipelines_swapped_says_so(tmp_path):
    out = tmp_path / "i.pb"
    assert run_cli("instrument", WC, "-m", WC_M, "--cache-dir", str(tmp_path / "cache"), "-o", str(out)).exit_code == 0
    drawn = tmp_path / "drawn as it says.dot"
    swapped = run_cli("graph", WC, "--against", str(out), "-m", WC_M, "--depth", "2", "-o", str(drawn))
    assert swapped.exit_code == 0, swapped.stderr
    assert "swapped?" in swapped.stderr, swapped.stderr
    # The command it names is the one given, the pipelines the other way round: run as printed, it draws
    # without the warning.
    command = swapped.stderr.rsplit("(", 1)[1].rsplit(")", 1)[0]
    assert command == " ".join(
        shlex.quote(w) for w in ("beaminst", "graph", str(out), "--against", WC, "-m", WC_M, "--depth", "2", "-o", str(drawn))
    ), command
    right = run_cli(*shlex.split(command)[1:])
    assert right.exit_code == 0 and "swapped" not in right.stderr, right.stderr
    assert "against" in drawn.read_text()


def test_batch_names_no_recording_of_root_only_outputs(tmp_path):
    """--allow-empty writes a root only for a pipeline with no source: nothing
    to record, so batch does not suggest running it "to record its sources"."""
    import shutil

    src = tmp_path / "src"
    src.mkdir()
    shutil.copyfile(WC, src / "wc.pb")
    shutil.copyfile(WC_M, src / "wc.manifest.json")
    args = ("batch", str(src), "-o", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c"))
    r = run_cli(*args, "--mode", "background-caching", "--allow-empty")
    assert r.exit_code == 0, r.stderr
    assert _next(r.stdout) == []
    shutil.copyfile(fixture_pb("pubsub_one"), src / "ps.pb")
    shutil.copyfile(fixture_manifest("pubsub_one"), src / "ps.manifest.json")
    r = run_cli(*args, "--mode", "background-caching", "--allow-empty")
    assert _next(r.stdout) == [f"beaminst run {tmp_path / 'out' / 'ps.pb'}  # records its sources"]


def test_a_next_step_names_a_variable_with_a_tab_as_the_shell_reads_it(tmp_path):
    """printable() escapes a tab as \\x09 for display; inside plain single
    quotes the shell takes that literally, and the printed show named another
    variable. Control characters are spelled with bash's $'...' instead."""
    doc = json.loads(open(WC_M).read())
    doc["bindings"] = {"wörds\t1": doc["bindings"]["words"], "it's \\ plain": doc["bindings"]["lines"]}
    man = _manifest(tmp_path, doc)
    r = run_cli("instrument", WC, "-m", man, "--cache-dir", str(tmp_path / "c"), "-o", str(tmp_path / "o.pb"))
    assert r.exit_code == 0, r.stderr
    show = next(s for s in _next(r.stdout) if s.startswith("beaminst show "))
    argv = subprocess.run(["bash", "-c", 'printf "%s\\0" ' + show], capture_output=True, check=True).stdout
    words = argv.decode().split("\0")[:-1]
    assert words[:2] == ["beaminst", "show"] and {"wörds\t1", "it's \\ plain"} <= set(words), words


@pytest.mark.parametrize("text", ["wörds\t1", "soft\u00adhyphen", "nel\u0085", "esc\x1b[31m", "it's \\ \t",
                                  "not utf-8 \udc80\udcff", "wide\u2028\U000e0001", "plain name"])
def test_shell_word_is_read_back_by_bash_as_the_same_bytes(text):
    """``\\xHH`` in $'...' is a byte: characters from U+0080 are spelled so
    that bash gives their UTF-8, and a surrogate escape (a byte of a name that
    is not UTF-8) gives that byte."""
    from beaminst.errors import shell_word

    word = shell_word(text)
    assert word.isprintable()
    got = subprocess.run(["bash", "-c", f"printf %s {word}"], capture_output=True, check=True).stdout
    assert got == os.fsencode(text), (word, got)
