"""Command line interface: Click only. Everything real lives in the library.

Exit codes: 0 success, 1 differences found (diff only), 2 bad input, bad
usage or failure, 141 stdout's reader went away (``| head``), silently.
Errors are one line on stderr, never a traceback (set ``BEAMINST_DEBUG=1``
to see one).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from beaminst import __version__

if TYPE_CHECKING:
    from beaminst.options import SourceRules

PIPELINE_HELP = "Pipeline proto: binary, text format or JSON (detected from content); - for stdin."


def _fail(message: str) -> None:
    from beaminst.errors import printable

    click.echo(f"beaminst: {printable(' '.join(message.split()))}", err=True)
    sys.exit(2)


def _finite_seconds(_ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """FloatRange lets ``nan`` through (no comparison holds for it) and
    ``inf`` past no bound: neither is a duration (``nan`` meant no limit, and
    both made ``--json`` print what JSON has no word for)."""
    from beaminst.limits import MAX_SECONDS

    if value is not None and not (value <= MAX_SECONDS):  # False for nan too
        raise click.BadParameter(f"{value} is not a number of seconds up to {MAX_SECONDS:g}", param=param)
    return value


def _path(**kwargs: Any) -> click.Path:
    # beaminst reports a missing or unreadable file itself, on one line naming
    # it; click's own readability check is a three-line usage error.
    return click.Path(readable=False, **kwargs)


# The names of stdout a shell offers: written as "-" is (the report then goes
# to stderr), not resolved to whatever file stdout was redirected to.
_STDOUT_NAMES = frozenset({"/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"})


def _stdout_alias(_ctx: Any, _param: Any, value: str | None) -> str | None:
    return "-" if value in _STDOUT_NAMES else value


def _urns(_ctx: Any, _param: Any, value: tuple[str, ...]) -> tuple[str, ...]:
    # SourceRules' own check, as a usage error: a blank URN would make the root a source.
    from beaminst.options import parse_urn

    try:
        return tuple(parse_urn(urn) for urn in value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def _endpoint(_ctx: Any, _param: Any, value: str | None) -> str | None:
    from beaminst.options import parse_endpoint

    try:
        return None if value is None else parse_endpoint(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


_FULL_STDOUT = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO})
# 128 + SIGPIPE (13), what a shell reports for a writer its reader left
# (``yes | head``): Python ignores SIGPIPE, so beaminst exits with it itself.
READER_GONE = 141


def _fail_if_stdout_full(e: OSError) -> None:
    """Not a bug: stdout went to a full disk (``> /dev/full``): one line, exit 2."""
    if e.filename is None and e.errno in _FULL_STDOUT:
        _detach_stdout()  # no second error at exit
        _fail(f"<stdout>: cannot write to stdout: {e.strerror}")


def _detach_stdout() -> None:
    """Point stdout at /dev/null, so that its flush at exit has nowhere to fail
    (no "Exception ignored ... BrokenPipeError" after beaminst is done)."""
    with contextlib.suppress(OSError, ValueError):  # no real file descriptor (a test runner's stdout)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@contextlib.contextmanager
def _quiet_when_reader_gone() -> Any:
    """The one handling of a closed pipe on stdout (``beaminst ... | head``),
    wherever the write happens (a report, ``--help``, the flush at the end):
    exit 141, with nothing on stderr."""
    try:
        yield
    except BrokenPipeError:
        _detach_stdout()
        sys.exit(READER_GONE)
    except OSError as e:  # --help or --version > /dev/full: one line, as every command's report
        _fail_if_stdout_full(e)
        raise


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from beaminst.errors import BeaminstError
        from beaminst.limits import check_env_limits

        try:
            try:
                check_env_limits()  # here, after parsing: every --help still answers
                return fn(*args, **kwargs)
            finally:
                # Whatever the command's outcome (an exit status of its own
                # included), buffered output meets a closed pipe or a full disk
                # here, not in the interpreter's flush at exit.
                if sys.stdout is not None:  # None: closed when this process started
                    sys.stdout.flush()
        except BeaminstError as e:
            _fail(str(e))
        except KeyboardInterrupt:
            _fail("interrupted")
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except BrokenPipeError:
            raise  # not a bug: BeaminstGroup exits 141, quietly
        except Exception as e:  # a bug: still one line, still exit 2
            if isinstance(e, OSError):
                _fail_if_stdout_full(e)  # the report went to a full disk, or > /dev/full
            if os.environ.get("BEAMINST_DEBUG"):
                raise
            _fail(f"internal error: {type(e).__name__}: {e} (BEAMINST_DEBUG=1 shows a traceback)")

    return wrapper


def _echo_json(doc: Any, err: bool = False) -> None:
    """``doc`` as indented, sorted JSON and a newline, on stdout (stderr).
    Not click.echo: one large write that a closed pipe cuts short is lost
    silently there (see ``protoio.write_fully``), so ``--json | head`` exited
    as if all was read."""
    from beaminst.model.protoio import write_fully

    stream = sys.stderr if err else sys.stdout
    stream.flush()
    write_fully(stream.buffer, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    stream.buffer.flush()


def _console(err: bool = False) -> Any:
    from beaminst.commands.humanout import console_for

    return console_for(err)


def _human(err: bool = False) -> Any:
    """Human output on stdout (stderr): tables on a terminal, records piped."""
    from beaminst.commands.humanout import human_for

    return human_for(err)


class BeaminstGroup(click.Group):
    """Click, with usage errors in beaminst's own style: one line, naming the
    command and where its help is, exit 2 (click prints three lines and a
    usage banner). Extra arguments that are existing files are an unquoted
    glob, which the line says, pointing at ``batch``. A closed pipe on stdout
    is exit 141, silently, from parsing (``--help``) to the last write (click's
    own handling would exit 1)."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with _quiet_when_reader_gone():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        with _quiet_when_reader_gone():
            return super().invoke(ctx)

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:  # a caller that handles click's exceptions itself
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.UsageError as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # bare `beaminst`: the help, as click shows it
                e.show()
                sys.exit(e.exit_code)
            # The program is beaminst however it was started (python -m, a test runner).
            command = e.ctx.command_path.partition(" ")[2] if e.ctx is not None else ""
            where = f"beaminst {command}".strip()
            _fail(f"{command + ': ' if command else ''}{_usage_message(e)} (see {where} --help)")
        except click.ClickException as e:
            _fail(e.format_message())
        except click.exceptions.Abort:
            _fail("interrupted")
        sys.exit(code if isinstance(code, int) else 0)


