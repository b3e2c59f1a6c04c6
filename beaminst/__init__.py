"""beaminst: Interactive Beam's pipeline instrumentation on saved pipeline protos.

The public library API is re-exported here lazily so that ``import beaminst``
(and therefore ``beaminst --help``) never pulls in the Beam SDK. The rest
lives in the layer packages (``from beaminst.passes.instrument import
instrument``; the README's layout table lists them).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "export": ("beaminst.commands.exporter", "export"),
    "load_pipeline": ("beaminst.model.protoio", "load_pipeline"),
    "save_pipeline": ("beaminst.model.protoio", "save_pipeline"),
    "load_manifest": ("beaminst.analysis.manifest", "load_manifest"),
    "build_index": ("beaminst.graph.index", "build_index"),
    "analyze": ("beaminst.analysis.analyze", "analyze"),
    "BeaminstError": ("beaminst.errors", "BeaminstError"),
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'beaminst' has no attribute {name!r}") from None
    import importlib

    return getattr(importlib.import_module(module_name), attr)
