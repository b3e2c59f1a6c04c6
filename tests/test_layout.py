"""The layout shows the architecture: layers as packages, imports pointing down.

Every import of a beaminst module, at module level or inside a function, must
name a module of the same layer or a lower one; the Beam SDK is imported at
module level in one module only (the template builder), so ``--help``,
``analyze``, ``diff``, ``graph`` and a warm ``instrument`` start without it.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "beaminst"

# Bottom to top. errors, options and the environment's limits are the
# contracts every layer shares.
LAYERS = (
    ("errors", "options", "limits"),
    ("model",),  # Beam's protos without the SDK, I/O, the URN table, signatures, safe decoding
    ("graph",),  # the one index, the validator, pruning
    ("cache",),  # where caches live, what a cache directory holds
    ("analysis",),  # manifests, sources, cache keys, the analysis
    ("graft",),  # Beam's subgraphs: templates (on disk) and grafting
    ("passes",),  # instrument and background-caching as passes, and their driver
    ("commands",),  # the library API on files, diff, graph, show, and their output
    ("run", "batch"),  # jobs and batches of files, over the commands
    ("cli", "__main__"),  # the thin shell
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
HEAVY = ("apache_beam", "IPython", "pandas", "grpc")
SDK_AT_MODULE_LEVEL = {"beaminst.graft.templates"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts == ["beaminst"]:
        return 0  # the package root: the version and lazy re-exports
    return RANK.get(parts[1])


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(beaminst module imported, at module level) for every import in ``path``."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "beaminst":
                names = [f"beaminst.{a.name}" for a in node.names if a.name != "__version__"] or ["beaminst"]
        found.extend((n, id(node) in top) for n in names)
    return found


def test_every_module_is_in_a_layer():
    stray = [m for m in _modules() if _layer(m) is None]
    assert not stray, f"modules outside every layer: {stray}"


def _upward(module: str, path: Path) -> list[str]:
    mine = _layer(module)
    out = []
    for target, _ in _imports(path):
        if target.startswith("beaminst"):
            theirs = _layer(target)
            if theirs is None or theirs > mine:
                out.append(f"{module} (layer {mine}) imports {target} (layer {theirs})")
    return out


def test_imports_point_down():
    upward = [line for module, path in _modules().items() for line in _upward(module, path)]
    assert not upward, "\n".join(upward)


def test_the_sdk_is_imported_at_module_level_only_by_the_template_builder():
    eager = sorted(
        f"{module}: {target}"
        for module, path in _modules().items()
        for target, at_top in _imports(path)
        if at_top and target.split(".")[0] in HEAVY and module not in SDK_AT_MODULE_LEVEL
    )
    assert not eager, eager


def test_the_checks_see_a_violation(tmp_path):
    """An upward import inside a function is found, and the ranks order as listed."""
    fake = tmp_path / "fake.py"
    fake.write_text("from beaminst.model import urns\n\ndef f():\n    from beaminst.commands.api import load\n")
    assert _upward("beaminst.model.fake", fake) == [
        "beaminst.model.fake (layer 1) imports beaminst.commands.api (layer 7)"
    ]
    assert _upward("beaminst.commands.fake", fake) == []
    assert _layer("beaminst.cli") > _layer("beaminst.batch.run") > _layer("beaminst.commands.api") > _layer("beaminst.errors")
