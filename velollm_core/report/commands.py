"""``velollm report RESULT|ID ... [--output FILE] [--format NAME]``: the formats are the registered ones
(``register_report_formats``): html, csv, md and jsonl built in, more from plugins."""

from __future__ import annotations

from pathlib import Path

import click

from velollm_core.contract.errors import UserInputError
from velollm_core.contract.formats import FormatChoice, format_for_suffix, report_formats

DEFAULT_FORMAT = "html"


@click.command("report")
@click.argument("results", nargs=-1, required=True, metavar="RESULT|ID ...")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write here (html needs one; text formats go to stdout without it).")
@click.option("--format", "fmt", type=FormatChoice(report_formats),
              help="Default: from --output's suffix, else html.")
@click.option("--force", is_flag=True, help="Replace --output even when it is not a file VeloLLM wrote.")
def report_command(results: tuple[str, ...], output: Path | None, fmt: str | None, force: bool) -> None:
    """Turn results (files or history ids) into one offline HTML page, or CSV, markdown or JSONL rows.

    The HTML page is self-contained (inline SVG charts, no script, nothing fetched when opened):
    per-suite decode/prefill with spread, throughput vs latency over load levels with the knee, the
    speculative speedup vs draft length beside the advisor's prediction, % of roofline, telemetry.
    Plugins may add formats (``register_report_formats``).
    """
    from velollm_core.report.data import load_sources

    formats = report_formats()
    if fmt is None:
        fmt = (format_for_suffix(formats, output.suffix) if output is not None else None) or DEFAULT_FORMAT
    chosen = formats[fmt]
    if chosen.file_only and output is None:
        printable = "|".join(name for name, item in formats.items() if not item.file_only)
        suffix = chosen.suffixes[0] if chosen.suffixes else ""
        raise UserInputError(f"an {fmt.upper()} report goes to a file: pass --output FILE{suffix} "
                             f"(or --format {printable})")
    out = None
    if output is not None:
        from velollm_core.contract.files import prepare_output

        markers = tuple(item.marker for item in formats.values() if item.marker)
        out = prepare_output(output, force=force, markers=markers)
    text = chosen.render(load_sources(list(results)))
    if out is None:
        from velollm_core.contract.output import echo

        echo(text, nl=False)  # a control character from a result file is shown, not obeyed
        return
    with out:
        out.write_text(text)
    click.echo(f"report written to {output}", err=True)

