"""Decompression with an output cap.

Every payload beaminst opens (pickled DoFns, CombineFns, coders, window
functions: Beam's ``base64(bz2|zlib(pickle))``) comes from a file it does not
trust, and a few KB of bz2 inflate to gigabytes. So every decompression of
input goes through :func:`decompress`: incremental, stopping one byte past a
cap far above any real pickle, and then a ValidationError naming the
component and the cap, never minutes of work and gigabytes of memory.
A :class:`Budget` bounds the sum over one file too: a cap per payload alone
lets a file of many distinct payloads, each just under it, cost hours.
"""

from __future__ import annotations

import bz2
import os
import zlib
from collections.abc import Iterator

from beaminst.errors import ValidationError
from beaminst.limits import LIMITS, parse_limit, refusal

ENV = "BEAMINST_MAX_DECOMPRESSED_BYTES"
DEFAULT_MAX_BYTES = int(LIMITS[ENV][0])  # real pickles are kilobytes
_CHUNK = 1 << 20  # what ``keep=False`` holds at a time


class CorruptStream(ValueError):
    """Not a complete bz2 / zlib stream (callers decide what that means)."""


def max_decompressed_bytes() -> int:
    """The cap: ``$BEAMINST_MAX_DECOMPRESSED_BYTES`` (set by the CLI's
    ``--max-decompressed-bytes``) or 64 MiB. Read on each call, so batch
    workers and library callers see the same setting."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_BYTES
    cap = parse_limit(ENV, raw)
    if cap is None:
        raise refusal(ENV, raw)
    return int(cap)


TOTAL_FACTOR = 16  # one file's pickles may inflate to this many caps in all (1 GiB by default)


class Budget:
    """What one file's pickles may inflate to in all: :data:`TOTAL_FACTOR`
    times the cap (the cap read when the budget is made). Charged by
    :func:`decompress` as it inflates, so a file over it stops there."""

    def __init__(self) -> None:
        self.total = TOTAL_FACTOR * max_decompressed_bytes()
        self.left = self.total

    def exceeded(self, what: str) -> ValidationError:
        return ValidationError(
            f"the file's pickles decompress to more than {_size(self.total)} in all (at {what}); a real "
            f"pipeline's are far smaller (the total is {TOTAL_FACTOR} times the per-payload cap: raise it with "
            f"--max-decompressed-bytes or {ENV} only for a file you trust)"
        )


def _cap_hint(cap: int) -> str:
    """What to make of the cap: the default is far above any real pickle; a
    cap set lower is the caller's own choice, and said to be."""
    if cap >= DEFAULT_MAX_BYTES:
        return f"a real pickle is far smaller (raise the cap with --max-decompressed-bytes or {ENV} only for a file you trust)"
    return (f"that is the cap set by --max-decompressed-bytes or {ENV} (default {_size(DEFAULT_MAX_BYTES)}); "
            "raise it for this file")


def method_of(raw: bytes) -> str | None:
    """``"bz2"`` or ``"zlib"`` from the stream's magic, else None."""
    if raw[:3] == b"BZh":
        return "bz2"
    if len(raw) >= 2 and raw[0] & 0x0F == 8 and raw[0] >> 4 <= 7 and int.from_bytes(raw[:2], "big") % 31 == 0:
        return "zlib"  # RFC 1950 header: deflate, a window size, a valid check
    return None


def decompress(raw: bytes, what: str, keep: bool = True, budget: Budget | None = None) -> bytes:
    """``raw`` (bz2 or zlib, by magic) decompressed, as ``bz2.decompress`` /
    ``zlib.decompress`` would (concatenated bz2 streams joined, trailing
    bytes ignored) but never past the cap: beyond it, a ValidationError
    saying ``<what> decompresses to more than N bytes``; nor past what is
    left of ``budget``, which it is charged. With ``keep=False`` the output
    is only counted, a chunk at a time (a check, not a read), and ``b""``
    comes back. Raises CorruptStream for anything else wrong."""
    method = method_of(raw)
    if method is None:
        raise CorruptStream("neither bz2 nor zlib")
    cap = max_decompressed_bytes()
    parts: list[bytes] = []
    total = 0
    for chunk in (_bz2_chunks if method == "bz2" else _zlib_chunks)(raw, cap + 1 if keep else _CHUNK):
        total += len(chunk)
        if total > cap:
            raise ValidationError(f"{what} decompresses ({method}) to more than {_size(cap)}; {_cap_hint(cap)}")
        if budget is not None and total > budget.left:
            raise budget.exceeded(what)
        if keep:
            parts.append(chunk)
    if budget is not None:
        budget.left -= total
    return b"".join(parts)


def _size(n: int) -> str:
    return f"{n} bytes ({n >> 20} MiB)" if n >= 1 << 20 and not n % (1 << 20) else f"{n} bytes"


def _zlib_chunks(raw: bytes, step: int) -> Iterator[bytes]:
    d = zlib.decompressobj()
    data = raw
    try:
        while not d.eof:
            out = d.decompress(data, step)
            if not out and d.unconsumed_tail == data:
                break  # no progress: the input ended before the stream did
            data = d.unconsumed_tail
            if out:
                yield out
    except zlib.error as e:
        raise CorruptStream(str(e)) from None
    if not d.eof:
        raise CorruptStream("truncated")


def _bz2_chunks(raw: bytes, step: int) -> Iterator[bytes]:
    data = raw
    while data:  # one decompressor per concatenated stream, as bz2.decompress
        d = bz2.BZ2Decompressor()
        try:
            out = d.decompress(data, step)
            while True:
                if out:
                    yield out
                if d.eof or d.needs_input:
                    break
                out = d.decompress(b"", step)
        except OSError as e:
            if data is not raw:
                return  # trailing bytes after a complete stream: ignored, as bz2.decompress does
            raise CorruptStream(str(e)) from None
        if not d.eof:
            raise CorruptStream("truncated")
        data = d.unused_data
