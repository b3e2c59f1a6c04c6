"""Hardening: every bad input gets a clear error, nothing is ever lost.

Property-based and fuzz tests (Hypothesis) over the whole input surface: the
pipeline loader (binary / text / JSON), the graph validator, the binding
manifest and the cache directory. Every generated case is run through every
command (``analyze``, ``instrument``, ``background-caching``, ``diff`` and
``batch``: :data:`COMMANDS`, each of which must exist) and held to one contract:

* exit code 0 or 2 (``diff`` also 1: differences found);
* never a traceback; on failure exactly one stderr line (after the Beam SDK's
  import noise) ``beaminst: <file>: <problem>`` naming the input at fault,
  printable, and never an "internal error" (a bad input is not a bug);
* nothing left behind on failure: the output directory gets no file (no
  ``.*.tmp`` either) and stdout no partial proto; on success exactly the
  output appears and it passes the validator plus ``check_unreferenced``;
* inputs byte-identical afterwards (pipeline, manifest, every file under the
  cache directory).

Most cases run in-process (``conftest.run_cli``, exceptions not caught, so an
escaping exception fails the test); a sample runs in real subprocesses.

Budgets come from the Hypothesis profile (``tests/hypothesis_profiles.py``):
``ci`` by default, ``--hypothesis-profile=soak`` for thousands of cases. The
number of cases tried is printed at the end of the run. Every violation
fails the test: there is no list of excused bugs. A bug found and fixed keeps
its reproducer as a regression test at the end of this file.
"""

from __future__ import annotations

import contextlib
import copy
import cProfile
import functools
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    CLI_PREFIX,
    EMPTY_SHARD,
    FIXTURE_NAMES,
    HARDENING_CASES,
    REPO,
    UNBOUNDED_FIXTURES,
    beam_noise_free,
    fixture_manifest,
    fixture_pb,
    load_fixture,
    run_cli,
    run_cli_subprocess,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_profiles import budget

from beaminst.batch.freshness import STATE_FILE as BATCH_STATE
from beaminst.errors import BeaminstError, ProtoLoadError, ValidationError
from beaminst.graph.validate import check_unreferenced, validate
from beaminst.model.beamproto import runner_api
from beaminst.model.protoio import FORMATS, parse_pipeline, serialize_pipeline

EXT = {"binary": ".pb", "text": ".textproto", "json": ".json"}
OUT_EXTS = (".pb", ".textproto", ".json")
PUBSUB_READ = "beam:transform:pubsub_read:v1"
TEST_STREAM = "beam:transform:teststream:v1"
PAR_DO = "beam:transform:pardo:v1"


# Every command under the contract. Not filtered by what the CLI has: a
# command that disappears fails test_every_contract_command_exists (and every
# contract run), it is never silently left out.
COMMANDS = ("analyze", "instrument", "background-caching", "diff", "batch")
WRITERS = tuple(c for c in COMMANDS if c in ("instrument", "background-caching"))


def count(kind: str) -> None:
    """One generated case tried (printed by conftest's terminal summary)."""
    HARDENING_CASES[kind] = HARDENING_CASES.get(kind, 0) + 1


# --- fixtures, once ------------------------------------------------------------------


@functools.cache
def fixture_proto(name: str) -> Any:
    """The committed fixture (shared: copy before mutating)."""
    return load_fixture(name)


@functools.cache
def serialized(name: str, fmt: str) -> bytes:
    return serialize_pipeline(fixture_proto(name), fmt)  # type: ignore[arg-type]


def fresh(name: str) -> Any:
    p = type(fixture_proto(name))()
    p.CopyFrom(fixture_proto(name))
    return p


@functools.cache
def fixture_analysis(name: str) -> Any:
    from beaminst.commands.api import analyze_files

    return analyze_files(fixture_pb(name), fixture_manifest(name))


@functools.cache
def fixture_manifest_doc(name: str) -> dict[str, Any]:
    return json.loads(Path(fixture_manifest(name)).read_text("utf-8"))


def streaming(name: str) -> bool:
    return fixture_analysis(name).has_unbounded_sources


# --- running a command and holding it to the contract -----------------------------------


@dataclass
class Case:
    """One generated input set, in its own directory ``root``."""

    root: Path
    pipeline: str  # a path, or "-" (then ``stdin`` holds the bytes)
    manifest: str | None
    cache_dir: str
    blame: tuple[str, ...]  # the inputs an error may name
    stdin: bytes | None = None
    flags: tuple[str, ...] = ()
    out_ext: str = ".pb"  # "-" for stdout
    allow_empty: bool = True  # background-caching on a pipeline without sources
    fixture: str | None = None

    @property
    def out_dir(self) -> Path:
        d = self.root / "out"
        d.mkdir(exist_ok=True)
        return d

    def watched(self) -> list[str]:
        return [p for p in (self.pipeline, self.manifest, self.cache_dir) if p and p != "-"]


@dataclass
class Run:
    cmd: str
    args: list[str]
    exit_code: int
    stdout: bytes
    stderr: str

    def describe(self) -> str:
        return f"beaminst {' '.join(self.args)}\nexit {self.exit_code}\nstderr: {self.stderr[-2000:]!r}"


def invoke(args: list[str], stdin: bytes | None) -> Run:
    """``conftest.run_cli``, but keeping stdout as bytes when it carries a proto."""
    if "-o" in args and args[args.index("-o") + 1] == "-":
        from click.testing import CliRunner

        from beaminst.cli import main

        runner = CliRunner(env={"COLUMNS": "200"})
        r = runner.invoke(main, args, input=stdin, catch_exceptions=False)
        return Run(args[0], args, r.exit_code, r.stdout_bytes, r.stderr)
    res = run_cli(*args, input=stdin)
    return Run(args[0], args, res.exit_code, res.stdout.encode("utf-8", "surrogateescape"), res.stderr)


def command_args(cmd: str, case: Case, out: str) -> list[str] | None:
    """The command line for ``cmd`` on ``case``; None when it does not apply."""
    base = [case.pipeline]
    if case.manifest is not None:
        base += ["-m", case.manifest]
    if cmd == "analyze":
        return [cmd, *base, "--cache-dir", case.cache_dir, *case.flags]
    if cmd in ("instrument", "background-caching"):
        extra = ["--allow-empty"] if cmd == "background-caching" and case.allow_empty else []
        return [cmd, *base, "--cache-dir", case.cache_dir, "-o", out, *extra, *case.flags]
    if cmd == "diff":  # the generated pipeline against the fixture it came from
        other = fixture_pb(case.fixture or "wordcount")
        return [cmd, case.pipeline, other, *(["--json"] if "--json" in case.flags else [])]
    if cmd == "batch":  # SRC is the directory holding just the generated pipeline
        if case.pipeline == "-" or case.manifest == "-" or out == "-":
            return None
        args = [cmd, os.path.dirname(case.pipeline), "-o", str(case.out_dir), "--cache-dir", case.cache_dir,
                "--jobs", "1", "--force", *case.flags]
        if case.manifest is not None:
            args += ["-m", case.manifest]
        return args
    return None


def test_every_contract_command_exists():
    from beaminst.cli import main

    assert [c for c in COMMANDS if c not in main.commands] == []


def allowed_exit_codes(cmd: str) -> set[int]:
    return {0, 1, 2} if cmd == "diff" else {0, 2}


def snapshot(paths: list[str]) -> dict[str, tuple[Any, ...]]:
    """Everything under ``paths``: file bytes, link targets, directories, modes."""
    out: dict[str, tuple[Any, ...]] = {}

    def one(p: str) -> None:
        if not os.path.lexists(p):
            out[p] = ("missing",)
        elif os.path.islink(p):
            out[p] = ("link", os.readlink(p))
        elif os.path.isdir(p):
            out[p] = ("dir", stat.S_IMODE(os.lstat(p).st_mode))
            try:
                names = sorted(os.listdir(p))
            except OSError:
                return
            for n in names:
                one(os.path.join(p, n))
        else:
            st_mode = os.lstat(p).st_mode
            mode = stat.S_IMODE(st_mode)
            if not stat.S_ISREG(st_mode):  # a FIFO or socket: never open it
                out[p] = ("special", st_mode)
                return
            try:
                with open(p, "rb") as f:
                    out[p] = ("file", mode, f.read())
            except OSError:
                out[p] = ("file", mode, None)

    for p in paths:
        one(p)
    return out


def inputs_changed(before: dict[str, tuple[Any, ...]], after: dict[str, tuple[Any, ...]], case: Case) -> list[str]:
    """What changed in the inputs. A cache directory (and its ``full/``) may be
    created empty: Beam's StreamingCache makes them, as Interactive Beam does."""
    creatable = {case.cache_dir, os.path.join(case.cache_dir, "full")}
    problems = []
    for p in sorted(set(before) | set(after)):
        b, a = before.get(p, ("missing",)), after.get(p, ("missing",))
        if a == b:
            continue
        if b == ("missing",) and p in creatable and a[0] == "dir":
            continue
        problems.append(f"{p}: {b[:2]} -> {a[:2]}")
    return problems


def listing(d: Path) -> list[str]:
    return sorted(os.listdir(d))


def load_output(data: bytes, where: str) -> Any:
    proto, _ = parse_pipeline(data, where)
    validate(proto)
    check_unreferenced(proto)
    return proto


def contract_problems(run: Run, case: Case, out: str, out_before: list[str]) -> list[str]:
    problems: list[str] = []
    if run.exit_code not in allowed_exit_codes(run.cmd):
        problems.append(f"exit code {run.exit_code}")
    if "Traceback" in run.stderr:
        problems.append("a traceback on stderr")
    out_after = listing(case.out_dir)
    if run.exit_code == 2:
        lines = beam_noise_free(run.stderr)
        if len(lines) != 1:
            problems.append(f"{len(lines)} stderr lines, expected one")
        for line in lines[:1]:
            blame = case.blame
            if run.cmd == "batch":  # batch may also blame SRC or DEST as a whole
                blame += (os.path.dirname(case.pipeline), str(case.out_dir))
            if not any(line.startswith(f"beaminst: {name}: ") and len(line) > len(f"beaminst: {name}: ") + 2 for name in blame):
                problems.append(f"error line does not name one of {blame}")
            if "internal error" in line:
                problems.append("a bad input reported as an internal error")
            if not line.isprintable():
                problems.append("unprintable characters in the error line")
        if out_after != out_before:
            problems.append(f"files left behind on failure: {sorted(set(out_after) - set(out_before))}")
        if run.stdout.strip() and run.cmd != "batch":  # batch prints its per-file table anyway
            problems.append(f"stdout not empty on failure: {run.stdout[:80]!r}")
    elif run.exit_code == 1:  # diff: differences found, nothing written
        if out_after != out_before:
            problems.append(f"output directory changed: {out_after}")
    elif run.exit_code == 0:
        new = sorted(set(out_after) - set(out_before))
        if run.cmd == "batch":  # the output, and batch's freshness record beside it
            if set(new) - {os.path.basename(case.pipeline), BATCH_STATE}:
                problems.append(f"output directory gained {new}")
            for name in set(new) - {BATCH_STATE}:
                try:
                    load_output((case.out_dir / name).read_bytes(), name)
                except BeaminstError as e:
                    problems.append(f"written output is invalid: {e}")
        elif run.cmd in WRITERS and out != "-":
            if new != [os.path.basename(out)]:
                problems.append(f"output directory gained {new}, expected only {os.path.basename(out)}")
            else:
                try:
                    load_output(Path(out).read_bytes(), out)
                except BeaminstError as e:
                    problems.append(f"written output is invalid: {e}")
        else:
            if new:
                problems.append(f"output directory gained {new}")
            if run.cmd in WRITERS:
                try:
                    load_output(run.stdout, "<stdout>")
                except BeaminstError as e:
                    problems.append(f"proto on stdout is invalid: {e}")
    return problems


