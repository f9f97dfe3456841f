"""``velollm ollama ...``: commands about this machine's Ollama."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
from collections.abc import Iterator
from pathlib import Path

import click


@click.group("ollama")
def ollama_group() -> None:
    """Ollama: the local model store, and its speculative decoding measured."""


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


@ollama_group.command("draft-bench")
@click.option("--model", "model", required=True, help="The Ollama model to speed up (e.g. llama3.1:8b).")
@click.option("--draft", "draft", default=None, help="An installed smaller model with the same vocabulary.")
@click.option("--mtp", is_flag=True, help="Measure the model's own multi-token-prediction head instead.")
@click.option("--draft-num-predict", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Tokens drafted per step (Ollama's draft_num_predict).")
@click.option("--suite", "suites", multiple=True,
              help="Suites (default: the three standard ones and the input-grounded ones).")
@click.option("--iterations", type=click.IntRange(1, 50), default=3, show_default=True)
@click.option("--warmup", type=click.IntRange(0, 10), default=1, show_default=True)
@click.option("--max-tokens", type=click.IntRange(8, 4096), default=None, help="Override each suite's output length.")
@click.option("--host", default=None, help="Ollama's URL (default $OLLAMA_HOST or http://127.0.0.1:11434).")
@click.option("--no-check", "no_check", is_flag=True,
              help="Do not measure the advisor's recommended draft_num_predict (only measured settings get a "
                   "Modelfile).")
@click.option("--output", type=click.Path(dir_okay=False), default=None, help="Write the report (JSON) here.")
@click.option("--force", is_flag=True, help="Replace an --output file that is not VeloLLM's.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def draft_bench_command(model: str, draft: str | None, mtp: bool, draft_num_predict: int, suites: tuple[str, ...],
                        iterations: int, warmup: int, max_tokens: int | None, host: str | None, no_check: bool,
                        output: str | None, force: bool, as_json: bool) -> None:
    """Measure Ollama's speculative decoding: MODEL without and with a draft (or its MTP head),
    interleaved per suite; speedup with its interval and per-suite verdict, acceptance inferred from
    timings, the advisor's draft_num_predict measured before it is proposed. The same comparison as
    `velollm speculative bench --backend ollama` (`velollm speculative search --backend ollama` searches).

    When the best measured setting pays, its Modelfile (FROM + DRAFT + PARAMETER draft_num_predict) is
    written beside the measurement and `velollm optimize --backend ollama --model MODEL` proposes it.
    """
    from velollm_core.api import UserInputError, atomic_write_text, prepare_output, stdout_console
    from velollm_ollama.drafts import kept_measurement, measurement_path

    if bool(draft) == mtp:
        raise UserInputError("name a draft model with --draft NAME, or pass --mtp (not both)")
    prepare_output(output, force=force, lock=False)  # refused before any work; the comparison locks it
    context = click.get_current_context()
    root = context.find_root()
    # The core's command itself (the documented CLI), so both measure with one feature: suites, the
    # advisor and its check, per-suite verdicts, the result file and the history.
    bench = root.command.get_command(root, "speculative").get_command(root, "bench")
    with _ollama_host(host):
        report = context.invoke(bench, target=model, draft=draft, spec_types=("mtp",) if mtp else ("draft",),
                                draft_max=draft_num_predict, suites=suites, iterations=iterations, warmup=warmup,
                                max_tokens=max_tokens, no_check=no_check, output=Path(output) if output else None,
                                force=force, backend_name="ollama", as_json=as_json)
    kept = kept_measurement(report, draft)
    atomic_write_text(measurement_path(model), json.dumps(kept, indent=2) + "\n")  # what `velollm optimize` reads
    if as_json:
        return
    console = stdout_console()
    if kept["pays"]:
        lines = [(f"Modelfile of the best measured setting (draft_num_predict {kept['draft_num_predict']}, "
                  f"{kept['speedup']:.2f}x measured in {kept['measured_in']}), written to {kept['modelfile_path']}:"),
                 *("  " + line for line in kept["modelfile"].splitlines()),
                 f"velollm optimize --backend ollama --model {model} proposes it"]
    else:
        lines = ["no Modelfile: no measured setting pays (speculation off for this model)"]
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def _ollama_host(host: str | None) -> Iterator[None]:
    """``--host`` as ``$OLLAMA_HOST`` while the comparison runs (every Ollama client of it reads that),
    checked first so a bad URL is named as the flag."""
    if host is None:
        yield
        return
    from velollm_ollama.client import server_url

    server_url(host)
    before = os.environ.get("OLLAMA_HOST")
    os.environ["OLLAMA_HOST"] = host
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("OLLAMA_HOST", None)
        else:
            os.environ["OLLAMA_HOST"] = before
