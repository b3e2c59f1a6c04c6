"""Proto I/O: formats, content detection, stdin, atomic writes, corrupt inputs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import (
    CORRUPT,
    FIXTURE_NAMES,
    FIXTURES,
    beam_noise_free,
    fixture_pb,
    load_fixture,
    run_cli,
    run_cli_subprocess,
)

from beaminst.errors import BeaminstError, OutputError, ProtoLoadError
from beaminst.model import protoio
from beaminst.model.protoio import (
    FORMATS,
    load_pipeline,
    parse_pipeline,
    save_pipeline,
    serialize_pipeline,
)

WORDCOUNT_FORMS = {
    "binary": FIXTURES / "wordcount.pb",
    "text": FIXTURES / "wordcount.textproto",
    "json": FIXTURES / "wordcount.json",
}
EXT = {"binary": ".pb", "text": ".textproto", "json": ".json"}


def _dir_listing(path) -> list[str]:
    return sorted(os.listdir(path))


# --- formats and round trips -------------------------------------------------


@pytest.mark.parametrize("src_fmt", FORMATS)
def test_each_committed_form_loads_as_the_same_pipeline(src_fmt):
    reference, fmt = load_pipeline(str(WORDCOUNT_FORMS["binary"]))
    assert fmt == "binary"
    proto, detected = load_pipeline(str(WORDCOUNT_FORMS[src_fmt]))
    assert detected == src_fmt
    assert proto == reference
    assert len(proto.components.transforms) == 20


@pytest.mark.parametrize("src_fmt", FORMATS)
@pytest.mark.parametrize("dst_fmt", FORMATS)
def test_round_trip_every_format_pair(tmp_path, src_fmt, dst_fmt):
    original, _ = load_pipeline(str(WORDCOUNT_FORMS[src_fmt]))
    first = tmp_path / f"first{EXT[dst_fmt]}"
    second = tmp_path / f"second{EXT[dst_fmt]}"
    assert save_pipeline(original, str(first)) == dst_fmt  # format from the extension
    assert save_pipeline(original, str(second), dst_fmt) == dst_fmt
    reloaded, detected = load_pipeline(str(first))
    assert detected == dst_fmt
    assert reloaded == original
    # Deterministic output: two saves, and a save of the reloaded proto, agree byte for byte.
    assert first.read_bytes() == second.read_bytes()
    third = tmp_path / f"third{EXT[dst_fmt]}"
    save_pipeline(reloaded, str(third))
    assert third.read_bytes() == first.read_bytes()
    assert _dir_listing(tmp_path) == sorted(p.name for p in (first, second, third))


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_binary_output_is_canonical_for_every_fixture(name):
    """The committed .pb files were written by beaminst; re-serializing them
    must reproduce them exactly (map entries sorted)."""
    proto = load_fixture(name)
    assert serialize_pipeline(proto, "binary") == (FIXTURES / f"{name}.pb").read_bytes()


def test_committed_text_and_json_copies_match_serializer():
    proto = load_fixture("wordcount")
    assert serialize_pipeline(proto, "text") == WORDCOUNT_FORMS["text"].read_bytes()
    assert serialize_pipeline(proto, "json") == WORDCOUNT_FORMS["json"].read_bytes()


def test_unknown_format_is_rejected(tmp_path):
    proto = load_fixture("wordcount")
    with pytest.raises(OutputError, match="yaml"):
        save_pipeline(proto, str(tmp_path / "x.pb"), "yaml")  # type: ignore[arg-type]
    assert _dir_listing(tmp_path) == []


def test_output_format_defaults():
    assert protoio.output_format("out.textproto", None) == "text"
    assert protoio.output_format("out.json", None) == "json"
    assert protoio.output_format("out.whatever", None) == "binary"
    assert protoio.output_format("-", None) == "binary"
    assert protoio.output_format("out.json", "text") == "text"


# --- content-based detection -------------------------------------------------


@pytest.mark.parametrize(
    ("content_fmt", "misleading_ext"),
    [("json", ".pb"), ("text", ".json"), ("binary", ".textproto"), ("json", ".textproto"), ("text", ".pb")],
)
def test_content_wins_over_a_misleading_extension(tmp_path, content_fmt, misleading_ext):
    target = tmp_path / f"pipeline{misleading_ext}"
    shutil.copyfile(WORDCOUNT_FORMS[content_fmt], target)
    proto, detected = load_pipeline(str(target))
    assert detected == content_fmt
    assert proto == load_fixture("wordcount")


def test_json_content_in_pb_file_runs_through_cli(tmp_path):
    target = tmp_path / "really_json.pb"
    shutil.copyfile(WORDCOUNT_FORMS["json"], target)
    result = run_cli("analyze", str(target), "--json")
    assert result.exit_code == 0, result.stderr
    assert '"ref_PCollection_PCollection_13"' in result.stdout


def test_parse_pipeline_from_bytes_with_no_hint():
    for fmt, path in WORDCOUNT_FORMS.items():
        proto, detected = parse_pipeline(path.read_bytes())
        assert detected == fmt
        assert proto.root_transform_ids == ["ref_AppliedPTransform_AppliedPTransform_1"]


def test_a_valid_message_that_is_not_a_pipeline_is_rejected():
    """Bytes of another message type parse as a Pipeline with unknown fields
    (or nothing at all); beaminst must not accept them as an empty pipeline."""
    from beaminst.model.beamproto import runner_api

    coder = runner_api().Coder()
    coder.spec.urn = "beam:coder:bytes:v1"
    with pytest.raises(ProtoLoadError, match="not a valid Beam pipeline proto"):
        parse_pipeline(coder.SerializeToString(), "coder.pb")
    with pytest.raises(ProtoLoadError, match="not a valid Beam pipeline proto"):
        parse_pipeline(b"{}", "empty_object.json")


# --- stdin ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_stdin_dash_via_cli(fmt):
    result = run_cli("analyze", "-", "--json", input=WORDCOUNT_FORMS[fmt].read_bytes())
    assert result.exit_code == 0, result.stderr
    assert '"producer": "Format"' in result.stdout


def test_stdin_dash_via_real_process():
    proc = run_cli_subprocess("analyze", "-", input=WORDCOUNT_FORMS["text"].read_bytes())
    assert proc.returncode == 0, proc.stderr
    assert "20 transforms, 13 PCollections" in proc.stdout


def test_corrupt_stdin_names_stdin():
    result = run_cli("analyze", "-", input=b"\x00\x01garbage")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("beaminst: <stdin>:")


def test_pipeline_and_manifest_cannot_both_be_stdin():
    result = run_cli("analyze", "-", "-m", "-", input=WORDCOUNT_FORMS["text"].read_bytes())
    assert result.exit_code == 2
    assert "stdin" in result.stderr


# --- atomic writes -------------------------------------------------------------


def test_missing_output_directory_is_an_output_error_and_writes_nothing(tmp_path):
    proto = load_fixture("wordcount")
    target = tmp_path / "no" / "such" / "dir" / "out.pb"
    with pytest.raises(OutputError) as info:
        save_pipeline(proto, str(target))
    assert str(target) in str(info.value)
    assert info.value.exit_code == 2
    assert not target.exists()
    assert _dir_listing(tmp_path) == []


def test_output_path_that_is_a_directory_is_refused(tmp_path):
    proto = load_fixture("wordcount")
    with pytest.raises(OutputError, match="directory"):
        save_pipeline(proto, str(tmp_path))
    assert _dir_listing(tmp_path) == []


@pytest.mark.parametrize("failing", ["fsync", "replace", "write"])
def test_failed_write_keeps_the_old_target_and_leaves_no_temp(tmp_path, monkeypatch, failing):
    proto = load_fixture("wordcount")
    target = tmp_path / "out.pb"
    target.write_bytes(b"previous content")

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    if failing == "write":
        real_fdopen = os.fdopen

        class FailingFile:
            def __init__(self, f):
                self._f = f

            def write(self, data):
                self._f.write(data[: len(data) // 2])
                raise OSError(28, "No space left on device")

            def __getattr__(self, name):
                return getattr(self._f, name)

        monkeypatch.setattr(protoio.os, "fdopen", lambda *a, **k: FailingFile(real_fdopen(*a, **k)))
    else:
        monkeypatch.setattr(protoio.os, failing, boom)

    with pytest.raises(OutputError, match="No space left on device"):
        save_pipeline(proto, str(target))
    monkeypatch.undo()
    assert target.read_bytes() == b"previous content"
    assert _dir_listing(tmp_path) == ["out.pb"]


def test_failed_serialization_keeps_the_old_target(tmp_path, monkeypatch):
    proto = load_fixture("wordcount")
    target = tmp_path / "out.json"
    target.write_bytes(b"previous content")

    def broken(*args, **kwargs):
        raise RuntimeError("serializer exploded")

    monkeypatch.setattr(protoio, "serialize_pipeline", broken)
    with pytest.raises(RuntimeError):
        save_pipeline(proto, str(target))
    assert target.read_bytes() == b"previous content"
    assert _dir_listing(tmp_path) == ["out.json"]


def test_successful_write_replaces_target_and_leaves_no_temp(tmp_path):
    proto = load_fixture("wordcount")
    target = tmp_path / "out.pb"
    target.write_bytes(b"old")
    save_pipeline(proto, str(target))
    assert target.read_bytes() == (FIXTURES / "wordcount.pb").read_bytes()
    assert _dir_listing(tmp_path) == ["out.pb"]
    # Permissions follow the umask like an ordinary file, not mkstemp's 0600.
    mask = os.umask(0)
    os.umask(mask)
    assert (target.stat().st_mode & 0o777) == (0o666 & ~mask)


def test_write_to_stdout(capfdbinary):
    proto = load_fixture("wordcount")
    assert save_pipeline(proto, "-") == "binary"
    out = capfdbinary.readouterr().out
    assert out == (FIXTURES / "wordcount.pb").read_bytes()


# --- corrupt and unreadable inputs --------------------------------------------

CORRUPT_FILES = sorted(p.name for p in CORRUPT.iterdir())


def test_corrupt_fixture_set_is_complete():
    assert set(CORRUPT_FILES) >= {"truncated.pb", "garbage.pb", "empty.pb", "dangling.textproto"}


@pytest.mark.parametrize("name", CORRUPT_FILES)
def test_corrupt_input_library_error(name):
    from beaminst.commands.api import load

    path = str(CORRUPT / name)
    with pytest.raises(BeaminstError) as info:
        load(path)
    assert info.value.exit_code == 2
    assert str(info.value).startswith(f"{path}: ")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", CORRUPT_FILES)
def test_corrupt_input_cli_one_line_exit_2(name):
    path = str(CORRUPT / name)
    proc = run_cli_subprocess("analyze", path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = beam_noise_free(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"beaminst: {path}: ")


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("empty.pb", "empty"),
        ("garbage.pb", "not a valid Beam pipeline proto"),
        ("truncated.pb", "not a valid Beam pipeline proto"),
        ("dangling.textproto", "ref_PCollection_does_not_exist"),
    ],
)
def test_corrupt_input_messages_say_what_is_wrong(name, needle):
    result = run_cli("analyze", str(CORRUPT / name))
    assert result.exit_code == 2
    assert needle in result.stderr


def test_empty_and_whitespace_only_say_which(tmp_path):
    """A binary Pipeline starts with 0x0a, a newline: one cut to its first
    byte was called an empty file."""
    target = tmp_path / "blank.textproto"
    target.write_bytes(b"")
    with pytest.raises(ProtoLoadError, match=": file is empty, expected a Beam pipeline proto$"):
        load_pipeline(str(target))
    target.write_bytes(b"  \n\t\n")
    with pytest.raises(ProtoLoadError, match=r": file holds only whitespace \(5 bytes; a binary proto cut short"):
        load_pipeline(str(target))
    cut = tmp_path / "cut.pb"
    cut.write_bytes(Path(fixture_pb("wordcount")).read_bytes()[:1])
    with pytest.raises(ProtoLoadError, match=r"only whitespace \(1 byte; a binary proto cut short starts so too\)"):
        load_pipeline(str(cut))


TEXT_FIRST, BINARY_FIRST, JSON_FIRST = ["text", "binary", "json"], ["binary", "text", "json"], ["json", "text", "binary"]


@pytest.mark.parametrize(("data", "order"), [
    (b"", TEXT_FIRST), (b" \x0b\x0c\r", TEXT_FIRST), (b" " * 5000, TEXT_FIRST),
    (b" " * 4095 + b"{", JSON_FIRST), (b"\n" * 9000 + b"{}", JSON_FIRST), (b"\x0c\x0b\n{}", JSON_FIRST),
    (b"\n\x05hello", BINARY_FIRST), (b"\x00" + b"a" * 5000, BINARY_FIRST), (b"a" * 4096 + b"\x01", TEXT_FIRST),
    (b"name: 'x'\n" * 500 + b"\xff", TEXT_FIRST), (b"\xff" + b"a" * 5000, TEXT_FIRST),
    (b"\x0c\ncomponents {}", TEXT_FIRST), ("\u00e9".encode()[:1], TEXT_FIRST),
])
def test_sniffing_reads_the_first_4k_and_copies_nothing(data, order):
    """Format sniffing looks at the first 4 KiB (past leading whitespace for
    JSON's brace) instead of copying up to 80 MB (``lstrip`` of a binary
    Pipeline, which starts with b"\\n"; ``decode`` allocating a string as
    long as the file): a control byte there means binary first, and a byte
    that is not UTF-8 does not (the text parser then names it)."""
    assert protoio._sniff(data) == order
    assert bool(protoio._first_non_space(data)) == bool(data.strip())


def test_every_fixture_sniffs_as_binary_first():
    pbs = sorted(p for p in FIXTURES.rglob("*.pb") if "corrupt" not in p.parts)
    assert any("typescript" in p.parts for p in pbs)  # another SDK's too
    for pb in pbs:
        assert protoio._sniff(pb.read_bytes()) == BINARY_FIRST, pb


@pytest.mark.parametrize(("damage", "needle"), [
    (lambda text: text + b"\n# caf\xe9\n", "as text: 'utf-8' codec can't decode byte 0xe9"),
    (lambda text: b"# caf\xe9\n" + text, "as text: 'utf-8' codec can't decode byte 0xe9 in position 5"),
    (lambda text: b"\x0c\n" + text.replace(b"value {", b"value [", 1), "as text: "),
])
def test_a_damaged_textproto_is_reported_as_text_whatever_its_name(tmp_path, damage, needle):
    """Not UTF-8 past the first 4 KiB, or before it, or a syntax error after
    a form feed: the error is the text parser's, as it is for a .textproto,
    not binary's "Error parsing message"."""
    data = damage(WORDCOUNT_FORMS["text"].read_bytes())
    for name in ("noext", "p.textproto"):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ProtoLoadError, match="tried text") as e:
            load_pipeline(str(tmp_path / name))
        assert needle in str(e.value), str(e.value)


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_paths(tmp_path, kind):
    path = tmp_path / "nope.pb" if kind == "missing" else tmp_path
    result = run_cli("analyze", str(path))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"beaminst: {path}: ")


