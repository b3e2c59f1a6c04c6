"""``beaminst diff``: matching by meaning, instrumentation seen as a diff,
precise single changes, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    CORRUPT,
    FIXTURE_NAMES,
    FIXTURES,
    REPO,
    beam_noise_free,
    fixture_pb,
    load_fixture,
    run_cli,
    run_cli_subprocess,
    run_python,
)
from diffcases import (
    instrument_case,
    lines_run,
    pcollection_refs,
    renamed,
    renamed_transforms,
    shape_pipeline,
)

from beaminst.errors import ValidationError
from beaminst.model.protoio import load_pipeline, save_pipeline

# (fixture, variables computed): cache reads, pruning, composites rewired too.
READ_CASES = [
    ("wordcount", ("words",)),
    ("multi_output", ("nums",)),
    ("cogbk", ("emails",)),
    ("nested_composites", ("lines",)),
    ("windowing", ("windowed",)),
]


def diff_json(before: str, after: str, *extra: str) -> tuple[int, dict[str, Any]]:
    r = run_cli("diff", before, after, "--json", *extra)
    assert r.exit_code in (0, 1), r.stderr
    return r.exit_code, json.loads(r.stdout)


def diff_protos(before: Any, after: Any) -> dict[str, Any]:
    from beaminst.commands.diff import diff_indexes
    from beaminst.graph.validate import validate

    return diff_indexes(validate(before), validate(after)).to_json()


def save(proto: Any, path: Path) -> str:
    save_pipeline(proto, str(path))
    return str(path)


@pytest.fixture(scope="module")
def instrumented(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, tuple[str, ...]], tuple[str, dict]]:
    d = tmp_path_factory.mktemp("instrumented")
    cases = [(n, ()) for n in FIXTURE_NAMES] + READ_CASES
    return {(n, c): instrument_case(d, n, c) for n, c in cases}


# --- nothing changed -------------------------------------------------------------------------


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_against_itself_is_identical(name):
    code, doc = diff_json(fixture_pb(name), fixture_pb(name))
    assert code == 0
    assert doc["identical"] is True
    assert not any(doc["summary"].values())
    assert doc["transforms"] == {"added": [], "removed": [], "changed": []}
    r = run_cli("diff", fixture_pb(name), fixture_pb(name), "--format", "human")
    assert r.exit_code == 0 and "identical" in r.stdout
    r = run_cli("diff", fixture_pb(name), fixture_pb(name))  # plain: nothing to say, as diff(1)
    assert (r.exit_code, r.stdout) == (0, "")


def test_formats_do_not_matter():
    for other in ("wordcount.textproto", "wordcount.json"):
        assert diff_json(fixture_pb("wordcount"), str(FIXTURES / other))[0] == 0


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_every_id_renamed_is_no_change(name, tmp_path):
    original = load_fixture(name)
    moved = renamed(original, seed=len(name))
    c, m = original.components, moved.components
    for kind in ("transforms", "pcollections", "coders", "windowing_strategies", "environments"):
        assert set(getattr(c, kind)).isdisjoint(getattr(m, kind)), kind  # not a vacuous test
    doc = diff_protos(original, moved)
    assert doc["identical"], json.dumps(doc["summary"])
    code, _ = diff_json(fixture_pb(name), save(moved, tmp_path / "moved.pb"))
    assert code == 0


def test_renamed_coder_ids_without_fixing_payloads_is_refused():
    # The other side of the coin: Combine payloads name coders by id, and a
    # dangling name there is a broken pipeline (Java's PipelineValidator
    # rejects it), refused by name rather than diffed.
    original = load_fixture("wordcount")
    moved = load_fixture("wordcount")
    c = moved.components
    old = "ref_Coder_FastPrimitivesCoder_8"
    c.coders["fresh"].CopyFrom(c.coders[old])
    for p in c.pcollections.values():
        if p.coder_id == old:
            p.coder_id = "fresh"
    for coder in c.coders.values():
        coder.component_coder_ids[:] = ["fresh" if x == old else x for x in coder.component_coder_ids]
    del c.coders[old]
    with pytest.raises(ValidationError, match=f"names coder '{old}' in its payload, which does not exist"):
        diff_protos(original, moved)


# --- instrumentation as a diff ---------------------------------------------------------------


def check_instrumentation_diff(before_path: str, after_path: str, report: dict[str, Any]) -> dict[str, Any]:
    code, doc = diff_json(before_path, after_path)
    assert code == 1 and not doc["identical"]
    t = doc["transforms"]
    grafted = {n for w in report["writes"] for n in w["transforms"]}
    grafted |= {n for r in report["reads"] if r["via"] == "ReadCache" for n in r["transforms"]}
    if report["test_stream"]:
        grafted.add(report["test_stream"]["transform"])
    outermost = [a for a in t["added"] if a["outermost"]]
    assert {a["name"] for a in outermost} == grafted
    assert all(a["parent"] == "<root>" for a in outermost)
    assert all(a["instrumented"] for a in t["added"])
    assert {r["name"] for r in t["removed"]} == set(report["pruned"])
    assert t["changed"] == []

    before, after = load_pipeline(before_path)[0], load_pipeline(after_path)[0]
    ref_b, ref_a = pcollection_refs(before), pcollection_refs(after)

    def key(r: dict[str, Any]) -> tuple:
        return (r["transform"], r["tag"], (r["before"]["producer"], r["before"]["tag"]), (r["after"]["producer"], r["after"]["tag"]))

    expected = {(r["transform"], r["tag"], ref_b[r["from"]], ref_a[r["to"]]) for r in report["rewired"]}
    assert {key(r) for r in doc["rewired"] if r["leaf"]} == expected
    # Composites holding a rewired consumer read the same PCollection: same rewiring.
    assert {key(r)[2:] for r in doc["rewired"] if not r["leaf"]} <= {e[2:] for e in expected}
    assert all(r["instrumented"] and not r["side_input"] for r in doc["rewired"])

    pcs = doc["pcollections"]
    assert pcs["changed"] == []
    assert all(p["implied"] and p["instrumented"] for p in pcs["added"])
    assert all(p["implied"] for p in pcs["removed"])
    assert {(p["producer"], p["tag"]) for p in pcs["added"]} == set(ref_a.values()) - set(ref_b.values())
    assert {(p["producer"], p["tag"]) for p in pcs["removed"]} == set(ref_b.values()) - set(ref_a.values())

    from beaminst.model.canonical import Signatures, coder_payload_install_independent

    sb = Signatures(before.components, coder_payload_install_independent)
    sa = Signatures(after.components, coder_payload_install_independent)
    coders_b = {sb.coder(c).hex()[:16] for c in before.components.coders}
    coders_a = {sa.coder(c).hex()[:16] for c in after.components.coders}
    assert {c["digest"] for c in doc["components"]["coders"]["added"]} == coders_a - coders_b
    assert {c["digest"] for c in doc["components"]["coders"]["removed"]} == coders_b - coders_a
    return doc


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_writes_only_instrumentation(name, instrumented):
    out, report = instrumented[(name, ())]
    doc = check_instrumentation_diff(fixture_pb(name), out, report)
    if not report["test_stream"]:
        assert doc["rewired"] == [] and doc["transforms"]["removed"] == []


@pytest.mark.parametrize(("name", "computed"), READ_CASES, ids=[f"{n}-{c[0]}" for n, c in READ_CASES])
def test_read_instrumentation(name, computed, instrumented):
    out, report = instrumented[(name, computed)]
    assert report["reads"] and report["rewired"] and report["pruned"]
    check_instrumentation_diff(fixture_pb(name), out, report)


def test_unbounded_sources_replaced_by_the_test_stream(instrumented):
    out, report = instrumented[("pubsub_two", ())]
    doc = check_instrumentation_diff(fixture_pb("pubsub_two"), out, report)
    assert {r["after"]["producer"] for r in doc["rewired"]} == {"TestStream"}
    assert {r["name"] for r in doc["transforms"]["removed"] if r["outermost"]} == {"ReadA", "ReadB"}


def test_ids_do_not_matter_after_instrumentation_either(instrumented):
    out, _ = instrumented[("wordcount", ("words",))]
    after = load_pipeline(out)[0]
    original = load_fixture("wordcount")
    # Only what is reported for reference differs: ids, and raw payload lengths
    # (the payloads that embed ids); content digests do not.
    moved = diff_protos(original, renamed(after, seed=7))
    assert moved != diff_protos(original, after)
    assert _without_ids(moved) == _without_ids(diff_protos(original, after))


def _without_ids(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _without_ids(v) for k, v in doc.items() if k not in ("id", "ids", "length")}
    if isinstance(doc, list):
        return [_without_ids(v) for v in doc]
    return doc


def test_human_report_marks_instrumented_additions(instrumented):
    out, report = instrumented[("wordcount", ("words",))]
    r = run_cli("diff", fixture_pb("wordcount"), out, "--format", "human")
    assert r.exit_code == 1
    text = r.stdout
    for section in ("Transforms added", "Transforms removed", "Inputs rewired", "Coders added"):
        assert section in text
    for name in {n for w in report["writes"] for n in w["transforms"]}:
        assert f"+ {name} (instrumented)" in text
    assert "- Split" in text
    assert "PairWithOne [None]: Split.None → UnreifyAfter_ReadCache_" in text
    assert "differences: transforms added:" in text


# --- single hand-made changes ----------------------------------------------------------------


def _only(doc: dict[str, Any], **expected_counts: int) -> None:
    counts = {k: v for k, v in doc["summary"].items() if v}
    assert counts == expected_counts


def test_one_payload_byte(tmp_path):
    from beaminst.model.beamproto import runner_api

    original = load_fixture("wordcount")
    changed = load_fixture("wordcount")
    split = next(t for t in changed.components.transforms.values() if t.unique_name == "Split")
    raw = bytearray(split.spec.payload)
    inner = runner_api().ParDoPayload.FromString(bytes(raw)).do_fn.payload
    offset = bytes(raw).find(inner) + len(inner) // 2  # inside the pickled DoFn: still parses
    raw[offset] ^= 0x01
    split.spec.payload = bytes(raw)

    path = save(changed, tmp_path / "changed.pb")
    code, doc = diff_json(fixture_pb("wordcount"), path)
    assert code == 1
    _only(doc, transforms_changed=1)
    (entry,) = doc["transforms"]["changed"]
    assert entry["name"] == "Split" and set(entry["changes"]) == {"payload"}
    assert entry["urn"] == "beam:transform:pardo:v1"
    p = entry["changes"]["payload"]
    assert p["first_difference"] == offset
    assert p["fields"] == ["do_fn.payload"]  # where in the payload: the pickled DoFn
    assert p["before"]["length"] == p["after"]["length"] == len(raw)
    assert p["before"]["digest"] != p["after"]["digest"]
    assert "prefix" not in p["before"]  # elided unless asked for

    _, shown = diff_json(fixture_pb("wordcount"), path, "--show-payloads")
    sp = shown["transforms"]["changed"][0]["changes"]["payload"]
    assert sp["before"]["prefix_offset"] == sp["after"]["prefix_offset"] == offset - 16
    assert sp["before"]["prefix"] != sp["after"]["prefix"]

    text = run_cli("diff", fixture_pb("wordcount"), path, "--show-payloads", "--format", "human").stdout
    assert "~ Split beam:transform:pardo:v1" in text and f"first difference at byte {offset}, in do_fn.payload" in text
    plain = run_cli("diff", fixture_pb("wordcount"), path, "--format", "plain").stdout
    (record,) = [line.split("\t") for line in plain.splitlines() if line.startswith("~\ttransform\tSplit\tpayload")]
    assert record[6] == f"first difference at byte {offset}, in do_fn.payload", record
    assert sp["after"]["prefix"][:20] in text
    assert diff_protos(original, changed)["transforms"]["changed"][0]["name"] == "Split"


def test_coder_named_in_a_payload_changed_in_place():
    """The same payload bytes naming a coder whose content changed sign
    differently: a payload change (the shortcut for equal bytes checks the
    coders they name), as the full signature says."""
    from beaminst.commands.diff import _payload_digest, side
    from beaminst.graph.validate import validate

    original = load_fixture("wordcount")
    changed = load_fixture("wordcount")
    coder = changed.components.coders["ref_Coder_FastPrimitivesCoder_8"]  # CountWords' accumulator
    coder.spec.urn, coder.spec.payload = "beam:coder:string_utf8:v1", b""
    doc = diff_protos(original, changed)
    by_name = {t["name"]: t for t in doc["transforms"]["changed"]}
    for name in ("CountWords", "CountWords/Combine"):
        payload = by_name[name]["changes"]["payload"]
        assert payload["first_difference"] is None and payload["before"]["digest"] != payload["after"]["digest"]
        assert payload["fields"] == []  # the same bytes: no field differs, the coder they name does
    b, a = side(validate(original)), side(validate(changed))
    expected = {
        n for n, t in a.transform.items()
        if n in b.transform and _payload_digest(b, b.transform[n]) != _payload_digest(a, t)
    }
    assert {n for n, t in by_name.items() if "payload" in t["changes"]} == expected


def test_one_coder_swapped():
    original = load_fixture("wordcount")
    changed = load_fixture("wordcount")
    refs = pcollection_refs(changed)
    words = next(pc for pc, ref in refs.items() if ref == ("Split", "None"))
    changed.components.pcollections[words].coder_id = "ref_Coder_StrUtf8Coder_12"
    doc = diff_protos(original, changed)
    _only(doc, pcollections_changed=1)
    (entry,) = doc["pcollections"]["changed"]
    assert (entry["producer"], entry["tag"]) == ("Split", "None")
    assert set(entry["changes"]) == {"coder"}
    coder = entry["changes"]["coder"]
    assert coder["before"]["description"].startswith("pickled_python")  # FastPrimitivesCoder
    assert coder["after"]["description"] == "string_utf8"
    assert coder["before"]["digest"] != coder["after"]["digest"]


def test_one_input_rewired_by_hand():
    original = load_fixture("wordcount")
    changed = load_fixture("wordcount")
    refs = pcollection_refs(changed)
    lines = next(pc for pc, ref in refs.items() if ref == ("ReadLines/Map(decode)", "None"))
    pair = next(t for t in changed.components.transforms.values() if t.unique_name == "PairWithOne")
    pair.inputs["None"] = lines
    doc = diff_protos(original, changed)
    _only(doc, inputs_rewired=1)
    assert doc["rewired"] == [{
        "transform": "PairWithOne", "tag": "None", "side_input": False, "leaf": True, "instrumented": False,
        "before": {"producer": "Split", "tag": "None"},
        "after": {"producer": "ReadLines/Map(decode)", "tag": "None"},
    }]


def test_boundedness_urn_and_environment_changes():
    from beaminst.model.beamproto import runner_api

    original = load_fixture("wordcount")
    changed = load_fixture("wordcount")
    c = changed.components
    refs = pcollection_refs(changed)
    words = next(pc for pc, ref in refs.items() if ref == ("Split", "None"))
    c.pcollections[words].is_bounded = runner_api().IsBounded.UNBOUNDED
    fmt = next(t for t in c.transforms.values() if t.unique_name == "Format")
    fmt.spec.urn = "beam:transform:something_else:v1"
    c.environments["other_env"].CopyFrom(c.environments[fmt.environment_id])
    c.environments["other_env"].capabilities.append("beam:coder:made_up:v1")
    fmt.environment_id = "other_env"
    doc = diff_protos(original, changed)
    _only(doc, pcollections_changed=1, transforms_changed=1, components_added=1)
    assert doc["pcollections"]["changed"][0]["changes"] == {"is_bounded": {"before": "BOUNDED", "after": "UNBOUNDED"}}
    (t,) = doc["transforms"]["changed"]
    assert t["name"] == "Format" and set(t["changes"]) == {"urn", "environment"}
    assert t["changes"]["urn"]["after"] == "beam:transform:something_else:v1"
    assert doc["components"]["environments"]["added"][0]["ids"] == ["other_env"]


def test_renamed_transform_is_removed_and_added():
    original = load_fixture("wordcount")
    changed = load_fixture("wordcount")
    fmt = next(t for t in changed.components.transforms.values() if t.unique_name == "Format")
    fmt.unique_name = "FormatAgain"
    doc = diff_protos(original, changed)
    _only(doc, transforms_added=1, transforms_removed=1, pcollections_added=1, pcollections_removed=1)
    assert doc["transforms"]["added"][0]["name"] == "FormatAgain"
    assert doc["transforms"]["added"][0]["instrumented"] is False
    assert doc["pcollections"]["added"][0]["implied"] is True


# --- errors and I/O --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.name for p in CORRUPT.iterdir()))
@pytest.mark.parametrize("position", ["before", "after"])
def test_corrupt_input_exits_2(name, position):
    bad, good = str(CORRUPT / name), fixture_pb("wordcount")
    args = (bad, good) if position == "before" else (good, bad)
    r = run_cli("diff", *args)
    assert r.exit_code == 2
    lines = beam_noise_free(r.stderr)
    assert len(lines) == 1 and name in lines[0] and lines[0].startswith("beaminst: ")
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_missing_file_and_double_stdin():
    r = run_cli("diff", fixture_pb("wordcount"), "/nonexistent/x.pb")
    assert r.exit_code == 2 and "no such file" in r.stderr
    r = run_cli("diff", "-", "-")
    assert r.exit_code == 2 and "stdin" in r.stderr


def test_stdin(tmp_path):
    data = Path(fixture_pb("wordcount")).read_bytes()
    r = run_cli("diff", "-", fixture_pb("wordcount"), input=data)
    assert r.exit_code == 0


def test_json_schema():
    code, doc = diff_json(fixture_pb("wordcount"), fixture_pb("wordcount"))
    assert set(doc) == {"identical", "before", "after", "summary", "transforms", "rewired", "pcollections", "components", "requirements"}
    assert set(doc["summary"]) == {
        "transforms_added", "transforms_removed", "transforms_changed", "inputs_rewired",
        "pcollections_added", "pcollections_removed", "pcollections_changed",
        "components_added", "components_removed", "requirements_added", "requirements_removed",
    }
    assert set(doc["components"]) == {"coders", "windowing_strategies", "environments"}
    assert doc["before"] == doc["after"] == fixture_pb("wordcount")


def test_entry_fields(instrumented):
    out, _ = instrumented[("wordcount", ("words",))]
    _, doc = diff_json(fixture_pb("wordcount"), out)
    assert set(doc["transforms"]["added"][0]) == {
        "name", "id", "urn", "leaf", "parent", "outermost", "instrumented", "payload", "environment",
    }
    assert set(doc["transforms"]["added"][0]["payload"]) == {"length", "digest"}
    assert set(doc["pcollections"]["added"][0]) == {
        "producer", "tag", "id", "coder", "windowing", "is_bounded", "implied", "instrumented",
    }
    assert set(doc["rewired"][0]) == {"transform", "tag", "side_input", "leaf", "before", "after", "instrumented"}
    assert set(doc["components"]["coders"]["added"][0]) == {"digest", "description", "ids"}


def test_diff_never_imports_the_beam_sdk(instrumented):
    out, _ = instrumented[("wordcount", ("words",))]
    probe = (
        "import sys\nfrom beaminst.cli import main\n"
        "try:\n    main(sys.argv[1:], standalone_mode=False)\nexcept SystemExit as e:\n    print('EXIT', e.code)\n"
        "print('BEAM', any(m.startswith('apache_beam') for m in sys.modules))\n"
    )
    proc = run_python("-c", probe, "diff", fixture_pb("wordcount"), out, "--json")
    assert "EXIT 1" in proc.stdout and "BEAM False" in proc.stdout, proc.stderr


def test_a_side_input_rewired_by_hand():
    original = load_fixture("side_inputs")
    changed = load_fixture("side_inputs")
    refs = pcollection_refs(changed)
    add = next(t for t in changed.components.transforms.values() if t.unique_name == "AddSizes")
    was = refs[add.inputs["python_side_input0"]]
    add.inputs["python_side_input0"] = add.inputs["None"]
    doc = diff_protos(original, changed)
    _only(doc, inputs_rewired=1)
    (r,) = doc["rewired"]
    assert (r["transform"], r["tag"], r["side_input"]) == ("AddSizes", "python_side_input0", True)
    assert (r["before"]["producer"], r["before"]["tag"]) == was
    assert (r["after"]["producer"], r["after"]["tag"]) == refs[add.inputs["None"]]


# --- output for pipes, pull requests and git ------------------------------------------------

PLAIN_FIELDS = {  # (change, kind) -> fields a record has (FLAGS and prefixes may be empty)
    ("+", "transform"): 5, ("-", "transform"): 5, ("+", "pcollection"): 7, ("-", "pcollection"): 7,
    ("~", "input"): 9, ("+", "coder"): 5, ("-", "coder"): 5,
}


def bash(script: str) -> subprocess.CompletedProcess[str]:
    """``script`` in bash, where ``beaminst`` runs this checkout's CLI (real pipes, real grep and cut)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "BEAMINST_PYTHON": sys.executable}
    env.pop("BEAMINST_DEBUG", None)
    prelude = 'beaminst() { "$BEAMINST_PYTHON" -m beaminst "$@"; }; '
    return subprocess.run(["bash", "-c", prelude + script], capture_output=True, text=True, env=env, timeout=120)


