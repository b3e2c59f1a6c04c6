"""``beaminst batch``: many files, in parallel, one bad file never stops the rest.

CI budget (2 cores): the 50-file tree runs once plus one re-run; every other
case uses a handful of files, in-process (``--jobs 1``) where the pool itself
is not under test, since each pool worker starts once (and imports the SDK when a template is not stored).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
from pathlib import Path

import pytest
from conftest import CORRUPT, EMPTY_SHARD, fixture_manifest, fixture_pb, run_cli

from beaminst.batch import discover
from beaminst.batch.freshness import STATE_FILE
from beaminst.commands import api
from beaminst.graph.validate import validate
from beaminst.model.protoio import load_pipeline

KINDS = ("wordcount", "multi_output", "side_inputs", "flatten_gbk", "cogbk", "nested_composites", "windowing")
RESULT_FIELDS = {
    "file", "input", "output", "manifest", "status", "writes", "reads", "pruned", "warnings", "error", "seconds",
}
TOTAL_FIELDS = {"files", "ok", "skipped", "error", "writes", "reads", "pruned", "seconds"}


def make_tree(root: Path, n: int) -> list[str]:
    """n renamed fixture copies (with manifests) in nested subdirectories;
    returns their paths relative to root, '/'-separated."""
    rels = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        sub = Path() if i % 5 == 0 else Path(f"team{i % 3}") / (f"week{i % 2}" if i % 4 else "")
        (root / sub).mkdir(parents=True, exist_ok=True)
        name = f"{kind}_{i:02d}"
        shutil.copyfile(fixture_pb(kind), root / sub / f"{name}.pb")
        shutil.copyfile(fixture_manifest(kind), root / sub / f"{name}.manifest.json")
        rels.append((sub / f"{name}.pb").as_posix())
    return rels


def add_corrupt(root: Path) -> list[str]:
    (root / "broken").mkdir(parents=True, exist_ok=True)
    names = sorted(p.name for p in CORRUPT.iterdir())
    for name in names:
        shutil.copyfile(CORRUPT / name, root / "broken" / name)
    return [f"broken/{name}" for name in names]


def tree_state(root: Path) -> dict[str, str | None]:
    """Every entry under root: file -> sha256, directory -> None."""
    state: dict[str, str | None] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        state[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
    return state


def files_under(root: Path) -> set[str]:
    """The files under root, minus batch's freshness record."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {STATE_FILE}


def batch_json(*args: str):
    r = run_cli("batch", *args, "--json")
    return r, json.loads(r.stdout)


def by_status(rep: dict, status: str) -> set[str]:
    return {r["file"] for r in rep["results"] if r["status"] == status}


