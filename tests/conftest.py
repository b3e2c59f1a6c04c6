"""Shared test helpers.

* the repository root goes on ``sys.path`` so ``fixtures.pipelines`` imports;
* ``FIXTURES`` is the committed fixture directory;
* ``ib_env`` gives a test a fresh Interactive Beam environment;
* ``run_cli`` runs the CLI in-process (Click's runner), ``run_cli_subprocess``
  runs it in a fresh interpreter (real stdin/stderr, real ``sys.modules``).
"""

from __future__ import annotations

import bz2
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

FIXTURES = REPO / "fixtures"
# A shard of an empty cache as Beam's bz2 text sink writes it (header and end of
# stream): a test that fakes a cached variable writes this, since a file that is
# not a whole bz2 stream reads as a truncated shard, which is no cache.
EMPTY_SHARD = bz2.compress(b"")
CORRUPT = FIXTURES / "corrupt"
# Every fixture written by fixtures/generate.py from fixtures.pipelines.BUILDERS.
FIXTURE_NAMES = (
    "wordcount",
    "multi_output",
    "side_inputs",
    "flatten_gbk",
    "cogbk",
    "nested_composites",
    "windowing",
    "pubsub_one",
    "pubsub_two",
    "mixed",
)
UNBOUNDED_FIXTURES = ("pubsub_one", "pubsub_two", "mixed")

# Runs the CLI in a fresh interpreter without relying on a console script or a
# ``__main__`` guard, so it works in any virtualenv.
CLI_PREFIX = [
    sys.executable,
    "-c",
    "import sys; from beaminst.cli import main; main(sys.argv[1:], prog_name='beaminst')",
]


