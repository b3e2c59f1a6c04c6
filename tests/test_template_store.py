"""The template store (:mod:`beaminst.graft.store`): templates across processes.

A second process finds every template on disk and never imports the Beam SDK;
its output is the same bytes as a build's. An entry that is damaged, under
another key, not the user's, or in a directory others can write to is never
used: the template is built (and the entry replaced) or the store bypassed,
and the output is the same. Concurrent writers never expose a partial entry;
the store keeps at most ``MAX_ENTRIES`` entries of at most ``MAX_ENTRY_BYTES``.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, environ, fixture_manifest, fixture_pb, run_cli, run_python

from beaminst.graft import grafter, store
from beaminst.graft.store import TemplateStore

# Runs the CLI and says on stderr, last, whether the Beam SDK was imported.
_CLI_REPORTING_SDK = (
    "import atexit, sys; "
    "atexit.register(lambda: sys.stderr.write('\\nSDK-IMPORTED=%s\\n' % ('apache_beam' in sys.modules))); "
    "from beaminst.cli import main; main(sys.argv[1:], prog_name='beaminst')"
)


def _fresh_instrument(store_dir: str, out: Path, cache: Path, name: str = "wordcount") -> bool:
    """``beaminst instrument`` of fixture ``name`` in a new interpreter; whether it imported the SDK."""
    with environ({"BEAMINST_TEMPLATE_CACHE": store_dir}):
        r = run_python("-c", _CLI_REPORTING_SDK, "instrument", fixture_pb(name), "-m", fixture_manifest(name),
                       "--cache-dir", str(cache), "-o", str(out))
    assert r.returncode == 0, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("SDK-IMPORTED="), r.stderr
    return last == "SDK-IMPORTED=True"


def test_a_second_process_finds_every_template_and_never_imports_the_sdk(tmp_path):
    st, cache = tmp_path / "store", tmp_path / "cache"
    assert _fresh_instrument(str(st), tmp_path / "1.pb", cache)  # builds: the SDK is imported
    entries = sorted(p.name for p in st.iterdir())
    assert entries and all(e.endswith(store.SUFFIX) for e in entries)
    assert not _fresh_instrument(str(st), tmp_path / "2.pb", cache)
    assert sorted(p.name for p in st.iterdir()) == entries  # nothing rebuilt
    assert _fresh_instrument("off", tmp_path / "3.pb", cache)
    assert (tmp_path / "1.pb").read_bytes() == (tmp_path / "2.pb").read_bytes() == (tmp_path / "3.pb").read_bytes()


def test_store_off_and_the_default_location(tmp_path):
    with environ({"BEAMINST_TEMPLATE_CACHE": "off"}):
        assert store.store_root() is None and TemplateStore.open() is None
    saved = os.environ.pop("BEAMINST_TEMPLATE_CACHE")
    try:
        with environ({"XDG_CACHE_HOME": str(tmp_path / "xdg")}):
            assert store.store_root() == str(tmp_path / "xdg" / "beaminst" / "templates")
        with environ({"XDG_CACHE_HOME": "", "HOME": str(tmp_path / "home")}):
            assert store.store_root() == str(tmp_path / "home" / ".cache" / "beaminst" / "templates")
    finally:
        os.environ["BEAMINST_TEMPLATE_CACHE"] = saved


def test_the_key_names_beam_python_beaminst_source_and_what_the_caller_says(monkeypatch):
    depends = {"coder": "ab", "cache_dir": "/c"}
    base = TemplateStore.key("write", depends)
    assert TemplateStore.key("write", dict(depends)) == base
    assert TemplateStore.key("read", depends) != base
    assert TemplateStore.key("write", {**depends, "cache_dir": "/d"}) != base
    real = store.environment()
    for field, value in (("beam", "0.0.1"), ("python", "2.7"), ("source", "edited"), ("format", 0)):
        monkeypatch.setattr(store, "environment", lambda f=field, v=value: {**real, f: v})
        assert TemplateStore.key("write", depends) != base, field
    from importlib.metadata import version

    assert real["beam"] == version("apache-beam")
    assert real["python"] == f"{sys.version_info[0]}.{sys.version_info[1]}"


# -- in-process: which templates are built, and the bytes ------------------------------


class Builds:
    """Counts the templates the SDK builds (writes, reads, TestStreams)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from beaminst.graft import templates

        self.count = 0
        for name in ("write", "read", "test_stream"):
            monkeypatch.setattr(templates.Builder, name, self._counted(getattr(templates.Builder, name)))

    def _counted(self, original):
        def counted(builder, *a, **k):
            self.count += 1
            return original(builder, *a, **k)

        return counted


