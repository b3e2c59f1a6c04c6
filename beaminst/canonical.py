"""Content signatures of pipeline components, independent of their ids.

Used for cache keys (a coder is what it encodes, not what it is called) and
for grafting (an identical coder, windowing strategy or environment is reused
instead of minted twice, like ``add_or_get_coder_id`` in Beam's translations).
"""

from __future__ import annotations

import hashlib
from typing import Any


def digest(*parts: bytes | str) -> bytes:
    """sha256 over length-prefixed parts (so ("ab","c") != ("a","bc"))."""
    h = hashlib.sha256()
    for p in parts:
        b = p.encode("utf-8") if isinstance(p, str) else p
        h.update(len(b).to_bytes(8, "big"))
        h.update(b)
    return h.digest()


class Signatures:
    """Memoised content signatures over one ``Components`` message."""

    def __init__(self, components: Any) -> None:
        self._c = components
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
            memo[top] = digest(b"coder", c.spec.urn, c.spec.payload, *(memo[s] for s in c.component_coder_ids))
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
