"""``velollm speculative check | bench | pairs``."""

from __future__ import annotations

from pathlib import Path

import click

from velollm_core.errors import UserInputError, VeloError


@click.group("speculative")
def speculative_group() -> None:
    """Speculative decoding: check a target/draft pair, compare vanilla vs speculative, find pairs."""


@speculative_group.command("check")
@click.argument("target")
@click.argument("draft")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def check_command(target: str, draft: str, as_json: bool) -> None:
    """Can DRAFT speculate for TARGET? Exit 1 with the reasons when not."""
    from velollm_core.modelfiles import resolve_model_path
    from velollm_core.output import print_json
    from velollm_core.speculative.compat import check_pair

    report = check_pair(resolve_model_path(target), resolve_model_path(draft))
    if as_json:
        print_json(report.to_json())
    else:
        facts = report.facts
        click.echo(f"target {report.target} ({facts['target_size_bytes'] / 2**20:.0f} MiB, vocab {facts['target_vocab']})")
        click.echo(f"draft  {report.draft} ({facts['draft_size_bytes'] / 2**20:.0f} MiB, vocab {facts['draft_vocab']})")
        if report.compatible:
            click.echo("compatible: llama.cpp will speculate with this pair")
        else:
            click.echo("NOT compatible:")
            for problem in report.problems:
                click.echo(f"  - {problem}")
        if "warning" in facts:
            click.echo(f"warning: {facts['warning']}")
    if not report.compatible:
        raise SystemExit(1)


@speculative_group.command("bench")
@click.option("--target", required=True, help="Target model: GGUF path or name.")
@click.option("--draft", required=True, help="Draft model (GGUF path or name), or ngram / ngram-<kind>.")
@click.option("--draft-max", type=click.IntRange(1, 256), help="Tokens drafted per step (model draft: 16).")
@click.option("--draft-min", type=click.IntRange(0, 256))
@click.option("--p-min", type=click.FloatRange(0, 1), default=0.75, show_default=True,
              help="Minimum draft probability (model draft), always passed explicitly.")
@click.option("--draft-ctx", type=click.IntRange(1))
@click.option("--draft-gpu-layers", type=click.IntRange(0))
@click.option("--draft-threads", type=click.IntRange(1))
@click.option("--ngram-match", type=click.IntRange(1, 1024),
              help="N-gram drafting: tokens of context that must match before a draft is proposed.")
@click.option("--spec-arg", "spec_args", multiple=True,
              help="Extra llama-server flag for the speculative server only (repeat; e.g. --spec-arg=--spec-ngram-mod-n-min "
                   "--spec-arg=8).")
@click.option("--threads", type=click.IntRange(1), help="Target threads (both servers).")
@click.option("--suite", "suites", multiple=True,
              help="Suites (default: the three standard ones and the input-grounded ones).")
@click.option("--iterations", type=click.IntRange(1), default=3, show_default=True)
@click.option("--warmup", type=click.IntRange(0), default=1, show_default=True)
@click.option("--max-tokens", type=click.IntRange(1), help="Override each suite's output length.")
@click.option("--option", "options", multiple=True, help="Backend option KEY=VALUE for both servers.")
@click.option("--no-advise", is_flag=True, help="Skip the cost measurements of the advisor.")
@click.option("--exact/--fast-kernels", default=True, show_default=True,
              help="Batch-invariant kernels on both servers (CPU: no repack, no tiled matmul, no flash "
                   "attention), so speculative text can match vanilla token for token.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace --output even when it is not a VeloLLM result.")
