"""beaminst needs plain apache-beam, not its ``[interactive]`` extra.

The extra pulls Jupyter, IPython, widgets, facets and pandas; no command uses
them. The commands run, byte for byte the same, where none of them imports,
and the cache subgraphs are built without importing IPython even where it is
installed (Beam's ``is_in_ipython`` probe, on every top-level apply, would).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import threading
import types
from pathlib import Path

import pytest
from conftest import EMPTY_SHARD, REPO, fixture_manifest, fixture_pb, run_python

# The import names of what apache-beam[interactive] adds to apache-beam.
INTERACTIVE_EXTRA = (
    "IPython", "ipykernel", "ipywidgets", "jupyter_client", "jupyter_core", "facets_overview",
    "nbformat", "nbconvert", "timeloop", "pydot", "pandas", "google.cloud.dataproc", "google.cloud.dataproc_v1",
)

# Refuses every import of INTERACTIVE_EXTRA, installed before anything else imports.
BLOCKER = f"""
import sys
BLOCKED = {INTERACTIVE_EXTRA!r}
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Blocker())
"""

# Runs the CLI once per argv of sys.argv[1] (JSON), in one process; prints the
# INTERACTIVE_EXTRA modules imported meanwhile.
COMMANDS = f"""
import json, sys
from beaminst.cli import main
for argv in json.loads(sys.argv[1]):
    try:
        main(argv, prog_name="beaminst")
    except SystemExit as e:
        if e.code:
            raise
