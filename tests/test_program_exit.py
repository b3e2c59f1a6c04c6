"""The ``beaminst`` program leaves without tearing the interpreter down
(:func:`beaminst.cli.entry`), and that changes nothing a caller sees: exit
statuses, exit handlers, buffered output; with a thread still alive it exits
the ordinary way."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

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
    from pathlib import Path

    fixtures = Path(__file__).resolve().parent.parent / "fixtures"
    done = subprocess.run(
        [sys.executable, "-m", "beaminst", "diff", str(fixtures / "wordcount.pb"), str(fixtures / "mixed.pb")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout
