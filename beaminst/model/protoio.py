"""Loading and saving ``beam_runner_api.Pipeline`` protos.

Three formats: binary (the wire format Beam writes), text format and JSON
(protobuf's ``json_format``). The format is detected from the content; the
file extension is only a tie-breaker. Output is deterministic (map entries
sorted) and written atomically: a temp file in the target directory, fsync,
then ``os.replace``, so a reader never sees half a file and a failure leaves
nothing behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from typing import IO, Any, Literal

from beaminst.errors import OutputError, ProtoLoadError
from beaminst.limits import env_limit
from beaminst.model.beamproto import runner_api
from beaminst.model.jsondepth import check_json_depth
from beaminst.model.tempfiles import sweep_dead_writers, temp_prefix

Format = Literal["binary", "text", "json"]
FORMATS: tuple[Format, ...] = ("binary", "text", "json")
_EXTENSIONS: dict[str, Format] = {
    ".pb": "binary",
    ".bin": "binary",
    ".binpb": "binary",
    ".textproto": "text",
    ".txtpb": "text",
    ".pbtxt": "text",
    ".txt": "text",
    ".json": "json",
}
STDIO = "-"
_UTF8_BOM = b"\xef\xbb\xbf"
# A Pipeline's JSON is about ten levels deep; protobuf's own binary limit.
MAX_JSON_DEPTH = 100
MAX_PIPELINE_BYTES = int(env_limit("BEAMINST_MAX_PIPELINE_BYTES"))


def format_from_extension(path: str) -> Format | None:
    """The format a file name suggests, or None."""
    return _EXTENSIONS.get(os.path.splitext(path)[1].lower())


def read_bytes(path: str, what: str = "a pipeline file", limit: int | None = None) -> bytes:
    """Read a whole input file (``-`` for stdin) with errors naming the file
    (``what`` it should have been, for a directory). At most ``limit`` bytes
    (default: ``BEAMINST_MAX_PIPELINE_BYTES``): a longer input (``/dev/zero``,
    an endless pipe) is refused once that much was read, a longer regular
    file (a sparse one of gigabytes) before reading it, instead of growing
    until memory runs out."""
    cap = MAX_PIPELINE_BYTES if limit is None else limit
    source = "<stdin>" if path == STDIO else path
    try:
        if path == STDIO:
            if sys.stdin.isatty():
                # Nobody types a pipeline proto: waiting in silence looked like a hang.
                raise ProtoLoadError(f"stdin is a terminal: pipe {what} in (- < FILE), or name the file instead", path)
            data = _read_at_most(sys.stdin.buffer, cap)
        else:
            with open(path, "rb") as f:
                data = _read_at_most(f, cap)
    except IsADirectoryError:
        raise ProtoLoadError(f"is a directory, expected {what}", path) from None
    except FileNotFoundError:
        raise ProtoLoadError("no such file", path) from None
    except PermissionError:
        raise ProtoLoadError("permission denied", path) from None
    except OSError as e:
        raise ProtoLoadError(f"cannot read: {e.strerror or e}", source) from None
    if data is None:
        raises = " (BEAMINST_MAX_PIPELINE_BYTES raises it)" if limit is None else ""
        raise ProtoLoadError(f"more than {cap} bytes, over the byte limit for {what}{raises}", source)
    return data


def _read_at_most(f: IO[bytes], cap: int) -> bytes | None:
    """All of ``f``, or None when it holds more than ``cap`` bytes. Reads
    ask for what the file holds, or a chunk at a time: ``read(cap + 1)``
    allocates the whole cap first (16 ms a read for 1 GiB)."""
    first = _CHUNK
    with contextlib.suppress(OSError, ValueError, AttributeError):  # not a file with a descriptor
        st = os.fstat(f.fileno())
        if stat.S_ISREG(st.st_mode):
            if st.st_size > cap:
                return None
            first = st.st_size + 1  # one read, and the next finds the end (or what was appended)
    pieces, total = [], 0
    while True:
        piece = f.read(min(first if not pieces else _CHUNK, cap + 1 - total))
        if not piece:
            break
        pieces.append(piece)
        total += len(piece)
        if total > cap:
            return None
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


_CHUNK = 1 << 20


_TEXT_WHITESPACE = b"\t\n\x0b\x0c\r"  # bytes.isspace's, less the space (>= 0x20 already)


def _first_non_space(data: bytes) -> bytes:
    """The first byte that is not ASCII whitespace (b"" if none), without the
    copy ``data.lstrip()`` makes: a binary Pipeline starts with b"\\n" (field 1),
    so stripping it copied the whole file."""
    for i in range(0, len(data), 4096):
        head = data[i : i + 4096].lstrip()[:1]
        if head:
            return head
    return b""


def _sniff(data: bytes) -> list[Format]:
    """Formats worth trying, most likely first."""
    head = _first_non_space(data)
    if head == b"{":
        return ["json", "text", "binary"]
    # From the first 4 KiB alone. A binary Pipeline with a component or a
    # root has a control byte there (0x12: a map entry's value tag, or
    # root_transform_ids' own; every fixture's is tested). A
    # text file that is not UTF-8 further on is still text first, so the
    # error names the byte that does not decode rather than binary's "Error
    # parsing message" (and decoding the whole file allocated a string as
    # long as it, before failing at a binary file's second byte).
    looks_textual = all(b >= 0x20 or b in _TEXT_WHITESPACE for b in data[:4096])
    return ["text", "binary", "json"] if looks_textual else ["binary", "text", "json"]


def parse_pipeline(data: bytes, source: str = "<bytes>", hint: Format | None = None) -> tuple[Any, Format]:
    """Parse pipeline bytes in any supported format; returns (proto, format)."""
    if data.startswith(_UTF8_BOM):
        # Some editors prefix text with a BOM; no binary Pipeline starts with
        # 0xEF (field 29 with wire type 7 does not exist), so this is safe.
        data = data[len(_UTF8_BOM) :]
    if not _first_non_space(data):
        # One newline is also how every binary Pipeline starts (0x0a, field 1):
        # a file of whitespace may be one cut short, not an empty one.
        what = "file is empty" if not data else (
            f"file holds only whitespace ({len(data)} byte{'' if len(data) == 1 else 's'}; a binary proto cut short "
            "starts so too)"
        )
        raise ProtoLoadError(f"{what}, expected a Beam pipeline proto", source)
    order = _sniff(data)
    if hint in order:
        # The extension only reorders candidates: every format is still tried.
        order.remove(hint)
        order.insert(0, hint)
    errors: dict[str, str] = {}
    for fmt in order:
        try:
            proto = _PARSERS[fmt](data)
        except Exception as e:  # protobuf raises several unrelated types
            errors[fmt] = _shortened(" ".join(str(e).split())) or type(e).__name__
            continue
        if _looks_like_pipeline(proto):
            return proto, fmt
        errors[fmt] = "parsed, but holds no pipeline (no components and no root transforms)"
    doc = _json_object(data)
    if doc is not None and "bindings" in doc:
        # batch reads every *.json of SRC: the name that pairs a manifest there too.
        raise ProtoLoadError(
            "this is a binding manifest (JSON with \"bindings\"), not a pipeline proto (a manifest goes with -m, "
            "or, for batch, beside X.pb as X.manifest.json)", source,
        )
    keys = _foreign_json_keys(doc)
    if keys:
        shown = ", ".join(keys[:5]) + (", ..." if len(keys) > 5 else "")
        raise ProtoLoadError(
            f"JSON, but not a Beam pipeline: it has none of a Pipeline's fields (components, rootTransformIds), "
            f"only {shown}", source,
        )
    best = order[0]
    raise ProtoLoadError(
        f"not a valid Beam pipeline proto (tried {', '.join(order)}; "
        f"as {best}: {errors.get(best, 'unknown error')})",
        source,
    )


def _shortened(text: str, limit: int = 200) -> str:
    """``text`` cut at a word boundary (protobuf's messages can list every field)."""
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + " ..."


def _json_object(data: bytes) -> dict[str, Any] | None:
    """``data`` as a JSON object, for errors that say what a file is instead; else None."""
    import json

    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def _foreign_json_keys(doc: dict[str, Any] | None) -> list[str] | None:
    """The top-level keys of a JSON object that has no field of a Pipeline
    (a package.json beside the protos), else None (an empty object: empty)."""
    if doc is None:
        return None
    fields = runner_api().Pipeline.DESCRIPTOR.fields
    if {n for f in fields for n in (f.name, f.json_name)} & doc.keys():
        return None
    return sorted(str(k) for k in doc)


def looks_like_pipeline(data: bytes) -> bool:
    """Whether ``data`` parses as a pipeline proto (for errors about swapped inputs)."""
    try:
        parse_pipeline(data)
    except ProtoLoadError:
        return False
    return True


def _looks_like_pipeline(proto: Any) -> bool:
    # Random bytes often parse as a binary proto of *some* message with only
    # unknown fields; a real pipeline always has a root or components.
    return bool(proto.root_transform_ids) or bool(proto.components.transforms)


def _parse_binary(data: bytes) -> Any:
    from google.protobuf import unknown_fields

    proto = runner_api().Pipeline()
    proto.ParseFromString(data)
    if len(unknown_fields.UnknownFieldSet(proto)):
        raise ValueError("unknown top-level fields: wrong message type or corrupt data")
    return proto


def _parse_text(data: bytes) -> Any:
    from google.protobuf import text_format

    return text_format.Parse(data.decode("utf-8"), runner_api().Pipeline())


def _parse_json(data: bytes) -> Any:
    from google.protobuf import json_format

    text = data.decode("utf-8")
    check_json_depth(text, MAX_JSON_DEPTH)
    return json_format.Parse(text, runner_api().Pipeline())


_PARSERS = {"binary": _parse_binary, "text": _parse_text, "json": _parse_json}


def load_pipeline(path: str) -> tuple[Any, Format]:
    """Load a pipeline from ``path`` (``-`` for stdin); returns (proto, format)."""
    source = "<stdin>" if path == STDIO else path
    hint = None if path == STDIO else format_from_extension(path)
    return parse_pipeline(read_bytes(path), source, hint)


def serialize_pipeline(proto: Any, fmt: Format = "binary") -> bytes:
    """Deterministic bytes for ``proto`` in ``fmt``."""
    if fmt == "binary":
        return proto.SerializeToString(deterministic=True)
    if fmt == "text":
        from google.protobuf import text_format

        # text_format prints map entries sorted by key, hence deterministic.
        return text_format.MessageToString(proto).encode("utf-8")
    if fmt == "json":
        import json

        from google.protobuf import json_format

        as_dict = json_format.MessageToDict(proto, preserving_proto_field_name=False)
        return (json.dumps(as_dict, indent=1, sort_keys=True) + "\n").encode("utf-8")
    raise ValueError(f"unknown format {fmt!r}")


def output_format(path: str, requested: str | None) -> Format:
    """The format to write: explicit request, else the extension, else binary."""
    if requested:
        if requested not in FORMATS:
            raise OutputError(f"unknown output format {requested!r} (use one of {', '.join(FORMATS)})", path)
        return requested  # type: ignore[return-value]
    if path == STDIO:
        return "binary"
    return format_from_extension(path) or "binary"


def save_pipeline(proto: Any, path: str, fmt: Format | None = None) -> Format:
    """Write ``proto`` to ``path`` atomically (``-`` for stdout); returns the format used."""
    chosen = output_format(path, fmt)
    write_atomic(path, binary_pieces(proto) if chosen == "binary" else serialize_pipeline(proto, chosen))
    return chosen


_SMALL_VARINTS = [bytes([n]) for n in range(0x80)]


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL_VARINTS[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _length_delimited(field: int, body: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(body)) + body


# Components' map fields, by field number (beam_runner_api.proto).
_COMPONENT_MAPS = ("transforms", "pcollections", "windowing_strategies", "coders", "environments")


def _upb_key_order(key: str) -> bytes:
    """The order protobuf's deterministic serialization gives map keys:
    bytewise, except that a key comes *after* the longer keys it is a prefix
    of (``PCollection_10`` before ``PCollection_1``: upb encodes back to
    front). A sentinel above every byte of the key gives exactly that: 0xFF,
    which UTF-8 never contains."""
    return key.encode("utf-8") + b"\xff"


_PIPELINE_FIELDS = {"components": 1, "root_transform_ids": 2, "display_data": 3, "requirements": 4}


def _layout_is_known(proto: Any) -> bool:
    """Pipeline and Components have exactly the fields, under the numbers,
    that :func:`binary_pieces` writes (a newer Beam's would be dropped)."""
    pipeline = {f.name: f.number for f in proto.DESCRIPTOR.fields}
    components = {f.name: f.number for f in proto.components.DESCRIPTOR.fields}
    return pipeline == _PIPELINE_FIELDS and components == {n: i for i, n in enumerate(_COMPONENT_MAPS, start=1)}


def binary_pieces(proto: Any) -> list[bytes]:
    """``proto.SerializeToString(deterministic=True)`` as pieces to write one
    after another: the same bytes (a test holds them equal), without the one
    contiguous buffer, and its growing copies, a whole large pipeline takes
    (at 20,000 transforms, 76 MB of output cost 220 MB at the peak). Each
    component is serialized alone, its map entry framed as protobuf frames
    one (key = 1, value = 2) in the order deterministic serialization gives
    map entries. Messages carrying fields this layout does not know
    (unknown fields, a newer Pipeline) are serialized whole."""
    from google.protobuf import unknown_fields
    from google.protobuf.internal import api_implementation

    c = proto.components
    if (
        api_implementation.Type() != "upb"  # the key order below is upb's
        or not _layout_is_known(proto)
        or unknown_fields.UnknownFieldSet(proto)
        or unknown_fields.UnknownFieldSet(c)
    ):
        return [proto.SerializeToString(deterministic=True)]
    pieces: list[bytes] = []
    body = 0
    for number, name in enumerate(_COMPONENT_MAPS, start=1):
        entries = getattr(c, name)
        tag = _varint(number << 3 | 2)
        for key in sorted(entries, key=_upb_key_order):
            k = key.encode("utf-8")
            v = entries[key].SerializeToString(deterministic=True)
            head = _varint(len(k))
            value_head = _varint(len(v))
            size = 2 + len(head) + len(k) + len(value_head) + len(v)  # 2: the entry's two field tags
            framed = b"".join((tag, _varint(size), b"\x0a", head, k, b"\x12", value_head, v))
            pieces.append(framed)
            body += len(framed)
    head = _varint(1 << 3 | 2) + _varint(body) if proto.HasField("components") else b""
    tail = type(proto)()
    tail.root_transform_ids.extend(proto.root_transform_ids)
    tail.display_data.extend(proto.display_data)
    tail.requirements.extend(proto.requirements)
    return [head, *pieces, tail.SerializeToString(deterministic=True)]


def output_target(path: str) -> tuple[str, bool]:
    """(the file an output named ``path`` is written to, whether it is a
    stream), as a shell redirection would treat it: a FIFO or a character
    device (``/dev/null``, ``/dev/stdout``'s terminal or pipe) is written
    through, not replaced by a regular file; a symlink to a file is followed,
    so the link stays and its target gets the new content (a dangling one
    names the file to create). A directory, a block device or a socket is an
    OutputError."""
    try:
        st = os.stat(path)  # follows symlinks, /proc's magic ones included
    except OSError:
        st = None  # nothing there yet (or a dangling link): a new regular file
    if st is not None:
        mode = st.st_mode
        if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
            return path, True
        if stat.S_ISDIR(mode):
            raise OutputError("is a directory, expected an output file path", path)
        if not stat.S_ISREG(mode):
            kind = "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file"
            raise OutputError(f"is {kind}: write the output to a file, a FIFO or - (stdout)", path)
    return (os.path.realpath(path) if os.path.islink(path) else path), False


def write_atomic(path: str, data: bytes | list[bytes]) -> None:
    """Write bytes (or pieces of them, in order) so that ``path`` is either
    untouched or complete; a stream (``-``, a FIFO, a character device:
    :func:`output_target`) gets them in order, as stdout does."""
    pieces = [data] if isinstance(data, bytes) else data
    if path == STDIO:
        try:
            for piece in pieces:
                write_fully(sys.stdout.buffer, piece)
            sys.stdout.buffer.flush()
        except BrokenPipeError:
            raise
        except OSError as e:  # e.g. > /dev/full
            raise OutputError(f"cannot write to stdout: {e.strerror or e}", "<stdout>") from None
        return
    target, stream = output_target(path)
    if stream:
        _write_stream(path, pieces)
        return
    directory = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(directory):
        raise OutputError(f"output directory {directory} does not exist", path)
    try:
        with _temp_beside(directory, os.path.basename(target)) as (tmp, name):
            for piece in pieces:
                tmp.write(piece)
            os.chmod(name, _mode_for(target))
            tmp.flush()
            os.fsync(tmp.fileno())
            tmp.close()
            os.replace(name, target)
        sweep_dead_writers(directory, os.path.basename(target))
    except PermissionError:
        raise OutputError("permission denied writing output", path) from None
    except OSError as e:
        raise OutputError(f"cannot write output: {e.strerror or e}", path) from None


def write_fully(out: IO[bytes], data: bytes) -> None:
    """``out.write(data)``, all of it. A buffered write that a closed pipe cuts
    short returns the count written instead of raising (CPython's
    BufferedWriter, past its buffer), and the rest is lost without a word:
    writing the rest again raises the BrokenPipeError the caller handles
    (``beaminst ... | head`` is exit 141, not a silent success)."""
    view = memoryview(data)
    while view:
        n = out.write(view)
        if not n:
            raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))
        view = view[n:]


def _write_stream(path: str, pieces: list[bytes]) -> None:
    """Into a FIFO or a character device, without creating or truncating
    anything (opening a FIFO waits for its reader, as a shell redirection does)."""
    try:
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise OutputError(f"cannot open output: {e.strerror or e}", path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            for piece in pieces:
                write_fully(f, piece)
    except BrokenPipeError:
        raise
    except OSError as e:  # e.g. /dev/full
        raise OutputError(f"cannot write output: {e.strerror or e}", path) from None


def _mode_for(path: str) -> int:
    """A replaced file keeps its permissions (a 0600 output stays private),
    never set-id bits (new content must not inherit them); a new one gets
    what ``open`` would give it under the umask."""
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _temp_beside(directory: str, base: str) -> Iterator[tuple[IO[bytes], str]]:
    fd, name = tempfile.mkstemp(prefix=temp_prefix(base), suffix=".tmp", dir=directory)
    tmp = os.fdopen(fd, "wb")
    try:
        yield tmp, name
    finally:
        if not tmp.closed:
            tmp.close()
        if os.path.exists(name):
            os.unlink(name)
