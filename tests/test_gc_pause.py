"""The collector paused around graph-sized work (beaminst.graph.gcpause):
its first pass after a pause walks whatever the pause left alive, so the
commands free what they are done with before it is back."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest

from beaminst.commands import api
from beaminst.options import RewriteOptions

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.mark.parametrize("command", ["instrument_files", "background_caching_files"])
def test_a_rewrite_frees_its_analysis_before_the_collector_is_back(command, monkeypatch, tmp_path):
    stem = FIXTURES / ("wordcount" if command == "instrument_files" else "pubsub_one")
    analyses: list[weakref.ref] = []
    freed_at_first_pass: list[bool] = []
    analyze = api.analyze_files

    def recorded(*args, **kwargs):
        analysis = analyze(*args, **kwargs)
        analyses.append(weakref.ref(analysis))
        return analysis

    def first_pass(phase, _info):
        if phase == "start" and analyses and not freed_at_first_pass:
            freed_at_first_pass.append(analyses[0]() is None)

    # The SDK imported first: an import inside the call can leave an exception
    # of the SDK's dependencies holding our frames (pyparsing's, at import).
    import beaminst.graft.templates  # noqa: F401

    monkeypatch.setattr(api, "analyze_files", recorded)
    assert gc.isenabled()
    gc.callbacks.append(first_pass)
    try:
        getattr(api, command)(
            f"{stem}.pb", str(tmp_path / "out.pb"), f"{stem}.manifest.json", RewriteOptions(str(tmp_path / "cache"))
        )
        _ = [[] for _ in range(1000)]  # allocations: the collector's first pass, if none ran inside
    finally:
        gc.callbacks.remove(first_pass)
    assert analyses, "the command analyzed through api.analyze_files"
    assert freed_at_first_pass == [True]
