"""Loading the pickles a pipeline carries without running code from them.

A ``beam:coder:pickled_python:v1`` coder or a
``beam:window_fn:pickled_python:v1`` window function is a pickle, and
unpickling calls whatever callables the pickle names: a crafted one runs
``os.system``. Beam's SDK unpickles them as soon as a coder or windowing
strategy is looked up, so before beaminst asks the SDK about one, each pickle
it would load is loaded here first by an unpickler that admits only classes of
Beam's coders, windows, timestamps and type hints, and plain data; anything
else (a function, code, a class pickled by value, ``os.system``) is refused by
name. What the restricted load admits is exactly what the SDK's load then
does, so the SDK's own load runs no code from the file. ``--trust-pickles``
skips the check (for users who trust their own protos).
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import pickle
from collections.abc import Callable
from typing import Any

from beaminst.errors import BeaminstError
from beaminst.model import urns

# Classes (type objects only, never functions) under these modules may be
# named by a pickle: Beam's coders, windows, timestamps, type hints.
_SAFE_CLASS_MODULES = (
    "apache_beam.coders.",
    "apache_beam.typehints.",
    "apache_beam.transforms.window",
    "apache_beam.transforms.timeutil",
    "apache_beam.utils.timestamp",
    "apache_beam.utils.windowed_value",
)
# Plain data, and the helpers pickle protocols use to rebuild instances of
# admitted classes.
_SAFE_GLOBALS = frozenset({
    ("builtins", n) for n in (
        "int", "float", "complex", "bool", "str", "bytes", "bytearray", "tuple", "list", "dict",
        "set", "frozenset", "object", "slice", "range", "NoneType",
    )
} | {
    ("copyreg", "_reconstructor"), ("copyreg", "__newobj__"), ("collections", "OrderedDict"),
    ("datetime", "datetime"), ("datetime", "timedelta"), ("datetime", "timezone"), ("decimal", "Decimal"),
})
# typing's special forms and aliases are objects, not callables that run code.
_SAFE_OBJECT_MODULES = ("typing",)

TRUST_FLAG = "--trust-pickles"


class UntrustedPickleError(BeaminstError):
    """A pickle in the input names something beaminst will not load."""


class _Refused(Exception):
    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")


def _admitted(find: Callable[[str, str], Any], module: str, name: str) -> Any:
    """``find(module, name)`` when the policy admits what it names."""
    if (module, name) in _SAFE_GLOBALS:
        return find(module, name)
    if module.startswith(_SAFE_CLASS_MODULES) or module in ("apache_beam.coders", "apache_beam.typehints"):
        obj = find(module, name)
        if isinstance(obj, type):
            return obj
    elif module in _SAFE_OBJECT_MODULES:
        obj = find(module, name)
        if not callable(obj) or type(obj).__module__ == "typing":
            return obj
    raise _Refused(module, name)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return _admitted(super().find_class, module, name)


def _pickle_bytes(encoded: bytes) -> bytes | None:
    """The pickle inside Beam's ``base64(zlib|bz2(pickle))`` encoding."""
    from beaminst.model.canonical import decompress_pickle

    return decompress_pickle(encoded)


def check_pickle(encoded: bytes, what: str) -> None:
    """Load ``encoded`` (Beam's pickler format) with the restricted unpickler;
    raise :class:`UntrustedPickleError` naming ``what`` when it names anything
    that is not admitted, or is not a pickle at all."""
    data = _pickle_bytes(encoded)
    if data is None:
        raise UntrustedPickleError(f"{what} is not a pickle beaminst can check; pass {TRUST_FLAG} if you trust it")
    try:
        _RestrictedUnpickler(io.BytesIO(data)).load()
    except _Refused as e:
        raise UntrustedPickleError(
            f"{what} is a pickle naming {e}, which would run code from the file when loaded; "
            f"beaminst loads only Beam's coder, window and type-hint classes and plain data "
            f"(pass {TRUST_FLAG} to load it anyway if you trust this pipeline)"
        ) from None
    except Exception as e:  # truncated, corrupt: the SDK's load would fail too
        raise UntrustedPickleError(f"{what} is a pickle that does not load ({type(e).__name__})") from None


