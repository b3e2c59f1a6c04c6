"""Content signatures of pipeline components, independent of their ids.

Used for cache keys (a coder is what it encodes, not what it is called) and
for grafting (an identical coder, windowing strategy or environment is reused
instead of minted twice, like ``add_or_get_coder_id`` in Beam's translations).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import pickletools
import re
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

from beaminst.model import bounded, urns

# An absolute path up to and including a site-packages / dist-packages
# directory, inside a decompressed pickle, with the opcode and length of the
# string it starts (SHORT_BINUNICODE or BINUNICODE): the length changes with
# the path. Segments are printable ASCII without '/'.
_INSTALL_PREFIX = re.compile(
    rb"(?:\x8c[\x00-\xff]|X[\x00-\xff]{4})?/(?:[\x21-\x2e\x30-\x7e]+/)*?(?:site|dist)-packages/", re.DOTALL
)


# Beam's DataFrame API names each expression '<name>_<proxy type>_<id(expr)>'
# (``expressions.Expression._id``) and uses that name as a label part
# ("Unbatch '...'", "[ComputedExpression[...]]", "Partition_..._...",
# "Size[..., ...]"), an output tag and a pickled attribute; a stage's label
# ends in ':<id(stage)>' after its ops list (``ComputeStage.default_label``).
# Only the proxy types Beam's frames have (pandas' and numpy's), and an id()
# is an object's address, at least 8-aligned: a user's 'logs_day_20240104' is
# content and keeps its digits (clearing it would give two pipelines one key).
_PROXY_TYPES = (
    "DataFrame|Series|(?:Multi|Range|Datetime|Categorical|Interval|Period|Timedelta)?Index|Categorical"
    "|Timestamp|Timedelta|u?int(?:8|16|32|64)|float(?:16|32|64)|complex(?:64|128)|bool_|object_"
    "|datetime64|timedelta64"
)
_EXPRESSION_ID = re.compile(rf"(?<=[A-Za-z0-9])_({_PROXY_TYPES})_([0-9]{{7,}})(?![A-Za-z0-9_])")
_STAGE_ID = re.compile(r"(?<=\]\]):([0-9]{7,})(?![0-9])")
# A pickle that may hold expression ids: one of Beam's DataFrame objects, or
# anything holding a string of an expression id's form (a CoGroupByKey's
# RestoreTags holds them as tags); the stage ids and the set order only the former.
_DATAFRAME_PICKLE = re.compile(rb"apache_beam\.dataframe")
# Searched from its '_' (a literal start is a fast scan; a leading class is
# tried at every byte), the character before checked by hand.
_EXPRESSION_ID_TAIL = re.compile(rf"_(?:{_PROXY_TYPES})_[0-9]{{7,}}".encode())
# cloudpickle's class tracker id (``uuid4().hex``) and Beam's schema ids
# (``SchemaTypeRegistry.generate_new_id``: ``str(uuid4())``), cleared only
# where those functions pass them (:data:`_ID_ARGUMENTS`).
_TRACKER_ID = re.compile(r"[0-9a-f]{32}")
_SCHEMA_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
_PROCESS_ID_HINTS = (b"_make_skeleton_class", b"_make_skeleton_enum", b"RowTypeConstraint", b"RowCoder.from_payload")
# Ids Beam mints while a pipeline is built, new at every construction:
# ``fileio.WriteToFiles``' temporary directory (``<temp location>/.temp<uuid4>``)
# and ``ReadFromBigQuery``'s export id (``str(uuid4())[:10]``, a whole string
# its source and its cleanup's closure hold), which name where a run puts its
# temporary files, not what it computes; and a ``DoFn.SetupContextParam`` /
# ``BundleContextParam`` left unnamed, ``<kind>ContextParam_<id(self)>``.
# Each cleared only in pickles of the code that mints it, and only in its form
# (a user's path holding a uuid elsewhere stays content).
_IO_PICKLE = re.compile(rb"apache_beam\.io\.(?:fileio|gcp\.bigquery)\b")
_FILEIO_TEMP_DIR = re.compile(r"(?<=\.temp)[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
_BIGQUERY_EXPORT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]")
_CONTEXT_PARAM_PICKLE = re.compile(rb"_(?:Setup|Bundle)ContextParam\b")
_CONTEXT_PARAM_ID = re.compile(r"((?:Setup|Bundle)ContextParam)_([0-9]{7,})")


def io_ids_cleared(text: str) -> str:
    """``text`` with a temporary-file id Beam's IO minted at construction
    replaced (see :data:`_IO_PICKLE`)."""
    if _BIGQUERY_EXPORT_ID.fullmatch(text):
        return "<io id>"
    return _FILEIO_TEMP_DIR.sub("<uuid>", text) if ".temp" in text else text


def context_param_id_cleared(text: str) -> str:
    """An unnamed context parameter's id, ``<kind>ContextParam_<id()>``
    (8-aligned, an address), as ``<kind>ContextParam_#``."""
    m = _CONTEXT_PARAM_ID.fullmatch(text)
    return _aligned_id(m, f"{m.group(1)}_#") if m else text


