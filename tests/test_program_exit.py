"""The ``beaminst`` program leaves without tearing the interpreter down
(:func:`beaminst.cli.entry`), and that changes nothing a caller sees: exit
statuses, exit handlers, buffered output; with a thread still alive it exits
the ordinary way. A standard stream closed at its start is /dev/null to it,
and help or a version that meets a full disk is one line."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

_FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

# A module-level object whose finalizer says whether the interpreter was torn
# down, an exit handler, and output left in stdout's buffer.
_PROGRAM = textwrap.dedent(
    """
    import atexit, sys, threading, time

    class Witness:
        def __del__(self):
            sys.stderr.write("torn down\\n")

    witness = Witness()
    atexit.register(lambda: sys.stderr.write("exit handler ran\\n"))
    if sys.argv[1] == "thread":
        threading.Thread(target=time.sleep, args=(0.2,)).start()
    sys.stdout.write("buffered, never flushed by the caller")
    sys.argv[1:] = sys.argv[2:]
    from beaminst.cli import entry
    entry()
    """
)


def _program(mode: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _PROGRAM, mode, *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("args", "code"),
    [(("--version",), 0), (("instrument", "missing.pb", "-o", "out.pb"), 2), (("no-such-command",), 2)],
)
def test_the_program_keeps_its_exit_status_handlers_and_output(args, code):
    done = _program("plain", *args)
    assert done.returncode == code, done.stderr
    assert "exit handler ran" in done.stderr
    assert done.stdout.startswith("buffered, never flushed by the caller")
    assert "torn down" not in done.stderr  # left at once, finalizers not run


def test_a_thread_still_running_gets_the_ordinary_exit():
    done = _program("thread", "--version")
    assert done.returncode == 0
    assert "exit handler ran" in done.stderr
    assert "torn down" in done.stderr  # the interpreter waited for the thread, then finalized


def test_diff_finding_differences_still_exits_1():
    done = subprocess.run(
        [sys.executable, "-m", "beaminst", "diff", str(_FIXTURES / "wordcount.pb"), str(_FIXTURES / "mixed.pb")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout



def _shell(command: str) -> subprocess.CompletedProcess[str]:
    """``python -m beaminst`` under ``sh -c``, for redirections that close a stream."""
    return subprocess.run(
        ["sh", "-c", f'exec "$0" -m beaminst {command}', sys.executable],
        capture_output=True, text=True, timeout=120, check=False, cwd=_FIXTURES,
    )


@pytest.mark.parametrize(
    ("command", "code", "stderr"),
    [
        ("--version 2>&-", 0, None),
        ("--version >&-", 0, ""),
        ("analyze wordcount.pb >&-", 0, ""),
        ("diff wordcount.pb wordcount.pb >&-", 0, ""),  # identical: 0, not an error's 1
        ("analyze nosuch.pb >&-", 2, "beaminst: nosuch.pb: no such file\n"),
        ("analyze - <&-", 2, "beaminst: <stdin>: file is empty, expected a Beam pipeline proto\n"),
    ],
)
def test_a_closed_standard_stream_reads_empty_and_writes_nowhere(command, code, stderr):
    done = _shell(command)
    assert done.returncode == code, done.stderr
    if stderr is not None:
        assert done.stderr == stderr


def test_a_report_never_lands_in_the_output_when_stdout_is_closed(tmp_path):
    # With descriptor 1 closed, the output file would be the first file opened
    # on it: the report printed to "stdout" would go into the pipeline.
    out = tmp_path / "out.pb"
    closed = _shell(f"instrument wordcount.pb -m wordcount.manifest.json --cache-dir {tmp_path / 'c'} -o {out} >&-")
    assert closed.returncode == 0, closed.stderr
    kept = out.read_bytes()
    plain = _shell(f"instrument wordcount.pb -m wordcount.manifest.json --cache-dir {tmp_path / 'c'} -o {out}")
    assert plain.returncode == 0 and plain.stdout
    assert out.read_bytes() == kept


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("command", ["--help", "--version", "analyze --help"])
def test_help_into_a_full_disk_is_one_line(command):
    done = _shell(f"{command} > /dev/full")
    assert done.returncode == 2
    assert done.stderr == "beaminst: <stdout>: cannot write to stdout: No space left on device\n"
