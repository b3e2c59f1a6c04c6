"""Substituting a cache key inside Beam's pickled payloads.

A cache write built with a placeholder key is cloned per PCollection: the key
sits in unique names, display data and, inside Beam's pickled payloads
(base64 of bz2 or zlib cloudpickle), as a plain string, so a key of the same
length keeps the pickle valid. Nothing here unpickles, and nothing imports
the Beam SDK.
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


def _compress(data: bytes, method: str) -> bytes:
    # Beam's cloudpickle_pickler.dumps: compresslevel 9 for both.
    return bz2.compress(data, compresslevel=9) if method == "bz2" else zlib.compress(data, 9)


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
    if urn in urns.PAR_DO_FAMILY:
        return pickle_mentions(runner_api().ParDoPayload.FromString(payload).do_fn.payload, needle)
    return urn == urns.PICKLED_TRANSFORM and pickle_mentions(payload, needle)


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
