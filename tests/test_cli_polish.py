"""Newcomer-review fixes to the CLI's edges: a reader that leaves the pipe
early, a failing job under ``run``, and the next steps ``run`` and
``instrument`` print."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import CLI_PREFIX, REPO, fixture_manifest, fixture_pb

# --- a closed pipe on stdout: exit 141, nothing on stderr ---------------------------------


def run_into_closed_pipe(*args: str) -> subprocess.CompletedProcess[str]:
    """``beaminst ARGS`` with stdout a pipe whose reader has already gone (as
    ``| head -c1`` once head is done, but with no race: every write fails)."""
    read, write = os.pipe()
    os.close(read)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("BEAMINST_DEBUG", None)
    try:
        return subprocess.run(
            [*CLI_PREFIX, *args], stdout=write, stderr=subprocess.PIPE, text=True,
            cwd=str(REPO), env=env, timeout=120,
        )
    finally:
        os.close(write)


@pytest.mark.parametrize(
    "args",
    [
        ("analyze", "WC", "-m", "WCM", "--json"),  # the report, flushed at the end of the command
        ("analyze", "WC", "-m", "WCM"),  # human output, piped: records
        ("diff", "WC", "COGBK"),  # a command that exits 1 of its own, with its output still buffered
        ("instrument", "WC", "-m", "WCM", "--cache-dir", "CACHE", "-o", "-"),  # a binary proto to stdout
        ("--help",),  # click's own output, while parsing
        ("show", "--help"),
        ("--version",),
    ],
)
def test_a_reader_gone_is_exit_141_and_silent(args, tmp_path):
    names = {"WC": fixture_pb("wordcount"), "WCM": fixture_manifest("wordcount"),
             "COGBK": fixture_pb("cogbk"), "CACHE": str(tmp_path / "cache")}
    proc = run_into_closed_pipe(*(names.get(a, a) for a in args))
    assert proc.returncode == 141, proc.stderr
    assert proc.stderr == ""  # no "Exception ignored ... BrokenPipeError", no error line


@pytest.mark.parametrize("what", ["diff --json", "instrument -o -"])
def test_a_reader_gone_mid_write_is_exit_141(what, tmp_path):
    """The reader takes one byte of an output larger than the pipe, then
    leaves while beaminst is blocked writing the rest (``| head -c1``). A
    buffered write cut short there returns a short count instead of raising:
    ``diff --json`` used to exit 1, as if every difference had been read."""
    instrumented = tmp_path / "o.pb"
    cache = str(tmp_path / "cache")
    common = ("-m", fixture_manifest("wordcount"), "--cache-dir", cache)
    r = subprocess.run([*CLI_PREFIX, "instrument", fixture_pb("wordcount"), *common, "-o", str(instrumented)],
                       capture_output=True, cwd=str(REPO), env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert r.returncode == 0, r.stderr
    args = (("diff", os.devnull, str(instrumented), "--json", "--show-payloads") if what.startswith("diff")
            else ("instrument", fixture_pb("wordcount"), *common, "-o", "-"))
    read, write = os.pipe()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("BEAMINST_DEBUG", None)
    proc = subprocess.Popen([*CLI_PREFIX, *args], stdout=write, stderr=subprocess.PIPE, text=True, cwd=str(REPO), env=env)
    os.close(write)
    try:
        assert os.read(read, 1)  # waits for the first write; the rest (over 64 kB) cannot all fit
    finally:
        os.close(read)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141, err
    assert err == ""


def test_as_a_git_driver_a_reader_gone_is_exit_0(tmp_path):
    """git stops with "external diff died" at any non-zero exit of its driver,
    141 included; with 0 it meets the closed pipe itself and ends quietly."""
    wc, cogbk = fixture_pb("wordcount"), fixture_pb("cogbk")
    proc = run_into_closed_pipe("diff", "--git-driver", "p.pb", wc, "1" * 40, "100644", cogbk, "2" * 40, "100644")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


def test_the_exit_status_is_what_a_shell_shows_for_yes_into_head():
    if sys.platform == "win32":  # pragma: no cover
        pytest.skip("no SIGPIPE")
    import signal

    from beaminst.cli import READER_GONE

    assert READER_GONE == 128 + signal.SIGPIPE


# --- instrument's show step names a few variables, not hundreds -----------------------------


def _next(stdout: str) -> list[str]:
    return [line.split("\t", 1)[1] for line in stdout.splitlines() if line.startswith("next\t")]


def test_the_show_step_names_at_most_a_few_variables_and_still_runs_as_printed():
    import shlex

    from beaminst.commands.nextsteps import SHOW_AT_MOST, Invocation, after_instrument

    how = Invocation("p.pb", "m.json", "cache")
    names = [f"v{i:05d}" for i in range(300)]
    _, show = after_instrument(how, "out.pb", names, cached=False)
    command, _, comment = show.partition("  # ")
    assert shlex.split(command) == [
        "beaminst", "show", "p.pb", "-m", "m.json", "--cache-dir", "cache", *names[:SHOW_AT_MOST]
    ]
    assert comment == f"and {300 - SHOW_AT_MOST} more variables written (listed above)"
    assert shlex.split(show, comments=True) == shlex.split(command)  # as a shell reads it: the comment is no argument
    assert 1 < SHOW_AT_MOST <= 5
    # A few are all named, with no comment; a variable written twice is named once.
    _, few = after_instrument(how, "out.pb", ["a", "b", "a"], cached=False)
    assert few == "beaminst show p.pb -m m.json --cache-dir cache a b"


def test_the_run_step_never_names_a_stream_the_proto_went_into(tmp_path):
    """``-o /dev/null`` (checking a rewrite without keeping it) or a FIFO is
    no file to run: the step says FILE and why, as for stdout; a file path,
    written or not yet, is named (quoted for the shell)."""
    import os
    import shlex

    from beaminst.commands.nextsteps import Invocation, after_background_caching, after_instrument

    how = Invocation("p.pb", "m.json", "cache")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for stream in (os.devnull, str(fifo)):
        run_step = after_instrument(how, stream, ["a"], cached=False)[0]
        assert run_step == f"beaminst run FILE  # FILE: the proto written to a file (-o FILE), not to {stream}"
        record = after_background_caching(how, stream)[0]
        assert record.startswith("beaminst run FILE  # records") and record.endswith(f"not to {stream}")
    assert after_instrument(how, "-", [], cached=False)[0] == "beaminst run FILE  # FILE: where you saved the proto from stdout"
    assert after_background_caching(how, "-")[0].endswith("; FILE: where you saved the proto from stdout")
    for path in (str(tmp_path / "my out.pb"), "later.pb"):
        assert after_instrument(how, path, [], cached=False)[0] == f"beaminst run {shlex.quote(path)}"
        assert after_background_caching(how, path)[0].split("  # ")[0] == f"beaminst run {shlex.quote(path)}"


def test_instrument_of_many_bindings_prints_a_short_show_step(tmp_path):
    import json
    import shlex

    from conftest import run_cli

    from beaminst.commands.nextsteps import SHOW_AT_MOST

    manifest = tmp_path / "many.json"  # every PCollection of wordcount bound: 13 variables
    bindings = {f"v{i:05d}": f"ref_PCollection_PCollection_{i}" for i in range(1, 14)}
    manifest.write_text(json.dumps({"version": 1, "bindings": bindings}))
    cache = tmp_path / "cache"
    r = run_cli("instrument", fixture_pb("wordcount"), "-m", str(manifest), "--cache-dir", str(cache),
                "-o", str(tmp_path / "out.pb"))
    assert r.exit_code == 0, r.stderr
    written = [line.split("\t")[1] for line in r.stdout.splitlines() if line.startswith("write\t")]
    assert len(written) == 13
    _, show = _next(r.stdout)
    args = shlex.split(show, comments=True)
    assert args[:7] == ["beaminst", "show", fixture_pb("wordcount"), "-m", str(manifest), "--cache-dir", str(cache)]
    assert args[7:] == written[:SHOW_AT_MOST]
    assert show.endswith(f"# and {13 - SHOW_AT_MOST} more variables written (listed above)")


# --- a failed job: one line, the job's messages only with -v --------------------------------

TRACEBACK = (
    "invalid literal for int() with base 10: 'x' [while running 'Parse']\n"
    "Traceback (most recent call last):\n  File \"core.py\", line 2126, in <lambda>\n"
    "ValueError: invalid literal for int() with base 10: 'x'\n"
)
FAILURE = "job FAILED: ValueError: invalid literal for int() with base 10: 'x' [while running 'Parse']"


@pytest.fixture
def failed_run(monkeypatch):
    """``run`` whose job failed, without running one: the CLI's side of it."""
    import beaminst.run
    from beaminst.run import RunReport
    from beaminst.run.job import Message

    def run_file(path, options, status):
        return RunReport(path, "DirectRunner", False, state="FAILED", messages=[
            Message("JOB_MESSAGE_ERROR", TRACEBACK),
            Message("JOB_MESSAGE_ERROR", "ValueError: invalid literal for int() with base 10: 'x' [while running 'Parse']"),
        ])

    monkeypatch.setattr(beaminst.run, "run_file", run_file)


