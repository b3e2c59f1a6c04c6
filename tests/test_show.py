"""``beaminst show``: the cached elements of bound variables, in every format,
from both of Beam's layouts, read by a process that did not write them.

Fast tests write the caches the way Beam does (shards: bz2 text of base64
lines of WindowedValues encoded with the written coder; recordings: Beam's
StreamingCache.write of TestStream file records whose elements are
SafeFastPrimitivesCoder-encoded WindowedValueHolders). Slow tests make them by
running the instrumented and background-caching protos on the DirectRunner.
"""

from __future__ import annotations

import base64
import bz2
import json
import os
import pickle
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import apache_beam as beam
import pytest
from apache_beam.portability.api import beam_interactive_api_pb2 as iapi
from apache_beam.portability.api import beam_runner_api_pb2 as rapi
from apache_beam.runners.interactive.cache_manager import SafeFastPrimitivesCoder
from apache_beam.runners.interactive.caching.streaming_cache import StreamingCache
from apache_beam.testing.test_stream import WindowedValueHolder
from apache_beam.transforms import window
from apache_beam.transforms.window import GlobalWindow, IntervalWindow
from apache_beam.utils.windowed_value import PaneInfo, PaneInfoTiming, WindowedValue
from conftest import (
    fixture_manifest,
    fixture_pb,
    run_cli,
    run_cli_in_terminal,
    run_cli_subprocess,
    run_python,
)

import beaminst
from beaminst.commands.api import analyze_files
from beaminst.model.protoio import load_pipeline
from beaminst.options import SourceRules
from fixtures import pipelines as fp

TEST_STREAM_URN = "beam:transform:teststream:v1"
ON_TIME = PaneInfo(True, True, PaneInfoTiming.ON_TIME, 0, 0)
PANE_JSON = {"is_first": True, "is_last": True, "timing": "UNKNOWN", "index": 0, "nonspeculative_index": 0}


# --- writing caches as Beam does ---------------------------------------------------------


def var_key(pb: str, man: str | None, var: str, urns: tuple[str, ...] = ()) -> tuple[str, str]:
    a = analyze_files(pb, man, None, SourceRules(urns))
    (c,) = [c for c in a.cacheables.values() if c.var == var]
    return c.pcollection, c.cache_key