def _usage_message(e: click.UsageError) -> str:
    message = e.format_message()
    extra = "Got unexpected extra argument"
    if message.startswith(extra) and e.ctx is not None:
        names = message[message.index("(") + 1 : message.rindex(")")].split()
        if names and all(os.path.exists(n) for n in names):
            return (
                f"{len(names)} more file(s) than it takes ({' '.join(names[:3])}{' ...' if len(names) > 3 else ''}): "
                "an unquoted glob? For many pipelines use beaminst batch 'SRC/*.pb' -o DEST (quoted)"
            )
    return _plain_ranges(message[:1].lower() + message[1:].rstrip("."))


_NOT_A_NUMBER = re.compile(r""": ('[^']*'|"[^"]*") is not a valid (integer|float) range$""")  # the value as click quotes it
_OUT_OF_RANGE = re.compile(r"(\S+) is not in the range (?:(\S+?)(<=|<))?x(?:(>=|>|<=|<)(\S+))?$")
_BOUND_WORDS = {">=": "at least", ">": "more than", "<=": "at most", "<": "less than"}


def _plain_ranges(message: str) -> str:
    """click's range errors in words: "'abc' is not a valid integer range"
    says nothing of what was wanted, "0 is not in the range x>=1" is a formula."""
    message = _NOT_A_NUMBER.sub(
        lambda m: f": {m[1]} is not {'a whole number' if m[2] == 'integer' else 'a number'}", message
    )
    m = _OUT_OF_RANGE.search(message)
    if m is None:
        return message
    got, low, low_op, high_op, high = m.groups()
    bounds = []
    if low is not None:  # "1<=x": x is at least 1
        bounds.append(f"{_BOUND_WORDS['>=' if low_op == '<=' else '>']} {low}")
    if high is not None:
        bounds.append(f"{_BOUND_WORDS[high_op]} {high}")
    return message[: m.start()] + f"must be {' and '.join(bounds)} (got {got})"


@click.group(
    cls=BeaminstGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="""\b
Examples:
  beaminst analyze fixtures/wordcount.pb -m fixtures/wordcount.manifest.json
  beaminst analyze pipeline.pb -m bindings.json --cache-dir /tmp/cache --json | jq .cacheables
  beaminst instrument pipeline.pb -m bindings.json --cache-dir /tmp/cache -o instrumented.pb
  beaminst run instrumented.pb                      # DirectRunner; --job-endpoint HOST:PORT for the Job API
  beaminst show pipeline.pb -m bindings.json --cache-dir /tmp/cache counts
  beaminst instrument pipeline.pb -m bindings.json --cache-dir /tmp/cache --reuse -o next.pb
  beaminst background-caching streaming.pb --cache-dir /tmp/cache -o record.pb
  beaminst diff pipeline.pb instrumented.pb --json
  beaminst graph instrumented.pb --against pipeline.pb -o changes.svg
  beaminst batch exports/ -o instrumented/ --cache-dir /tmp/cache --jobs 4
""",
)
@click.version_option(__version__, prog_name="beaminst")
@click.option(
    "-v", "--verbose", is_flag=True,
    help="Show the Beam SDK's warnings and log messages, and all of a failed job's messages (tracebacks).",
)
def main(verbose: bool = False) -> None:
    """Interactive Beam's pipeline instrumentation, on saved pipeline protos.

    Reads a saved beam_runner_api.Pipeline and a variable-binding manifest,
    and writes the pipeline Interactive Beam would run: cache writes for bound
    PCollections, cache reads for computed ones, pruned upstream, and the
    background-caching pipeline that records unbounded sources.
    """
    import logging

    # The SDK logs warnings about optional GCP dependencies on import; they are
    # not about the user's pipeline. A handler here makes its basicConfig a no-op.
    logging.basicConfig(level=logging.INFO if verbose else logging.ERROR, format="beaminst: %(name)s: %(message)s")


class _LeavesAJobBehind(SystemExit):
    """The exit of a run whose cancel the runner had not confirmed after the
    grace: its threads (a local runner's) would keep the process alive for as
    long as they run, after the report said it is over."""


def entry() -> None:
    """The ``beaminst`` program (the console script, ``python -m beaminst``):
    :func:`main`, then out of the process without tearing the interpreter
    down. A command has done and flushed its work by then, and what
    finalization adds (every module and object freed one by one, a last
    collection) is about 30 ms of CPU whatever the pipeline: a sixth of a
    word-count ``instrument``, for memory the kernel takes back at once.
    Exit handlers still run; a process with a thread still alive, or a
    stream that cannot be flushed, exits the ordinary way. Callers of
    :func:`main` itself (test runners, scripts) keep an ordinary return."""
    import atexit
    import threading

    _open_standard_streams()
    _buffer_piped_stdout()
    abandoned = False
    try:
        main(prog_name="beaminst")
        code: Any = 0
    except SystemExit as e:
        code = 0 if e.code is None else e.code
        abandoned = isinstance(e, _LeavesAJobBehind)
    if not isinstance(code, int) or (threading.active_count() > 1 and not abandoned):
        sys.exit(code)
    atexit._run_exitfuncs()  # noqa: SLF001 - the one way to run them before os._exit
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):
        sys.exit(code)  # the interpreter's own handling of what is left
    os._exit(code)


# Linux's pipe capacity: output up to this size leaves in one write(2).
PIPE_CAPACITY = 1 << 16