def _aligned_id(m: re.Match[str], keep: str) -> str:
    return keep if int(m.group(m.lastindex or 0)) % 8 == 0 else m.group(0)


def process_ids_cleared(label: str) -> str:
    """``label`` with the ``id()``s Beam's DataFrame API writes into
    expression and stage names replaced by ``#``: they die with the process
    that built the pipeline. The rest of the name (expression name, proxy
    type) stays, so different operations keep different names."""
    if "_" not in label and "]]:" not in label:
        return label
    label = _EXPRESSION_ID.sub(lambda m: _aligned_id(m, f"_{m.group(1)}_#"), label)
    return _STAGE_ID.sub(lambda m: _aligned_id(m, ":#"), label)


def digest(*parts: bytes | str) -> bytes:
    """sha256 over length-prefixed parts (so ("ab","c") != ("a","bc")), hashed
    in one call (the same bytes as one update per piece)."""
    pieces = []
    for p in parts:
        b = p.encode("utf-8") if isinstance(p, str) else p
        pieces.append(len(b).to_bytes(8, "big"))
        pieces.append(b)
    return hashlib.sha256(b"".join(pieces)).digest()


def decompress_pickle(encoded: bytes, what: str = "a pickled payload") -> bytes | None:
    """The cloudpickle bytes inside a Beam pickled payload (base64 of bz2 or
    zlib), or None when ``encoded`` is not one. Never unpickles; past the
    decompression cap, a ValidationError naming ``what``."""
    if not encoded or len(encoded) % 4:
        return None
    try:
        raw = base64.b64decode(encoded, validate=True)
    except Exception:
        return None
    try:
        return bounded.decompress(raw, what)
    except bounded.CorruptStream:
        return None


_STABLE_MEMO: dict[bytes, bytes] = {}


class _Inflated:
    """Pickles the validator inflated and nobody has signed yet, up to
    :attr:`CAP` bytes in all, each entry charged its two byte strings and
    :attr:`OVERHEAD` (past the cap, the oldest are dropped: they are inflated
    again if they are ever signed). Signing is left to the first
    :func:`install_independent` because some commands (``graph``) never sign."""

    CAP = 64 << 20
    OVERHEAD = 256  # a dict entry and two bytes objects, with room to spare

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.size = 0

    def _cost(self, encoded: bytes, data: bytes) -> int:
        return len(encoded) + len(data) + self.OVERHEAD

    def add(self, encoded: bytes, data: bytes) -> None:
        cost = self._cost(encoded, data)
        if encoded in self.data or cost > self.CAP:
            return
        while self.size + cost > self.CAP:
            oldest = next(iter(self.data))
            self.size -= self._cost(oldest, self.data.pop(oldest))
        self.data[encoded] = data
        self.size += cost

    def pop(self, encoded: bytes) -> bytes | None:
        data = self.data.pop(encoded, None)
        if data is not None:
            self.size -= self._cost(encoded, data)
        return data