def _coder_pickle(payload: bytes) -> bytes | None:
    """``serialize_coder``'s ``ClassName$<pickle>`` inside a BytesValue."""
    from google.protobuf import wrappers_pb2

    try:
        value = wrappers_pb2.BytesValue.FromString(payload).value
    except Exception:
        return None
    _, sep, encoded = value.partition(b"$")
    return encoded if sep else None


def check_coder(components: Any, coder_id: str) -> None:
    """Every pickled coder in ``coder_id``'s closure loads safely."""
    seen: set[str] = set()
    stack = [coder_id]
    while stack:
        cid = stack.pop()
        if cid in seen or cid not in components.coders:
            continue
        seen.add(cid)
        c = components.coders[cid]
        if c.spec.urn == urns.PICKLED_CODER:
            encoded = _coder_pickle(c.spec.payload)
            what = f"coder {cid!r} ({urns.PICKLED_CODER})"
            if encoded is None:
                raise UntrustedPickleError(f"{what} has a payload that is not a serialized coder")
            try:
                base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise UntrustedPickleError(f"{what} has a payload that is not base64") from None
            check_pickle(encoded, what)
        stack.extend(c.component_coder_ids)


def check_windowing(components: Any, ws_id: str) -> None:
    """A windowing strategy's pickled window function and window coder load safely."""
    ws = components.windowing_strategies[ws_id]
    if ws.window_fn.urn == urns.PICKLED_WINDOW_FN:
        what = f"windowing strategy {ws_id!r} window function ({urns.PICKLED_WINDOW_FN})"
        # register_pickle_urn: the pickle inside a BytesValue.
        from google.protobuf import wrappers_pb2

        try:
            encoded = wrappers_pb2.BytesValue.FromString(ws.window_fn.payload).value
        except Exception:
            raise UntrustedPickleError(f"{what} has a payload that is not a BytesValue") from None
        check_pickle(encoded, what)
    check_coder(components, ws.window_coder_id)


def check_pcollection(components: Any, pc_id: str) -> None:
    """What the SDK loads to build cache transforms for ``pc_id`` loads safely."""
    p = components.pcollections[pc_id]
    check_coder(components, p.coder_id)
    check_windowing(components, p.windowing_strategy_id)


# Functions that rebuild Beam's own values from plain data and call nothing
# else, admitted for cached *elements* only (never for the pipeline's coders
# and window functions): a StreamingCache recording pickles each element as a
# ``beam.Row`` (``WindowedValueHolder``) holding a ``WindowedValue``, whose
# interval windows unpickle through Cython's helper. Schema'd elements are
# named tuples Beam rebuilds from a schema proto (RowCoder's) or from a name
# and field names (GroupBy(...).aggregate_field's), and
# GroupIntoBatches.WithShardedKey's keys are ShardedKeys: each takes plain data
# and builds a namedtuple (whose names it checks) or sets attributes.
_MAKE_ROW = ("apache_beam.pvalue", "_make_Row")
_HYDRATE = ("apache_beam.typehints.schemas", "_hydrate_namedtuple_instance")
_DYNAMIC_NAMED_TUPLE = ("apache_beam.transforms.core", "_unpickle_dynamic_named_tuple")
_ELEMENT_RECONSTRUCTORS = frozenset({
    _MAKE_ROW,
    ("apache_beam.utils.windowed_value", "__pyx_unpickle__IntervalWindowBase"),
    _HYDRATE,
    _DYNAMIC_NAMED_TUPLE,
    ("apache_beam.utils.sharded_key", "ShardedKey"),
})
# Beam classes without a reduce of their own, which pickle as an empty
# instance (``__newobj__``) plus a state dict set by BUILD: fileio.MatchFiles'
# FileMetadata and ReadMatches' ReadableFile. BUILD (or a crafted call of the
# class, or ``copyreg._reconstructor`` running its ``__init__``) would set any
# attribute to anything the policy admits, so every instance of one is checked,
# once the pickle is loaded, to hold exactly Beam's attributes, each of one of
# Beam's types. Classes are compared by identity, never by their
# ``__module__``/``__qualname__``: those are attributes a pickle could set.
_ELEMENT_STATE_NAMES = frozenset({("apache_beam.io.filesystem", "FileMetadata"), ("apache_beam.io.fileio", "ReadableFile")})
_ELEMENT_GLOBALS = _ELEMENT_RECONSTRUCTORS | _ELEMENT_STATE_NAMES


