"""``beaminst instrument`` from the shell: reports, determinism, bad input."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from conftest import (
    CORRUPT,
    REPO,
    beam_noise_free,
    fixture_manifest,
    fixture_pb,
    run_cli,
    run_cli_subprocess,
)

WC, WC_M = fixture_pb("wordcount"), fixture_manifest("wordcount")


def sha(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_json_report_and_output(tmp_path):
    out = tmp_path / "out.pb"
    r = run_cli("instrument", WC, "-m", WC_M, "--cache-dir", str(tmp_path / "c"), "-o", str(out), "--json")
    assert r.exit_code == 0, r.stderr
    rep = json.loads(r.stdout)
    assert set(rep) >= {"writes", "reads", "pruned", "rewired", "test_stream", "output", "format", "warnings"}
    assert rep["output"] == str(out) and rep["format"] == "binary"
    assert {w["var"] for w in rep["writes"]} == {"lines", "words", "counts", "formatted"}
    for w in rep["writes"]:
        assert w["transforms"] == [f"ReifyBefore_WriteCache_{w['cache_key']}", f"WriteCache_{w['cache_key']}"]
    assert out.stat().st_size > 0


def test_human_summary(tmp_path):
    r = run_cli("instrument", WC, "-m", WC_M, "--cache-dir", str(tmp_path / "c"), "-o", str(tmp_path / "o.pb"))
    assert r.exit_code == 0
    assert "4 write(s), 0 read(s)" in r.stdout


def test_same_input_same_bytes_across_processes_and_inputs_untouched(tmp_path):
    before = (sha(WC), sha(WC_M))
    outs = []
    for i in range(2):
        out = tmp_path / f"o{i}.pb"
        proc = run_cli_subprocess("instrument", WC, "-m", WC_M, "--cache-dir", str(tmp_path / "cache"), "-o", str(out))
        assert proc.returncode == 0, proc.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    assert (sha(WC), sha(WC_M)) == before


def test_streaming_output_is_the_same_whatever_the_hash_seed(tmp_path):
    """Beam's TestStream keeps its tags in a set, and proto maps iterate in no
    fixed order: the TestStream's output PCollections swapped ids between runs
    (PYTHONHASHSEED 1 and 3 gave different bytes for pubsub_two)."""
    import subprocess
    import sys

    outs = []
    for seed in ("1", "3", "7"):
        out = tmp_path / f"{seed}.pb"
        # Store off: each run builds its TestStream (a stored one would hide the drift).
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": seed, "BEAMINST_TEMPLATE_CACHE": "off"}
        proc = subprocess.run(
            [sys.executable, "-m", "beaminst", "instrument", fixture_pb("pubsub_two"), "-m", fixture_manifest("pubsub_two"),
             "--cache-dir", str(tmp_path / "cache"), "-o", str(out)],
            capture_output=True, text=True, env=env, timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2]


@pytest.mark.parametrize(("command", "name"), [("instrument", "windowing"), ("background-caching", "pubsub_one")])
def test_same_bytes_whatever_the_install_layout(command, name, tmp_path):
    """beaminst copied to two directories (as an editable install and a wheel
    differ), one with its code moved down a few lines: the same bytes out. A function pickled by value once carried its
    absolute source path, and 36 of word count's 96 transforms differed."""
    import shutil
    import subprocess
    import sys

    outs = []
    for where in ("a", "b/deeper/site-packages"):
        root = tmp_path / where
        shutil.copytree(REPO / "beaminst", root / "beaminst", ignore=shutil.ignore_patterns("__pycache__"))
        if outs:  # and an edit that only moves code down: line numbers must not reach the output
            graft = root / "beaminst" / "graft" / "templates.py"
            graft.write_text("# moved\n" * 7 + graft.read_text())
        out = tmp_path / f"{len(outs)}.pb"
        env = {**os.environ, "PYTHONPATH": str(root), "BEAMINST_TEMPLATE_CACHE": "off"}  # built, each time
        proc = subprocess.run(
            [sys.executable, "-m", "beaminst", command, fixture_pb(name), "-m", fixture_manifest(name),
             "--cache-dir", str(tmp_path / "cache"), "-o", str(out)],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]


@pytest.mark.parametrize("fmt,ext", [("text", ".textproto"), ("json", ".json")])
def test_output_format_from_extension(fmt, ext, tmp_path):
    out = tmp_path / f"o{ext}"
    r = run_cli("instrument", WC, "-m", WC_M, "--cache-dir", str(tmp_path / "c"), "-o", str(out), "--json")
    assert json.loads(r.stdout)["format"] == fmt
    from beaminst.model.protoio import load_pipeline

    assert load_pipeline(str(out))[1] == fmt


