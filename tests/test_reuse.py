"""The interactive loop from the shell: run, change a step, run again without
recomputing what did not change (``instrument --reuse`` / ``"computed": "auto"``).

Cache keys are content digests of everything upstream of a PCollection, so an
edit re-keys only what lies downstream of it: after the edit, every binding
whose complete cache still exists under its (unchanged) key is read back.
"""

from __future__ import annotations

import json
import sys

import apache_beam as beam
import pytest
from conftest import EMPTY_SHARD, fixture_manifest, fixture_pb, run_cli
from test_e2e_run import CLI, RUN, run

import beaminst
from fixtures import pipelines as fp


def squares_pipeline(marker: str, results: str, values: list[int], final=sum) -> fp.Built:
    """Numbers pass a marker step, are squared, then combined by ``final``."""
    p = fp._pipeline()
    nums = p | "Numbers" >> beam.Create(values) | "Upstream" >> beam.ParDo(fp.AppendTo(marker))
    squares = nums | "Square" >> beam.Map(fp.square)
    _ = squares | "Final" >> beam.CombineGlobally(final) | "Record" >> beam.ParDo(fp.AppendTo(results))
    return fp.Built(p, {"nums": nums, "squares": squares})


def _instrument(pb, manifest, cache, out, *extra) -> dict:
    return json.loads(run([*CLI, "instrument", pb, "-m", manifest, "--cache-dir", str(cache), "-o", str(out),
                           "--json", *extra]).stdout)


@pytest.mark.slow
def test_edit_downstream_reuses_upstream_and_edit_upstream_recomputes(tmp_path):
    marker, results, cache = tmp_path / "upstream.marker", tmp_path / "results.txt", tmp_path / "cache"

    # 1. first run: everything computed and cached
    built = squares_pipeline(str(marker), str(results), [1, 2, 3])
    pb, manifest = beaminst.export(built.pipeline, built.bindings, str(tmp_path / "v1"))
    report = _instrument(pb, manifest, cache, tmp_path / "v1.run.pb")
    assert {w["var"] for w in report["writes"]} == {"nums", "squares"}
    run([sys.executable, "-c", RUN, str(tmp_path / "v1.run.pb")])
    assert results.read_text().strip() == "14" and marker.read_text().count("\n") == 3

    # 2. edit a step downstream of 'squares' (sum -> max) and re-run with --reuse
    marker.unlink()
    results.unlink()
    built = squares_pipeline(str(marker), str(results), [1, 2, 3], final=max)
    pb2, manifest2 = beaminst.export(built.pipeline, built.bindings, str(tmp_path / "v2"))
    report = _instrument(pb2, manifest2, cache, tmp_path / "v2.run.pb", "--reuse")
    assert report["writes"] == []
    assert [r["var"] for r in report["reused"]] == ["squares"]
    assert "Upstream" in report["pruned"]
    run([sys.executable, "-c", RUN, str(tmp_path / "v2.run.pb")])
    assert not marker.exists(), "the unchanged upstream was recomputed"
    assert results.read_text().strip() == "9"  # the edit is reflected

    # 3. edit upstream (other numbers): every key after it changes, all recomputes
    results.unlink()
    built = squares_pipeline(str(marker), str(results), [1, 2, 3, 4], final=max)
    pb3, manifest3 = beaminst.export(built.pipeline, built.bindings, str(tmp_path / "v3"))
    report = _instrument(pb3, manifest3, cache, tmp_path / "v3.run.pb", "--reuse")
    assert report["reused"] == [] and report["reads"] == []
    assert {w["var"] for w in report["writes"]} == {"nums", "squares"}
    run([sys.executable, "-c", RUN, str(tmp_path / "v3.run.pb")])
    assert marker.read_text().count("\n") == 4
    assert results.read_text().strip() == "16"


@pytest.mark.slow
def test_a_truncated_shard_is_recomputed_not_read_back_short(tmp_path):
    """A shard Beam wrote, cut short (an interrupted copy, a full disk): Beam's
    own reader takes it for a shorter one, so reusing it would run to DONE on
    fewer elements. --reuse treats it as no cache: rewritten from what is whole."""
    marker, results, cache = tmp_path / "upstream.marker", tmp_path / "results.txt", tmp_path / "cache"
    built = squares_pipeline(str(marker), str(results), list(range(1, 200)))
    pb, manifest = beaminst.export(built.pipeline, built.bindings, str(tmp_path / "v1"))
    report = _instrument(pb, manifest, cache, tmp_path / "v1.run.pb")
    run([sys.executable, "-c", RUN, str(tmp_path / "v1.run.pb")])
    expected = str(sum(n * n for n in range(1, 200)))
    assert results.read_text().strip() == expected
    squares_key = next(w["cache_key"] for w in report["writes"] if w["var"] == "squares")
    (shard,) = (cache / "full").glob(f"{squares_key}-*-of-*")
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])

    marker.unlink()
    results.unlink()
    report = _instrument(pb, manifest, cache, tmp_path / "v2.run.pb", "--reuse")
    assert [r["var"] for r in report["reused"]] == ["nums"]
    assert [w["var"] for w in report["writes"]] == ["squares"]
    assert f"cache: full/{shard.name}: does not end as a bz2 stream does (cut short, or not bz2), will be rewritten" in report["warnings"]
    run([sys.executable, "-c", RUN, str(tmp_path / "v2.run.pb")])
    assert not marker.exists(), "the whole upstream cache was not reused"
    assert results.read_text().strip() == expected