@functools.cache
def _element_states() -> dict[type, dict[str, tuple[type, ...]]]:
    """The classes of :data:`_ELEMENT_STATE_NAMES` and Beam's attributes for
    each, imported once, when the first element is loaded (Beam's fileio is
    slow to import and most caches hold none)."""
    from apache_beam.io.fileio import ReadableFile
    from apache_beam.io.filesystem import FileMetadata

    return {
        FileMetadata: {"path": (str,), "size_in_bytes": (int,), "last_updated_in_seconds": (float, int)},
        # a CompressionTypes value (a str), or None for AUTO
        ReadableFile: {"metadata": (FileMetadata,), "_compression": (str, type(None))},
    }


def _class_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _is_one_of(obj: Any, classes: Any) -> bool:
    # ``is``, not ``in``/``==``: an admitted metaclass could define __eq__.
    return any(type(obj) is c for c in classes)


def _state_class(obj: Any) -> type | None:
    """The :func:`_element_states` class ``obj`` is an instance of, exactly."""
    for cls in _element_states():
        if type(obj) is cls:
            return cls
    return None


def _state_problem(obj: Any, cls: type) -> str | None:
    """What is wrong with ``obj``, noted as an instance of ``cls``, against
    Beam's attributes for it; ``None`` when nothing is."""
    if type(obj) is not cls:
        return f"its class changed to {_class_name(obj)}"
    attrs = getattr(obj, "__dict__", {})
    shape = _element_states()[cls]
    if attrs.keys() != shape.keys():
        return f"attributes {sorted(attrs)} (Beam's are {sorted(shape)})"
    for key, value in attrs.items():
        if not _is_one_of(value, shape[key]):
            return f"{key!r} set to a {_class_name(value)}"
    return None


def _build_problem(inst: Any, state: Any, globals_: set[int]) -> str | None:
    """Why BUILD of ``state`` onto ``inst`` is refused; ``None`` when it is not.

    BUILD onto a class or any other global (a module-level object
    ``find_class`` returned) changes it for the rest of the process, not just
    in this element: ``FileMetadata.__qualname__ = 'X'`` hides instances from
    the state check, ``FileMetadata.__repr__ = object`` breaks every later
    ``show``. Beam's own pickles BUILD only instances they created. A dunder
    key (``__class__``, ``__dict__``) in a state is never Beam's either, and
    as a slot state it is a setattr that retypes the instance."""
    if isinstance(inst, type) or id(inst) in globals_:
        what = f"the class {inst.__module__}.{inst.__qualname__}" if isinstance(inst, type) else f"a global {_class_name(inst)}"
        return f"new state for {what} (a change for the whole process)"
    parts = state if type(state) is tuple and len(state) == 2 else (state,)
    for part in parts:
        if type(part) is not dict:
            continue
        for key in part:
            if type(key) is str and key.startswith("__") and key.endswith("__"):
                if key == "__class__" and isinstance(part[key], type):
                    c = part[key]
                    return f"{_class_name(inst)} with its class changed to {c.__module__}.{c.__qualname__}"
                return f"{_class_name(inst)} with a state setting {key}"
    return None


# Admitted builtins that allocate what an argument asks for: bytes(10**12),
# tuple(range(10**12)) are a few bytes of pickle. Real pickles build these
# from their contents (opcodes, or a bytes argument), never from a count.
_SIZED = (bytes, bytearray, str, tuple, list, set, frozenset, dict)


class _Oversized(Exception):
    pass


class _Unbuildable(Exception):
    pass


class _BadState(Exception):
    pass


class _BadCall(Exception):
    pass


class _BadSchema(Exception):
    pass


