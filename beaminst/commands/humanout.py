"""Human output: rich tables on a terminal, plain records on a pipe.

Rich wraps and folds to the terminal's width, which serves a person and
defeats ``grep`` and ``cut``: a cache key split over two lines is never found,
a row spread over eleven is not a row. So when the stream is not a terminal
every record is one line of tab-separated fields, its kind first
(``pcollection``, ``write``, ``warning``, ``next`` ...), never wrapped nor
truncated, without markup. Fields are :func:`~beaminst.errors.printable`
either way: a tab, newline or escape sequence inside a name comes out as
``\\x09``, so it can neither split a record nor reach the terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from beaminst.errors import printable

MAX_LISTED = 20  # a cache directory of junk must not bury the report


@dataclass(frozen=True)
class Cell:
    """A table field: its text and, on a terminal, a rich style."""

    text: str
    style: str = ""
    note: str = ""  # shown after the text on a terminal only: a piped field stays the bare value


def console_for(err: bool = False, terminal: bool | None = None) -> Any:
    """A rich Console on stdout (or stderr) that never wraps when not on a terminal."""
    from rich.console import Console

    stream = sys.stderr if err else sys.stdout
    if terminal is None:
        terminal = stream.isatty()
    if terminal:
        return Console(stderr=err, highlight=False)
    # Piped: no width to fold to, no colour, no markup in the bytes.
    return Console(stderr=err, highlight=False, force_terminal=False, no_color=True, soft_wrap=True, width=1 << 20)


def human_for(err: bool = False) -> Human:
    """Human output on stdout (or stderr): through rich on a terminal; piped,
    every method writes plain records, so rich is not even imported."""
    stream = sys.stderr if err else sys.stdout
    return Human(console_for(err, terminal=True) if stream.isatty() else _Piped(err))


class _Piped:
    """What :class:`Human` asks of a console when not on a terminal."""

    is_terminal = False

    def __init__(self, err: bool) -> None:
        self._err = err

    @property
    def file(self) -> Any:  # looked up at each write, as rich does (a test runner swaps sys.stdout)
        return sys.stderr if self._err else sys.stdout


class Human:
    """Writes one command's human output to ``console``."""

    def __init__(self, console: Any) -> None:
        self.console = console
        self.terminal = bool(console.is_terminal)

    def table(self, kind: str, title: str, columns: Sequence[str], rows: Sequence[Sequence[Cell | str]]) -> None:
        """A rich table titled ``title``, or one ``kind<TAB>field...`` line per row."""
        if not self.terminal:
            for row in rows:
                self.record(kind, *(_text(c) for c in row))
            return
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=title)
        for col, whole in zip(columns, _whole_columns(columns, rows, self.console.width), strict=True):
            # rich narrows only the columns that may wrap, until the table fits.
            table.add_column(col, overflow="fold", no_wrap=whole)
        for row in rows:
            cells = []
            for c in row:
                text, style, note = (c.text, c.style, c.note) if isinstance(c, Cell) else (c, "", "")
                shown = escape(printable(text))
                shown = f"[{style}]{shown}[/{style}]" if style and shown else shown
                cells.append(f"{shown} {escape(note)}" if note else shown)
            table.add_row(*cells)
        self.console.print(table)

    def record(self, kind: str, *fields: str) -> None:
        """One ``kind<TAB>field...`` line, as it is on a terminal too."""
        line = "\t".join(printable(str(f)) for f in (kind, *fields))
        # Past rich, which would expand the tabs into spaces.
        self.console.file.write(line + "\n")

    def line(self, kind: str, text: str, style: str = "") -> None:
        """A sentence: ``kind: text`` on a terminal (styled), ``kind<TAB>text`` piped."""
        if not self.terminal:
            self.record(kind, text)
            return
        from rich.markup import escape

        label = f"[{style}]{kind}:[/{style}]" if style else f"{kind}:"
        self.console.print(f"{label} {escape(printable(text))}", soft_wrap=True)

    def summary(self, text: str) -> None:
        """The closing counts: as they are on a terminal, ``summary<TAB>...`` piped."""
        if self.terminal:
            from rich.markup import escape

            self.console.print(escape(printable(text)), soft_wrap=True)
        else:
            self.record("summary", text)

    def capped(self, kind: str, items: Sequence[str | tuple[str, str]], what: str) -> None:
        """The first MAX_LISTED items as ``kind`` lines, then how many were left out.
        An item ``(name, text)`` is two fields piped, ``name: text`` on a terminal."""
        for item in items[:MAX_LISTED]:
            if isinstance(item, tuple):
                if not self.terminal:
                    self.record(kind, *item)
                    continue
                item = ": ".join(item)
            self.line(kind, item, style="yellow")
        if len(items) > MAX_LISTED:
            more = f"... and {len(items) - MAX_LISTED} more {what} (--json lists them all)"
            if not self.terminal and isinstance(items[0], tuple):
                self.record(kind, "", more)  # no name in the name field: cut -f2 lists names only
            else:
                self.line(kind, more, style="yellow")

    def next_steps(self, steps: Sequence[str]) -> None:
        """What to run next: one ``next`` line each."""
        for step in steps:
            self.line("next", step, style="bold")


_WHOLE_COLUMNS = frozenset({"id", "transform id", "cache key", "variable"})
_NARROWEST = 8  # what a column that wraps keeps, at least


def _whole_columns(columns: Sequence[str], rows: Sequence[Sequence[Cell | str]], width: int) -> list[bool]:
    """Which columns are kept on one line: ids and keys (copied from the table
    into the next command), so the other columns wrap first, when the
    terminal has room for them whole and a few characters of every other
    column; otherwise none, and everything folds as it must. Widths are
    terminal cells (a CJK name takes two a character), notes and titles included."""
    from rich.cells import cell_len

    def shown(c: Cell | str) -> int:
        note = c.note if isinstance(c, Cell) else ""
        return cell_len(printable(_text(c))) + (cell_len(note) + 1 if note else 0)

    widest = [max([cell_len(col), *(shown(row[i]) for row in rows)]) for i, col in enumerate(columns)]
    whole = [col in _WHOLE_COLUMNS for col in columns]
    # Each column also takes a border and two spaces of padding.
    needed = 1 + sum((w if keep else min(w, _NARROWEST)) + 3 for w, keep in zip(widest, whole, strict=True))
    return whole if needed <= width else [False] * len(columns)


def _text(c: Cell | str) -> str:
    return c.text if isinstance(c, Cell) else c
