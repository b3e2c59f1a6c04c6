"""Error classes. Every user-facing failure is a BeaminstError: the CLI prints
``beaminst: <source>: <message>`` on one line and exits 2."""

from __future__ import annotations


class BeaminstError(Exception):
    """A problem with the user's input or environment (exit code 2)."""

    exit_code = 2

    def __init__(self, message: str, source: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.source = source

    def with_source(self, source: str) -> BeaminstError:
        if self.source is None:
            self.source = source
        return self

    def __str__(self) -> str:
        one_line = printable(" ".join(self.message.split()))
        return f"{printable(self.source)}: {one_line}" if self.source else one_line


def printable(text: str) -> str:
    """``text`` with every unprintable character (control, format, lone
    surrogate, line separator...) escaped, so an error quoting bytes from a
    bad input stays one plain line on any terminal and encodes as UTF-8."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def shell_word(text: str) -> str:
    """``text`` as one word a shell reads back as ``text``, for a command a
    message prints: :func:`shlex.quote`, or, when ``text`` holds what
    :func:`printable` would escape (a tab in a variable's name), bash's
    ``$'...'`` with the same escapes: a plain quote would print ``\x09``,
    which the shell takes literally, and the command would name another thing."""
    import shlex

    if text.isprintable():
        return shlex.quote(text)
    body = "".join((_BASH_QUOTED.get(ch, ch) if ch.isprintable() else _bash_escape(ch)) for ch in text)
    return f"$'{body}'"


def _bash_escape(ch: str) -> str:
    """In bash's ``$'...'``, ``\\xHH`` is one byte, not a character: U+0080
    to U+00FF are spelled ``\\u00HH`` (their UTF-8), and a surrogate escape
    (a byte of a name that is not UTF-8, as ``os.fsdecode`` gives it) is that
    byte again."""
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"
    if 0x80 <= code < 0x100:
        return f"\\u{code:04x}"
    return _escape(ch)


_BASH_QUOTED = {"\\": "\\\\", "'": "\\'"}  # inside $'...'


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


class ProtoLoadError(BeaminstError):
    """The pipeline file cannot be read or parsed."""


class ValidationError(BeaminstError):
    """The pipeline proto is inconsistent (dangling id, cycle, ...)."""


class ManifestError(BeaminstError):
    """The binding manifest is malformed or names something that does not exist."""


class OptionError(BeaminstError):
    """An option's value is not one beaminst can use (a blank URN, an
    endpoint that is not HOST:PORT); its source is the option's flag."""


class CacheDirError(BeaminstError):
    """The cache directory cannot be used."""


class UnsupportedComponentError(BeaminstError):
    """The pipeline uses a coder or windowing the Python SDK cannot decode."""


class OutputError(BeaminstError):
    """The output cannot be written."""


class InternalError(BeaminstError):
    """A pass produced an invalid proto: a beaminst bug, reported clearly
    instead of leaving a broken file for a runner to trip over."""