def test_stdout_output_gets_the_proto_and_stderr_the_report(tmp_path):
    proc = run_cli_subprocess("instrument", WC, "-m", WC_M, "--cache-dir", str(tmp_path / "c"), "-o", "-", "--json")
    assert proc.returncode == 0
    # The output as given ("-"), not null: issue 12 found null undocumented and unhelpful.
    assert json.loads("\n".join(beam_noise_free(proc.stderr)))["output"] == "-"


def test_stdout_binary_round_trips(tmp_path):
    import subprocess
    import sys

    from conftest import CLI_PREFIX, REPO

    proc = subprocess.run(
        [*CLI_PREFIX, "instrument", WC, "-m", WC_M, "--cache-dir", str(tmp_path / "c"), "-o", "-"],
        capture_output=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120,
    )
    assert proc.returncode == 0
    from beaminst.graph.validate import validate
    from beaminst.model.protoio import parse_pipeline

    proto, fmt = parse_pipeline(proc.stdout)
    assert fmt == "binary"
    validate(proto)
    assert sys.executable


def one_line_error(result) -> str:
    lines = [line for line in beam_noise_free(result.stderr)]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_binding_inside_an_unbounded_source_is_an_error(tmp_path):
    from beaminst.model.protoio import load_pipeline

    pb = fixture_pb("pubsub_one")
    proto, _ = load_pipeline(pb)
    inner = next(pc for pc, t in ((pc, t) for t in proto.components.transforms.values() for pc in t.outputs.values()
                                  if t.spec.urn == "beam:transform:pubsub_read:v1"))
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"bindings": {"raw_inner": inner}}))
    out = tmp_path / "o.pb"
    r = run_cli_subprocess("instrument", pb, "-m", str(manifest), "--cache-dir", str(tmp_path / "c"), "-o", str(out))
    assert r.returncode == 2
    msg = one_line_error(r)
    assert "raw_inner" in msg and "unbounded source" in msg and str(manifest) in msg
    assert not out.exists()


@pytest.mark.parametrize("case", ["missing_dir", "is_dir", "read_only"])
def test_unwritable_output(case, tmp_path):
    if case == "missing_dir":
        out = tmp_path / "nope" / "o.pb"
    elif case == "is_dir":
        out = tmp_path
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        out = ro / "o.pb"
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user that ignores directory permissions")
    r = run_cli_subprocess("instrument", WC, "-m", WC_M, "--cache-dir", str(tmp_path / "c"), "-o", str(out))
    assert r.returncode == 2
    assert str(out) in one_line_error(r)
    if case != "is_dir":
        assert not out.exists()


def test_beams_leftover_temp_directories_are_one_warning(tmp_path):
    """A failed run leaves one beam-temp-<key>-<uuid>/ per variable it was
    writing: one line says so, not one per directory."""
    cache = tmp_path / "c"
    for i in range(3):
        (cache / "full" / f"beam-temp-k{i}-0123456789abcdef0123456789abcdef").mkdir(parents=True)
    (cache / "full" / "not-beams").mkdir()
    r = run_cli("instrument", WC, "-m", WC_M, "--cache-dir", str(cache), "-o", str(tmp_path / "o.pb"), "--json")
    assert r.exit_code == 0, r.stderr
    warnings = json.loads(r.stdout)["warnings"]
    temps = [w for w in warnings if "beam-temp" in w]
    assert temps == [
        "cache: full/: 3 temporary directories of Beam's file writes (beam-temp-k0-0123456789abcdef0123456789abcdef and "
        "2 more): a write that did not finish, ignored (safe to delete once no job is writing to this cache)"
    ]
    assert any("full/not-beams: not a regular file, ignored" in w for w in warnings)


def test_cache_dir_that_is_a_file(tmp_path):
    f = tmp_path / "cachefile"
    f.write_text("x")
    out = tmp_path / "o.pb"
    r = run_cli_subprocess("instrument", WC, "-m", WC_M, "--cache-dir", str(f), "-o", str(out))
    assert r.returncode == 2
    assert "not a directory" in one_line_error(r)
    assert not out.exists()


def test_cache_dir_is_required(tmp_path):
    r = run_cli("instrument", WC, "-m", WC_M, "-o", str(tmp_path / "o.pb"))
    assert r.exit_code == 2
    assert "--cache-dir" in r.stderr