@contextlib.contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` updated with ``values`` for the block, then restored."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def interruptible() -> None:
    """``preexec_fn`` for a child a test will send SIGINT: a shell running
    the suite as a background job (``.ci/run &``) ignores SIGINT, every child
    inherits that, and Ctrl-C would never arrive."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def fixture_pb(name: str) -> str:
    return str(FIXTURES / f"{name}.pb")


def fixture_manifest(name: str) -> str:
    return str(FIXTURES / f"{name}.manifest.json")


@dataclass(frozen=True)
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


def run_cli(*args: str, input: bytes | str | None = None, env: dict[str, str] | None = None) -> CliResult:
    """Run ``beaminst ARGS`` in-process. Exceptions that escape the CLI's own
    handling are not swallowed, so a traceback fails the test loudly."""
    from click.testing import CliRunner

    from beaminst.cli import main

    runner = CliRunner(env={"COLUMNS": "200", **(env or {})})
    result = runner.invoke(main, list(args), input=input, catch_exceptions=False)
    return CliResult(result.exit_code, result.stdout, result.stderr)


def run_cli_subprocess(
    *args: str, input: bytes | None = None, cwd: str | Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``beaminst ARGS`` in a fresh interpreter; text stdout/stderr."""
    return run_python(*CLI_PREFIX[1:], *args, input=input, cwd=cwd, timeout=timeout)


def run_python(
    *args: str, input: bytes | None = None, cwd: str | Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``sys.executable ARGS`` with the repo root importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["COLUMNS"] = "200"
    env.pop("BEAMINST_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, *args],
        input=input,
        capture_output=True,
        cwd=str(cwd or REPO),
        env=env,
        timeout=timeout,
    )
    return subprocess.CompletedProcess(
        proc.args,
        proc.returncode,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
    )


def keys_under_two_hash_seeds(script: str, *args: str) -> tuple[Any, Any]:
    """What ``python -c script ARGS`` prints after ``KEYS`` (JSON), run once
    under each of two ``PYTHONHASHSEED``s: cache keys built in two processes."""
    import json

    runs = []
    for seed in ("1", "2"):
        with environ({"PYTHONHASHSEED": seed}):
            proc = run_python("-c", script, *args, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append(json.loads(proc.stdout.split("KEYS", 1)[1]))
    return runs[0], runs[1]


def run_cli_in_terminal(*args: str, timeout: float = 120) -> tuple[int, str, str]:
    """``beaminst ARGS`` in a new process whose stdout is a pseudo-terminal:
    (exit code, what the terminal showed, stderr)."""
    import pty
    import select

    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "160", "TERM": "xterm"}
    env.pop("BEAMINST_DEBUG", None)
    proc = subprocess.Popen([*CLI_PREFIX, *args], stdout=slave, stderr=subprocess.PIPE, env=env, cwd=REPO)
    os.close(slave)
    out = b""
    while True:
        ready, _, _ = select.select([master], [], [], timeout)
        if not ready:
            proc.kill()
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=timeout)
    os.close(master)
    assert proc.stderr is not None
    return proc.returncode, out.decode("utf-8", "replace"), proc.stderr.read().decode()


def beam_noise_free(stderr: str) -> list[str]:
    """stderr lines minus the Beam SDK's import-time warnings (optional GCP
    dependencies), which are not beaminst's output."""
    noise = ("Failed to import GCSFileSystem", "apitools not found", "WARNING:root:")
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith(noise)]


def load_fixture(name: str) -> Any:
    """A fresh, mutable copy of a committed fixture's pipeline proto."""
    from beaminst.model.protoio import load_pipeline

    proto, _ = load_pipeline(fixture_pb(name))
    return proto


# The template store for the session, set as this file is imported: some test
# modules copy os.environ at import (ENV = {**os.environ, ...}), before any
# fixture runs, and their subprocesses would write the user's ~/.cache.
# ``BEAMINST_TEMPLATE_CACHE=off pytest`` runs with no store at all.
# A process a test spawns that imports this file again (multiprocessing's
# spawn) uses its session's store instead of making one of its own.
_STORE_OFF = os.environ.get("BEAMINST_TEMPLATE_CACHE", "").strip().lower() == "off"
_SAVED_STORE = os.environ.get("BEAMINST_TEMPLATE_CACHE")
_SESSION = os.environ.get("BEAMINST_TEST_SESSION_STORE")
_OWN_STORE = not _STORE_OFF and not _SESSION
_STORE_DIR = None if _STORE_OFF else _SESSION or tempfile.mkdtemp(prefix="beaminst-test-templates-")
if _STORE_DIR is not None:
    os.environ["BEAMINST_TEST_SESSION_STORE"] = _STORE_DIR
    os.environ["BEAMINST_TEMPLATE_CACHE"] = os.path.join(_STORE_DIR, "templates")


@pytest.fixture(scope="session", autouse=True)
def template_store() -> Iterator[Path | None]:
    """The session's template store (subprocesses inherit it), never the
    user's ~/.cache; removed, and the environment restored, at the end."""
    if _STORE_DIR is None:
        yield None
        return
    with environ({"BEAMINST_TEMPLATE_CACHE": os.path.join(_STORE_DIR, "templates")}):
        yield Path(_STORE_DIR) / "templates"
    if _OWN_STORE:
        if _SAVED_STORE is None:
            os.environ.pop("BEAMINST_TEMPLATE_CACHE", None)
        os.environ.pop("BEAMINST_TEST_SESSION_STORE", None)
        shutil.rmtree(_STORE_DIR, ignore_errors=True)


@pytest.fixture
def ib_env() -> Any:
    """A fresh Interactive Beam environment, cleaned up afterwards."""
    from apache_beam.runners.interactive import interactive_environment as ie

    env = ie.new_env()
    try:
        yield env
    finally:
        ie.new_env()  # cleans up the test's environment (cache dirs included)


# --- Hypothesis profiles and the hardening case count ---------------------------------
# Profiles live in hypothesis_profiles.py: "ci" (default: small, derandomized) and
# "soak" (pytest --hypothesis-profile=soak). Registered here, at conftest import,
# so the Hypothesis plugin finds them when it handles --hypothesis-profile.

import hypothesis_profiles  # noqa: E402

hypothesis_profiles.register()

# Generated cases tried per hardening property, filled by tests/test_hardening.py.
HARDENING_CASES: dict[str, int] = {}


def pytest_sessionfinish(session: Any) -> None:
    # An xdist worker hands its counts to the controller, which prints them.
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["hardening_cases"] = dict(HARDENING_CASES)


def pytest_testnodedown(node: Any, error: Any) -> None:
    for kind, n in getattr(node, "workeroutput", {}).get("hardening_cases", {}).items():
        HARDENING_CASES[kind] = HARDENING_CASES.get(kind, 0) + n


def pytest_unconfigure(config: Any) -> None:
    # Under xdist the controller made the store its workers share (they
    # inherit its environment) but runs no session fixture: remove it here.
    if _OWN_STORE and _STORE_DIR is not None and not hasattr(config, "workerinput"):
        shutil.rmtree(_STORE_DIR, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not HARDENING_CASES:
        return
    from hypothesis import settings

    total = sum(HARDENING_CASES.values())
    parts = ", ".join(f"{k} {v}" for k, v in sorted(HARDENING_CASES.items()))
    terminalreporter.write_line(
        f"hardening: {total} generated cases tried ({parts}); "
        f"hypothesis profile {settings.get_current_profile_name()!r}"
    )


@pytest.fixture(scope="session")
def job_service(tmp_path_factory: Any) -> Any:
    """Beam's local job service (``local_job_service_main``), one for the session."""
    from portable import running_job_service

    with running_job_service(tmp_path_factory.mktemp("job_service")) as service:
        yield service
