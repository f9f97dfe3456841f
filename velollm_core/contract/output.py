"""What commands print: one JSON document on stdout, rich consoles for tables (stdout) and progress (stderr).

Its own module so that command modules (the core's and the plugins') need not import ``cli.py``.
"""

from __future__ import annotations

import json

import click


def print_json(data) -> None:
    """Print one JSON document to stdout, nothing else; NaN and infinity are refused, as JSON does."""
    click.echo(json.dumps(data, indent=2, allow_nan=False))


def stdout_console():
    from rich.console import Console

    return Console()


def stderr_console():
    from rich.console import Console

    return Console(stderr=True)
