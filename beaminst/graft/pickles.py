"""Substituting a cache key inside Beam's pickled payloads.

A cache write built with a placeholder key is cloned per PCollection: the key
sits in unique names, display data and, inside Beam's pickled payloads
(base64 of bz2 or zlib cloudpickle), as a plain string, so a key of the same
length keeps the pickle valid. Nothing here unpickles, and nothing imports
the Beam SDK.

Recompressing a whole pickle per key was most of a warm ``instrument``'s time
(bz2's block sort: about 0.35 ms for a 2 kB ``WriteImpl``, four bz2 pickles
per write). Only the key changes between clones, so a bz2 pickle is cut at
each occurrence of the placeholder, the pieces between are compressed once
per template, each into its own stream, and a clone compresses only its key:
``bz2.decompress`` (what Beam's ``pickler.loads`` calls, and
:mod:`beaminst.model.bounded`) joins concatenated streams. The pickle inside
is the one a whole recompression gives, byte for byte; the compressed bytes
are not Beam's (tests compare clones to direct builds with pickles inflated),
and are the same for the same key every time.

zlib payloads (Beam's pickled coders, small) are recompressed whole, as Beam
writes them: a coder's id is signed from its bytes, so a cloned coder keeps
the id a direct build gets.
"""

from __future__ import annotations

import base64
import bz2
import contextlib
import functools
import zlib

from beaminst.model import urns
from beaminst.model.beamproto import runner_api
from beaminst.model.canonical import unwrap_pickled_coder


def _decompress(raw: bytes) -> tuple[bytes, str] | None:
    if raw[:3] == b"BZh":
        with contextlib.suppress(Exception):
            return bz2.decompress(raw), "bz2"
    if raw[:1] == b"\x78":
        with contextlib.suppress(Exception):
            return zlib.decompress(raw), "zlib"
    return None


def _compress(data: bytes, method: str, level: int = 9) -> bytes:
    """Level 9 as Beam's ``cloudpickle_pickler.dumps``. A key alone is
    compressed at level 1: for a few bytes, level 9's stream but for the
    header's digit, at a third of the cost (bz2 sets up its buffers by level)."""
    return bz2.compress(data, compresslevel=level) if method == "bz2" else zlib.compress(data, level)


# (a template's pickle, its placeholder) -> the pieces a clone is made of;
# bounded like the other memos (a batch sees a few templates, not thousands).
_PIECES: dict[tuple[bytes, bytes], tuple[bytes, ...]] = {}
_MAX_PIECES = 256


def template_pieces(encoded: bytes, old: bytes) -> tuple[bytes, ...] | None:
    """A bz2 template payload's pickle cut at every ``old``, each piece its
    own bz2 stream (an empty piece, nothing): the same for every clone, so
    computed once per process, or given by the template store
    (:func:`remember_pieces`). None when ``encoded`` is not a bz2 pickle
    holding ``old``."""
    known = _PIECES.get((encoded, old))
    if known is None:
        opened = _open(encoded)
        if opened is None or opened[1] != "bz2" or old not in opened[0]:
            return None
        known = tuple(_compress(piece, "bz2") if piece else b"" for piece in opened[0].split(old))
        remember_pieces(encoded, old, known)
    return known


def remember_pieces(encoded: bytes, old: bytes, pieces: tuple[bytes, ...]) -> None:
    """Keep ``pieces`` as :func:`template_pieces` of ``encoded`` and ``old``
    (the store's entry holds those it computed when the template was built)."""
    if len(_PIECES) >= _MAX_PIECES:
        _PIECES.pop(next(iter(_PIECES)))
    _PIECES[(encoded, old)] = pieces


def pickled_function(urn: str, payload: bytes) -> bytes | None:
    """The pickled function of a ParDo (or a pickled transform's payload);
    None for other transforms."""
    if urn in urns.PAR_DO_FAMILY:
        return runner_api().ParDoPayload.FromString(payload).do_fn.payload
    return payload if urn == urns.PICKLED_TRANSFORM else None


@functools.lru_cache(maxsize=256)
def _open(encoded: bytes) -> tuple[bytes, str | None] | None:
    """(the pickle, its compression) of a base64 payload; (the raw bytes,
    None) when it is not compressed; None when it is not base64. Kept for the
    last few payloads: a template's are opened once per graft, the same bytes
    every time."""
    try:
        raw = base64.b64decode(encoded, validate=True)
    except Exception:
        return None
    return _decompress(raw) or (raw, None)


def substitute_in_pickle(encoded: bytes, old: bytes, new: bytes) -> bytes:
    """Replace ``old`` by ``new`` (same length) inside a Beam pickled payload."""
    pieces = template_pieces(encoded, old)  # a bz2 pickle holding old: only the key is compressed
    if pieces is not None:
        return base64.b64encode(_compress(new, "bz2", level=1).join(pieces))
    opened = _open(encoded)
    if opened is None or opened[1] is None:
        return encoded.replace(old, new)
    data, method = opened
    if old not in data:
        return encoded
    return base64.b64encode(_compress(data.replace(old, new), method))


def pickle_mentions(encoded: bytes, needle: bytes) -> bool:
    opened = _open(encoded)
    return needle in (encoded if opened is None else opened[0])


def substitute_in_coder(payload: bytes, old: bytes, new: bytes) -> bytes:
    unwrapped = unwrap_pickled_coder(payload)
    if unwrapped is None:
        return substitute_in_pickle(payload, old, new)
    value, name, encoded = unwrapped
    replaced = substitute_in_pickle(encoded, old, new)
    if replaced is encoded:
        return payload
    value.value = name + b"$" + replaced
    return value.SerializeToString()


def coder_mentions(payload: bytes, needle: bytes) -> bool:
    unwrapped = unwrap_pickled_coder(payload)
    if unwrapped is None:
        return pickle_mentions(payload, needle)
    return pickle_mentions(unwrapped[2], needle)


def do_fn_mentions(urn: str, payload: bytes, needle: bytes) -> bool:
    """Whether the pickled function of a ParDo or a pickled transform holds ``needle``."""
    fn = pickled_function(urn, payload)
    return fn is not None and pickle_mentions(fn, needle)


def rewrite_payload(
    urn: str, payload: bytes, old: bytes | None, new: bytes | None, maps: dict[str, dict[str, str]]
) -> bytes:
    """Substitute the key and remap the ids held inside a transform payload
    (:mod:`beaminst.model.urns` says where they are); table payloads come out
    deterministically serialized, so a clone matches a direct build. The
    payload is parsed once: substituting the key inside its pickle leaves the
    ids it references alone, so the template's (memoised) references decide
    whether anything is remapped."""
    if not payload:
        return payload
    substitute = old is not None and new is not None
    msg = urns.parse_payload(urn, payload)
    if msg is None:
        out = substitute_in_pickle(payload, old, new) if substitute and urn == urns.PICKLED_TRANSFORM else payload  # type: ignore[arg-type]
    else:
        if substitute and urn in urns.PAR_DO_FAMILY:
            msg.do_fn.payload = substitute_in_pickle(msg.do_fn.payload, old, new)  # type: ignore[arg-type]
        if urns.remaps(urns.payload_info(urn, payload), maps):
            urns.remap_message(msg, maps)
        out = msg.SerializeToString(deterministic=True)
    if substitute and old in out:
        out = out.replace(old, new)  # type: ignore[arg-type]  # plain strings (composite reprs and the like)
    return out
