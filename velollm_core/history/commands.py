"""``velollm history``: list and filter stored results; import, export, label and remove them."""

from __future__ import annotations

from pathlib import Path

import click

from velollm_core.contract.errors import UserInputError

_KIND_SHORT = {"benchmark": "bench", "speculative": "spec", "verify": "verify"}


def _ref_id(history, ref: str) -> int:
    from velollm_core.history.store import parse_ref

    parsed = parse_ref(ref)
    if parsed is None:
        raise UserInputError(f"{ref!r} is not a history id (a number, '#12', or 'latest')")
    return history.latest_id() if parsed == "latest" else parsed


def headline_text(entry: dict) -> str:
    """The list's one number: 'decode tok/s', 'x speedup' or 'x decode (verified)'."""
    value = entry.get("headline")
    if value is None:
        return "-"
    return f"{value:.1f} tok/s" if entry["kind"] == "benchmark" else f"{value:.2f}x"


def _started(entry: dict, with_time: bool) -> str:
    when = entry.get("started_at") or entry.get("recorded_at") or ""
    return when[:16].replace("T", " ") if with_time else when[:10]


def _model_name(entry: dict) -> str:
    model = entry.get("model") or "-"
    return Path(model).name if ("/" in model or "\\" in model) else model


def _history_table(entries: list[dict], layout: str):
    """``wide``: backend version and machine too; ``medium``: the date alone, no machine; ``narrow``: the
    label under the model (80 columns whatever the labels). A status other than complete goes under
    the result."""
    from rich.markup import escape
    from rich.table import Table

    wide = layout == "wide"
    table = Table(title="results history", caption="newest first · `velollm history --json` has every field")
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("started (UTC)" if wide else "date", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("backend", no_wrap=not wide, min_width=None if wide else 7)
    table.add_column("model" if layout != "narrow" else "model / label", min_width=12, overflow="fold")
    if wide:
        table.add_column("machine", min_width=12)
    table.add_column("result", justify="right", no_wrap=True)
    if layout != "narrow":
        table.add_column("label", no_wrap=True)  # whole, or the narrow layout puts it under the model
    for entry in entries:
        backend = entry.get("backend") or "-"
        if wide and entry.get("backend_version"):
            backend += f" {entry['backend_version']}"
        result = headline_text(entry)
        if entry.get("status") not in (None, "complete"):
            result += f"\n{entry['status']}"
        # What users typed (labels, paths) is shown as typed: '[x]' is no rich markup here.
        backend = escape(backend)
        model, label = escape(_model_name(entry)), escape(entry.get("label") or "")
        row = [str(entry["id"]), _started(entry, wide), _KIND_SHORT.get(entry["kind"], entry["kind"]), backend,
               model if layout != "narrow" or not label else f"{model}\n" + escape(f"[{entry['label']}]")]
        if wide:
            row.append(escape(entry.get("machine") or entry.get("hostname") or "-"))
        row.append(result)
        if layout != "narrow":
            row.append(label)
        table.add_row(*row)
    return table


@click.group("history", invoke_without_command=True)
@click.option("--model", help="Model name or path contains this (any case).")
@click.option("--backend", help="Backend name (llamacpp, ollama, openai, ...).")
@click.option("--machine", help="CPU/GPU description or host name contains this.")
@click.option("--since", metavar="DATE", help="Started on or after this ISO date/time (2026-12-01).")
@click.option("--until", metavar="DATE", help="Started on or before this ISO date (the whole day) or time.")
@click.option("--label", help="Label contains this.")
@click.option("--kind", type=click.Choice(["benchmark", "speculative", "verify"]))
@click.option("--limit", type=click.IntRange(0), default=50, show_default=True, help="At most this many (0: all).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def history_group(ctx, model, backend, machine, since, until, label, kind, limit, as_json) -> None:
    """List stored results (newest first), filtered; subcommands import, export, label and remove them.

    Every finished benchmark, speculative bench and verification is recorded in a SQLite database
    ($VELOLLM_HISTORY_DB, default: the user data folder; VELOLLM_HISTORY_DB=off switches it off).
    History ids work wherever a result file does: `velollm compare 3 7`, `velollm report 7`.
    """
    if ctx.invoked_subcommand is not None:
        return
    from velollm_core.contract.output import print_json, stdout_console
    from velollm_core.history.store import db_path, open_history

    for name, value in (("--since", since), ("--until", until)):
        _check_date(name, value)
    path = db_path()
    if path is not None and not path.exists():
        entries, matched, total = [], 0, 0
    else:
        with open_history() as history:
            filters = {"model": model, "backend": backend, "machine": machine, "since": since, "until": until,
                       "label": label, "kind": kind}
            entries = history.find(**filters, limit=limit or None)
            matched, total = history.count(**filters), history.count()
    if as_json:
        print_json({"database": str(path), "total": total, "matched": matched, "results": entries})
        return
    console = stdout_console()
    if not entries:
        what = "no results match" if total else "no results recorded yet"
        click.echo(f"{what} ({path})")
        return
    from velollm_core.tables import fitting

    console.print(fitting(console, *(lambda layout=layout: _history_table(entries, layout)
                                     for layout in ("wide", "medium", "narrow"))))
    # The count is of what the filters matched; the whole history's size only beside it.
    shown = f"{len(entries)} of {matched}" if len(entries) < matched else f"{matched}"
    if matched < total:
        click.echo(f"{shown} matching result(s), of {total} in {path}")
    else:
        click.echo(f"{shown} result(s) in {path}")


def _check_date(name: str, value: str | None) -> None:
    import datetime as dt

    if value is None:
        return
    try:
        dt.datetime.fromisoformat(value)
    except ValueError:
        raise UserInputError(f"{name} {value!r} is not an ISO date or time (e.g. 2026-12-01 or "
                             "2026-12-01T09:30)") from None


@history_group.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--label", help="Label the imported results.")
def import_command(files: tuple[Path, ...], label: str | None) -> None:
    """Store result files in the history, each result once: VeloLLM's (benchmark, speculative bench,
    verify, with or without schema_version) and other tools' that plugins read (llama-bench JSON, JSONL
    or SQL; GuideLLM's and `vllm bench serve`'s JSON). A figure the tool did not measure stays unknown."""
    from velollm_core.history.documents import plausibility, read_document, validate_document
    from velollm_core.history.peers import peer_documents
    from velollm_core.history.store import open_history

    loaded = []
    for path in files:  # all read and checked first: one bad file imports nothing
        imported = peer_documents(path)
        if imported is not None:
            loaded += [(path, name, None, document, "benchmark") for name, document in imported]
            continue
        text, document = read_document(path)
        kind = validate_document(document, path)  # the validation compare and report apply too
        loaded.append((path, str(path), text, document, kind))
    with open_history() as history:
        for path, name, text, document, kind in loaded:
            added = history.add(document, kind=kind, text=text, origin=str(path.resolve()), label=label)
            note = "" if added.new else " (already there)"
            if added.scrubbed:
                note += " (secrets removed: export gives the redacted document)"
            click.echo(f"{name} -> #{added.id}{note}")
            for flag in plausibility(document, kind):
                click.echo(f"warning: #{added.id}: {flag}", err=True)


@history_group.command("export")
@click.argument("ref")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here (else stdout).")
@click.option("--force", is_flag=True, help="Replace --output even when it is not a VeloLLM file.")
def export_command(ref: str, output: Path | None, force: bool) -> None:
    """Print (or write) a stored result's JSON exactly as it was recorded or imported."""
    from velollm_core.history.store import open_history

    with open_history(must_exist=True) as history:
        text = history.document(_ref_id(history, ref))
    if output is None:
        click.echo(text, nl=False)
        return
    from velollm_core.contract.files import prepare_output

    with prepare_output(output, force=force) as out:
        out.write_text(text)
    click.echo(f"written to {output}", err=True)


@history_group.command("label")
@click.argument("ref")
@click.argument("text", required=False)
def label_command(ref: str, text: str | None) -> None:
    """Set a result's label (without TEXT: remove it)."""
    from velollm_core.history.store import open_history

    with open_history(must_exist=True) as history:
        result_id = _ref_id(history, ref)
        history.set_label(result_id, text)
    click.echo(f"#{result_id}: " + (f"label {text!r}" if text else "label removed"))


@history_group.command("rm")
@click.argument("refs", nargs=-1, required=True)
def remove_command(refs: tuple[str, ...]) -> None:
    """Remove results from the history (their files, if any, stay)."""
    from velollm_core.history.store import open_history

    with open_history(must_exist=True) as history:
        ids = [_ref_id(history, ref) for ref in refs]
        for result_id in ids:
            history.entry(result_id)  # all checked before any is removed
        for result_id in ids:
            history.delete(result_id)
    click.echo("removed " + ", ".join(f"#{i}" for i in ids))
