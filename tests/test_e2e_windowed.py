"""A windowed PCollection read back from the cache keeps its windows.

``Create -> timestamps -> WindowInto(fn) -> GroupByKey / CombinePerKey``, the
windowed PCollection bound: the first pass writes it, the second reads it and
prunes the upstream, and the groups and sums downstream are the first pass's,
window for window. Beam 2.77's own read gives the read's output the template's
global windowing and fails (``Cannot convert GlobalWindow to
_IntervalWindowBase``); beaminst gives it the original's.
"""

from __future__ import annotations

import json
import sys

import pytest
from test_e2e_run import CLI, RUN, run

import beaminst
from fixtures import pipelines as fp


def _lines(path) -> list[str]:
    return sorted(path.read_text().splitlines())


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(fp.WINDOW_FNS))
def test_windowed_read_gives_the_first_pass_groups(kind, tmp_path):
    marker, groups, sums = (tmp_path / n for n in ("upstream.marker", "groups.txt", "sums.txt"))
    built = fp.windowed_groups(kind, str(marker), str(groups), str(sums))
    pb, manifest = beaminst.export(built.pipeline, built.bindings, str(tmp_path / "p"))
    cache = tmp_path / "cache"
    # A custom window function is a pickle of a user class: beaminst loads it
    # only when told the pipeline is trusted (test_safety_pickles).
    trust = ["--trust-pickles"] if kind == "custom_merging" else []

    first = tmp_path / "first.pb"
    run([*CLI, "instrument", pb, "-m", manifest, "--cache-dir", str(cache), "-o", str(first), *trust])
    run([sys.executable, "-c", RUN, str(first)])
    first_groups, first_sums = _lines(groups), _lines(sums)
    assert marker.exists() and first_groups and first_sums
    if kind != "global":
        assert all("GlobalWindow" not in g for g in first_groups)

    with open(manifest) as f:
        doc = json.load(f)
    doc["computed"] = ["windowed"]
    manifest2 = tmp_path / "computed.json"
    manifest2.write_text(json.dumps(doc))
    for f in (marker, groups, sums):
        f.unlink()
    second = tmp_path / "second.pb"
    report = json.loads(
        run([*CLI, "instrument", pb, "-m", str(manifest2), "--cache-dir", str(cache), "-o", str(second), "--json",
             *trust]).stdout
    )
    assert [r["var"] for r in report["reads"]] == ["windowed"]
    run([sys.executable, "-c", RUN, str(second)])
    assert not marker.exists(), "the pruned upstream executed"
    assert _lines(groups) == first_groups
    assert _lines(sums) == first_sums
