"""Content signatures of pipeline components, independent of their ids.

Used for cache keys (a coder is what it encodes, not what it is called) and
for grafting (an identical coder, windowing strategy or environment is reused
instead of minted twice, like ``add_or_get_coder_id`` in Beam's translations).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from typing import Any

from beaminst.model import bounded, urns

# An absolute path up to and including a site-packages / dist-packages
# directory, inside a decompressed pickle, with the opcode and length of the
# string it starts (SHORT_BINUNICODE or BINUNICODE): the length changes with
# the path. Segments are printable ASCII without '/'.
_INSTALL_PREFIX = re.compile(
    rb"(?:\x8c[\x00-\xff]|X[\x00-\xff]{4})?/(?:[\x21-\x2e\x30-\x7e]+/)*?(?:site|dist)-packages/", re.DOTALL
)


def digest(*parts: bytes | str) -> bytes:
    """sha256 over length-prefixed parts (so ("ab","c") != ("a","bc")), hashed
    in one call (the same bytes as one update per piece)."""
    pieces = []
    for p in parts:
        b = p.encode("utf-8") if isinstance(p, str) else p
        pieces.append(len(b).to_bytes(8, "big"))
        pieces.append(b)
    return hashlib.sha256(b"".join(pieces)).digest()


def decompress_pickle(encoded: bytes, what: str = "a pickled payload") -> bytes | None:
    """The cloudpickle bytes inside a Beam pickled payload (base64 of bz2 or
    zlib), or None when ``encoded`` is not one. Never unpickles; past the
    decompression cap, a ValidationError naming ``what``."""
    if not encoded or len(encoded) % 4:
        return None
    try:
        raw = base64.b64decode(encoded, validate=True)
    except Exception:
        return None
    try:
        return bounded.decompress(raw, what)
    except bounded.CorruptStream:
        return None


_STABLE_MEMO: dict[bytes, bytes] = {}


def install_independent(encoded: bytes) -> bytes:
    """A stand-in for a pickled payload that does not depend on where Python
    packages are installed: functions pickled by value (Beam's own lambdas
    among them) carry their absolute source path, so the same pipeline built
    in two virtualenvs pickles differently. Non-pickles come back unchanged."""
    if len(_STABLE_MEMO) > 100_000:
        _STABLE_MEMO.clear()
    memo = _STABLE_MEMO.get(encoded)
    if memo is None:
        data = decompress_pickle(encoded)
        memo = encoded if data is None else _stable_digest(data)
        _STABLE_MEMO[encoded] = memo
    return memo


def remember_inflated(encoded: bytes, data: bytes) -> None:
    """Record what :func:`install_independent` gives for ``encoded``, whose
    pickle ``data`` a caller has just inflated (the validator does, for every
    pickle of a file): the same pickle is not inflated a second time."""
    if len(_STABLE_MEMO) > 100_000:
        _STABLE_MEMO.clear()
    _STABLE_MEMO.setdefault(encoded, _stable_digest(data))


def _stable_digest(data: bytes) -> bytes:
    return b"pickle:" + hashlib.sha256(_INSTALL_PREFIX.sub(b"<site>/", _unframe(data))).digest()


def _unframe(data: bytes) -> bytes:
    """Pickle protocol 4+ wraps opcodes in FRAMEs whose 8-byte length header
    changes with every path inside: keep the opcodes, drop the headers."""
    if len(data) < 2 or data[0] != 0x80 or data[1] < 4:
        return data
    out, pos = [data[:2]], 2
    while pos + 9 <= len(data) and data[pos] == 0x95:
        length = int.from_bytes(data[pos + 1 : pos + 9], "little")
        out.append(data[pos + 9 : pos + 9 + length])
        pos += 9 + length
    out.append(data[pos:])
    return b"".join(out)


def unwrap_pickled_coder(payload: bytes) -> tuple[Any, bytes, bytes] | None:
    """``beam:coder:pickled_python:v1`` payloads are a BytesValue holding
    ``ClassName$<base64 zlib pickle>`` (``coders.serialize_coder``): the
    BytesValue, the name and the encoded pickle; None when it is not one."""
    from google.protobuf import wrappers_pb2

    try:
        value = wrappers_pb2.BytesValue.FromString(payload)
    except Exception:
        return None
    name, sep, encoded = value.value.partition(b"$")
    if not sep:
        return None
    return value, name, encoded


def coder_payload_install_independent(urn: str, payload: bytes) -> bytes:
    """Pickled coders are a BytesValue of ``ClassName$<pickle>``."""
    if urn != urns.PICKLED_CODER or not payload:
        return payload
    unwrapped = unwrap_pickled_coder(payload)
    if unwrapped is None:
        return payload
    _, name, encoded = unwrapped
    return name + b"$" + install_independent(encoded)


class Signatures:
    """Memoised content signatures over one ``Components`` message.

    ``coder_payload`` maps a coder's (urn, payload) to the bytes that are
    signed: exact by default (grafting must only merge identical coders);
    cache keys pass :func:`coder_payload_install_independent`."""

    def __init__(self, components: Any, coder_payload: Callable[[str, bytes], bytes] | None = None) -> None:
        self._c = components
        self._coder_payload = coder_payload
        self._coder: dict[str, bytes] = {}
        self._ws: dict[str, bytes] = {}
        self._env: dict[str, bytes] = {}

    def coder(self, cid: str) -> bytes:
        memo, coders = self._coder, self._c.coders
        stack = [cid]
        # Iterative post-order: coders nest, and we never recurse in Python.
        while stack:
            top = stack[-1]
            if top in memo:
                stack.pop()
                continue
            c = coders[top]
            pending = [s for s in c.component_coder_ids if s not in memo]
            if pending:
                stack.extend(pending)
                continue
            payload = self._coder_payload(c.spec.urn, c.spec.payload) if self._coder_payload else c.spec.payload
            memo[top] = digest(b"coder", c.spec.urn, payload, *(memo[s] for s in c.component_coder_ids))
            stack.pop()
        return memo[cid]

    def environment(self, eid: str) -> bytes:
        if eid not in self._env:
            self._env[eid] = digest(b"env", self._c.environments[eid].SerializeToString(deterministic=True))
        return self._env[eid]

    def windowing(self, wid: str, with_environment: bool = True) -> bytes:
        memo_key = wid if with_environment else "\0" + wid
        if memo_key not in self._ws:
            ws = type(self._c.windowing_strategies[wid])()
            ws.CopyFrom(self._c.windowing_strategies[wid])
            ws.window_coder_id = self.coder(ws.window_coder_id).hex()
            ws.environment_id = self.environment(ws.environment_id).hex() if with_environment and ws.environment_id else ""
            self._ws[memo_key] = digest(b"windowing", ws.SerializeToString(deterministic=True))
        return self._ws[memo_key]