def test_fifty_files_plus_corrupt_ones_then_rerun_skips(tmp_path):
    src, dest, cache = tmp_path / "src", tmp_path / "dest", tmp_path / "cache"
    good = make_tree(src, 50)
    bad = add_corrupt(src)
    before = tree_state(src)

    r, rep = batch_json(str(src), "-o", str(dest), "--cache-dir", str(cache), "--jobs", "2")
    assert r.exit_code == 2, r.stderr
    assert set(rep) == {"mode", "src", "dest", "cache_dir", "runner", "jobs", "results", "totals"}
    assert rep["mode"] == "instrument" and rep["runner"] is None and rep["jobs"] == 2
    assert set(rep["totals"]) == TOTAL_FIELDS
    assert all(set(res) == RESULT_FIELDS for res in rep["results"])
    assert [res["file"] for res in rep["results"]] == sorted(good + bad)
    assert by_status(rep, "ok") == set(good)
    assert by_status(rep, "error") == set(bad)
    t = rep["totals"]
    assert (t["files"], t["ok"], t["skipped"], t["error"]) == (len(good) + len(bad), 50, 0, len(bad))
    assert t["writes"] == sum(res["writes"] for res in rep["results"] if res["status"] == "ok") > 0

    # Each error: one line naming its file, also on stderr as `beaminst: <path>: <problem>`.
    errors = [res for res in rep["results"] if res["status"] == "error"]
    for res in errors:
        assert res["error"].startswith(str(src / res["file"]) + ": ") and "\n" not in res["error"]
        assert res["writes"] is None
    err_lines = [line for line in r.stderr.splitlines() if line.startswith("beaminst: ")]
    assert sorted(err_lines) == sorted(f"beaminst: {res['error']}" for res in errors)

    # Mirrored layout, nothing else in DEST (no temp files), SRC untouched.
    assert files_under(dest) == set(good)
    for res in rep["results"]:
        if res["status"] == "ok":
            assert res["output"] == str(dest / res["file"]) and res["writes"] > 0
            assert res["manifest"] == str(src / res["file"]).removesuffix(".pb") + ".manifest.json"
    for rel in good[:: len(KINDS) + 1]:  # a spread of kinds: each output is a valid pipeline
        validate(load_pipeline(str(dest / rel))[0])
    assert tree_state(src) == before
    mtimes = {rel: (dest / rel).stat().st_mtime_ns for rel in good}

    # Re-run: every good output is up to date; the corrupt files fail again.
    r2, rep2 = batch_json(str(src), "-o", str(dest), "--cache-dir", str(cache), "--jobs", "2")
    assert r2.exit_code == 2
    assert by_status(rep2, "skipped") == set(good) and by_status(rep2, "error") == set(bad)
    assert {rel: (dest / rel).stat().st_mtime_ns for rel in good} == mtimes
    assert tree_state(src) == before


def test_reuse_reads_back_what_is_cached_as_instrument_reuse_does(tmp_path):
    """--reuse in every file, byte for byte what ``instrument --reuse`` writes;
    the freshness record tells a --reuse output from a plain one, and a cache
    entry appearing for one of a file's keys redoes that file (with --reuse it
    changes what is read)."""
    src, dest, cache = tmp_path / "src", tmp_path / "dest", tmp_path / "cache"
    a, b = make_tree(src, 2)
    args = (str(src), "-o", str(dest), "--cache-dir", str(cache), "--jobs", "1")
    _, plain = batch_json(*args)
    assert by_status(plain, "ok") == {a, b} and all(r["reads"] == 0 for r in plain["results"])

    # In a (a word count), "words" is now cached under its content-derived key: what counts it reads it back.
    assert a.startswith("wordcount")
    man_a = str(src / a.replace(".pb", ".manifest.json"))
    words = next(c for c in api.analyze_files(str(src / a), man_a).cacheables.values() if c.var == "words")
    (cache / "full").mkdir(parents=True)
    (cache / "full" / f"{words.cache_key}-00000-of-00001").write_bytes(EMPTY_SHARD)
    _, reused = batch_json(*args, "--reuse")
    # Both redone (made another way than the record says); only a reads.
    assert by_status(reused, "ok") == {a, b}
    reads = {r["file"]: r["reads"] for r in reused["results"]}
    assert reads[a] >= 1 and reads[b] == 0, reads
    single = tmp_path / "single.pb"
    r = run_cli("instrument", str(src / a), "-m", man_a, "--cache-dir", str(cache), "--reuse", "-o", str(single))
    assert r.exit_code == 0, r.stderr
    assert (dest / a).read_bytes() == single.read_bytes()

    _, again = batch_json(*args, "--reuse")
    assert by_status(again, "skipped") == {a, b}
    assert {r["file"]: r["reads"] for r in again["results"]} == reads  # a skip repeats the run that wrote it
    # An entry for another of a's keys alone redoes a (with --reuse it is read back too), not b.
    counts = next(c for c in api.analyze_files(str(src / a), man_a).cacheables.values() if c.var == "counts")
    (cache / "full" / f"{counts.cache_key}-00000-of-00001").write_bytes(EMPTY_SHARD)
    _, more = batch_json(*args, "--reuse")
    assert by_status(more, "ok") == {a} and by_status(more, "skipped") == {b}
    reads = {r["file"]: r["reads"] for r in more["results"]}
    assert reads[a] > 0, reads
    _, back = batch_json(*args)  # without --reuse: made another way again
    assert by_status(back, "ok") == {a, b} and all(r["reads"] == 0 for r in back["results"])