_INFLATED = _Inflated()


def install_independent(encoded: bytes) -> bytes:
    """A stand-in for a pickled payload that does not depend on where Python
    packages are installed: functions pickled by value (Beam's own lambdas
    among them) carry their absolute source path, so the same pipeline built
    in two virtualenvs pickles differently. Non-pickles come back unchanged."""
    if len(_STABLE_MEMO) > 100_000:
        _STABLE_MEMO.clear()
    memo = _STABLE_MEMO.get(encoded)
    if memo is None:
        data = _INFLATED.pop(encoded)
        if data is None:
            data = decompress_pickle(encoded)
        memo = encoded if data is None else _stable_digest(data)
        _STABLE_MEMO[encoded] = memo
    return memo


_SIGNING_AHEAD: ContextVar[bool] = ContextVar("beaminst_signing_ahead", default=True)


def remember_inflated(encoded: bytes, data: bytes) -> None:
    """Keep ``data``, the pickle inside ``encoded`` that a caller has just
    inflated (the validator does, for every pickle of a file), for
    :func:`install_independent`: the same pickle is not inflated a second
    time. Not within :func:`nothing_to_sign`."""
    if _SIGNING_AHEAD.get() and encoded not in _STABLE_MEMO:
        _INFLATED.add(encoded, data)


@contextlib.contextmanager
def nothing_to_sign() -> Iterator[None]:
    """Within, :func:`remember_inflated` keeps nothing: for a command that
    signs no pickle (``graph``), whose loads would otherwise hold every
    inflated pickle until the process ends (16 MB at 20,000 transforms, and
    about a quarter of the pickle check's time in fresh allocations)."""
    token = _SIGNING_AHEAD.set(False)
    try:
        yield
    finally:
        _SIGNING_AHEAD.reset(token)


def _stable_digest(data: bytes) -> bytes:
    plain = _unframe(data)
    frames = bool(_DATAFRAME_PICKLE.search(plain))
    expressions = frames or _holds_expression_id(plain)
    io = bool(_IO_PICKLE.search(plain))
    params = bool(_CONTEXT_PARAM_PICKLE.search(plain))
    if expressions or io or params or any(hint in plain for hint in _PROCESS_ID_HINTS):
        plain = _pickle_process_ids_cleared(plain, frames, expressions, io, params)
    if b"-packages/" in plain:  # what _INSTALL_PREFIX ends in (a substring test is 50x faster than the sub)
        plain = _INSTALL_PREFIX.sub(b"<site>/", plain)
    return b"pickle:" + hashlib.sha256(plain).digest()


def _holds_expression_id(data: bytes) -> bool:
    """Whether ``data`` holds ``[A-Za-z0-9]_<proxy type>_<7+ digits>``."""
    pos = 0
    while (m := _EXPRESSION_ID_TAIL.search(data, pos)) is not None:
        start = m.start()
        if data[start - 1 : start].isalnum():  # ASCII letters and digits: bytes' isalnum
            return True
        pos = start + 1
    return False


# A set pickles in iteration order, which follows str hashes (random per
# process): DataFrame stages keep their inputs and outputs in sets.
_SET_BUILDERS = frozenset({"ADDITEMS", "FROZENSET"})
_MEMO_GETS = frozenset({"GET", "BINGET", "LONG_BINGET"})