def test_every_fixture_loads_as_binary():
    for name in FIXTURE_NAMES:
        proto, fmt = load_pipeline(fixture_pb(name))
        assert fmt == "binary"
        assert proto.root_transform_ids


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_leading_utf8_bom_is_ignored(tmp_path, fmt):
    target = tmp_path / f"bom{EXT[fmt]}"
    target.write_bytes(b"\xef\xbb\xbf" + WORDCOUNT_FORMS[fmt].read_bytes())
    proto, detected = load_pipeline(str(target))
    assert detected == fmt
    assert proto == load_fixture("wordcount")


def test_a_write_sweeps_temp_files_its_killed_predecessors_left(tmp_path):
    """SIGKILL during a write leaves ``.<name>.<pid>.XXXXXXXX.tmp``; the next
    write of that output removes those whose writer is gone, never a live
    writer's or another output's."""
    import subprocess

    from beaminst.model.protoio import write_atomic

    p = subprocess.Popen(["true"])
    p.wait()
    dead, live = p.pid, os.getpid()
    swept = f".out.pb.{dead}.abcd_123.tmp"
    kept = [f".out.pb.{live}.abcd_123.tmp", f".other.pb.{dead}.abcd_123.tmp", f".out.pb.{dead}.not-ours.tmp"]
    for name in [swept, *kept]:
        (tmp_path / name).write_bytes(b"partial")
    write_atomic(str(tmp_path / "out.pb"), b"complete")
    assert sorted(os.listdir(tmp_path)) == sorted(["out.pb", *kept])