def test_skip_rules_force_and_human_table(tmp_path):
    src, dest, cache = tmp_path / "src", tmp_path / "dest", tmp_path / "cache"
    a, b = make_tree(src, 2)
    args = (str(src), "-o", str(dest), "--cache-dir", str(cache), "--jobs", "1")

    r = run_cli("batch", *args)
    assert r.exit_code == 0, r.stderr
    assert "2 ok, 0 skipped, 0 failed of 2 file(s)" in r.stdout
    # Piped, the table is one ``file`` record per file: path, status, writes, reads, pruned, seconds, reason.
    rows = {f[1]: f[2:6] for f in (line.split("\t") for line in r.stdout.splitlines()) if f[0] == "file"}
    assert rows[a][0] == "ok" and rows[a][1].isdigit() and rows[a][3].isdigit()

    r = run_cli("batch", *args)
    assert r.exit_code == 0 and "0 ok, 2 skipped" in r.stdout
    # A skipped row says why, and how to redo it; its counts repeat the run that wrote it.
    rows = {f[1]: f[2:] for f in (line.split("\t") for line in r.stdout.splitlines()) if f[0] == "file"}
    assert rows[a][0] == "skipped" and rows[a][1].isdigit() and rows[a][4] == ""
    assert rows[a][5] == "up to date (--force rewrites it)"

    # A manifest changed after the output was written: only that file is redone.
    man_b = src / b.replace(".pb", ".manifest.json")
    future = (dest / b).stat().st_mtime + 10
    os.utime(man_b, (future, future))
    _, rep = batch_json(*args)
    assert by_status(rep, "ok") == {b} and by_status(rep, "skipped") == {a}

    _, rep = batch_json(*args, "--force")
    assert by_status(rep, "ok") == {a, b}

    # Cache entries of no key of theirs (and full/ itself appearing) change nothing...
    (cache / "full").mkdir(parents=True)
    (cache / "full" / "unrelated-key").write_bytes(b"")
    _, rep = batch_json(*args)
    assert by_status(rep, "skipped") == {a, b}
    # ...an entry for one of b's keys changes what instrument plans for b only.
    key = next(c.cache_key for c in api.analyze_files(str(src / b), str(man_b)).cacheables.values())
    (cache / "full" / f"{key}-00000-of-00001").write_bytes(EMPTY_SHARD)
    _, rep = batch_json(*args)
    assert by_status(rep, "ok") == {b} and by_status(rep, "skipped") == {a}