def records(text: str) -> list[list[str]]:
    return [line.split("\t") for line in text.splitlines()]


def test_plain_when_piped_one_record_a_line(instrumented):
    out, _ = instrumented[("wordcount", ("words",))]
    _, doc = diff_json(fixture_pb("wordcount"), out)
    proc = run_cli_subprocess("diff", fixture_pb("wordcount"), out)  # stdout is a pipe
    assert proc.returncode == 1, proc.stderr
    recs = records(proc.stdout)
    assert "├" not in proc.stdout and "differences:" not in proc.stdout  # no tree, no summary line
    for r in recs:
        assert r[0] in ("+", "-", "~"), r
        if (r[0], r[1]) in PLAIN_FIELDS:
            assert len(r) == PLAIN_FIELDS[(r[0], r[1])], r

    def by(change: str, kind: str) -> list[list[str]]:
        return [r for r in recs if r[:2] == [change, kind]]

    assert [r[2] for r in by("+", "transform")] == [t["name"] for t in doc["transforms"]["added"]]
    assert [r[2] for r in by("-", "transform")] == [t["name"] for t in doc["transforms"]["removed"]]
    assert len(by("~", "input")) == doc["summary"]["inputs_rewired"] > 0
    assert len(by("+", "pcollection")) == doc["summary"]["pcollections_added"]
    assert len(by("+", "coder")) == len(doc["components"]["coders"]["added"])
    for t in doc["transforms"]["added"]:  # every nested one too, flagged
        (r,) = [r for r in by("+", "transform") if r[2] == t["name"]]
        assert ("nested" in r[4].split(",")) is (not t["outermost"]) and "instrumented" in r[4]
    for r, j in zip(by("~", "input"), doc["rewired"], strict=True):
        b, a = j["before"], j["after"]
        assert r[2:8] == [j["transform"], j["tag"], b["producer"], b["tag"], a["producer"], a["tag"]]
        assert "instrumented" in r[8].split(",")