@click.option("--json", "as_json", is_flag=True)
def bench_command(target, draft, draft_max, draft_min, p_min, draft_ctx, draft_gpu_layers, draft_threads,
                  ngram_match, spec_args, threads, suites, iterations, warmup, max_tokens, options, no_advise, exact,
                  output, force, as_json) -> None:
    """Vanilla vs speculative, interleaved, same prompts and seed: speedup, acceptance, same text."""
    from dataclasses import replace

    from velollm_core.bench.commands import parse_options
    from velollm_core.bench.suites import DEFAULT_SUITES, INPUT_GROUNDED_SUITES, get_suites
    from velollm_core.output import print_json, stderr_console, stdout_console
    from velollm_core.speculative.bench import SpeculativeComparison, SpeculativePlan, is_draftless

    chosen = get_suites(suites or (*DEFAULT_SUITES, *INPUT_GROUNDED_SUITES))
    if max_tokens:
        chosen = [replace(s, max_tokens=max_tokens) for s in chosen]
    settings = {k: v for k, v in {"draft_max": draft_max, "draft_min": draft_min, "draft_ctx": draft_ctx,
                                       "draft_gpu_layers": draft_gpu_layers, "draft_threads": draft_threads,
                                       "ngram_match": ngram_match}.items()
                if v is not None}
    if not is_draftless(draft):
        settings["p_min"] = p_min
    plan = SpeculativePlan(target=target, draft=draft, suites=chosen, iterations=iterations, warmup=warmup,
                           threads=threads, settings=settings, options=parse_options(options),
                           advise=not no_advise, exact=exact, speculative_args=list(spec_args))
    from velollm_core.bench.commands import record_busy, warn_if_busy
    from velollm_core.files import prepare_output

    console = stderr_console()
    busy = warn_if_busy(console)
    comparison = SpeculativeComparison(plan, output=None)  # resolves and checks the pair first
    comparison.output = prepare_output(output, force=force, protect=(comparison.target, comparison.draft_path))
    for runner in comparison.runners.values():
        record_busy(runner.result, busy)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("starting servers", total=comparison.total_runs())
        comparison.on_run = lambda label, record: progress.update(task, advance=1, description=label)
        try:
            report = comparison.run()
        except BaseException:
            if comparison.output is not None and comparison.output.writes:
                console.print(f"finished runs kept in {output}")
            raise
        finally:
            if comparison.output is not None:
                comparison.output.release()
    if as_json:
        print_json(report)
    else:
        render_report(report, stdout_console())
    if not report["outputs_identical"]:
        first = report["differences"][0]
        raise VeloError(
            f"speculative output differs from vanilla ({len(report['differences'])} run(s)); first in "
            f"{first['benchmark']} run {first['iteration']} at character {first['position']}: "
            f"{first['vanilla']!r} vs {first['speculative']!r}"
        )


def _fmt(v, spec="{:.1f}"):
    return "-" if v is None else spec.format(v)


def _report_table(report: dict, with_ttft: bool):
    """One row per suite; without ``with_ttft`` the TTFT column is left to ``--json`` (80 columns)."""
    from rich.table import Table

    table = Table(title=f"vanilla vs speculative · draft {Path(report['draft']).name}",
                  caption="median decode tok/s; interleaved runs, same seed, temperature 0")
    ttft_column = ["TTFT ms (v / s)"] if with_ttft else []
    for col in ("suite", "vanilla", "speculative", "speedup", "acceptance", *ttft_column, "n"):
        table.add_column(col, justify="left" if col == "suite" else "right", no_wrap=True)
    for suite, row in report["per_suite"].items():
        ttft = f"{_fmt(row['vanilla_ttft_ms'], '{:.0f}')} / {_fmt(row['speculative_ttft_ms'], '{:.0f}')}"
        table.add_row(suite, _fmt(row["vanilla_decode_tokens_per_s"]), _fmt(row["speculative_decode_tokens_per_s"]),
                      _fmt(row["speedup"], "{:.2f}x"), _fmt(row["acceptance_rate"], "{:.0%}"),
                      *([ttft] if with_ttft else []), str(row["n"]))
    return table


def render_report(report: dict, console) -> None:
    from velollm_core.tables import fitting

    console.print(fitting(console, lambda: _report_table(report, with_ttft=True),
                          lambda: _report_table(report, with_ttft=False)))
    console.print(f"speedup (median over suites): {_fmt(report.get('speedup'), '{:.2f}x')}   "
                  f"acceptance: {_fmt(report.get('acceptance_rate'), '{:.0%}')}   "
                  f"outputs identical: {'yes' if report['outputs_identical'] else 'NO'}")
    advice = report.get("advisor")
    if advice:
        console.print(f"advisor: draft costs {advice['draft_cost_ratio']:.0%} of a target token; "
                      f"per-token acceptance {advice['per_token_acceptance']:.2f}; predicted "
                      f"{advice['predicted_speedup_measured_config']:.2f}x vs measured "
                      f"{_fmt(advice.get('measured_speedup'), '{:.2f}x')}")
        console.print("  predicted speedup by draft max: " + ", ".join(
            f"{row['draft_max']}: {row['predicted_speedup']:.2f}x" for row in advice["curve"]))
        console.print(f"  {advice['recommendation']}")


@speculative_group.command("pairs")
@click.option("--dir", "dirs", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="A directory of GGUF files to scan (repeatable).")
@click.option("--max-ratio", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Largest draft/target size ratio to list.")
@click.option("--json", "as_json", is_flag=True)
def pairs_command(dirs, max_ratio, as_json) -> None:
    """Scan local models (directories, the Ollama store, test models) for compatible pairs."""
    from velollm_core.output import print_json
    from velollm_core.speculative.pairs import find_pairs, local_models

    models = local_models(dirs)
    if not models:
        raise UserInputError("no local GGUF models found (name directories with --dir)")
    pairs = find_pairs(models, max_ratio=max_ratio)
    if as_json:
        print_json({"models": len(models), "pairs": pairs})
        return
    click.echo(f"{len(models)} local model(s) scanned; {len(pairs)} compatible pair(s) with draft <= "
               f"{max_ratio:.0%} of the target")
    for pair in pairs:
        click.echo(f"  target {pair['target']}  +  draft {pair['draft']}  (size ratio {pair['size_ratio']:.2f})")