def _pickle_process_ids_cleared(
    data: bytes, frames: bool, expressions: bool, io: bool = False, params: bool = False
) -> bytes:
    """A canonical opcode stream of ``data`` with the strings that name
    process-born ids replaced and, in a pickle of Beam's DataFrame objects,
    sets of already pickled objects in a fixed order. String arguments are
    written with a length of our own, so a shorter or longer id shifts
    nothing. ``data`` itself when it holds no such id (its signature stays
    byte for byte what it was) or does not parse.

    What is cleared: a class tracker id or a schema id only as the argument
    cloudpickle or Beam passes it (:func:`_id_arguments`), and DataFrame
    expression and stage ids (:func:`process_ids_cleared`: pandas' and
    numpy's proxy types, 8-aligned) in a pickle that holds one
    (``expressions``), the temporary-file ids of Beam's file and BigQuery IO
    (``io``: :func:`io_ids_cleared`) and unnamed context parameters' ids
    (``params``: :func:`context_param_id_cleared`). ``frames``: ``data``
    pickles Beam's DataFrame objects."""
    try:
        ops = list(pickletools.genops(data))
        id_args = _id_arguments(ops)
    except Exception:
        return data
    out: list[bytes] = []  # one entry per opcode: out[k] is ops[k]
    marks: list[int] = []
    cleared_any, end = False, 0
    for i, (op, arg, pos) in enumerate(ops):
        end = ops[i + 1][2] if i + 1 < len(ops) else pos + 1
        replaced = id_args.get(i)
        if isinstance(arg, bytes) and isinstance(replaced, bytes):
            cleared_any = True
            out.append(b"\0b" + op.code.encode("latin-1") + len(replaced).to_bytes(8, "big") + replaced)
        elif isinstance(arg, str):
            cleared = replaced if isinstance(replaced, str) else (process_ids_cleared(arg) if expressions else arg)
            if io:
                cleared = io_ids_cleared(cleared)
            if params:
                cleared = context_param_id_cleared(cleared)
            cleared_any |= cleared != arg
            raw = cleared.encode("utf-8", "surrogatepass")
            out.append(b"\0s" + op.code.encode("latin-1") + len(raw).to_bytes(8, "big") + raw)
        else:
            out.append(data[pos:end])
        if op.name == "MARK":
            marks.append(len(out))
        elif pickletools.markobject in op.stack_before and marks:
            start = marks.pop()
            # Items that are all memo references: sorting them renumbers nothing.
            if (frames and op.name in _SET_BUILDERS and start < i
                    and all(o.name in _MEMO_GETS for o, _, _ in ops[start:i])):
                out[start:i] = sorted(out[start:i])
    if not cleared_any:
        return data
    out.append(data[end:])
    return b"".join(out)


# (module, callable) -> (which argument holds the id, its pattern, what
# stands for it): cloudpickle's _class_getnewargs / _enum_getnewargs put the
# tracker id just before their trailing None; Beam's RowTypeConstraint
# pickles as from_fields(fields, schema_id, ...).
_CLOUDPICKLE_MODULES = ("cloudpickle.cloudpickle", "apache_beam.internal.cloudpickle.cloudpickle")
_ID_ARGUMENTS: dict[tuple[str, str], tuple[int, re.Pattern[str], str]] = {
    **{(m, f): (-2, _TRACKER_ID, "<class tracker id>")
       for m in _CLOUDPICKLE_MODULES for f in ("_make_skeleton_class", "_make_skeleton_enum")},
    ("apache_beam.typehints.row_type", "RowTypeConstraint.from_fields"): (1, _SCHEMA_ID, "<schema id>"),
}
# (module, callable) -> (which argument, what it becomes), for a bytes
# argument: a pickled RowCoder is RowCoder.from_payload(<Schema proto>), and
# the schema holds its uuid4 (a ``beam.Create`` of ``beam.Row``s pickles one).
_BYTES_ARGUMENTS: dict[tuple[str, str], tuple[int, Callable[[bytes], bytes]]] = {
    # A lambda: schema_ids_cleared is defined further down.
    ("apache_beam.coders.row_coder", "RowCoder.from_payload"): (0, lambda b: schema_ids_cleared(b)),
}
_TUPLE_OPS = frozenset({"TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_TUPLE"})
_MEMO_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_MARK = ("mark",)


