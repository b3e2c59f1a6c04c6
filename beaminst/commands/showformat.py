"""How ``beaminst show`` prints cached elements: a rich table, plain
tab-separated lines, JSON lines or CSV.

Columns are ``ib.collect``'s: a ``beam.Row``'s or named tuple's fields, a
tuple's positions (``0``, ``1``, ...), else one column, ``value``; decided by a
variable's first element (an element of another shape fills the first column
whole). ``--include-window-info`` adds ``event_time`` (microseconds),
``windows`` and ``pane_info``, as ``include_window_info`` gives them.

Text is deterministic: strings as they are, everything else as a ``repr``
whose sets are sorted and whose objects without a ``repr`` of their own show
their class and attributes (never an address). Plain lines escape ``\\``, tab,
newline and unprintable characters (``\\`` only in strings: a ``repr`` is
already unambiguous); the table the same but ``\\``; CSV only unprintable
characters but tab and newline, which its quoting carries (a cache must not
drive the terminal); JSON is lossless, with
values JSON has no form for tagged: ``{"$bytes": base64}``,
``{"$float": "nan"|"inf"|"-inf"}``, ``{"$set": [...]}``, ``{"$dict": [[k, v], ...]}``
(non-string keys), ``{"$repr": text}`` for anything else.
"""

from __future__ import annotations

import base64
import csv
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TextIO

from beaminst.errors import printable

WINDOW_COLUMNS = ("event_time", "windows", "pane_info")
TABLE, PLAIN, JSON, CSV = "table", "plain", "json", "csv"
COUNTING_CAP = "BEAMINST_MAX_SHARD_BYTES of inflated shards"
MAX_DEPTH = 100  # nesting rendered; deeper is a cache nobody wrote by hand


class _Empty:
    """A cell an element of another shape leaves empty."""


EMPTY = _Empty()


# -- shapes ------------------------------------------------------------------


def _is_row(value: Any) -> bool:
    from apache_beam.pvalue import Row

    return isinstance(value, Row)


def _fields(value: Any) -> tuple[str, ...] | None:
    if _is_row(value):
        return tuple(vars(value))
    if isinstance(value, tuple) and isinstance(getattr(type(value), "_fields", None), tuple):
        return tuple(type(value)._fields)
    return None


@dataclass(frozen=True)
class Shape:
    """The value columns of a variable, from its first element."""

    columns: tuple[str, ...]
    kind: str  # "fields", "tuple" or "scalar"

    @staticmethod
    def of(value: Any) -> Shape:
        fields = _fields(value)
        if fields:
            return Shape(fields, "fields")
        if isinstance(value, tuple) and value:
            return Shape(tuple(str(i) for i in range(len(value))), "tuple")
        return Shape(("value",), "scalar")

    def cells(self, value: Any) -> list[Any]:
        if self.kind == "fields" and _fields(value) == self.columns:
            return [getattr(value, c) for c in self.columns]
        if self.kind == "tuple" and isinstance(value, tuple) and len(value) == len(self.columns):
            return list(value)
        return [value] + [EMPTY] * (len(self.columns) - 1)


def window_cells(wv: Any) -> list[Any]:
    """``include_window_info``'s ``[event_time (micros), windows, pane_info]``."""
    return [wv.timestamp.micros, list(wv.windows), wv.pane_info]


# -- text --------------------------------------------------------------------