@pytest.mark.slow
def test_run_removes_a_stale_shard_set_before_rewriting_it(tmp_path):
    """A write with another shard count than a partial set left behind (a
    crashed multi-worker run) would leave both, and Beam's reader reads both."""
    marker, results, cache = tmp_path / "upstream.marker", tmp_path / "results.txt", tmp_path / "cache"
    built = squares_pipeline(str(marker), str(results), [1, 2, 3])
    pb, manifest = beaminst.export(built.pipeline, built.bindings, str(tmp_path / "v1"))
    report = _instrument(pb, manifest, cache, tmp_path / "v1.run.pb")
    key = next(w["cache_key"] for w in report["writes"] if w["var"] == "squares")
    (cache / "full").mkdir(parents=True)
    stale = cache / "full" / f"{key}-00001-of-00002"
    stale.write_bytes(EMPTY_SHARD)
    ran = json.loads(run([*CLI, "run", str(tmp_path / "v1.run.pb"), "--json"]).stdout)
    assert f"{key}: removed 1 shard file(s) that were no cache (a partial, damaged or mixed set) before rewriting it" in ran["warnings"]
    assert not stale.exists() and [p.name for p in (cache / "full").glob(f"{key}-*")] == [f"{key}-00000-of-00001"]
    shown = run([*CLI, "show", pb, "-m", manifest, "--cache-dir", str(cache), "squares"]).stdout.split()
    assert sorted(shown) == ["1", "4", "9"]  # not 6 elements: the stale set is not read too


def test_computed_auto_in_the_manifest_is_reuse(tmp_path):
    cache = tmp_path / "cache"
    first = json.loads(run_cli("analyze", fixture_pb("wordcount"), "-m", fixture_manifest("wordcount"),
                               "--json").stdout)
    words = next(c for c in first["cacheables"].values() if c["var"] == "words")
    (cache / "full").mkdir(parents=True)
    (cache / "full" / f"{words['cache_key']}-00000-of-00001").write_bytes(EMPTY_SHARD)
    doc = json.loads(open(fixture_manifest("wordcount")).read())
    doc["computed"] = "auto"
    auto = tmp_path / "auto.json"
    auto.write_text(json.dumps(doc))
    outs = {}
    for name, args in {"auto": ["-m", str(auto)], "flag": ["-m", fixture_manifest("wordcount"), "--reuse"]}.items():
        r = run_cli("instrument", fixture_pb("wordcount"), *args, "--cache-dir", str(cache),
                    "-o", str(tmp_path / f"{name}.pb"), "--json")
        assert r.exit_code == 0, r.stderr
        outs[name] = json.loads(r.stdout)
        assert [x["var"] for x in outs[name]["reused"]] == ["words"]
        assert "words" not in {w["var"] for w in outs[name]["writes"]}
    assert (tmp_path / "auto.pb").read_bytes() == (tmp_path / "flag.pb").read_bytes()
    # Without either, a cached but uncomputed binding is neither read nor rewritten (Beam's rule).
    r = run_cli("instrument", fixture_pb("wordcount"), "-m", fixture_manifest("wordcount"), "--cache-dir", str(cache),
                "-o", str(tmp_path / "plain.pb"), "--json")
    assert json.loads(r.stdout)["reused"] == []


def test_computed_must_be_a_list_or_auto(tmp_path):
    doc = json.loads(open(fixture_manifest("wordcount")).read())
    doc["computed"] = "everything"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    r = run_cli("analyze", fixture_pb("wordcount"), "-m", str(bad))
    assert r.exit_code == 2 and "computed" in r.stderr


def test_reuse_says_which_cached_bindings_still_run_and_why(tmp_path):
    """Every binding cached: --reuse reads back what a main input reads, and
    Beam's rule keeps the producer of one nothing reads (a side effect, it may
    write somewhere). The report says so instead of running it silently on
    every re-run; without --reuse nothing of the kind is said."""
    cache = tmp_path / "cache"
    pb, man = fixture_pb("wordcount"), fixture_manifest("wordcount")
    analysis = json.loads(run_cli("analyze", pb, "-m", man, "--json").stdout)
    (cache / "full").mkdir(parents=True)
    for c in analysis["cacheables"].values():
        (cache / "full" / f"{c['cache_key']}-00000-of-00001").write_bytes(EMPTY_SHARD)
    r = run_cli("instrument", pb, "-m", man, "--cache-dir", str(cache), "--reuse", "-o", str(tmp_path / "o.pb"), "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["writes"] == []
    # counts is read back for Format; lines and words fed only counts, so their producers are pruned;
    # formatted, the last step, is read by nothing, and Format still runs.
    assert {x["var"] for x in doc["reads"]} == {"counts"}
    (warning,) = [w for w in doc["warnings"] if "still runs" in w]
    assert warning == (
        "'formatted' is cached, yet 'Format', which produces it, still runs: nothing reads it, and Beam keeps a "
        "transform whose output nothing reads (it may write somewhere); its output is not cached again"
    )
    from beaminst.model.protoio import load_pipeline

    kept = {t.unique_name for t in load_pipeline(str(tmp_path / "o.pb"))[0].components.transforms.values()}
    assert "Format" in kept
    plain = run_cli("instrument", pb, "-m", man, "--cache-dir", str(cache), "-o", str(tmp_path / "p.pb"), "--json")
    assert not any("still runs" in w for w in json.loads(plain.stdout)["warnings"])