def run_contract(case: Case, commands: tuple[str, ...] = COMMANDS) -> dict[str, Run]:
    """Run every command on ``case`` and assert the contract; returns the runs."""
    runs: dict[str, Run] = {}
    for cmd in commands:
        out = "-" if case.out_ext == "-" else str(case.out_dir / f"result{case.out_ext}")
        args = command_args(cmd, case, out)
        if args is None:
            continue
        before = snapshot(case.watched())
        out_before = listing(case.out_dir)
        run = invoke(args, case.stdin)
        runs[cmd] = run
        changed = inputs_changed(before, snapshot(case.watched()), case)
        assert not changed, f"inputs modified: {changed}\n{run.describe()}"
        problems = contract_problems(run, case, out, out_before)
        if problems:
            pytest.fail(f"contract violated: {problems}\n{run.describe()}")
        for name in os.listdir(case.out_dir):  # fresh output directory for the next command
            p = case.out_dir / name
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    return runs


@contextlib.contextmanager
def work_budget(max_calls: int) -> Iterator[None]:
    """Fail if the block makes more than ``max_calls`` Python function calls
    (cProfile's count, one-time imports included). Work, not wall-clock time:
    a loaded CI machine runs the block slower, never longer. The time to
    reject huge inputs is measured in ``bench/bench_rejection.py``."""
    profile = cProfile.Profile()
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
    calls = sum(entry.callcount for entry in profile.getstats())
    assert calls <= max_calls, f"{calls:,} function calls, over the budget of {max_calls:,}"


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    """A per-example temporary directory (Hypothesis examples cannot share tmp_path)."""
    d = Path(tempfile.mkdtemp(prefix="beaminst-hardening-"))
    try:
        yield d
    finally:
        for root, dirs, _files in os.walk(d):
            for x in dirs:
                if not os.path.islink(os.path.join(root, x)):
                    with contextlib.suppress(OSError):
                        os.chmod(os.path.join(root, x), 0o755)
        with contextlib.suppress(OSError):
            os.chmod(d, 0o755)
        shutil.rmtree(d, ignore_errors=True)


def _error_line(run: Run) -> str:
    lines = beam_noise_free(run.stderr)
    return lines[0] if lines else ""


# --- building cases ------------------------------------------------------------------------

FLAG_SETS = (
    (),
    ("--json",),
    ("--infer-unbounded",),
    ("--unbounded-urn", TEST_STREAM),
    ("--json", "--infer-unbounded", "--unbounded-urn", TEST_STREAM),
)


@st.composite
def cli_options(draw: Any) -> dict[str, Any]:
    """Flags, output form and --allow-empty for one case."""
    return {
        "flags": draw(st.sampled_from(FLAG_SETS)),
        "out_ext": draw(st.sampled_from((*OUT_EXTS, "-"))),
        "allow_empty": draw(st.booleans()),
    }


def only_input_errors(options: dict[str, Any]) -> dict[str, Any]:
    """For cases that vary one input and keep the fixture's pipeline:
    --allow-empty, so background-caching on a pipeline without sources does
    not fail for a reason about the (valid) pipeline."""
    return {**options, "allow_empty": True}


def make_case(
    root: Path,
    pipeline: bytes | None,
    *,
    fixture: str | None,
    ext: str = ".pb",
    manifest: bytes | None = None,
    pipeline_via_stdin: bool = False,
    manifest_via_stdin: bool = False,
    cache_dir: str | None = None,
    blame: tuple[str, ...] = ("pipeline", "manifest"),
    options: dict[str, Any] | None = None,
) -> Case:
    """Write the inputs under ``root`` (the pipeline alone in ``root/in``, as
    batch wants it) and describe the case. ``pipeline=None``: the fixture's own file."""
    (root / "in").mkdir()
    stdin = None
    if pipeline is None:
        assert fixture is not None
        pipeline = Path(fixture_pb(fixture)).read_bytes()
    if pipeline_via_stdin:
        pipe_arg, stdin = "-", pipeline
    else:
        pipe_path = root / "in" / f"pipeline{ext}"
        pipe_path.write_bytes(pipeline)
        pipe_arg = str(pipe_path)
    man_arg = None
    if manifest is not None:
        if manifest_via_stdin and not pipeline_via_stdin:
            man_arg, stdin = "-", manifest
        else:
            (root / "m.json").write_bytes(manifest)
            man_arg = str(root / "m.json")
    cache = cache_dir or str(root / "cache")
    names = {
        "pipeline": "<stdin>" if pipe_arg == "-" else pipe_arg,
        "manifest": "<stdin>" if man_arg == "-" else man_arg,
        "cache": cache,
    }
    opts = options or {}
    return Case(
        root=root,
        pipeline=pipe_arg,
        manifest=man_arg,
        cache_dir=cache,
        blame=tuple(n for k, n in names.items() if k in blame and n is not None),
        stdin=stdin,
        flags=tuple(opts.get("flags", ())),
        out_ext=opts.get("out_ext", ".pb"),
        allow_empty=opts.get("allow_empty", True),
        fixture=fixture,
    )


def fixture_manifest_bytes(name: str) -> bytes:
    return Path(fixture_manifest(name)).read_bytes()


def error_line_ok(e: BeaminstError, source: str) -> None:
    msg = str(e)
    assert msg.startswith(f"{source}: "), msg
    assert "\n" not in msg and msg.isprintable(), repr(msg)
    assert e.exit_code == 2


# --- 1. the proto loader ---------------------------------------------------------------------

WRONG_TYPES = (
    "Components", "PTransform", "ParDoPayload", "PCollection", "Coder",
    "WindowingStrategy", "Environment", "FunctionSpec", "ReadPayload",
)


def wrong_message(name: str, kind: str, i: int) -> Any:
    """A real message of another type, taken from fixture ``name``."""
    rapi = runner_api()
    c = fixture_proto(name).components

    def nth(m: Any) -> Any:
        keys = sorted(m)
        return m[keys[i % len(keys)]]

    if kind == "Components":
        return c
    if kind == "PTransform":
        return nth(c.transforms)
    if kind == "ParDoPayload":
        pardos = sorted(t for t, x in c.transforms.items() if x.spec.urn == PAR_DO and x.spec.payload)
        return rapi.ParDoPayload.FromString(c.transforms[pardos[i % len(pardos)]].spec.payload)
    if kind == "PCollection":
        return nth(c.pcollections)
    if kind == "Coder":
        return nth(c.coders)
    if kind == "WindowingStrategy":
        return nth(c.windowing_strategies)
    if kind == "Environment":
        return nth(c.environments)
    if kind == "FunctionSpec":
        return nth(c.transforms).spec
    read = rapi.ReadPayload(is_bounded=rapi.IsBounded.UNBOUNDED)
    read.source.urn = "beam:source:pickled_python:v1"
    return read


def encode_message(msg: Any, fmt: str) -> bytes:
    from google.protobuf import json_format, text_format

    if fmt == "binary":
        return msg.SerializeToString(deterministic=True)
    if fmt == "text":
        return text_format.MessageToString(msg).encode("utf-8")
    return json_format.MessageToJson(msg).encode("utf-8")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def deeply_nested(form: str, depth: int) -> bytes:
    if form == "json_list":
        return b"[" * depth + b"]" * depth
    if form == "json_object":
        return b'{"a": ' * depth + b"1" + b"}" * depth
    if form == "json_in_pipeline":
        return b'{"components": {"transforms": {"t": {"uniqueName": ' + b"[" * depth + b"]" * depth + b"}}}}"
    if form == "text_messages":
        return b"components { " * depth + b"}" * depth
    if form == "binary_groups":  # unknown field 15, start-group, nested
        return bytes([(15 << 3) | 3]) * depth
    inner = b""  # binary_length_delimited: unknown field 15 inside itself
    for _ in range(min(depth, 2000)):
        inner = bytes([(15 << 3) | 2]) + _varint(len(inner)) + inner
    return inner


CORRUPTIONS = ("truncate", "bitflip", "splice", "wrong_type", "random_bytes", "random_text", "blank", "nested", "junk_around")
NESTED_FORMS = ("json_list", "json_object", "json_in_pipeline", "text_messages", "binary_groups", "binary_length_delimited")


@st.composite
def corrupt_pipeline(draw: Any) -> tuple[str, str, bytes, str]:
    """(what was done, fixture, bytes, file extension)."""
    name = draw(st.sampled_from(FIXTURE_NAMES))
    fmt = draw(st.sampled_from(FORMATS))
    data = serialized(name, fmt)
    kind = draw(st.sampled_from(CORRUPTIONS))
    what = f"{kind} {fmt} {name}"
    if kind == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif kind == "bitflip":
        buf = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            buf[draw(st.integers(0, len(buf) - 1))] ^= 1 << draw(st.integers(0, 7))
        data = bytes(buf)
    elif kind == "splice":
        i = draw(st.integers(0, len(data)))
        j = draw(st.integers(i, min(len(data), i + 64)))
        op = draw(st.sampled_from(("delete", "duplicate", "overwrite", "insert")))
        junk = draw(st.binary(min_size=1, max_size=16))
        data = {
            "delete": data[:i] + data[j:],
            "duplicate": data[:j] + data[i:j] + data[j:],
            "overwrite": data[:i] + junk + data[i + len(junk):],
            "insert": data[:i] + junk + data[i:],
        }[op]
        what += f" {op}"
    elif kind == "wrong_type":
        msg_kind = draw(st.sampled_from(WRONG_TYPES))
        data = encode_message(wrong_message(name, msg_kind, draw(st.integers(0, 50))), fmt)
        what += f" {msg_kind}"
    elif kind == "random_bytes":
        data = draw(st.binary(max_size=512))
    elif kind == "random_text":
        data = draw(st.text(max_size=200)).encode("utf-8")
    elif kind == "blank":
        data = draw(st.sampled_from((b"", b" ", b"\n\n", b"\t \r\n", b"\xef\xbb\xbf", b"\xef\xbb\xbf  \n", b"\x00")))
    elif kind == "nested":
        form = draw(st.sampled_from(NESTED_FORMS))
        data = deeply_nested(form, draw(st.integers(1, 5000)))
        what += f" {form}"
    else:  # junk_around
        data = draw(st.binary(max_size=16)) + data + draw(st.binary(max_size=16))
    ext = draw(st.sampled_from((EXT[fmt], ".pb", ".textproto", ".json", ".bin", "")))
    return what, name, data, ext


@settings(max_examples=budget(3))
@given(corrupt_pipeline())
def test_loader_raises_only_proto_load_errors(corruption):
    """parse_pipeline gives a Pipeline or a one-line ProtoLoadError naming the
    source; what loads, validate() accepts or rejects with a ValidationError."""
    from beaminst.model.protoio import format_from_extension

    what, _name, data, ext = corruption
    count("loader (library)")
    source = f"input{ext}"
    try:
        proto, fmt = parse_pipeline(data, source, format_from_extension(source))
    except ProtoLoadError as e:
        error_line_ok(e, source)
        return
    assert fmt in FORMATS
    try:
        validate(proto)
    except ValidationError as e:
        assert "\n" not in str(e) and str(e).isprintable(), what


@settings(max_examples=budget(1))
@given(corrupt_pipeline(), st.booleans(), cli_options())
def test_loader_contract_every_command(corruption, via_stdin, options):
    """A corrupt pipeline file (or stdin) through every command."""
    _what, name, data, ext = corruption
    count("loader (cli)")
    with workdir() as root:
        case = make_case(
            root, data, fixture=name, ext=ext, manifest=fixture_manifest_bytes(name),
            pipeline_via_stdin=via_stdin, options=options,
        )
        run_contract(case)


# --- 2. the graph validator ---------------------------------------------------------------------