def test_a_failed_job_is_one_line_naming_the_step_and_how_to_see_more(failed_run):
    from conftest import run_cli

    pb = fixture_pb("wordcount")
    r = run_cli("run", pb)
    assert r.exit_code == 2
    assert r.stderr.splitlines() == [
        f"beaminst: {pb}: {FAILURE} (rerun with beaminst -v to see the job's messages and tracebacks)"
    ]


def test_a_failed_job_under_verbose_gives_its_messages_after_the_line(failed_run):
    from conftest import run_cli

    pb = fixture_pb("wordcount")
    r = run_cli("-v", "run", pb)
    assert r.exit_code == 2
    first, *rest = r.stderr.splitlines()
    assert first == f"beaminst: {pb}: {FAILURE}"  # no pointer at -v: this is -v
    assert "Traceback (most recent call last):" in rest and rest[-1].endswith("[while running 'Parse']")


def test_the_failure_line_finds_the_step_in_a_runners_own_wrapping():
    """Flink wraps the SDK harness's traceback in a Java one, whose frames come last."""
    from beaminst.run.report import last_error_line

    flink = (
        "java.lang.RuntimeException: Error received from SDK harness for instruction 4: "
        + TRACEBACK + "ValueError: invalid literal for int() with base 10: 'x' [while running 'Parse']\n\n"
        "\tat org.apache.beam.runners.fnexecution.control.FnApiControlClient.onNext(FnApiControlClient.java:180)\n"
        "\tat org.apache.beam.vendor.grpc.v1p69p0.io.grpc.stub.ServerCalls.onMessage(ServerCalls.java:262)\n"
    )
    assert last_error_line([flink]) == "ValueError: invalid literal for int() with base 10: 'x' [while running 'Parse']"
    # Naming no step, the last line it is: Beam's own source line, quoted in a traceback, names none.
    source = "    step_annotation = \" [while running '%s']\" % self.step_name\n"
    assert last_error_line(["Traceback ...\n" + source + "KeyError: 'a'\n"]) == "KeyError: 'a'"
    assert last_error_line(["x [while running 'A']\nKeyError: 'b' [while running 'B']"]) == "KeyError: 'b' [while running 'B']"
    # A job that failed on a gRPC error (an EXTERNAL worker pool nobody runs) ends with its repr's '>'.
    rpc = ("Traceback (most recent call last):\n  ...\ngrpc._channel._InactiveRpcError: <_InactiveRpcError of RPC that "
           "terminated with:\n\tstatus = StatusCode.UNAVAILABLE\n\tdetails = \"failed to connect to all addresses; "
           "last error: UNKNOWN: ipv4:127.0.0.1:1: Connection refused\"\n\tdebug_error_string = \"UNKNOWN:Error "
           "received from peer\"\n>\n")
    assert last_error_line([rpc]) == (
        "UNAVAILABLE: failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Connection refused"
    )
    assert last_error_line(["ValueError: x\n>>>\n"]) == "ValueError: x"  # a line of punctuation says nothing


