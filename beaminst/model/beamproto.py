"""Lean access to Beam's generated proto modules.

``import apache_beam.portability.api`` executes ``apache_beam/__init__``, which
imports the whole SDK (runners included) and costs well over a second. The
generated ``*_pb2`` modules themselves only need protobuf, so when the SDK is
not loaded yet we import them from Beam's package directory under a private
package name. Protobuf builds message classes from the shared default
descriptor pool, so the classes are the very same objects the SDK uses once it
is imported later (a test holds us to that).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from functools import cache
from types import ModuleType

_MODEL_PACKAGES = {
    "pipeline": "apache_beam.portability.api.org.apache.beam.model.pipeline.v1",
    "interactive": "apache_beam.portability.api.org.apache.beam.model.interactive.v1",
}


_PRIVATE = "_beaminst_model"


def _load(kind: str, module: str) -> ModuleType:
    canonical = f"{_MODEL_PACKAGES[kind]}.{module}"
    if "apache_beam" in sys.modules or canonical in sys.modules:
        return importlib.import_module(canonical)
    spec = importlib.util.find_spec("apache_beam")
    if spec is None or spec.origin is None:  # pragma: no cover - install problem
        raise ImportError("apache-beam is not installed; pip install 'apache-beam[interactive]'")
    model = os.path.join(os.path.dirname(spec.origin), *"portability/api/org/apache/beam/model".split("/"))
    # Bare packages (no __init__ run: Beam's import grpc) mirroring the model
    # tree, so the generated modules' relative imports resolve.
    for name, path in (
        (_PRIVATE, model),
        (f"{_PRIVATE}.{kind}", os.path.join(model, kind)),
        (f"{_PRIVATE}.{kind}.v1", os.path.join(model, kind, "v1")),
    ):
        if name not in sys.modules:
            pkg = types.ModuleType(name)
            pkg.__path__ = [path]
            sys.modules[name] = pkg
    return importlib.import_module(f"{_PRIVATE}.{kind}.v1.{module}")


@cache
def beam_version() -> str:
    """The installed apache-beam's ``__version__``, read from its
    ``version.py`` (importing ``apache_beam.version`` imports the SDK)."""
    import re

    if "apache_beam" not in sys.modules:
        spec = importlib.util.find_spec("apache_beam")
        if spec is not None and spec.origin is not None:
            with open(os.path.join(os.path.dirname(spec.origin), "version.py"), encoding="utf-8") as f:
                found = re.search(r"""^__version__\s*=\s*['"]([^'"]+)['"]""", f.read(), re.MULTILINE)
            if found:
                return found.group(1)
    from apache_beam.version import __version__

    return __version__


@cache
def runner_api() -> ModuleType:
    """``beam_runner_api_pb2``."""
    return _load("pipeline", "beam_runner_api_pb2")


@cache
def schema_api() -> ModuleType:
    """``schema_pb2`` (row coders' payloads)."""
    return _load("pipeline", "schema_pb2")


@cache
def window_fns_api() -> ModuleType:
    """``standard_window_fns_pb2`` (fixed, sliding and session windows' payloads)."""
    runner_api()
    return _load("pipeline", "standard_window_fns_pb2")


@cache
def interactive_api() -> ModuleType:
    """``beam_interactive_api_pb2`` (TestStream file records)."""
    runner_api()
    return _load("interactive", "beam_interactive_api_pb2")