COMPONENT_MAPS = {
    "transform": "transforms",
    "pcollection": "pcollections",
    "coder": "coders",
    "windowing strategy": "windowing_strategies",
    "environment": "environments",
}
GHOST = st.one_of(
    st.text(max_size=12),
    st.sampled_from(("ghost", "", " ", "None", "'", '"', "[/x]", "a\nb", "\u2028", "ref_PCollection_PCollection_999")),
)
TAGS = st.one_of(st.sampled_from(("None", "loop", "extra", "python_side_input0", "python_side_input7")), st.text(max_size=8))

Draw = Callable[[Any], Any]


def id_map(p: Any) -> dict[str, list[str]]:
    return {kind: sorted(getattr(p.components, attr)) for kind, attr in COMPONENT_MAPS.items()}


def any_ref(draw: Draw, p: Any) -> str:
    """A reference value: a ghost, or an existing id of any kind (often the wrong kind)."""
    ids = [x for xs in id_map(p).values() for x in xs]
    return draw(st.one_of(GHOST, st.sampled_from(ids)))


class NothingToMutate(Exception):
    """An earlier mutation emptied what this one would pick from."""


def pick(draw: Draw, xs: Any) -> Any:
    xs = sorted(xs) if not isinstance(xs, list) else xs
    if not xs:
        # None would reach a proto map as a key (a TypeError in the mutator,
        # not in beaminst): the soak found 'delete' then 'sdk content' on the
        # only windowing strategy.
        raise NothingToMutate
    return draw(st.sampled_from(xs))


def index_of(draw: Draw, seq: Any) -> int | None:
    return draw(st.integers(0, len(seq) - 1)) if len(seq) else None


def parents_of(p: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for tid, t in p.components.transforms.items():
        for s in t.subtransforms:
            out.setdefault(s, tid)
    return out


def mut_dangling_ref(p: Any, draw: Draw) -> set[str]:
    """Point one reference of some kind at a ghost or at an id of another kind."""
    c = p.components
    ids = id_map(p)
    v = any_ref(draw, p)
    slot = draw(st.sampled_from((
        "root", "subtransform", "input", "output", "transform environment", "pcollection coder",
        "pcollection windowing", "coder component", "window coder", "windowing environment",
    )))
    if slot == "root":
        i = index_of(draw, p.root_transform_ids)
        if i is not None and draw(st.booleans()):
            p.root_transform_ids[i] = v
        else:
            p.root_transform_ids.append(v)
        return {v}
    if slot in ("subtransform", "input", "output", "transform environment"):
        tid = pick(draw, ids["transform"])
        t = c.transforms[tid]
        if slot == "subtransform":
            i = index_of(draw, t.subtransforms)
            if i is not None and draw(st.booleans()):
                t.subtransforms[i] = v
            else:
                t.subtransforms.append(v)
            return {tid, v}
        if slot == "transform environment":
            t.environment_id = v
            return {tid, v}
        refs = t.inputs if slot == "input" else t.outputs
        tag = draw(st.one_of(st.sampled_from(sorted(refs)) if refs else st.nothing(), TAGS))
        refs[tag] = v
        return {tid, tag, v}
    if slot.startswith("pcollection"):
        pc = pick(draw, ids["pcollection"])
        setattr(c.pcollections[pc], "coder_id" if slot.endswith("coder") else "windowing_strategy_id", v)
        return {pc, v}
    if slot == "coder component":
        cid = pick(draw, ids["coder"])
        comps = c.coders[cid].component_coder_ids
        i = index_of(draw, comps)
        if i is not None and draw(st.booleans()):
            comps[i] = v
        else:
            comps.append(v)
        return {cid, v}
    wid = pick(draw, ids["windowing strategy"])
    setattr(c.windowing_strategies[wid], "window_coder_id" if slot == "window coder" else "environment_id", v)
    return {wid, v}


def mut_delete(p: Any, draw: Draw) -> set[str]:
    """Delete a component (leaving whatever named it dangling), or one reference."""
    c = p.components
    kind = draw(st.sampled_from((*COMPONENT_MAPS, "input", "output", "subtransform", "root")))
    if kind in COMPONENT_MAPS:
        m = getattr(c, COMPONENT_MAPS[kind])
        key = pick(draw, m)
        if key is not None:
            del m[key]
        return {key} if key is not None else set()
    if kind == "root":
        i = index_of(draw, p.root_transform_ids)
        return {p.root_transform_ids.pop(i)} if i is not None else set()
    tid = pick(draw, c.transforms)
    t = c.transforms[tid]
    if kind == "subtransform":
        i = index_of(draw, t.subtransforms)
        return {tid, t.subtransforms.pop(i)} if i is not None else {tid}
    refs = t.inputs if kind == "input" else t.outputs
    tag = pick(draw, refs)
    if tag is None:
        return {tid}
    pc = refs[tag]
    del refs[tag]
    return {tid, tag, pc}


def mut_duplicate_unique_name(p: Any, draw: Draw) -> set[str]:
    c = p.components
    a, b = pick(draw, c.transforms), pick(draw, c.transforms)
    c.transforms[a].unique_name = c.transforms[b].unique_name
    return {a, b, c.transforms[b].unique_name}


def mut_rename(p: Any, draw: Draw) -> set[str]:
    """Any unique name, empty and markup-like ones included."""
    tid = pick(draw, p.components.transforms)
    name = draw(st.one_of(st.text(max_size=20), st.sampled_from(("", "[/x]", "[bold]x", "a/b", "None"))))
    p.components.transforms[tid].unique_name = name
    return {tid, name}


def mut_extra_pcollection(p: Any, draw: Draw) -> set[str]:
    """A PCollection nobody produces (a copy of an existing one under a new id)."""
    c = p.components
    src = pick(draw, c.pcollections)
    new = draw(GHOST)
    copied = type(c.pcollections[src])()
    copied.CopyFrom(c.pcollections[src])
    c.pcollections[new].CopyFrom(copied)
    return {src, new}


def mut_second_producer(p: Any, draw: Draw) -> set[str]:
    """A leaf also outputs a PCollection another transform produces."""
    c = p.components
    leaves = [t for t in sorted(c.transforms) if not c.transforms[t].subtransforms]
    tid, pc = pick(draw, leaves), pick(draw, c.pcollections)
    tag = draw(TAGS)
    c.transforms[tid].outputs[tag] = pc
    return {tid, pc, tag}


def mut_add_input(p: Any, draw: Draw) -> set[str]:
    """A transform gains an input: often a cycle, sometimes a side-input-like tag."""
    c = p.components
    tid, pc = pick(draw, c.transforms), pick(draw, c.pcollections)
    tag = draw(TAGS)
    c.transforms[tid].inputs[tag] = pc
    return {tid, pc, tag}


def mut_subtransform_cycle(p: Any, draw: Draw) -> set[str]:
    """A transform lists itself or one of its ancestors as a part."""
    c = p.components
    tid = pick(draw, c.transforms)
    chain, parents = [tid], parents_of(p)
    while chain[-1] in parents and len(chain) < 50:
        chain.append(parents[chain[-1]])
    target = draw(st.sampled_from(chain))
    c.transforms[tid].subtransforms.append(target)
    return {tid, target}


def mut_coder_cycle(p: Any, draw: Draw) -> set[str]:
    """A coder becomes a component of itself or of one of its components."""
    coders = p.components.coders
    cid = pick(draw, coders)
    reach, stack = [cid], [cid]
    while stack:
        for comp in coders[stack.pop()].component_coder_ids:
            if comp in coders and comp not in reach:
                reach.append(comp)
                stack.append(comp)
    inner = draw(st.sampled_from(reach))
    coders[inner].component_coder_ids.append(cid)
    return {cid, inner}


def mut_side_input_declaration(p: Any, draw: Draw) -> set[str]:
    """A ParDo declares a side input it does not take, or loses one it declares."""
    rapi = runner_api()
    c = p.components
    pardos = [t for t in sorted(c.transforms) if c.transforms[t].spec.urn == PAR_DO and c.transforms[t].spec.payload]
    tid = pick(draw, pardos)
    if tid is None:
        return set()
    t = c.transforms[tid]
    try:
        payload = rapi.ParDoPayload.FromString(t.spec.payload)
    except Exception:  # an earlier mutation made it garbage: nothing to declare
        return set()
    declared = sorted(set(payload.side_inputs) & set(t.inputs))
    if declared and draw(st.booleans()):
        tag = draw(st.sampled_from(declared))
        del t.inputs[tag]
    else:
        tag = draw(TAGS)
        payload.side_inputs[tag].access_pattern.urn = "beam:side_input:iterable:v1"
        t.spec.payload = payload.SerializeToString(deterministic=True)
    return {tid, tag}


def mut_payload(p: Any, draw: Draw) -> set[str]:
    tid = pick(draw, p.components.transforms)
    p.components.transforms[tid].spec.payload = draw(st.binary(max_size=64))
    return {tid}


def mut_urn(p: Any, draw: Draw) -> set[str]:
    """Turn a transform into a source (pubsub, unbounded Read, TestStream) or
    into something else; sources on composites or with inputs included."""
    rapi = runner_api()
    tid = pick(draw, p.components.transforms)
    t = p.components.transforms[tid]
    urn = draw(st.one_of(
        st.sampled_from((PUBSUB_READ, "beam:transform:read:v1", TEST_STREAM, PAR_DO,
                         "beam:transform:flatten:v1", "beam:transform:impulse:v1", "beam:transform:group_by_key:v1")),
        st.text(max_size=20),
    ))
    t.spec.urn = urn
    if urn == "beam:transform:read:v1":
        t.spec.payload = rapi.ReadPayload(is_bounded=rapi.IsBounded.UNBOUNDED).SerializeToString()
    return {tid, urn}


def mut_boundedness(p: Any, draw: Draw) -> set[str]:
    pc = pick(draw, p.components.pcollections)
    with contextlib.suppress(ValueError):
        p.components.pcollections[pc].is_bounded = draw(st.sampled_from((0, 1, 2, 7)))
    return {pc}


def mut_roots(p: Any, draw: Draw) -> set[str]:
    op = draw(st.sampled_from(("clear", "duplicate", "add part", "reverse")))
    if op == "clear":
        del p.root_transform_ids[:]
        return set()
    if op == "duplicate" and p.root_transform_ids:
        p.root_transform_ids.append(p.root_transform_ids[0])
        return {p.root_transform_ids[0]}
    if op == "add part":
        tid = pick(draw, parents_of(p))
        if tid is not None:
            p.root_transform_ids.append(tid)
        return {tid} if tid else set()
    p.root_transform_ids[:] = list(reversed(p.root_transform_ids))
    return set()


def mut_move(p: Any, draw: Draw) -> set[str]:
    """Re-key a component without updating what names it."""
    kind = draw(st.sampled_from(tuple(COMPONENT_MAPS)))
    m = getattr(p.components, COMPONENT_MAPS[kind])
    old = pick(draw, m)
    if old is None:
        return set()
    new = draw(GHOST)
    value = type(m[old])()
    value.CopyFrom(m[old])
    del m[old]
    m[new].CopyFrom(value)
    return {old, new}


CODER_URNS = ("beam:coder:bytes:v1", "beam:coder:kv:v1", "beam:coder:varint:v1", "beam:coder:pickled_python:v1",
              "beam:coders:javasdk:0.1", "beam:coder:row:v1")


def mut_sdk_content(p: Any, draw: Draw) -> set[str]:
    """Change what a coder or windowing strategy *is* (URN, payload, enums):
    content only the Beam SDK interprets."""
    c = p.components
    if draw(st.booleans()):
        cid = pick(draw, c.coders)
        coder = c.coders[cid]
        if draw(st.booleans()):
            coder.spec.urn = draw(st.one_of(st.sampled_from(CODER_URNS), st.text(max_size=12)))
        else:
            coder.spec.payload = draw(st.binary(max_size=32))
        return {cid}
    wid = pick(draw, c.windowing_strategies)
    ws = c.windowing_strategies[wid]
    field_name = draw(st.sampled_from(("window_fn", "merge_status", "accumulation_mode", "output_time", "closing_behavior")))
    with contextlib.suppress(ValueError):
        if field_name == "window_fn":
            ws.window_fn.urn = draw(st.one_of(st.sampled_from(("beam:window_fn:fixed_windows:v1", "beam:window_fn:sessions:v1")), st.text(max_size=12)))
            ws.window_fn.payload = draw(st.binary(max_size=16))
        else:
            setattr(ws, field_name, draw(st.integers(0, 9)))
    return {wid}


MUTATIONS: dict[str, Callable[[Any, Draw], set[str]]] = {
    "dangling reference": mut_dangling_ref,
    "delete": mut_delete,
    "duplicate unique name": mut_duplicate_unique_name,
    "rename": mut_rename,
    "PCollection without producer": mut_extra_pcollection,
    "second producer": mut_second_producer,
    "extra input / cycle": mut_add_input,
    "subtransform cycle": mut_subtransform_cycle,
    "coder cycle": mut_coder_cycle,
    "side input declaration": mut_side_input_declaration,
    "payload": mut_payload,
    "urn": mut_urn,
    "boundedness": mut_boundedness,
    "roots": mut_roots,
    "re-key": mut_move,
    "sdk content": mut_sdk_content,
}
STRUCTURAL = tuple(k for k in MUTATIONS if k != "sdk content")


def mutate(p: Any, draw: Draw, kinds: tuple[str, ...] = tuple(MUTATIONS)) -> tuple[list[str], set[str]]:
    """Apply 1-3 random mutations; returns their names and every id they involved."""
    names = draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=3))
    involved: set[str] = set()
    for name in names:
        try:
            involved |= {x for x in MUTATIONS[name](p, draw) if x is not None}
        except NothingToMutate:
            pass
    return names, involved