def _buffer_piped_stdout() -> None:
    """Piped or redirected, stdout holds up to :data:`PIPE_CAPACITY` before
    it writes, not Python's 8 KiB: a command's whole output of that size then
    reaches the pipe in one write at its final flush, so a reader that stops
    early (``beaminst diff a b | head -1``) has it all and the exit status is
    the command's (1: they differ), not 141 from a second write into a pipe
    ``head`` has closed. Left alone on a terminal, and where Python was
    asked for unbuffered output (``-u``, ``PYTHONUNBUFFERED``)."""
    import io

    out = sys.stdout
    if out is None or out.isatty() or not isinstance(getattr(out, "buffer", None), io.BufferedWriter):
        return
    out.flush()
    # A FileIO of its own: the original stays whole in sys.__stdout__.
    raw = io.FileIO(out.fileno(), "wb", closefd=False)
    sys.stdout = io.TextIOWrapper(
        io.BufferedWriter(raw, buffer_size=PIPE_CAPACITY), encoding=out.encoding, errors=out.errors,
        line_buffering=False,
    )


def _open_standard_streams() -> None:
    """A standard stream closed when beaminst started (``2>&-``, ``<&-``) is
    opened on /dev/null, as the C library does for set-user-ID programs: no
    file beaminst opens then takes descriptor 0, 1 or 2 (a report printed
    into the output file), a closed stdin reads as empty, and a closed
    stdout or stderr takes what is written, as ``> /dev/null`` would."""
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        if getattr(sys, name) is not None:
            continue
        try:
            os.fstat(fd)
            continue  # open after all: Python could not wrap it, leave it be
        except OSError:
            pass
        null = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False, encoding="utf-8", errors="replace"))  # noqa: SIM115


def _set_decompression_cap(ctx: Any, _param: Any, value: int | None) -> None:
    # Through the environment, so batch workers and every pass see it too;
    # restored afterwards, for callers that run the CLI in-process.
    if value is not None:
        from beaminst.model.bounded import ENV

        saved = os.environ.get(ENV)
        os.environ[ENV] = str(value)
        ctx.call_on_close(lambda: os.environ.pop(ENV) if saved is None else os.environ.update({ENV: saved}))


def bounds_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--max-decompressed-bytes", type=click.IntRange(min=1, max=1 << 62), metavar="N", envvar="BEAMINST_MAX_DECOMPRESSED_BYTES",
        show_envvar=True, expose_value=False, callback=_set_decompression_cap,
        help="Refuse a pickled payload that decompresses to more than N bytes (default 67108864, 64 MiB: "
        "a few KB of bz2 can inflate to gigabytes). Raise it only for a file you trust.",
    )(fn)


def _set_filesystem_options(ctx: Any, _param: Any, value: tuple[str, ...]) -> tuple[str, ...]:
    # Beam's filesystems take their options process-wide (FileSystems.set_options):
    # set for this command only, restored afterwards for in-process callers.
    for arg in value:
        if not arg.startswith("--"):
            _fail(f"--pipeline-arg {arg!r}: expected a Beam option, --flag=value")
    if value:
        from beaminst.cache.cachefs import filesystem_options

        ctx.with_resource(filesystem_options(value))
    return value


def filesystem_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--pipeline-arg", "filesystem_args", multiple=True, metavar="ARG", expose_value=False,
        callback=_set_filesystem_options,
        help="Beam pipeline option for the filesystem of a --cache-dir URL (repeatable), as Beam's PipelineOptions "
        "spell it: --pipeline-arg=--s3_endpoint_url=http://minio:9000, --pipeline-arg=--project=my-project.",
    )(fn)


CACHE_DIR_HELP = (
    "Cache directory in Beam's FileBasedCacheManager / StreamingCache layout: a local path, or a URL on a "
    "filesystem of Beam's (gs://, s3://, azfs://, hdfs://) for workers on other machines."
)


