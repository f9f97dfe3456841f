"""The report feature's hook implementations: the built-in ``velollm report`` formats.

Loaded with every plugin, so it imports only the hook marker until formats are asked for; a format's
renderer is imported when that format is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from velollm_core.hookspecs import hookimpl

if TYPE_CHECKING:
    from collections.abc import Callable

    from velollm_core.contract.formats import ReportFormat

ROWS = "velollm_core.report.formats"


@hookimpl(tryfirst=True)
def register_report_formats(register: Callable[[ReportFormat], None]) -> None:
    """html, csv, md and jsonl: the page people open, and the rows people paste elsewhere."""
    from velollm_core.contract.formats import ReportFormat, imported_on_call

    register(ReportFormat("html", imported_on_call("velollm_core.report.html", "render_html"),
                          suffixes=(".html", ".htm"), marker=b"<!DOCTYPE html>\n<!-- VeloLLM report",
                          file_only=True, description="one offline HTML page"))
    register(ReportFormat("csv", imported_on_call(ROWS, "csv_report"), suffixes=(".csv",),
                          marker=b"table,source,kind,", description="one row per measurement"))
    register(ReportFormat("md", imported_on_call(ROWS, "markdown_report"), suffixes=(".md", ".markdown"),
                          marker=b"<!-- VeloLLM report", description="one markdown table per kind of row"))
    register(ReportFormat("jsonl", imported_on_call(ROWS, "jsonl_report"), suffixes=(".jsonl",),
                          marker=b'{"table": ', description="one JSON object per measurement"))