def strings_in(p: Any) -> set[str]:
    """Every id, reference, unique name and tag of ``p``."""
    c = p.components
    out = set(p.root_transform_ids)
    for tid, t in c.transforms.items():
        out |= {tid, t.unique_name, t.environment_id, *t.subtransforms, *t.inputs, *t.inputs.values(),
                *t.outputs, *t.outputs.values()}
    for pid, pc in c.pcollections.items():
        out |= {pid, pc.coder_id, pc.windowing_strategy_id}
    for cid, coder in c.coders.items():
        out |= {cid, *coder.component_coder_ids}
    for wid, ws in c.windowing_strategies.items():
        out |= {wid, ws.window_coder_id, ws.environment_id}
    out |= set(c.environments)
    return out


def assert_names_an_id(e: ValidationError, p: Any, involved: set[str]) -> None:
    assert "\n" not in str(e) and str(e).isprintable(), repr(str(e))
    if not p.root_transform_ids and "no root transform" in e.message:
        return
    names = strings_in(p) | involved
    assert any(repr(x) in e.message for x in names), f"names no id of the proto or the mutation: {e.message}"


@settings(max_examples=budget(3))
@given(st.sampled_from(FIXTURE_NAMES), st.data())
def test_validator_passes_or_names_an_id(name, data):
    """Random structural mutations of every fixture: validate() passes or raises
    a ValidationError naming an id of the proto or of the mutation; nothing else."""
    count("validator (library)")
    p = fresh(name)
    applied, involved = mutate(p, data.draw)
    try:
        validate(p)
    except ValidationError as e:
        assert_names_an_id(e, p, involved)


@settings(max_examples=budget(1))
@given(st.sampled_from(FIXTURE_NAMES), st.data(), cli_options())
def test_mutated_pipelines_contract_every_command(name, data, options):
    """The same mutations, saved in any format, through every command."""
    count("validator (cli)")
    p = fresh(name)
    mutate(p, data.draw)
    fmt = data.draw(st.sampled_from(FORMATS))
    with workdir() as root:
        case = make_case(
            root, serialize_pipeline(p, fmt), fixture=name, ext=EXT[fmt], manifest=fixture_manifest_bytes(name),
            options=options,
        )
        run_contract(case)


# --- 3. the binding manifest ----------------------------------------------------------------------

MANIFEST_FIXTURES = ("wordcount", "side_inputs", "multi_output", "pubsub_one", "pubsub_two", "mixed")
SURROGATES = st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=2)
JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12), SURROGATES.map(lambda s: "s" + s)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(st.one_of(st.text(max_size=8), SURROGATES), kids, max_size=4)),
    max_leaves=16,
)
VAR_NAMES = st.one_of(
    st.text(max_size=16),
    st.sampled_from(("words", "x", "[/x]", "", "a" * 257, "synthetic_var_0123456789abcdef", "None")),
    SURROGATES.map(lambda s: "v" + s),
)
HEX = st.text(alphabet="0123456789abcdef", min_size=1, max_size=20)
CACHE_KEYS = st.one_of(
    st.tuples(HEX, HEX, HEX, HEX).map("-".join),
    st.text(max_size=30),
    st.sampled_from(("a\x00-b-c-d", "a*-b-c-d", "k?-b-c-d", "[x]-b-c-d", "..-..-..-..", "é-b-c-d", "a-b-c", "a-b-c-d-e", "a\x1b-b-c-d")),
    SURROGATES.map(lambda s: f"a{s}-b-c-d"),
)


@functools.cache
def binding_targets(name: str) -> tuple[list[str], list[tuple[str, str]], list[str], list[str]]:
    """(PCollection ids, (producer, tag) pairs, composite names, the fixture's cache keys)."""
    a = fixture_analysis(name)
    idx = a.index
    produced = sorted(
        {(idx.transforms[t].unique_name, tag) for pc, t in idx.producer.items() for tag, o in idx.transforms[t].outputs.items() if o == pc}
    )
    composites = sorted({t.unique_name for t in idx.transforms.values() if t.subtransforms and t.unique_name})
    return sorted(idx.pcollections), produced, composites, sorted({c.cache_key for c in a.cacheables.values()})


@st.composite
def manifest_doc(draw: Any, name: str) -> dict[str, Any]:
    """Manifests built from the fixture's real names mixed with wrong ones."""
    pcs, produced, composites, keys = binding_targets(name)
    bindings: dict[str, Any] = {}
    for _ in range(draw(st.integers(0, 4))):
        var = draw(VAR_NAMES)
        form = draw(st.sampled_from(
            ("id", "id", "pcollection", "producer", "producer", "ghost id", "ghost producer", "bad tag", "composite", "any value")
        ))
        entry: Any
        if form == "id":
            entry = draw(st.sampled_from(pcs))
        elif form == "pcollection":
            entry = {"pcollection": draw(st.sampled_from(pcs))}
        elif form == "producer":
            producer, tag = draw(st.sampled_from(produced))
            entry = {"producer": producer, **({"tag": tag} if tag != "None" or draw(st.booleans()) else {})}
        elif form == "ghost id":
            entry = draw(GHOST)
        elif form == "ghost producer":
            entry = {"producer": draw(GHOST)}
        elif form == "bad tag":
            entry = {"producer": draw(st.sampled_from(produced))[0], "tag": draw(TAGS)}
        elif form == "composite":
            entry = {"producer": draw(st.sampled_from(composites))} if composites else draw(GHOST)
        else:
            entry = draw(JSON_VALUES)
        if isinstance(entry, dict) and draw(st.integers(0, 2)) == 0:
            entry["cache_key"] = draw(st.one_of(CACHE_KEYS, st.sampled_from(keys)))
        bindings[var] = entry
    doc: dict[str, Any] = {}
    if bindings or draw(st.booleans()):
        doc["bindings"] = bindings
    variables = sorted(bindings)
    computed = draw(st.lists(st.one_of(st.sampled_from(variables) if variables else st.nothing(), VAR_NAMES), max_size=4))
    if computed or draw(st.booleans()):
        doc["computed"] = computed if draw(st.integers(0, 5)) else draw(JSON_VALUES)
    if draw(st.integers(0, 4)) == 0:
        doc["version"] = draw(st.sampled_from((1, 2, "1", 1.0, True, None, [1])))
    if draw(st.integers(0, 4)) == 0:
        doc["pipeline"] = draw(st.one_of(st.text(max_size=10), st.integers(), st.none()))
    if draw(st.integers(0, 6)) == 0:
        doc[draw(st.text(min_size=1, max_size=8))] = 1
    return doc