def test_while_a_job_runs_the_sdk_writes_nothing_to_stderr(capsys):
    """Beam's SDK worker prints a failed bundle's traceback to sys.stderr from
    its own thread, and a log record no handler takes goes to logging's last
    resort, on stderr: the job's messages carry both, so neither is printed."""
    import logging
    import threading

    from beaminst.run.job import quiet_sdk_logs

    def worker() -> None:
        print("Traceback (most recent call last): from a worker thread", file=sys.stderr)

    with quiet_sdk_logs():
        logging.getLogger("apache_beam.runners.worker.sdk_worker").error("Error processing instruction bundle_2")
        t = threading.Thread(target=worker)
        t.start()
        t.join()
        print("beaminst: job: FAILED", file=sys.stderr)  # this thread's own lines still go out
    assert capsys.readouterr().err == "beaminst: job: FAILED\n"
    print("after", file=sys.stderr)
    assert capsys.readouterr().err == "after\n"  # stderr is itself again


# --- run's next steps: spelled by nextsteps, with the rules the recording needs -------------


def test_after_a_recording_the_replay_step_carries_the_source_rules_and_replays_it(tmp_path, monkeypatch):
    """What ``run`` prints after a recording, read from the proto alone: the
    TestStream it recorded is a source only under --unbounded-urn, so the
    replaying instrument needs it; with the pipeline and manifest filled in,
    the line runs as printed and replays that recording's key."""
    import json
    import shlex

    from conftest import run_cli
    from test_run import TEST_STREAM, events_pipeline

    from beaminst.commands.api import load
    from beaminst.run import RunReport
    from beaminst.run.capture import find_cache_writes
    from beaminst.run.driver import next_steps
    from beaminst.run.recording import plan_recording

    pb, man = events_pipeline(str(tmp_path / "ev"))
    cache, bg = str(tmp_path / "cache"), str(tmp_path / "bg.pb")
    r = run_cli("background-caching", pb, "-m", man, "--cache-dir", cache, "-o", bg, "--unbounded-urn", TEST_STREAM)
    assert r.exit_code == 0, r.stderr
    index = load(bg).index
    writes = find_cache_writes(index)
    recording, _ = plan_recording(writes, None)
    (step,) = next_steps(RunReport(bg, "DirectRunner", True, state="DONE"), recording, writes, index)
    assert step == (
        f"beaminst instrument PIPELINE -m MANIFEST --cache-dir {shlex.quote(os.path.abspath(cache))} "
        f"--unbounded-urn {TEST_STREAM} -o pipeline.instrumented.pb  # replays this recording"
    )
    args = [{"PIPELINE": pb, "MANIFEST": man}.get(a, a) for a in shlex.split(step, comments=True)[1:]]
    monkeypatch.chdir(tmp_path)
    r = run_cli(*args, "--json")
    assert r.exit_code == 0, r.stderr
    (capture,) = [w for w in writes if w.capture]
    assert json.loads(r.stdout)["test_stream"]["tags"] == [capture.key]


