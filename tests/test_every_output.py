"""Every output beaminst writes for every fixture, as a portable runner sees it.

For each fixture (the Python SDK's and the TypeScript SDK's): the write pass,
the read pass with every binding cached and computed, and the background
caching pipeline where there are unbounded sources. Each output declares
exactly the requirements its transforms imply, names only the pipeline's own
Python environment for grafted transforms (or one it added, reported), and all
of them pass Beam Java's ``PipelineValidator`` (one JVM for the lot).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import EMPTY_SHARD, FIXTURE_NAMES, FIXTURES, UNBOUNDED_FIXTURES, run_cli
from portable import assert_java_valid

from beaminst.model import urns
from beaminst.model.protoio import load_pipeline

TYPESCRIPT = ("wordcount", "gbk_kv", "windowing", "js_objects")
CASES = [(n, FIXTURES / f"{n}.pb", FIXTURES / f"{n}.manifest.json") for n in FIXTURE_NAMES] + [
    (f"ts_{n}", FIXTURES / "typescript" / f"{n}.pb", FIXTURES / "typescript" / f"{n}.manifest.json") for n in TYPESCRIPT
]
GRAFTED = ("WriteCache_", "ReifyBefore_", "ReadCache_", "UnreifyAfter_", "TestStream")


def _cli_json(*args: str) -> dict:
    r = run_cli(*args, "--json")
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)


def _outputs(name: str, pb: Path, manifest: Path, work: Path) -> list[tuple[str, Path, dict]]:
    cache = work / "cache"
    out: list[tuple[str, Path, dict]] = []
    write = work / "write.pb"
    report = _cli_json("instrument", str(pb), "-m", str(manifest), "--cache-dir", str(cache), "-o", str(write))
    out.append(("write", write, report))
    if name in UNBOUNDED_FIXTURES:
        bg = work / "background.pb"
        out.append(("background", bg, _cli_json(
            "background-caching", str(pb), "-m", str(manifest), "--cache-dir", str(cache), "-o", str(bg))))
    # Everything written is now cached (complete shard sets) and computed.
    os.makedirs(cache / "full", exist_ok=True)
    for w in report["writes"]:
        (cache / "full" / f"{w['cache_key']}-00000-of-00001").write_bytes(EMPTY_SHARD)
    doc = json.loads(manifest.read_text())
    doc["computed"] = sorted(doc["bindings"])
    computed = work / "computed.json"
    computed.write_text(json.dumps(doc))
    read = work / "read.pb"
    out.append(("read", read, _cli_json(
        "instrument", str(pb), "-m", str(computed), "--cache-dir", str(cache), "-o", str(read))))
    return out


@pytest.fixture(scope="module")
def every_output(tmp_path_factory) -> list[tuple[str, str, Path, dict]]:
    done = []
    for name, pb, manifest in CASES:
        work = tmp_path_factory.mktemp(name)
        done.extend((name, kind, path, report) for kind, path, report in _outputs(name, pb, manifest, work))
    return done


def test_every_output_passes_beam_javas_pipeline_validator(every_output):
    assert len(every_output) >= 2 * len(CASES)
    assert_java_valid([path for _, _, path, _ in every_output])


def test_every_output_declares_exactly_what_its_transforms_require(every_output):
    for name, kind, path, report in every_output:
        proto, _ = load_pipeline(str(path))
        derived = urns.transform_requirements(proto.components.transforms)
        assert set(proto.requirements) == derived, (name, kind)
        assert report["requirements"] == sorted(derived)
        if any(t.unique_name.startswith("ReadCache_") for t in proto.components.transforms.values()):
            assert urns.REQUIRES_SPLITTABLE_DOFN in derived, (name, kind)


def test_grafted_transforms_name_one_python_environment(every_output):
    for name, kind, path, report in every_output:
        proto, _ = load_pipeline(str(path))
        grafted = {t.environment_id for t in proto.components.transforms.values()
                   if t.unique_name.startswith(GRAFTED) and t.environment_id}
        if not grafted:
            continue
        assert report["environment"] and grafted == {report["environment"]["id"]}, (name, kind)
        # Only the TypeScript SDK's protos lack a Python environment of their own.
        assert report["environment"]["added"] == name.startswith("ts_"), (name, kind)
