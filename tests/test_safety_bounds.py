"""Issue 10's bounds and escapes: every input is bounded, nothing from a file
reaches a terminal or a DOT file raw, no output replaces an input.

Bombs run every command in a real subprocess and are bounded by the work
done (peak memory of that one child, from ``wait4``), never by wall-clock
time, which a loaded two-core machine stretches.
"""

from __future__ import annotations

import base64
import bz2
import functools
import os
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    CLI_PREFIX,
    EMPTY_SHARD,
    REPO,
    beam_noise_free,
    fixture_manifest,
    fixture_pb,
    load_fixture,
)

from beaminst.errors import ValidationError
from beaminst.model import bounded
from beaminst.model.protoio import serialize_pipeline

GiB = 1 << 30
PICKLED_CODER = "beam:coder:pickled_python:v1"
PICKLED_WINDOW_FN = "beam:window_fn:pickled_python:v1"
MAX_RSS_BYTES = 500 << 20  # a command that inflated a bomb holds >= 1 GiB


# --- bombs ------------------------------------------------------------------------


@functools.cache
def zlib_bomb() -> bytes:
    """1 GiB of zeros as one zlib stream (about 1 MB)."""
    z = zlib.compressobj(9)
    chunk = bytes(1 << 20)
    return b"".join(z.compress(chunk) for _ in range(GiB >> 20)) + z.flush()


@functools.cache
def bz2_bomb() -> bytes:
    """1 GiB of zeros as 16 concatenated bz2 streams (about 1.3 KB): what
    ``bz2.decompress``, and so Beam's unpickler, joins."""
    return bz2.compress(bytes(64 << 20)) * 16


def _transform(p: Any, name: str) -> Any:
    return next(t for t in p.components.transforms.values() if t.unique_name == name)


def bomb_pipeline(kind: str) -> Any:
    from google.protobuf import wrappers_pb2

    from beaminst.model.beamproto import runner_api

    p = load_fixture("wordcount")
    c = p.components
    if kind == "pardo-bz2":  # the DoFn pickle inside a ParDoPayload
        t = _transform(p, "Split")
        payload = runner_api().ParDoPayload.FromString(t.spec.payload)
        payload.do_fn.payload = base64.b64encode(bz2_bomb())
        t.spec.payload = payload.SerializeToString()
    elif kind == "coder-zlib":  # a bound PCollection's pickled coder
        cid = next(k for k, x in c.coders.items() if x.spec.urn == PICKLED_CODER)
        value = b"FastPrimitivesCoder$" + base64.b64encode(zlib_bomb())
        c.coders[cid].spec.payload = wrappers_pb2.BytesValue(value=value).SerializeToString()
    elif kind == "pickled-transform-zlib":
        _transform(p, "ReadLines").spec.payload = base64.b64encode(zlib_bomb())
    elif kind == "window-fn-bz2":
        ws = next(iter(c.windowing_strategies.values()))
        ws.window_fn.urn = PICKLED_WINDOW_FN
        ws.window_fn.payload = base64.b64encode(bz2_bomb())
    else:
        raise AssertionError(kind)
    return p


BOMBS = ("pardo-bz2", "coder-zlib", "pickled-transform-zlib", "window-fn-bz2")
COMMANDS = ("analyze", "instrument", "background-caching", "diff", "graph", "batch")


def command_args(cmd: str, bomb: Path, tmp: Path) -> list[str]:
    cache = str(tmp / "cache")
    manifest = fixture_manifest("wordcount")
    return {
        "analyze": ["analyze", str(bomb), "-m", manifest],
        "instrument": ["instrument", str(bomb), "-m", manifest, "--cache-dir", cache, "-o", str(tmp / "out.pb")],
        "background-caching": ["background-caching", str(bomb), "--cache-dir", cache, "-o", str(tmp / "out.pb")],
        "diff": ["diff", fixture_pb("wordcount"), str(bomb)],
        "graph": ["graph", str(bomb), "-o", str(tmp / "out.dot")],
        "batch": ["batch", str(bomb.parent), "-o", str(tmp / "dest"), "--cache-dir", cache, "--jobs", "1"],
    }[cmd]


