"""Typed options of the rewriting (instead of loose arguments).

One frozen value per concern, checked when it is made, so the library and the
CLI refuse the same values in the same words:

* :class:`SourceRules`: which transforms the analysis counts as unbounded
  sources beyond Beam's own rule (``--unbounded-urn``, ``--infer-unbounded``);
  read by :func:`beaminst.analysis.sources.find_unbounded_sources`;
* :class:`WorkerOptions`: where the grafted Python transforms will run;
* :class:`RewriteOptions`: what ``instrument`` and ``background-caching``
  need beyond the analysis: the cache directory, where the TestStream reads
  from, what to do with nothing to record, the workers, and whether the
  pipeline's pickles are trusted (a safety decision, kept apart from where
  things run).

The value checks (:func:`parse_urn`, :func:`parse_endpoint`) are the ones the
CLI's option callbacks use too, there reported as usage errors. Everything
here is standard library only: the CLI builds these values before any work.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from beaminst.errors import OptionError


def parse_urn(value: str) -> str:
    """A transform URN to treat as an unbounded source, else ValueError. A
    blank one would match the root and every composite without a URN."""
    if not isinstance(value, str) or not value.strip() or not value.isprintable():
        raise ValueError(f"{value!r} is not a URN")
    return value


_ENDPOINT = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):([0-9]{1,5})")


def parse_endpoint(value: str) -> str:
    """A TestStreamService address as ``HOST:PORT`` (a name, an IPv4 address or
    a bracketed IPv6 one; port 1-65535), else ValueError. It goes into the
    proto as it is, so nothing else is let through."""
    m = _ENDPOINT.fullmatch(value)
    if not m or not 1 <= int(m[1]) <= 65535 or len(value) > 255:
        raise ValueError(f"{value!r} is not HOST:PORT (for example localhost:12345)")
    return value


def _checked(parse: Callable[[str], str], value: str, flag: str) -> str:
    try:
        return parse(value)
    except ValueError as e:
        raise OptionError(str(e), flag) from None


@dataclass(frozen=True)
class SourceRules:
    """Which transforms are unbounded sources, beyond the rules that always
    hold (a Pub/Sub read, a Read whose payload says UNBOUNDED).

    ``urns``: further transform URNs that are sources (``--unbounded-urn``,
    for example ``beam:transform:teststream:v1``); any iterable of strings,
    kept as a tuple. ``infer``: also any leaf transform whose outputs are
    UNBOUNDED while its inputs are bounded or absent (``--infer-unbounded``).
    A blank or unprintable URN is an :class:`~beaminst.errors.OptionError`."""

    urns: tuple[str, ...] = ()
    infer: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.urns, str):  # one URN would become its characters
            raise TypeError("SourceRules.urns is a collection of URNs, not one string")
        object.__setattr__(self, "urns", tuple(_checked(parse_urn, u, "--unbounded-urn") for u in self.urns))

    def to_json(self) -> dict[str, Any]:
        return {"urns": list(self.urns), "infer": self.infer}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> SourceRules:
        return cls(tuple(doc["urns"]), doc["infer"])


@dataclass(frozen=True)
class WorkerOptions:
    """Where the grafted Python transforms will run.

    ``environment_type`` / ``environment_config`` are Beam's
    ``--environment_type`` / ``--environment_config``, used only when the
    pipeline has no Python environment of its own; ``target_sdk`` is the
    Python SDK version of the workers, for protos whose environment does not
    say it."""

    environment_type: str | None = None
    environment_config: str | None = None
    target_sdk: str | None = None

    def __post_init__(self) -> None:
        # Checked whether or not the pipeline ends up using it: a typo is a
        # typo even where the pipeline's own environment makes it moot.
        kind = self.environment_type
        if kind and not kind.startswith("beam:env:") and kind not in ENVIRONMENT_TYPES:
            raise OptionError(f"{kind!r} is {unknown_environment_type(kind)}", "--environment-type")


# What Beam's Environment.from_options takes: common_urns.environments' names
# (ANYOF and DEFAULT are not types a worker starts from) and LOOPBACK (run only).
ENVIRONMENT_TYPES = ("DOCKER", "PROCESS", "EXTERNAL", "LOOPBACK")


def unknown_environment_type(kind: str) -> str:
    """What to say of ``kind``, a type Beam does not know (after "is")."""
    hint = f"did you mean {kind.upper()}? " if kind.upper() in ENVIRONMENT_TYPES else ""
    return (f"not an environment type Beam knows ({hint}Beam's types are {', '.join(ENVIRONMENT_TYPES)}, "
            "in capitals, or an environment URN, beam:env:...)")


@dataclass(frozen=True)
class RewriteOptions:
    """What ``instrument`` and ``background-caching`` need beyond the analysis.

    ``cache_dir``: where the grafted cache transforms read and write (a path
    or a URL on one of Beam's filesystems); ``test_stream_endpoint``
    (instrument only): the TestStreamService the TestStream reads from, as
    ``HOST:PORT``, instead of the events inlined from the recording;
    ``allow_empty`` (background-caching only): with no unbounded source,
    write a root-only pipeline instead of failing; ``worker``: where the
    grafted transforms run; ``trust_pickles``: let the Beam SDK load the
    pipeline's pickled coders and window functions unchecked, which runs code
    from the file (default: only Beam's own classes and plain data).

    A ``test_stream_endpoint`` that is not ``HOST:PORT`` is an
    :class:`~beaminst.errors.OptionError`."""

    cache_dir: str | None  # None: the command refuses, naming --cache-dir
    test_stream_endpoint: str | None = None
    allow_empty: bool = False
    worker: WorkerOptions = WorkerOptions()
    trust_pickles: bool = False

    def __post_init__(self) -> None:
        if self.test_stream_endpoint is not None:
            _checked(parse_endpoint, self.test_stream_endpoint, "--test-stream-endpoint")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> RewriteOptions:
        return cls(**{**doc, "worker": WorkerOptions(**doc["worker"])})
