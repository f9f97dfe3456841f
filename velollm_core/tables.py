"""Tables that fit the terminal: each renderer offers its layouts widest first; the first that fits is shown.

A layout fits when the console is as wide as the table with no cell wrapped, except prose columns
(a reason, a list of hooks): a column with ``min_width`` set may wrap and counts at that width. So
the wide layout appears only where every number and every header stands whole on one line; below
that a narrower layout (fewer columns, two-line headers, or one row per fact) takes over, and
nothing is cut to "…". The last layout is used at any width: it is made to fit 80 columns, its text
columns wrap and fold long words, and only a much narrower terminal makes rich shorten a number.
Full names and every value stay in ``--json``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

Layout = Callable[[], "Table"]


def natural_width(console: Console, table: Table) -> int:
    """The width ``table`` takes with no cell wrapped; prose columns (``min_width`` set) at that width."""
    from rich.measure import Measurement

    prose = [(column, column.max_width) for column in table.columns if column.min_width]
    for column, _ in prose:
        column.max_width = column.min_width
    try:
        return Measurement.get(console, console.options.update_width(10_000), table).maximum
    finally:
        for column, max_width in prose:
            column.max_width = max_width


def fitting(console: Console, *layouts: Layout) -> Table:
    """The first of ``layouts`` (functions building a table) that fits ``console``, else the last one."""
    for build in layouts[:-1]:
        table = build()
        if natural_width(console, table) <= console.width:
            return table
    table = layouts[-1]()
    for column in table.columns:
        if not column.no_wrap:  # short numbers stay whole; text folds where a word is too long
            column.overflow = "fold"
    return table
