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