@pytest.mark.parametrize("name", sorted(p.name for p in CORRUPT.iterdir()))
def test_corrupt_inputs(name, tmp_path):
    out = tmp_path / "o.pb"
    r = run_cli_subprocess("instrument", str(CORRUPT / name), "--cache-dir", str(tmp_path / "c"), "-o", str(out))
    assert r.returncode == 2
    assert name in one_line_error(r)
    assert not out.exists() and os.listdir(tmp_path) in ([], ["c"])


class Player:
    def __init__(self, name: str) -> None:
        self.name = name


def _player_coder():
    """As Beam's cookbook/group_with_coder's PlayerCoder: no to_type_hint."""
    from apache_beam import coders

    class _PlayerCoder(coders.Coder):
        def encode(self, value):
            return value.name.encode()

        def decode(self, encoded):
            return Player(encoded.decode())

        def is_deterministic(self):
            return True

    return _PlayerCoder


def test_a_custom_coder_with_no_type_hint_is_named_as_such(tmp_path):
    """Beam's own cookbook example (group_with_coder): the coder decodes, but
    Beam cannot type the cache transforms' PCollections from it (its
    to_type_hint raises; Interactive Beam fails the same way). The message
    says that, not that the SDK cannot decode it."""
    import apache_beam as beam
    from apache_beam import coders

    import beaminst

    coders.registry.register_coder(Player, _player_coder())
    p = beam.Pipeline()
    players = p | beam.Create(["ann", "bob"]) | beam.Map(Player).with_output_types(Player)
    pb, man = beaminst.export(p, {"players": players}, str(tmp_path / "p"))
    r = run_cli("instrument", pb, "-m", man, "--cache-dir", str(tmp_path / "c"), "-o", str(tmp_path / "o.pb"),
                "--trust-pickles")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "gives no element type (its to_type_hint raises NotImplementedError; Interactive Beam fails the same way)" in r.stderr


# -o names what a shell redirection would write to: a symlink's target (the
# link stays), a FIFO or a character device written through (never replaced
# by a regular file: as root, -o /dev/null used to turn /dev/null into one).


def _reference_output(tmp_path, cache) -> bytes:
    ref = tmp_path / "ref.pb"
    r = run_cli("instrument", WC, "-m", WC_M, "--cache-dir", str(cache), "-o", str(ref))
    assert r.exit_code == 0, r.stderr
    return ref.read_bytes()


def _char_device(tmp_path, name: str, minor: int, system: str) -> str:
    """A character device of our own (``mknod``, as root), else the system's
    ``system`` (which a user who cannot mknod cannot replace either)."""
    import stat

    node = tmp_path / name
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, minor))
    except OSError:  # PermissionError among them
        return system
    return str(node)


def test_output_through_a_symlink_replaces_its_target_and_keeps_the_link(tmp_path):
    cache = tmp_path / "c"
    expected = _reference_output(tmp_path, cache)
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "out.pb"
    target.write_bytes(b"old content")
    link = tmp_path / "link.pb"
    link.symlink_to(target)
    dangling = tmp_path / "new.pb"
    dangling.symlink_to(tmp_path / "real" / "made.pb")
    for out in (link, dangling):
        r = run_cli("instrument", WC, "-m", WC_M, "--cache-dir", str(cache), "-o", str(out))
        assert r.exit_code == 0, r.stderr
        assert out.is_symlink()
    assert target.read_bytes() == expected
    assert (tmp_path / "real" / "made.pb").read_bytes() == expected
    assert not [p for p in (tmp_path / "real").iterdir() if p.name.endswith(".tmp")]


def test_output_into_a_fifo_is_written_through(tmp_path):
    import stat
    import threading

    cache = tmp_path / "c"
    expected = _reference_output(tmp_path, cache)
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    r = run_cli("instrument", WC, "-m", WC_M, "--cache-dir", str(cache), "-o", str(fifo))
    reader.join(30)
    assert r.exit_code == 0, r.stderr
    assert got == [expected]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_output_to_a_character_device_is_written_through(tmp_path):
    import stat

    null = _char_device(tmp_path, "null", 3, "/dev/null")
    r = run_cli("instrument", WC, "-m", WC_M, "--cache-dir", str(tmp_path / "c"), "-o", null)
    assert r.exit_code == 0, r.stderr
    assert stat.S_ISCHR(os.lstat(null).st_mode)
    r = run_cli("graph", WC, "-o", null)
    assert r.exit_code == 0, r.stderr
    assert stat.S_ISCHR(os.lstat(null).st_mode)