def _at_stack_depth(frames: int, fn):
    return fn() if frames == 0 else _at_stack_depth(frames - 1, fn)


@pytest.mark.parametrize("depth", [101, 990, 100_000])
def test_deep_json_is_refused_the_same_way_at_any_stack_depth(depth):
    """Python's json recursion fails where the caller's stack runs out, so
    the soak once saw one error in-process and another in a fresh process;
    the depth is now measured first, without recursing."""
    data = b'{"components": {"transforms": {"a": {"spec": ' + b"[" * depth + b"]" * depth + b"}}}}"

    def error() -> str:
        with pytest.raises(ProtoLoadError) as e:
            parse_pipeline(data, hint="json")
        return str(e.value)

    shallow, deep = error(), _at_stack_depth(600, error)
    assert "JSON nested more than 100 levels deep" in shallow
    assert shallow == deep


def test_deep_json_pipeline_gives_one_line_through_a_real_process(tmp_path):
    path = tmp_path / "deep.json"
    path.write_bytes(b'{"rootTransformIds": ' + b"[" * 5000 + b"]" * 5000 + b"}")
    proc = run_cli_subprocess("analyze", str(path))
    here = run_cli("analyze", str(path))
    assert proc.returncode == here.exit_code == 2
    assert beam_noise_free(proc.stderr) == beam_noise_free(here.stderr)
    assert "nested more than 100 levels deep" in proc.stderr


