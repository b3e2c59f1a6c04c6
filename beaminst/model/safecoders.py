"""Decoding untrusted bytes with Beam's coders, bounds-checked.

Beam's compiled ``InputStream`` (``apache_beam/coders/stream.pyx``) checks no
bounds: a cached element with a crafted length makes a decode read past its
buffer, which crashes the process (a segfault) or copies process memory into
the decoded value, that ``show`` would then print. And a count read from the
input repeats a coder that consumes nothing (a ``GlobalWindow``) billions of
times.

So cached elements are decoded by Beam's own pure-Python coder
implementations (``apache_beam/coders/coder_impl.py``, the source the
compiled module is built from), loaded a second time as a private module over
:class:`StrictInputStream`, which refuses any read before the start or past
the end and charges every decode call against a budget proportional to the
input. Beam's classes are not changed: coders get these implementations only
while :func:`bounded_decoder` builds them. The pickle fallback of
``FastPrimitivesCoder`` is :func:`beaminst.model.safepickle.restricted_loads`
unless ``trust_pickles``.
"""

from __future__ import annotations

import functools
import os
import pickle
import struct
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_MODULE = "beaminst._beam_python_coder_impl"
_COMPILED_STREAM_IMPORT = "  from . import stream  # pylint: disable=unused-import\n"
CALLS_PER_BYTE = 8  # decode calls an element may make per byte of it (plus a constant)


class DecodeError(ValueError):
    """The bytes are not what the coder writes."""


class StrictInputStream:
    """``slow_stream.InputStream`` that refuses to read outside its bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.budget = 64 + CALLS_PER_BYTE * len(data)

    def charge(self) -> None:
        self.budget -= 1
        if self.budget < 0:
            raise DecodeError("decoding makes more calls than its length allows (a crafted count?)")

    def size(self) -> int:
        return len(self.data) - self.pos

    def read(self, size: int) -> bytes:
        if size < 0 or size > len(self.data) - self.pos:
            raise DecodeError(f"a read of {size} bytes at offset {self.pos} of {len(self.data)}")
        self.pos += size
        return self.data[self.pos - size:self.pos]

    def read_all(self, nested: bool) -> bytes:
        return self.read(self.read_var_int64() if nested else self.size())

    def read_byte(self) -> int:
        return self.read(1)[0]

    def read_var_int64(self) -> int:
        shift = result = 0
        while True:
            byte = self.read_byte()
            bits = byte & 0x7F
            if shift >= 64 or (shift >= 63 and bits > 1):
                raise DecodeError("varint too long")
            result |= bits << shift
            shift += 7
            if not byte & 0x80:
                break
        return result - (1 << 64) if result >= 1 << 63 else result

    def read_var_int32(self) -> int:
        return struct.unpack("<i", struct.pack("<I", self.read_var_int64() & 0xFFFFFFFF))[0]

    def read_bigendian_int64(self) -> int:
        return struct.unpack(">q", self.read(8))[0]

    def read_bigendian_uint64(self) -> int:
        return struct.unpack(">Q", self.read(8))[0]

    def read_bigendian_int32(self) -> int:
        return struct.unpack(">i", self.read(4))[0]

    def read_bigendian_int16(self) -> int:
        return struct.unpack(">h", self.read(2))[0]

    def read_bigendian_double(self) -> float:
        return struct.unpack(">d", self.read(8))[0]

    def read_bigendian_float(self) -> float:
        return struct.unpack(">f", self.read(4))[0]


def _charged(decode: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(decode)
    def wrapper(self: Any, in_stream: Any, *args: Any, **kwargs: Any) -> Any:
        in_stream.charge()
        return decode(self, in_stream, *args, **kwargs)

    return wrapper


@functools.lru_cache(maxsize=1)
def python_coder_impl() -> types.ModuleType:
    """Beam's ``coder_impl.py`` run as a module of its own, on pure-Python
    streams, every ``decode_from_stream`` charged to the stream's budget."""
    import apache_beam.coders as package

    path = os.path.join(os.path.dirname(package.__file__), "coder_impl.py")
    with open(path, encoding="utf-8") as f:
        source = f.read()
    if _COMPILED_STREAM_IMPORT not in source:  # pragma: no cover - Beam is pinned
        raise RuntimeError(f"{path} changed: beaminst cannot load Beam's pure-Python coders")
    source = source.replace(_COMPILED_STREAM_IMPORT, "  raise ImportError  # beaminst: pure-Python streams\n")
    module = types.ModuleType(_MODULE)
    module.__file__, module.__package__ = path, package.__name__
    exec(compile(source, path, "exec"), module.__dict__)  # Beam's own, installed code
    module.create_InputStream = StrictInputStream
    module.windowed_value = _windowed_value_for_python_coders(module.windowed_value)
    module.IntervalWindowCoderImpl.decode_from_stream = _decode_interval_window
    for obj in list(vars(module).values()):
        if isinstance(obj, type) and issubclass(obj, module.CoderImpl) and "decode_from_stream" in vars(obj):
            obj.decode_from_stream = _charged(obj.decode_from_stream)
    return module


