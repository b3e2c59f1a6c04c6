"""A stack-independent bound on JSON nesting.

Python's ``json`` (and protobuf's ``json_format`` on top of it) recurse once
per level, so a file nested a thousand levels deep fails with a
RecursionError whose point of failure depends on how deep the caller's stack
already is: the same file gives different errors in different processes.
Measuring the depth first, in one linear pass that never recurses, makes the
refusal the same everywhere.
"""

from __future__ import annotations

import re
from itertools import accumulate

# A JSON string: what is inside it never counts as nesting.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_A_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def check_json_depth(text: str, limit: int) -> None:
    """Raise ValueError if ``text`` nests arrays and objects deeper than
    ``limit``. Linear in the text; malformed JSON is left to the parser."""
    brackets = _NOT_A_BRACKET.sub("", _STRING.sub("", text))
    if len(brackets) <= limit:
        return
    # map over a C method: no Python call per bracket (a million-level file
    # is a million brackets, and this runs before any other bound).
    deepest = max(accumulate(map(_STEP.__getitem__, brackets)))
    if deepest > limit:
        raise ValueError(f"JSON nested more than {limit} levels deep")