def test_beam_runner_matches_local_pool_byte_for_byte(tmp_path):
    src, cache = tmp_path / "src", tmp_path / "cache"
    good = make_tree(src, len(KINDS))
    # Other formats: the output format follows the (mirrored) extension.
    (src / "formats").mkdir()
    for ext in (".textproto", ".json"):
        shutil.copyfile(str(fixture_pb("wordcount")).replace(".pb", ext), src / "formats" / f"wc{ext}")
        shutil.copyfile(fixture_manifest("wordcount"), src / "formats" / f"wc{ext}".replace(ext, ".manifest.json"))
        good.append(f"formats/wc{ext}")
    shutil.copyfile(CORRUPT / "garbage.pb", src / "formats" / "garbage.pb")
    before = tree_state(src)

    r_local, local = batch_json(str(src), "-o", str(tmp_path / "local"), "--cache-dir", str(cache), "--jobs", "2")
    r_beam, beam = batch_json(
        str(src), "-o", str(tmp_path / "beam"), "--cache-dir", str(cache), "--runner", "DirectRunner"
    )
    assert r_local.exit_code == r_beam.exit_code == 2, r_beam.stderr
    assert beam["runner"] == "DirectRunner" and beam["jobs"] is None
    assert by_status(beam, "ok") == by_status(local, "ok") == set(good)
    assert by_status(beam, "error") == {"formats/garbage.pb"}

    def comparable(rep):
        return [{k: v for k, v in res.items() if k not in ("seconds", "output")} for res in rep["results"]]

    assert comparable(beam) == comparable(local)
    # The results files and Beam's temp directory are gone: DEST holds outputs only.
    assert files_under(tmp_path / "beam") == files_under(tmp_path / "local") == set(good)
    hidden = [p.name for p in (tmp_path / "beam").iterdir() if p.name.startswith((".", "beam-temp"))]
    assert hidden == [STATE_FILE]
    for rel in good:
        assert (tmp_path / "beam" / rel).read_bytes() == (tmp_path / "local" / rel).read_bytes(), rel
    assert load_pipeline(str(tmp_path / "beam" / "formats" / "wc.json"))[1] == "json"
    assert load_pipeline(str(tmp_path / "beam" / "formats" / "wc.textproto"))[1] == "text"
    # Same bytes as the single-file command.
    single = tmp_path / "single.pb"
    assert run_cli("instrument", str(src / good[0]), "-m", fixture_manifest(KINDS[0]),
                   "--cache-dir", str(cache), "-o", str(single)).exit_code == 0
    assert single.read_bytes() == (tmp_path / "beam" / good[0]).read_bytes()
    assert tree_state(src) == before


@pytest.mark.parametrize("kind", ["file", "fifo", "device"])
def test_a_destination_that_is_not_a_directory_is_one_line_naming_it(kind, tmp_path):
    """Not click's "Directory 'X' is a file" usage error: one line naming the
    path, and nothing created or touched."""
    src = tmp_path / "src"
    make_tree(src, 1)
    dest = {"file": tmp_path / "afile", "fifo": tmp_path / "fifo", "device": Path(os.devnull)}[kind]
    if kind == "file":
        dest.write_bytes(b"keep me")
    elif kind == "fifo":
        os.mkfifo(dest)
    r = run_cli("batch", str(src), "-o", str(dest), "--cache-dir", str(tmp_path / "c"))
    assert r.exit_code == 2
    assert r.stderr == f"beaminst: {dest}: is not a directory (batch writes one output per pipeline into it)\n", r.stderr
    assert not (tmp_path / "c").exists()
    if kind == "file":
        assert dest.read_bytes() == b"keep me"


@pytest.mark.parametrize("where", ["same", "inside", "deeper", "output_lands_in_src"])
def test_destination_in_source_is_refused(where, tmp_path):
    if where == "output_lands_in_src":
        # SRC inside DEST: DEST/src/x.pb would be SRC's own src/x.pb.
        dest = tmp_path / "d"
        src = dest / "src"
        (src / "src").mkdir(parents=True)
        shutil.copyfile(fixture_pb("wordcount"), src / "src" / "x.pb")
    else:
        src = tmp_path / "src"
        make_tree(src, 1)
        dest = {"same": src, "inside": src / "out", "deeper": src / "a" / "b"}[where]
    before = tree_state(src)
    r = run_cli("batch", str(src), "-o", str(dest), "--cache-dir", str(tmp_path / "c"))
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    expected = {
        "same": "destination is the source directory",
        "inside": "destination is inside the source directory",
        "deeper": "destination is inside the source directory",
        "output_lands_in_src": f"output {dest / 'src' / 'x.pb'} would be written into the source directory",
    }[where]
    assert len(lines) == 1 and expected in lines[0] and lines[0].startswith(f"beaminst: {dest}: "), lines
    assert not (tmp_path / "c").exists()
    assert tree_state(src) == before