def source_rules_options(urn_help: str, infer_help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--unbounded-urn and --infer-unbounded, handed to the command as one
    :class:`~beaminst.options.SourceRules` named ``rules``."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def command(*args: Any, unbounded_urns: tuple[str, ...], infer_unbounded: bool, **kwargs: Any) -> Any:
            from beaminst.options import SourceRules

            # Cannot refuse: _urns made the same check, as a usage error.
            return fn(*args, rules=SourceRules(unbounded_urns, infer_unbounded), **kwargs)

        command = click.option("--infer-unbounded", is_flag=True, help=infer_help)(command)
        return click.option(
            "--unbounded-urn", "unbounded_urns", multiple=True, callback=_urns, metavar="URN", help=urn_help
        )(command)

    return decorate


def common_inputs(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = bounds_option(fn)
    fn = filesystem_option(fn)
    fn = source_rules_options(
        "Extra transform URN to treat as an unbounded source (repeatable), e.g. beam:transform:teststream:v1.",
        "Also treat any leaf transform with UNBOUNDED outputs and bounded or no inputs as an unbounded source.",
    )(fn)
    fn = click.option("--cache-dir", type=_path(), help=CACHE_DIR_HELP)(fn)
    fn = click.option("-m", "--manifest", type=_path(allow_dash=True), help="Variable-binding manifest (JSON); - for stdin.")(fn)
    fn = click.argument("pipeline", type=_path(allow_dash=True))(fn)
    return fn


@main.command(
    epilog="""\b
Examples:
  beaminst analyze wordcount.pb -m wordcount.manifest.json
  beaminst analyze wordcount.pb -m wordcount.manifest.json --cache-dir cache/ --json
  cat pipeline.textproto | beaminst analyze - --unbounded-urn beam:transform:teststream:v1
"""
)
@common_inputs
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (schema in the README).")
@handle_errors
def analyze(
    pipeline: str,
    manifest: str | None,
    cache_dir: str | None,
    rules: SourceRules,
    as_json: bool,
) -> None:
    """Show what Interactive Beam would see in PIPELINE.

    PCollections with their producer, tag and boundedness; bound variables
    with their cache keys and cache state; unbounded sources.
    """
    from beaminst.commands.api import analyze_files

    if pipeline == "-" and manifest == "-":
        _fail("PIPELINE and --manifest cannot both be read from stdin")
    result = analyze_files(pipeline, manifest, cache_dir, rules)
    if as_json:
        _echo_json(result.to_json())
        return
    from beaminst.commands.nextsteps import Invocation, after_analyze
    from beaminst.commands.report import print_analysis

    how = Invocation(pipeline, manifest, cache_dir, rules)
    print_analysis(_human(), result, after_analyze(how, result))


@main.command(
    epilog="""\b
Examples:
  beaminst show wordcount.pb -m wordcount.manifest.json --cache-dir cache/ words counts
  beaminst show wordcount.pb -m wordcount.manifest.json --cache-dir cache/   # every cached variable
  beaminst show wordcount.pb -m wordcount.manifest.json --cache-dir cache/ counts | sort -t$'\\t' -k2 -n
  beaminst show events.pb -m m.json --cache-dir cache/ events --json --include-window-info | jq .event_time
  beaminst show wordcount.pb -m m.json --cache-dir cache/ counts --csv > counts.csv

\b
Exit codes: 0 shown (variables with no cache are noted on stderr), 2 none of
them has a cache, an unknown variable, or a cache that cannot be read.
""",
)
@common_inputs
@click.argument("variables", nargs=-1, metavar="[VAR]...")
@click.option(
    "--limit", type=click.IntRange(min=0), metavar="N",
    help="Show at most N elements per variable, still counting them all "
    "(default: 20 in the table on a terminal, all otherwise).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON value per element and line (encoding in the README).")
@click.option("--csv", "as_csv", is_flag=True, help="CSV with a header row (one VAR).")
@click.option(
    "--include-window-info", is_flag=True,
    help="Add each element's event_time (microseconds), windows and pane_info, as ib.collect does.",
)
@click.option(
    "--trust-pickles", is_flag=True,
    help="Decode elements with Beam's own unpickler, unchecked. This RUNS CODE FROM THE CACHE and the "
    "pipeline: only for files you trust (default: only Beam's classes and plain data are loaded).",
)
@handle_errors
def show(
    pipeline: str,
    manifest: str | None,
    cache_dir: str | None,
    rules: SourceRules,
    variables: tuple[str, ...],
    limit: int | None,
    as_json: bool,
    as_csv: bool,
    include_window_info: bool,
    trust_pickles: bool,
) -> None:
    """Print the cached elements of bound variables VAR..., as ib.show / ib.collect do.

    Variables are named as in the manifest (or synthetic_var_... for unbound
    source outputs, as analyze shows them); with no VAR, every variable that
    has a cache (the others named on stderr). Reads FileBasedCacheManager shards
    and StreamingCache recordings alike, decoding with the coders the pipeline
    declares. A table on a terminal, else tab-separated lines; --json, --csv.
    """
    from beaminst.commands import showformat
    from beaminst.commands.show import plan_show, write_show

    if pipeline == "-" and manifest == "-":
        _fail("PIPELINE and --manifest cannot both be read from stdin")
    if not cache_dir:
        _fail("show needs --cache-dir: the cache to read")
    if as_json and as_csv:
        _fail("--json and --csv are exclusive")
    if as_csv and len(set(variables)) != 1:
        _fail("--csv writes one table: name one VAR (run show once per variable)")
    mode = showformat.JSON if as_json else showformat.CSV if as_csv else (
        showformat.TABLE if sys.stdout.isatty() else showformat.PLAIN
    )
    if limit is None and mode == showformat.TABLE:
        limit = 20
    plan = plan_show(pipeline, manifest, cache_dir, variables, rules)
    for note in plan.notes:
        click.echo(f"beaminst: {note}", err=True)
    write_show(
        plan, mode, limit, include_window_info, trust_pickles, sys.stdout, _console,
        lambda line: click.echo(f"beaminst: {line}", err=True),
    )


def output_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option(
        "--output-format",
        type=click.Choice(["binary", "text", "json"]),
        help="Output format (default: from the -o extension, else binary).",
    )(fn)
    fn = click.option(
        "-o", "--output", required=True, type=_path(allow_dash=True), callback=_stdout_alias,
        help="Output proto path; - for stdout.",
    )(fn)
    fn = click.option("--json", "as_json", is_flag=True, help="Print a JSON report of what was done.")(fn)
    return fn


def worker_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option(
        "--trust-pickles", is_flag=True,
        help="Let the Beam SDK load the pipeline's pickled coders and window functions unchecked. "
        "This RUNS CODE FROM THE FILE: only for pipelines you trust (default: only Beam's own classes "
        "and plain data are loaded, anything else is refused by name).",
    )(fn)
    fn = click.option(
        "--target-sdk", metavar="VERSION",
        help="Beam Python SDK version of the workers, for pipelines whose environment does not say it "
        "(refused when the installed Beam builds cache transforms that version cannot load).",
    )(fn)
    fn = click.option(
        "--environment-config", metavar="CONFIG",
        help="As Beam's --environment_config: image, process command JSON or worker pool address.",
    )(fn)
    fn = click.option(
        "--environment-type", metavar="TYPE",
        help="As Beam's --environment_type (DOCKER, PROCESS, EXTERNAL): the Python SDK environment added for "
        "the grafted transforms when the pipeline has none of its own (default DOCKER, the installed Beam's image).",
    )(fn)
    return fn


def _rewrite_options(
    cache_dir: str,
    environment_type: str | None,
    environment_config: str | None,
    target_sdk: str | None,
    trust_pickles: bool,
    **rest: Any,
) -> Any:
    """The rewrite's options from worker_options' flags and the command's own (``rest``)."""
    from beaminst.options import RewriteOptions, WorkerOptions

    worker = WorkerOptions(environment_type, environment_config, target_sdk)
    return RewriteOptions(cache_dir, worker=worker, trust_pickles=trust_pickles, **rest)


def _check_rewrite_inputs(pipeline: str, manifest: str | None, cache_dir: str | None, no_cache_dir: str) -> None:
    if pipeline == "-" and manifest == "-":
        _fail("PIPELINE and --manifest cannot both be read from stdin")
    if not cache_dir:
        _fail(no_cache_dir)


def _refuse_binary_to_terminal(output: str, output_format: str | None) -> None:
    if not (sys.stdout.isatty() if output == "-" else _names_a_terminal(output)):
        return
    from beaminst.model.protoio import output_format as resolve

    if resolve(output, output_format) == "binary":
        _fail(
            f"-o {output}: refusing to write a binary pipeline proto to the terminal; redirect it (-o - > out.pb), "
            "name a file with -o, or pass --output-format text"
        )


def _names_a_terminal(path: str) -> bool:
    """Whether ``path`` is a terminal device (``-o /dev/tty``, ``-o $(tty)``):
    ``-o`` writes through a character device, as a shell redirection does."""
    import stat

    try:
        if not stat.S_ISCHR(os.stat(path).st_mode):
            return False
        fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        return False  # no such device, or none this process can open: writing it says so
    try:
        return os.isatty(fd)
    finally:
        os.close(fd)


def _emit_report(report: Any, as_json: bool, output: str, title: str, next_steps: list[str]) -> None:
    # With the proto on stdout, the report goes to stderr.
    to_err = output == "-"
    if as_json:
        _echo_json(report.to_json(), err=to_err)
        return
    from beaminst.commands.report import print_instrument_report

    print_instrument_report(_human(err=to_err), report, title, next_steps)


@main.command(
    epilog="""\b
Examples:
  beaminst instrument wordcount.pb -m wordcount.manifest.json --cache-dir cache/ -o instrumented.pb
  beaminst instrument wordcount.pb -m m.json --cache-dir cache/ -o - > instrumented.pb
  beaminst instrument edited.pb -m m.json --cache-dir cache/ --reuse -o rerun.pb
  beaminst instrument pubsub.pb -m m.json --cache-dir cache/ -o out.textproto --test-stream-endpoint localhost:12345
"""
)
@common_inputs
@output_options
@worker_options
@click.option(
    "--reuse", is_flag=True,
    help="Count every binding whose complete cache exists under its content-derived key as computed "
    "(as \"computed\": \"auto\" in the manifest): after an edit only what lies downstream of it recomputes.",
)
@click.option(
    "--test-stream-endpoint",
    metavar="HOST:PORT",
    callback=_endpoint,
    help="TestStreamService the TestStream reads from (default: inline the events recorded in --cache-dir).",
)
@handle_errors
def instrument(
    pipeline: str,
    manifest: str | None,
    cache_dir: str | None,
    rules: SourceRules,
    output: str,
    output_format: str | None,
    as_json: bool,
    environment_type: str | None,
    environment_config: str | None,
    target_sdk: str | None,
    trust_pickles: bool,
    reuse: bool,
    test_stream_endpoint: str | None,
) -> None:
    """Write the pipeline Interactive Beam would run for PIPELINE.

    Bound PCollections not yet in --cache-dir get Beam's cache writes;
    computed, cached ones are read back from the cache and what only fed them
    is pruned. With unbounded sources, one TestStream replays what the
    background caching job recorded.
    """
    from beaminst.commands.api import instrument_files

    _check_rewrite_inputs(pipeline, manifest, cache_dir, "instrument needs --cache-dir: the cache transforms read and write there")
    _refuse_binary_to_terminal(output, output_format)
    options = _rewrite_options(
        cache_dir, environment_type, environment_config, target_sdk, trust_pickles,
        test_stream_endpoint=test_stream_endpoint,
    )
    report = instrument_files(pipeline, output, manifest, options, rules, output_format, reuse)
    from beaminst.commands.nextsteps import Invocation, after_instrument

    how = Invocation(pipeline, manifest, cache_dir, rules)
    steps = after_instrument(
        how, output, [w.var for w in report.writes], bool(report.reads), report.runs_in_process, len(report.skipped)
    )
    _emit_report(report, as_json, output, "instrument", steps)


@main.command(
    name="run",
    epilog="""\b
Examples:
  beaminst run instrumented.pb
  beaminst run record.pb --max-duration 30 --max-bytes 10000000
  beaminst run instrumented.pb --job-endpoint localhost:8099
  beaminst run instrumented.pb --job-endpoint flink:8099 --environment-type DOCKER \\
      --environment-config apache/beam_python3.11_sdk:2.77.0
  beaminst run instrumented.pb --pipeline-arg=--direct_num_workers=2 --json | jq .state

\b
Exit codes: 0 when the job is DONE (or a recording was stopped at its limit),
2 otherwise: the job's state and last error on one line (with beaminst -v,
the job's messages after it).
This runs the pipeline's code: only run pipelines you trust.
""",
)
@click.argument("pipeline", type=_path(allow_dash=True))
@click.option(
    "--job-endpoint", metavar="HOST:PORT",
    help="Submit the proto as it is through the Job API to this job server (Flink, Spark, Prism, Beam's job "
    "service) instead of running it locally on the DirectRunner.",
)
@click.option(
    "--environment-type", metavar="TYPE",
    help="With --job-endpoint: as Beam's --environment_type (LOOPBACK, DOCKER, PROCESS, EXTERNAL), the environment "
    "that replaces the placeholder beam:env:default:v1 (default LOOPBACK for a job server on this machine, else DOCKER).",
)
@click.option(
    "--environment-config", metavar="CONFIG",
    help="With --job-endpoint: as Beam's --environment_config (image, process command JSON, worker pool address).",
)
@click.option(
    "--pipeline-arg", "pipeline_args", multiple=True, metavar="ARG",
    help="Beam pipeline option, passed to PipelineOptions (repeatable), e.g. --pipeline-arg=--direct_num_workers=2 "
    "or --pipeline-arg=--runner=PrismRunner.",
)
@click.option(
    "--max-duration", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS", callback=_finite_seconds,
    help="Recording limit: cancel a background caching job after SECONDS (default 60, as "
    "ib.options.recording_duration).",
)
@click.option(
    "--max-bytes", type=click.IntRange(min=1), metavar="N",
    help="Recording limit: cancel a background caching job once its capture files hold N bytes (default "
    "1000000000, as ib.options.recording_size_limit).",
)
@click.option(
    "--cache-dir", type=_path(),  # a file: refused by run itself, in the words every command uses
    help="Where to measure the recording (default: the directory the capture writes name in the proto); a local "
    "directory. A pipeline that records nothing does not use it (and says so).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report (state, seconds, errors, recorded, ...).")
@handle_errors
def run_command(
    pipeline: str,
    job_endpoint: str | None,
    environment_type: str | None,
    environment_config: str | None,
    pipeline_args: tuple[str, ...],
    max_duration: float | None,
    max_bytes: int | None,
    cache_dir: str | None,
    as_json: bool,
) -> None:
    """Run PIPELINE as it is and follow the job to its end.

    Locally on Beam's Python runners by default (DirectRunner, streaming when
    the proto has UNBOUNDED PCollections), or through the Job API with
    --job-endpoint. A background caching proto (capture writes of unbounded
    sources) is a recording: it is cancelled at --max-duration or --max-bytes,
    as Interactive Beam stops its background caching job, and the report says
    what was recorded.
    """
    from beaminst.run import RunOptions, run_file
    from beaminst.run.console import print_run_report, status_line

    if (environment_type or environment_config) and not job_endpoint:
        _fail("--environment-type and --environment-config only apply with --job-endpoint")
    for arg in pipeline_args:
        if not arg.startswith("--"):
            _fail(f"--pipeline-arg {arg!r}: expected a Beam option, --flag=value")
    options = RunOptions(
        job_endpoint, environment_type, environment_config, pipeline_args, max_duration, max_bytes, cache_dir
    )
    with status_line(sys.stderr.isatty()) as status:
        report = run_file(pipeline, options, status)
    if as_json:
        _echo_json(report.to_json())
    else:
        print_run_report(_human(), report)
    failure = report.failure()
    if failure:
        from beaminst.errors import printable

        # A failed run is one line, as bad input is; the job's messages (Beam's
        # tracebacks) only when asked for. --json has them all regardless.
        messages = report.distinct_messages()
        verbose = bool(click.get_current_context().find_root().params.get("verbose"))
        more = " (rerun with beaminst -v to see the job's messages and tracebacks)" if messages and not verbose else ""
        click.echo(f"beaminst: {printable(report.pipeline)}: {failure}{more}", err=True)
        if verbose:
            for m in messages:
                click.echo(m.text.rstrip(), err=True)
        if report.cancel_unconfirmed:  # the runner's threads may run for minutes more: exit regardless
            raise _LeavesAJobBehind(2)
        sys.exit(2)


@main.command(
    name="background-caching",
    epilog="""\b
Examples:
  beaminst background-caching pubsub.pb -m pubsub.manifest.json --cache-dir cache/ -o record.pb
  beaminst background-caching stream.pb --unbounded-urn beam:transform:teststream:v1 --cache-dir cache/ -o record.pb
  beaminst background-caching other_sdk.pb --infer-unbounded --cache-dir cache/ -o - --json > record.pb
  beaminst background-caching batch.pb --cache-dir cache/ -o record.pb --allow-empty
""",
)
@common_inputs
@output_options
@worker_options
@click.option(
    "--allow-empty",
    is_flag=True,
    help="With no unbounded source, write an empty (root-only) pipeline and exit 0 instead of failing.",
)
@handle_errors
def background_caching(
    pipeline: str,
    manifest: str | None,
    cache_dir: str | None,
    rules: SourceRules,
    output: str,
    output_format: str | None,
    as_json: bool,
    environment_type: str | None,
    environment_config: str | None,
    target_sdk: str | None,
    trust_pickles: bool,
    allow_empty: bool,
) -> None:
    """Write Interactive Beam's background caching job for PIPELINE.

    Every unbounded source (same rules as analyze), each followed by Beam's
    capture write into the StreamingCache in --cache-dir, keyed by the cache
    key of the source output (its bound variable's, else the synthetic
    variable's); everything else is cut. Run the result to record the sources;
    then instrument replays the recording. With no unbounded source: exit 2,
    unless --allow-empty.
    """
    from beaminst.commands.api import background_caching_files

    _check_rewrite_inputs(pipeline, manifest, cache_dir, "background-caching needs --cache-dir: the capture writes record there")
    _refuse_binary_to_terminal(output, output_format)
    options = _rewrite_options(
        cache_dir, environment_type, environment_config, target_sdk, trust_pickles, allow_empty=allow_empty
    )
    report = background_caching_files(pipeline, output, manifest, options, rules, output_format)
    from beaminst.commands.nextsteps import Invocation, after_background_caching

    how = Invocation(pipeline, manifest, cache_dir, rules)
    steps = after_background_caching(
        how, output, bool(report.writes), report.runs_in_process, report.recorded_already
    )
    _emit_report(report, as_json, output, "background-caching", steps)


def _batch_modes() -> list[str]:
    from beaminst.batch import MODES  # standard library only: --help stays light

    return list(MODES)


@main.command(
    epilog="""\b
Examples:
  beaminst batch exports/ -o instrumented/ --cache-dir cache/
  beaminst batch 'exports/**/*.pb' -o out/ --cache-dir cache/ -m bindings.json --jobs 8
  beaminst batch streams/ -o record/ --mode background-caching --cache-dir cache/ --json > report.json
  beaminst batch edited/ -o rerun/ --cache-dir cache/ --reuse     # what is cached is read back
  beaminst batch exports/ -o out/ --cache-dir cache/ --runner DirectRunner
  beaminst batch /mnt/shared/in -o /mnt/shared/out --cache-dir /mnt/shared/cache \\
      --runner FlinkRunner --pipeline-arg=--flink_master=flink:8081
"""
)
@click.argument("src")
@click.option(
    # Not click's file_okay=False: its 'Directory 'X' is a file' usage error
    # reads oddly; planning says it on one line naming the path.
    "-o", "--output", "dest", required=True, type=_path(),
    help="Destination directory; outputs mirror SRC's layout (same relative path and file name).",
)
@click.option(
    "--mode", type=click.Choice(_batch_modes()), default="instrument", show_default=True,
    help="The rewrite applied to every file, as the command of the same name.",
)
@click.option(
    "--cache-dir", type=_path(),
    help="Cache directory shared by every file (required): a path, or a URL (gs://, s3://...) every worker reaches.",
)
@click.option(
    "-m", "--manifest", type=_path(dir_okay=False),
    help="One manifest for every file (default: X.manifest.json beside each X.pb, else none).",
)
@click.option("-j", "--jobs", type=click.IntRange(min=1), help="Worker processes (default: the CPU count).")
@click.option("--force", is_flag=True, help="Rewrite every file, even outputs recorded as up to date.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report (per-file results and totals).")
@click.option(
    "--runner", metavar="NAME",
    help="Run the batch as a Beam pipeline on this runner (DirectRunner, PrismRunner, FlinkRunner, ...) "
    "instead of local processes.",
)
@click.option(
    "--pipeline-arg", "pipeline_args", multiple=True, metavar="ARG",
    help="Option for the --runner pipeline, passed to Beam's PipelineOptions (repeatable), "
    "e.g. --pipeline-arg=--flink_master=flink:8081; with a --cache-dir URL, also its filesystem's options "
    "(--pipeline-arg=--s3_endpoint_url=URL), for this process and every worker.",
)
@source_rules_options("As for instrument (repeatable).", "As for instrument.")
@bounds_option
@click.option("--allow-empty", is_flag=True, help="As for background-caching (only with --mode background-caching).")
@click.option(
    "--reuse", is_flag=True,
    help="As for instrument, in every file: a binding whose complete cache exists under its content-derived key "
    "counts as computed (only with --mode instrument).",
)
@worker_options
@handle_errors
def batch(
    src: str,
    dest: str,
    mode: str,
    cache_dir: str | None,
    manifest: str | None,
    jobs: int | None,
    force: bool,
    as_json: bool,
    runner: str | None,
    pipeline_args: tuple[str, ...],
    rules: SourceRules,
    allow_empty: bool,
    reuse: bool,
    environment_type: str | None,
    environment_config: str | None,
    target_sdk: str | None,
    trust_pickles: bool,
) -> None:
    """Rewrite every pipeline under SRC into DEST, in parallel.

    SRC is a directory (walked recursively) or a quoted glob pattern; the
    pipelines are *.pb, *.binpb, *.textproto, *.pbtxt, *.txtpb and *.json
    files that are not *.manifest.json. X.pb pairs with X.manifest.json beside
    it unless --manifest is given. Outputs made the same way from the same
    input, manifest and cache entries (recorded in
    DEST/.beaminst-batch-state.json) are skipped. One bad file never stops the others: each
    error is one line on stderr, and the exit code is 2 if any file failed.
    """
    from beaminst.batch import BatchSpec, iter_errors, print_batch_report, progress_bar, run_batch

    options = _rewrite_options(
        cache_dir or "", environment_type, environment_config, target_sdk, trust_pickles, allow_empty=allow_empty
    )
    spec = BatchSpec(  # refuses options that do not go together, as for a library caller
        src, dest, options, mode=mode, rules=rules, manifest=manifest,
        force=force, jobs=jobs, runner=runner, pipeline_args=pipeline_args, reuse=reuse,
    )
    with progress_bar(sys.stderr.isatty()) as progress:
        report = run_batch(spec, progress)
    if as_json:
        _echo_json(report.to_json())
    else:
        from beaminst.commands.nextsteps import after_batch

        # What has something to run: a root-only --allow-empty output (no write, no read) records nothing.
        written = [
            r["output"] for r in report.results
            if r["status"] in ("ok", "skipped") and not (r["writes"] == 0 and not r["reads"])
        ]
        print_batch_report(_human(), report, after_batch(mode, written))
    for line in iter_errors(report):
        click.echo(f"beaminst: {line}", err=True)
    if report.failed:
        sys.exit(2)


@main.command(
    name="diff",
    epilog="""\b
Examples:
  beaminst diff wordcount.pb instrumented.pb
  beaminst diff wordcount.pb instrumented.pb | grep -F WriteCache_
  beaminst diff wordcount.pb instrumented.pb | cut -f1,2 | sort | uniq -c
  beaminst diff wordcount.pb instrumented.pb --json | jq '.transforms.added[].name'
  beaminst diff old.pb new.pb --format markdown > comment.md
  beaminst diff /dev/null new.pb               # everything added
  beaminst diff old.pb new.pb > /dev/null; [ $? -eq 1 ] && echo "pipeline changed"  # 2: an error

\b
Formats (--format; the default is human on a terminal, plain otherwise):
  human     a tree grouped by kind of change
  plain     one tab-separated record a line, never wrapped or cut:
            CHANGE KIND NAME ...  with CHANGE one of + - ~ and KIND one of
            transform, input (a rewired input), pcollection, coder,
            windowing_strategy, environment, requirement (fields: README)
  markdown  a summary for a pull-request comment
  json      every detail (--json; schema in the README)

\b
As a git diff driver (.gitattributes: *.pb diff=beam):
  git config diff.beam.command "beaminst diff --git-driver"
  git diff; git log -p --ext-diff; git show --ext-diff

\b
Exit codes: 0 identical, 1 differences found, 2 error (as diff(1)); with
--git-driver 0 unless an error (git stops at a non-zero exit).
""",
)
@click.argument("files", nargs=-1, metavar="BEFORE AFTER", type=_path(allow_dash=True))
@click.option(
    "--format", "fmt", type=click.Choice(["human", "plain", "markdown", "json"]),
    help="Output format (default: human on a terminal, plain otherwise).",
)
@click.option("--json", "as_json", is_flag=True, help="The same as --format json (schema in the README).")
@click.option("--show-payloads", is_flag=True, help="Show an escaped prefix of payload bytes (default: URN and length only).")
@click.option(
    "--git-driver", is_flag=True,
    help="Take git's external diff arguments (path old-file old-hex old-mode new-file new-hex new-mode) "
    "instead of BEFORE AFTER; see below.",
)
@bounds_option
@handle_errors
def diff_command(files: tuple[str, ...], fmt: str | None, as_json: bool, show_payloads: bool, git_driver: bool) -> None:
    """Compare two pipelines by meaning, not by id.

    Transforms are matched by unique name, PCollections by producer and output
    tag, coders, windowing strategies and environments by content. Reports
    transforms added, removed and changed, rewired inputs, PCollections added,
    removed and changed, and components added and removed. /dev/null is the
    empty pipeline.
    """
    from beaminst.commands import diffformat
    from beaminst.commands.api import diff_files

    if as_json and fmt not in (None, "json"):
        _fail(f"--json is --format json: give one of --json and --format {fmt}")
    fmt = "json" if as_json else fmt or (diffformat.HUMAN if sys.stdout.isatty() else diffformat.PLAIN)
    if git_driver:
        sides = _git_driver_sides(files)
        if sides is None:
            return
        (before, after), sources = sides
    elif len(files) != 2:
        glob = len(files) > 2 and all(os.path.exists(f) for f in files)
        hint = "; an unquoted glob? For many pipelines use beaminst batch 'SRC/*.pb' -o DEST (quoted)" if glob else ""
        _fail(f"diff takes BEFORE and AFTER, got {len(files)} argument(s){hint} (see beaminst diff --help)")
    else:
        (before, after), sources = files, (None, None)
    if before == "-" and after == "-":
        _fail("BEFORE and AFTER cannot both be read from stdin")
    result = diff_files(before, after, show_payloads, sources)
    if not git_driver:
        _write_diff(result, fmt, show_payloads)
        if not result.identical:
            sys.exit(1)
        return
    try:
        if fmt in (diffformat.HUMAN, diffformat.PLAIN):
            from beaminst.errors import printable

            # git prints no header of its own for an external diff: say which file.
            sys.stdout.write(f"diff --beam {printable(result.before)} {printable(result.after)}\n")
        _write_diff(result, fmt, show_payloads)
        sys.stdout.flush()
    except BrokenPipeError:
        # git's reader left (git diff | head): git stops at any non-zero exit
        # with "external diff died"; exiting 0 leaves it to meet the closed
        # pipe itself, and end quietly, as with its own diff.
        _detach_stdout()
        sys.exit(0)


def _write_diff(result: Any, fmt: str, show_payloads: bool) -> None:
    from beaminst.commands import diffformat

    if fmt == diffformat.JSON:
        _echo_json(result.to_json())
    elif fmt == diffformat.MARKDOWN:
        sys.stdout.write(diffformat.markdown(result))
    elif fmt == diffformat.PLAIN:
        diffformat.write_plain(sys.stdout, result, show_payloads)
    else:
        diffformat.print_tree(_console(), result, show_payloads)


def _git_driver_sides(args: tuple[str, ...]) -> tuple[tuple[str, str], tuple[str, str]] | None:
    """(old file, new file), ("a/PATH", "b/PATH") from git's external diff
    arguments: 7, or 9 for a rename (new path and git's rename header appended);
    an unmerged path gets 1, and is said so here (None: nothing to diff)."""
    if len(args) == 1:
        click.echo(f"* Unmerged path {args[0]}")
        return None
    if len(args) not in (7, 9):
        _fail(
            f"--git-driver takes the arguments git passes an external diff (7, or 9 for a rename), got {len(args)}: "
            'configure it as git config diff.beam.command "beaminst diff --git-driver"'
        )
    path, old_file, _old_hex, _old_mode, new_file, _new_hex, _new_mode, *rename = args
    new_path = rename[0] if rename else path
    # An added (deleted) file's missing side is /dev/null, as git names it.
    labels = (old_file if old_file == os.devnull else f"a/{path}", new_file if new_file == os.devnull else f"b/{new_path}")
    return (old_file, new_file), labels


@main.command(
    name="graph",
    epilog="""\b
Examples:
  beaminst graph wordcount.pb -m wordcount.manifest.json > wordcount.dot
  beaminst graph wordcount.pb -m wordcount.manifest.json -o wordcount.svg
  beaminst graph instrumented.pb --against wordcount.pb -m wordcount.manifest.json -o changes.png
  beaminst graph instrumented.pb --depth 1 -o overview.svg      # top-level transforms only
  beaminst graph instrumented.pb --expand-cache -o cache.svg    # Beam's WriteToText/ReadFromText inside
  beaminst graph pipeline.pb | dot -Tpdf > pipeline.pdf
""",
)
@click.argument("pipeline", type=_path(allow_dash=True))
@click.option(
    "--format", "fmt", type=click.Choice(["dot", "svg", "png"]),
    help="Output format (default: from the -o extension, else dot). svg and png need Graphviz.",
)
@click.option("-o", "--output", default="-", show_default=True, type=_path(allow_dash=True), callback=_stdout_alias,
              help="Output path; - for stdout.")
@click.option(
    "--against", metavar="ORIGINAL", type=_path(allow_dash=True),
    help="Highlight transforms added relative to ORIGINAL and draw the ones it had that are gone ghosted.",
)
@click.option(
    "-m", "--manifest", type=_path(allow_dash=True),
    help="Binding manifest: label edges with variable names (with --against, ORIGINAL's manifest).",
)
@click.option(
    "--depth", type=click.IntRange(min=1), metavar="N",
    help="Draw N levels of nesting: top-level transforms are level 1, and a composite at level N is one node "
    "(edges to anything inside it end at that node). Default: every level.",
)
@click.option(
    "--expand-cache", is_flag=True,
    help="Draw the cache subgraphs instrument and background-caching graft (WriteCache_<key>, ReadCache_<key>, "
    "each with its reify step) transform by transform, Beam's WriteToText/ReadFromText inside; by default each "
    "is one node.",
)
@bounds_option
@handle_errors
def graph_command(
    pipeline: str, fmt: str | None, output: str, against: str | None, manifest: str | None,
    depth: int | None, expand_cache: bool,
) -> None:
    """Draw PIPELINE as a Graphviz graph.

    Composites are clusters, leaf transforms are nodes, PCollections are edges
    labelled with their bound variable (else their output tag); a cache
    write or read beaminst grafted is one node. Long labels and cache keys
    are shortened (the tooltip has them whole). The output is deterministic.
    """
    from beaminst.commands.api import graph_files

    if [pipeline, against, manifest].count("-") > 1:
        _fail("only one of PIPELINE, --against and --manifest can be read from stdin")
    if output == "-" and fmt == "png" and sys.stdout.isatty():
        _fail("refusing to write PNG to a terminal: use -o FILE.png")
    graph_files(pipeline, output, fmt, manifest, against, depth, expand_cache,
                warn=lambda line: click.echo(f"beaminst: warning: {line}", err=True))


if __name__ == "__main__":  # pragma: no cover
    entry()