def _pieces_equal(p) -> None:
    from beaminst.model.protoio import binary_pieces

    assert b"".join(binary_pieces(p)) == p.SerializeToString(deterministic=True)


def test_written_pieces_are_the_deterministic_serialization():
    """save_pipeline writes a binary pipeline in pieces (no one contiguous
    buffer): byte for byte what deterministic serialization gives, on every
    fixture and on keys that order in protobuf's own way."""
    from beaminst.model.beamproto import runner_api
    from beaminst.model.protoio import load_pipeline

    for path in sorted([*FIXTURES.glob("*.pb"), *(FIXTURES / "typescript").glob("*.pb")]):
        _pieces_equal(load_pipeline(str(path))[0])
    p = runner_api().Pipeline()
    _pieces_equal(p)  # no components at all
    for key in ("", "a", "ab", "abc", "ab\x00", "b", "é", "z" * 300, "PCollection_1", "PCollection_10", "\U0001f600"):
        p.components.transforms[key].unique_name = key
        p.components.coders[key].spec.urn = "beam:coder:bytes:v1"
        p.components.environments[key]  # an empty value message
    p.root_transform_ids.extend(["a", "b"])
    p.requirements.append("beam:requirement:pardo:stateful:v1")
    p.display_data.add().urn = "x"
    _pieces_equal(p)
    unknown = runner_api().Pipeline.FromString(p.SerializeToString() + b"\xa8\x1f\x01")  # field 501, varint
    _pieces_equal(unknown)


