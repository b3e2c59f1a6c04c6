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



@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "PYTHONUNBUFFERED"])
@pytest.mark.parametrize("fmt", ["--json", "plain"])
def test_a_reader_that_stops_early_still_gets_the_diffs_exit_status(tmp_path, fmt, unbuffered):
    """A diff of 8 to 64 KiB read by ``head -1``: with stdout's buffer the
    pipe's size the whole output leaves in one write, so the exit status is
    diff's own 1 (they differ), not 141 from a second write after the reader
    left (Python's 8 KiB buffer split it; the README's exit-code table
    promises output that fits the pipe is all written). Asked for unbuffered
    output (PYTHONUNBUFFERED), beaminst leaves stdout as Python made it: the
    status is then 1 or 141, whoever wins, but never a traceback."""
    after = _FIXTURES / "mixed.pb"
    args = ["--json"] if fmt == "--json" else ["--format", "plain"]
    if fmt == "plain":  # wordcount against mixed is under 8 KiB in plain: its instrumented version is not
        after = tmp_path / "instrumented.pb"
        subprocess.run(
            [sys.executable, "-m", "beaminst", "instrument", str(_FIXTURES / "wordcount.pb"), "-m",
             str(_FIXTURES / "wordcount.manifest.json"), "--cache-dir", str(tmp_path / "cache"), "-o", str(after)],
            capture_output=True, timeout=120, check=True,
        )
    argv = [sys.executable, "-m", "beaminst", "diff", str(_FIXTURES / "wordcount.pb"), str(after), *args]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    whole = subprocess.run(argv, capture_output=True, timeout=120, check=False, env=env).stdout
    assert 8 << 10 < len(whole) < 64 << 10  # past Python's buffer, within the pipe's
    for _ in range(3):
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()  # as head -1 does
        err = proc.stderr.read().decode()
        proc.stderr.close()
        code = proc.wait(timeout=120)
        assert first and whole.startswith(first)
        assert "Traceback" not in err and (err == "" or not unbuffered), err
        assert code == 1 or (unbuffered and code == 141), (code, err)


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