def _check_call(make: Any, args: Any, kwargs: Any = None) -> None:
    """Refuse a call the file asks for before it runs, when it would allocate
    what the file asks for rather than what it holds.

    Python's unpickler calls ``make(*args, **kwargs)`` with whatever the file
    put there: ``args`` a ``range(10**8)`` is a 3.8 GB tuple from 40 bytes.
    The C unpickler (what Beam runs) requires a tuple and a dict, and so does
    this one. A ``range`` is the one admitted lazy iterable; as an argument it
    is never Beam's (Beam pickles a range as a call *of* ``range``), and
    callables that iterate an argument (``tuple``, ``TupleCoder``,
    ``_make_Row``'s ``dict``) would expand it, so it is refused as any
    argument."""
    if type(args) is not tuple:
        raise _BadCall(f"{_callable_name(make)} with arguments that are a {type(args).__name__}, not a tuple")
    if kwargs is not None:
        if type(kwargs) is not dict:
            raise _BadCall(f"{_callable_name(make)} with keyword arguments that are a {type(kwargs).__name__}, not a dict")
        args = args + tuple(kwargs.values())
    import copyreg

    if make is copyreg._reconstructor and len(args) == 3:  # base.__new__(cls, state)
        make, args = args[1], args[2:]
    elif make is copyreg.__newobj__ and args:  # cls.__new__(cls, *args)
        make, args = args[0], args[1:]
    sized = isinstance(make, type) and issubclass(make, _SIZED)
    for a in args:
        if isinstance(a, range) or (sized and isinstance(a, int) and issubclass(make, (bytes, bytearray))):
            raise _Oversized(f"{_callable_name(make)}({type(a).__name__})")
    expanded = _EXPANDED.get(_global_name(make))
    if expanded is not None:
        # Beam's reconstructors expand these with * (or dict()): Beam writes tuples.
        for i in range(len(args))[expanded]:
            if type(args[i]) is not tuple:
                # bad input like any wrong argument of theirs (an int, a list)
                raise _Unbuildable(f"{_callable_name(make)}: argument {i} is a {type(args[i]).__name__}, not a tuple")


def _callable_name(make: Any) -> str:
    return getattr(make, "__qualname__", None) or _class_name(make)


def _global_name(make: Any) -> tuple[Any, Any]:
    """(module, name) of a callable, as the tables of admitted globals key it."""
    return getattr(make, "__module__", None), getattr(make, "__name__", None)


# Which arguments of each element reconstructor Beam's code expands: the
# values of a schema row or dynamic named tuple (``T(*values)``), and each
# (name, value) pair of ``_make_Row(*items)`` (``dict(items)``).
_EXPANDED: dict[tuple[str, str], slice] = {_HYDRATE: slice(1, 2), _DYNAMIC_NAMED_TUPLE: slice(2, 3), _MAKE_ROW: slice(None)}


# Beam's named_tuple_from_schema takes ~3x (and more) longer per level of
# nested row types (12 levels of one-field rows, ~290 bytes: 2.6 s; 16: hours),
# so a schema row's schema is measured before Beam sees it. Real schemas nest
# a few rows deep.
_MAX_ROW_DEPTH = 8
_MAX_SCHEMA_FIELDS = 10_000


def _schema_problem(encoded: Any) -> str | None:
    """Why a schema row's schema is refused before Beam builds its type."""
    from apache_beam.portability.api import schema_pb2
    from apache_beam.typehints.schemas import SCHEMA_REGISTRY

    if type(encoded) is not bytes:
        return None  # Beam's parse fails: reported as a value that does not build
    try:
        schema = schema_pb2.Schema.FromString(encoded)
    except Exception:
        return None
    fields = 0
    schemas = [(schema, 0)]  # (schema, row types it is nested in)
    while schemas:
        s, depth = schemas.pop()
        if depth > _MAX_ROW_DEPTH:
            return f"row types nested more than {_MAX_ROW_DEPTH} deep"
        fields += len(s.fields)
        if fields > _MAX_SCHEMA_FIELDS:
            return f"more than {_MAX_SCHEMA_FIELDS} fields"
        # Beam returns the type registered under an id whatever the fields
        # say: values for one schema would come back as another's type.
        registered = SCHEMA_REGISTRY.by_id.get(s.id, (None, None))[1] if s.id else None
        if registered is not None and list(registered.fields) != list(s.fields):
            return f"the id {s.id!r} of another registered schema"
        types = [f.type for f in s.fields]
        while types:  # array, iterable, map, logical and nullable types wrap rows too
            t = types.pop()
            kind = t.WhichOneof("type_info")
            if kind == "row_type":
                schemas.append((t.row_type.schema, depth + 1))
            elif kind in ("array_type", "iterable_type"):
                types.append(getattr(t, kind).element_type)
            elif kind == "map_type":
                types += [t.map_type.key_type, t.map_type.value_type]
            elif kind == "logical_type":
                types += [t.logical_type.representation, t.logical_type.argument_type]
    return None