@pytest.mark.parametrize("src_form", ["file", "glob"])
def test_a_file_or_glob_src_names_the_directory_it_finds_files_in(src_form, tmp_path):
    """SRC a file or a glob: its files' directory is the source directory,
    and the refusal says so (a bare "inside the source directory ." read as
    nonsense when SRC was one file)."""
    src = tmp_path / "src"
    (name,) = make_tree(src, 1)
    given = str(src / name) if src_form == "file" else str(src / "*.pb")
    r = run_cli("batch", given, "-o", str(src / "out"), "--cache-dir", str(tmp_path / "c"))
    assert r.exit_code == 2
    (line,) = r.stderr.splitlines()
    assert line == (
        f"beaminst: {src / 'out'}: destination is inside the source directory {src} "
        f"(where SRC {shlex.quote(given)} finds its files); batch never writes into its source"
    ), line
    assert not (src / "out").exists()


@pytest.mark.skipif(
    not hasattr(api, "background_caching_files"),
    reason="api.background_caching_files (the background-caching command) is not in this tree yet",
)
def test_background_caching_mode(tmp_path):
    src, dest, cache = tmp_path / "src", tmp_path / "dest", tmp_path / "cache"
    (src / "streams").mkdir(parents=True)
    for name in ("pubsub_one", "pubsub_two", "mixed", "wordcount"):
        shutil.copyfile(fixture_pb(name), src / "streams" / f"{name}.pb")
        shutil.copyfile(fixture_manifest(name), src / "streams" / f"{name}.manifest.json")
    r, rep = batch_json(
        str(src), "-o", str(dest), "--cache-dir", str(cache), "--mode", "background-caching", "--jobs", "1"
    )
    assert r.exit_code == 2
    assert rep["mode"] == "background-caching"
    ok = {"streams/pubsub_one.pb", "streams/pubsub_two.pb", "streams/mixed.pb"}
    assert by_status(rep, "ok") == ok and files_under(dest) == ok
    (err,) = [res["error"] for res in rep["results"] if res["status"] == "error"]
    assert err.startswith(str(src / "streams" / "wordcount.pb")) and "no unbounded source" in err
    single = tmp_path / "single.pb"
    assert run_cli("background-caching", fixture_pb("mixed"), "-m", fixture_manifest("mixed"),
                   "--cache-dir", str(cache), "-o", str(single)).exit_code == 0
    assert single.read_bytes() == (dest / "streams" / "mixed.pb").read_bytes()