def write_shards(pb: str, man: str, var: str, cache: Path, values: list, shards: int = 1) -> str:
    """``values`` (WindowedValues, or plain values in the global window) as
    WriteCache leaves them: ``shards`` contiguous bz2 text shards."""
    from beaminst.graft import Grafter

    pc, key = var_key(pb, man, var)
    proto, _ = load_pipeline(pb)
    pcoder = Grafter(proto, str(cache), streaming=False).written_pcoder(pc)
    wvs = [v if isinstance(v, WindowedValue) else WindowedValue(v, i, [GlobalWindow()]) for i, v in enumerate(values)]
    (cache / "full").mkdir(parents=True, exist_ok=True)
    per = -(-len(wvs) // shards) if wvs else 0
    for i in range(shards):
        chunk = wvs[i * per:(i + 1) * per]
        data = b"".join(base64.b64encode(pcoder.encode(wv)) + b"\n" for wv in chunk)
        (cache / "full" / f"{key}-{i:05d}-of-{shards:05d}").write_bytes(bz2.compress(data))
    return key


def record(cache: Path, key: str, wvs: list[WindowedValue], per_record: int = 2) -> None:
    """What a StreamingCache sink leaves behind: a header, then element events
    (``per_record`` elements each) with watermark events between them."""
    coder = SafeFastPrimitivesCoder()
    records = [iapi.TestStreamFileHeader(tag=key)]
    for i in range(0, len(wvs), per_record):
        elements = [
            rapi.TestStreamPayload.TimestampedElement(
                encoded_element=coder.encode(WindowedValueHolder(wv)), timestamp=wv.timestamp.micros
            )
            for wv in wvs[i:i + per_record]
        ]
        records.append(iapi.TestStreamFileRecord(recorded_event=rapi.TestStreamPayload.Event(
            element_event=rapi.TestStreamPayload.Event.AddElements(elements=elements, tag=key))))
        records.append(iapi.TestStreamFileRecord(recorded_event=rapi.TestStreamPayload.Event(
            watermark_event=rapi.TestStreamPayload.Event.AdvanceWatermark(new_watermark=wvs[i].timestamp.micros,
                                                                          tag=key))))
    StreamingCache(str(cache)).write(records, "full", key)


def wordcount_cache(tmp_path: Path) -> Path:
    cache = tmp_path / "cache"
    pb, man = fixture_pb("wordcount"), fixture_manifest("wordcount")
    write_shards(pb, man, "words", cache, ["to", "be", "or\tnot", "é"], shards=2)
    write_shards(pb, man, "counts", cache, [("to", 2), ("be", 2)])
    return cache


def windowing_cache(tmp_path: Path) -> Path:
    cache = tmp_path / "wcache"
    values = [WindowedValue(x, x, [IntervalWindow(x // 5 * 5, x // 5 * 5 + 5)]) for x in (3, 7)]
    write_shards(fixture_pb("windowing"), fixture_manifest("windowing"), "windowed", cache, values)
    return cache


PUBSUB = (fixture_pb("pubsub_one"), fixture_manifest("pubsub_one"))


def pubsub_cache(tmp_path: Path) -> tuple[Path, str]:
    """A recording for the synthetic source variable (bytes) and for 'windowed' (str, fixed windows)."""
    cache = tmp_path / "scache"
    a = analyze_files(*PUBSUB)
    (synthetic,) = [c for c in a.cacheables.values() if c.synthetic]
    record(cache, synthetic.cache_key, [WindowedValue(b, (i + 1), [GlobalWindow()]) for i, b in
                                        enumerate([b"hi", b"\x00\xff", b"there"])])
    _, key = var_key(*PUBSUB, "windowed")
    record(cache, key, [WindowedValue(s, t, [IntervalWindow(t // 10 * 10, t // 10 * 10 + 10)], ON_TIME)
                        for s, t in [("a", 1), ("b", 2), ("c", 12)]])
    return cache, synthetic.var


def show(*args: str, cache: Path, pb: str = fixture_pb("wordcount"), man: str = fixture_manifest("wordcount")):
    return run_cli("show", pb, "-m", man, "--cache-dir", str(cache), *args)


def json_lines(text: str) -> list:
    return [json.loads(line) for line in text.splitlines()]


# --- bounded: FileBasedCacheManager shards ------------------------------------------------


def test_shards_plain_lines_escape_and_prefix_several_variables(tmp_path):
    cache = wordcount_cache(tmp_path)
    one = show("words", cache=cache)
    assert one.exit_code == 0, one.stderr
    assert one.stdout == "to\nbe\nor\\tnot\né\n"  # both shards, in order; a tab escaped
    assert one.stderr == ""
    two = show("words", "counts", cache=cache)
    assert two.stdout.splitlines() == [
        "words\tto", "words\tbe", "words\tor\\tnot", "words\té", "counts\tto\t2", "counts\tbe\t2"
    ]


def test_a_file_named_as_a_batch_key_is_no_cache(tmp_path):
    """A batch pipeline's caches are shard sets: a file ``full/<key>`` (a
    StreamingCache recording's name) is nothing its writes make. Shown as a
    cache of nothing, exit 0, where analyze said missing."""
    cache = tmp_path / "cache"
    (cache / "full").mkdir(parents=True)
    _, key = var_key(fixture_pb("wordcount"), fixture_manifest("wordcount"), "words")
    (cache / "full" / key).write_bytes(b"")
    r = show("words", cache=cache)
    assert r.exit_code == 2 and "'words' has no cache" in r.stderr and r.stdout == "", r.stderr
    analysis = analyze_files(fixture_pb("wordcount"), fixture_manifest("wordcount"), str(cache))
    assert not [c for c in analysis.cacheables.values() if c.var == "words"][0].cached


def test_no_variable_named_shows_every_cached_one(tmp_path):
    """No VAR: every variable with a cache, in manifest order (what run's next
    step leads to); the uncached ones named in one note."""
    cache = wordcount_cache(tmp_path)
    every = show(cache=cache)
    assert every.exit_code == 0, every.stderr
    names = json.loads(Path(fixture_manifest("wordcount")).read_text())["bindings"]
    cached = [n for n in names if n in ("words", "counts")]
    assert [line.split("\t")[0] for line in every.stdout.splitlines()] == [
        n for n in cached for _ in range(4 if n == "words" else 2)
    ]
    assert every.stdout == show(*cached, cache=cache).stdout
    assert every.stderr.splitlines() == [f"beaminst: {cache}: not shown, no cache: {', '.join(n for n in names if n not in cached)}"]
    csv = show("--csv", cache=cache)
    assert csv.exit_code == 2 and "--csv writes one table: name one VAR" in csv.stderr
    nothing = show(cache=tmp_path / "empty")
    assert nothing.exit_code == 2 and "'counts', 'formatted', 'lines', 'words' have no cache" in nothing.stderr


def test_shards_json_csv_and_window_info(tmp_path):
    cache = wordcount_cache(tmp_path)
    assert json_lines(show("counts", "--json", cache=cache).stdout) == [["to", 2], ["be", 2]]
    assert json_lines(show("words", "counts", "--json", cache=cache).stdout)[3:] == [
        {"variable": "words", "value": "é"},
        {"variable": "counts", "value": ["to", 2]},
        {"variable": "counts", "value": ["be", 2]},
    ]
    assert show("counts", "--csv", cache=cache).stdout == "0,1\nto,2\nbe,2\n"
    assert show("words", "--csv", cache=cache).stdout.splitlines()[:4] == ["value", "to", "be", "or\tnot"]

    w = windowing_cache(tmp_path)
    args = dict(cache=w, pb=fixture_pb("windowing"), man=fixture_manifest("windowing"))
    lines = json_lines(show("windowed", "--json", "--include-window-info", **args).stdout)
    assert lines == [
        {"value": 3, "event_time": 3_000_000, "windows": [{"start": 0, "end": 5_000_000}], "pane_info": PANE_JSON},
        {"value": 7, "event_time": 7_000_000, "windows": [{"start": 5_000_000, "end": 10_000_000}],
         "pane_info": PANE_JSON},
    ]
    plain = show("windowed", "--include-window-info", **args).stdout.splitlines()
    assert plain[0] == "3\t3000000\t[[0.0, 5.0)]\t" + repr(PaneInfo(True, True, PaneInfoTiming.UNKNOWN, 0, 0))
    csv = show("windowed", "--csv", "--include-window-info", **args).stdout.splitlines()
    assert csv[0] == "value,event_time,windows,pane_info"
    assert csv[1].startswith('3,3000000,"[[0.0, 5.0)]",')


# --- streaming: StreamingCache recordings -------------------------------------------------


def test_recordings_in_every_format(tmp_path):
    cache, synthetic = pubsub_cache(tmp_path)
    args = dict(cache=cache, pb=PUBSUB[0], man=PUBSUB[1])
    plain = show("windowed", **args)
    assert plain.exit_code == 0, plain.stderr
    assert plain.stdout == "a\nb\nc\n"
    assert show(synthetic, **args).stdout == "b'hi'\nb'\\x00\\xff'\nb'there'\n"
    assert json_lines(show(synthetic, "--json", **args).stdout) == [
        {"$bytes": base64.b64encode(b).decode()} for b in (b"hi", b"\x00\xff", b"there")
    ]
    windowed = json_lines(show("windowed", "--json", "--include-window-info", **args).stdout)
    assert [(x["value"], x["event_time"], x["windows"]) for x in windowed] == [
        ("a", 1_000_000, [{"start": 0, "end": 10_000_000}]),
        ("b", 2_000_000, [{"start": 0, "end": 10_000_000}]),
        ("c", 12_000_000, [{"start": 10_000_000, "end": 20_000_000}]),
    ]
    assert windowed[0]["pane_info"]["timing"] == "ON_TIME"
    assert show("windowed", "--csv", **args).stdout == "value\na\nb\nc\n"
    both = show("windowed", synthetic, **args).stdout.splitlines()
    assert both[0] == "windowed\ta" and both[-1] == f"{synthetic}\tb'there'"


def test_a_recording_cut_mid_record_is_said_by_show_analyze_and_instrument(tmp_path):
    """Beam's StreamingCache reader, and beaminst's, stop at a last line with
    no newline (a record still being written): a recording cut there (a
    cancelled job, a full disk) replays shorter. It is no error (the records
    before it are whole), but show, analyze and instrument each say it."""
    cache, _ = pubsub_cache(tmp_path)
    _, key = var_key(*PUBSUB, "windowed")
    path = cache / "full" / key
    whole = path.read_bytes()
    args = dict(cache=cache, pb=PUBSUB[0], man=PUBSUB[1])
    assert show("windowed", **args).stderr == ""
    last = whole.rstrip(b"\n").rfind(b"\n") + 1
    path.write_bytes(whole[: last + (len(whole) - last) // 2])  # the last record, half written
    r = show("windowed", **args)
    assert r.exit_code == 0, r.stderr
    assert r.stdout == "a\nb\nc\n"  # the cut record was a watermark event
    note = f"full/{key}: the recording ends in a partial record (cut short, or still being written): it replays without it"
    assert note in r.stderr, r.stderr
    analyzed = run_cli("analyze", PUBSUB[0], "-m", PUBSUB[1], "--cache-dir", str(cache), "--json")
    assert note in json.loads(analyzed.stdout)["cache_problems"]
    out = tmp_path / "o.pb"
    instrumented = run_cli("instrument", PUBSUB[0], "-m", PUBSUB[1], "--cache-dir", str(cache), "-o", str(out), "--json")
    assert instrumented.exit_code == 0, instrumented.stderr
    assert f"cache: {note}" in json.loads(instrumented.stdout)["warnings"]
    path.write_bytes(whole)
    assert show("windowed", **args).stderr == ""
    path.write_bytes(whole[: whole.find(b"\n") // 2])  # not even the header: nothing recorded, said otherwise
    assert note not in run_cli("analyze", PUBSUB[0], "-m", PUBSUB[1], "--cache-dir", str(cache), "--json").stdout
    path.write_bytes(whole)
    (cache / "full" / "notes.txt").write_bytes(b"a stray file\nwith no newline at its end")  # not a recording
    problems = json.loads(run_cli("analyze", PUBSUB[0], "-m", PUBSUB[1], "--cache-dir", str(cache), "--json").stdout)
    assert problems["cache_problems"] == [], problems["cache_problems"]


def _show_in_terminal(args: list[str]) -> str:
    """``beaminst show ARGS`` with stdout on a pseudo-terminal (a new process)."""
    code, out, err = run_cli_in_terminal("show", *args)
    assert code == 0, err
    return out


def _parallel(*calls):
    with ThreadPoolExecutor(len(calls)) as pool:
        return [f.result() for f in [pool.submit(*c) for c in calls]]


def test_both_layouts_from_another_process_plain_json_and_the_terminal_table(tmp_path):
    bounded = wordcount_cache(tmp_path)
    recorded, _ = pubsub_cache(tmp_path)
    wc = [fixture_pb("wordcount"), "-m", fixture_manifest("wordcount"), "--cache-dir", str(bounded)]
    ps = [PUBSUB[0], "-m", PUBSUB[1], "--cache-dir", str(recorded)]
    plain, js, table_b, table_r = _parallel(
        (run_cli_subprocess, "show", *wc, "counts"),
        (run_cli_subprocess, "show", *ps, "windowed", "--json", "--include-window-info"),
        (_show_in_terminal, [*wc, "words", "counts", "--limit", "3"]),
        (_show_in_terminal, [*ps, "windowed", "--include-window-info"]),
    )
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == "to\t2\nbe\t2\n"
    assert [x["value"] for x in json_lines(js.stdout)] == ["a", "b", "c"]
    assert "words (FileBasedCacheManager shards)" in table_b and "3 of 4 elements" in table_b
    assert "counts (FileBasedCacheManager shards)" in table_b and "2 elements" in table_b
    assert "or\\tnot" in table_b and "┃" in table_b  # a rich table, the tab escaped
    assert "windowed (StreamingCache recording)" in table_r
    assert "[[10.0, 20.0)]" in table_r and "3 elements" in table_r


# --- --limit and the total ------------------------------------------------------------------


def test_limit_counts_the_total_in_both_layouts(tmp_path):
    cache = tmp_path / "cache"
    pb, man = fixture_pb("wordcount"), fixture_manifest("wordcount")
    write_shards(pb, man, "words", cache, [f"w{i}" for i in range(45)], shards=3)
    limited = show("words", "--limit", "7", cache=cache)
    assert limited.stdout.splitlines() == [f"w{i}" for i in range(7)]
    assert limited.stderr == "beaminst: words: showed 7 of 45 elements (--limit)\n"
    assert show("words", "--limit", "0", cache=cache).stderr == "beaminst: words: showed 0 of 45 elements (--limit)\n"
    everything = show("words", "--json", cache=cache)
    assert len(everything.stdout.splitlines()) == 45 and everything.stderr == ""

    # The table's default limit is 20, with the total in the caption.
    from rich.console import Console

    from beaminst.commands import showformat
    from beaminst.commands.show import plan_show, write_show

    console = Console(record=True, width=120)
    plan = plan_show(pb, man, str(cache), ["words"])
    write_show(plan, showformat.TABLE, 20, False, False, sys.stdout, lambda: console, print)
    text = console.export_text()
    assert "20 of 45 elements" in text and "w19" in text and "w20" not in text

    scache = tmp_path / "scache"
    _, key = var_key(*PUBSUB, "decoded")
    record(scache, key, [WindowedValue(f"e{i}", i, [GlobalWindow()]) for i in range(25)], per_record=4)
    r = show("decoded", "--limit", "3", cache=scache, pb=PUBSUB[0], man=PUBSUB[1])
    assert r.stdout == "e0\ne1\ne2\n" and "showed 3 of 25 elements" in r.stderr


def test_counting_holds_nothing(tmp_path):
    """Counting a large cache past the limit decodes nothing and holds nothing."""
    import tracemalloc

    from beaminst.commands.elements import SHARDS, CachedElements

    (tmp_path / "full").mkdir()
    line = base64.b64encode(b"x" * 60) + b"\n"
    with bz2.open(tmp_path / "full" / "k-00000-of-00001", "wb") as f:
        for _ in range(200_000):  # 16 MB of lines
            f.write(line)
    decoded = []
    elements = CachedElements(SHARDS, str(tmp_path), ("full/k-00000-of-00001",), lambda b: decoded.append(b) or b)
    tracemalloc.start()
    shown = list(elements.take(5))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(shown) == 5 and len(decoded) == 5 and elements.total == 200_000
    assert peak < 4 << 20, peak


def test_a_shard_bomb_stops_counting_and_refuses_to_decode_past_the_cap(tmp_path, monkeypatch):
    """A few KB of bz2 inflate to gigabytes of valid lines: constant memory is
    not enough, counting them would take minutes. Past the cap, counting stops
    (the total is a lower bound, and says so) and decoding refuses."""
    from beaminst.commands import elements

    cache = tmp_path / "cache"
    pb, man = fixture_pb("wordcount"), fixture_manifest("wordcount")
    key = write_shards(pb, man, "words", cache, ["w"])
    line = bz2.decompress((cache / "full" / f"{key}-00000-of-00001").read_bytes())
    bomb = bz2.compress(line * 1_000_000)  # 9 MB of lines in a few KB
    assert len(bomb) < 10_000
    (cache / "full" / f"{key}-00000-of-00001").write_bytes(bomb)
    monkeypatch.setattr(elements, "MAX_SHARD_BYTES", 1 << 20)
    per_line = len(line)

    limited = show("words", "--limit", "3", cache=cache)
    assert limited.exit_code == 0 and limited.stdout == "w\nw\nw\n"
    counted = (1 << 20) // per_line
    assert limited.stderr == (
        f"beaminst: words: showed 3 of at least {counted} elements "
        "(--limit; counting stopped at BEAMINST_MAX_SHARD_BYTES of inflated shards)\n"
    )

    everything = show("words", "--json", cache=cache)
    assert everything.exit_code == 2
    assert everything.stderr.splitlines()[-1] == (
        f"beaminst: {cache}: words: full/{key}-00000-of-00001: the shards decompress to more than {1 << 20} bytes "
        f"before element {counted} (a few KB of bz2 can inflate to gigabytes; BEAMINST_MAX_SHARD_BYTES raises the cap)"
    )

    from rich.console import Console

    from beaminst.commands import showformat
    from beaminst.commands.show import plan_show, write_show

    console = Console(record=True, width=120)
    write_show(plan_show(pb, man, str(cache), ["words"]), showformat.TABLE, 20, False, False, sys.stdout,
               lambda: console, print)
    assert f"20 of at least {counted:,} elements (counting stopped at BEAMINST_MAX_SHARD_BYTES" in console.export_text()


def test_the_library_reader_keeps_shows_caps(tmp_path, monkeypatch):
    """cacheread.read_cached_values, the library's list of a cache, reads as
    show does: a shard bomb stops at BEAMINST_MAX_SHARD_BYTES (it went
    through Beam's reader, which inflates everything) and good shards give
    their values."""
    from beaminst.commands import elements
    from beaminst.commands.cacheread import read_cached_values
    from beaminst.errors import CacheDirError

    cache = tmp_path / "cache"
    pb, man = fixture_pb("wordcount"), fixture_manifest("wordcount")
    key = write_shards(pb, man, "words", cache, ["w", "x"])
    proto, _ = load_pipeline(pb)
    pc = var_key(pb, man, "words")[0]
    assert read_cached_values(proto, pc, str(cache), key) == ["w", "x"]
    assert read_cached_values(proto, pc, str(cache), "0000000000-no-such-key") == []
    shard = cache / "full" / f"{key}-00000-of-00001"
    shard.write_bytes(bz2.compress(bz2.decompress(shard.read_bytes()) * 500_000))
    monkeypatch.setattr(elements, "MAX_SHARD_BYTES", 1 << 20)
    with pytest.raises(CacheDirError, match="the shards decompress to more than 1048576 bytes"):
        read_cached_values(proto, pc, str(cache), key)


# --- no cache, unknown variables, usage ----------------------------------------------------


def test_show_given_the_instrumented_pipeline_asks_for_the_original(tmp_path):
    """A plausible mix-up: the instrumented proto where the original goes.
    Its keys are not the original's, and instrumenting it again is not the
    fix (the hint said so before)."""
    cache = wordcount_cache(tmp_path)
    out = tmp_path / "wc.instrumented.pb"
    pb, man = fixture_pb("wordcount"), fixture_manifest("wordcount")
    assert run_cli("instrument", pb, "-m", man, "--cache-dir", str(cache), "-o", str(out)).exit_code == 0
    r = show("counts", cache=cache, pb=str(out))
    assert r.exit_code == 2 and r.stdout == "" and r.stderr.count("\n") == 1
    assert "holds beaminst's cache transforms: show takes the pipeline that was instrumented" in r.stderr
    assert "beaminst instrument" not in r.stderr
    assert show("counts", cache=cache).exit_code == 0  # the original finds it
    # A read pass prunes what the manifest binds upstream: the manifest no
    # longer resolves against it, and the hint is the same.
    doc = json.loads(open(man).read())
    doc["computed"] = ["counts"]
    computed = tmp_path / "computed.json"
    computed.write_text(json.dumps(doc))
    read = tmp_path / "wc.read.pb"
    assert run_cli("instrument", pb, "-m", str(computed), "--cache-dir", str(cache), "-o", str(read)).exit_code == 0
    r = show("counts", cache=cache, pb=str(read))
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "does not exist" in r.stderr and "show takes the pipeline that was instrumented (the original)" in r.stderr


def test_no_cache_says_how_to_make_one(tmp_path):
    pb, man = fixture_pb("wordcount"), fixture_manifest("wordcount")
    none = show("words", "counts", cache=tmp_path / "empty")
    assert none.exit_code == 2 and none.stdout == ""
    assert none.stderr.count("\n") == 1
    assert "'words', 'counts' have no cache" in none.stderr
    assert f"beaminst instrument {pb} -m {man} --cache-dir {tmp_path / 'empty'} -o " in none.stderr
    assert "&& beaminst run " in none.stderr

    cache = tmp_path / "cache"
    write_shards(pb, man, "words", cache, ["to"])
    some = show("words", "counts", cache=cache)
    assert some.exit_code == 0 and some.stdout == "words\tto\n"
    assert some.stderr.count("\n") == 1 and "'counts' has no cache" in some.stderr

    # A partial shard set (a crashed write) is no cache, and says so.
    _, key = var_key(pb, man, "counts")
    (cache / "full" / f"{key}-00000-of-00002").write_bytes(bz2.compress(b""))
    partial = show("counts", cache=cache)
    assert partial.exit_code == 2 and "only a partial shard set" in partial.stderr

    # A source output of a streaming pipeline is recorded by the background caching job.
    a = analyze_files(*PUBSUB)
    (synthetic,) = [c.var for c in a.cacheables.values() if c.synthetic]
    streaming = show(synthetic, "decoded", cache=tmp_path / "empty", pb=PUBSUB[0], man=PUBSUB[1])
    assert streaming.exit_code == 2 and streaming.stderr.count("\n") == 1
    assert "beaminst background-caching " in streaming.stderr and f"(records {synthetic})" in streaming.stderr
    assert "beaminst instrument " in streaming.stderr and "(writes decoded)" in streaming.stderr


def test_unknown_variable_suggests_the_closest(tmp_path):
    cache = wordcount_cache(tmp_path)
    r = show("wrods", cache=cache)
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert "no variable 'wrods'; did you mean 'words'?" in r.stderr
    assert fixture_manifest("wordcount") in r.stderr and "counts, formatted, lines, words" in r.stderr
    far = show("zzz", cache=cache)
    assert "did you mean" not in far.stderr
    streaming = show("synthetic_var_x", cache=cache, pb=PUBSUB[0], man=PUBSUB[1])
    assert "did you mean 'synthetic_var_" in streaming.stderr and "synthetic source variables:" in streaming.stderr


def test_usage_errors(tmp_path):
    cache = wordcount_cache(tmp_path)
    for args, message in [
        (["words", "--json", "--csv"], "--json and --csv are exclusive"),
        (["words", "counts", "--csv"], "--csv writes one table"),
        (["words", "--limit", "-1"], "--limit"),
    ]:
        r = show(*args, cache=cache)
        assert r.exit_code == 2 and message in r.stderr, (args, r.stderr)
    no_dir = run_cli("show", fixture_pb("wordcount"), "-m", fixture_manifest("wordcount"), "words")
    assert no_dir.exit_code == 2 and "needs --cache-dir" in no_dir.stderr
    no_var = run_cli("show", fixture_pb("wordcount"), "--cache-dir", str(cache))
    assert no_var.exit_code == 2 and no_var.stderr.splitlines() == [
        f"beaminst: {fixture_pb('wordcount')}: no variables to show: no manifest given (pass -m MANIFEST, and VAR... to choose)"
    ]
    assert show("words", "words", cache=cache).stdout == "to\nbe\nor\\tnot\né\n"  # asked twice, shown once


def test_help_has_examples():
    r = run_cli("show", "--help")
    assert r.exit_code == 0 and "beaminst show wordcount.pb" in r.stdout and "--include-window-info" in r.stdout


# --- damaged caches: one line, exit 2 -------------------------------------------------------


# WindowedValues in the global window holding a 1-tuple of bytes whose length
# claims 16 MiB (Beam's compiled decoder segfaults or reads 16 MiB past it), or 1024 bytes of which
# none are there (it returns 1024 bytes of process memory).
_HEADER = b"\x00" * 8 + b"\x00\x00\x00\x01\x0f" + b"\x06\x01\x03"
OUT_OF_BOUNDS, HEAP_LEAK = _HEADER + b"\xff\xff\xff\x07", _HEADER + b"\x80\x08"


def test_show_says_what_analyze_says_of_the_cache_directory(tmp_path):
    """The full/ directory given for its parent is the error (not "no cache");
    leftovers of a failed write are a warning line while the rest shows."""
    pb, man = fixture_pb("wordcount"), fixture_manifest("wordcount")
    cache = tmp_path / "cache"
    write_shards(pb, man, "words", cache, ["to"])
    r = show("words", cache=cache / "full")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "it looks like the full/ directory itself; pass its parent, --cache-dir " in r.stderr
    (cache / "full" / "beam-temp-counts-1234").mkdir()
    r = show("words", cache=cache)
    assert r.exit_code == 0 and r.stdout == "to\n"
    assert r.stderr.count("\n") == 1 and "temporary directory of Beam's file writes" in r.stderr, r.stderr


def test_damaged_shards_are_one_line_errors(tmp_path, monkeypatch):
    pb, man = fixture_pb("wordcount"), fixture_manifest("wordcount")
    cache = tmp_path / "cache"
    key = write_shards(pb, man, "words", cache, ["to"])
    shard = cache / "full" / f"{key}-00000-of-00001"
    # Cut short: no cache at all (Beam's reader would take it for a shorter shard).
    shard.write_bytes(shard.read_bytes()[:-1])
    r = show("words", cache=cache)
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "'words' has only a damaged shard set" in r.stderr
    for content, message in [
        # Not bz2, though it ends as a bz2 stream does (the cheap check a scan makes).
        (b"not bz2 at all" + bz2.compress(b"")[4:], "is not a bz2 text shard"),
        (bz2.compress(b"!!!not base64!!!\n"), "element 0 does not decode"),
        (bz2.compress(base64.b64encode(b"\x07\x07") + b"\n"), "element 0 does not decode"),
        # Beam's compiled coders read past the buffer here (a segfault): a bounds-checked decode refuses it.
        (bz2.compress(base64.b64encode(OUT_OF_BOUNDS) + b"\n"), "element 0 does not decode"),
        (bz2.compress(base64.b64encode(HEAP_LEAK) + b"\n"), "a read of 1024 bytes at offset 18 of 18"),
        # A count repeating a window that takes no bytes (Beam would build 2**31 of them).
        (bz2.compress(base64.b64encode(b"\x00" * 8 + b"\x7f\xff\xff\xff\x0f\x01") + b"\n"), "element 0 does not decode"),
    ]:
        shard.write_bytes(content)
        r = show("words", cache=cache)
        assert r.exit_code == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    # Armed: Beam's own (compiled) decoder crashes on one and leaks memory on the other.
    beam_decode = textwrap.dedent("""
        import sys
        from apache_beam.coders import coders
        c = coders.WindowedValueCoder(coders.FastPrimitivesCoder(), coders.GlobalWindowCoder())
        print("LEN", len(c.decode(eval(sys.argv[1])).value[0]))
        """)
    crash = run_python("-c", beam_decode, repr(OUT_OF_BOUNDS))
    # A read 16 MiB past a 20-byte buffer: a segfault, or 16 MiB of whatever lies there.
    assert crash.returncode < 0 or "LEN 16777215" in crash.stdout, (crash.returncode, crash.stdout)
    assert "LEN 1024" in run_python("-c", beam_decode, repr(HEAP_LEAK)).stdout
    import beaminst.commands.elements

    monkeypatch.setattr(beaminst.commands.elements, "MAX_SHARD_LINE_BYTES", 100)
    shard.write_bytes(bz2.compress(b"A" * 1000))
    r = show("words", cache=cache)
    assert r.exit_code == 2 and "has a line over 100 bytes" in r.stderr


@pytest.mark.parametrize("args", [(), ("--json",)])
def test_an_element_that_does_not_decode_names_its_variable(tmp_path, args):
    """Of several variables asked for, the error says which one holds it."""
    pb, man = fixture_pb("wordcount"), fixture_manifest("wordcount")
    cache = tmp_path / "cache"
    write_shards(pb, man, "words", cache, ["to", "be"])
    key = write_shards(pb, man, "counts", cache, [("to", 1)])
    (cache / "full" / f"{key}-00000-of-00001").write_bytes(bz2.compress(b"!!!not base64!!!\n"))
    r = show("words", "counts", *args, cache=cache)
    assert r.exit_code == 2 and r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"beaminst: {cache}: counts: full/{key}-00000-of-00001: element 0 does not decode"), lines


@pytest.mark.parametrize("args", [(), ("--json",)])  # plain lines (piped), JSON lines
def test_an_element_too_deep_to_print_is_one_line(tmp_path, monkeypatch, args):
    from rich.console import Console

    from beaminst.commands import showformat
    from beaminst.commands.show import plan_show, write_show
    from beaminst.errors import BeaminstError

    def too_deep(*_a, **_k):
        raise RecursionError

    monkeypatch.setattr(showformat, "cell_text", too_deep)
    monkeypatch.setattr(showformat, "to_json", too_deep)
    cache = wordcount_cache(tmp_path)
    pb, man = fixture_pb("wordcount"), fixture_manifest("wordcount")
    r = run_cli("show", pb, "-m", man, "--cache-dir", str(cache), "counts", *args)
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.splitlines() == [f"beaminst: {cache}: counts: an element nests too deeply to show"]
    console = Console(record=True, width=120)  # and the table
    with pytest.raises(BeaminstError, match="counts: an element nests too deeply to show"):
        write_show(plan_show(pb, man, str(cache), ["counts"]), showformat.TABLE, 20, False, False, sys.stdout,
                   lambda: console, print)
    assert console.export_text() == ""


@pytest.mark.parametrize("spool", [8 << 20, 16])  # in memory, and rolled over to a temporary file
def test_a_cache_damaged_half_way_prints_nothing(tmp_path, monkeypatch, spool):
    """An element that does not decode after good ones, or in the second
    variable asked for, is the one error: no lines before it (a consumer
    reading stdout must not take half a cache for all of it)."""
    import beaminst.commands.show

    monkeypatch.setattr(beaminst.commands.show, "_SPOOL_BYTES", spool)
    cache = wordcount_cache(tmp_path)
    whole = show("words", "counts", cache=cache)
    assert whole.exit_code == 0 and whole.stdout == "words\tto\nwords\tbe\nwords\tor\\tnot\nwords\té\ncounts\tto\t2\ncounts\tbe\t2\n"
    key = var_key(fixture_pb("wordcount"), fixture_manifest("wordcount"), "counts")[1]
    shard = cache / "full" / f"{key}-00000-of-00001"
    shard.write_bytes(bz2.decompress(shard.read_bytes()) + b"!!!not base64!!!\n")
    shard.write_bytes(bz2.compress(shard.read_bytes()))
    for args in [("counts",), ("counts", "--json"), ("counts", "--csv"), ("words", "counts"), ("words", "counts", "--json")]:
        r = show(*args, cache=cache)
        assert r.exit_code == 2 and "element 2 does not decode" in r.stderr, (args, r.stderr)
        assert r.stdout == "", args
        assert r.stderr.count("\n") == 1
    # Past the limit, an element is only counted, never decoded: what is shown is whole.
    r = show("counts", "--limit", "2", cache=cache)
    assert r.exit_code == 0 and r.stdout.splitlines() == ["to\t2", "be\t2"]
    assert "showed 2 of 3 elements" in r.stderr


# --- no code runs from input ----------------------------------------------------------------


class _Touch:
    """Unpickling this runs ``open(path, 'w')``: the marker of code execution."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickle_in_a_shard_never_runs(tmp_path):
    from beaminst.graft import Grafter

    marker = tmp_path / "MARKER"
    pb, man = fixture_pb("wordcount"), fixture_manifest("wordcount")
    cache = tmp_path / "cache"
    key = write_shards(pb, man, "words", cache, ["harmless"])
    # What WriteCache writes for an element of a type FastPrimitivesCoder does
    # not know: its pickle fallback.
    pc, _ = var_key(pb, man, "words")
    proto, _ = load_pipeline(pb)
    pcoder = Grafter(proto, str(cache), streaming=False).written_pcoder(pc)
    evil = pcoder.encode(WindowedValue(_Touch(str(marker)), 0, [GlobalWindow()]))
    (cache / "full" / f"{key}-00000-of-00001").write_bytes(bz2.compress(base64.b64encode(evil) + b"\n"))
    for fmt in ([], ["--json"], ["--csv"], ["--include-window-info"]):
        r = show("words", *fmt, cache=cache)
        assert not marker.exists(), fmt
        assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "--trust-pickles" in r.stderr, r.stderr
    show("words", "--trust-pickles", cache=cache)  # armed: Beam's unpickler runs it
    assert marker.exists()


def test_a_pickle_in_a_recorded_element_never_runs(tmp_path):
    marker = tmp_path / "MARKER"
    _, key = var_key(*PUBSUB, "decoded")
    cache = tmp_path / "cache"
    record(cache, key, [WindowedValue("fine", 1, [GlobalWindow()])])
    # The element Beam's SafeFastPrimitivesCoder decodes by unpickling: the 0xff tag.
    evil = quote(b"\xff" + pickle.dumps(_Touch(str(marker)))).encode()
    header = iapi.TestStreamFileHeader(tag=key)
    adds = iapi.TestStreamFileRecord(recorded_event=rapi.TestStreamPayload.Event(
        element_event=rapi.TestStreamPayload.Event.AddElements(
            elements=[rapi.TestStreamPayload.TimestampedElement(encoded_element=evil, timestamp=1)], tag=key)))
    os.remove(cache / "full" / key)
    StreamingCache(str(cache)).write([header, adds], "full", key)
    for fmt in ([], ["--json"], ["--include-window-info"]):
        r = show("decoded", *fmt, cache=cache, pb=PUBSUB[0], man=PUBSUB[1])
        assert not marker.exists(), fmt
        assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "--trust-pickles" in r.stderr, r.stderr
    armed = show("decoded", "--trust-pickles", cache=cache, pb=PUBSUB[0], man=PUBSUB[1])
    assert marker.exists()  # Beam's coder ran it; then it is no recorded element
    assert armed.exit_code == 2 and "does not decode" in armed.stderr


def test_a_pickled_coder_in_the_pipeline_never_runs(tmp_path):
    from test_safety_pickles import coder_case

    marker = tmp_path / "MARKER"
    pb, man = coder_case(tmp_path, marker, as_component=False)
    cache = tmp_path / "cache"
    _, key = var_key(pb, man, "words")
    (cache / "full").mkdir(parents=True)
    (cache / "full" / f"{key}-00000-of-00001").write_bytes(bz2.compress(b""))
    r = show("words", cache=cache, pb=pb, man=man)
    assert not marker.exists()
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "--trust-pickles" in r.stderr, r.stderr
    assert r.stderr.startswith(f"beaminst: {pb}: coder "), r.stderr  # the pipeline's coder: its file, as instrument says
    show("words", "--trust-pickles", cache=cache, pb=pb, man=man)
    assert marker.exists()


# --- rendering ------------------------------------------------------------------------------


def test_rendering_is_deterministic_and_terminal_safe():
    from beaminst.commands.showformat import Shape, canonical_repr, json_line, to_json, tsv_escape

    class Plain:
        def __init__(self) -> None:
            self.b, self.a = 2, {"x", "y"}

    assert to_json(float("nan")) == {"$float": "nan"} and to_json(float("-inf")) == {"$float": "-inf"}
    assert to_json({1: b"\x00"}) == {"$dict": [[1, {"$bytes": "AA=="}]]}
    assert to_json({"k": (1, [2])}) == {"k": [1, [2]]}
    assert to_json(frozenset({"b", "a"})) == {"$set": ["a", "b"]}
    assert to_json(beam.Row(x=1, y="z")) == {"x": 1, "y": "z"}
    assert to_json(Plain()) == {"$repr": f"{Plain.__module__}.{Plain.__qualname__}(a={{'x', 'y'}}, b=2)"}
    assert canonical_repr({"b", "a", "c"}) == "{'a', 'b', 'c'}" and canonical_repr((1,)) == "(1,)"
    assert json_line("\x1b[31m\u202e\U000e0001") == '"\\u001b[31m\\u202e\\udb40\\udc01"'
    assert json.loads(json_line("\x1b\u202e\U000e0001")) == "\x1b\u202e\U000e0001"
    assert tsv_escape("a\tb\\c\nd\x1b") == "a\\tb\\\\c\\nd\\x1b"
    row = Shape.of(beam.Row(word="to", n=2))
    assert row.columns == ("word", "n") and row.cells(beam.Row(word="be", n=1)) == ["be", 1]
    pair = Shape.of(("to", 2))
    assert pair.cells(("a", 1, 2))[0] == ("a", 1, 2)  # another shape: whole, in the first column
    nested: list = []
    for _ in range(300):
        nested = [nested]
    with pytest.raises(RecursionError):
        to_json(nested)


# --- end to end: caches Beam wrote, read by another process --------------------------------

RUN = textwrap.dedent(
    """
    import sys
    import apache_beam as beam
    import apache_beam.testing.test_stream  # registers the TestStream URN
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from beaminst.model.protoio import load_pipeline
    proto, _ = load_pipeline(sys.argv[1])
    opts = PipelineOptions([]); opts.view_as(StandardOptions).streaming = sys.argv[2] == "streaming"
    beam.Pipeline.from_runner_api(proto, beam.runners.DirectRunner(), opts).run().wait_until_finish()
    """
)


def _ok(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_show_what_the_direct_runner_wrote(tmp_path):
    p = beam.Pipeline()
    nums = p | "Nums" >> beam.Create(list(range(30)))
    words = p | "Words" >> beam.Create(["to", "be", "or", "not", "to", "be", "tab\there"])
    pairs = words | "Pair" >> beam.Map(fp.pair_with_one)
    blobs = words | "Encode" >> beam.Map(str.encode)
    stamped = nums | "Stamp" >> beam.Map(fp.timestamp_it) | "Fixed10" >> beam.WindowInto(window.FixedWindows(10))
    pb, man = beaminst.export(
        p, {"nums": nums, "words": words, "pairs": pairs, "blobs": blobs, "stamped": stamped}, str(tmp_path / "p")
    )
    cache, out = str(tmp_path / "cache"), str(tmp_path / "inst.pb")
    _ok(run_cli_subprocess("instrument", pb, "-m", man, "--cache-dir", cache, "-o", out))
    _ok(run_python("-c", RUN, out, "batch", timeout=600))

    base = [pb, "-m", man, "--cache-dir", cache]
    plain, js, csv, blob, win, limited, table = _parallel(
        (run_cli_subprocess, "show", *base, "words"),
        (run_cli_subprocess, "show", *base, "pairs", "--json"),
        (run_cli_subprocess, "show", *base, "pairs", "--csv"),
        (run_cli_subprocess, "show", *base, "blobs", "--json"),
        (run_cli_subprocess, "show", *base, "stamped", "--json", "--include-window-info"),
        (run_cli_subprocess, "show", *base, "nums", "--limit", "5"),
        (_show_in_terminal, [*base, "nums", "words"]),
    )
    words_in = ["to", "be", "or", "not", "to", "be", "tab\there"]
    assert sorted(_ok(plain).stdout.splitlines()) == sorted(w.replace("\t", "\\t") for w in words_in)
    assert sorted(map(tuple, json_lines(_ok(js).stdout))) == sorted((w, 1) for w in words_in)
    rows = _ok(csv).stdout.splitlines()
    assert rows[0] == "0,1" and sorted(rows[1:]) == sorted(f"{w},1" for w in words_in)
    assert sorted(base64.b64decode(x["$bytes"]).decode() for x in json_lines(_ok(blob).stdout)) == sorted(words_in)
    stamped_out = sorted(json_lines(_ok(win).stdout), key=lambda x: x["value"])
    assert [x["value"] for x in stamped_out] == list(range(30))
    for x in stamped_out:
        start = x["value"] // 10 * 10_000_000
        assert x["event_time"] == x["value"] * 1_000_000
        assert x["windows"] == [{"start": start, "end": start + 10_000_000}]
    lines = _ok(limited).stdout.splitlines()
    assert len(lines) == 5 and set(lines) <= {str(i) for i in range(30)}
    assert "showed 5 of 30 elements" in limited.stderr
    assert "20 of 30 elements" in table and "7 elements" in table


@pytest.mark.slow
def test_show_readmatches_files_the_direct_runner_wrote(tmp_path):
    # ReadableFiles pickle as __newobj__ + a state dict holding a FileMetadata;
    # show read them only with --trust-pickles.
    from apache_beam.io import fileio

    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("hello\n")
    (data / "b.txt").write_text("world!\n")
    p = beam.Pipeline()
    files = p | fileio.MatchFiles(str(data / "*.txt")) | fileio.ReadMatches(compression="uncompressed")
    pb, man = beaminst.export(p, {"files": files}, str(tmp_path / "p"))
    cache, out = str(tmp_path / "cache"), str(tmp_path / "inst.pb")
    _ok(run_cli_subprocess("instrument", pb, "-m", man, "--cache-dir", cache, "-o", out))
    _ok(run_cli_subprocess("run", out, timeout=600))

    shown = sorted(x["$repr"] for x in json_lines(_ok(run_cli_subprocess(
        "show", pb, "-m", man, "--cache-dir", cache, "files", "--json")).stdout))
    assert len(shown) == 2, shown
    for name, size in (("a.txt", 6), ("b.txt", 7)):
        assert any(r.startswith("apache_beam.io.fileio.ReadableFile(_compression='uncompressed', "
                                f"metadata=FileMetadata({data / name}, {size}, ") for r in shown), shown


@pytest.mark.slow
def test_show_what_a_background_caching_job_recorded(tmp_path):
    from test_background_caching import test_stream_pipeline

    pb, man = test_stream_pipeline(str(tmp_path / "ts"))
    cache, out = str(tmp_path / "cache"), str(tmp_path / "bg.pb")
    _ok(run_cli_subprocess("background-caching", pb, "-m", man, "--cache-dir", cache, "-o", out,
                           "--unbounded-urn", TEST_STREAM_URN))
    _ok(run_python("-c", RUN, out, "streaming", timeout=600))

    base = [pb, "-m", man, "--cache-dir", cache, "--unbounded-urn", TEST_STREAM_URN]
    plain, js, csv, table = _parallel(
        (run_cli_subprocess, "show", *base, "events"),
        (run_cli_subprocess, "show", *base, "events", "--json", "--include-window-info"),
        (run_cli_subprocess, "show", *base, "events", "--csv", "--include-window-info"),
        (_show_in_terminal, [*base, "events", "--include-window-info"]),
    )
    assert _ok(plain).stdout == "a\nb\nc\n"
    assert [(x["value"], x["event_time"], x["windows"]) for x in json_lines(_ok(js).stdout)] == [
        ("a", 1_000_000, ["GlobalWindow"]), ("b", 2_000_000, ["GlobalWindow"]), ("c", 12_000_000, ["GlobalWindow"])
    ]
    rows = _ok(csv).stdout.splitlines()
    assert rows[0] == "value,event_time,windows,pane_info" and rows[1].startswith("a,1000000,[GlobalWindow],")
    assert "events (StreamingCache recording)" in table and "3 elements" in table
    # Not bound to a recording: the bounded branch 'upper' was never written.
    missing = run_cli_subprocess("show", *base, "upper")
    assert missing.returncode == 2 and "beaminst instrument " in missing.stderr


def test_without_a_manifest_the_unknown_variable_says_to_pass_one(tmp_path):
    r = run_cli("show", fixture_pb("wordcount"), "--cache-dir", str(tmp_path), "words")
    assert r.exit_code == 2
    assert "no variable 'words'" in r.stderr and "no manifest given, pass -m MANIFEST" in r.stderr, r.stderr


def test_a_cache_directory_that_does_not_exist_is_named_as_such(tmp_path):
    missing = tmp_path / "no-such-cache"
    r = run_cli("show", fixture_pb("wordcount"), "-m", fixture_manifest("wordcount"), "--cache-dir", str(missing), "words")
    assert r.exit_code == 2
    assert "the cache directory does not exist" in r.stderr and str(missing) in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1


def test_the_terminal_table_cuts_long_values_and_says_so(tmp_path):
    """One 3,000-character element folded into the table buried every other
    row: a cell shows at most MAX_CELL_CHARS, the note under the table says
    how many were cut, and piped output still gives every value whole."""
    from rich.console import Console

    from beaminst.commands import showformat
    from beaminst.commands.show import plan_show, write_show

    cache = tmp_path / "cache"
    pb, man = fixture_pb("wordcount"), fixture_manifest("wordcount")
    long = "x" * 3000
    write_shards(pb, man, "words", cache, ["short", long, "y" * showformat.MAX_CELL_CHARS], shards=1)
    console = Console(record=True, width=120)
    plan = plan_show(pb, man, str(cache), ["words"])
    write_show(plan, showformat.TABLE, 20, False, False, sys.stdout, lambda: console, print)
    text = console.export_text()
    assert "short" in text and text.count("x") == showformat.MAX_CELL_CHARS - 1 and "…" in text
    assert "1 value cut to 200 characters (piped output and --json show them whole)" in text
    assert text.count("y") == showformat.MAX_CELL_CHARS  # as long as the limit: whole
    piped = show("words", cache=cache)
    assert piped.stdout.splitlines() == ["short", long, "y" * showformat.MAX_CELL_CHARS]
