"""``beaminst batch`` ends cleanly and re-runs honestly.

* Processes: a SIGKILLed parent leaves no process behind (workers, the
  forkserver, the resource tracker); SIGTERM stops a batch like Ctrl-C;
  temp files of writers that died are swept by the next run, never a live
  writer's.
* Freshness: an output is skipped only when it was made the way this run
  would make it (mode, options, manifest, cache entries of its own keys).

The real-process tests start the CLI in a session of its own and look for
survivors by session id in /proc (Linux).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CLI_PREFIX, REPO, fixture_manifest, fixture_pb, interruptible, run_cli

from beaminst.batch.freshness import STATE_FILE
from beaminst.batch.sweep import RESULTS_PREFIX
from beaminst.commands import api
from beaminst.graph.validate import validate
from beaminst.model.protoio import load_pipeline
from beaminst.model.tempfiles import TEMP_NAME, pid_alive

needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="looks for processes in /proc (Linux)")

POLL = 0.1
POLLS = 300  # 30 s at most for processes to go; they take well under one


def copies(src: Path, n: int, kinds: tuple[str, ...] = ("wordcount", "cogbk", "windowing")) -> list[str]:
    """n fixture copies with their manifests, flat in src; their names."""
    src.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        name = f"{kind}_{i:03d}.pb"
        shutil.copyfile(fixture_pb(kind), src / name)
        shutil.copyfile(fixture_manifest(kind), src / name.replace(".pb", ".manifest.json"))
        names.append(name)
    return names


def outputs(dest: Path) -> set[str]:
    return {p.name for p in dest.glob("*.pb")} if dest.is_dir() else set()


def batch_json(*args: str) -> dict:
    r = run_cli("batch", *args, "--json")
    assert r.exit_code in (0, 2), r.stderr
    return json.loads(r.stdout)


def by_status(rep: dict, status: str) -> set[str]:
    return {r["file"] for r in rep["results"] if r["status"] == status}


# --- processes ---------------------------------------------------------------------------


def live_in_session(sid: int) -> list[str]:
    """'pid ppid command' of every process of session ``sid`` that is not a zombie."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        state, ppid, _pgrp, session = stat[stat.rindex(")") + 2:].split()[:4]
        if int(session) == sid and state != "Z":
            found.append(f"{entry} {ppid} {cmd[:120]}")
    return found