print(json.dumps(sorted(m for m in {INTERACTIVE_EXTRA!r} if m in sys.modules)))
"""


def test_the_runtime_dependency_is_plain_apache_beam():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    beam = [d for d in project["dependencies"] if re.match(r"apache-beam\b", d)]
    assert beam and all("interactive" not in d for d in beam)
    test_extra = " ".join(project["optional-dependencies"]["test"])
    assert "interactive" not in test_extra


def _runs(tmp_path: Path, out: Path) -> list[list[str]]:
    """instrument (writes; reads and pruning from a cache; a streaming
    pipeline's TestStream) and background-caching, into ``out``."""
    from beaminst.commands.api import analyze_files

    for old in tmp_path.glob("cache-*"):  # the same cache state, and paths, for every run
        shutil.rmtree(old)
    cached = tmp_path / "cache-cached"
    full = cached / "full"
    full.mkdir(parents=True, exist_ok=True)
    for c in analyze_files(fixture_pb("wordcount"), fixture_manifest("wordcount")).cacheables.values():
        (full / f"{c.cache_key}-00000-of-00001").write_bytes(EMPTY_SHARD)
    out.mkdir()
    return [
        ["instrument", fixture_pb("wordcount"), "-m", fixture_manifest("wordcount"),
         "--cache-dir", str(tmp_path / "cache-empty"), "-o", str(out / "writes.pb")],
        ["instrument", fixture_pb("wordcount"), "-m", fixture_manifest("wordcount"),
         "--cache-dir", str(cached), "--reuse", "-o", str(out / "reads.pb")],
        ["instrument", fixture_pb("mixed"), "-m", fixture_manifest("mixed"),
         "--cache-dir", str(tmp_path / "cache-streaming"), "-o", str(out / "streaming.pb")],
        ["background-caching", fixture_pb("pubsub_two"), "-m", fixture_manifest("pubsub_two"),
         "--cache-dir", str(tmp_path / "cache-background"), "-o", str(out / "background.pb")],
    ]


@pytest.mark.slow
def test_commands_run_without_the_interactive_extra(tmp_path, monkeypatch):
    # Beam's TestStream lists its output tags from a set: one hash seed for both runs.
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    outputs = {}
    for mode, program in {"normal": COMMANDS, "blocked": BLOCKER + COMMANDS}.items():
        out = tmp_path / mode
        runs = _runs(tmp_path, out)
        r = run_python("-c", program, json.dumps(runs), timeout=300)
        assert r.returncode == 0, r.stderr
        imported = json.loads(r.stdout.splitlines()[-1])
        if mode == "blocked":
            assert imported == []
        outputs[mode] = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    assert len(outputs["blocked"]) == 4
    assert outputs["blocked"] == outputs["normal"]


def test_the_blocker_blocks(tmp_path):
    r = run_python("-c", BLOCKER + "import importlib\n" + "".join(
        f"try:\n    importlib.import_module({m!r})\nexcept ImportError:\n    pass\nelse:\n    print({m!r})\n"
        for m in INTERACTIVE_EXTRA
    ) + "import apache_beam, beaminst.cli\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ""


# A stand-in IPython first on the path, found whether or not IPython is
# installed: get_ipython() says "no shell", as a real one outside a notebook.
STUB_IPYTHON = "def get_ipython():\n    return None\n"

BUILD = """
import importlib.util, json, sys
sys.path.insert(0, sys.argv[1])
from beaminst.commands import api
from beaminst.options import RewriteOptions
fx = sys.argv[2]
api.instrument_files(fx + "/wordcount.pb", sys.argv[3] + "/w.pb", fx + "/wordcount.manifest.json", RewriteOptions(sys.argv[3] + "/c1"))
api.instrument_files(fx + "/mixed.pb", sys.argv[3] + "/m.pb", fx + "/mixed.manifest.json", RewriteOptions(sys.argv[3] + "/c2"))
api.background_caching_files(fx + "/pubsub_one.pb", sys.argv[3] + "/b.pb", fx + "/pubsub_one.manifest.json", RewriteOptions(sys.argv[3] + "/c3"))
print(json.dumps(["IPython" in sys.modules, importlib.util.find_spec("IPython").origin]))
"""


def test_building_cache_transforms_imports_no_ipython(tmp_path):
    stub = tmp_path / "stub"
    (stub / "IPython").mkdir(parents=True)
    (stub / "IPython" / "__init__.py").write_text(STUB_IPYTHON)
    r = run_python("-c", BUILD, str(stub), str(REPO / "fixtures"), str(tmp_path), timeout=300)
    assert r.returncode == 0, r.stderr
    imported, origin = json.loads(r.stdout.splitlines()[-1])
    assert origin == str(stub / "IPython" / "__init__.py")  # importable, so Beam's probe would have
    assert not imported
    assert {p.name for p in tmp_path.glob("*.pb")} == {"w.pb", "m.pb", "b.pb"}


# --- the probe itself, in-process ------------------------------------------------------


class _Finder:
    """Records imports of IPython instead of letting them happen."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "IPython":
            self.asked.append(name)
            raise ImportError(name)


@pytest.fixture
def no_ipython(monkeypatch):
    for name in [m for m in sys.modules if m.split(".")[0] == "IPython"]:
        monkeypatch.delitem(sys.modules, name)
    finder = _Finder()
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    return finder


def test_probe_answers_false_without_importing(no_ipython):
    from apache_beam.utils import interactive_utils

    from beaminst.graft import ipythonprobe

    beams = interactive_utils.is_in_ipython
    with ipythonprobe.without_import():
        assert interactive_utils.is_in_ipython() is False
        assert interactive_utils.is_in_notebook() is False
    assert no_ipython.asked == []
    assert interactive_utils.is_in_ipython is beams
    interactive_utils.is_in_ipython()
    assert no_ipython.asked == ["IPython"]  # Beam's own probe, put back, imports


def test_probe_asks_beams_once_ipython_is_imported(monkeypatch):
    from apache_beam.utils import interactive_utils

    from beaminst.graft import ipythonprobe

    shell = types.SimpleNamespace(config={"IPKernelApp": {}}, execution_count=1)
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    with ipythonprobe.without_import():
        assert interactive_utils.is_in_ipython() is True
        assert interactive_utils.is_in_notebook() is True


def test_probe_is_put_back_by_the_last_user_of_any_thread(no_ipython):
    from apache_beam.utils import interactive_utils

    from beaminst.graft import ipythonprobe

    beams = interactive_utils.is_in_ipython
    inside, leave = threading.Event(), threading.Event()

    def other() -> None:
        with ipythonprobe.without_import():
            inside.set()
            leave.wait(10)

    t = threading.Thread(target=other)
    t.start()
    inside.wait(10)
    with ipythonprobe.without_import():
        with ipythonprobe.without_import():
            pass
        assert interactive_utils.is_in_ipython is not beams
    assert interactive_utils.is_in_ipython is not beams  # the other thread is still inside
    leave.set()
    t.join(10)
    assert interactive_utils.is_in_ipython is beams
    assert no_ipython.asked == []
