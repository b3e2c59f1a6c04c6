"""The command that comes next in the interactive loop, spelled with the
user's own paths: analyze -> instrument (or background-caching) -> run ->
show, and instrument --reuse after an edit."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from beaminst.errors import shell_word
from beaminst.options import SourceRules

if TYPE_CHECKING:
    from beaminst.analysis.analyze import Analysis


@dataclass(frozen=True)
class Invocation:
    """How the user named the inputs, to spell the commands that follow."""

    pipeline: str
    manifest: str | None
    cache_dir: str | None
    rules: SourceRules = SourceRules()  # spelled back as --unbounded-urn / --infer-unbounded

    def inputs(self, cache: bool = True) -> str:
        parts = [self.pipeline if self.pipeline != "-" else "PIPELINE"]
        if self.manifest:
            parts += ["-m", self.manifest if self.manifest != "-" else "MANIFEST"]
        if cache:
            # A real name, not a placeholder: copied as printed, it works.
            parts += ["--cache-dir", self.cache_dir or "beaminst-cache"]
        for urn in self.rules.urns:
            parts += ["--unbounded-urn", urn]
        if self.rules.infer:
            parts.append("--infer-unbounded")
        return " ".join(shell_word(p) for p in parts)

    def output(self, suffix: str) -> str:
        if self.pipeline == "-":
            return f"pipeline.{suffix}.pb"
        # In the working directory: the input's may be read-only (a checkout, a mount).
        stem = os.path.splitext(os.path.basename(self.pipeline))[0]
        return shell_word(f"{stem}.{suffix}.pb")


def after_analyze(how: Invocation, analysis: Analysis) -> list[str]:
    """After ``analyze``: bind something, record the sources, or instrument;
    for a pipeline beaminst rewrote already (analyze warned), run it as it is."""
    if analysis.rewritten_already:
        target = shell_word(how.pipeline) if how.pipeline != "-" else "FILE"
        return [f"beaminst run {target}  # rewritten already: run it as it is (instrument takes the original)"]
    bound = [c for c in analysis.cacheables.values() if not c.synthetic]
    if not bound and not analysis.unbounded_sources:
        return [
            "bind PCollections to variables in a manifest (README: the manifest), then: "
            f"beaminst analyze {how.inputs(cache=False)} -m bindings.json"
        ]
    steps = []
    source_outputs = {pc for s in analysis.unbounded_sources for pc in s.outputs.values()}
    unnamed = _unnamed_source_urns(analysis)
    if unnamed:
        # analyze warned that instrument would refuse: spell the rule that finds them.
        how = replace(how, rules=SourceRules(how.rules.urns + unnamed, how.rules.infer))
        steps.append(f"beaminst background-caching {how.inputs()} -o {how.output('record')}  # "
                     "records the sources named by URN; then beaminst run it")
    elif source_outputs and not all(analysis.cacheables[pc].cached for pc in source_outputs):
        out = how.output("record")
        steps.append(f"beaminst background-caching {how.inputs()} -o {out} && beaminst run {out}")
    cached = [c for c in bound if c.cached and not c.computed]
    if cached:  # without --reuse they are written again, not read back
        steps.append(f"beaminst instrument {how.inputs()} --reuse -o {how.output('instrumented')}  "
                     f"# reads back the {len(cached)} cached variable(s)")
    else:
        steps.append(f"beaminst instrument {how.inputs()} -o {how.output('instrumented')}")
    return steps


def _unnamed_source_urns(analysis: Analysis) -> tuple[str, ...]:
    """With no unbounded source recognised: the URNs of the sources
    ``--infer-unbounded`` would find (the analysis's own rule), sorted."""
    if analysis.unbounded_sources or all(i.is_bounded for i in analysis.pcollections.values()):
        return ()  # nothing to infer: no second walk of a bounded pipeline
    from beaminst.analysis.sources import find_unbounded_sources

    return tuple(sorted({s.urn for s in find_unbounded_sources(analysis.index, SourceRules(infer=True))}))


# Variables a printed ``show`` names: a big pipeline binds hundreds, and a
# next step is a line to read and copy, not the report (--json lists them all).
SHOW_AT_MOST = 5


def _run_target(output: str | None, default: str) -> tuple[str, str]:
    """What ``beaminst run`` is to be given for ``output`` (``default`` when
    None), and a note when that is a placeholder: stdout, or a stream the
    proto was written into (``/dev/null``, a FIFO), is no file to run."""
    from beaminst.errors import OutputError
    from beaminst.model.protoio import output_target

    if output == "-":
        # Where stdout went is unknown here; a guessed name could run a stale file.
        return "FILE", "FILE: where you saved the proto from stdout"
    if output is not None:
        try:
            stream = output_target(output)[1]  # the proto was written there already: no error left
        except OutputError:
            stream = False
        if stream:
            return "FILE", f"FILE: the proto written to a file (-o FILE), not to {output}"
    return shell_word(output or default), ""


def _run_step(target: str, note: str, in_process: bool, what: str = "", prefix: str = "") -> str:
    """``beaminst run TARGET`` (after ``prefix``, e.g. ``rm FILE && ``),
    through the Job API for a pipeline Beam's Python runners cannot rebuild
    here (another SDK's)."""
    notes = [n for n in (what, note) if n]
    if not in_process:
        target += " --job-endpoint HOST:PORT"
        notes.append("another SDK's pipeline: a runner that starts its workers (Flink, Spark, Prism)")
    return f"{prefix}beaminst run {target}" + (f"  # {'; '.join(notes)}" if notes else "")


def after_instrument(
    how: Invocation, output: str | None, writes: list[str], cached: bool, in_process: bool = True,
    skipped: int = 0,
) -> list[str]:
    """After ``instrument``: run it, then look at what it cached.
    ``in_process``: Beam's Python runners can run it without the Job API.
    ``skipped``: bindings left alone (cached, not listed as computed): with
    nothing written or read, running it would cache nothing."""
    if not writes and not cached and skipped:
        return [f"beaminst instrument {how.inputs()} --reuse -o {how.output('instrumented')}  "
                "# reads back the cached variables instead of recomputing them"]
    target, note = _run_target(output, how.output("instrumented"))
    steps = [_run_step(target, note, in_process)]
    written = list(dict.fromkeys(writes))
    shown = written[:SHOW_AT_MOST]
    if shown or cached:
        # Nothing written but something cached: show with no VAR shows every cached variable.
        step = " ".join((f"beaminst show {how.inputs()}", *(shell_word(v) for v in shown)))
        if len(written) > len(shown):
            # A shell comment: the line still runs as printed.
            step += f"  # and {len(written) - len(shown)} more variables written (listed above)"
        steps.append(step)
    return steps


def after_run(how: Invocation, recording: bool, replayed: bool = False) -> list[str]:
    """After a successful ``run``: replay what it recorded, or look at what it
    cached and reuse it. ``run`` is given only the proto, so ``how`` names the
    pipeline and manifest it came from as for stdin (placeholders).
    ``replayed``: the proto replays a recording, so its original's sources are
    not in it, nor the rules that found them."""
    if recording:
        return [f"beaminst instrument {how.inputs()} -o {how.output('instrumented')}  # replays this recording"]
    flags = " (plus any --unbounded-urn / --infer-unbounded it was instrumented with)" if replayed else ""
    return [
        f"beaminst show {how.inputs()}  # every cached variable's elements (or name VAR...){flags}",
        f"beaminst instrument {how.inputs()} --reuse -o {how.output('next')}  # reads back what this run cached{flags}",
    ]


def after_failure(errors: list[str]) -> list[str]:
    """After a failed ``run``: what fixes a failure whose cause is the
    machine's, not the pipeline's. A Pub/Sub source (background caching's
    usual input) without Google Cloud credentials is the common one."""
    if any("DefaultCredentialsError" in e for e in errors):
        return [
            "gcloud auth application-default login  # the job reads Google Cloud without credentials (a Pub/Sub "
            "source?): log in, or set GOOGLE_APPLICATION_CREDENTIALS, or PUBSUB_EMULATOR_HOST=HOST:PORT for "
            "Pub/Sub's emulator; then run it again"
        ]
    return []


def after_background_caching(
    how: Invocation, output: str | None, recorded: bool = True, in_process: bool = True,
    recorded_already: list[str] | tuple[str, ...] = (),
) -> list[str]:
    """After ``background-caching``: record, then replay the recording.
    ``recorded``: it wrote capture writes (``--allow-empty`` writes a root
    only, which records nothing: then instrument is what is left).
    ``recorded_already``: recordings ``run`` refuses to append to: to replay
    as they are, or to remove before recording again."""
    replay = f"beaminst instrument {how.inputs()} -o {how.output('instrumented')}"
    if not recorded:
        return [f"{replay}  # no unbounded source to record"]
    target, note = _run_target(output, how.output("record"))
    records = "records the sources into the cache (--max-duration, --max-bytes to stop it)"
    if recorded_already:
        rm = f"rm {' '.join(shell_word(p) for p in recorded_already)} && "
        return [f"{replay}  # replays the recording there is", _run_step(target, note, in_process, f"then {records}", rm)]
    return [_run_step(target, note, in_process, records), f"{replay}  # replays what was recorded"]



def after_batch(mode: str, outputs: list[str]) -> list[str]:
    """After ``batch``: run what it wrote (the first, as an example);
    ``outputs``: those with something to run (writes or captures)."""
    if not outputs:
        return []
    what = "records its sources" if mode == "background-caching" else "runs it"
    others = f", and so on for the other {len(outputs) - 1}" if len(outputs) > 1 else ""
    return [f"beaminst run {shell_word(sorted(outputs)[0])}  # {what}{others}"]