def _decode_interval_window(self: Any, in_stream: Any, nested: bool) -> Any:
    """``IntervalWindowCoderImpl.decode_from_stream`` through the public
    constructor (the Python one sets fields the compiled class keeps read-only)."""
    from apache_beam.transforms.window import IntervalWindow
    from apache_beam.utils.timestamp import Timestamp

    end = 1000 * self._to_normal_time(in_stream.read_bigendian_uint64())
    start = end - 1000 * in_stream.read_var_int64()
    return IntervalWindow(Timestamp(micros=start), Timestamp(micros=end))


def _windowed_value_for_python_coders(compiled: types.ModuleType) -> types.ModuleType:
    """The compiled ``windowed_value`` plus the one private table the Python
    ``PaneInfoCoderImpl`` reads, which the compiled module does not export."""
    shim = types.ModuleType(compiled.__name__)
    shim.__dict__.update(vars(compiled))
    table: list[Any] = [None] * 16  # as windowed_value._construct_well_known_pane_infos
    for timing in (compiled.PaneInfoTiming.EARLY, compiled.PaneInfoTiming.ON_TIME,
                   compiled.PaneInfoTiming.LATE, compiled.PaneInfoTiming.UNKNOWN):
        nonspeculative = -1 if timing == compiled.PaneInfoTiming.EARLY else 0
        for first, last, index in ((True, True, 0), (True, False, 0), (False, True, -1), (False, False, -1)):
            pane = compiled.PaneInfo(first, last, timing, index, nonspeculative)
            table[pane.encoded_byte] = pane
    shim._BYTE_TO_PANE_INFO = table
    return shim


@contextmanager
def _python_impls() -> Iterator[None]:
    """While building implementations, Beam's coders find the pure-Python ones."""
    from apache_beam.coders import coders, row_coder

    slow = python_coder_impl()
    saved = coders.coder_impl, row_coder.RowCoderImpl, row_coder.LogicalTypeCoderImpl
    coders.coder_impl = slow
    row_coder.RowCoderImpl, row_coder.LogicalTypeCoderImpl = slow.RowCoderImpl, slow.LogicalTypeCoderImpl
    try:
        yield
    finally:
        coders.coder_impl, row_coder.RowCoderImpl, row_coder.LogicalTypeCoderImpl = saved


def bounded_decoder(coder: Any, trust_pickles: bool = False) -> Callable[[bytes], Any]:
    """``coder.decode`` (``coder`` a Beam coder beaminst built, trusted) for
    untrusted bytes: bounds-checked, budgeted, and with the restricted pickle
    fallback unless ``trust_pickles``. Raises :class:`DecodeError`,
    :class:`beaminst.model.safepickle.UntrustedPickleError` or whatever Beam's coder
    raises on bytes it did not write."""
    from apache_beam.coders import coders
    from apache_beam.runners.pipeline_context import PipelineContext

    from beaminst.model.safepickle import restricted_loads

    slow = python_coder_impl()

    class RestrictedPickleCoder(coders.PickleCoder):
        def _create_impl(self) -> Any:
            return slow.CallbackCoderImpl(lambda x: pickle.dumps(x, pickle.HIGHEST_PROTOCOL), restricted_loads)

    # A copy through the proto in a second context: the first hands back the
    # very component objects it registered, and Beam shares some (the default
    # fallback PickleCoder), so nothing of the caller's is changed.
    first = PipelineContext()
    coder_id = first.coders.get_id(coder)
    fresh = PipelineContext(first.to_runner_api()).coders.get_by_id(coder_id)
    stack, seen = [fresh], {}
    while stack:
        c = stack.pop()
        if id(c) in seen:
            continue
        seen[id(c)] = c
        c.__dict__.pop("_impl", None)  # implementations are cached per coder
        if isinstance(c, coders.FastPrimitivesCoder):
            c._fallback_coder = coders.PickleCoder() if trust_pickles else RestrictedPickleCoder()
            stack.append(c._fallback_coder)
        stack.extend(c._get_component_coders())
    with _python_impls():
        impl = fresh.get_impl()
    for c in seen.values():  # should any be shared after all, it builds Beam's own again
        c.__dict__.pop("_impl", None)

    def decode(data: bytes) -> Any:
        return impl.decode_from_stream(StrictInputStream(data), False)

    return decode
