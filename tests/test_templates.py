"""Cloned cache-write subgraphs are byte-identical to ones Beam builds directly.

beaminst builds Beam's write subgraph once per shape with a placeholder key
and substitutes the real key (unique names, pickled WriteImpl / sink DoFns).
These tests graft both ways into copies of the same pipeline and compare the
serialized results byte for byte, with one deliberate difference: a clone's
bz2 pickles are the template's pieces, compressed once, joined by the
compressed key (``beaminst.graft.pickles``), so they are compared inflated:
the pickles must be Beam's byte for byte, everything around them too.
"""

from __future__ import annotations

import base64
import bz2

import pytest
from conftest import FIXTURES

from beaminst.graft import Grafter, template_key
from beaminst.model.protoio import load_pipeline

KEYS = [
    "0123456789-aaaaaaaaaaaaaaaa-bbbbbbbbbbbbbbbb-cccccccccccccccc",  # beaminst's key shape
    "0700cd3e2c-140466894836944-140466894834640-140466913198032",  # Beam's id() shape
]


def graft_write(direct: bool, key: str, streaming: bool, capture: bool, cache_dir: str) -> bytes:
    proto, _ = load_pipeline(str(FIXTURES / ("pubsub_one.pb" if streaming else "wordcount.pb")))
    pc = sorted(proto.components.pcollections)[-1]
    grafter = Grafter(proto, cache_dir, streaming)
    sub = grafter.build_write(pc, key, capture) if direct else grafter.write_template(pc, key, capture)
    if not direct:
        assert sub.key == template_key(key) != key
    res = grafter.graft(sub, key, pc, "WriteCache_" + key)
    assert res.top and all(proto.components.transforms[t].unique_name.endswith(key) for t in res.top)
    return inflated(proto)


def inflated(proto) -> bytes:
    """The pipeline's bytes with every ParDo's bz2 pickle decompressed."""
    from beaminst.model.beamproto import runner_api

    out = runner_api().Pipeline()
    out.CopyFrom(proto)
    for t in out.components.transforms.values():
        if t.spec.urn == "beam:transform:pardo:v1":
            p = runner_api().ParDoPayload.FromString(t.spec.payload)
            raw = base64.b64decode(p.do_fn.payload)
            if raw[:3] == b"BZh":
                p.do_fn.payload = b"inflated:" + bz2.decompress(raw)
                t.spec.payload = p.SerializeToString(deterministic=True)
    return out.SerializeToString(deterministic=True)


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("streaming,capture", [(False, False), (True, False), (True, True)])
def test_cloned_write_is_byte_identical_to_a_direct_build(key, streaming, capture, tmp_path):
    cloned = graft_write(False, key, streaming, capture, str(tmp_path))
    direct = graft_write(True, key, streaming, capture, str(tmp_path))
    assert cloned == direct
    assert template_key(key).encode() not in cloned
    assert key.encode() in cloned


def cloned_write_pickles(key: str, streaming: bool, cache_dir: str) -> list[bytes]:
    """The pickled DoFns (base64, as stored) of a cloned cache write that hold ``key``."""
    from apache_beam.portability.api import beam_runner_api_pb2 as rapi

    proto, _ = load_pipeline(str(FIXTURES / ("pubsub_one.pb" if streaming else "wordcount.pb")))
    pc = sorted(proto.components.pcollections)[-1]
    grafter = Grafter(proto, cache_dir, streaming)
    res = grafter.graft(grafter.write_template(pc, key, False), key, pc, "W")
    out = []
    for tid in res.transforms:
        t = proto.components.transforms[tid]
        if t.spec.urn == "beam:transform:pardo:v1":
            fn = rapi.ParDoPayload.FromString(t.spec.payload).do_fn.payload
            if key.encode() in bz2.decompress(base64.b64decode(fn)):
                out.append(fn)
    return out


def bz2_streams(raw: bytes) -> int:
    count = 0
    while raw:
        d = bz2.BZ2Decompressor()
        d.decompress(raw)
        raw, count = d.unused_data, count + 1
    return count


def test_key_lives_inside_the_pickled_write_dofns(tmp_path):
    """The substitution is not vacuous: the key sits in compressed pickles,
    where a plain byte replace cannot reach it."""
    fns = cloned_write_pickles(KEYS[0], False, str(tmp_path))
    assert len(fns) == 4  # InitializeWrite, WriteBundles, PreFinalize, FinalizeWrite
    assert not any(KEYS[0].encode() in base64.b64decode(fn) for fn in fns)


@pytest.mark.parametrize("streaming", [False, True])
def test_beams_own_unpickler_reads_a_clones_pickles(streaming, tmp_path):
    """A clone's bz2 pickles are concatenated streams: Beam's
    ``pickler.loads`` (what an SDK harness calls) reads them whole, and what
    it gives holds the clone's key."""
    from apache_beam.internal import pickler

    key = KEYS[0]
    fns = cloned_write_pickles(key, streaming, str(tmp_path))
    assert fns
    for fn in fns:
        assert bz2_streams(base64.b64decode(fn)) >= 3  # really cut: a piece, the key, a piece
        loaded = pickler.loads(fn)  # the first stream alone is not a whole pickle
        assert key.encode() in bz2.decompress(base64.b64decode(pickler.dumps(loaded)))


def test_one_template_per_shape(tmp_path):
    proto, _ = load_pipeline(str(FIXTURES / "wordcount.pb"))
    grafter = Grafter(proto, str(tmp_path), False)
    pcs = sorted(proto.components.pcollections)
    subs = {id(grafter.write_template(pc, KEYS[0], False)) for pc in pcs}
    shapes = {grafter._shape(pc) for pc in pcs}
    assert len(subs) == len(shapes) < len(pcs)


def test_templates_are_kept_for_the_process_with_their_pcoder(tmp_path):
    """A second instrumentation in the same process (batch, a service) builds
    no template again, and still knows the coder the cache is written with."""
    first, _ = load_pipeline(str(FIXTURES / "wordcount.pb"))
    second, _ = load_pipeline(str(FIXTURES / "wordcount.pb"))
    pc = sorted(first.components.pcollections)[-1]
    g1, g2 = Grafter(first, str(tmp_path), False), Grafter(second, str(tmp_path), False)
    assert g1.write_template(pc, KEYS[0], False) is g2.write_template(pc, KEYS[0], False)
    assert g1.written_pcoder(pc) is g2.written_pcoder(pc)
    assert "WindowedValueCoder" in type(g2.written_pcoder(pc)).__name__
    other_dir = Grafter(second, str(tmp_path / "other"), False)
    assert other_dir.write_template(pc, KEYS[0], False) is not g1.write_template(pc, KEYS[0], False)
