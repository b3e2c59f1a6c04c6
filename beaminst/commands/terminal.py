"""Text from input files, made safe for a person's terminal.

A unique name, tag, URN or coder description is whatever the file says: an
``ESC ] 0 ;`` sequence in one retitles the terminal, ``ESC [ 31 m`` recolours
it, a NUL or a right-to-left override garbles what follows. Everything rich
prints for people goes through :func:`markup`; machines get ``--json``, which
escapes for itself.
"""

from __future__ import annotations

from beaminst.errors import printable


def markup(text: object) -> str:
    """``text`` for a rich markup string: every unprintable character escaped
    (``\\x1b``), and ``[`` escaped so a name like ``[red]`` is printed as it
    is instead of styling what follows."""
    from rich.markup import escape

    return escape(printable(str(text)))
