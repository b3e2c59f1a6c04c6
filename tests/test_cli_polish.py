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