def test_piped_output_found_by_grep_and_cut(instrumented):
    out, _ = instrumented[("wordcount", ("words",))]
    _, doc = diff_json(fixture_pb("wordcount"), out)
    longest = max((t["name"] for t in doc["transforms"]["added"]), key=len)
    assert len(longest) > 120  # would wrap at 80 columns (and did)
    a, b = fixture_pb("wordcount"), out
    found = bash(f'beaminst diff "{a}" "{b}" | grep -F -- "{longest}"')
    assert found.returncode == 0, found.stderr
    assert f"+\ttransform\t{longest}\t" in found.stdout  # whole, on one line
    assert all(longest in line for line in found.stdout.splitlines())
    names = bash(f'beaminst diff "{a}" "{b}" | grep "^+\ttransform\t" | cut -f3')
    assert names.stdout.splitlines() == [t["name"] for t in doc["transforms"]["added"]]
    counts = bash(f'beaminst diff "{a}" "{b}" | cut -f1,2 | sort | uniq -c')
    got = {tuple(x.split(None, 1)[1].split("\t")): int(x.split()[0]) for x in counts.stdout.splitlines()}
    s = doc["summary"]
    assert got[("+", "transform")] == s["transforms_added"] and got[("-", "transform")] == s["transforms_removed"]
    assert got[("~", "input")] == s["inputs_rewired"]
    statuses = bash(f'beaminst diff "{a}" "{b}" | grep -F -- "{longest}" > /dev/null; echo "${{PIPESTATUS[@]}}"')
    assert statuses.stdout.split() == ["1", "0"]  # beaminst: differences (not trouble); grep: found


