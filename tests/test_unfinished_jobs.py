"""A job that does not end DONE leaves no cache that later looks whole.

Beam's file sink finalizes a write's shard set when that write's step is
done, whatever happens elsewhere in the job: a FAILED job can leave
``<key>-00000-of-00001`` holding part of its PCollection, or nothing of it,
and ``analyze``, ``show`` and ``--reuse`` took it for a cache (a re-run then
ended DONE on wrong data). ``beaminst run`` removes what the job finalized,
and the temporary directories its writes left, and keeps everything that was
there before it started.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from beaminst.run.capture import CacheWrite
from beaminst.run.unfinished import discard_unfinished, snapshot

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
CLI = [sys.executable, "-c", "import sys; from beaminst.cli import main; main(sys.argv[1:], prog_name='beaminst')"]


def _write(key: str, cache_dir: Path | str, **kw: object) -> CacheWrite:
    fields = {"streaming": False, "capture": False, **kw}
    return CacheWrite(key, "t", f"WriteCache_{key}", "pc", "p", cache_dir=str(cache_dir), **fields)  # type: ignore[arg-type]


def test_what_the_job_finalized_goes_and_what_was_there_stays(tmp_path: Path):
    full = tmp_path / "cache" / "full"
    full.mkdir(parents=True)
    (full / "kept-00000-of-00001").write_bytes(b"an earlier run's cache")
    (full / "redone-00000-of-00002").write_bytes(b"old")
    (full / "beam-temp-redone-0123abcd").mkdir()  # an earlier failure's leftovers: not this job's
    (full / "redone-notes").write_bytes(b"not a shard")
    writes = [_write("kept", tmp_path / "cache"), _write("redone", tmp_path / "cache")]
    before = snapshot(writes)

    # What the job does: rewrites one shard, finalizes another, leaves a temporary directory.
    os.utime(full / "redone-00000-of-00002", ns=(1, 1))
    (full / "redone-00001-of-00002").write_bytes(b"new")
    (full / "beam-temp-redone-feedbeef").mkdir()
    (full / "beam-temp-redone-feedbeef" / "part").write_bytes(b"x")

    warnings = discard_unfinished(writes, before, "FAILED")
    assert sorted(p.name for p in full.iterdir()) == ["beam-temp-redone-0123abcd", "kept-00000-of-00001", "redone-notes"]
    assert len(warnings) == 1 and "removed the 2 shard file(s) the FAILED job finalized for 1 cache write(s) (redone)" in warnings[0]


def test_recordings_streaming_files_and_remote_directories_are_not_touched(tmp_path: Path):
    full = tmp_path / "cache" / "full"
    full.mkdir(parents=True)
    writes = [_write("rec", tmp_path / "cache", capture=True), _write("stream", tmp_path / "cache", streaming=True),
              _write("far", "gs://bucket/cache")]
    before = snapshot(writes)
    (full / "rec-00000-of-00001").write_bytes(b"x")
    (full / "stream-00000-of-00001").write_bytes(b"x")
    warnings = discard_unfinished(writes, before, "CANCELLED")
    assert sorted(p.name for p in full.iterdir()) == ["rec-00000-of-00001", "stream-00000-of-00001"]
    assert len(warnings) == 1 and "gs://bucket/cache/full" in warnings[0] and "before instrumenting with --reuse" in warnings[0]


PIPELINE = textwrap.dedent(
    """
    import sys
    import apache_beam as beam
    import beaminst

    out = sys.argv[1]

    def finalize_then_fail(x, out=out):
        # What a failing job's finished write does: a whole-looking shard set
        # for the bound PCollection (its key read at run time, so the
        # pipeline, and the key, do not depend on it), then the failure.
        key = open(out + "/key").read().strip()
        with open(out + "/cache/full/" + key + "-00000-of-00001", "wb") as f:
            f.write(b"")
        raise RuntimeError("boom after the write")

    p = beam.Pipeline()
    nums = p | "Nums" >> beam.Create([1, 2, 3])
    nums | "Fail" >> beam.Map(finalize_then_fail)
    beaminst.export(p, {"nums": nums}, out + "/p")
    """
)


def _cli(*args: str, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=600)
    assert (proc.returncode == 0) == ok, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_a_failed_run_leaves_nothing_analyze_or_reuse_would_take_for_a_cache(tmp_path: Path):
    script = tmp_path / "make.py"
    script.write_text(PIPELINE)
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, env=ENV, timeout=600, capture_output=True)
    (tmp_path / "cache" / "full").mkdir(parents=True)
    (tmp_path / "cache" / "full" / "other-00000-of-00001").write_bytes(b"another pipeline's")
    shown = json.loads(_cli("analyze", "p.pb", "-m", "p.manifest.json", "--json", cwd=tmp_path).stdout)
    (key,) = [c["cache_key"] for c in shown["cacheables"].values()]
    (tmp_path / "key").write_text(key)
    _cli("instrument", "p.pb", "-m", "p.manifest.json", "--cache-dir", "cache", "-o", "write.pb", cwd=tmp_path)

    r = _cli("run", "write.pb", cwd=tmp_path, ok=False)
    assert r.returncode == 2 and "FAILED" in r.stdout and "boom after the write" in r.stderr
    assert f"finalized for 1 cache write(s) ({key})" in r.stdout, r.stdout
    assert sorted(p.name for p in (tmp_path / "cache" / "full").iterdir()) == ["other-00000-of-00001"]
    status = json.loads(_cli("analyze", "p.pb", "-m", "p.manifest.json", "--cache-dir", "cache", "--json",
                             cwd=tmp_path).stdout)
    assert [c["cached"] for c in status["cacheables"].values()] == [False]
    reused = _cli("instrument", "p.pb", "-m", "p.manifest.json", "--cache-dir", "cache", "--reuse", "-o", "again.pb",
                  cwd=tmp_path).stdout
    assert "\nwrite\tnums\t" in "\n" + reused and "\nread\t" not in "\n" + reused, reused


def test_an_interrupted_run_removes_what_its_job_finalized(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Ctrl-C: follow cancels the job and the KeyboardInterrupt goes on (the
    CLI says 'interrupted'); what the job finalized meanwhile goes first."""
    import beaminst
    from beaminst.run import driver
    from beaminst.run.job import Job
    from fixtures import pipelines as fp

    built = fp.wordcount()
    pb, man = beaminst.export(built.pipeline, built.bindings, str(tmp_path / "wc"))
    out = tmp_path / "write.pb"
    _cli("instrument", pb, "-m", man, "--cache-dir", "cache", "-o", str(out), cwd=tmp_path)
    (tmp_path / "cache" / "full").mkdir(parents=True)
    key = json.loads(_cli("analyze", pb, "-m", man, "--json", cwd=tmp_path).stdout)["cacheables"]
    key = sorted(c["cache_key"] for c in key.values())[0]

    class Idle(Job):
        runner = "fake"

        def cancel(self) -> None:
            pass

        def close(self) -> None:
            pass

    def finalize_then_interrupt(*args: object, **kwargs: object) -> None:
        (tmp_path / "cache" / "full" / f"{key}-00000-of-00001").write_bytes(b"")
        raise KeyboardInterrupt

    notes: list[str] = []

    class Status:
        def update(self, *args: object) -> None:
            pass

        def note(self, text: str) -> None:
            notes.append(text)

    monkeypatch.setattr(driver, "_prepare", lambda proto, source, options, streaming, warnings: (
        Idle, driver.RunReport(source, "", streaming)))
    monkeypatch.setattr(driver, "follow", finalize_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        driver.run_file(str(out), status=Status())  # type: ignore[arg-type]
    assert list((tmp_path / "cache" / "full").iterdir()) == []
    assert any(n.startswith("warning: removed the 1 shard file(s) the interrupted job finalized") for n in notes), notes
