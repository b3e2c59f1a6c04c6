"""The command that comes next in the interactive loop, spelled with the
user's own paths: analyze -> instrument (or background-caching) -> run ->
show, and instrument --reuse after an edit."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

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
        return " ".join(shlex.quote(p) for p in parts)

    def output(self, suffix: str) -> str:
        if self.pipeline == "-":
            return f"pipeline.{suffix}.pb"
        # In the working directory: the input's may be read-only (a checkout, a mount).
        stem = os.path.splitext(os.path.basename(self.pipeline))[0]
        return shlex.quote(f"{stem}.{suffix}.pb")


def after_analyze(how: Invocation, analysis: Analysis) -> list[str]:
    """After ``analyze``: bind something, record the sources, or instrument."""
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
    return shlex.quote(output or default), ""


def after_instrument(how: Invocation, output: str | None, writes: list[str], cached: bool) -> list[str]:
    """After ``instrument``: run it, then look at what it cached."""
    target, note = _run_target(output, how.output("instrumented"))
    steps = [f"beaminst run {target}" + (f"  # {note}" if note else "")]
    written = list(dict.fromkeys(writes))
    shown = written[:SHOW_AT_MOST]
    if shown or cached:
        # Nothing written but something cached: show with no VAR shows every cached variable.
        step = " ".join((f"beaminst show {how.inputs()}", *(shlex.quote(v) for v in shown)))
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


def after_background_caching(how: Invocation, output: str | None, recorded: bool = True) -> list[str]:
    """After ``background-caching``: record, then replay the recording.
    ``recorded``: it wrote capture writes (``--allow-empty`` writes a root
    only, which records nothing: then instrument is what is left)."""
    if not recorded:
        return [f"beaminst instrument {how.inputs()} -o {how.output('instrumented')}  # no unbounded source to record"]
    target, note = _run_target(output, how.output("record"))
    return [
        f"beaminst run {target}  # records the sources into the cache (--max-duration, --max-bytes to stop it)"
        + (f"; {note}" if note else ""),
        f"beaminst instrument {how.inputs()} -o {how.output('instrumented')}  # replays what was recorded",
    ]



def after_batch(mode: str, outputs: list[str]) -> list[str]:
    """After ``batch``: run what it wrote (the first, as an example)."""
    if not outputs:
        return []
    what = "records its sources" if mode == "background-caching" else "runs it"
    others = f", and so on for the other {len(outputs) - 1}" if len(outputs) > 1 else ""
    return [f"beaminst run {shlex.quote(sorted(outputs)[0])}  # {what}{others}"]