def test_plain_reader_leaving_early_is_quiet(tmp_path):
    from diffcases import renamed_transforms, shape_pipeline

    p = shape_pipeline("chain", 3000)
    a, b = save(p, tmp_path / "a.pb"), save(renamed_transforms(p), tmp_path / "b.pb")
    proc = bash(f'beaminst diff "{a}" "{b}" | head -1')
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 1
    assert proc.stderr == ""  # no BrokenPipeError noise


def test_plain_escapes_names_and_keeps_fields(tmp_path):
    changed = load_fixture("wordcount")
    evil = "Sp\tlit\n\x1b]0;pwned\x07`|[red]"
    next(t for t in changed.components.transforms.values() if t.unique_name == "Split").unique_name = evil
    path = save(changed, tmp_path / "evil.pb")
    r = run_cli("diff", fixture_pb("wordcount"), path)
    assert r.exit_code == 1
    escaped = "Sp\\x09lit\\x0a\\x1b]0;pwned\\x07`|[red]"
    for line in r.stdout.splitlines():
        assert line.replace("\t", "").isprintable(), line
    (added,) = [x for x in records(r.stdout) if x[:2] == ["+", "transform"]]
    assert added[2] == escaped and len(added) == PLAIN_FIELDS[("+", "transform")]
    assert ["~", "input", "PairWithOne", "None", "Split", "None", escaped, "None", ""] in records(r.stdout)