# Started from a small interpreter, not from pytest: Linux counts the pages a
# forked child shares with its parent in its peak RSS, so a child of a large
# test process would report the test process's size.
_MEASURE = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss * 1024))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(args: list[str], tmp: Path, env: dict[str, str] | None = None) -> tuple[int, str, int]:
    """(exit code, stderr, peak RSS in bytes) of one CLI run in its own process.
    The timeout only stops a hung run; it asserts nothing."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", **(env or {})}
    full_env.pop("BEAMINST_DEBUG", None)
    rss = tmp / "rss"
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(rss), *CLI_PREFIX, *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp, env=full_env, timeout=600,
    )
    return proc.returncode, proc.stderr.decode("utf-8", "replace"), int(rss.read_text())


@pytest.fixture(scope="module")
def bomb_files(tmp_path_factory: Any) -> dict[str, Path]:
    out = {}
    for kind in BOMBS:
        d = tmp_path_factory.mktemp(kind)
        path = d / "bomb.pb"
        path.write_bytes(serialize_pipeline(bomb_pipeline(kind)))
        out[kind] = path
    return out


@pytest.mark.parametrize("cmd", COMMANDS)
@pytest.mark.parametrize("kind", BOMBS)
def test_bomb_bounded_in_every_command(kind: str, cmd: str, bomb_files: dict[str, Path], tmp_path: Path) -> None:
    bomb = bomb_files[kind]
    code, stderr, rss = run_measured(command_args(cmd, bomb, tmp_path), tmp_path)
    lines = beam_noise_free(stderr)
    assert code == 2, stderr
    assert rss < MAX_RSS_BYTES, f"{cmd} on a {kind} bomb peaked at {rss >> 20} MiB"
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"beaminst: {bomb}: "), lines
    assert "decompresses" in lines[0] and f"{64 << 20} bytes" in lines[0], lines
    assert "internal error" not in lines[0]


def test_bomb_error_names_the_component(bomb_files: dict[str, Path], tmp_path: Path) -> None:
    from beaminst.commands.api import load

    expected = {
        "pardo-bz2": "transform 'ref_AppliedPTransform_Split_14' ('Split') payload decompresses (bz2)",
        "coder-zlib": "coder ",
        "pickled-transform-zlib": "('ReadLines') payload decompresses (zlib)",
        "window-fn-bz2": "window_fn decompresses (bz2)",
    }
    for kind, path in bomb_files.items():
        with pytest.raises(ValidationError) as e:
            load(str(path))
        assert expected[kind] in str(e.value), (kind, str(e.value))
        assert "--max-decompressed-bytes" in str(e.value) and bounded.ENV in str(e.value)


def test_cap_can_be_raised_and_lowered(tmp_path: Path) -> None:
    from conftest import run_cli

    from beaminst.model.beamproto import runner_api

    wordcount = fixture_pb("wordcount")
    before = os.environ.get(bounded.ENV)
    assert run_cli("analyze", wordcount).exit_code == 0
    low = run_cli("analyze", wordcount, "--max-decompressed-bytes", "100")
    assert low.exit_code == 2 and "decompresses" in low.stderr and "more than 100 bytes" in low.stderr
    # A cap set below the default is the caller's: not "a real pickle is far smaller" (trial).
    assert "the cap set by --max-decompressed-bytes" in low.stderr and "far smaller" not in low.stderr
    via_env = run_cli("diff", wordcount, wordcount, env={bounded.ENV: "100"})
    assert via_env.exit_code == 2 and "more than 100 bytes" in via_env.stderr
    bad = run_cli("analyze", wordcount, env={bounded.ENV: "lots"})
    assert bad.exit_code == 2 and "--max-decompressed-bytes" in bad.stderr
    # A 96 MiB pickle: over the default cap, loaded once the cap is raised.
    p = load_fixture("wordcount")
    t = _transform(p, "Split")
    payload = runner_api().ParDoPayload.FromString(t.spec.payload)
    payload.do_fn.payload = base64.b64encode(bz2.compress(bytes(96 << 20)))
    t.spec.payload = payload.SerializeToString()
    big = tmp_path / "big.pb"
    big.write_bytes(serialize_pipeline(p))
    default = run_cli("analyze", str(big))
    assert default.exit_code == 2 and "a real pickle is far smaller" in default.stderr
    assert run_cli("analyze", str(big), "--max-decompressed-bytes", str(128 << 20)).exit_code == 0
    assert run_cli("graph", str(big), env={bounded.ENV: str(128 << 20)}).exit_code == 0
    assert os.environ.get(bounded.ENV) == before  # the option does not outlive the command


# --- the helper itself --------------------------------------------------------------


def _streams() -> list[bytes]:
    data = [b"", b"x", b"hello world " * 5000, os.urandom(200_000)]
    out = []
    for d in data:
        out += [bz2.compress(d), zlib.compress(d), bz2.compress(d) * 3, bz2.compress(d) + b"junk", zlib.compress(d) + b"junk"]
        out.append(zlib.compress(d, wbits=10))  # a smaller window: header 0x28
    return out


@pytest.mark.parametrize("keep", [True, False])
def test_decompress_matches_the_standard_library(keep: bool) -> None:
    for raw in _streams():
        expected = bz2.decompress(raw) if raw[:3] == b"BZh" else zlib.decompress(raw)
        assert bounded.decompress(raw, "x", keep=keep) == (expected if keep else b"")


@pytest.mark.parametrize(
    "raw", [zlib.compress(b"abc" * 100)[:-3], bz2.compress(b"abc" * 100)[:-3], b"\x78\x9cgarbage", b"BZh9garbage", b"plain"]
)
def test_decompress_corrupt(raw: bytes) -> None:
    with pytest.raises(bounded.CorruptStream):
        bounded.decompress(raw, "x")


@pytest.mark.parametrize("keep", [True, False])
def test_decompress_stops_at_the_cap(keep: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(bounded.ENV, "1000")
    assert len(bounded.decompress(zlib.compress(bytes(1000)), "x", keep=keep)) == (1000 if keep else 0)
    for raw in (zlib.compress(bytes(1001)), bz2.compress(bytes(600)) * 2):
        with pytest.raises(ValidationError, match="coder 'c' decompresses .* to more than 1000 bytes"):
            bounded.decompress(raw, "coder 'c'", keep=keep)


def test_single_stream_bz2_stops_at_the_default_cap() -> None:
    """The reported bomb was one bz2 stream (2.5 KB for 6 GB); this one is 80 bytes for 80 MiB."""
    raw = bz2.compress(bytes(80 << 20))
    for keep in (True, False):
        with pytest.raises(ValidationError, match=f"more than {64 << 20} bytes"):
            bounded.decompress(raw, "x", keep=keep)


def test_batch_workers_see_the_cap(tmp_path: Path) -> None:
    import shutil

    from conftest import run_cli

    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(fixture_pb("wordcount"), src / "wordcount.pb")
    r = run_cli("batch", str(src), "-o", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c"), "--jobs", "2", "--max-decompressed-bytes", "100")
    assert r.exit_code == 2 and "decompresses" in r.stderr and "more than 100 bytes" in r.stderr


def test_library_decompression_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unvalidated protos given to the library still never inflate past the cap."""
    from beaminst.analysis.sources import unpickled_payload_mentions
    from beaminst.model.canonical import decompress_pickle, install_independent

    monkeypatch.setenv(bounded.ENV, str(1 << 20))
    bomb = base64.b64encode(bz2.compress(bytes(8 << 20)))
    for call in (
        lambda: decompress_pickle(bomb),
        lambda: install_independent(bomb),
        lambda: unpickled_payload_mentions(bomb, b"ReadFromPubSub"),
    ):
        with pytest.raises(ValidationError, match="decompresses"):
            call()


