"""Synthetic Beam pipelines of a chosen size, for bench/bench_instrument.py.

Built with the Beam SDK from module-level functions and composites (no
lambdas), so pickles refer to them by name (``synthetic.parse_line``), as in
``fixtures/pipelines.py``. A pipeline is ``branches`` branches, each:

    Create root -> Map -> FlatMap -> nested composite Clean (Normalize{Map, Map}, Filter)
      -> Map -> then by ``i % 4``:
         0: Map -> GroupByKey -> Map
         1: CombinePerKey
         2: CombinePerKey, Flatten with the previous branch's counts
         3: CombinePerKey, Map with the previous branch's counts as an AsDict side input
      -> composite Summarize{Filter, Map, Map}

Every user-visible PCollection is collected so the bench can bind some.
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

LINES = [
    "the quick brown fox jumps over the lazy dog",
    "  Lorem ipsum dolor sit amet  ",
    "to be or not to be that is the question",
    "",
    "All that glitters is not gold",
]


def parse_line(line: str) -> str:
    return line.rstrip("\n")


def split_words(line: str) -> list[str]:
    return line.split()


def strip_punctuation(word: str) -> str:
    return word.strip(".,;:!?\"'()")


def to_lower(word: str) -> str:
    return word.lower()


def non_empty(word: str) -> bool:
    return bool(word)


def pair_with_one(word: str) -> tuple[str, int]:
    return (word, 1)


def key_by_first_letter(kv: tuple[str, int]) -> tuple[str, tuple[str, int]]:
    return (kv[0][:1], kv)


def sum_group(kv: tuple[str, Any]) -> tuple[str, int]:
    return (kv[0], sum(n for _, n in kv[1]))


def weight_by(kv: tuple[str, int], weights: dict) -> tuple[str, int]:
    return (kv[0], kv[1] * weights.get(kv[0], 1))


def is_frequent(kv: tuple[str, int]) -> bool:
    return kv[1] > 1


def format_count(kv: tuple[str, int]) -> str:
    return f"{kv[0]}: {kv[1]}"


def with_length(s: str) -> tuple[str, int]:
    return (s, len(s))


class Normalize(beam.PTransform):
    def expand(self, pcoll: Any) -> Any:
        return pcoll | "Strip" >> beam.Map(strip_punctuation) | "Lower" >> beam.Map(to_lower)


class CleanWords(beam.PTransform):
    """Nested composite: Clean/Normalize/{Strip,Lower}, Clean/NonEmpty."""

    def expand(self, pcoll: Any) -> Any:
        return pcoll | "Normalize" >> Normalize() | "NonEmpty" >> beam.Filter(non_empty)


class Summarize(beam.PTransform):
    def expand(self, pcoll: Any) -> Any:
        return (
            pcoll
            | "Frequent" >> beam.Filter(is_frequent)
            | "Format" >> beam.Map(format_count)
            | "WithLength" >> beam.Map(with_length)
        )


def add_branch(p: Any, i: int, prev: Any | None, user_pcolls: list[Any]) -> Any:
    """Append branch ``i``; returns its counts (KV) PCollection."""

    def add(pc: Any) -> Any:
        user_pcolls.append(pc)
        return pc

    lines = add(p | f"Read{i}" >> beam.Create(LINES))
    parsed = add(lines | f"Parse{i}" >> beam.Map(parse_line))
    words = add(parsed | f"Split{i}" >> beam.FlatMap(split_words))
    clean = add(words | f"Clean{i}" >> CleanWords())
    pairs = add(clean | f"Pair{i}" >> beam.Map(pair_with_one))
    kind = i % 4 if prev is not None else 1
    if kind == 0:
        keyed = add(pairs | f"KeyByLetter{i}" >> beam.Map(key_by_first_letter))
        grouped = add(keyed | f"Group{i}" >> beam.GroupByKey())
        counts = add(grouped | f"SumGroup{i}" >> beam.Map(sum_group))
    else:
        counts = add(pairs | f"Count{i}" >> beam.CombinePerKey(sum))
        if kind == 2:
            counts = add((counts, prev) | f"Merge{i}" >> beam.Flatten())
        elif kind == 3:
            counts = add(counts | f"Weight{i}" >> beam.Map(weight_by, beam.pvalue.AsDict(prev)))
    add(counts | f"Summarize{i}" >> Summarize())
    return counts


def build_pipeline(branches: int, runner: Any = None) -> tuple[Any, list[Any]]:
    """A pipeline of ``branches`` branches (on an InteractiveRunner by default,
    as a notebook's would be) and its user-visible PCollections in build order."""
    if runner is None:
        from apache_beam.runners.interactive.interactive_runner import InteractiveRunner

        runner = InteractiveRunner()
    p = beam.Pipeline(runner, options=PipelineOptions())
    user_pcolls: list[Any] = []
    prev = None
    for i in range(branches):
        prev = add_branch(p, i, prev, user_pcolls)
    return p, user_pcolls


def proto_counts(p: Any) -> tuple[int, int]:
    """(transforms, PCollections) in ``p.to_runner_api().components``."""
    proto = p.to_runner_api()
    return len(proto.components.transforms), len(proto.components.pcollections)


_CALIBRATION: tuple[float, float] | None = None


def branches_for(size: int) -> int:
    """Branches giving about ``size`` transforms: a linear fit on 4 vs 8
    branches (the branch pattern has period 4)."""
    global _CALIBRATION
    if _CALIBRATION is None:
        c4, _ = proto_counts(build_pipeline(4)[0])
        c8, _ = proto_counts(build_pipeline(8)[0])
        per = (c8 - c4) / 4
        _CALIBRATION = (c4 - 4 * per, per)
    base, per = _CALIBRATION
    return max(1, round((size - base) / per))


def bindings_for(user_pcolls: list[Any], n_pcolls_in_proto: int) -> dict[str, Any]:
    """One bound variable per ten PCollections of the proto, spread evenly over
    the user-visible PCollections (the ones a notebook user holds)."""
    want = max(1, min(len(user_pcolls), round(n_pcolls_in_proto / 10)))
    step = len(user_pcolls) / want
    picked = [user_pcolls[int(k * step)] for k in range(want)]
    return {f"v{k:05d}": pc for k, pc in enumerate(picked)}
