"""Limits raised through the environment (``beaminst.limits``): a value that
is not a positive number is one line and exit 2 from every command, never a
traceback from the import that first reads it, and a valid one is used."""

from __future__ import annotations

import pytest

from beaminst import limits
from tests.conftest import fixture_manifest, fixture_pb, run_cli, run_cli_subprocess, run_python

BAD = ("abc", "0", "-1", "nan", "inf", "1_000", "\u0663", str(10**20), "1e300", " ")
WORDCOUNT = (fixture_pb("wordcount"), "-m", fixture_manifest("wordcount"))


@pytest.mark.parametrize("name", sorted(limits.LIMITS))
@pytest.mark.parametrize("raw", BAD[:-1])
def test_a_bad_limit_is_one_line_and_exit_2(name: str, raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, raw)
    option = name == "BEAMINST_MAX_DECOMPRESSED_BYTES"  # also --max-decompressed-bytes: click parses it first
    if option and raw in ("1_000", "\u0663"):
        pytest.skip("click's int() takes it, as the option's value (1000, 3)")
    result = run_cli("analyze", *WORDCOUNT)
    assert result.exit_code == 2
    assert result.stdout == ""
    if option:
        assert result.stderr.startswith(f"beaminst: analyze: invalid value for '--max-decompressed-bytes' (env var: '{name}')")
    else:
        assert result.stderr.startswith(f"beaminst: {name}={raw!r} is not a positive ")
    assert result.stderr.count("\n") == 1


def test_what_a_limit_takes() -> None:
    whole = next(n for n, (d, _) in limits.LIMITS.items() if isinstance(d, int))
    assert limits.parse_limit(whole, " +5 ") == 5 and limits.parse_limit(whole, str(limits.MAX_WHOLE)) == limits.MAX_WHOLE
    assert limits.parse_limit(whole, str(limits.MAX_WHOLE + 1)) is None and limits.parse_limit(whole, "1e3") is None
    assert limits.parse_limit("BEAMINST_CACHE_TIMEOUT", "1e3") == 1000.0
    assert limits.parse_limit("BEAMINST_CACHE_TIMEOUT", ".5") == 0.5


def test_a_huge_limit_is_refused_not_an_overflow_where_it_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    # readline(size + 1) and Thread.join(timeout) overflow past these: the CLI used to say "internal error".
    for name in ("BEAMINST_MAX_SHARD_LINE_BYTES", "BEAMINST_MAX_DECOMPRESSED_BYTES", "BEAMINST_CACHE_TIMEOUT"):
        with monkeypatch.context() as m:
            m.setenv(name, "99999999999999999999")
            result = run_cli("graph", fixture_pb("wordcount"), "-o", "-")
            assert result.exit_code == 2 and "internal error" not in result.stderr, result.stderr
            assert name in result.stderr.splitlines()[0] and result.stderr.count("\n") == 1


def test_a_fraction_is_refused_where_the_limit_counts() -> None:
    whole = [n for n, (d, _) in limits.LIMITS.items() if isinstance(d, int)]
    fractional = [n for n, (d, _) in limits.LIMITS.items() if isinstance(d, float)]
    assert whole and fractional
    assert all(limits.parse_limit(n, "1.5") is None for n in whole)
    assert all(limits.parse_limit(n, "1.5") == 1.5 for n in fractional)


def test_blank_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, (default, _) in limits.LIMITS.items():
        monkeypatch.setenv(name, BAD[-1])
        assert limits.env_limit(name) == default
    limits.check_env_limits()


def test_read_at_import_the_cli_imports_and_fails_cleanly(monkeypatch: pytest.MonkeyPatch) -> None:
    # BEAMINST_CACHE_TIMEOUT is read while the CLI itself is built (batch's
    # modes import the cache filesystem): it used to be a ValueError traceback.
    monkeypatch.setenv("BEAMINST_CACHE_TIMEOUT", "abc")
    proc = run_cli_subprocess("analyze", *WORDCOUNT)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("beaminst: BEAMINST_CACHE_TIMEOUT='abc' is not a positive number")
    for args in (("--help",), ("show", "--help"), ("run", "-h")):  # help still answers, the commands' own too
        help_ = run_cli_subprocess(*args)
        assert help_.returncode == 0 and "Usage:" in help_.stdout, (args, help_.stderr)


def test_a_valid_limit_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEAMINST_CACHE_TIMEOUT", "2.5")
    monkeypatch.setenv("BEAMINST_MAX_SHARD_BYTES", "4096")
    proc = run_python(
        "-c", "import beaminst.cache.cachefs as c, beaminst.commands.elements as e; print(c.TIMEOUT, e.MAX_SHARD_BYTES)"
    )
    assert proc.stdout.split() == ["2.5", "4096"], proc.stderr