def test_fixtures_are_far_below_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every committed fixture's pickles fit in a 1 MiB cap: 64 MiB is generous."""
    from conftest import FIXTURE_NAMES

    from beaminst.graph.validate import validate

    monkeypatch.setenv(bounded.ENV, str(1 << 20))
    for name in FIXTURE_NAMES:
        validate(load_fixture(name))


# --- cache keys: ASCII only -----------------------------------------------------------

WORDS = "ref_PCollection_PCollection_9"


@pytest.mark.parametrize(
    "key",
    [
        "é" * 10 + "-a-b-c",  # the issue's: UTF-8 bytes landed among pickle opcodes
        "a-b-c-d\n",  # a JSON Schema '$' matches before a final newline
        "a-b-c-ｄ",  # a fullwidth letter: isalnum(), not ASCII
        "a-b-c-d\u200b",
        "a*-b-c-d",
        "a/b-c-d-e",
        "a b-c-d-e",
        "a-b-c-" + "d" * 300,
    ],
)
def test_cache_key_must_be_ascii(key: str, tmp_path: Path) -> None:
    import json

    from conftest import run_cli

    from beaminst.analysis.manifest import parse_manifest
    from beaminst.errors import ManifestError

    doc = {"bindings": {"words": {"pcollection": WORDS, "cache_key": key}}}
    with pytest.raises(ManifestError) as e:
        parse_manifest(json.dumps(doc).encode())
    assert str(e.value).startswith("<manifest>: bindings/words/cache_key: "), str(e.value)
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(doc, ensure_ascii=False), "utf-8")
    out = tmp_path / "out.pb"
    r = run_cli("instrument", fixture_pb("wordcount"), "-m", str(manifest), "--cache-dir", str(tmp_path / "c"), "-o", str(out))
    assert r.exit_code == 2 and not out.exists()
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"beaminst: {manifest}: bindings/words/cache_key: "), lines
    assert lines[0].isprintable()