def test_markdown_summary(instrumented):
    out, report = instrumented[("wordcount", ("words",))]
    _, doc = diff_json(fixture_pb("wordcount"), out)
    r = run_cli("diff", fixture_pb("wordcount"), out, "--format", "markdown")
    assert r.exit_code == 1
    md = r.stdout
    lines = md.splitlines()
    assert lines[0] == f"### beaminst diff: `{fixture_pb('wordcount')}` → `{out}`"
    s = doc["summary"]
    assert "| | added | removed | changed |" in lines
    n_inst = sum(1 for t in doc["transforms"]["added"] if t["instrumented"])
    assert f"| Transforms | {s['transforms_added']} ({n_inst} instrumented) | {s['transforms_removed']} | 0 |" in lines
    assert f"| Inputs rewired |  |  | {s['inputs_rewired']} |" in lines
    assert f"#### Transforms added ({s['transforms_added']}, {n_inst} instrumented)" in lines
    assert f"#### Transforms removed ({s['transforms_removed']})" in lines
    assert f"#### Inputs rewired ({s['inputs_rewired']})" in lines
    outermost = [t["name"] for t in doc["transforms"]["added"] if t["outermost"]]
    items = [x for x in lines if x.startswith("- `")]
    for name in outermost:
        assert any(x.startswith(f"- `{name}` ") for x in items), name
    assert "- `Split` `beam:transform:pardo:v1`" in lines
    assert any(x.startswith("- `PairWithOne` [`None`]: `Split.None` → `UnreifyAfter_ReadCache_") for x in lines)
    writes = {n for w in report["writes"] for n in w["transforms"] if n.startswith("WriteCache_")}
    assert all(any(x.startswith(f"- `{n}` ") and "nested)" in x for x in items) for n in writes)


