"""``velollm report RESULT|ID ... [--output FILE] [--format html|csv|md|jsonl]``."""

from __future__ import annotations

from pathlib import Path

import click

from velollm_core.contract.errors import UserInputError

FORMATS = ("html", "csv", "md", "jsonl")
# The first bytes of every report this command writes: a report may be replaced without --force.
MARKERS = (b"<!DOCTYPE html>\n<!-- VeloLLM report", b"table,source,kind,", b'{"table": ', b"<!-- VeloLLM report")
_SUFFIXES = {".html": "html", ".htm": "html", ".csv": "csv", ".md": "md", ".markdown": "md", ".jsonl": "jsonl"}


@click.command("report")
@click.argument("results", nargs=-1, required=True, metavar="RESULT|ID ...")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write here (html needs one; text formats go to stdout without it).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="Default: from --output's suffix, else html.")
@click.option("--force", is_flag=True, help="Replace --output even when it is not a file VeloLLM wrote.")
def report_command(results: tuple[str, ...], output: Path | None, fmt: str | None, force: bool) -> None:
    """Turn results (files or history ids) into one offline HTML page, or CSV, markdown or JSONL rows.

    The HTML page is self-contained (inline SVG charts, no script, nothing fetched when opened):
    per-suite decode/prefill with spread, throughput vs latency over load levels with the knee, the
    speculative speedup vs draft length beside the advisor's prediction, % of roofline, telemetry.
    """
    from velollm_core.report.data import load_sources

    if fmt is None:
        fmt = _SUFFIXES.get(output.suffix.lower(), "html") if output is not None else "html"
    if fmt == "html" and output is None:
        raise UserInputError("an HTML report goes to a file: pass --output FILE.html (or --format csv|md|jsonl)")
    out = None
    if output is not None:
        from velollm_core.contract.files import prepare_output

        out = prepare_output(output, force=force or _is_report(output))
    sources = load_sources(list(results))
    if fmt == "html":
        from velollm_core.report.html import render_html

        text = render_html(sources)
    else:
        from velollm_core.report import formats

        rows = formats.rows(sources)
        text = {"csv": formats.to_csv, "md": formats.to_markdown, "jsonl": formats.to_jsonl}[fmt](rows)
    if out is None:
        click.echo(text, nl=False)
        return
    with out:
        out.write_text(text)
    click.echo(f"report written to {output}", err=True)


def _is_report(path: Path) -> bool:
    """Whether ``path`` holds a report of ours (files.prepare_output knows result files, not reports)."""
    try:
        with path.open("rb") as handle:
            return handle.read(64).startswith(MARKERS)
    except OSError:
        return False