def _instrument(tmp_path: Path, out: str, name: str = "wordcount", *extra: str) -> bytes:
    grafter.forget_templates()  # as a new process: only the store remembers
    r = run_cli("instrument", fixture_pb(name), "-m", fixture_manifest(name), "--cache-dir", str(tmp_path / "cache"),
                "-o", str(tmp_path / out), *extra)
    assert r.exit_code == 0, r.stderr
    return (tmp_path / out).read_bytes()


@pytest.fixture
def filled(tmp_path, monkeypatch):
    """A store filled by one instrument of wordcount, with the bytes it gave and its entries' bytes."""
    root = tmp_path / "store"
    monkeypatch.setenv("BEAMINST_TEMPLATE_CACHE", str(root))
    builds = Builds(monkeypatch)
    reference = _instrument(tmp_path, "ref.pb")
    assert builds.count >= 2
    entries = {p: p.read_bytes() for p in sorted(root.iterdir())}
    assert _instrument(tmp_path, "warm.pb") == reference
    assert builds.count == len(entries)  # the warm run built nothing
    builds.count = 0
    return root, reference, entries, builds


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_body_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-200] ^= 0x01
    path.write_bytes(bytes(data))


def _flip_header_byte(path: Path) -> None:
    data = path.read_bytes()
    at = data.index(b'"key"') + 9  # inside the key the header names
    path.write_bytes(data[:at] + (b"0" if data[at:at + 1] != b"0" else b"1") + data[at + 1:])


def _garbage(path: Path) -> None:
    path.write_bytes(b"not an entry")


@pytest.mark.parametrize("damage", [_truncate, _flip_body_byte, _flip_header_byte, _garbage],
                         ids=["truncated", "body-byte", "header-byte", "garbage"])
def test_a_damaged_entry_is_rebuilt_and_replaced(filled, tmp_path, damage):
    root, reference, entries, builds = filled
    victim = next(iter(entries))
    damage(victim)
    assert _instrument(tmp_path, "again.pb") == reference
    assert builds.count == 1
    assert victim.read_bytes() == entries[victim]  # replaced by what a build writes


def test_an_entry_copied_under_another_key_is_not_used(filled, tmp_path):
    root, reference, entries, builds = filled
    a, b = list(entries)[:2]
    shutil.copyfile(a, b)
    assert _instrument(tmp_path, "again.pb") == reference
    assert builds.count == 1
    assert b.read_bytes() == entries[b]


def test_an_entry_others_can_write_is_not_used(filled, tmp_path):
    root, reference, entries, builds = filled
    victim = next(iter(entries))
    victim.chmod(0o666)
    assert _instrument(tmp_path, "again.pb") == reference
    assert builds.count == 1
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600  # replaced by beaminst's own