def test_a_full_device_is_one_line_and_exit_2(tmp_path):
    import stat

    full = _char_device(tmp_path, "full", 7, "/dev/full")
    r = run_cli_subprocess("instrument", WC, "-m", WC_M, "--cache-dir", str(tmp_path / "c"), "-o", full)
    assert r.returncode == 2
    assert "No space left on device" in one_line_error(r)
    assert stat.S_ISCHR(os.lstat(full).st_mode)


def test_a_socket_is_refused_before_any_work(tmp_path):
    import socket
    import tempfile

    short = tempfile.mkdtemp(dir="/tmp")  # an AF_UNIX path has a length limit
    path = os.path.join(short, "s.sock")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(path)
        r = run_cli_subprocess("instrument", WC, "-m", WC_M, "--cache-dir", str(tmp_path / "c"), "-o", path)
    assert r.returncode == 2
    assert "is a socket" in one_line_error(r)
    os.unlink(path)
    os.rmdir(short)


def test_instrumenting_an_instrumented_output_warns(tmp_path):
    cache = str(tmp_path / "c")
    once, twice = tmp_path / "once.pb", tmp_path / "twice.pb"
    first = run_cli("instrument", WC, "-m", WC_M, "--cache-dir", cache, "-o", str(once), "--json")
    assert first.exit_code == 0 and not any("already holds" in w for w in json.loads(first.stdout)["warnings"])
    again = run_cli("instrument", str(once), "-m", WC_M, "--cache-dir", cache, "-o", str(twice), "--json")
    assert again.exit_code == 0, again.stderr
    assert any("already holds cache writes" in w and "original" in w for w in json.loads(again.stdout)["warnings"])


@pytest.mark.parametrize("kind, hint", [("dokcer", ""), ("docker", "did you mean DOCKER?")])
def test_an_unknown_environment_type_is_refused_even_where_unused(kind, hint, tmp_path):
    """Word count has a Python environment of its own, so the type would not
    be used; a typo there still deserves a line, not a silent 'not used'."""
    out = tmp_path / "o.pb"
    r = run_cli_subprocess("instrument", WC, "-m", WC_M, "--cache-dir", str(tmp_path / "c"), "-o", str(out),
                           "--environment-type", kind)
    assert r.returncode == 2
    line = one_line_error(r)
    assert "--environment-type" in line and "not an environment type Beam knows" in line and hint in line
    assert not out.exists()
    from beaminst.options import WorkerOptions

    for fine in ("DOCKER", "PROCESS", "EXTERNAL", "beam:env:docker:v1"):
        WorkerOptions(environment_type=fine)


def test_dev_stdout_is_stdout(tmp_path):
    """-o /dev/stdout with stdout redirected to a file: the proto goes to
    stdout as with -o - (the report to stderr), not over the file's path."""
    import subprocess

    from conftest import CLI_PREFIX

    cache = tmp_path / "c"
    expected = _reference_output(tmp_path, cache)
    out = tmp_path / "redirected.pb"
    with open(out, "wb") as f:
        proc = subprocess.run([*CLI_PREFIX, "instrument", WC, "-m", WC_M, "--cache-dir", str(cache), "-o", "/dev/stdout"],
                              stdout=f, stderr=subprocess.PIPE, text=True, cwd=str(REPO),
                              env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == expected
    assert "write\t" in proc.stderr
    assert os.path.islink("/dev/stdout")


def test_analyze_of_a_rewritten_pipeline_names_running_it_not_redoing_it(tmp_path):
    """analyze warns that the pipeline holds beaminst's cache transforms: its
    next step is to run it, never to instrument (or record) it again."""
    cache = str(tmp_path / "c")
    out = tmp_path / "once.pb"
    assert run_cli("instrument", WC, "-m", WC_M, "--cache-dir", cache, "-o", str(out)).exit_code == 0
    r = run_cli("analyze", str(out))
    assert r.exit_code == 0, r.stderr
    steps = [line.split("\t", 1)[1] for line in r.stdout.splitlines() if line.startswith("next\t")]
    assert steps == [f"beaminst run {out}  # rewritten already: run it as it is (instrument takes the original)"]
    # The original's next step is still to instrument it.
    r = run_cli("analyze", WC, "-m", WC_M)
    assert any(line.startswith("next\tbeaminst instrument ") for line in r.stdout.splitlines()), r.stdout