def _id_arguments(ops: list[Any]) -> dict[int, str | bytes]:
    """Opcode index -> its replacement, for each string pushed as the id
    argument of a call in :data:`_ID_ARGUMENTS`, and each bytes argument of a
    call in :data:`_BYTES_ARGUMENTS` that clearing changes. The pickle's stack is run
    symbolically (strings, globals by name, tuples by their items, memo
    references resolved; nothing is built or called), so only a string that
    really is that argument of that callable qualifies."""
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    found: dict[int, str | bytes] = {}
    for i, (op, arg, _pos) in enumerate(ops):
        name = op.name
        if name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
            continue
        if name in _MEMO_PUTS:
            memo[int(arg)] = stack[-1]
            continue
        if name in _MEMO_GETS:
            stack.append(memo.get(int(arg)))
            continue
        if name == "MARK":
            stack.append(_MARK)
            continue
        before = op.stack_before
        if pickletools.markobject in before:
            at = len(stack) - 1 - stack[::-1].index(_MARK)
            popped = stack[at + 1:]
            below = before.index(pickletools.markobject)
            del stack[at - below:]
        else:
            popped = stack[len(stack) - len(before):] if before else []
            del stack[len(stack) - len(before):]
        value: Any = None
        if isinstance(arg, str) and name not in ("GLOBAL", "INST"):
            value = ("str", i, arg)
        elif isinstance(arg, bytes):
            value = ("bytes", i, arg)
        elif name == "STACK_GLOBAL":
            value = ("global", *(p[2] if isinstance(p, tuple) and p[0] == "str" else None for p in popped))
        elif name == "GLOBAL":
            value = ("global", *str(arg).split(" ", 1))
        elif name in _TUPLE_OPS:
            value = ("tuple", popped)
        elif name == "NONE":
            value = ("none",)
        elif name == "REDUCE":
            _note_id_argument(popped, found)
        stack.extend([value] * len(op.stack_after))
    return found


def _note_id_argument(popped: list[Any], found: dict[int, str | bytes]) -> None:
    """A REDUCE of (callable, args): record its id argument when the callable
    is one of :data:`_ID_ARGUMENTS` and the argument has the id's form, or
    the cleared form of its bytes argument for one of :data:`_BYTES_ARGUMENTS`."""
    fn, args = popped
    name = tuple(fn[1:]) if isinstance(fn, tuple) and fn[0] == "global" else None
    if name is None or not (isinstance(args, tuple) and args[0] == "tuple"):
        return
    in_bytes = _BYTES_ARGUMENTS.get(name)  # type: ignore[arg-type]
    if in_bytes is not None:
        at, clear = in_bytes
        item = args[1][at] if -len(args[1]) <= at < len(args[1]) else None
        if isinstance(item, tuple) and item[0] == "bytes":
            cleared = clear(item[2])
            if cleared != item[2]:
                found[item[1]] = cleared
        return
    rule = _ID_ARGUMENTS.get(name)  # type: ignore[arg-type]
    if rule is None:
        return
    at, pattern, stands_for = rule
    items = args[1]
    if not -len(items) <= at < len(items) or (at == -2 and items[-1] != ("none",)):
        return
    item = items[at]
    if isinstance(item, tuple) and item[0] == "str" and pattern.fullmatch(item[2]):
        found[item[1]] = stands_for


def _unframe(data: bytes) -> bytes:
    """Pickle protocol 4+ wraps opcodes in FRAMEs whose 8-byte length header
    changes with every path inside: keep the opcodes, drop the headers."""
    if len(data) < 2 or data[0] != 0x80 or data[1] < 4:
        return data
    out, pos = [data[:2]], 2
    while pos + 9 <= len(data) and data[pos] == 0x95:
        length = int.from_bytes(data[pos + 1 : pos + 9], "little")
        out.append(data[pos + 9 : pos + 9 + length])
        pos += 9 + length
    out.append(data[pos:])
    return b"".join(out)