def start_batch(src: Path, dest: Path, cache: Path, *extra: str) -> subprocess.Popen:
    """``beaminst batch --jobs 2`` in a session of its own; returns once it has
    written a few outputs (so it is mid-run, its pool up)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("BEAMINST_DEBUG", None)
    proc = subprocess.Popen(
        [*CLI_PREFIX, "batch", str(src), "-o", str(dest), "--cache-dir", str(cache), "--jobs", "2", *extra],
        cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        preexec_fn=interruptible,
    )
    deadline = time.monotonic() + 120
    while len(outputs(dest)) < 3:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "the batch wrote nothing"
        time.sleep(0.02)
    return proc


def wait_until_gone(sid: int) -> None:
    for _ in range(POLLS):
        left = live_in_session(sid)
        if not left:
            return
        time.sleep(POLL)
    pytest.fail("processes survived the batch:\n" + "\n".join(left))


@needs_proc
def test_a_zombie_writer_is_dead_and_its_temp_file_is_swept(tmp_path):
    """A writer SIGKILL cut short is a zombie until its new parent reaps it,
    which in a container whose init never reaps is forever; signalling it
    still succeeds. Its temp file must go all the same (this made the SIGKILL
    test below fail wherever the killed workers were not reaped in time)."""
    from beaminst.batch.sweep import sweep
    from beaminst.model.tempfiles import pid_alive

    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        for _ in range(POLLS):
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                break
            time.sleep(POLL)
        os.kill(pid, 0)  # the premise: a zombie can still be signalled
        assert not pid_alive(pid) and pid_alive(os.getpid())
        (tmp_path / "out.pb").write_bytes(b"")
        left = tmp_path / f".out.pb.{pid}.abcd1234.tmp"
        left.write_bytes(b"cut short")
        assert sweep(str(tmp_path), [str(tmp_path / "out.pb")]) == [str(left)]
    finally:
        os.waitpid(pid, 0)


@pytest.mark.slow
@needs_proc
def test_sigkill_of_the_parent_leaves_no_process_and_the_next_run_completes(tmp_path):
    src, dest, cache = tmp_path / "src", tmp_path / "dest", tmp_path / "cache"
    names = copies(src, 240)
    proc = start_batch(src, dest, cache)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    proc.stderr.close()
    wait_until_gone(proc.pid)  # session id == the parent's pid
    written = outputs(dest)
    assert 3 <= len(written) < len(names), "killed mid-run"
    time.sleep(0.5)
    assert outputs(dest) == written  # nobody writes any more

    # The next run finishes the job; outputs the killed run wrote but never
    # recorded are redone, not trusted.
    rep = batch_json(str(src), "-o", str(dest), "--cache-dir", str(cache), "--jobs", "1")
    assert by_status(rep, "ok") == set(names) and rep["totals"]["error"] == 0
    # Nothing left: the temp files of writes SIGKILL cut short carry their dead
    # writer's pid, and the next run swept them.
    left = {p.name for p in dest.iterdir()} - set(names) - {STATE_FILE}
    assert not left, left
    rep = batch_json(str(src), "-o", str(dest), "--cache-dir", str(cache), "--jobs", "1")
    assert by_status(rep, "skipped") == set(names)


@pytest.mark.slow
@needs_proc
@pytest.mark.parametrize(
    ("sig", "group"),
    [(signal.SIGTERM, False), (signal.SIGINT, False), (signal.SIGINT, True), (signal.SIGTERM, True)],
    ids=["SIGTERM", "SIGINT", "Ctrl-C", "SIGTERM-group"],
)
def test_sigterm_stops_like_ctrl_c(sig, group, tmp_path):
    """A clean stop: files being rewritten finish, nothing is half-written, the
    rest never start, and everything written is recorded. SIGTERM to the whole
    group (``kill -- -PGID``, a service manager stopping the cgroup) reaches
    the workers too, which die of it (unlike SIGINT they keep its default: the
    pool terminates a broken round's workers with it): then a worker killed
    mid-write leaves its temp file (never the output), a file a worker wrote
    but could not report is not recorded (one per worker at most), and the
    re-run sweeps the one and writes the other again."""
    src, dest, cache = tmp_path / "src", tmp_path / "dest", tmp_path / "cache"
    names = copies(src, 240)
    proc = start_batch(src, dest, cache)
    if group:  # a terminal's Ctrl-C, or kill -- -PGID: every process of the group, the workers too
        os.killpg(proc.pid, sig)
    else:  # the parent alone, as `kill PID` or a service manager does
        os.kill(proc.pid, sig)
    assert proc.wait(timeout=120) == 2
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert err.strip().splitlines()[-1] == "beaminst: interrupted", err
    assert "Traceback" not in err
    wait_until_gone(proc.pid)
    written = outputs(dest)
    assert 3 <= len(written) < len(names)
    killed = sig == signal.SIGTERM and group
    left = {p.name for p in dest.iterdir()} - written - {STATE_FILE}
    if killed:  # only dead writers' temp files, two at most (--jobs 2)
        assert len(left) <= 2 and all(TEMP_NAME.fullmatch(n) and not pid_alive(int(TEMP_NAME.fullmatch(n)["pid"]))
                                      for n in left), left
    else:
        assert left == set()
    for name in sorted(written)[:5]:
        validate(load_pipeline(str(dest / name))[0])
    # What was written was recorded (files in flight at the signal too): a re-run skips it.
    rep = batch_json(str(src), "-o", str(dest), "--cache-dir", str(cache), "--jobs", "1")
    skipped = by_status(rep, "skipped")
    if killed:
        assert skipped <= written and len(skipped) >= len(written) - 2  # --jobs 2: two in flight at most
    else:
        assert skipped == written
    assert by_status(rep, "ok") == set(names) - skipped
    assert {p.name for p in dest.iterdir()} == {*names, STATE_FILE}  # the re-run swept what the kill left


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_stale_temp_files_of_dead_writers_are_swept_live_ones_kept(tmp_path):
    src, dest, cache = tmp_path / "src", tmp_path / "dest", tmp_path / "cache"
    (name,) = copies(src, 1)
    (src / "sub").mkdir()
    shutil.copyfile(fixture_pb("wordcount"), src / "sub" / "deep.pb")
    shutil.copyfile(fixture_manifest("wordcount"), src / "sub" / "deep.manifest.json")
    dest.mkdir()
    (dest / "sub").mkdir()
    dead, live = dead_pid(), os.getpid()
    uuid = "0123456789abcdef0123456789abcdef"
    swept = [
        f".{name}.{dead}.abcd_123.tmp",  # SIGKILL during write_atomic
        f"sub/.deep.pb.{dead}.zzzzzzzz.tmp",
        f".{STATE_FILE}.{dead}.a1b2c3d4.tmp",
        f"{RESULTS_PREFIX}{dead}-{uuid}-00000-of-00001.jsonl",  # a killed --runner batch
    ]
    kept = [
        f".{name}.{live}.abcd_123.tmp",  # a live writer's
        f".{name}.abcd_123.tmp",  # no pid: whose it is cannot be told
        f".other.pb.{dead}.abcd_123.tmp",  # not a file this batch writes
        f"{RESULTS_PREFIX}{live}-{uuid}-00000-of-00001.jsonl",
        "sub/keep.txt",
    ]
    for rel in swept + kept:
        (dest / rel).write_bytes(b"partial")
    beam_temp = dest / f"beam-temp-{RESULTS_PREFIX}{dead}-{uuid}-{uuid}"
    beam_temp.mkdir()
    (beam_temp / "shard").write_bytes(b"")

    rep = batch_json(str(src), "-o", str(dest), "--cache-dir", str(cache), "--jobs", "1")
    assert rep["totals"]["ok"] == 2
    assert not beam_temp.exists()
    assert [rel for rel in swept if (dest / rel).exists()] == []
    assert [rel for rel in kept if not (dest / rel).exists()] == []


def test_a_worker_applies_the_callers_decompression_cap(tmp_path, monkeypatch):
    """A forkserver worker has the environment the forkserver started with
    (an earlier batch's, in a long-lived process), a runner's worker none of
    the caller's: the cap travels in the job."""
    from beaminst.batch import BatchSpec, plan_batch, rewrite_one
    from beaminst.model import bounded
    from beaminst.options import RewriteOptions

    copies(tmp_path / "src", 1)
    monkeypatch.setenv(bounded.ENV, "10")
    (job,) = plan_batch(BatchSpec(str(tmp_path / "src"), str(tmp_path / "dest"), RewriteOptions(str(tmp_path / "cache")))).jobs
    assert job["max_decompressed_bytes"] == 10
    monkeypatch.setenv(bounded.ENV, str(bounded.DEFAULT_MAX_BYTES))  # what such a worker sees
    res = rewrite_one(job)
    assert res["status"] == "error" and "to more than 10 bytes" in res["error"], res


# --- freshness ---------------------------------------------------------------------------

STREAMS = ("pubsub_one", "mixed")  # both modes apply to these


@pytest.fixture
def tree(tmp_path):
    src, dest, cache = tmp_path / "src", tmp_path / "dest", tmp_path / "cache"
    src.mkdir()
    for kind in (*STREAMS, "wordcount"):
        shutil.copyfile(fixture_pb(kind), src / f"{kind}.pb")
        shutil.copyfile(fixture_manifest(kind), src / f"{kind}.manifest.json")
    return src, dest, cache


def args_of(tree, *extra: str) -> tuple[str, ...]:
    src, dest, cache = tree
    return (str(src), "-o", str(dest), "--cache-dir", str(cache), "--jobs", "1", *extra)


def test_another_mode_is_not_up_to_date(tree):
    src = tree[0]
    streams = {f"{k}.pb" for k in STREAMS}
    (src / "wordcount.pb").unlink()  # background-caching refuses it (no unbounded source)
    assert by_status(batch_json(*args_of(tree)), "ok") == streams
    bg = ("--mode", "background-caching")
    assert by_status(batch_json(*args_of(tree, *bg)), "ok") == streams
    assert by_status(batch_json(*args_of(tree, *bg)), "skipped") == streams
    assert by_status(batch_json(*args_of(tree)), "ok") == streams


@pytest.mark.parametrize(
    "flags",
    [
        ("--unbounded-urn", "beam:transform:teststream:v1"),
        ("--infer-unbounded",),
        ("--environment-type", "DOCKER", "--environment-config", "example/python:latest"),
        ("--target-sdk", "2.77.0"),
        ("-m", "SHARED"),
        ("--cache-dir", "OTHER"),
    ],
    ids=lambda f: f[0],
)
def test_options_that_change_the_output_are_not_up_to_date(flags, tree):
    src, _, cache = tree
    (src / "mixed.pb").unlink()
    (src / "pubsub_one.pb").unlink()
    shutil.copyfile(fixture_manifest("wordcount"), src.parent / "shared.json")
    flags = tuple({"SHARED": str(src.parent / "shared.json"), "OTHER": str(cache) + "-other"}.get(f, f) for f in flags)
    assert by_status(batch_json(*args_of(tree)), "ok") == {"wordcount.pb"}
    assert by_status(batch_json(*args_of(tree, *flags)), "ok") == {"wordcount.pb"}
    assert by_status(batch_json(*args_of(tree, *flags)), "skipped") == {"wordcount.pb"}
    assert by_status(batch_json(*args_of(tree)), "ok") == {"wordcount.pb"}


def test_allow_empty_is_an_option_that_counts(tree):
    src = tree[0]
    (src / "mixed.pb").unlink()
    (src / "pubsub_one.pb").unlink()
    bg = ("--mode", "background-caching")
    assert by_status(batch_json(*args_of(tree, *bg)), "error") == {"wordcount.pb"}
    assert by_status(batch_json(*args_of(tree, *bg, "--allow-empty")), "ok") == {"wordcount.pb"}
    assert by_status(batch_json(*args_of(tree, *bg, "--allow-empty")), "skipped") == {"wordcount.pb"}


def test_an_output_replaced_behind_the_record_is_redone(tree):
    dest = tree[1]
    batch_json(*args_of(tree))
    # What a killed run in another mode leaves: the file replaced, the record not updated.
    replacement = dest / "replacement"
    shutil.copyfile(dest / "mixed.pb", replacement)
    os.replace(replacement, dest / "mixed.pb")
    rep = batch_json(*args_of(tree))
    assert by_status(rep, "ok") == {"mixed.pb"} and by_status(rep, "skipped") == {"pubsub_one.pb", "wordcount.pb"}


def test_a_recording_redoes_only_the_pipelines_that_read_it(tree):
    """Instrumenting a streaming pipeline creates ``full/`` (Beam's
    StreamingCache does): the next run still skips everything. A recording of
    one pipeline's source then redoes that pipeline only."""
    from apache_beam.portability.api import beam_interactive_api_pb2 as iapi
    from apache_beam.runners.interactive.caching.streaming_cache import StreamingCache

    src, _, cache = tree
    first = batch_json(*args_of(tree))
    assert first["totals"]["ok"] == 3 and (cache / "full").is_dir()
    assert batch_json(*args_of(tree))["totals"]["skipped"] == 3
    analysis = api.analyze_files(str(src / "pubsub_one.pb"), str(src / "pubsub_one.manifest.json"))
    (key,) = [c.cache_key for c in analysis.cacheables.values() if c.synthetic]
    StreamingCache(str(cache)).write([iapi.TestStreamFileHeader(tag=key)], "full", key)
    rep = batch_json(*args_of(tree))
    assert by_status(rep, "skipped") == {"mixed.pb", "wordcount.pb"}
    assert "pubsub_one.pb" not in by_status(rep, "skipped")


def test_an_unreadable_record_means_redo_and_is_rewritten(tree):
    dest = tree[1]
    batch_json(*args_of(tree))
    for junk in (b"", b"\xff garbage", b'{"version": 1, "outputs": {"mixed.pb": 7}}', b"[" * 100_000):
        (dest / STATE_FILE).write_bytes(junk)
        rep = batch_json(*args_of(tree))
        assert rep["totals"]["ok"] == 3, junk[:20]
        assert json.loads((dest / STATE_FILE).read_text())["version"] == 1
    assert batch_json(*args_of(tree))["totals"]["skipped"] == 3


def test_the_record_keeps_other_files_and_drops_deleted_outputs(tree):
    src, dest, _ = tree
    batch_json(*args_of(tree))
    record = json.loads((dest / STATE_FILE).read_text())
    assert sorted(record["outputs"]) == ["mixed.pb", "pubsub_one.pb", "wordcount.pb"]
    (dest / "mixed.pb").unlink()
    pattern = str(src / "wordcount*.pb")  # a run over part of SRC leaves the others' records alone
    rep = batch_json(pattern, *args_of(tree)[1:], "--force")
    assert by_status(rep, "ok") == {"wordcount.pb"}
    assert sorted(json.loads((dest / STATE_FILE).read_text())["outputs"]) == ["pubsub_one.pb", "wordcount.pb"]


def test_help_promises_no_sdk_import_still(tmp_path):
    """The batch package imports only the standard library (the CLI's --help
    and the workers rely on it)."""
    # What the import adds: google-cloud-aiplatform (in apache-beam[gcp]) imports the
    # 'google' namespace package at interpreter start, from a .pth file.
    code = (
        "import sys; before = set(sys.modules); import beaminst.batch; "
        "print(sorted({m.split('.')[0] for m in set(sys.modules) - before} & {'apache_beam', 'rich', 'google'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.strip() == "[]"


def test_a_skip_repeats_what_the_run_that_wrote_the_output_reported(tree):
    """A skipped file's row keeps its counts and its own warnings ("nothing
    recorded yet" stays visible until a recording arrives); what was about the
    cache directory as a whole (missing then, made since) is not repeated,
    and the totals count this run's work."""
    def own(warning: str) -> bool:  # the rule, spelled independently of the code's
        return not (warning.startswith(("cache: ", "could not create ")) or " does not exist: " in warning)

    first = batch_json(*args_of(tree))
    again = batch_json(*args_of(tree))
    was = {r["file"]: r for r in first["results"]}
    assert by_status(again, "skipped") == set(was)
    for r in again["results"]:
        before = was[r["file"]]
        assert (r["writes"], r["reads"], r["pruned"]) == (before["writes"], before["reads"], before["pruned"])
        assert r["warnings"] == [w for w in before["warnings"] if own(w)]
    assert any("does not exist" in w for r in first["results"] for w in r["warnings"])
    assert not any("does not exist" in w for r in again["results"] for w in r["warnings"])
    assert any("nothing recorded yet" in w for r in again["results"] for w in r["warnings"])
    assert again["totals"]["writes"] == 0 and first["totals"]["writes"] > 0


def test_a_record_from_before_reports_kept_its_skips_still_skip(tree):
    """Records written before they kept reports (or edited by hand) still
    vouch for their outputs; the rows then carry no counts or warnings."""
    dest = tree[1]
    batch_json(*args_of(tree))
    state = json.loads((dest / STATE_FILE).read_text())
    for i, entry in enumerate(state["outputs"].values()):
        if i == 0:
            del entry["reported"]
        else:
            entry["reported"] = {"writes": "3", "warnings": [1]}
    (dest / STATE_FILE).write_text(json.dumps(state))
    again = batch_json(*args_of(tree))
    assert by_status(again, "skipped") == {r["file"] for r in again["results"]}
    assert all(r["writes"] is None and r["warnings"] == [] for r in again["results"])
