"""Outputs held fixed across refactors (issue 13: "outputs are byte-identical
before and after").

Every fixture (Python and TypeScript SDKs) is rewritten three ways, through
the CLI: the write pass, the read pass with every binding cached and
computed, and, where there are unbounded sources, the background-caching
pipeline. Each output gets two digests:

* ``content``: SHA-256 of the file as written, except that every pickled
  payload (a DoFn, a pickled transform, coder or window function) stands as
  the digest of its opcodes (:func:`pickle_digest`) with the install path
  of Python packages cut out, and with memo references resolved: Beam's own
  functions pickled by value carry the absolute path of the Beam they come
  from, and whether two equal path strings are one object (pickled once,
  then referenced) or two depends on how that Beam was installed and
  compiled. So the same rewrite in another virtualenv differs there and only
  there. Pickles also depend on the Python and Beam versions that built
  them, so these are compared only where ``environment()`` matches the one
  recorded;
* ``structure``: SHA-256 of the output with every transform and coder payload
  and all display data cleared: ids, names, wiring, URNs, coders' and
  windowing strategies' references, environments, requirements. Compared
  everywhere.

The cache directory is a fixed path: it is resolved to an absolute path and
pickled into the cache transforms, so a per-test temporary directory would
change the bytes. Each case empties its cache before the write pass and
writes empty shards for the read pass; a lock keeps a concurrent run out
until this one is done.

    python -m tests.pinned.outputs          # rewrite tests/pinned/outputs.json
"""

from __future__ import annotations

import bz2
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FIXTURES = REPO / "fixtures"
PINNED = HERE / "outputs.json"
CACHE_ROOT = Path(tempfile.gettempdir()) / "beaminst-pinned-outputs"
EMPTY_SHARD = bz2.compress(b"")  # an empty cache, as Beam's bz2 text sink writes it

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


_SITE = re.compile(r"^.*?/(?:site|dist)-packages/", re.S)
_STRINGS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINBYTES", "BINBYTES",
            "BINBYTES8", "SHORT_BINSTRING", "BINSTRING", "STRING"}
_MEMO_PUT = {"MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"}
_MEMO_GET = {"GET", "BINGET", "LONG_BINGET"}


def pickle_digest(encoded: bytes) -> bytes:
    """A digest of a Beam pickled payload (base64 of a bz2 or zlib pickle)
    that does not depend on where packages are installed nor on which equal
    strings happened to be one object: the opcodes in order, FRAMEs dropped,
    strings with their site-packages prefix cut, memo writes dropped and memo
    reads replaced by the string they read (other objects read back by their
    order among the memoized non-strings). Not a pickle: the bytes as they are."""
    import pickletools

    from beaminst.model.canonical import decompress_pickle

    data = decompress_pickle(encoded)
    if data is None:
        return encoded
    h = hashlib.sha256()
    memo: dict[int, str] = {}
    composites = 0
    last_string: str | None = None
    try:
        for op, arg, _ in pickletools.genops(data):
            name = op.name
            if name == "FRAME":
                continue
            if name in _MEMO_PUT:
                index = len(memo) if name == "MEMOIZE" else arg
                if last_string is not None:
                    memo[index] = f"s:{last_string}"
                else:
                    memo[index] = f"o:{composites}"
                    composites += 1
                continue
            token = memo.get(arg, "?") if name in _MEMO_GET else None
            if name in _STRINGS:
                text = arg.decode("latin-1") if isinstance(arg, bytes) else str(arg)
                last_string = _SITE.sub("<site>/", text)
                token = f"s:{last_string}"
            else:
                last_string = None if name not in _MEMO_GET or not str(token).startswith("s:") else str(token)[2:]
                token = token if token is not None else f"{name}:{arg!r}"
            h.update(token.encode("utf-8", "surrogatepass") + b"\0")
    except Exception:  # not a pickle after all
        return encoded
    return b"pickle:" + h.digest()


def content_digest(data: bytes) -> str:
    from beaminst.model import urns
    from beaminst.model.beamproto import runner_api

    p = runner_api().Pipeline.FromString(data)
    for t in p.components.transforms.values():
        if t.spec.urn == urns.PICKLED_TRANSFORM:
            t.spec.payload = pickle_digest(t.spec.payload)
            continue
        msg = urns.parse_payload(t.spec.urn, t.spec.payload) if t.spec.payload else None
        if msg is None:
            continue
        for m, fd, value in list(urns.scalar_fields(msg)):
            if fd.name == "payload" and fd.type == fd.TYPE_BYTES:
                setattr(m, fd.name, pickle_digest(value))
        t.spec.payload = msg.SerializeToString(deterministic=True)
    for c in p.components.coders.values():
        if c.spec.urn == urns.PICKLED_CODER:
            c.spec.payload = _pickled_coder_digest(c.spec.payload)
    for w in p.components.windowing_strategies.values():
        w.window_fn.payload = pickle_digest(w.window_fn.payload)
    return hashlib.sha256(p.SerializeToString(deterministic=True)).hexdigest()


def _pickled_coder_digest(payload: bytes) -> bytes:
    from beaminst.model.canonical import unwrap_pickled_coder

    unwrapped = unwrap_pickled_coder(payload)
    if unwrapped is None:
        return payload
    _, name, encoded = unwrapped
    return name + b"$" + pickle_digest(encoded)


def produce(cli: Callable[..., tuple[int, str]], work: Path) -> dict[str, bytes]:
    """Every pinned output, by ``<case>/<kind>``; ``cli(*args)`` runs
    beaminst and returns (exit code, stdout)."""
    out: dict[str, bytes] = {}
    with _exclusive(CACHE_ROOT):
        for name, pb, manifest in cases():
            _produce_case(cli, work, name, pb, manifest, out)
    return out


@contextlib.contextmanager
def _exclusive(root: Path) -> Iterator[None]:
    """The fixed cache root to this process alone (another test run on the
    machine waits): each case empties its cache first."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _produce_case(cli: Callable[..., tuple[int, str]], work: Path, name: str, pb: Path, manifest: Path,
                  out: dict[str, bytes]) -> None:
    cache = CACHE_ROOT / name / "cache"
    # What the write pass writes depends on what is cached (a cached binding
    # not listed as computed is neither read nor rewritten): start empty,
    # not from what an earlier run left.
    shutil.rmtree(cache, ignore_errors=True)
    case = work / name
    case.mkdir(parents=True, exist_ok=True)

    def run(kind: str, *args: str) -> dict:
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
        shard.write_bytes(EMPTY_SHARD)
    doc = json.loads(manifest.read_text())
    doc["computed"] = sorted(doc["bindings"])
    computed = case / "computed.json"
    computed.write_text(json.dumps(doc))
    run("read", "instrument", str(pb), "-m", str(computed), "--cache-dir", str(cache))


def digests(outputs: dict[str, bytes]) -> dict[str, dict[str, str]]:
    return {
        k: {"content": content_digest(v), "structure": structure_digest(v)}
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