def test_after_a_run_that_cached_the_steps_are_nextsteps_own(tmp_path):
    import shlex

    from conftest import run_cli

    from beaminst.commands.api import load
    from beaminst.commands.nextsteps import Invocation, after_run
    from beaminst.run import RunReport
    from beaminst.run.capture import find_cache_writes
    from beaminst.run.driver import next_steps

    cache, out = tmp_path / "my cache", str(tmp_path / "wc.pb")
    r = run_cli("instrument", fixture_pb("wordcount"), "-m", fixture_manifest("wordcount"), "--cache-dir", str(cache),
                "-o", out)
    assert r.exit_code == 0, r.stderr
    index = load(out).index
    steps = next_steps(RunReport(out, "DirectRunner", False, state="DONE"), None, find_cache_writes(index), index)
    assert steps == after_run(Invocation("-", "-", os.path.abspath(cache)), recording=False)
    show, reuse = steps
    assert shlex.split(show, comments=True) == [
        "beaminst", "show", "PIPELINE", "-m", "MANIFEST", "--cache-dir", os.path.abspath(cache)
    ]
    assert shlex.split(reuse, comments=True)[-3:] == ["--reuse", "-o", "pipeline.next.pb"]
    assert next_steps(RunReport(out, "DirectRunner", False, state="FAILED"), None, find_cache_writes(index), index) == []