def unwrap_pickled_coder(payload: bytes) -> tuple[Any, bytes, bytes] | None:
    """``beam:coder:pickled_python:v1`` payloads are a BytesValue holding
    ``ClassName$<base64 zlib pickle>`` (``coders.serialize_coder``): the
    BytesValue, the name and the encoded pickle; None when it is not one."""
    from google.protobuf import wrappers_pb2

    try:
        value = wrappers_pb2.BytesValue.FromString(payload)
    except Exception:
        return None
    name, sep, encoded = value.value.partition(b"$")
    if not sep:
        return None
    return value, name, encoded


def coder_payload_install_independent(urn: str, payload: bytes) -> bytes:
    """Pickled coders are a BytesValue of ``ClassName$<pickle>``; row coders'
    schemas are signed without their ids."""
    if urn == urns.ROW_CODER and payload:
        return schema_ids_cleared(payload)
    if urn != urns.PICKLED_CODER or not payload:
        return payload
    unwrapped = unwrap_pickled_coder(payload)
    if unwrapped is None:
        return payload
    _, name, encoded = unwrapped
    return name + b"$" + install_independent(encoded)


def schema_ids_cleared(payload: bytes) -> bytes:
    """A ``Schema`` payload with its id and its nested row types' ids
    cleared: Beam gives every schema a fresh ``uuid4`` (``schema_registry``),
    which names it in this process's registry and is not what it encodes.
    The payload itself when it does not parse."""
    from beaminst.model.beamproto import schema_api

    schema_pb2 = schema_api()
    try:
        schema = schema_pb2.Schema.FromString(payload)
    except Exception:
        return payload
    changed = False
    for m, fd, _ in list(urns.scalar_fields(schema)):
        if fd.name == "id" and m.DESCRIPTOR.full_name == schema_pb2.Schema.DESCRIPTOR.full_name:
            m.ClearField("id")
            changed = True
    return schema.SerializeToString(deterministic=True) if changed else payload


class Signatures:
    """Memoised content signatures over one ``Components`` message.

    ``coder_payload`` maps a coder's (urn, payload) to the bytes that are
    signed: exact by default (grafting must only merge identical coders);
    cache keys pass :func:`coder_payload_install_independent`."""

    def __init__(self, components: Any, coder_payload: Callable[[str, bytes], bytes] | None = None) -> None:
        self._c = components
        self._coder_payload = coder_payload
        self._coder: dict[str, bytes] = {}
        self._ws: dict[str, bytes] = {}
        self._env: dict[str, bytes] = {}

    def coder(self, cid: str) -> bytes:
        memo, coders = self._coder, self._c.coders
        stack = [cid]
        # Iterative post-order: coders nest, and we never recurse in Python.
        while stack:
            top = stack[-1]
            if top in memo:
                stack.pop()
                continue
            c = coders[top]
            pending = [s for s in c.component_coder_ids if s not in memo]
            if pending:
                stack.extend(pending)
                continue
            payload = self._coder_payload(c.spec.urn, c.spec.payload) if self._coder_payload else c.spec.payload
            memo[top] = digest(b"coder", c.spec.urn, payload, *(memo[s] for s in c.component_coder_ids))
            stack.pop()
        return memo[cid]

    def environment(self, eid: str) -> bytes:
        if eid not in self._env:
            self._env[eid] = digest(b"env", self._c.environments[eid].SerializeToString(deterministic=True))
        return self._env[eid]

    def windowing(self, wid: str, with_environment: bool = True) -> bytes:
        memo_key = wid if with_environment else "\0" + wid
        if memo_key not in self._ws:
            ws = type(self._c.windowing_strategies[wid])()
            ws.CopyFrom(self._c.windowing_strategies[wid])
            ws.window_coder_id = self.coder(ws.window_coder_id).hex()
            ws.environment_id = self.environment(ws.environment_id).hex() if with_environment and ws.environment_id else ""
            self._ws[memo_key] = digest(b"windowing", ws.SerializeToString(deterministic=True))
        return self._ws[memo_key]
