"""The cache writes a pipeline proto holds, and which of them are *capture*
writes: what makes a proto a background caching (recording) job.

Read from the proto alone, without the Beam SDK and without unpickling:

* a cache write is a transform whose last name segment is
  ``WriteCache_<key>`` (beaminst's top-level ones, and Beam's own nested
  under its runner copy's root label); it records the PCollection that its
  ``ReifyBefore_WriteCache_<key>`` sibling reads (else its own input);
* its sink is a ``StreamingCache`` one (one file ``<dir>/full/<key>`` of
  TestStream records) when a transform inside it is the sink's
  ``StreamingWriteToText`` DoFn, else ``FileBasedCacheManager`` shards
  (``<dir>/full/<key>-SSSSS-of-NNNNN``);
* it is a *capture* write when its sink is a StreamingCache one and what it
  records is the output of an unbounded source, by ``analyze``'s rules with
  ``--infer-unbounded`` (Pub/Sub, an unbounded Read, TestStream, any leaf
  turning bounded input into unbounded output), or of a composite around one.
  Instrumented protos never write a source's output (their sources are
  replaced by the replaying TestStream and read back), so this tells
  ``background-caching`` output (and Beam's ``background_caching_pipeline_proto``)
  from ``instrument`` output;
* the cache directory is the one the sink's pickled path names: the pickle
  is decompressed (bounded, as everywhere) and the string ending in
  ``/full/<key>`` (the sink's path) is read by its pickle opcode and length, never unpickled.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from beaminst.analysis.sources import UnboundedSource, find_unbounded_sources
from beaminst.graph.index import GraphIndex
from beaminst.model import urns
from beaminst.model.beamproto import runner_api
from beaminst.model.canonical import decompress_pickle
from beaminst.model.labels import READ_CACHE, REIFY_BEFORE, WRITE_CACHE
from beaminst.options import SourceRules

_REIFY_WRITE = REIFY_BEFORE + WRITE_CACHE  # + key: the leaf before a write
STREAMING_SINK = "StreamingWriteToText"


@dataclass(frozen=True)
class CacheWrite:
    key: str
    transform_id: str  # the WriteCache_<key> composite (or leaf)
    unique_name: str
    pcollection: str  # the PCollection it records
    producer: str  # unique name of that PCollection's producer
    streaming: bool  # StreamingCache sink (else FileBasedCacheManager shards)
    capture: bool  # records an unbounded source's output: a background caching write
    cache_dir: str | None  # the directory its pickled sink names, if found

    def to_json(self) -> dict[str, object]:
        return {
            "key": self.key, "transform": self.unique_name, "pcollection": self.pcollection,
            "producer": self.producer, "streaming": self.streaming, "capture": self.capture,
            "cache_dir": self.cache_dir,
        }


def _last_segment(unique_name: str) -> str:
    return unique_name.rsplit("/", 1)[-1]


def find_cache_writes(index: GraphIndex) -> tuple[CacheWrite, ...]:
    """Every cache write of the pipeline, in hierarchy order."""
    transforms = index.transforms
    reify_input: dict[str, str] = {}
    writes: list[tuple[str, str]] = []
    for tid in index.hierarchy_order:
        seg = _last_segment(transforms[tid].unique_name)
        if seg.startswith(_REIFY_WRITE) and len(transforms[tid].inputs) == 1:
            reify_input[seg[len(_REIFY_WRITE):]] = next(iter(transforms[tid].inputs.values()))
        elif seg.startswith(WRITE_CACHE) and len(seg) > len(WRITE_CACHE):
            writes.append((tid, seg[len(WRITE_CACHE):]))
    if not writes:
        return ()
    captured = _source_outputs(index, find_unbounded_sources(index, SourceRules(infer=True)))
    unbounded = runner_api().IsBounded.UNBOUNDED
    out = []
    for tid, key in writes:
        t = transforms[tid]
        pc = reify_input.get(key) or next(iter(t.inputs.values()), "")
        if pc not in index.pcollections:
            continue  # not a cache write of this shape
        leaves = _leaves_under(index, tid)
        streaming = any(
            _last_segment(transforms[leaf].unique_name).endswith(f"({STREAMING_SINK})") for leaf in leaves
        )
        capture = streaming and index.pcollections[pc].is_bounded == unbounded and pc in captured
        out.append(CacheWrite(
            key, tid, t.unique_name, pc, index.producer_name(pc), streaming, capture,
            _pickled_cache_dir(index, leaves, f"/full/{key}"),
        ))
    return tuple(out)


@dataclass(frozen=True)
class CacheRead:
    """A ``ReadCache_<key>`` of FileBasedCacheManager shards (the pattern its
    pickled source names is ``<cache_dir>/full/<key>*-*-of-*``)."""

    key: str
    unique_name: str
    cache_dir: str


def find_cache_reads(index: GraphIndex) -> tuple[CacheRead, ...]:
    """Every shard cache read whose directory its pickled source names, in
    hierarchy order (a StreamingCache read, or one whose pattern is not
    found, is left to the job)."""
    out = []
    transforms = index.transforms
    for tid in index.hierarchy_order:
        seg = _last_segment(transforms[tid].unique_name)
        if not seg.startswith(READ_CACHE) or len(seg) == len(READ_CACHE):
            continue
        key = seg[len(READ_CACHE):]
        directory = _pickled_cache_dir(index, _leaves_under(index, tid), f"/full/{key}*-*-of-*")
        if directory is not None:
            out.append(CacheRead(key, transforms[tid].unique_name, directory))
    return tuple(out)


def recorded_sources(index: GraphIndex, writes: Iterable[CacheWrite]) -> tuple[UnboundedSource, ...]:
    """The unbounded sources whose output ``writes``' capture writes record,
    in hierarchy order."""
    captured = {w.pcollection for w in writes if w.capture}
    return tuple(
        s for s in find_unbounded_sources(index, SourceRules(infer=True))
        if captured & _source_outputs(index, (s,))
    )


def _source_outputs(index: GraphIndex, sources: Iterable[UnboundedSource]) -> frozenset[str]:
    """The outputs of every source and of every composite around one."""
    pcs: set[str] = set()
    for s in sources:
        for owner in (s.transform_id, *index.ancestors(s.transform_id)):
            pcs.update(index.transforms[owner].outputs.values())
    return frozenset(pcs)


def _leaves_under(index: GraphIndex, tid: str) -> list[str]:
    out, stack = [], [tid]
    while stack:
        t = stack.pop()
        subs = index.transforms[t].subtransforms
        if subs:
            stack.extend(subs)
        else:
            out.append(t)
    return out


def _pickled_cache_dir(index: GraphIndex, leaves: list[str], suffix: str) -> str | None:
    """The directory before ``suffix`` in the first pickled string of
    ``leaves`` that ends with it (a sink's path, a source's pattern)."""
    needle = suffix.encode()
    for tid in leaves:
        t = index.transforms[tid]
        for pickled in _pickles(t):
            data = decompress_pickle(pickled)
            if data is None or needle not in data:
                continue
            path = pickled_string_ending_with(data, needle)
            if path is not None:
                directory = path[: path.rfind(suffix)]
                if directory:
                    return directory
    return None


def _pickles(t: Any) -> list[bytes]:
    spec = t.spec
    if spec.urn == urns.PICKLED_TRANSFORM:
        return [spec.payload]
    if spec.urn in urns.PAR_DO_FAMILY:
        try:
            payload = urns.parse_payload(spec.urn, spec.payload)
        except ValueError:
            return []
        return [payload.do_fn.payload] if payload is not None else []
    return []


_MAX_PATH = 4096


def pickled_string_ending_with(data: bytes, needle: bytes) -> str | None:
    """The pickled ``str`` that ends with ``needle`` (the first one found), read
    by its opcode and length: ``SHORT_BINUNICODE`` (0x8c, one length byte),
    ``BINUNICODE`` (``X``, four) or ``BINUNICODE8`` (0x8d, eight). Nothing is
    unpickled; a candidate that is not valid UTF-8 is skipped."""
    at = data.find(needle)
    while at >= 0:
        end = at + len(needle)
        for k in range(at - 2, max(-1, at - 10 - _MAX_PATH), -1):
            op = data[k]
            if op == 0x8C:
                start, length = k + 2, data[k + 1]
            elif op == 0x58:
                start, length = k + 5, int.from_bytes(data[k + 1 : k + 5], "little")
            elif op == 0x8D:
                start, length = k + 9, int.from_bytes(data[k + 1 : k + 9], "little")
            else:
                continue
            if start <= at and start + length == end and length <= _MAX_PATH:
                try:
                    return data[start : start + length].decode("utf-8")
                except UnicodeDecodeError:
                    continue
        at = data.find(needle, at + 1)
    return None