def test_markdown_identical_and_escaped_names(tmp_path):
    r = run_cli("diff", fixture_pb("wordcount"), fixture_pb("wordcount"), "--format", "markdown")
    assert r.exit_code == 0 and r.stdout.splitlines()[-1] == "No structural differences."
    changed = load_fixture("wordcount")
    next(t for t in changed.components.transforms.values() if t.unique_name == "Format").unique_name = "a``b|c\n<img>"
    r = run_cli("diff", fixture_pb("wordcount"), save(changed, tmp_path / "c.pb"), "--format", "markdown")
    assert "- ```a``b|c\\x0a<img>``` `beam:transform:pardo:v1`" in r.stdout.splitlines()


def test_markdown_code_spans():
    from beaminst.commands.diffformat import code

    assert code("Split") == "`Split`"
    assert code("a`b") == "``a`b``"
    assert code("`edge`") == "`` `edge` ``"
    assert code(" both ") == "`  both  `"  # CommonMark strips one space each side
    assert code("x|y") == "`x|y`"  # never in a table cell: a backslash would show
    assert code("\x1b[31m") == "`\\x1b[31m`"


def test_markdown_long_lists_are_capped(tmp_path):
    from diffcases import shape_pipeline

    from beaminst.commands.diffformat import markdown

    p = shape_pipeline("chain", 30)
    root = p.components.transforms["root"]
    root.unique_name = "Top"  # not the SDK's synthetic root: every step its own top-level addition
    base = shape_pipeline("chain", 0)
    from beaminst.graph.validate import validate

    d = diff_indexes_(validate(base), validate(p))
    md = markdown(d, limit=5)
    lines = md.splitlines()
    assert "#### Transforms added (31)" in lines  # Top and its 30 steps (nested in Top)
    assert "30 of them nested in the ones listed." in lines
    d = diff_indexes_(validate(renamed_chain(30)), validate(shape_pipeline("chain", 30)))
    lines = markdown(d, limit=5).splitlines()
    added = lines.index("#### Transforms added (30)")
    assert lines[added + 2 : added + 8][-1] == "- … and 25 more (`beaminst diff --format plain` lists them all)"
    assert len([x for x in lines[added + 2 : added + 7] if x.startswith("- `Step")]) == 5


def diff_indexes_(before: Any, after: Any) -> Any:
    from beaminst.commands.diff import diff_indexes

    return diff_indexes(before, after)


def renamed_chain(n: int) -> Any:
    from diffcases import shape_pipeline

    p = shape_pipeline("chain", n)
    for t in p.components.transforms.values():
        if t.unique_name.startswith("Step"):
            t.unique_name = "Old" + t.unique_name
    return p


@pytest.mark.parametrize("fmt", ["human", "plain", "markdown", "json"])
def test_exit_codes_in_every_format(fmt, instrumented, tmp_path):
    out, _ = instrumented[("wordcount", ())]
    wc = fixture_pb("wordcount")
    assert run_cli("diff", wc, wc, "--format", fmt).exit_code == 0
    assert run_cli("diff", wc, out, "--format", fmt).exit_code == 1
    bad = tmp_path / "bad.pb"
    bad.write_bytes(b"\x00garbage")
    r = run_cli("diff", wc, str(bad), "--format", fmt)
    assert r.exit_code == 2 and r.stdout == "" and "bad.pb" in r.stderr


def test_json_is_format_json():
    wc = fixture_pb("wordcount")
    assert run_cli("diff", wc, wc, "--json").stdout == run_cli("diff", wc, wc, "--format", "json").stdout
    assert run_cli("diff", wc, wc, "--json", "--format", "json").exit_code == 0
    r = run_cli("diff", wc, wc, "--json", "--format", "plain")
    assert r.exit_code == 2 and "--json is --format json" in r.stderr
    r = run_cli("diff", wc)
    assert r.exit_code == 2 and "BEFORE and AFTER" in r.stderr


@pytest.mark.parametrize("fmt", ["plain", "markdown", "json", "human"])
def test_output_is_deterministic(fmt, instrumented):
    out, _ = instrumented[("cogbk", ("emails",))]
    runs = {run_cli_subprocess("diff", fixture_pb("cogbk"), out, "--format", fmt).stdout for _ in range(2)}
    assert len(runs) == 1 and runs.pop()


def test_dev_null_is_the_empty_pipeline():
    wc = fixture_pb("wordcount")
    n = len(load_fixture("wordcount").components.transforms)
    code, doc = diff_json(os.devnull, wc)
    assert code == 1 and doc["summary"]["transforms_added"] == n and doc["before"] == os.devnull
    assert [t["name"] for t in doc["transforms"]["added"] if t["outermost"]] == ["<root>"]
    code, doc = diff_json(wc, os.devnull)
    assert code == 1 and doc["summary"]["transforms_removed"] == n and doc["summary"]["transforms_added"] == 0


