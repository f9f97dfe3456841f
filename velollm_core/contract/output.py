"""What commands print: one JSON document on stdout, rich consoles for tables (stdout) and progress
(stderr), and lines (``echo``, ``print_error``); the one place where text from outside is made safe
for a terminal.

Text from a server (a version, a model list, an error body), from a file (an imported result) or from a
plugin may hold control characters: ESC starts a CSI or OSC sequence (clear the screen, hide text,
retitle the window, write a link), C1 characters do the same in one byte, and the bidi overrides
U+202A-U+202E and isolates U+2066-U+2069 reorder the rest of a line. Every console made here drops
them from the text it renders (keeping its own colours and cursor moves), and ``echo`` and
``print_error`` show them as visible escapes (``\\u001b``), on a terminal and through a pipe alike. JSON
output needs nothing: json escapes every control character. While the CLI runs (``safe_streams``,
entered by ``cli.main``), ``sys.stdout`` and ``sys.stderr`` do the same to everything else written
to them (a ``click.echo``, a plugin's ``print``); the consoles write past that, to the real streams.

Its own module so that command modules (the core's and the plugins') need not import ``cli.py``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import sys
from collections.abc import Iterator
from typing import Any

import click

# C0 controls but tab, newline and a CR ending a line (CRLF), DEL, C1 controls, and the bidi
# embeddings, overrides and isolates.
UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]|\r(?!\n)")


def _visible(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def safe_text(text: str) -> str:
    """``text`` with every control character and bidi override shown as a visible escape (``\\u001b``):
    JSON's own escape, so a JSON document written out this way (``history export``) stays valid JSON
    with the same strings."""
    return UNSAFE.sub(_visible, text)


def stripped_text(text: str) -> str:
    """``text`` without its control characters and bidi overrides (for tables: rich gives them no width,
    so dropping them keeps the columns as measured)."""
    return UNSAFE.sub("", text)


class SafeStream:
    """A text stream writing to ``wrapped`` what it is given, with control characters shown
    (``safe_text``); everything else is the wrapped stream's (``isatty``, ``encoding``, ``buffer``)."""

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped

    def write(self, text: str) -> int:
        self.wrapped.write(safe_text(text) if isinstance(text, str) else text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


@contextlib.contextmanager
def safe_streams() -> Iterator[None]:
    """``sys.stdout`` and ``sys.stderr`` as SafeStreams for the duration (once: nesting keeps them)."""
    saved = sys.stdout, sys.stderr
    if not isinstance(sys.stdout, SafeStream) and sys.stdout is not None:
        sys.stdout = SafeStream(sys.stdout)
    if not isinstance(sys.stderr, SafeStream) and sys.stderr is not None:
        sys.stderr = SafeStream(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def _real(stream: Any) -> Any:
    """The stream under any SafeStream and rich file proxy (a live display's ``sys.stdout``)."""
    while True:
        if isinstance(stream, SafeStream):
            stream = stream.wrapped
        elif hasattr(stream, "rich_proxied_file"):
            stream = stream.rich_proxied_file
        else:
            return stream


def print_json(data) -> None:
    """Print one JSON document to stdout, nothing else; NaN and infinity are refused, as JSON does."""
    click.echo(json.dumps(data, indent=2, allow_nan=False))


def echo(message: Any = "", *, err: bool = False, nl: bool = True) -> None:
    """``click.echo`` of ``message`` made safe for a terminal (``safe_text``)."""
    click.echo(safe_text(str(message)), err=err, nl=nl)


def print_error(message: Any) -> None:
    """The CLI's ``Error: ...`` line on stderr, made safe for a terminal."""
    echo(f"Error: {message}", err=True)


def stdout_console(**options: Any):
    """A rich console on stdout whose rendered text holds no control sequence but its own."""
    return _safe_console(options)


def stderr_console(**options: Any):
    """The same on stderr."""
    return _safe_console({**options, "stderr": True})


def _safe_console(options: dict[str, Any]):
    return _console_class()(**options)


@functools.cache
def _console_class():
    """rich's Console, its ``render`` (what ``print``, tables and live displays all go through) yielding
    text segments stripped of control characters; built on first use, so that importing this module
    imports no rich."""
    from rich.console import Console
    from rich.segment import Segment

    class SafeConsole(Console):
        """A console whose rendered text holds no control sequence but its own: its own control segments
        (a live display's cursor moves) pass, and no text carries a link (VeloLLM writes none, so one
        came from markup in outside text)."""

        @property
        def file(self):
            # Past the SafeStream: this console's text is already safe, and its own escapes must pass.
            return _real(Console.file.fget(self))

        @file.setter
        def file(self, new_file) -> None:
            Console.file.fset(self, new_file)

        def render(self, renderable, options=None):
            for segment in super().render(renderable, options):
                if segment.control:
                    yield segment
                    continue
                style = segment.style
                if style is not None and style.link:
                    style = style.update_link(None)
                yield Segment(stripped_text(segment.text), style)

    return SafeConsole