def encode_json(doc: Any, ensure_ascii: bool) -> bytes:
    """JSON bytes; lone surrogates become \\ud800 escapes (ensure_ascii) or invalid UTF-8."""
    return json.dumps(doc, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")


def cache_with(root: Path, name: str, keys: list[str]) -> str:
    """A cache directory where ``keys`` are cached: complete one-shard sets in
    the FileBasedCacheManager layout, or empty StreamingCache files."""
    cache = root / "cache"
    full = cache / "full"
    full.mkdir(parents=True)
    for key in keys:
        target = full / (key if streaming(name) else f"{key}-00000-of-00001")
        with contextlib.suppress(OSError, ValueError):  # keys that cannot be file names
            target.write_bytes(b"" if streaming(name) else EMPTY_SHARD)
    return str(cache)


def resolvable_keys(name: str, doc: Any) -> list[str]:
    """The cache keys ``doc``'s well-formed bindings would get."""
    a = fixture_analysis(name)
    idx = a.index
    pcs, produced, _, _ = binding_targets(name)
    by_name = {
        (idx.transforms[t].unique_name, tag): pc for pc, t in idx.producer.items()
        for tag, o in idx.transforms[t].outputs.items() if o == pc
    }
    out = []
    bindings = doc.get("bindings") if isinstance(doc, dict) else None
    for var, entry in (bindings.items() if isinstance(bindings, dict) else ()):
        pc = key = None
        if isinstance(entry, str):
            pc = entry
        elif isinstance(entry, dict):
            pc = entry.get("pcollection") or by_name.get((entry.get("producer"), entry.get("tag", "None")))
            key = entry.get("cache_key")
        if isinstance(key, str):
            out.append(key)
        elif isinstance(pc, str) and pc in idx.producer:
            with contextlib.suppress(UnicodeError):
                out.append(a.digests.key_for(var, pc, idx.producer[pc]))
    return out


def manifest_library_check(raw: bytes, name: str) -> None:
    """parse + resolve + analyze: a ManifestError (one line, naming the
    manifest) or success; no other exception."""
    from beaminst.analysis.analyze import analyze
    from beaminst.analysis.manifest import parse_manifest
    from beaminst.cache.cachedir import CacheDir
    from beaminst.errors import ManifestError

    try:
        m = parse_manifest(raw, "m.json")
        analyze(fixture_analysis(name).index, m, CacheDir(None))
    except ManifestError as e:
        error_line_ok(e, "m.json")


SLOTS: dict[str, Callable[[Any], Any]] = {
    "top": lambda v: v,
    "bindings": lambda v: {"bindings": v},
    "binding": lambda v: {"bindings": {"x": v}},
    "pcollection": lambda v: {"bindings": {"x": {"pcollection": v}}},
    "producer": lambda v: {"bindings": {"x": {"producer": v}}},
    "tag": lambda v: {"bindings": {"x": {"producer": "Split", "tag": v}}},
    "cache_key": lambda v: {"bindings": {"x": {"pcollection": "ref_PCollection_PCollection_9", "cache_key": v}}},
    "computed": lambda v: {"bindings": {"x": "ref_PCollection_PCollection_9"}, "computed": v},
    "computed item": lambda v: {"bindings": {"x": "ref_PCollection_PCollection_9"}, "computed": ["x", v]},
    "version": lambda v: {"version": v},
    "pipeline": lambda v: {"pipeline": v},
    "unknown field": lambda v: {"bindings": {}, "extra": v},
}


@settings(max_examples=budget(3))
@given(st.sampled_from(tuple(SLOTS)), JSON_VALUES, st.booleans())
def test_random_json_values_anywhere_in_a_manifest(slot, value, ensure_ascii):
    """Hypothesis' recursive JSON values, in every position of a manifest (wordcount)."""
    count("manifest values (library)")
    manifest_library_check(encode_json(SLOTS[slot](value), ensure_ascii), "wordcount")


@settings(max_examples=budget(2))
@given(st.sampled_from(MANIFEST_FIXTURES), st.data(), st.booleans())
def test_generated_manifests_library(name, data, ensure_ascii):
    count("manifest (library)")
    manifest_library_check(encode_json(data.draw(manifest_doc(name)), ensure_ascii), name)


MANIFEST_CORRUPTIONS = (
    "truncate", "bitflip", "invalid utf-8", "duplicate key", "bom", "utf-16", "nul", "deep", "big number",
    "padding", "random bytes", "empty",
)


@st.composite
def corrupt_manifest(draw: Any, name: str) -> tuple[str, bytes]:
    raw = fixture_manifest_bytes(name)
    kind = draw(st.sampled_from(MANIFEST_CORRUPTIONS))
    if kind == "truncate":
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    elif kind == "bitflip":
        buf = bytearray(raw)
        for _ in range(draw(st.integers(1, 3))):
            buf[draw(st.integers(0, len(buf) - 1))] ^= 1 << draw(st.integers(0, 7))
        raw = bytes(buf)
    elif kind == "invalid utf-8":
        i = draw(st.integers(0, len(raw)))
        raw = raw[:i] + draw(st.sampled_from((b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xe9", b"\xf4\x90\x80\x80"))) + raw[i:]
    elif kind == "duplicate key":
        dup = draw(st.sampled_from((b'"bindings": {}, ', b'"version": 1, ', b'"computed": [], ')))
        raw = raw.replace(b"{", b"{" + dup, 1)
        first_var = re.search(rb'"bindings": \{\s*("[^"]+": [^,\n]+)', raw)
        if first_var and draw(st.booleans()):
            raw = raw.replace(first_var.group(1), first_var.group(1) + b", " + first_var.group(1), 1)
    elif kind == "bom":
        raw = draw(st.sampled_from((b"\xef\xbb\xbf", b"\xef\xbb\xbf\xef\xbb\xbf", b"\xfe\xff", b"\xff\xfe"))) + raw
    elif kind == "utf-16":
        raw = raw.decode("utf-8").encode(draw(st.sampled_from(("utf-16", "utf-16-le", "utf-32"))))
    elif kind == "nul":
        i = draw(st.integers(0, len(raw)))
        raw = raw[:i] + b"\x00" + raw[i:]
    elif kind == "deep":
        depth = draw(st.integers(1, 3000))
        nested = draw(st.sampled_from((b"[" * depth + b"]" * depth, b'{"a": ' * depth + b"0" + b"}" * depth)))
        where = draw(st.sampled_from((b'{"computed": [%s, %s]}', b'{"bindings": {"x": %s}}', b'{"pipeline": %s}', b"%s")))
        raw = where.replace(b"%s", nested)
    elif kind == "big number":
        raw = b'{"version": 1' + b"0" * draw(st.integers(4000, 5000)) + b"}"
    elif kind == "padding":
        pad = b" " * draw(st.integers(0, 2_000_000))
        raw = pad + raw + pad
    elif kind == "random bytes":
        raw = draw(st.binary(max_size=256))
    else:
        raw = b""
    return kind, raw


@settings(max_examples=budget(2))
@given(st.sampled_from(MANIFEST_FIXTURES), st.data())
def test_corrupt_manifest_library(name, data):
    kind, raw = data.draw(corrupt_manifest(name))
    count("manifest corruption (library)")
    manifest_library_check(raw, name)


@settings(max_examples=budget(1))
@given(st.sampled_from(MANIFEST_FIXTURES), st.data(), cli_options(), st.booleans())
def test_generated_manifests_contract_every_command(name, data, options, via_stdin):
    """Generated (mostly wrong) manifests, some of whose keys are cached."""
    count("manifest (cli)")
    if data.draw(st.integers(0, 2)) == 0:
        kind, raw = data.draw(corrupt_manifest(name))
        keys: list[str] = []
    else:
        doc = data.draw(manifest_doc(name))
        raw = encode_json(doc, data.draw(st.booleans()))
        reachable = resolvable_keys(name, doc)
        keys = data.draw(st.lists(st.sampled_from(reachable), unique=True)) if reachable else []
    with workdir() as root:
        case = make_case(
            root, None, fixture=name, manifest=raw, manifest_via_stdin=via_stdin,
            cache_dir=cache_with(root, name, keys), blame=("manifest",), options=only_input_errors(options),
        )
        run_contract(case)


# --- 4. the cache directory -------------------------------------------------------------------------

CACHE_FIXTURES = ("wordcount", "side_inputs", "pubsub_one", "mixed")
CACHE_SHAPES = (
    "missing", "missing parent", "file", "under a file", "dangling link", "link to dir", "link to file",
    "dir", "dir", "dir", "unreadable",
)
FULL_SHAPES = ("missing", "file", "dangling link", "link to file", "unreadable", "dir", "dir", "dir", "dir")
SAFE_NAME = st.text(
    alphabet=st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), min_size=1, max_size=30
).filter(lambda n: n not in (".", "..") and len(n.encode("utf-8")) < 200)


@st.composite
def full_entry(draw: Any, name: str) -> tuple[str, str, bytes]:
    """(file name, kind, content) of one entry of ``full/``."""
    keys = binding_targets(name)[3]
    key = draw(st.one_of(st.sampled_from(keys), SAFE_NAME))
    kind = draw(st.sampled_from(("shard", "shard", "recording", "junk name", "hidden", "subdirectory", "dangling link", "link to dir")))
    if kind == "shard":
        total = draw(st.one_of(st.integers(1, 3), st.sampled_from((0, 10**20))))
        shard = draw(st.one_of(st.integers(0, 3), st.just(10**20)))
        width = draw(st.sampled_from((1, 5)))
        return f"{key}-{shard:0{width}d}-of-{total:0{width}d}", "file", draw(st.binary(max_size=32))
    if kind == "recording":
        content = draw(st.sampled_from((b"", b"no header", b"header\n", b"garbage\nmore\n", b"{}\n", b"\x00\xff\n\n")))
        return key, "file", content
    if kind == "junk name":
        return draw(SAFE_NAME), "file", draw(st.binary(max_size=16))
    if kind == "hidden":
        return "." + draw(SAFE_NAME), "file", b"x"
    return f"{key}-00000-of-00001" if draw(st.booleans()) else key, kind, b""


def build_cache(root: Path, shape: str, full_shape: str, entries: list[tuple[str, str, bytes]]) -> str:
    """Make the cache directory; returns its path."""
    target = root / "cache"
    (root / "a file").write_bytes(b"x")
    (root / "a dir").mkdir()
    if shape == "missing":
        return str(target)
    if shape == "missing parent":
        return str(root / "no" / "such" / "cache")
    if shape == "file":
        target.write_bytes(b"not a directory")
        return str(target)
    if shape == "under a file":
        return str(root / "a file" / "cache")
    if shape == "dangling link":
        target.symlink_to(root / "nowhere")
        return str(target)
    if shape == "link to file":
        target.symlink_to(root / "a file")
        return str(target)
    real = root / "a dir" if shape == "link to dir" else target
    if shape == "link to dir":
        target.symlink_to(real)
    else:
        target.mkdir()
    full = real / "full"
    if full_shape == "file":
        full.write_bytes(b"x")
    elif full_shape == "dangling link":
        full.symlink_to(root / "nowhere")
    elif full_shape == "link to file":
        full.symlink_to(root / "a file")
    elif full_shape in ("dir", "unreadable"):
        full.mkdir()
        for name, kind, content in entries:
            p = full / name
            with contextlib.suppress(OSError):  # a name this filesystem refuses
                if kind == "file":
                    p.write_bytes(content)
                elif kind == "subdirectory":
                    p.mkdir()
                elif kind == "dangling link":
                    p.symlink_to(root / "nowhere")
                else:
                    p.symlink_to(root / "a dir")
        if full_shape == "unreadable":
            full.chmod(0)
            if os.access(full, os.R_OK):  # root reads anything: then it is just a directory
                full.chmod(0o755)
    if shape == "unreadable":
        real.chmod(0)
        if os.access(real, os.R_OK):
            real.chmod(0o755)
    return str(target)


@settings(max_examples=budget(1))
@given(st.sampled_from(CACHE_FIXTURES), st.data(), cli_options())
def test_cache_dir_contract_every_command(name, data, options):
    """Missing, a file, dangling or looping links, unreadable, ``full`` a file,
    partial and absurd shard sets, junk names, junk recordings."""
    count("cache dir (cli)")
    shape = data.draw(st.sampled_from(CACHE_SHAPES))
    full_shape = data.draw(st.sampled_from(FULL_SHAPES))
    entries = data.draw(st.lists(full_entry(name), max_size=6))
    doc = copy.deepcopy(fixture_manifest_doc(name))
    doc["computed"] = data.draw(st.lists(st.sampled_from(sorted(doc["bindings"])), unique=True))
    with workdir() as root:
        cache = build_cache(root, shape, full_shape, entries)
        case = make_case(
            root, None, fixture=name, manifest=json.dumps(doc).encode(), cache_dir=cache,
            blame=("cache",), options=only_input_errors(options),
        )
        run_contract(case)


def test_unreadable_cache_dir(tmp_path):
    """chmod 000 on the cache directory and on full/: a clear error naming it."""
    for which in ("cache", "full"):
        root = tmp_path / which
        root.mkdir()
        (root / "cache" / "full").mkdir(parents=True)
        locked = root / "cache" if which == "cache" else root / "cache" / "full"
        locked.chmod(0)
        try:
            if os.access(locked, os.R_OK):
                pytest.skip("running as a user that ignores directory permissions (root)")
            case = make_case(root, None, fixture="wordcount", manifest=fixture_manifest_bytes("wordcount"),
                             cache_dir=str(root / "cache"), blame=("cache",))
            runs = run_contract(case)
            assert {r.exit_code for r in runs.values()} == {2}, [r.describe() for r in runs.values()]
        finally:
            locked.chmod(0o755)


# --- 5. huge inputs -----------------------------------------------------------------------------------


def test_huge_pipeline_of_zeros_and_deep_nesting(tmp_path):
    """50 MB of zeros, and JSON nested a million levels deep: one clear error, quickly."""
    count("huge")
    for label, data in (("zeros.pb", bytes(50 * 1024 * 1024)), ("deep.json", b"[" * 1_000_000 + b"]" * 1_000_000)):
        root = tmp_path / label
        root.mkdir()
        case = make_case(root, data, fixture="wordcount", ext=os.path.splitext(label)[1],
                         manifest=fixture_manifest_bytes("wordcount"), blame=("pipeline",))
        with work_budget(100_000 * len(COMMANDS)):  # ~4,000 a command, warm
            runs = run_contract(case)
        assert {r.exit_code for r in runs.values()} == {2}, [r.describe() for r in runs.values()]


def test_huge_manifest_over_the_limit(tmp_path):
    from beaminst.analysis.manifest import MAX_MANIFEST_BYTES

    count("huge")
    raw = b"{" + b" " * MAX_MANIFEST_BYTES + b"}"
    case = make_case(tmp_path, None, fixture="wordcount", manifest=raw, blame=("manifest",))
    runs = run_contract(case, tuple(c for c in COMMANDS if c in ("analyze", "instrument")))
    for r in runs.values():
        assert r.exit_code == 2 and "byte limit" in r.stderr, r.describe()


def test_a_pipeline_past_the_size_limit_is_refused_before_it_is_read(tmp_path):
    """A sparse file of 3 GiB (no valid Pipeline is over protobuf's 2 GiB) is
    refused by its size: nothing is read, so memory stays small (measured in
    a fresh process: this one's peak is whatever the suite ran before)."""
    import subprocess
    import sys

    from conftest import CLI_PREFIX, REPO, run_cli

    big = tmp_path / "big.pb"
    with open(big, "wb") as f:
        f.truncate(3 << 30)
    for command in ("analyze", "graph"):
        r = run_cli(command, str(big))
        assert r.exit_code == 2 and r.stderr == (
            f"beaminst: {big}: more than {1 << 30} bytes, over the byte limit for a pipeline file "
            "(BEAMINST_MAX_PIPELINE_BYTES raises it)\n"
        ), r.stderr
    peak = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True); "
            "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", peak, *CLI_PREFIX, "analyze", str(big)], env=env,
                         capture_output=True, text=True, check=True, timeout=60)
    code, kib = map(int, out.stdout.split())
    assert code == 2 and kib < 300 << 10, out.stdout  # reading it would take 3 GiB