def test_replay_rules_name_a_urn_only_where_it_is_the_sources_own():
    from beaminst.analysis.sources import UnboundedSource
    from beaminst.model import urns
    from beaminst.options import SourceRules
    from beaminst.run.driver import replay_rules

    def source(urn: str, rule: str) -> UnboundedSource:
        return UnboundedSource("t", "T", urn, {"None": "pc"}, rule)

    assert replay_rules([source(urns.PUBSUB_READ, "pubsub"), source(urns.READ, "read")]) == SourceRules()
    assert replay_rules([source(urns.TEST_STREAM, "inferred")] * 2) == SourceRules((urns.TEST_STREAM,))
    # A source that is a ParDo: --unbounded-urn would make every ParDo one.
    assert replay_rules([source(urns.PAR_DO, "inferred")]) == SourceRules(infer=True)
    assert replay_rules([source("beam:transform:kafka:v1", "inferred"), source(urns.PICKLED_TRANSFORM, "inferred")]) == (
        SourceRules(("beam:transform:kafka:v1",), infer=True)
    )


@pytest.mark.parametrize(
    "argv, said",
    [
        (("run", "P", "--max-duration", "abc"), "invalid value for '--max-duration': 'abc' is not a number"),
        (("run", "P", "--max-duration", "-1"), "invalid value for '--max-duration': must be more than 0 (got -1.0)"),
        (("run", "P", "--max-bytes", "1.5"), "invalid value for '--max-bytes': '1.5' is not a whole number"),
        (("run", "P", "--max-bytes", "0"), "invalid value for '--max-bytes': must be at least 1 (got 0)"),
        (("batch", "SRC", "-o", "D", "--jobs", "a'b"), "invalid value for '-j' / '--jobs': \"a'b\" is not a whole number"),
        (("show", "P", "--limit", "-3"), "invalid value for '--limit': must be at least 0 (got -3)"),
        (("analyze", "P", "--max-decompressed-bytes", "0"),
         "must be at least 1 and at most 4611686018427387904 (got 0)"),
    ],
)
def test_a_bad_number_is_said_in_words_not_clicks_formulas(argv, said, tmp_path):
    """click's "'abc' is not a valid float range" and "0 is not in the range
    x>=1": what was wanted, in words, on the one line."""
    from conftest import run_cli

    argv = tuple(fixture_pb("wordcount") if a == "P" else str(tmp_path / a) if a in ("SRC", "D") else a for a in argv)
    r = run_cli(*argv)
    assert r.exit_code == 2
    (line,) = r.stderr.splitlines()
    assert said in line and line.endswith(f"(see beaminst {argv[0]} --help)"), line
    assert "range" not in line and "x>" not in line, line


def test_run_says_a_cache_dir_that_is_a_file_as_every_command_does(tmp_path):
    from conftest import run_cli

    afile = tmp_path / "afile"
    afile.write_bytes(b"")
    for argv in (("run", fixture_pb("wordcount")), ("analyze", fixture_pb("wordcount"))):
        r = run_cli(*argv, "--cache-dir", str(afile))
        assert r.exit_code == 2 and r.stderr.splitlines() == [f"beaminst: {afile}: --cache-dir names a file, not a directory"], r.stderr