def canonical_repr(value: Any, depth: int = 0) -> str:
    """A ``repr`` that is the same in every process."""
    if depth > MAX_DEPTH:
        raise RecursionError
    r = lambda v: canonical_repr(v, depth + 1)  # noqa: E731
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return repr(value)
    if _is_row(value):
        return "Row(" + ", ".join(f"{k}={r(v)}" for k, v in vars(value).items()) + ")"
    fields = _fields(value)
    if fields:
        return type(value).__name__ + "(" + ", ".join(f"{f}={r(getattr(value, f))}" for f in fields) + ")"
    if isinstance(value, tuple):
        return "(" + ", ".join(r(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, list):
        return "[" + ", ".join(r(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{r(k)}: {r(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (set, frozenset)):
        items = ", ".join(sorted(r(v) for v in value))
        if isinstance(value, frozenset):
            return f"frozenset({{{items}}})"
        return f"{{{items}}}" if value else "set()"
    if isinstance(value, bytearray):
        return repr(value)
    cls = type(value)
    if cls.__repr__ is object.__repr__:  # '<X object at 0x...>' differs per process
        name = f"{cls.__module__}.{cls.__qualname__}"
        attrs = getattr(value, "__dict__", None)
        if isinstance(attrs, dict):
            return name + "(" + ", ".join(f"{k}={r(v)}" for k, v in sorted(attrs.items())) + ")"
        return f"<{name}>"
    return repr(value)


def cell_text(value: Any) -> str:
    if value is EMPTY:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # the windows cell
        return "[" + ", ".join(canonical_repr(w) for w in value) + "]"
    return canonical_repr(value)


_TSV_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def tsv_escape(text: str, backslash: bool = True) -> str:
    """One tab-separated field: tab, newline, carriage return and unprintable
    characters escaped, and ``\\`` too when ``backslash`` (strings; a ``repr``
    is already an unambiguous literal)."""
    if text.isprintable() and not (backslash and "\\" in text):
        return text
    return "".join(
        (_TSV_ESCAPES.get(ch) if backslash or ch != "\\" else None) or (ch if ch.isprintable() else printable(ch))
        for ch in text
    )


def csv_safe(text: str) -> str:
    """``text`` with unprintable characters escaped, except the tab, newline
    and carriage return CSV quoting carries."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch in "\t\n\r" else printable(ch) for ch in text)


# -- JSON --------------------------------------------------------------------


def to_json(value: Any, depth: int = 0) -> Any:
    """A JSON-ready form of ``value`` (see the module docstring)."""
    if depth > MAX_DEPTH:
        raise RecursionError
    j = lambda v: to_json(v, depth + 1)  # noqa: E731
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return {"$float": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
    if isinstance(value, (bytes, bytearray)):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    fields = _fields(value)
    if fields:
        return {f: j(getattr(value, f)) for f in fields}
    if isinstance(value, (tuple, list)):
        return [j(v) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: j(v) for k, v in value.items()}
        return {"$dict": [[j(k), j(v)] for k, v in value.items()]}
    if isinstance(value, (set, frozenset)):
        items = [j(v) for v in value]
        return {"$set": sorted(items, key=lambda v: json.dumps(v, sort_keys=True))}
    return {"$repr": canonical_repr(value, depth)}


def window_json(wv: Any) -> dict[str, Any]:
    from apache_beam.transforms.window import GlobalWindow

    def window(w: Any) -> Any:
        if isinstance(w, GlobalWindow):
            return "GlobalWindow"
        if hasattr(w, "start") and hasattr(w, "end"):
            return {"start": w.start.micros, "end": w.end.micros}
        return {"$repr": canonical_repr(w)}

    from apache_beam.utils.windowed_value import PaneInfoTiming

    p = wv.pane_info
    return {
        "event_time": wv.timestamp.micros,
        "windows": [window(w) for w in wv.windows],
        "pane_info": {
            "is_first": p.is_first, "is_last": p.is_last, "timing": PaneInfoTiming.to_string(p.timing),
            "index": p.index, "nonspeculative_index": p.nonspeculative_index,
        },
    }


def json_line(obj: Any) -> str:
    """One line of JSON, safe on a terminal: unprintable characters (which
    can only sit inside strings) escaped as ``\\uXXXX``."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False)
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            code = ord(ch) - 0x10000
            out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
    return "".join(out)


# -- writers -----------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    """One variable's elements, as ``beaminst show`` prints them."""

    var: str
    title: str  # for people
    elements: Iterable[Any]  # WindowedValues, already cut to the limit


class LineWriter:
    """Plain, JSON and CSV output: one line per element, streamed. With
    ``prefix`` (several variables), each line names its variable: a first
    tab-separated field, a ``"variable"`` member, or a ``variable`` column."""

    def __init__(self, out: TextIO, mode: str, window_info: bool, prefix: bool) -> None:
        self.out, self.mode, self.window_info, self.prefix = out, mode, window_info, prefix
        self._csv = csv.writer(out, lineterminator="\n") if mode == CSV else None

    def write(self, section: Section) -> int:
        """Write ``section``'s elements; returns how many."""
        n, shape = 0, None
        for wv in section.elements:
            if self.mode == JSON:
                self.out.write(json_line(self._json(section.var, wv)) + "\n")
            else:
                if shape is None:
                    shape = Shape.of(wv.value)
                    if self._csv is not None:
                        self._csv.writerow(
                            (["variable"] if self.prefix else []) + list(shape.columns)
                            + (list(WINDOW_COLUMNS) if self.window_info else [])
                        )
                cells = shape.cells(wv.value) + (window_cells(wv) if self.window_info else [])
                if self.prefix:
                    cells.insert(0, section.var)
                if self._csv is not None:
                    self._csv.writerow([csv_safe(cell_text(c)) for c in cells])
                else:
                    fields = (tsv_escape(cell_text(c), backslash=isinstance(c, str)) for c in cells)
                    self.out.write("\t".join(fields) + "\n")
            n += 1
        return n

    def _json(self, var: str, wv: Any) -> Any:
        value = to_json(wv.value)
        if not self.window_info and not self.prefix:
            return value
        obj: dict[str, Any] = {"variable": var} if self.prefix else {}
        obj["value"] = value
        if self.window_info:
            obj.update(window_json(wv))
        return obj


# A terminal cell shows at most this many characters: one 3,000-character
# string folded into the table buried every other row (a notebook's ib.show
# cuts at 50). Piped output and --json carry every value whole.
MAX_CELL_CHARS = 200


def table_rows(section: Section, window_info: bool) -> tuple[Shape | None, list[list[Any]]]:
    """The shape and the rich cells of ``section``'s elements (consuming them)."""
    from rich.text import Text

    rows, shape = [], None
    for wv in section.elements:
        shape = shape or Shape.of(wv.value)
        cells = shape.cells(wv.value) + (window_cells(wv) if window_info else [])
        rows.append([Text(tsv_escape(cell_text(c), backslash=False)) for c in cells])
    return shape, rows


def print_table(
    console: Any, title: str, shape: Shape | None, rows: list[list[Any]], window_info: bool, total: int, exact: bool
) -> None:
    """A rich table of one variable's rows (:func:`table_rows`), with the
    total count in its caption; ``exact`` False: counting stopped at a cap,
    the total is a lower bound."""
    from rich.table import Table
    from rich.text import Text

    table = Table()
    for col in (shape.columns if shape else ("value",)) + (WINDOW_COLUMNS if window_info else ()):
        table.add_column(Text(printable(col)), overflow="fold")
    cut = 0
    for row in rows:
        cells = []
        for cell in row:
            if len(cell) > MAX_CELL_CHARS:  # cut here, where the note under the table counts them
                cut += 1
                cell = Text(cell.plain[: MAX_CELL_CHARS - 1] + "…")
            cells.append(cell)
        table.add_row(*cells)
    # Title and count outside the table, which is as narrow as its cells.
    console.print(Text(printable(title), style="bold"))
    console.print(table)
    if cut:
        console.print(
            f"{cut} value{'s' if cut != 1 else ''} cut to {MAX_CELL_CHARS} characters (piped output and --json show them whole)",
            style="dim",
        )
    if not exact:
        console.print(f"{len(rows)} of at least {total:,} elements (counting stopped at {COUNTING_CAP})", style="dim")
    elif len(rows) < total:
        console.print(f"{len(rows)} of {total:,} elements (--limit N shows more)", style="dim")
    else:
        console.print(f"{total:,} element{'s' if total != 1 else ''}", style="dim")