@pytest.mark.parametrize("how", ["device", "pipe"])
def test_an_endless_input_is_refused_at_the_limit(how, tmp_path):
    """``/dev/zero``, or an endless pipe on stdin, grew until memory ran out."""
    import subprocess

    from conftest import CLI_PREFIX, REPO

    env = {**os.environ, "PYTHONPATH": str(REPO), "BEAMINST_MAX_PIPELINE_BYTES": "1000000"}
    args = ["/dev/zero"] if how == "device" else ["-"]
    with open("/dev/zero", "rb") as zeros:
        r = subprocess.run([*CLI_PREFIX, "analyze", *args], stdin=zeros if how == "pipe" else subprocess.DEVNULL,
                           capture_output=True, env=env, timeout=60, cwd=tmp_path)
    name = "/dev/zero" if how == "device" else "<stdin>"
    assert r.returncode == 2 and r.stdout == b""
    assert r.stderr.decode() == (f"beaminst: {name}: more than 1000000 bytes, over the byte limit for a pipeline "
                                 "file (BEAMINST_MAX_PIPELINE_BYTES raises it)\n")


def test_a_manifest_from_an_endless_device_stops_at_its_limit():
    from conftest import fixture_pb, run_cli

    r = run_cli("analyze", fixture_pb("wordcount"), "-m", "/dev/zero")
    assert r.exit_code == 2 and "over the byte limit for a manifest file" in r.stderr, r.stderr


# --- 6. real processes: the same contract on real stderr and exit codes ------------------------------


@settings(max_examples=budget(0.1, at_least=3))
@given(corrupt_pipeline())
def test_subprocess_sample_matches_in_process(corruption):
    """A sample of corrupt pipelines through ``analyze`` in a fresh interpreter:
    same exit code and same error line as in-process, no traceback."""
    what, name, data, ext = corruption
    count("subprocess")
    with workdir() as root:
        case = make_case(root, data, fixture=name, ext=ext, manifest=fixture_manifest_bytes(name))
        args = command_args("analyze", case, "-")
        assert args is not None
        proc = run_cli_subprocess(*args, timeout=60)
        here = invoke(args, None)
    assert proc.returncode in (0, 2), proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.returncode == here.exit_code, (proc.stderr, here.stderr)
    if proc.returncode == 2:
        lines = beam_noise_free(proc.stderr)
        assert len(lines) == 1, proc.stderr
        assert lines == beam_noise_free(here.stderr)
        assert proc.stdout == ""


def _subprocess_cases(root: Path) -> list[tuple[str, list[str], bytes | None, str]]:
    """(label, args, stdin, the name the error must start with)."""
    wc, wc_m = fixture_pb("wordcount"), fixture_manifest("wordcount")
    (root / "bad.json").write_bytes(b'{"bindings": {"x": "\\ud800"}}')
    (root / "deep.json").write_bytes(b'{"computed": [' + b"[" * 500 + b"]" * 500 + b"]}")
    (root / "garbage.pb").write_bytes(b"\x00\x01garbage")
    (root / "cachefile").write_bytes(b"x")
    (root / "src").mkdir()
    (root / "src" / "broken.pb").write_bytes(b"\xff" * 10)
    out = str(root / "out" / "o.pb")
    cases = [
        ("analyze: corrupt stdin", ["analyze", "-"], b"\x08\x96\x01garbage", "<stdin>"),
        ("instrument: lone surrogate in the manifest", ["instrument", wc, "-m", str(root / "bad.json"), "--cache-dir", str(root / "c"), "-o", out], None, str(root / "bad.json")),
        ("instrument: deeply nested manifest", ["instrument", wc, "-m", str(root / "deep.json"), "--cache-dir", str(root / "c"), "-o", out], None, str(root / "deep.json")),
        ("background-caching: cache dir is a file", ["background-caching", fixture_pb("pubsub_one"), "--cache-dir", str(root / "cachefile"), "-o", out], None, str(root / "cachefile")),
        ("instrument: manifest on stdin", ["instrument", wc, "-m", "-", "--cache-dir", str(root / "c"), "-o", "-"], b"[1, 2", "<stdin>"),
    ]
    if "diff" in COMMANDS:
        cases.append(("diff: corrupt side", ["diff", str(root / "garbage.pb"), wc], None, str(root / "garbage.pb")))
    if "batch" in COMMANDS:
        cases.append(("batch: one corrupt file", ["batch", str(root / "src"), "-o", str(root / "out"), "--cache-dir", str(root / "c"), "--jobs", "1", "-m", wc_m], None, str(root / "src" / "broken.pb")))
    return cases


def test_subprocess_error_paths(tmp_path):
    """Representative failures of every command in real processes: exit 2,
    exactly one line on real stderr naming the input, nothing on stdout,
    nothing written."""
    (tmp_path / "out").mkdir()
    for label, args, stdin, name in _subprocess_cases(tmp_path):
        count("subprocess")
        proc = run_cli_subprocess(*args, input=stdin, timeout=120)
        assert proc.returncode == 2, (label, proc.stderr)
        assert "Traceback" not in proc.stderr, label
        lines = beam_noise_free(proc.stderr)
        assert len(lines) == 1 and lines[0].startswith(f"beaminst: {name}: "), (label, proc.stderr)
        assert "internal error" not in lines[0], (label, lines)
        if args[0] != "batch":
            assert proc.stdout == "", (label, proc.stdout[:200])
        assert os.listdir(tmp_path / "out") == [], (label, os.listdir(tmp_path / "out"))


# --- 7. every proto beaminst writes is valid -----------------------------------------------------------


def _write_scenarios(name: str) -> list[tuple[str, str, bool]]:
    """(command, label, all variables computed and cached)."""
    out = [("instrument", "fresh cache", False), ("instrument", "everything cached and computed", True)]
    if name in UNBOUNDED_FIXTURES:
        out.append(("background-caching", "sources", False))
    else:
        out.append(("background-caching", "--allow-empty", False))
    return out


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_every_written_proto_passes_the_validator(name, tmp_path):
    """instrument (empty cache, then everything cached and computed: reads,
    rewiring, pruning) and background-caching, in all three output formats:
    each output re-loads, validates and carries nothing unreferenced."""
    for i, (cmd, label, cached) in enumerate(_write_scenarios(name)):
        root = tmp_path / str(i)
        root.mkdir()
        doc = copy.deepcopy(fixture_manifest_doc(name))
        keys: list[str] = []
        if cached:
            doc["computed"] = sorted(doc["bindings"])
            keys = [c.cache_key for c in fixture_analysis(name).cacheables.values() if not c.synthetic]
        cache = cache_with(root, name, keys)
        fmt = FORMATS[i % 3]
        out = root / f"out{EXT[fmt]}"
        args = [cmd, fixture_pb(name), "-m", str(root / "m.json"), "--cache-dir", cache, "-o", str(out), "--json"]
        (root / "m.json").write_text(json.dumps(doc))
        if label == "--allow-empty":
            args.append("--allow-empty")
        r = run_cli(*args)
        assert r.exit_code == 0, (label, r.stderr)
        proto, detected = parse_pipeline(out.read_bytes(), str(out))
        assert detected == fmt
        validate(proto)
        check_unreferenced(proto)
        report = json.loads(r.stdout)
        if cached:  # everything is read back, nothing rewritten, the upstream pruned
            assert report["writes"] == [] and report["reads"] and report["pruned"], report
        assert sorted(os.listdir(root)) == sorted(["cache", "m.json", out.name]), os.listdir(root)


# --- 8. a broken pass is an internal error, never a broken file -------------------------------------------


def _drop_a_needed_transform(p: Any) -> Any:
    """Delete a leaf whose output something else reads (and its mention in its parent)."""
    c = p.components
    consumed = {pc for t in c.transforms.values() for pc in t.inputs.values()}
    victim = next(
        tid for tid in sorted(c.transforms)
        if not c.transforms[tid].subtransforms and any(pc in consumed for pc in c.transforms[tid].outputs.values())
        and not set(c.transforms[tid].outputs.values()) & set(c.transforms[tid].inputs.values())
    )
    for t in c.transforms.values():
        if victim in t.subtransforms:
            t.subtransforms.remove(victim)
    del c.transforms[victim]
    return p


def _dangle_an_input(p: Any) -> Any:
    c = p.components
    tid = next(t for t in sorted(c.transforms) if c.transforms[t].inputs)
    tag = sorted(c.transforms[tid].inputs)[0]
    c.transforms[tid].inputs[tag] = "beaminst_bug_ghost"
    return p


def _leave_an_unreferenced_coder(p: Any) -> Any:
    p.components.coders["beaminst_bug_unused"].spec.urn = "beam:coder:bytes:v1"
    return p