@pytest.mark.parametrize("width", [60, 100, 160, 220])
def test_a_terminal_table_keeps_cache_keys_and_ids_whole_where_they_fit(width, tmp_path):
    """A key or id is copied from the table into the next command: on a
    terminal wide enough the other columns wrap first; on a narrow one the
    table still fits the terminal (everything folds)."""
    from rich.console import Console

    from beaminst.commands import api
    from beaminst.commands.humanout import Human
    from beaminst.commands.report import print_analysis

    console = Console(force_terminal=True, width=width, color_system=None, record=True)
    analysis = api.analyze_files(fixture_pb("wordcount"), fixture_manifest("wordcount"), str(tmp_path / "c"))
    with console.capture() as captured:
        print_analysis(Human(console), analysis)
    lines = captured.get().splitlines()
    table = [line for line in lines if line[:1] in "┏┃┡│└"]  # the sentences after it are soft-wrapped: left whole
    assert table and all(len(line) <= width for line in table), max(map(len, table))
    whole = [c.cache_key for c in analysis.cacheables.values()] + [c.pcollection for c in analysis.cacheables.values()]
    on_one_line = [k for k in whole if any(k in line for line in table)]
    if width >= 160:  # room for a word count's ids and keys whole, and a little of every other column
        assert len(whole) == 8 and on_one_line == whole, set(whole) - set(on_one_line)


@pytest.mark.parametrize("width", [70, 110, 140, 200])
def test_every_column_keeps_its_text_whatever_is_kept_whole(width):
    """Keeping keys whole never squeezes another column out: each cell reads
    back from its column (folded, it is split over lines, never dropped),
    wide characters and notes counted as the terminal shows them."""
    from rich.console import Console

    from beaminst.commands.humanout import Cell, Human

    key = "0700cd3e2c-22f0bc0689d8d10d-ddb4b2046b58e0d2-95c898241d91745b"
    rows = [(Cell("write", "green"), Cell("変数名前" * 5, note="(synthetic)"), key, "WriteCache")]
    console = Console(force_terminal=True, width=width, color_system=None)
    with console.capture() as captured:
        Human(console).table("", "t", ("action", "variable", "cache key", "via"), rows)
    body = [line for line in captured.get().splitlines() if line.startswith("│")]
    assert all(len(line) <= width for line in captured.get().splitlines() if line[:1] in "┏┃┡│└")
    cells = [line.split("│")[1:-1] for line in body]
    columns = ["".join(part.replace(" ", "") for part in parts) for parts in zip(*cells, strict=True)]
    assert columns == ["write", "変数名前" * 5 + "(synthetic)", key, "WriteCache"], columns


def test_a_capped_list_of_named_items_keeps_names_in_field_two(capsys):
    """Piped, ``skipped`` and batch's ``warning`` are kind, name, text; the
    line saying how many were left out has no name, so cut -f2 is names only."""
    import io

    from rich.console import Console

    from beaminst.commands.humanout import MAX_LISTED, Human

    out = io.StringIO()
    items = [(f"v{i}", "why") for i in range(MAX_LISTED + 3)]
    Human(Console(file=out, force_terminal=False)).capped("skipped", items, "skipped bindings")
    fields = [line.split("\t") for line in out.getvalue().splitlines()]
    assert [f[1] for f in fields] == [f"v{i}" for i in range(MAX_LISTED)] + [""]
    assert fields[-1] == ["skipped", "", "... and 3 more skipped bindings (--json lists them all)"]


def test_a_run_failing_for_want_of_cloud_credentials_names_the_fix():
    """A recording of a Pub/Sub source on a machine with no Google Cloud
    credentials failed with Beam's traceback and no next step."""
    from beaminst.run import RunReport
    from beaminst.run.driver import next_steps
    from beaminst.run.job import Message

    error = "google.auth.exceptions.DefaultCredentialsError: Your default credentials were not found."
    failed = RunReport("rec.pb", "DirectRunner", True, state="FAILED", messages=[Message("JOB_MESSAGE_ERROR", error)])
    (step,) = next_steps(failed, None, (), None)  # type: ignore[arg-type]
    assert step.startswith("gcloud auth application-default login  # ") and "PUBSUB_EMULATOR_HOST" in step
    other = RunReport("p.pb", "DirectRunner", False, state="FAILED", messages=[Message("JOB_MESSAGE_ERROR", "ValueError: x")])
    assert next_steps(other, None, (), None) == []  # type: ignore[arg-type]