def test_an_entry_of_another_user_is_not_used(filled, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("only root can give a file to another user")
    root, reference, entries, builds = filled
    victim = next(iter(entries))
    os.chown(victim, 65534, 65534)
    assert _instrument(tmp_path, "again.pb") == reference
    assert builds.count == 1
    assert victim.stat().st_uid == os.geteuid()


@pytest.mark.parametrize("how", ["world-writable", "group-writable", "other-owner", "a-file"])
def test_a_directory_others_can_write_to_is_not_used_at_all(filled, tmp_path, how):
    root, reference, entries, builds = filled
    if how == "other-owner":
        if os.geteuid() != 0:
            pytest.skip("only root can give a directory to another user")
        os.chown(root, 65534, 65534)
    elif how == "a-file":
        shutil.rmtree(root)
        root.write_bytes(b"")
    else:
        root.chmod(0o777 if how == "world-writable" else 0o770)
    assert _instrument(tmp_path, "again.pb") == reference
    assert builds.count == len(entries)  # every template built, none loaded
    if how != "a-file":
        assert {p: p.read_bytes() for p in sorted(root.iterdir())} == entries  # and nothing written


def test_an_entry_above_the_size_cap_is_neither_written_nor_read(filled, tmp_path, monkeypatch):
    root, reference, entries, builds = filled
    monkeypatch.setattr(store, "MAX_ENTRY_BYTES", min(len(v) for v in entries.values()) - 1)
    assert _instrument(tmp_path, "again.pb") == reference
    assert builds.count == len(entries)
    fresh = tmp_path / "fresh"
    monkeypatch.setenv("BEAMINST_TEMPLATE_CACHE", str(fresh))
    _instrument(tmp_path, "again2.pb")
    assert not fresh.exists() or not list(fresh.iterdir())


def test_a_template_built_with_trusted_pickles_never_serves_a_run_without(tmp_path, monkeypatch):
    """A stored write stands for its pickles having passed the check, so one
    stored by a --trust-pickles run (which skips it) is not used by a run
    without: that run checks, and here the check refuses."""
    from beaminst.model import safepickle

    monkeypatch.setenv("BEAMINST_TEMPLATE_CACHE", str(tmp_path / "store"))
    _instrument(tmp_path, "trusted.pb", "wordcount", "--trust-pickles")
    assert list((tmp_path / "store").iterdir())

    def refuse(components, pc_id):
        raise safepickle.UntrustedPickleError(f"PCollection {pc_id!r}: refused by this test (--trust-pickles)")

    monkeypatch.setattr(safepickle, "check_pcollection", refuse)
    grafter.forget_templates()
    r = run_cli("instrument", fixture_pb("wordcount"), "-m", fixture_manifest("wordcount"),
                "--cache-dir", str(tmp_path / "cache"), "-o", str(tmp_path / "untrusted.pb"))
    assert r.exit_code == 2 and "refused by this test" in r.stderr


def test_the_source_digest_follows_the_template_building_code(tmp_path):
    """An edit to the code that builds templates is a new key: the stored ones are not reused."""
    probe = "from beaminst.graft import store; print(store.environment()['source'])"
    digests = []
    for name, edit in (("same", None), ("edited", "graft/templates.py"), ("other", "model/labels.py")):
        root = tmp_path / name
        shutil.copytree(REPO / "beaminst", root / "beaminst", ignore=shutil.ignore_patterns("__pycache__"))
        if edit:
            f = root / "beaminst" / edit
            f.write_text(f.read_text() + "\n# edited\n")
        r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=root,
                           env={**os.environ, "PYTHONPATH": str(root)}, timeout=120)
        assert r.returncode == 0, r.stderr
        digests.append(r.stdout.strip())
    assert digests[0] == store.environment()["source"]
    assert len(set(digests)) == 3