BREAKAGES = {
    "drop a needed transform": _drop_a_needed_transform,
    "dangling input": _dangle_an_input,
    "unreferenced coder": _leave_an_unreferenced_coder,
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
@pytest.mark.parametrize("cmd", ["instrument", "background-caching"])
def test_a_broken_pass_is_a_one_line_internal_error(cmd, breakage, tmp_path, monkeypatch):
    import beaminst.passes.background_caching
    import beaminst.passes.instrument

    if cmd not in COMMANDS:
        pytest.skip(f"no {cmd} command")
    if cmd == "instrument":
        real = beaminst.passes.instrument.prune_to
        monkeypatch.setattr(beaminst.passes.instrument, "prune_to", lambda *args: BREAKAGES[breakage](real(*args)))
        name = "wordcount"
    else:
        real_trim = beaminst.passes.background_caching.trim_components
        monkeypatch.setattr(beaminst.passes.background_caching, "trim_components", lambda p: BREAKAGES[breakage](real_trim(p)))
        name = "pubsub_one"
    count("broken pass")
    case = make_case(tmp_path, None, fixture=name, manifest=fixture_manifest_bytes(name))
    out = case.out_dir / "o.pb"
    r = run_cli(cmd, case.pipeline, "-m", str(case.manifest), "--cache-dir", case.cache_dir, "-o", str(out))
    assert r.exit_code == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = beam_noise_free(r.stderr)
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("beaminst: ") and "produced an invalid pipeline" in lines[0] and "please report" in lines[0], lines
    assert os.listdir(case.out_dir) == []


def test_a_pass_that_crashes_is_a_one_line_internal_error(tmp_path, monkeypatch):
    import beaminst.passes.instrument

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("pass exploded\nsecond line")

    monkeypatch.setattr(beaminst.passes.instrument, "prune_to", boom)
    monkeypatch.delenv("BEAMINST_DEBUG", raising=False)
    count("broken pass")
    case = make_case(tmp_path, None, fixture="wordcount", manifest=fixture_manifest_bytes("wordcount"))
    r = run_cli("instrument", case.pipeline, "-m", str(case.manifest), "--cache-dir", case.cache_dir,
                "-o", str(case.out_dir / "o.pb"))
    assert r.exit_code == 2
    assert beam_noise_free(r.stderr) == [
        "beaminst: internal error: RuntimeError: pass exploded second line (BEAMINST_DEBUG=1 shows a traceback)"
    ]
    assert os.listdir(case.out_dir) == []


# --- 9. concurrent writers ----------------------------------------------------------------------------------


def test_two_processes_writing_one_output(tmp_path):
    """Two ``beaminst instrument`` processes racing to the same -o: one
    complete file, byte-identical to a single run's; never a mix, never a
    temp file left; a reader polling the path while they run only ever sees
    the complete file, and does see it (the race is rerun, a bounded number
    of times, until it has)."""
    count("concurrency")
    cache = str(tmp_path / "cache")
    single = tmp_path / "single.pb"
    args = ["instrument", fixture_pb("wordcount"), "-m", fixture_manifest("wordcount"), "--cache-dir", cache]
    r = run_cli(*args, "-o", str(single))
    assert r.exit_code == 0, r.stderr
    expected = single.read_bytes()
    for attempt in range(5):
        out_dir = tmp_path / f"race{attempt}"
        out_dir.mkdir()
        target = out_dir / "out.pb"
        seen = race_two_writers([*args, "-o", str(target)], target)
        assert target.read_bytes() == expected
        assert os.listdir(out_dir) == ["out.pb"]
        assert all(data == expected for data in seen), [len(data) for data in seen]  # only ever the whole file
        if seen:
            return
    pytest.fail("the reader never saw the output while the writers ran (5 races)")


def race_two_writers(args: list[str], target: Path) -> list[bytes]:
    """Run ``beaminst ARGS`` twice at once; returns the distinct contents
    read at ``target`` while at least one of them still ran."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("BEAMINST_DEBUG", None)
    procs = [
        subprocess.Popen([*CLI_PREFIX, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO, env=env)
        for _ in range(2)
    ]
    seen: list[bytes] = []
    try:
        deadline = time.monotonic() + 120
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError):
                data = target.read_bytes()
                if data not in seen:
                    seen.append(data)
            time.sleep(0.002)
        for p in procs:
            err = p.communicate(timeout=10)[1].decode("utf-8", "replace")
            assert p.returncode == 0, err
            assert "Traceback" not in err
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return seen


# --- 10. bugs this suite found after the contract was written, now fixed: reproducers ----------------------

WORDS = "ref_PCollection_PCollection_9"  # wordcount: Split's output


def test_fixed_background_caching_without_sources_names_no_file(tmp_path):
    case = make_case(tmp_path, None, fixture="wordcount", manifest=fixture_manifest_bytes("wordcount"),
                     options={"allow_empty": False})
    run_contract(case, ("background-caching",))


def test_fixed_rich_markup_in_names(tmp_path):
    case = make_case(tmp_path, None, fixture="wordcount", manifest=json.dumps({"bindings": {"[/x]": WORDS}}).encode(),
                     blame=("manifest",))
    run_contract(case, ("analyze", "instrument"))


def test_fixed_corrupt_recording(tmp_path):
    key = next(c.cache_key for c in fixture_analysis("pubsub_one").cacheables.values() if c.var == "decoded")
    (tmp_path / "cache" / "full").mkdir(parents=True)
    (tmp_path / "cache" / "full" / key).write_bytes(b"garbage\n")
    doc = {**fixture_manifest_doc("pubsub_one"), "computed": ["decoded"]}
    case = make_case(tmp_path, None, fixture="pubsub_one", manifest=json.dumps(doc).encode(),
                     cache_dir=str(tmp_path / "cache"), blame=("cache",))
    run_contract(case, ("instrument",))


def test_fixed_coder_the_sdk_cannot_decode(tmp_path):
    p = fresh("wordcount")
    p.components.coders["java_coder"].spec.urn = "beam:coders:javasdk:0.1"
    p.components.pcollections[WORDS].coder_id = "java_coder"
    validate(p)  # structurally fine
    case = make_case(tmp_path, serialize_pipeline(p, "binary"), fixture="wordcount",
                     manifest=fixture_manifest_bytes("wordcount"), blame=("pipeline",))
    run_contract(case, ("instrument",))


def test_fixed_unbounded_pcollection_without_a_source(tmp_path):
    p = fresh("wordcount")
    p.components.pcollections[WORDS].is_bounded = runner_api().IsBounded.UNBOUNDED
    case = make_case(tmp_path, serialize_pipeline(p, "binary"), fixture="wordcount",
                     manifest=fixture_manifest_bytes("wordcount"), blame=("pipeline", "manifest"))
    run_contract(case, ("instrument",))


def test_fixed_no_temp_directories_left_behind(tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    case = make_case(tmp_path, None, fixture="wordcount", manifest=fixture_manifest_bytes("wordcount"))
    r = run_cli("instrument", case.pipeline, "-m", str(case.manifest), "--cache-dir", case.cache_dir,
                "-o", str(case.out_dir / "o.pb"))
    assert r.exit_code == 0, r.stderr
    assert os.listdir(scratch) == []


# --- 11. regressions: the bugs this suite found and fixed, one deterministic case each ----------------------


def _key(name: str, var: str) -> str:
    return next(c.cache_key for c in fixture_analysis(name).cacheables.values() if c.var == var)


def _manifest_case(raw: bytes) -> dict[str, Any]:
    return {"manifest": raw, "blame": ("manifest",)}


def _cache_case(root: Path, build: Callable[[Path], str], name: str = "wordcount", computed: tuple[str, ...] = ()) -> dict[str, Any]:
    doc = {**fixture_manifest_doc(name), "computed": list(computed)}
    return {"manifest": json.dumps(doc).encode(), "cache_dir": build(root), "blame": ("cache",), "fixture": name}


def _fifo(root: Path) -> str:
    full = root / "cache" / "full"
    full.mkdir(parents=True)
    os.mkfifo(full / _key("pubsub_one", "decoded"))
    return str(root / "cache")


def _dir_as_shards(root: Path) -> str:
    (root / "cache" / "full" / f"{_key('wordcount', 'words')}-00000-of-00001").mkdir(parents=True)
    return str(root / "cache")


def _absurd_shard_count(root: Path) -> str:
    (root / "cache" / "full").mkdir(parents=True)
    (root / "cache" / "full" / f"{_key('wordcount', 'words')}-00000-of-{10**20}").write_bytes(b"")
    return str(root / "cache")


def _dangling_cache(root: Path) -> str:
    (root / "cache").symlink_to(root / "nowhere")
    return str(root / "cache")


def _dangling_full(root: Path) -> str:
    (root / "cache").mkdir()
    (root / "cache" / "full").symlink_to(root / "nowhere")
    return str(root / "cache")


def _under_a_file(root: Path) -> str:
    (root / "a file").write_bytes(b"x")
    return str(root / "a file" / "cache")


def _corrupt_pickled_coder() -> bytes:
    p = fresh("wordcount")
    coder = p.components.coders["ref_Coder_FastPrimitivesCoder_8"]
    payload = bytearray(coder.spec.payload)
    payload[60] ^= 1
    coder.spec.payload = bytes(payload)
    return serialize_pipeline(p, "binary")


def _pass_through_case(root: Path) -> dict[str, Any]:
    """side_inputs' ``Factor = Create([10])``: its output goes through the
    pass-through ``Factor/MaybeReshuffle`` (output == input). Computed and
    cached, its consumers read the cache; the pass-through must not be rewired
    (that made it a second producer of the PCollection)."""
    idx = fixture_analysis("side_inputs").index
    reshuffle = next(t for t in idx.transforms.values() if t.unique_name == "Factor/MaybeReshuffle")
    pc = reshuffle.outputs["None"]
    key = fixture_analysis("side_inputs").digests.key_for("factor", pc, idx.producer[pc])
    (root / "cache" / "full").mkdir(parents=True)
    (root / "cache" / "full" / f"{key}-00000-of-00001").write_bytes(EMPTY_SHARD)
    doc = {"bindings": {"factor": pc}, "computed": ["factor"]}
    return {"fixture": "side_inputs", "manifest": json.dumps(doc).encode(), "cache_dir": str(root / "cache"),
            "blame": ("pipeline", "manifest")}


REGRESSIONS: dict[str, tuple[Callable[[Path], dict[str, Any]], set[int], str]] = {
    "lone surrogate in a variable name": (
        lambda r: _manifest_case(b'{"bindings": {"\\ud800": "ref_PCollection_PCollection_9"}}'), {2}, "lone surrogate"),
    "lone surrogate in a PCollection id": (
        lambda r: _manifest_case(b'{"bindings": {"w": "\\udfff"}}'), {2}, "lone surrogate"),
    "manifest nested 500 deep": (
        lambda r: _manifest_case(b'{"computed": [' + b"[" * 500 + b"]" * 500 + b"]}"), {2}, "nested more than"),
    "integer too long for Python": (lambda r: _manifest_case(b'{"version": 1' + b"0" * 5000 + b"}"), {2}, "digits; not a binding manifest"),
    "NUL in a cache key": (
        lambda r: _manifest_case(json.dumps({"bindings": {"w": {"pcollection": WORDS, "cache_key": "a\x00-b-c-d"}}}).encode()),
        {2}, "cache_key"),
    "glob characters in a cache key": (
        lambda r: _manifest_case(json.dumps({"bindings": {"w": {"pcollection": WORDS, "cache_key": "a*-b-c-d"}}}).encode()),
        {2}, "glob"),
    "two variables pin one cache key": (
        lambda r: _manifest_case(json.dumps({"bindings": {
            "w": {"pcollection": WORDS, "cache_key": "a-b-c-d"},
            "l": {"pcollection": "ref_PCollection_PCollection_8", "cache_key": "a-b-c-d"}}}).encode()),
        {2}, "already the cache key"),
    "a 100 kB value in a schema error": (
        lambda r: _manifest_case(json.dumps({"computed": {"a": "x" * 100_000}}).encode()), {2}, "computed: expected"),
    "a FIFO where a recording would be": (
        lambda r: _cache_case(r, _fifo, "pubsub_one", ("decoded",)), {2}, "FIFO"),
    "a directory named like a complete shard set": (
        lambda r: _cache_case(r, _dir_as_shards, computed=("words",)), {0}, ""),
    "a shard count of 10**20": (lambda r: _cache_case(r, _absurd_shard_count), {0}, ""),
    "cache dir a dangling link": (lambda r: _cache_case(r, _dangling_cache), {2}, "does not exist"),
    "full a dangling link": (lambda r: _cache_case(r, _dangling_full), {2}, "does not exist"),
    "cache dir under a file": (lambda r: _cache_case(r, _under_a_file), {2}, "cannot be created"),
    "corrupt pickled coder": (
        lambda r: {"pipeline": _corrupt_pickled_coder(), "blame": ("pipeline",)}, {2}, "corrupt payload"),
    "a computed Create output read through its pass-through MaybeReshuffle": (
        lambda r: _pass_through_case(r), {0}, ""),
    "terminal escapes quoted in a parse error": (
        lambda r: {"pipeline": b"\x1b[31mred\x07 {", "ext": ".textproto", "blame": ("pipeline",)}, {2}, "\\x1b"),
}


@pytest.mark.parametrize("label", sorted(REGRESSIONS))
def test_regression(label, tmp_path):
    build, codes, needle = REGRESSIONS[label]
    count("regression")
    spec = {"fixture": "wordcount", **build(tmp_path)}
    if "manifest" not in spec:
        spec["manifest"] = fixture_manifest_bytes(spec["fixture"])
    case = make_case(tmp_path, spec.pop("pipeline", None), options={"flags": ("--json",)}, **spec)
    with work_budget(10_000_000):  # the costliest case: ~1.2 million, 1.8 million cold
        runs = run_contract(case, ("analyze", "instrument"))
    for r in runs.values():
        assert r.exit_code in codes, r.describe()
        if r.exit_code == 2:
            line = _error_line(r)
            assert needle in line and len(line) < 400, line


def test_fixed_skip_pruning_rule_leaves_dangling_subtransforms(tmp_path):
    p = fresh("pubsub_one")
    p.components.transforms[p.root_transform_ids[0]].spec.urn = TEST_STREAM
    validate(p)  # structurally fine
    case = make_case(tmp_path, serialize_pipeline(p, "binary"), fixture="pubsub_one",
                     manifest=fixture_manifest_bytes("pubsub_one"), blame=("pipeline",))
    run_contract(case, ("instrument",))


# --- 12. the safety classes: crafted pickles, bombs, hostile keys, aliased outputs, hostile names ------------
#
# Generated versions of the example tests in test_safety_pickles.py and
# test_safety_bounds.py, under the same contract plus each class's invariant.

HUMAN = ("analyze", "diff", "graph")  # commands whose stdout is for a terminal


def graph_run(case: Case, fmt: str = "dot") -> Run:
    """``graph`` on ``case`` (to stdout), held to the contract: 0 or 2, no
    traceback, one line naming an input on failure, inputs unchanged."""
    args = ["graph", case.pipeline, *(["-m", case.manifest] if case.manifest else []), "--format", fmt]
    before = snapshot(case.watched())
    out_before = listing(case.out_dir)
    run = invoke(args, case.stdin)
    assert not inputs_changed(before, snapshot(case.watched()), case), run.describe()
    problems = [p for p in contract_problems(run, case, "-", out_before) if not p.startswith("stdout not empty")]
    if run.exit_code == 2 and run.stdout.strip():
        problems.append("stdout not empty on failure")
    assert not problems, f"contract violated: {problems}\n{run.describe()}"
    return run


def run_drawn(case: Case, commands: list[str]) -> dict[str, Run]:
    runs = run_contract(case, tuple(c for c in commands if c != "graph"))
    if "graph" in commands:
        runs["graph"] = graph_run(case)
    return runs


ALL_COMMANDS = (*COMMANDS, "graph")
SOME_COMMANDS = st.lists(st.sampled_from(ALL_COMMANDS), min_size=1, max_size=3, unique=True)
PICKLE_SITES = ("coder", "kv-component", "window-fn on a bound pcollection", "window-fn on a source", "recording line")


def _recording_cache(root: Path, marker: Path) -> tuple[str, str]:
    """pubsub_one's source recording with a line tagged 0xff (what Beam's
    SafeFastPrimitivesCoder unpickles): (cache dir, the recording's path)."""
    import pickle
    from urllib.parse import quote

    from apache_beam.portability.api import beam_interactive_api_pb2 as iapi
    from apache_beam.runners.interactive.cache_manager import SafeFastPrimitivesCoder
    from test_safety_pickles import _Touch

    key = next(c.cache_key for c in fixture_analysis("pubsub_one").cacheables.values() if c.synthetic)
    full = root / "cache" / "full"
    full.mkdir(parents=True)
    header = SafeFastPrimitivesCoder().encode(iapi.TestStreamFileHeader(tag=key).SerializeToString())
    (full / key).write_bytes(header + b"\n" + quote(b"\xff" + pickle.dumps(_Touch(str(marker)))).encode() + b"\n")
    return str(root / "cache"), str(full / key)


@settings(max_examples=budget(1))
@given(st.sampled_from(PICKLE_SITES), SOME_COMMANDS, cli_options())
def test_crafted_pickles_never_run(site, commands, options):
    """A pickle whose load would create a marker file, wherever one can sit:
    no command ever creates the marker (without --trust-pickles)."""
    from test_safety_pickles import _source_output, coder_case, window_case

    count("crafted pickle (cli)")
    with workdir() as root:
        marker = root / "MARKER"
        (root / "build").mkdir()
        cache_dir, blame, extra = None, ("pipeline", "manifest"), ()
        if site in ("coder", "kv-component"):
            pb, man = coder_case(root / "build", marker, site == "kv-component")
        elif site == "window-fn on a bound pcollection":
            pb, man = window_case(root / "build", marker, "wordcount", fixture_manifest_doc("wordcount")["bindings"]["words"])
        elif site == "window-fn on a source":
            pb, man = window_case(root / "build", marker, "pubsub_one", _source_output("pubsub_one"))
        else:
            pb, man = fixture_pb("pubsub_one"), fixture_manifest("pubsub_one")
            cache_dir, recording = _recording_cache(root, marker)
            blame, extra = ("cache",), (recording,)
        fixture = "pubsub_one" if "source" in site or site == "recording line" else "wordcount"
        case = make_case(root, Path(pb).read_bytes(), fixture=fixture, manifest=Path(man).read_bytes(),
                         cache_dir=cache_dir, blame=blame, options=only_input_errors(options))
        case.blame += extra
        run_drawn(case, commands)
        assert not marker.exists(), f"a command ran code from its input ({site}: {commands})"


@functools.cache
def _small_bomb(method: str, size: int) -> bytes:
    import bz2
    import zlib

    return bz2.compress(bytes(size)) if method == "bz2" else zlib.compress(bytes(size), 9)


BOMB_SITES = ("pardo", "coder", "pickled transform", "window-fn")
BOMB_CAP = 1 << 20  # far above the fixtures' pickles, so only the bomb trips it


def bomb_proto(site: str, blob: bytes) -> Any:
    import base64

    from google.protobuf import wrappers_pb2
    from test_safety_bounds import PICKLED_CODER, PICKLED_WINDOW_FN, _transform

    p = fresh("wordcount")
    c = p.components
    if site == "pardo":
        t = _transform(p, "Split")
        payload = runner_api().ParDoPayload.FromString(t.spec.payload)
        payload.do_fn.payload = base64.b64encode(blob)
        t.spec.payload = payload.SerializeToString()
    elif site == "coder":
        cid = next(k for k, x in c.coders.items() if x.spec.urn == PICKLED_CODER)
        value = b"FastPrimitivesCoder$" + base64.b64encode(blob)
        c.coders[cid].spec.payload = wrappers_pb2.BytesValue(value=value).SerializeToString()
    elif site == "pickled transform":
        _transform(p, "ReadLines").spec.payload = base64.b64encode(blob)
    else:
        ws = next(iter(c.windowing_strategies.values()))
        ws.window_fn.urn = PICKLED_WINDOW_FN
        ws.window_fn.payload = base64.b64encode(blob)
    return p


@contextlib.contextmanager
def decompression_cap(cap: int) -> Iterator[None]:
    from beaminst.model import bounded

    saved = os.environ.get(bounded.ENV)
    os.environ[bounded.ENV] = str(cap)
    try:
        yield
    finally:
        os.environ.pop(bounded.ENV) if saved is None else os.environ.update({bounded.ENV: saved})


@settings(max_examples=budget(1))
@given(st.sampled_from(BOMB_SITES), st.sampled_from(("bz2", "zlib")), st.sampled_from((2, 4, 16)),
       st.sampled_from(tuple(EXT)), SOME_COMMANDS)
def test_decompression_bombs_are_one_line_errors(site, method, factor, fmt, commands):
    """A payload inflating past the cap (lowered to 1 MiB, bombs of 2-16 MiB):
    every command exits 2 with one line naming the pipeline."""
    count("bomb (cli)")
    p = bomb_proto(site, _small_bomb(method, BOMB_CAP * factor))
    with workdir() as root, decompression_cap(BOMB_CAP):
        case = make_case(root, serialize_pipeline(p, fmt), fixture="wordcount", ext=EXT[fmt],
                         manifest=fixture_manifest_bytes("wordcount"), blame=("pipeline",))
        for cmd, run in run_drawn(case, commands).items():
            assert run.exit_code == 2, f"{cmd} accepted a bomb\n{run.describe()}"
            if cmd != "batch":
                assert "decompresses" in _error_line(run), run.describe()


NON_ASCII_KEYS = st.text(min_size=1, max_size=40).filter(lambda k: not k.isascii())


@settings(max_examples=budget(0.5))
@given(NON_ASCII_KEYS, st.booleans(), SOME_COMMANDS)
def test_non_ascii_cache_keys_are_manifest_errors(key, ensure_ascii, commands):
    count("non-ASCII cache key (cli)")
    doc = {"bindings": {"words": {"pcollection": WORDS, "cache_key": key}}}
    with workdir() as root:
        case = make_case(root, None, fixture="wordcount", manifest=encode_json(doc, ensure_ascii), blame=("manifest",))
        for cmd, run in run_drawn(case, commands).items():
            if cmd != "diff":  # diff reads no manifest
                assert run.exit_code == 2, f"{cmd} accepted cache key {key!r}\n{run.describe()}"


@settings(max_examples=budget(0.5))
@given(st.sampled_from(("instrument", "background-caching", "graph")), st.sampled_from(("pipeline", "manifest")),
       st.sampled_from(("same", "dotted", "symlink", "hardlink", "symlink to a symlink")))
def test_an_output_never_replaces_an_input(cmd, which, how):
    count("-o aliasing (cli)")
    with workdir() as root:
        case = make_case(root, None, fixture="wordcount", manifest=fixture_manifest_bytes("wordcount"))
        target = Path(case.pipeline if which == "pipeline" else str(case.manifest))
        out = {"same": target, "dotted": target.parent / "." / target.name}.get(how, case.out_dir / f"alias{target.suffix}")
        if how == "symlink":
            out.symlink_to(target)
        elif how == "hardlink":
            os.link(target, out)
        elif how == "symlink to a symlink":
            (root / "hop").symlink_to(target)
            out.symlink_to(root / "hop")
        args = [cmd, case.pipeline, "-m", str(case.manifest), "-o", str(out)]
        args += ["--format", "dot"] if cmd == "graph" else ["--cache-dir", case.cache_dir]
        before = snapshot(case.watched())
        run = invoke(args, None)
        assert not inputs_changed(before, snapshot(case.watched()), case), run.describe()
        assert run.exit_code == 2, run.describe()
        lines = beam_noise_free(run.stderr)
        assert len(lines) == 1 and lines[0].startswith(f"beaminst: {out}: "), run.describe()
        assert "never replaces an input" in lines[0], run.describe()
        assert "Traceback" not in run.stderr
        assert not Path(case.cache_dir).exists()  # refused before any work


HOSTILE_PIECES = st.sampled_from(("\x1b", "\x1b[31m", "\x1b]0;t\x07", "\x00", "\x07", "\x7f", "\x9b", "\u202e", "\r",
                                  "\n", "\t", "[red]", "[/]", "[/red]", "[bold", "[link=x]", "\\", '"', "%s", "{}"))
HOSTILE_NAMES = st.lists(st.one_of(HOSTILE_PIECES, st.text(max_size=4)), min_size=1, max_size=6).map("".join)


@settings(max_examples=budget(1))
@given(HOSTILE_NAMES, HOSTILE_NAMES, st.sampled_from(("Split", "Format", "ReadLines")), st.booleans(), SOME_COMMANDS)
def test_hostile_names_never_reach_a_terminal_raw(name, var, transform, json_out, commands):
    """Control characters and rich markup in a transform's unique name and a
    manifest variable: the contract holds, and the human output of analyze,
    diff and graph never carries a raw ESC or NUL."""
    from test_safety_bounds import _transform

    count("hostile names (cli)")
    p = fresh("wordcount")
    _transform(p, transform).unique_name = name
    manifest = json.dumps({"bindings": {var: WORDS}}).encode()
    with workdir() as root:
        case = make_case(root, serialize_pipeline(p, "binary"), fixture="wordcount", manifest=manifest,
                         options={"flags": ("--json",) if json_out else ()})
        runs = run_drawn(case, sorted(set(commands) | set(HUMAN)))
        for cmd in HUMAN:
            text = runs[cmd].stdout.decode("utf-8", "surrogateescape") + runs[cmd].stderr
            assert "\x1b" not in text and "\x00" not in text, f"raw control character from {cmd}\n{runs[cmd].describe()}"
