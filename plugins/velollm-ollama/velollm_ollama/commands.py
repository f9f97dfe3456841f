"""``velollm ollama ...``: commands about this machine's Ollama."""

from __future__ import annotations

import datetime as _dt
import json

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


def _rate(value: float | None, spec: str = "{:.1f}") -> str:
    return "-" if value is None else spec.format(value)


def _print_draft_report(report: dict) -> None:
    import shlex

    from rich.markup import escape
    from rich.table import Table

    from velollm_core.api import stdout_console

    console = stdout_console()
    table = Table(title=f"{escape(report['target'])}: without and with {escape(str(report['draft']))}")
    for column in ("prompt", "without tok/s", "with tok/s", "speedup"):
        table.add_column(column, overflow="fold")
    for label, row in report.get("per_prompt", {}).items():
        table.add_row(escape(label), _rate(row["vanilla_decode_tokens_per_s"]),
                      _rate(row["speculative_decode_tokens_per_s"]), _rate(row["speedup"], "{:.2f}x"))
    console.print(table)
    inferred = report.get("inferred") or {}
    out = [f"speedup (median over prompts): {_rate(report.get('speedup'), '{:.2f}x')}",
           "identical text: " + ("yes" if report.get("outputs_identical") else
                                 f"no ({len(report.get('differences') or [])} run(s) differ)"),
           (f"accepted share of drafted tokens, inferred from timings: at least "
           f"{_rate(inferred.get('acceptance_rate_min'), '{:.0%}')} (Ollama reports none)"),
           report.get("verdict") or ""]
    if report.get("modelfile_path"):
        out += [f"Modelfile written to {report['modelfile_path']}:",
                *("  " + line for line in report["modelfile"].splitlines()),
                "create the model with: " + shlex.join(report["create_command"])]
    for line in out:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


@ollama_group.command("draft-bench")
@click.option("--model", "model", required=True, help="The Ollama model to speed up (e.g. llama3.1:8b).")
@click.option("--draft", "draft", default=None, help="An installed smaller model with the same vocabulary.")
@click.option("--mtp", is_flag=True, help="Measure the model's own multi-token-prediction head instead.")
@click.option("--draft-num-predict", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Tokens drafted per step (Ollama's draft_num_predict).")
@click.option("--iterations", type=click.IntRange(1, 50), default=3, show_default=True)
@click.option("--warmup", type=click.IntRange(0, 10), default=1, show_default=True)
@click.option("--max-tokens", type=click.IntRange(8, 4096), default=128, show_default=True)
@click.option("--host", default=None, help="Ollama's URL (default $OLLAMA_HOST or http://127.0.0.1:11434).")
@click.option("--keep", is_flag=True, help="Keep the temporary model with the draft.")
@click.option("--output", type=click.Path(dir_okay=False), default=None, help="Write the report (JSON) here.")
@click.option("--force", is_flag=True, help="Replace an --output file that is not VeloLLM's.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def draft_bench_command(model: str, draft: str | None, mtp: bool, draft_num_predict: int, iterations: int,
                        warmup: int, max_tokens: int, host: str | None, keep: bool, output: str | None,
                        force: bool, as_json: bool) -> None:
    """Measure Ollama's speculative decoding: MODEL without and with a draft (or its MTP head),
    interleaved on the same prompts; speedup, identical text, acceptance inferred from timings.

    When it pays, a Modelfile (FROM + DRAFT + PARAMETER draft_num_predict) is written beside the
    measurement and `velollm optimize --backend ollama --model MODEL` proposes it.
    """
    import shlex

    from velollm_core.api import UserInputError, atomic_write_text, prepare_output, print_json, stderr_console
    from velollm_ollama.client import OllamaClient
    from velollm_ollama.drafts import DraftComparison, DraftPlan, create_command, measurement_path

    if bool(draft) == mtp:
        raise UserInputError("name a draft model with --draft NAME, or pass --mtp (not both)")
    plan = DraftPlan(model=model, draft=draft, mtp=mtp, draft_num_predict=draft_num_predict,
                     iterations=iterations, warmup=warmup, max_tokens=max_tokens, keep=keep)
    out_file = prepare_output(output, force=force)
    kept = measurement_path(model)
    client = OllamaClient(host)
    console = stderr_console()
    try:
        comparison = DraftComparison(plan, client)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        def write(report: dict) -> None:
            if out_file is not None:
                out_file.write_json(report)

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as progress:
            task = progress.add_task("creating the model with the draft", total=comparison.total_runs())
            comparison.on_run = lambda label: progress.update(task, advance=1, description=label)
            report = comparison.run(write)
    finally:
        client.close()
        if out_file is not None:
            out_file.release()
    if report.get("modelfile"):
        modelfile = kept.with_suffix(".Modelfile")
        atomic_write_text(modelfile, report["modelfile"])
        report["modelfile_path"] = str(modelfile)
        report["create_command"] = create_command(report["proposed_model"], modelfile)
        report["create_shell"] = shlex.join(report["create_command"])
        if out_file is not None:
            out_file.write_json(report)
    atomic_write_text(kept, json.dumps(report, indent=2) + "\n")  # what `velollm optimize` reads
    if as_json:
        print_json(report)
    else:
        _print_draft_report(report)