def test_saving_a_pipeline_writes_those_pieces(tmp_path):
    from beaminst.model.protoio import load_pipeline, save_pipeline

    p, _ = load_pipeline(str(FIXTURES / "wordcount.pb"))
    save_pipeline(p, str(tmp_path / "o.pb"))
    assert (tmp_path / "o.pb").read_bytes() == p.SerializeToString(deterministic=True)


def test_a_trimmed_pipeline_drops_unknown_components_fields_as_the_copy_it_replaced_did():
    """Trimming in place must not keep a field this Beam does not know on
    Components (the copy of what stays dropped it): it would also send the
    output down the one-buffer serialization."""
    from google.protobuf import unknown_fields

    from beaminst.graph.prune import trim_components
    from beaminst.model.beamproto import runner_api

    p = load_fixture("wordcount")
    comps = runner_api().Components.FromString(p.components.SerializeToString() + b"\x98\x06\x01")  # field 99
    p.components.CopyFrom(comps)
    assert len(unknown_fields.UnknownFieldSet(p.components)) == 1
    before = set(p.components.transforms)
    trim_components(p)
    assert len(unknown_fields.UnknownFieldSet(p.components)) == 0
    assert set(p.components.transforms) == before
    _pieces_equal(p)


def test_pieces_fall_back_for_a_pipeline_layout_they_do_not_know(monkeypatch):
    from beaminst.model import protoio

    p = load_fixture("wordcount")
    assert len(protoio.binary_pieces(p)) > 2
    monkeypatch.setattr(protoio, "_PIPELINE_FIELDS", {**protoio._PIPELINE_FIELDS, "newer_field": 5})
    assert protoio.binary_pieces(p) == [p.SerializeToString(deterministic=True)]
