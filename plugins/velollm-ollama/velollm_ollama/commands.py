"""``velollm ollama ...``: commands about this machine's Ollama."""

from __future__ import annotations

import datetime as _dt

import click


@click.group("ollama")
def ollama_group() -> None:
    """Ollama: the local model store."""


def _gib(value: int | None) -> str:
    return f"{value / 1024**3:.2f} GiB" if value else "-"


@ollama_group.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models_command(as_json: bool) -> None:
    """List the models in Ollama's store on disk, with their sizes and GGUF files."""
    from velollm_ollama.store import ModelStore

    store = ModelStore.default()
    models = store.list()
    dirs = store.existing_dirs()
    if as_json:
        from velollm_core.api import print_json

        print_json({
            "models_dirs": [str(d) for d in dirs],
            "searched": [str(d) for d in store.models_dirs],
            "models": [m.to_dict() for m in models],
            "warnings": store.warnings,
        })
        return
    for warning in store.warnings:
        click.echo(f"warning: {warning}", err=True)
    if not models:
        where = ", ".join(str(d) for d in store.models_dirs)
        click.echo(f"No Ollama models found (searched {where}).", err=True)
        return
    from rich.markup import escape
    from rich.table import Table

    from velollm_core.api import stdout_console

    table = Table(title="Ollama models on disk")
    for column in ("name", "size", "modified", "GGUF"):
        table.add_column(column, overflow="fold")
    for model in models:
        modified = _dt.datetime.fromtimestamp(model.modified).strftime("%Y-%m-%d %H:%M")
        gguf = str(model.gguf_path) if model.gguf_path else "(none: " + (
            "missing blob" if model.missing_blobs else "no GGUF layer") + ")"
        table.add_row(escape(model.name), _gib(model.size_bytes), modified, escape(gguf))
    stdout_console().print(table)