def test_the_source_digest_covers_every_module_the_builder_imports():
    """A module the template builder imports is part of what it builds (the
    reify's coder lives in graft/reified.py): an edit there must be a new key
    too, so it is among the sources digested."""
    import ast

    files = set()
    for node in ast.walk(ast.parse((REPO / "beaminst" / "graft" / "templates.py").read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "beaminst":
            base = node.module.removeprefix("beaminst").lstrip(".").replace(".", "/")
            for alias in node.names:  # from beaminst.graft import ipythonprobe: the module
                sub = f"{base}/{alias.name}.py".lstrip("/")
                files.add(sub if (REPO / "beaminst" / sub).exists() else f"{base}.py")
    files.discard("errors.py")  # messages only
    assert files and files <= set(store._SOURCES), sorted(files - set(store._SOURCES))

def test_stored_reads_and_test_streams_give_the_pinned_bytes(tmp_path, monkeypatch):
    """Every pinned output (writes, reads, TestStreams, background caching) from
    a cold store and then from the same store warm, this process's templates
    forgotten before each command: the same bytes both times."""
    import json

    from tests.pinned.outputs import PINNED, digests, environment, produce

    monkeypatch.setenv("BEAMINST_TEMPLATE_CACHE", str(tmp_path / "store"))
    builds = Builds(monkeypatch)

    def cli(*args: str) -> tuple[int, str]:
        grafter.forget_templates()
        r = run_cli(*args)
        return r.exit_code, r.stdout

    cold = produce(cli, tmp_path / "cold")
    assert builds.count and any(n.name.endswith(store.SUFFIX) for n in (tmp_path / "store").iterdir())
    builds.count = 0
    warm = produce(cli, tmp_path / "warm")
    assert builds.count == 0
    assert warm == cold
    pinned = json.loads(PINNED.read_text())
    if environment() == pinned["environment"]:
        assert {k: v["content"] for k, v in digests(warm).items()} == {k: v["content"] for k, v in pinned["outputs"].items()}


# -- concurrency and the cap ---------------------------------------------------------


def _sample(tmp_path: Path):
    """A real write template, built once."""
    from beaminst.graft import Grafter
    from beaminst.model.protoio import load_pipeline

    proto, _ = load_pipeline(fixture_pb("wordcount"))
    pc = sorted(proto.components.pcollections)[-1]
    return Grafter(proto, str(tmp_path / "cache"), False).build_write(pc, "ZZZZZZZZZZ-" + "Z" * 16, False)


def _write_loop(root: str, key: str, data: bytes, n: int) -> None:
    st = TemplateStore(root)
    for _ in range(n):
        st._save_bytes(key, data)


def test_concurrent_writers_never_expose_a_partial_entry(tmp_path):
    sub = _sample(tmp_path)
    root = str(tmp_path / "store")
    st = TemplateStore(root)
    key = TemplateStore.key("write", {"test": "concurrent"})
    data = store.encode(key, sub)
    st._save_bytes(key, data)
    ctx = multiprocessing.get_context("spawn")
    writers = [ctx.Process(target=_write_loop, args=(root, key, data, 150)) for _ in range(3)]
    for w in writers:
        w.start()
    seen = 0
    while any(w.is_alive() for w in writers):
        assert st.load(key) is not None  # a reader between two writers still sees a whole entry
        seen += 1
    for w in writers:
        w.join()
        assert w.exitcode == 0
    assert seen > 0
    assert [p.name for p in Path(root).iterdir()] == [key + store.SUFFIX]  # no temporary file left
    assert st.load(key).proto == sub.proto


def test_the_store_keeps_the_most_recently_used_entries(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "MAX_ENTRIES", 3)
    sub = _sample(tmp_path)
    root = tmp_path / "store"
    st = TemplateStore(str(root))
    keys = [TemplateStore.key("write", {"n": i}) for i in range(5)]
    for i, k in enumerate(keys[:3]):
        st.save(k, sub)
        os.utime(root / (k + store.SUFFIX), (1000 + i, 1000 + i))
    assert st.load(keys[0]) is not None  # used now: the most recent
    stale = root / ".tmp-left-by-a-killed-writer.tpl.part"
    stale.write_bytes(b"x")
    os.utime(stale, (1, 1))
    st.save(keys[3], sub)
    st.save(keys[4], sub)
    assert sorted(p.name for p in root.iterdir()) == sorted(k + store.SUFFIX for k in (keys[0], keys[3], keys[4]))


def test_entries_are_protos_and_json_never_pickles(tmp_path):
    sub = _sample(tmp_path)
    key = TemplateStore.key("write", {"test": "format"})
    data = store.encode(key, sub)
    assert data.startswith(store.MAGIC)
    assert b"\x80\x04\x95" not in data[: data.index(b"}") + 1]  # the header is JSON
    import json

    size = int.from_bytes(data[len(store.MAGIC):len(store.MAGIC) + 4], "big")
    header = json.loads(data[len(store.MAGIC) + 4:len(store.MAGIC) + 4 + size])
    assert header["key"] == key and header["body_bytes"] == len(data) - len(store.MAGIC) - 4 - size
    assert str(REPO) not in data.decode("latin-1")  # nothing of where beaminst is installed


def test_an_entry_naming_a_transform_its_body_lacks_is_not_trusted(filled):
    """An entry whose digest holds but whose top-level transform is not in
    its body (a bug that wrote it, not damage): a protobuf map would make up
    an empty transform for the missing id; the entry is refused instead."""
    import dataclasses
    import json

    _root, _reference, entries, _builds = filled
    data = next(iter(entries.values()))
    start = len(store.MAGIC) + 4
    key = json.loads(data[start : start + int.from_bytes(data[len(store.MAGIC) : start], "big")])["key"]
    sub = store._decode(data, key)
    assert sub is not None
    assert store._decode(store.encode(key, sub), key) is not None
    bad = dataclasses.replace(sub, top=("missing",))
    assert store._decode(store.encode(key, bad), key) is None
    assert "missing" not in bad.proto.components.transforms


def _entry_parts(data: bytes) -> tuple[dict, bytes]:
    import json

    start = len(store.MAGIC) + 4
    size = int.from_bytes(data[len(store.MAGIC) : start], "big")
    return json.loads(data[start : start + size]), data[start + size :]


def _reencoded(header: dict, body: bytes) -> bytes:
    """An entry of ``header``'s facts over ``body`` with a digest that holds
    (what a bug, not damage, would write)."""
    import json

    header = {**header, "sha256": store._digest(header["key"], header["piece"], body)}
    raw = json.dumps(header, sort_keys=True).encode()
    return store.MAGIC + len(raw).to_bytes(4, "big") + raw + body


def test_a_stored_write_keeps_what_its_first_graft_would_derive(filled, tmp_path, monkeypatch):
    """An entry keeps the coders and transforms its key sits in, and the bz2
    pieces each keyed pickle is cut into: a process's first graft of a stored
    template neither inflates its bz2 pickles nor compresses them at level 9
    (what made a batch worker's first file cost twice its later ones), and
    the output is the same bytes."""
    from beaminst.graft import pickles

    _root, reference, entries, builds = filled
    writes = [_entry_parts(d)[0]["piece"] for d in entries.values()]
    assert any(w["pickle_pieces"] for w in writes) and all(w["rewrite_sites"] for w in writes)
    for w in writes:
        assert set(w["pickle_pieces"]) <= set(w["rewrite_sites"])
        assert all(len(pieces) >= 2 for pieces in w["pickle_pieces"].values())
    inflated, compressed = [], []
    real_decompress, real_compress = pickles._decompress, pickles._compress
    monkeypatch.setattr(pickles, "_decompress", lambda raw: inflated.append(raw[:3]) or real_decompress(raw))
    monkeypatch.setattr(pickles, "_compress", lambda data, method, level=9: compressed.append((method, level))
                        or real_compress(data, method, level))
    pickles._PIECES.clear()
    pickles._open.cache_clear()
    assert _instrument(tmp_path, "stored.pb") == reference
    assert builds.count == 0
    assert b"BZh" not in inflated, inflated
    assert ("bz2", 9) not in compressed and ("bz2", 1) in compressed


def _with_facts(data: bytes, **facts) -> bytes:
    header, body = _entry_parts(data)
    return _reencoded({**header, "piece": {**header["piece"], **facts}}, body)


def test_an_entry_whose_kept_facts_do_not_fit_its_body_is_not_trusted(filled):
    """What an entry keeps beside its body (keyed coders, rewrite sites,
    pickle pieces) must name what the body holds and be bz2 streams of a
    site's pickled function; otherwise the entry is refused (and rebuilt)."""
    _root, _reference, entries, _builds = filled
    data = next(d for d in entries.values() if _entry_parts(d)[0]["piece"]["pickle_pieces"])
    header, _body = _entry_parts(data)
    key, facts = header["key"], header["piece"]
    assert store._decode(_reencoded(header, _body), key) is not None  # the re-encoding itself is sound
    site, pieces = next(iter(facts["pickle_pieces"].items()))
    not_a_site = next(t for t in facts["top"] if t not in facts["rewrite_sites"]) if set(facts["top"]) - set(
        facts["rewrite_sites"]) else "missing"
    import base64

    for bad in (
        {"key_coders": [*facts["key_coders"], "no_such_coder"]},
        {"rewrite_sites": [*facts["rewrite_sites"], "no_such_transform"]},
        {"pickle_pieces": {not_a_site: pieces}},
        {"pickle_pieces": {site: pieces[:1]}},
        {"pickle_pieces": {site: [base64.b64encode(b"not bz2").decode(), *pieces[1:]]}},
        {"pickle_pieces": {site: ["!not base64!", *pieces[1:]]}},
        {"pickle_pieces": [pieces]},
        {"rewrite_sites": "not a list"},
    ):
        assert store._decode(_with_facts(data, **bad), key) is None, bad