def test_git_driver_arguments(instrumented):
    out, _ = instrumented[("wordcount", ())]
    wc = fixture_pb("wordcount")
    r = run_cli("diff", "--git-driver", "p.pb", wc, "1" * 40, "100644", out, "2" * 40, "100644")
    assert r.exit_code == 0  # differences are git's to report: a non-zero exit stops git
    assert r.stdout.splitlines()[0] == "diff --beam a/p.pb b/p.pb"
    assert any(x.startswith("+\ttransform\tWriteCache_") for x in r.stdout.splitlines())
    r = run_cli("diff", "--git-driver", "old.pb", wc, "1" * 40, "100644", out, "2" * 40, "100644", "new.pb", "similarity index 90%")
    assert r.exit_code == 0 and r.stdout.splitlines()[0] == "diff --beam a/old.pb b/new.pb"
    r = run_cli("diff", "--git-driver", "p.pb", os.devnull, ".", ".", wc, "1" * 40, "100644", "--format", "markdown")
    assert r.exit_code == 0 and r.stdout.startswith("### beaminst diff: `/dev/null` → `b/p.pb`")
    assert run_cli("diff", "--git-driver", "p.pb").stdout == "* Unmerged path p.pb\n"
    r = run_cli("diff", "--git-driver", wc, out)
    assert r.exit_code == 2 and "7, or 9" in r.stderr


def git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(repo.parent), "GIT_PAGER": "cat"}
    env.pop("BEAMINST_DEBUG", None)
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, env=env, timeout=120)
    assert not check or proc.returncode == 0, (args, proc.stderr)
    return proc


def test_git_diff_driver_recipe(instrumented, tmp_path):
    """The README's recipe, in a real repository: .gitattributes + diff.beam.command."""
    out, report = instrumented[("wordcount", ())]
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    (repo / ".gitattributes").write_text("*.pb diff=beam\n")
    git(repo, "config", "diff.beam.command", f'"{sys.executable}" -m beaminst diff --git-driver')
    (repo / "wordcount.pb").write_bytes(Path(fixture_pb("wordcount")).read_bytes())
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "the pipeline")
    (repo / "wordcount.pb").write_bytes(Path(out).read_bytes())
    writes = sorted(n for w in report["writes"] for n in w["transforms"] if n.startswith("WriteCache_"))

    def added(text: str) -> list[str]:
        top = [r for r in records(text) if r[:2] == ["+", "transform"] and "nested" not in r[4].split(",")]
        return [r[2] for r in top if r[2].startswith("WriteCache_")]

    d = git(repo, "diff", "--exit-code", check=False)
    assert d.returncode == 1, d.stderr  # git's own verdict: the file changed
    assert d.stdout.splitlines()[0] == "diff --beam a/wordcount.pb b/wordcount.pb"
    assert added(d.stdout) == writes
    assert git(repo, "diff", "--no-ext-diff", "--stat").stdout.strip().startswith("wordcount.pb")
    git(repo, "commit", "-qam", "instrumented")
    assert added(git(repo, "show", "--ext-diff", "--format=").stdout) == writes
    log = git(repo, "log", "-p", "--ext-diff", "--format=commit %s").stdout
    assert added(log) == writes
    assert "diff --beam /dev/null b/wordcount.pb" in log  # the first commit: all added
    assert "+\ttransform\t<root>\t" in log
    git(repo, "rm", "-q", "wordcount.pb")
    gone = git(repo, "diff", "--cached").stdout
    assert gone.splitlines()[0] == "diff --beam a/wordcount.pb /dev/null" and "-\ttransform\tSplit\t" in gone
    (repo / "broken.pb").write_bytes(b"\x00not a pipeline")
    git(repo, "add", "broken.pb")
    broken = git(repo, "diff", "--cached", check=False)
    assert broken.returncode != 0 and "broken.pb" in broken.stderr and "external diff died" in broken.stderr


# --- work grows with the pipeline, linearly -------------------------------------------------
# Counted in Python lines run, not seconds (a loaded machine runs slower, never
# longer); bench/bench_diff.py times real pipelines of 5,000 and 20,000 transforms.

GROWTH_CASES = {  # shape: (before, after) for a size
    "chain": lambda n: (shape_pipeline("chain", n), renamed_transforms(shape_pipeline("chain", n))),
    "wide": lambda n: (shape_pipeline("wide", n), renamed_transforms(shape_pipeline("wide", n))),
    "deep": lambda n: (shape_pipeline("chain", 0), shape_pipeline("deep", n)),
    "coders": lambda n: (shape_pipeline("chain", 0), shape_pipeline("coders", n)),
}


def diff_work(before: Any, after: Any) -> int:
    """Python lines run to diff two validated pipelines and print the result in
    every format (a loop shows as lines, not calls; work inside one C call,
    like set(list), shows only in the benchmark)."""
    import io

    from rich.console import Console

    from beaminst.commands import diffformat
    from beaminst.commands.diff import diff_indexes

    def work() -> None:
        d = diff_indexes(before, after)
        diffformat.write_plain(io.StringIO(), d)
        diffformat.markdown(d)
        json.dumps(d.to_json(), sort_keys=True)
        diffformat.print_tree(Console(file=io.StringIO(), width=200), d)

    return lines_run(work)


