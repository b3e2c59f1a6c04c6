"""Outputs held fixed across refactors (issue 13: "outputs are byte-identical
before and after").

Every fixture (Python and TypeScript SDKs) is rewritten three ways, through
the CLI: the write pass, the read pass with every binding cached and
computed, and, where there are unbounded sources, the background-caching
pipeline. Each output gets two digests:

* ``bytes``: SHA-256 of the file as written. Pickled payloads depend on the
  Python and Beam versions that built them, so these are compared only where
  ``environment()`` matches the one recorded;
* ``structure``: SHA-256 of the output with every transform and coder payload
  and all display data cleared: ids, names, wiring, URNs, coders' and
  windowing strategies' references, environments, requirements. Compared
  everywhere.

The cache directory is a fixed path: it is resolved to an absolute path and
pickled into the cache transforms, so a per-test temporary directory would
change the bytes. Only empty shard files are created in it (the read pass
needs them to exist), so concurrent runs do not disturb each other.

    python -m tests.pinned.outputs          # rewrite tests/pinned/outputs.json
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FIXTURES = REPO / "fixtures"
PINNED = HERE / "outputs.json"
CACHE_ROOT = Path(tempfile.gettempdir()) / "beaminst-pinned-outputs"

PYTHON = ("wordcount", "multi_output", "side_inputs", "flatten_gbk", "cogbk", "nested_composites",
          "windowing", "pubsub_one", "pubsub_two", "mixed")
UNBOUNDED = ("pubsub_one", "pubsub_two", "mixed")
TYPESCRIPT = ("wordcount", "gbk_kv", "windowing", "js_objects")


def cases() -> list[tuple[str, Path, Path]]:
    return [(n, FIXTURES / f"{n}.pb", FIXTURES / f"{n}.manifest.json") for n in PYTHON] + [
        (f"ts_{n}", FIXTURES / "typescript" / f"{n}.pb", FIXTURES / "typescript" / f"{n}.manifest.json")
        for n in TYPESCRIPT
    ]


def environment() -> str:
    """What pickled bytes depend on: Python's minor version and Beam's."""
    from importlib.metadata import version

    return f"python{sys.version_info[0]}.{sys.version_info[1]}-apache-beam{version('apache-beam')}"


def structure_digest(data: bytes) -> str:
    from beaminst.model.beamproto import runner_api

    p = runner_api().Pipeline.FromString(data)
    for t in p.components.transforms.values():
        t.spec.payload = b""
        del t.display_data[:]
    for c in p.components.coders.values():
        c.spec.payload = b""
    for w in p.components.windowing_strategies.values():
        w.window_fn.payload = b""
    return hashlib.sha256(p.SerializeToString(deterministic=True)).hexdigest()


def produce(cli: Callable[..., tuple[int, str]], work: Path) -> dict[str, bytes]:
    """Every pinned output, by ``<case>/<kind>``; ``cli(*args)`` runs
    beaminst and returns (exit code, stdout)."""
    out: dict[str, bytes] = {}
    for name, pb, manifest in cases():
        cache = CACHE_ROOT / name / "cache"
        case = work / name
        case.mkdir(parents=True, exist_ok=True)

        def run(kind: str, *args: str, name: str = name, case: Path = case) -> dict:
            path = case / f"{kind}.pb"
            code, stdout = cli(*args, "-o", str(path), "--json")
            assert code == 0, (name, kind, stdout)
            out[f"{name}/{kind}"] = path.read_bytes()
            return json.loads(stdout)

        report = run("write", "instrument", str(pb), "-m", str(manifest), "--cache-dir", str(cache))
        if name in UNBOUNDED:
            run("background", "background-caching", str(pb), "-m", str(manifest), "--cache-dir", str(cache))
        (cache / "full").mkdir(parents=True, exist_ok=True)
        for w in report["writes"]:
            shard = cache / "full" / f"{w['cache_key']}-00000-of-00001"
            if not shard.exists():
                shard.write_bytes(b"")
        doc = json.loads(manifest.read_text())
        doc["computed"] = sorted(doc["bindings"])
        computed = case / "computed.json"
        computed.write_text(json.dumps(doc))
        run("read", "instrument", str(pb), "-m", str(computed), "--cache-dir", str(cache))
    return out


def digests(outputs: dict[str, bytes]) -> dict[str, dict[str, str]]:
    return {
        k: {"bytes": hashlib.sha256(v).hexdigest(), "structure": structure_digest(v)}
        for k, v in sorted(outputs.items())
    }


def _cli(*args: str) -> tuple[int, str]:
    from click.testing import CliRunner

    from beaminst.cli import main

    r = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return r.exit_code, r.stdout


def main() -> None:
    with tempfile.TemporaryDirectory() as work:
        pinned = {"environment": environment(), "outputs": digests(produce(_cli, Path(work)))}
    PINNED.write_text(json.dumps(pinned, indent=1, sort_keys=True) + "\n")
    print(f"wrote {PINNED.relative_to(REPO)}: {len(pinned['outputs'])} outputs, {pinned['environment']}")


if __name__ == "__main__":
    os.chdir(REPO)
    main()