@pytest.mark.parametrize("key", ["0700cd3e2c-22f0bc0689d8d10d-ddb4b2046b58e0d2-95c898241d91745b", "a_1.x-B-c.d-9", "..-..-..-.."])
def test_ascii_cache_keys_still_accepted(key: str) -> None:
    import json

    from beaminst.analysis.manifest import parse_manifest

    m = parse_manifest(json.dumps({"bindings": {"words": {"pcollection": WORDS, "cache_key": key}}}).encode())
    assert m.bindings[0].cache_key == key


# --- outputs never replace an input -----------------------------------------------------


def _inputs(tmp_path: Path) -> tuple[Path, Path]:
    import shutil

    pipeline, manifest = tmp_path / "p.pb", tmp_path / "p.manifest.json"
    shutil.copy(fixture_pb("wordcount"), pipeline)
    shutil.copy(fixture_manifest("wordcount"), manifest)
    return pipeline, manifest


@pytest.mark.parametrize("which", ["pipeline", "manifest"])
@pytest.mark.parametrize("how", ["same", "relative", "symlink", "hardlink"])
@pytest.mark.parametrize("cmd", ["instrument", "background-caching", "graph"])
def test_output_never_replaces_an_input(cmd: str, how: str, which: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import run_cli

    pipeline, manifest = _inputs(tmp_path)
    target = pipeline if which == "pipeline" else manifest
    out = {"same": target, "relative": Path(".") / target.name, "symlink": tmp_path / "link", "hardlink": tmp_path / "hard"}[how]
    if how == "symlink":
        out.symlink_to(target)
    elif how == "hardlink":
        os.link(target, out)
    monkeypatch.chdir(tmp_path)
    before = {p: (p.read_bytes(), p.stat().st_ino) for p in (pipeline, manifest)}
    args = [cmd, str(pipeline), "-m", str(manifest), "-o", str(out)]
    args += ["--format", "dot"] if cmd == "graph" else ["--cache-dir", str(tmp_path / "cache")]
    r = run_cli(*args)
    assert r.exit_code == 2
    assert r.stderr.splitlines() == [f"beaminst: {out}: is the same file as the input {target}; an output never replaces an input"]
    assert {p: (p.read_bytes(), p.stat().st_ino) for p in (pipeline, manifest)} == before
    assert not (tmp_path / "cache").exists()  # refused before any work


@pytest.mark.parametrize("cmd", ["instrument", "background-caching"])
def test_an_output_inside_the_cache_directorys_full_is_refused(cmd: str, tmp_path: Path) -> None:
    """full/ holds Beam's cache files: a proto written there reads as a
    recording of its name, and a cache cleanup takes it along. Refused before
    any work, however the path is spelled (a symlinked cache directory too);
    beside full/, in the cache directory itself, is fine."""
    from conftest import run_cli

    pipeline, manifest = _inputs(tmp_path)
    (tmp_path / "cache" / "full").mkdir(parents=True)
    (tmp_path / "alias").symlink_to(tmp_path / "cache")
    for out in (tmp_path / "cache" / "full" / "o.pb", tmp_path / "alias" / "full" / "o.pb"):
        r = run_cli(cmd, str(pipeline), "-m", str(manifest), "--cache-dir", str(tmp_path / "cache"), "-o", str(out))
        assert r.exit_code == 2, r.stderr
        assert r.stderr.splitlines() == [
            f"beaminst: {out}: is inside the cache directory's full/ ({tmp_path / 'cache' / 'full'}), which holds "
            "Beam's cache files only: write the output elsewhere"
        ]
        assert os.listdir(tmp_path / "cache" / "full") == []
    if cmd == "instrument":
        r = run_cli(cmd, str(pipeline), "-m", str(manifest), "--cache-dir", str(tmp_path / "cache"),
                    "-o", str(tmp_path / "cache" / "o.pb"))
        assert r.exit_code == 0, r.stderr


def test_a_batch_destination_inside_the_cache_directorys_full_is_refused_before_it_is_made(tmp_path: Path) -> None:
    from conftest import run_cli

    src = tmp_path / "src"
    src.mkdir()
    pipeline, _ = _inputs(src)
    (tmp_path / "cache" / "full").mkdir(parents=True)
    dest = tmp_path / "cache" / "full" / "out"
    r = run_cli("batch", str(src), "-o", str(dest), "--cache-dir", str(tmp_path / "cache"))
    assert r.exit_code == 2, r.stderr
    assert r.stderr.splitlines() == [
        f"beaminst: {dest}: destination is inside the cache directory's full/ ({tmp_path / 'cache' / 'full'}), "
        "which holds Beam's cache files only: write the outputs elsewhere"
    ]
    assert os.listdir(tmp_path / "cache" / "full") == []


def test_graph_against_is_an_input_too(tmp_path: Path) -> None:
    from conftest import run_cli

    pipeline, _ = _inputs(tmp_path)
    original = tmp_path / "original.pb"
    original.write_bytes(pipeline.read_bytes())
    r = run_cli("graph", str(pipeline), "--against", str(original), "--format", "dot", "-o", str(original))
    assert r.exit_code == 2 and "an output never replaces an input" in r.stderr


def test_replaced_output_keeps_its_mode(tmp_path: Path) -> None:
    from conftest import run_cli

    pipeline, manifest = _inputs(tmp_path)
    out = tmp_path / "out.pb"
    out.write_bytes(b"old")
    out.chmod(0o600)
    r = run_cli("instrument", str(pipeline), "-m", str(manifest), "--cache-dir", str(tmp_path / "c"), "-o", str(out))
    assert r.exit_code == 0, r.stderr
    assert out.read_bytes() != b"old"
    assert out.stat().st_mode & 0o7777 == 0o600
    out.chmod(0o4755)
    assert run_cli("instrument", str(pipeline), "-m", str(manifest), "--cache-dir", str(tmp_path / "c"), "-o", str(out)).exit_code == 0
    assert out.stat().st_mode & 0o7777 == 0o755  # set-id bits are not carried over to new content
    dot = tmp_path / "g.dot"
    dot.write_text("old")
    dot.chmod(0o640)
    assert run_cli("graph", str(pipeline), "-o", str(dot)).exit_code == 0
    assert dot.stat().st_mode & 0o7777 == 0o640
    fresh = tmp_path / "new.pb"
    assert run_cli("instrument", str(pipeline), "-m", str(manifest), "--cache-dir", str(tmp_path / "c"), "-o", str(fresh)).exit_code == 0
    umask = os.umask(0)
    os.umask(umask)
    assert fresh.stat().st_mode & 0o7777 == 0o666 & ~umask


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize(
    "args",
    [
        ["instrument", fixture_pb("wordcount"), "-m", fixture_manifest("wordcount"), "--cache-dir", "{tmp}/c", "-o", "-"],
        ["graph", fixture_pb("wordcount")],
        ["analyze", fixture_pb("wordcount")],
        ["analyze", fixture_pb("wordcount"), "--json"],
        ["diff", fixture_pb("wordcount"), fixture_pb("multi_output"), "--json"],
    ],
)
def test_full_stdout_is_one_output_error(args: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("BEAMINST_DEBUG", None)
    with open("/dev/full", "wb") as full:
        proc = subprocess.run(
            [*CLI_PREFIX, *(a.format(tmp=tmp_path) for a in args)], stdout=full, stderr=subprocess.PIPE, env=env, timeout=300
        )
    lines = beam_noise_free(proc.stderr.decode())
    assert proc.returncode == 2, lines
    assert lines == ["beaminst: <stdout>: cannot write to stdout: No space left on device"], lines


# --- control characters never reach a terminal or a DOT file raw -----------------------

EVIL = "Split\x1b]0;pwned\x07\x1b[31m[red]RED[/red]\x00nul\u202eabc\\"
RAW = ("\x1b", "\x07", "\x00", "\u202e")


@pytest.fixture
def evil_files(tmp_path: Path) -> tuple[Path, Path]:
    import json

    p = load_fixture("wordcount")
    _transform(p, "Split").unique_name = EVIL
    _transform(p, "Format").unique_name = 'Fo"rm\nat[bold]'
    pipeline = tmp_path / "evil.pb"
    pipeline.write_bytes(serialize_pipeline(p))
    manifest = tmp_path / "evil.manifest.json"
    manifest.write_text(json.dumps({"bindings": {"w\x1b[31m[red]": "ref_PCollection_PCollection_9"}}))
    return pipeline, manifest


def test_human_output_escapes_names(evil_files: tuple[Path, Path], tmp_path: Path) -> None:
    from conftest import run_cli

    pipeline, manifest = evil_files
    cache = str(tmp_path / "cache")
    wide = {"COLUMNS": "2000"}  # no folding inside table cells
    runs = {
        "analyze": run_cli("analyze", str(pipeline), "-m", str(manifest), env=wide),
        "instrument": run_cli("instrument", str(pipeline), "-m", str(manifest), "--cache-dir", cache, "-o", str(tmp_path / "o.pb")),
        "diff": run_cli("diff", fixture_pb("wordcount"), str(pipeline), "--format", "human"),
        "diff back": run_cli("diff", str(pipeline), fixture_pb("wordcount"), "--format", "human"),
    }
    for name, r in runs.items():
        assert r.exit_code in (0, 1), (name, r.stderr)
        text = r.stdout + r.stderr
        # Tabs separate piped fields (a tab inside a name prints as \x09); nothing else unprintable.
        assert all(line.replace("\t", "").isprintable() for line in text.splitlines()), name
    # Escaped, and rich markup in a name is printed, not applied.
    assert "Split\\x1b]0;pwned\\x07\\x1b[31m[red]RED[/red]\\x00nul\\u202eabc\\" in runs["analyze"].stdout
    assert "[red]RED[/red]" in runs["diff"].stdout and "at[bold]" in runs["diff"].stdout
    assert "w\\x1b[31m[red]" in runs["instrument"].stdout


def test_error_lines_escape_what_they_quote(tmp_path: Path) -> None:
    from conftest import run_cli

    r = run_cli("analyze", str(tmp_path / "no\x1b[31mfile.pb"))
    assert r.exit_code == 2 and "\x1b" not in r.stderr and "\\x1b" in r.stderr and len(r.stderr.splitlines()) == 1


def _dot_accepts(dot: str, tmp_path: Path) -> None:
    import shutil
    import xml.dom.minidom

    if shutil.which("dot") is None:
        pytest.skip("needs Graphviz's dot (apt-get install graphviz)")
    path = tmp_path / "g.dot"
    path.write_text(dot, "utf-8")
    proc = subprocess.run(["dot", "-Tsvg", str(path)], capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    xml.dom.minidom.parseString(proc.stdout)  # control characters would make it invalid XML


def test_dot_escapes_names(evil_files: tuple[Path, Path], tmp_path: Path) -> None:
    from beaminst.commands.api import load
    from beaminst.commands.render import render_dot

    pipeline, _ = evil_files
    dot = render_dot(load(str(pipeline)).index, title="t\x00\x1b")
    assert not any(ch in dot for ch in RAW)
    assert '"Fo\\"rm\\\\x0aat[bold]\\nFo' not in dot  # a newline in a name is not a line break
    assert "Fo\\\"rm\\\\x0aat[bold]" in dot
    _dot_accepts(dot, tmp_path)
    against = render_dot(load(str(pipeline)).index, against=load(fixture_pb("wordcount")).index)
    _dot_accepts(against, tmp_path)


def test_dot_ids_stay_distinct() -> None:
    from beaminst.commands.render import node_id, quote

    names = ["a\x00", "a\\x00", "a\\", "a\\\\", 'a"', "a"]
    assert len({node_id(n) for n in names}) == len(names)
    assert quote("a\x00", "b") == '"a\\\\x00\\nb"'


# --- deep pipelines, junk caches ---------------------------------------------------------


def deep_chain(depth: int) -> Any:
    """Composites nested ``depth`` deep around one Impulse."""
    from beaminst.model.beamproto import runner_api

    r = runner_api()
    p = r.Pipeline()
    c = p.components
    c.coders["c"].spec.urn = "beam:coder:bytes:v1"
    c.coders["w"].spec.urn = "beam:coder:global_window:v1"
    ws = c.windowing_strategies["ws"]
    ws.window_fn.urn = "beam:window_fn:global_windows:v1"
    ws.window_coder_id = "w"
    pc = c.pcollections["p"]
    pc.unique_name, pc.coder_id, pc.windowing_strategy_id, pc.is_bounded = "p", "c", "ws", r.IsBounded.BOUNDED
    for i in range(depth):
        t = c.transforms[f"t{i}"]
        t.unique_name = f"c{i}"
        t.outputs["out"] = "p"
        t.subtransforms.append(f"t{i + 1}" if i + 1 < depth else "leaf")
    leaf = c.transforms["leaf"]
    leaf.unique_name, leaf.spec.urn = "leaf", "beam:transform:impulse:v1"
    leaf.outputs["out"] = "p"
    p.root_transform_ids.append("t0")
    return p


def test_deep_subtransform_chain_draws(tmp_path: Path) -> None:
    from conftest import run_cli

    path = tmp_path / "deep.pb"
    path.write_bytes(serialize_pipeline(deep_chain(5000)))
    out = tmp_path / "deep.dot"
    r = run_cli("graph", str(path), "-o", str(out))
    assert r.exit_code == 0, r.stderr
    dot = out.read_text()
    assert dot.count("subgraph") == 5000 and max(len(line) - len(line.lstrip()) for line in dot.splitlines()) <= 70
    assert run_cli("graph", str(path), "--against", str(path), "--format", "dot").exit_code == 0
    assert run_cli("diff", str(path), str(path)).exit_code == 0
    small = tmp_path / "deep1000.pb"
    small.write_bytes(serialize_pipeline(deep_chain(1000)))
    assert run_cli("graph", str(small), "-o", str(out)).exit_code == 0
    _dot_accepts(out.read_text(), tmp_path)


def test_junk_cache_warnings_are_summarized(tmp_path: Path) -> None:
    import json

    from conftest import run_cli

    from beaminst.commands.humanout import MAX_LISTED

    full = tmp_path / "cache" / "full"
    full.mkdir(parents=True)
    for i in range(300):
        (full / f"k{i}-00000-of-00002").write_bytes(EMPTY_SHARD)
    args = [fixture_pb("wordcount"), "-m", fixture_manifest("wordcount"), "--cache-dir", str(tmp_path / "cache")]
    analyzed = run_cli("analyze", *args)
    assert analyzed.exit_code == 0
    assert analyzed.stdout.count("partial shard set") == MAX_LISTED
    assert f"... and {300 - MAX_LISTED} more cache problems" in analyzed.stdout
    instrumented = run_cli("instrument", *args, "-o", str(tmp_path / "o.pb"))
    assert instrumented.exit_code == 0
    assert instrumented.stdout.count("partial shard set") == MAX_LISTED
    assert f"... and {300 - MAX_LISTED} more warnings" in instrumented.stdout
    as_json = json.loads(run_cli("analyze", *args, "--json").stdout)
    assert len(as_json["cache_problems"]) == 300  # machines get everything


# --- command line: one-line errors, checked options -------------------------------------


@pytest.mark.parametrize("which", ["pipeline", "manifest", "against", "diff"])
def test_unreadable_input_is_one_line(which: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As a user without read permission sees it (the suite may run as root,
    which reads anything): click must not check, beaminst names the file."""
    import builtins

    from conftest import run_cli

    pipeline, manifest = _inputs(tmp_path)
    secret = {"pipeline": pipeline, "manifest": manifest, "against": pipeline, "diff": pipeline}[which]
    real_open, real_access = builtins.open, os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if str(p) == str(secret) else real_access(p, mode, *a, **k))

    def guarded_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if str(file) == str(secret):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    args = {
        "pipeline": ["analyze", str(pipeline)],
        "manifest": ["analyze", fixture_pb("wordcount"), "-m", str(manifest)],
        "against": ["graph", fixture_pb("wordcount"), "--against", str(pipeline)],
        "diff": ["diff", fixture_pb("wordcount"), str(pipeline)],
    }[which]
    r = run_cli(*args)
    assert r.exit_code == 2
    assert r.stderr.splitlines() == [f"beaminst: {secret}: permission denied"], r.stderr


def test_every_input_path_leaves_reading_to_beaminst() -> None:
    """No click.Path of a command checks readability (that is a usage error)."""
    import click

    from beaminst.cli import main

    for name, cmd in main.commands.items():
        for param in cmd.params:
            if isinstance(param.type, click.Path):
                assert not param.type.readable, (name, param.name)


@pytest.mark.parametrize("urn", ["", " ", "a\x1bb"])
@pytest.mark.parametrize("cmd", ["analyze", "background-caching", "batch"])
def test_empty_unbounded_urn_is_a_usage_error(cmd: str, urn: str, tmp_path: Path) -> None:
    from conftest import run_cli

    args = {
        "analyze": ["analyze", fixture_pb("wordcount")],
        "background-caching": ["background-caching", fixture_pb("wordcount"), "--cache-dir", str(tmp_path / "c"), "-o", str(tmp_path / "o.pb")],
        "batch": ["batch", str(tmp_path), "-o", str(tmp_path / "d"), "--cache-dir", str(tmp_path / "c")],
    }[cmd]
    r = run_cli(*args, "--unbounded-urn", urn)
    assert r.exit_code == 2 and "--unbounded-urn" in r.stderr and "is not a URN" in r.stderr
    assert not (tmp_path / "o.pb").exists()


@pytest.mark.parametrize("urn", ["", "  ", "a\x1b"])
def test_blank_unbounded_urn_in_the_library(urn: str) -> None:
    from beaminst.errors import BeaminstError
    from beaminst.options import SourceRules

    # The CLI's own check (test above), refused when the rules are made.
    with pytest.raises(BeaminstError, match="^--unbounded-urn: .* is not a URN$"):
        SourceRules([urn])


@pytest.mark.parametrize(
    "endpoint", ["", "localhost", "localhost:", ":80", "localhost:0", "localhost:65536", "local host:1", "a\x1b:1", "h:1\n", "é:1", "h:1:2"]
)
def test_bad_test_stream_endpoint(endpoint: str, tmp_path: Path) -> None:
    from conftest import run_cli

    from beaminst.errors import BeaminstError
    from beaminst.options import RewriteOptions

    out = tmp_path / "o.pb"
    r = run_cli("instrument", fixture_pb("pubsub_one"), "-m", fixture_manifest("pubsub_one"), "--cache-dir", str(tmp_path), "-o", str(out), "--test-stream-endpoint", endpoint)
    assert r.exit_code == 2 and "--test-stream-endpoint" in r.stderr and "is not HOST:PORT" in r.stderr
    assert not out.exists()
    with pytest.raises(BeaminstError, match="^--test-stream-endpoint: .* is not HOST:PORT"):
        RewriteOptions(str(tmp_path), test_stream_endpoint=endpoint)


@pytest.mark.parametrize("endpoint", ["localhost:12345", "127.0.0.1:1", "[::1]:65535", "test-stream.svc.cluster.local:8080"])
def test_good_test_stream_endpoint(endpoint: str, tmp_path: Path) -> None:
    from beaminst.options import parse_endpoint

    assert parse_endpoint(endpoint) == endpoint


def test_many_payloads_each_under_the_cap_are_bounded_in_all(monkeypatch):
    """The cap is per payload; a file of many distinct payloads, each just
    under it, would still inflate without end: one file's pickles may
    inflate to 16 caps in all, then one line names the total."""
    from beaminst.graph import validate as validate_module
    from beaminst.graph.validate import validate
    from beaminst.model.beamproto import runner_api

    monkeypatch.setenv(bounded.ENV, str(1 << 20))

    def pipeline(payloads: int):
        proto = load_fixture("wordcount")
        ts = proto.components.transforms
        pardos = sorted(t for t, tr in ts.items() if tr.spec.urn == "beam:transform:pardo:v1")
        assert len(pardos) >= 4
        for i in range(payloads):
            tid = pardos[i % len(pardos)]
            p = runner_api().ParDoPayload.FromString(ts[tid].spec.payload)
            # Distinct (no memo hit), each 0.875 MiB inflated: under the 1 MiB cap.
            bomb = base64.b64encode(zlib.compress(bytes([i % 251]) * (7 << 17)))
            p.side_inputs[f"s{i}"].view_fn.payload = bomb
            ts[tid].spec.payload = p.SerializeToString()
            ts[tid].inputs[f"s{i}"] = next(iter(ts[tid].inputs.values()))
        return proto

    with pytest.raises(ValidationError, match="in all"):
        validate(pipeline(20))  # 17.5 MiB > 16 MiB
    validate_module._INFLATE_CHECKED.clear()
    validate(pipeline(12))  # 10.5 MiB: within