def test_glob_source_and_shared_manifest(tmp_path):
    src, dest = tmp_path / "in", tmp_path / "out"
    for rel in ("x/wc.pb", "x/y/wc.pb", "x/y/wc.textproto"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(fixture_pb("wordcount"), src / rel)
    r, rep = batch_json(
        str(src / "x" / "**" / "*.pb"), "-o", str(dest), "--cache-dir", str(tmp_path / "c"),
        "-m", fixture_manifest("wordcount"), "--jobs", "1",
    )
    assert r.exit_code == 0, r.stderr
    # Relative to the directory before the first wildcard; the .textproto is not matched.
    assert by_status(rep, "ok") == {"wc.pb", "y/wc.pb"} == files_under(dest)
    assert {res["manifest"] for res in rep["results"]} == {fixture_manifest("wordcount")}
    assert all(res["writes"] == 4 for res in rep["results"])


def test_which_files_count_as_pipelines(tmp_path):
    for rel in ("a.pb", "b.binpb", "c.textproto", "d.pbtxt", "e.txtpb", "f.json", "f.manifest.json",
                "g.txt", "h.bin", "README.md", ".hidden.pb", ".git/x.pb", "sub/i.PB"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    root, rels = discover(str(tmp_path))
    assert root == str(tmp_path)
    assert rels == ["a.pb", "b.binpb", "c.textproto", "d.pbtxt", "e.txtpb", "f.json", "sub/i.PB"]


@pytest.mark.parametrize(
    "args,needle",
    [
        (("--cache-dir", "C"), "no pipeline files found"),
        ((), "needs --cache-dir"),
        (("--cache-dir", "C", "--pipeline-arg=--foo"), "only applies with --runner"),
        (("--cache-dir", "C", "--allow-empty"), "only applies with --mode background-caching"),
        (("--cache-dir", "C", "--mode", "background-caching", "--reuse"), "--reuse only applies with --mode instrument"),
        (("--cache-dir", "C", "-m", "missing.json"), "missing.json"),
    ],
)
def test_batch_wide_problems_exit_2_before_any_work(args, needle, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    if needle != "no pipeline files found":
        make_tree(src, 1)
    args = tuple(str(tmp_path / a) if a in ("C", "missing.json") else a for a in args)
    r = run_cli("batch", str(src), "-o", str(tmp_path / "out"), *args)
    assert r.exit_code == 2
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_help_has_examples_and_imports_no_sdk():
    from conftest import run_python

    probe = (
        "import sys\n"
        "from beaminst.cli import main\n"
        "try:\n"
        "    main(['batch', '--help'], standalone_mode=False)\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('BEAM=' + str(any(m.startswith('apache_beam') for m in sys.modules)))\n"
    )
    proc = run_python("-c", probe)
    assert proc.returncode == 0, proc.stderr
    assert "Examples:" in proc.stdout and "beaminst batch exports/" in proc.stdout
    assert "[instrument|background-caching]" in proc.stdout
    assert "BEAM=False" in proc.stdout


class _KillsItsWorker:
    """Unpickles as ``os._exit(13)``: a worker that dies mid-batch."""

    def __reduce__(self):
        return (os._exit, (13,))


def test_a_file_that_kills_its_worker_does_not_take_the_others_down(tmp_path):
    from beaminst.batch import BatchSpec, plan_batch, run_local
    from beaminst.options import RewriteOptions

    src = tmp_path / "src"
    rels = make_tree(src, 3)
    plan = plan_batch(BatchSpec(str(src), str(tmp_path / "out"), RewriteOptions(str(tmp_path / "c"))))
    jobs = list(plan.jobs)
    jobs[1] = {**jobs[1], "rules": _KillsItsWorker()}
    results = [o["result"] for o in run_local(jobs, 2, lambda outcome: None)]
    files = [job["file"] for job in jobs]
    assert sorted(files) == sorted(rels)
    status = {r["file"]: r["status"] for r in results}
    assert status == {files[0]: "ok", files[1]: "error", files[2]: "ok"}
    (err,) = [r["error"] for r in results if r["status"] == "error"]
    assert err.startswith(jobs[1]["input"] + ": a worker process died")
    assert files_under(tmp_path / "out") == {files[0], files[2]}


def test_the_table_escapes_file_names(tmp_path):
    """File names come from SRC: control characters are escaped, rich markup is shown as typed."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a\x1b]0;title\x07.pb", "[bold]b.pb"):
        shutil.copyfile(fixture_pb("wordcount"), src / name)
    r = run_cli(
        "batch", str(src), "-o", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c"), "--jobs", "1",
        "-m", fixture_manifest("wordcount"),
    )
    assert r.exit_code == 0, r.stderr
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout
    assert "a\\x1b]0;title\\x07.pb" in r.stdout and "[bold]b.pb" in r.stdout


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"options": ""}, "needs --cache-dir"),
        ({"mode": "nope"}, "unknown mode 'nope'"),
        ({"pipeline_args": ("--foo",)}, "--pipeline-arg only applies with --runner"),
        ({"allow_empty": True}, "--allow-empty only applies with --mode background-caching"),
        ({"mode": "background-caching", "reuse": True}, "--reuse only applies with --mode instrument"),
        ({"manifest": "-"}, "--manifest: batch cannot read the manifest from stdin"),
    ],
)
def test_the_batch_spec_refuses_what_the_cli_refuses(kwargs, needle, tmp_path):
    """The same checks, the same words, for a library caller: they live with the spec."""
    from beaminst.batch import BatchSpec
    from beaminst.errors import BeaminstError
    from beaminst.options import RewriteOptions

    cache = kwargs.pop("options", str(tmp_path / "c"))
    options = RewriteOptions(cache, allow_empty=kwargs.pop("allow_empty", False))
    with pytest.raises(BeaminstError) as e:
        BatchSpec(str(tmp_path / "src"), str(tmp_path / "out"), options, **kwargs)
    assert needle in str(e.value)


def test_a_job_analyzes_its_file_once(tmp_path, monkeypatch):
    """The freshness record's cache keys come from the analysis the rewrite
    planned from, not from a second analysis of the same file."""
    from beaminst.batch import BatchSpec, plan_batch, work
    from beaminst.options import RewriteOptions

    src = tmp_path / "src"
    make_tree(src, 1)
    (job,) = plan_batch(BatchSpec(str(src), str(tmp_path / "out"), RewriteOptions(str(tmp_path / "c")))).jobs
    calls = []
    analyze_files = api.analyze_files
    monkeypatch.setattr(api, "analyze_files", lambda *a, **k: calls.append(a) or analyze_files(*a, **k))
    outcome = work(job)
    assert outcome["result"]["status"] == "ok", outcome["result"]["error"]
    assert len(calls) == 1
    keys = sorted(c.cache_key for c in analyze_files(job["input"], job["manifest"]).cacheables.values())
    assert outcome["cache_keys"] == keys


def test_options_survive_the_job_wire_format():
    """A Job is plain JSON (pickled for the pool, encoded for a runner, hashed
    by the freshness record): the typed options come back equal."""
    from beaminst.options import RewriteOptions, SourceRules, WorkerOptions

    options = RewriteOptions("/c", "localhost:1", True, WorkerOptions("PROCESS", '{"command": "b"}', "2.60.0"), True)
    rules = SourceRules(["beam:transform:teststream:v1"], infer=True)
    assert RewriteOptions.from_json(json.loads(json.dumps(options.to_json()))) == options
    assert SourceRules.from_json(json.loads(json.dumps(rules.to_json()))) == rules
    assert rules.urns == ("beam:transform:teststream:v1",)  # any iterable, kept as a tuple
    with pytest.raises(TypeError):
        SourceRules("beam:transform:teststream:v1")  # one string is not a collection of URNs


def test_a_failed_file_leaves_no_empty_directory_in_dest(tmp_path):
    src, dest, cache = tmp_path / "src", tmp_path / "dest", tmp_path / "cache"
    make_tree(src, 2)  # wordcount_00.pb at the top, one more under team1/week1/
    broken = add_corrupt(src)
    (dest / "mine" / "empty").mkdir(parents=True)  # the user's own: left alone
    r, rep = batch_json(str(src), "-o", str(dest), "--cache-dir", str(cache))
    assert r.exit_code == 2
    assert by_status(rep, "error") == set(broken)
    dirs = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_dir()}
    assert dirs == {"mine", "mine/empty", "team1", "team1/week1"}  # no broken/: nothing was written there
    assert files_under(dest) == {r["file"] for r in rep["results"] if r["status"] == "ok"}


def test_a_batch_that_writes_nothing_leaves_no_destination_it_made(tmp_path):
    """Every file failed: DEST (and the parents it needed) were made by this
    batch and hold nothing, so they go too; a DEST that was there stays."""
    src, cache = tmp_path / "src", tmp_path / "cache"
    broken = add_corrupt(src)
    dest = tmp_path / "nodir" / "deeper"
    r, rep = batch_json(str(src), "-o", str(dest), "--cache-dir", str(cache))
    assert r.exit_code == 2 and by_status(rep, "error") == set(broken)
    assert not (tmp_path / "nodir").exists()
    dest.mkdir(parents=True)
    r, _ = batch_json(str(src), "-o", str(dest), "--cache-dir", str(cache))
    assert r.exit_code == 2 and dest.is_dir()