class _ElementUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """The policy of :class:`_RestrictedUnpickler` for cached elements, on the
    Python unpickler, whose calls can be checked before they allocate and
    whose instances of :func:`_element_states` classes can be checked once
    built."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file)
        self._stateful: dict[int, tuple[Any, type]] = {}
        self._globals: set[int] = set()  # ids of what find_class returned: module-level, so alive

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ELEMENT_GLOBALS:
            obj = super().find_class(module, name)
        else:
            obj = _admitted(super().find_class, module, name)
        self._globals.add(id(obj))
        return obj

    def _note(self) -> None:
        """Remember the object just pushed if it is a stateful Beam class."""
        obj = self.stack[-1]
        cls = _state_class(obj)
        if cls is not None:
            self._stateful.setdefault(id(obj), (obj, cls))

    def load(self) -> Any:
        value = super().load()
        # After the last BUILD, not at each: an instance is empty until its state arrives.
        for obj, cls in self._stateful.values():
            problem = _state_problem(obj, cls)
            if problem:
                raise _BadState(f"{cls.__module__}.{cls.__qualname__} with {problem}")
        return value

    def load_reduce(self) -> None:
        make = self.stack[-2]
        _check_call(make, self.stack[-1])
        name = _global_name(make)
        if name == _HYDRATE and self.stack[-1]:
            problem = _schema_problem(self.stack[-1][0])
            if problem:
                raise _BadSchema(problem)
        if name not in _ELEMENT_GLOBALS:
            super().load_reduce()
        else:
            try:  # its arguments come from the file: a wrong schema or field list is bad input, not a bug
                super().load_reduce()
            except Exception as e:
                raise _Unbuildable(f"{make.__module__}.{make.__name__}: {type(e).__name__}: {e}") from None
        self._note()

    def load_newobj(self) -> None:
        _check_call(self.stack[-2], self.stack[-1])
        super().load_newobj()
        self._note()

    def load_newobj_ex(self) -> None:
        _check_call(self.stack[-3], self.stack[-2], self.stack[-1])
        super().load_newobj_ex()
        self._note()

    def _instantiate(self, klass: Any, args: list[Any]) -> None:
        # INST and OBJ (protocols 0-1) call the class without REDUCE.
        _check_call(klass, tuple(args))
        super()._instantiate(klass, args)
        self._note()

    def load_build(self) -> None:
        problem = _build_problem(self.stack[-2], self.stack[-1], self._globals)
        if problem:
            raise _BadState(problem)
        super().load_build()
        self._note()

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]
    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    dispatch[pickle.BUILD[0]] = load_build


def restricted_loads(data: bytes) -> Any:
    """``pickle.loads`` for a cached element: admits what :func:`check_pickle`
    admits, the reconstructors of Beam's rows and windows, and fileio's
    FileMetadata and ReadableFile holding only Beam's attributes; refuses
    builtins asked to allocate by a count."""
    try:
        return _ElementUnpickler(io.BytesIO(data)).load()
    except _Refused as e:
        raise UntrustedPickleError(
            f"an element is a pickle naming {e}, which would run code from the file when loaded; "
            f"beaminst loads only Beam's classes and plain data (pass {TRUST_FLAG} to load it anyway)"
        ) from None
    except _Oversized as e:
        raise UntrustedPickleError(
            f"an element is a pickle calling {e}, which allocates what the file asks for, not what it holds "
            f"(pass {TRUST_FLAG} to load it anyway)"
        ) from None
    except _BadCall as e:
        raise UntrustedPickleError(
            f"an element is a pickle calling {e}, which no pickler writes and Beam's unpickler refuses"
        ) from None
    except _BadSchema as e:
        raise UntrustedPickleError(
            f"an element is a schema row whose schema has {e}, which Beam would take too long, "
            f"or wrongly, to build (pass {TRUST_FLAG} to load it anyway)"
        ) from None
    except _Unbuildable as e:
        raise UntrustedPickleError(f"an element is a pickle whose Beam value does not build ({e})") from None
    except _BadState as e:
        raise UntrustedPickleError(
            f"an element is a pickle building {e}, which Beam never builds "
            f"(pass {TRUST_FLAG} to load it anyway)"
        ) from None
