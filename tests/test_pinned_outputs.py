"""Outputs do not change across refactors (issue 13).

``tests/pinned/outputs.json`` holds the digests of every fixture's write,
read and background-caching outputs, recorded by ``python -m
tests.pinned.outputs`` before the passes were restructured. A change that
alters an output on purpose re-records them in the same commit and says why.
"""

from __future__ import annotations

import json

from conftest import run_cli

from tests.pinned.outputs import PINNED, digests, environment, produce


def _cli(*args: str) -> tuple[int, str]:
    r = run_cli(*args)
    return r.exit_code, r.stdout


def test_outputs_are_the_pinned_ones(tmp_path):
    pinned = json.loads(PINNED.read_text())
    now = digests(produce(_cli, tmp_path))
    assert sorted(now) == sorted(pinned["outputs"])
    structure = {k: v["structure"] for k, v in now.items() if v["structure"] != pinned["outputs"][k]["structure"]}
    assert not structure, f"structure changed: {sorted(structure)}"
    if environment() == pinned["environment"]:
        changed = sorted(k for k, v in now.items() if v["content"] != pinned["outputs"][k]["content"])
        assert not changed, f"content changed: {changed}"


def test_the_structure_digest_sees_wiring_and_ignores_only_payloads():
    from beaminst.model.beamproto import runner_api
    from tests.pinned.outputs import FIXTURES, structure_digest

    data = (FIXTURES / "wordcount.pb").read_bytes()
    p = runner_api().Pipeline.FromString(data)
    base = structure_digest(data)
    tid = next(t for t, tr in p.components.transforms.items() if tr.spec.payload)
    p.components.transforms[tid].spec.payload = b"other"
    assert structure_digest(p.SerializeToString()) == base
    p.components.transforms[tid].unique_name += "x"
    assert structure_digest(p.SerializeToString()) != base


def test_the_pickle_digest_ignores_only_the_install_path_and_memo_sharing():
    import base64
    import bz2
    import pickle

    from tests.pinned.outputs import pickle_digest

    def encoded(*parts: str, shared: bool) -> bytes:
        strings = [p if shared else "".join(list(p)) for p in parts]  # equal strings, distinct objects
        return base64.b64encode(bz2.compress(pickle.dumps((strings, strings[0], {"k": 1}), protocol=4)))

    here = "/venv/a/lib/python3.11/site-packages/apache_beam/core.py"
    there = "/other/lib/site-packages/apache_beam/core.py"
    same = pickle_digest(encoded(here, here, shared=True))
    assert encoded(here, here, shared=False) != encoded(here, here, shared=True)  # one memo read, or two strings
    assert pickle_digest(encoded(here, here, shared=False)) == same
    assert pickle_digest(encoded(there, there, shared=True)) == same
    assert pickle_digest(encoded(here.replace("core", "other"), here, shared=True)) != same
    assert pickle_digest(b"not a pickle") == b"not a pickle"


def test_pruning_sees_the_working_copy_as_it_is(tmp_path, monkeypatch):
    """Pruning works from nodes (the input's, the grafts', and those of input
    transforms a pass changed, found by comparison): on every pinned case
    they are exactly what reading the working copy gives, so no pass can
    change a transform behind pruning's back."""
    from beaminst.graph.index import read_nodes
    from beaminst.passes import instrument, rewrite

    seen = []
    real = rewrite.prune_to

    def checked(pipeline, targets, parent, producer, nodes):
        fresh = read_nodes(pipeline.components.transforms)
        assert dict(nodes) == fresh
        seen.append(len(fresh))
        return real(pipeline, targets, parent, producer, nodes)

    monkeypatch.setattr(instrument, "prune_to", checked)
    produce(_cli, tmp_path)
    assert len(seen) >= 28  # a write and a read pass per case