@pytest.mark.parametrize("shape", sorted(GROWTH_CASES))
def test_diff_work_grows_linearly(shape):
    """4x the transforms (outputs, nesting levels, shared coder components):
    at most 4.5x the work. Each shape once hit a super-linear step: set(added)
    per added transform, producer_tag per output, an ancestor walk per nested
    transform, coder descriptions spelled out as a tree (exponential)."""
    from beaminst.graph.validate import validate

    n = 4 if shape == "coders" else 400
    work = []
    for size in (n, 4 * n):
        before, after = (validate(p) for p in GROWTH_CASES[shape](size))
        diff_work(before, after)  # warm: one-time imports are not the diff's work
        work.append(diff_work(before, after))
    assert work[1] <= 4.5 * work[0], f"{shape}: {work[0]:,} -> {work[1]:,} lines run ({work[1] / work[0]:.1f}x)"


def test_a_terminal_gets_the_tree(instrumented):
    """stdout a terminal (a pseudo-terminal here): the rich tree, by default."""
    import pty

    out, _ = instrumented[("wordcount", ())]
    leader, follower = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", "TERM": "dumb"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "beaminst", "diff", fixture_pb("wordcount"), out],
        stdout=follower, stderr=subprocess.PIPE, env=env,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the follower side closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=120) == 1, proc.stderr.read() if proc.stderr else ""
    text = b"".join(chunks).decode()
    assert "Transforms added" in text and "├──" in text and "\t" not in text


def test_a_window_fn_parameter_change_is_spelled_out():
    """A windowing change used to print the same text before and after
    (the window fn by URN only): standard window fns show their parameters,
    and when descriptions still tie (a pickled window fn's bytes), the digests
    tell the two sides apart."""
    from beaminst.commands.diffformat import change_text
    from beaminst.model.beamproto import window_fns_api

    original = load_fixture("windowing")
    changed = load_fixture("windowing")
    fixed = changed.components.windowing_strategies["ref_Windowing_Windowing_3"].window_fn
    payload = window_fns_api().FixedWindowsPayload.FromString(fixed.payload)
    assert payload.size.seconds == 5
    payload.size.seconds, payload.size.nanos = 90, 500_000_000
    fixed.payload = payload.SerializeToString()
    doc = diff_protos(original, changed)
    changes = [e["changes"]["windowing"] for e in doc["pcollections"]["changed"]]
    assert changes
    for c in changes:
        assert c["before"]["description"].startswith("fixed_windows(size 5 s, offset 0 s), ")
        assert c["after"]["description"].startswith("fixed_windows(size 90.5 s, offset 0 s), ")
    strategies = doc["components"]["windowing_strategies"]
    assert [w["description"].split(",")[0] for w in strategies["added"]] == ["fixed_windows(size 90.5 s"]
    assert [w["description"].split(",")[0] for w in strategies["removed"]] == ["fixed_windows(size 5 s"]
    tie = {"before": {"description": "pickled_python[120 B]", "digest": "aa"},
           "after": {"description": "pickled_python[120 B]", "digest": "bb"}}
    assert change_text("windowing", tie) == ("pickled_python[120 B] (aa)", "pickled_python[120 B] (bb)")


def test_standard_window_fns_are_described_by_their_parameters():
    from beaminst.commands.diff import describe_window_fn

    p = load_fixture("windowing")
    described = {describe_window_fn(w.window_fn) for w in p.components.windowing_strategies.values()}
    assert described == {"global_windows", "fixed_windows(size 5 s, offset 0 s)", "session_windows(gap size 3 s)"}
    garbage = type(p.components.windowing_strategies["ref_Windowing_Windowing_3"].window_fn)(
        urn="beam:window_fn:fixed_windows:v1", payload=b"\xff\xff"
    )
    assert describe_window_fn(garbage) == "fixed_windows[2 B]"


def test_a_changed_payload_names_the_fields_that_differ():
    """The byte offset points into the outer message (a longer DoFn pickle
    changes a length first: byte 1); the field names say what changed."""
    from beaminst.commands.diff import changed_fields
    from beaminst.model.beamproto import runner_api

    par_do = runner_api().ParDoPayload
    before = par_do(do_fn=runner_api().FunctionSpec(urn="beam:dofn:pickled_python_info:v1", payload=b"x" * 10))
    longer = par_do(do_fn=runner_api().FunctionSpec(urn="beam:dofn:pickled_python_info:v1", payload=b"x" * 300))
    stateful = par_do()
    stateful.CopyFrom(before)
    stateful.state_specs["s"].read_modify_write_spec.coder_id = "c"
    urn = "beam:transform:pardo:v1"
    assert changed_fields(urn, before.SerializeToString(), longer.SerializeToString()) == ["do_fn.payload"]
    assert changed_fields(urn, before.SerializeToString(), stateful.SerializeToString()) == ["state_specs"]
    assert changed_fields(urn, before.SerializeToString(), b"\xff\xff") == []  # does not parse: nothing to name
    # Renumbered ids that name the same component by content are no change, as everywhere in the diff.
    renumbered = par_do()
    renumbered.CopyFrom(longer)
    renumbered.restriction_coder_id = "coder_2"
    original = par_do()
    original.CopyFrom(before)
    original.restriction_coder_id = "coder_1"
    same = lambda kind, x, y: kind == "coders" and {x, y} == {"coder_1", "coder_2"}  # noqa: E731
    assert changed_fields(urn, original.SerializeToString(), renumbered.SerializeToString(), same) == ["do_fn.payload"]
    assert changed_fields(urn, original.SerializeToString(), renumbered.SerializeToString()) == [
        "do_fn.payload", "restriction_coder_id"]
    assert changed_fields("example:urn:unknown:v1", b"a", b"b") == []
