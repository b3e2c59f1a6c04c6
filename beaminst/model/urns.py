"""The one table of URN knowledge: what each transform payload references.

Runners resolve ids that a transform's inputs and outputs do not show: a
ParDo's state, timer and restriction coders, a Combine's accumulator coder, a
TestStream's coder, the window coder and environment inside the Python SDK's
``window_into`` payload (a whole ``WindowingStrategy``). A ParDo's payload also
says which inputs are side inputs and which of Beam's ``requirements`` the
pipeline must declare for it. The validator, id remapping when grafting, the
coder closure and trimming, pruning, cache keys and requirements all read
:func:`payload_info` / :func:`remap_payload`, so a reference cannot be seen in
one place and missed in another.

Payload messages are walked generically: every string field named
``*coder_id``, ``windowing_strategy_id`` or ``environment_id`` is a reference,
at any depth (state specs, timer families, nested maps). Function specs'
payloads (pickles) are opaque bytes and are never opened here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from beaminst.model.beamproto import runner_api

# -- transforms ---------------------------------------------------------------
PAR_DO = "beam:transform:pardo:v1"
SDF_PAIR_WITH_RESTRICTION = "beam:transform:sdf_pair_with_restriction:v1"
SDF_SPLIT_AND_SIZE = "beam:transform:sdf_split_and_size_restrictions:v1"
SDF_PROCESS_SIZED = "beam:transform:sdf_process_sized_element_and_restrictions:v1"
SDF_TRUNCATE_SIZED = "beam:transform:sdf_truncate_sized_restrictions:v1"
# FnApiRunner's PAR_DO_URNS: each carries a ParDoPayload.
PAR_DO_FAMILY = frozenset({PAR_DO, SDF_PAIR_WITH_RESTRICTION, SDF_SPLIT_AND_SIZE, SDF_PROCESS_SIZED, SDF_TRUNCATE_SIZED})
COMBINE_FAMILY = frozenset({
    "beam:transform:combine_per_key:v1",
    "beam:transform:combine_globally:v1",
    "beam:transform:combine_grouped_values:v1",
    "beam:transform:combine_per_key_precombine:v1",
    "beam:transform:combine_per_key_merge_accumulators:v1",
    "beam:transform:combine_per_key_extract_outputs:v1",
    "beam:transform:combine_per_key_convert_to_accumulators:v1",
})
TEST_STREAM = "beam:transform:teststream:v1"
WINDOW_INTO = "beam:transform:window_into:v1"
READ = "beam:transform:read:v1"
WRITE_FILES = "beam:transform:write_files:v1"
PUBSUB_READ = "beam:transform:pubsub_read:v1"
PICKLED_TRANSFORM = "beam:transform:pickled_python:v1"
IMPULSE = "beam:transform:impulse:v1"
GROUP_BY_KEY = "beam:transform:group_by_key:v1"
FLATTEN = "beam:transform:flatten:v1"
# Transforms the runner implements itself: they must name no environment (Java's PipelineValidator).
RUNNER_IMPLEMENTED = frozenset({GROUP_BY_KEY, IMPULSE})

# -- functions, coders, windows and environments -------------------------------
PICKLED_DOFN = "beam:dofn:pickled_python_info:v1"
PICKLED_COMBINE_FN = "beam:combinefn:pickled_python:v1"
PICKLED_WINDOW_FN = "beam:window_fn:pickled_python:v1"
# standard_window_fns.proto: the payload message of each standard window fn.
WINDOW_FN_PAYLOADS = {
    "beam:window_fn:global_windows:v1": "GlobalWindowsPayload",
    "beam:window_fn:fixed_windows:v1": "FixedWindowsPayload",
    "beam:window_fn:sliding_windows:v1": "SlidingWindowsPayload",
    "beam:window_fn:session_windows:v1": "SessionWindowsPayload",
}
PICKLED_CODER = "beam:coder:pickled_python:v1"
ROW_CODER = "beam:coder:row:v1"
ENV_DEFAULT = "beam:env:default:v1"  # the Python SDK's placeholder, replaced at submission
ENV_DOCKER = "beam:env:docker:v1"
ENV_PROCESS = "beam:env:process:v1"
ENV_EXTERNAL = "beam:env:external:v1"
ENV_EMBEDDED = "beam:env:embedded_python:v1"
ENV_LOOPBACK = "beam:env:embedded_python_loopback:v1"  # LOOPBACK: a worker pool in the submitting process
SDK_BASE_CAPABILITY = "beam:version:sdk_base:"  # + container image, e.g. apache/beam_python3.11_sdk:2.77.0
# Functions only the Python SDK runs, and environments that are Python's by their URN alone.
PYTHON_FUNCTIONS = frozenset({
    PICKLED_DOFN, PICKLED_COMBINE_FN, PICKLED_WINDOW_FN,
    "beam:dofn:pickled_python:v1", "beam:combinefn:packed_python:v1", "beam:source:pickled_python:v1",
    "beam:dofn:python_key_with_none:v1",
})
PYTHON_ENVIRONMENTS = frozenset({
    ENV_DEFAULT, ENV_EMBEDDED, "beam:env:embedded_python_grpc:v1",
    ENV_LOOPBACK, "beam:env:harness_subprocess_python:v1",
})

# -- requirements (beam_runner_api.proto StandardRequirements) ------------------
REQUIRES_STATEFUL = "beam:requirement:pardo:stateful:v1"
REQUIRES_SPLITTABLE_DOFN = "beam:requirement:pardo:splittable_dofn:v1"
REQUIRES_BUNDLE_FINALIZATION = "beam:requirement:pardo:finalization:v1"
REQUIRES_STABLE_INPUT = "beam:requirement:pardo:stable_input:v1"
REQUIRES_TIME_SORTED_INPUT = "beam:requirement:pardo:time_sorted_input:v1"
# The requirements a payload implies; any other one a pipeline declares is kept as it is.
DERIVED_REQUIREMENTS = frozenset({
    REQUIRES_STATEFUL, REQUIRES_SPLITTABLE_DOFN, REQUIRES_BUNDLE_FINALIZATION,
    REQUIRES_STABLE_INPUT, REQUIRES_TIME_SORTED_INPUT,
})

# URN -> the payload message, for payloads that reference other components.
# The Python SDK writes a whole WindowingStrategy as the window_into payload;
# the standard WindowIntoPayload (other SDKs) parses as one too (field 1 is
# the window_fn in both), with no references.
_PAYLOAD_MESSAGES: dict[str, str] = {
    **dict.fromkeys(PAR_DO_FAMILY, "ParDoPayload"),
    **dict.fromkeys(COMBINE_FAMILY, "CombinePayload"),
    TEST_STREAM: "TestStreamPayload",
    WINDOW_INTO: "WindowingStrategy",
    READ: "ReadPayload",
    WRITE_FILES: "WriteFilesPayload",
}

# Field names that hold component ids, by kind.
_ID_FIELDS = {"windowing_strategy_id": "windowing_strategies", "environment_id": "environments"}
# Fields that hold data, not references: a TestStream's recorded events can
# be millions of elements.
_DATA_FIELDS = frozenset({"events"})


@dataclass(frozen=True)
class PayloadInfo:
    """What one transform payload references and implies."""

    coders: frozenset[str] = frozenset()
    windowing_strategies: frozenset[str] = frozenset()
    environments: frozenset[str] = frozenset()
    side_inputs: frozenset[str] = frozenset()  # input tags that are side inputs
    requirements: frozenset[str] = frozenset()
    functions: frozenset[str] = frozenset()  # URNs of the functions it carries (DoFn, CombineFn, ...)

    def references(self, kind: str) -> frozenset[str]:
        """``kind`` is a Components map name: coders, windowing_strategies, environments."""
        return getattr(self, kind)

    def remapped(self, maps: Mapping[str, Mapping[str, str]]) -> PayloadInfo:
        """The info of this payload after :func:`remap_payload` with ``maps``."""
        if not remaps(self, maps):
            return self

        def through(kind: str) -> frozenset[str]:
            m = maps.get(kind, {})
            return frozenset(m.get(x, x) for x in getattr(self, kind))

        return PayloadInfo(
            through("coders"), through("windowing_strategies"), through("environments"), self.side_inputs,
            self.requirements, self.functions,
        )


NOTHING = PayloadInfo()


def payload_message_name(urn: str) -> str | None:
    """The payload message of ``urn`` when it references components."""
    return _PAYLOAD_MESSAGES.get(urn)


def id_kind(field_name: str) -> str | None:
    """The Components map (``coders``, ...) a payload field of that name holds an id of, or None."""
    if field_name.endswith("coder_id"):
        return "coders"
    return _ID_FIELDS.get(field_name)


# How scalar_fields goes into a field (decided once per field descriptor:
# GetOptions() and the map-entry lookups cost more than the walk itself).
_SKIP, _SCALAR, _MESSAGE, _MESSAGES, _MESSAGE_VALUES = range(5)


@functools.cache
def _field_action(fd: Any) -> int:
    if fd.name in _DATA_FIELDS:
        return _SKIP
    if fd.message_type is None:
        return _SCALAR
    if fd.message_type.GetOptions().map_entry:
        # A map of messages is walked into; a map of scalars holds no ids.
        return _MESSAGE_VALUES if fd.message_type.fields_by_name["value"].message_type is not None else _SKIP
    return _MESSAGES if fd.label == fd.LABEL_REPEATED else _MESSAGE


def scalar_fields(msg: Any) -> Iterator[tuple[Any, Any, Any]]:
    """``(message, field, value)`` for every set scalar field of ``msg``, at
    any depth (repeated and map fields included; data fields skipped)."""
    stack = [msg]
    action = _field_action
    while stack:
        m = stack.pop()
        for fd, value in m.ListFields():
            a = action(fd)
            if a == _SCALAR:
                yield m, fd, value
            elif a == _MESSAGE:
                stack.append(value)
            elif a == _MESSAGES:
                stack.extend(value)
            elif a == _MESSAGE_VALUES:
                stack.extend(value.values())


def _walk(msg: Any, visit: Callable[[Any, Any, str, str], None]) -> None:
    """Call ``visit(msg, field, kind, value)`` for every id-holding string field of ``msg``."""
    for m, fd, value in scalar_fields(msg):
        if fd.type == fd.TYPE_STRING and fd.label != fd.LABEL_REPEATED:
            kind = id_kind(fd.name)
            if kind is not None and value:
                visit(m, fd, kind, value)


def parse_payload(urn: str, payload: bytes) -> Any | None:
    """The parsed payload message, or None when ``urn`` has none in the table.
    Raises ``ValueError`` when the payload does not parse."""
    name = _PAYLOAD_MESSAGES.get(urn)
    if name is None:
        return None
    msg = getattr(runner_api(), name)()
    try:
        msg.ParseFromString(payload)
    except Exception as e:  # protobuf's DecodeError, and worse on garbage
        raise ValueError(f"its {name} does not parse") from e
    return msg


@functools.lru_cache(maxsize=65536)
def payload_info(urn: str, payload: bytes) -> PayloadInfo:
    """What the payload of a transform with ``urn`` references and implies.

    Raises ``ValueError`` for a payload of a known URN that does not parse.
    Memoised: the input, the working state and the output share payloads."""
    if urn not in _PAYLOAD_MESSAGES or not payload:
        return NOTHING
    msg = parse_payload(urn, payload)
    refs: dict[str, set[str]] = {"coders": set(), "windowing_strategies": set(), "environments": set()}
    _walk(msg, lambda _m, _fd, kind, value: refs[kind].add(value))
    sides: frozenset[str] = frozenset()
    reqs: set[str] = set()
    if urn in PAR_DO_FAMILY:
        sides = frozenset(msg.side_inputs.keys())
        reqs = _pardo_requirements(msg)
    elif urn == WRITE_FILES:
        sides = frozenset(msg.side_inputs.keys())
    fields = msg.DESCRIPTOR.fields_by_name
    functions = frozenset(
        getattr(msg, f).urn for f in _FUNCTION_FIELDS if f in fields and msg.HasField(f)
    )
    return PayloadInfo(
        frozenset(refs["coders"]), frozenset(refs["windowing_strategies"]), frozenset(refs["environments"]),
        sides, frozenset(reqs), functions,
    )


# Payload fields holding a FunctionSpec of user code.
_FUNCTION_FIELDS = ("do_fn", "combine_fn", "window_fn", "source")


def _pardo_requirements(p: Any) -> set[str]:
    """Beam's rule (Java's ``PipelineValidator.validateParDo``, Python's
    ``FnApiRunner._validate_requirements``)."""
    out: set[str] = set()
    if p.state_specs or p.timer_family_specs:
        out.add(REQUIRES_STATEFUL)
    if p.restriction_coder_id:
        out.add(REQUIRES_SPLITTABLE_DOFN)
    if p.requests_finalization:
        out.add(REQUIRES_BUNDLE_FINALIZATION)
    if p.requires_stable_input:
        out.add(REQUIRES_STABLE_INPUT)
    if p.requires_time_sorted_input:
        out.add(REQUIRES_TIME_SORTED_INPUT)
    return out


def remap_payload(urn: str, payload: bytes, maps: Mapping[str, Mapping[str, str]]) -> bytes:
    """``payload`` with every referenced id replaced through ``maps`` (kind ->
    old id -> new id); the same bytes when nothing it references is remapped."""
    if not remaps(payload_info(urn, payload), maps):
        return payload
    msg = parse_payload(urn, payload)
    remap_message(msg, maps)
    return msg.SerializeToString(deterministic=True)


def remaps(info: PayloadInfo, maps: Mapping[str, Mapping[str, str]]) -> bool:
    """Whether ``maps`` replaces anything a payload with ``info`` references."""
    return any(info.references(k) & maps.get(k, {}).keys() for k in ("coders", "windowing_strategies", "environments"))


def remap_message(msg: Any, maps: Mapping[str, Mapping[str, str]]) -> None:
    """Replace, in a parsed payload, every referenced id through ``maps``."""

    def visit(m: Any, fd: Any, kind: str, value: str) -> None:
        new = maps.get(kind, {}).get(value)
        if new is not None:
            setattr(m, fd.name, new)

    _walk(msg, visit)


def replace_references(msg: Any, replace: Callable[[str, str], str | None]) -> bool:
    """Replace, in a parsed payload, each referenced id by ``replace(kind, id)``
    (None keeps it, ``""`` clears it); True when anything changed. Cache keys
    use it to put content digests in place of ids."""
    changed = False

    def visit(m: Any, fd: Any, kind: str, value: str) -> None:
        nonlocal changed
        new = replace(kind, value)
        if new is not None and new != value:
            setattr(m, fd.name, new)
            changed = True

    _walk(msg, visit)
    return changed


def transform_requirements(transforms: Mapping[str, Any]) -> frozenset[str]:
    """The requirements the given transforms imply."""
    return implied_requirements(
        payload_info(t.spec.urn, t.spec.payload) for t in transforms.values() if t.spec.urn in PAR_DO_FAMILY
    )


def implied_requirements(infos: Iterable[PayloadInfo | None]) -> frozenset[str]:
    """The requirements transforms with these payload infos imply (only
    ParDo-family payloads carry any)."""
    out: set[str] = set()
    for info in infos:
        if info is not None and info.requirements:  # None: a payload that does not parse implies nothing
            out |= info.requirements
    return frozenset(out)


def with_implied(declared: Any, implied: frozenset[str]) -> list[str]:
    """A pipeline's ``requirements`` for transforms that imply ``implied``
    (:func:`transform_requirements`, :func:`implied_requirements`): those,
    plus every declared requirement beaminst cannot derive (kept, since
    something it does not understand may need it). Sorted."""
    return sorted(implied | (set(declared) - DERIVED_REQUIREMENTS))
