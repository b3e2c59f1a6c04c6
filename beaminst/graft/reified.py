"""The coder of what a cache write's reify emits, and a cache read reads.

Beam's cache write reifies each element into a ``WindowedValueHolder``, typed
``Any``: the reify's output gets ``FastPrimitivesCoder``, and so does the
pcoder its ``WriteCache`` saves and writes the cache files with. What that
coder does not know natively (a row, a ``NamedTuple``, a user class) goes to
its fallback, the standard pickle, which names a class by reference. An
element of a class the worker rebuilt by value (a ``NamedTuple`` defined in a
notebook's or a script's ``__main__``, carried by cloudpickle inside the
user's function) has no importable name there: the runner's size sampler
(which encodes the reify's output), any fusion break and the cache sink
failed, while the original pipeline, its PCollection coded as a row, ran. In
Interactive Beam the job runs in the notebook's own process, where
``__main__`` holds the class; a cache read by another process has the same
problem the other way round (what it decodes it must encode again).

beaminst types the reify's output, and the cache read's, :class:`ReifiedHolders`,
which the coder registry maps to ``FastPrimitivesCoder`` with a fallback that
pickles as the standard pickle does and, only where that fails, with
cloudpickle (by value: the cache element carries its class, and any process
reads it back with ``pickle.loads``). Everything Beam's coder encodes today is
encoded byte for byte as Beam encodes it, so a cache Beam wrote reads as before
and Beam reads one beaminst wrote. The fallback is a class defined here and
pickled by value (workers have Beam, not beaminst), rebuilt over a relative
file name like the reify function (:mod:`beaminst.graft.templates`).

A Python ``Pipeline.from_runner_api`` round trip (the DirectRunner's) types
each PCollection from its coder again (``FastPrimitivesCoder`` gives ``Any``)
and derives the coder from that type: :func:`retype_cache_holders` puts the
marker back on a rebuilt pipeline before it runs.
"""

from __future__ import annotations

import builtins
import functools
import pickle
import types
import typing
from typing import Any

from beaminst.model.labels import READ_CACHE, REIFY_BEFORE, WRITE_CACHE


class ReifiedHolders:
    """The element type of a cache write's reified output and of a cache
    read's output (a marker: no instances exist; the registry maps it to
    :func:`holder_coder`)."""


# The fallback's functions are pickled by value into every cache write: their
# file and module names are part of the output's bytes (see the reify function).
_FILE = "beaminst/graft/reified.py"
_MODULE = "beaminst.graft.reified"


def _by_value(fn: Any, name: str, names: dict[str, Any]) -> Any:
    code = fn.__code__.replace(co_filename=_FILE, co_firstlineno=1)
    # __builtins__ for calls in this process (the pickle takes only the names the code uses).
    rebuilt = types.FunctionType(code, {"__name__": _MODULE, "__builtins__": builtins, **names}, name, fn.__defaults__)
    rebuilt.__qualname__ = f"PickleThenCloudpickleCoder.{name}"
    return rebuilt


# The fallback's methods (module-level, so that what they use are globals).
def _encode(self: Any, value: Any) -> bytes:
    try:
        return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    except Exception:  # a class with no importable name here: carried by value
        from apache_beam.internal.cloudpickle import cloudpickle

        return cloudpickle.dumps(value, pickle.HIGHEST_PROTOCOL)


def _decode(self: Any, encoded: bytes) -> Any:
    return pickle.loads(encoded)


def _is_deterministic(self: Any) -> bool:
    return False


def _to_type_hint(self: Any) -> Any:
    return typing.Any


def _fallback_coder() -> Any:
    """A fresh instance of a fresh class on every call: unpickling a dynamic
    class in this process would update the one pickled next (cloudpickle
    tracks classes by id), and bytes would drift."""
    from apache_beam.coders import coders

    names = {"pickle": pickle, "typing": typing}
    methods = {"encode": _encode, "decode": _decode, "is_deterministic": _is_deterministic, "to_type_hint": _to_type_hint}
    namespace = {name: _by_value(fn, name, names) for name, fn in methods.items()}
    cls = type("PickleThenCloudpickleCoder", (coders.Coder,), {"__module__": _MODULE, **namespace})
    return cls()


def holder_coder() -> Any:
    """``FastPrimitivesCoder`` with :func:`_fallback_coder`'s fallback, as a
    fresh subclass (by value, as the fallback): FastPrimitivesCoders are equal
    whatever their fallback, and a pipeline's context would hand back the
    plain one it already holds."""
    from apache_beam.coders import coders

    cls = type("CacheHolderCoder", (coders.FastPrimitivesCoder,), {"__module__": _MODULE})
    return cls(fallback_coder=_fallback_coder())


@functools.cache
def register() -> None:
    """Map :class:`ReifiedHolders` to :func:`holder_coder` in Beam's coder
    registry (once per process)."""
    from apache_beam.coders import coders, typecoders

    class _HolderCoderFactory(coders.FastPrimitivesCoder):
        # The registry calls from_type_hint on the class registered and uses
        # what it returns (a fresh CacheHolderCoder): this class is never pickled.
        @classmethod
        def from_type_hint(cls, typehint: Any, registry: Any) -> Any:
            return holder_coder()

    typecoders.registry.register_coder(ReifiedHolders, _HolderCoderFactory)


def type_holders(pcoll: Any) -> Any:
    """Type ``pcoll`` :class:`ReifiedHolders`; returns it."""
    register()
    pcoll.element_type = ReifiedHolders
    return pcoll


def retype_cache_holders(pipeline: Any) -> None:
    """Type the outputs of every cache write's reify and every cache read in
    ``pipeline`` (a Python ``Pipeline``, built or rebuilt with
    ``Pipeline.from_runner_api``) :class:`ReifiedHolders`. Both are grafted
    at the top level."""
    for applied in pipeline._root_transform().parts:
        name = applied.full_label
        if (name.startswith(REIFY_BEFORE + WRITE_CACHE) and not applied.parts) or name.startswith(READ_CACHE):
            for out in applied.outputs.values():
                type_holders(out)
