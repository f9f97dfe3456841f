"""``velollm speculative check | bench | pairs``: each asks the speculative object of one backend
(``--backend``; else the one installed backend that has one, or the one that handles the target)
through the ``speculative_backend`` hook; ``pairs`` without ``--backend`` asks each of them."""

from __future__ import annotations

from pathlib import Path

import click

from velollm_core.contract.errors import UserInputError, VeloError

BACKEND_HELP = "Backend that speculates (default: the installed one that can and runs the target)."


@click.group("speculative")
def speculative_group() -> None:
    """Speculative decoding: check a target/draft pair, compare vanilla vs speculative, find pairs."""


@speculative_group.command("check")
@click.argument("target")
@click.argument("draft", required=False)
@click.option("--spec-type", "spec_types", multiple=True,
              help="Types to check together, comma-separated (e.g. ngram-mod,draft-mtp; Ollama: draft or mtp; "
                   "repeat for several).")
@click.option("--backend", "backend_name", help=BACKEND_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def check_command(target: str, draft: str | None, spec_types: tuple[str, ...], backend_name: str | None,
                  as_json: bool) -> None:
    """Which speculation types run for TARGET (and DRAFT)? Exit 1 with the reasons when the
    draft fits none, or a --spec-type combination cannot run."""
    from velollm_core.contract.modelfiles import resolve_model_path
    from velollm_core.contract.output import print_json
    from velollm_core.speculative.bench import require_speculative_backend

    backend = require_speculative_backend(backend_name, target)
    target_path = resolve_model_path(target)
    draft_path = resolve_model_path(draft) if draft else None
    report = backend.check(target_path, draft_path, [backend.parse_types(value) for value in spec_types])
    if as_json:
        print_json(report)
    else:
        _print_check(report, backend.runtime)
    if report.get("compatible") is False or report["refused"]:
        raise SystemExit(1)


def _print_check(report: dict, runtime: str) -> None:
    if report["draft"] is not None:
        click.echo(f"target {report['target']} ({report['target_size_bytes'] / 2**20:.0f} MiB, "
                   f"vocab {report['target_vocab']})")
        click.echo(f"draft  {report['draft']} ({report['draft_size_bytes'] / 2**20:.0f} MiB, "
                   f"vocab {report['draft_vocab']})")
        if report["compatible"]:
            click.echo(f"compatible: {runtime} will speculate with this pair ({', '.join(report['drafters'])})")
        else:
            click.echo("NOT compatible:")
            for problem in report["reasons"]:
                click.echo(f"  - {problem}")
        if "warning" in report:
            click.echo(f"warning: {report['warning']}")
    else:
        click.echo(f"target {report['target']}")
    click.echo("speculation types:")
    for spec_type, entry in report["types"].items():
        click.echo(f"  {'yes' if entry['supported'] else 'no '}  {spec_type:<14} {entry['why'] or ''}".rstrip())
    click.echo("runs: " + "  ".join(report["combinations"]))
    for name, problems in report["refused"].items():
        click.echo(f"refused {name}:")
        for problem in problems:
            click.echo(f"  - {problem}")


ONE_AT_A_TIME = click.option(
    "--one-at-a-time", is_flag=True,
    help="One server up at a time (a target too large for two copies in memory); runs are then paired by "
         "iteration, not interleaved.")


@speculative_group.command("bench")
@click.option("--target", required=True, help="Target model: GGUF path or name (an Ollama model name: Ollama).")
@click.option("--draft", help="Draft model or head (GGUF path or name), or ngram / ngram-<kind> (llama.cpp).")
@click.option("--spec-type", "spec_types", multiple=True,
              help="Speculation types to compare, each a comma list (draft-mtp, ngram-mod,draft-eagle3, ...; "
                   "Ollama: draft, mtp; repeat for several), or 'all': every type the target and draft support.")
@click.option("--draft-max", type=click.IntRange(1, 256),
              help="Tokens drafted per step (model draft: 16; Ollama's draft_num_predict: 4).")
@click.option("--draft-min", type=click.IntRange(0, 256))
@click.option("--p-min", type=click.FloatRange(0, 1), default=0.75, show_default=True,
              help="Minimum draft probability (model draft), always passed explicitly.")
@click.option("--draft-ctx", type=click.IntRange(1))
@click.option("--draft-gpu-layers", type=click.IntRange(0))
@click.option("--draft-threads", type=click.IntRange(1))
@click.option("--ngram-match", type=click.IntRange(1, 1024),
              help="N-gram drafting: tokens of context that must match before a draft is proposed.")
@click.option("--spec-arg", "spec_args", multiple=True,
              help="Extra switch for the speculative server only (repeat), as its backend reads it: a llama-server "
                   "flag (e.g. --spec-arg=--spec-ngram-mod-n-min --spec-arg=8) or an Ollama Modelfile line "
                   "(e.g. --spec-arg='PARAMETER num_ctx 4096').")
@click.option("--threads", type=click.IntRange(1), help="Target threads (both servers).")
@click.option("--suite", "suites", multiple=True,
              help="Suites (default: the three standard ones and the input-grounded ones).")
@click.option("--iterations", type=click.IntRange(1), default=3, show_default=True)
@click.option("--warmup", type=click.IntRange(0), default=1, show_default=True)
@click.option("--max-tokens", type=click.IntRange(1), help="Override each suite's output length.")
@click.option("--option", "options", multiple=True, help="Backend option KEY=VALUE for both servers.")
@click.option("--no-advise", is_flag=True, help="Skip the cost measurements of the advisor.")
@click.option("--exact/--fast-kernels", default=False,
              help="--exact: batch-invariant kernels on both servers (llama.cpp CPU: its exact build, no repack, "
                   "no tiled matmul, no flash attention), so the text must match vanilla token for token (exit 1 "
                   "where it does not). Default (--fast-kernels): the standard build and kernels you run; text "
                   "differences are explained (near-tie or real) and the exit code stays 0.")
@click.option("--two-lengths", is_flag=True,
              help="Fit the advisor at two measured draft lengths: also run the draft max at twice its value.")
@ONE_AT_A_TIME
@click.option("--no-check", "no_check", is_flag=True,
              help="Do not measure the advisor's recommended draft max (its command is then not printed).")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace --output even when it is not a VeloLLM result.")
@click.option("--backend", "backend_name", help=BACKEND_HELP)
@click.option("--json", "as_json", is_flag=True)
def bench_command(target, draft, spec_types, draft_max, draft_min, p_min, draft_ctx, draft_gpu_layers, draft_threads,
                  ngram_match, spec_args, threads, suites, iterations, warmup, max_tokens, options, no_advise, exact,
                  two_lengths, one_at_a_time, no_check, output, force, backend_name, as_json) -> dict:
    """Vanilla vs speculative, interleaved, same prompts and seed: speedup with its interval, acceptance,
    and whether the text is the same (where not: the first differing token, near-tie or real)."""

    from velollm_core.bench.commands import parse_options
    from velollm_core.bench.suites import DEFAULT_SUITES, INPUT_GROUNDED_SUITES
    from velollm_core.contract.output import print_json, stderr_console, stdout_console
    from velollm_core.speculative.bench import (
        SpeculativeComparison,
        SpeculativePlan,
        require_speculative_backend,
    )

    if not draft and not spec_types:
        raise UserInputError("name a --draft, a --spec-type, or both (see velollm speculative check TARGET)")
    backend = require_speculative_backend(backend_name, target)
    types = [["all"]] if "all" in spec_types else [backend.parse_types(value) for value in spec_types]
    chosen = _chosen_suites(suites or (*DEFAULT_SUITES, *INPUT_GROUNDED_SUITES), max_tokens)
    settings = {k: v for k, v in {"draft_max": draft_max, "draft_min": draft_min, "draft_ctx": draft_ctx,
                                       "draft_gpu_layers": draft_gpu_layers, "draft_threads": draft_threads,
                                       "ngram_match": ngram_match}.items()
                if v is not None}
    settings["p_min"] = p_min  # used by drafters only
    plan = SpeculativePlan(target=target, draft=draft, types=types, suites=chosen, iterations=iterations, warmup=warmup,
                           threads=threads, settings=settings, options=parse_options(options),
                           advise=not no_advise, exact=exact, speculative_args=list(spec_args),
                           backend=backend_name, confirm=not no_check, one_at_a_time=one_at_a_time,
                           second_length=two_lengths)
    from velollm_core.bench.commands import record_busy, warn_if_busy
    from velollm_core.contract.files import prepare_output

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
    from velollm_core.history import record

    history_id = record(report, kind="speculative")
    if as_json:
        print_json(report)
    else:
        render_report(report, stdout_console())
    if history_id is not None:
        console.print(f"recorded in the results history as #{history_id}", highlight=False)
    if exact and not report["outputs_identical"]:
        first = report["differences"][0]
        raise VeloError(
            f"speculative output differs from vanilla ({len(report['differences'])} run(s)); first in "
            f"{first['benchmark']} run {first['iteration']} at character {first['position']}: "
            f"{first['vanilla']!r} vs {first['speculative']!r}"
        )
    return report  # to a backend's own command that runs this one through click (Ollama's draft-bench)


def _fmt(v, spec="{:.1f}"):
    return "-" if v is None else spec.format(v)


def _interval(interval: dict | None) -> str:
    """" (95%: 1.61-1.83x, n 6)" for a speedup's interval; "" where there is none (a single run)."""
    if not interval:
        return ""
    return f" (95%: {interval['low']:.2f}-{interval['high']:.2f}x, n {interval['n']})"


def _order(report: dict) -> str:
    return "one server at a time" if report.get("order") == "one server at a time" else "interleaved runs"


def _report_table(report: dict, config: dict, with_ttft: bool, name: str | None = None):
    """One row per suite; without ``with_ttft`` the TTFT and run-count columns are left to ``--json`` (80
    columns; the count is also in the interval's "n")."""
    from rich.table import Table

    drafter = f" · draft {Path(report['draft']).name}" if config.get("uses_draft_file") and report.get("draft") else ""
    table = Table(title=f"vanilla vs {name or ','.join(config['types'])}{drafter}",
                  caption=f"median decode tok/s; {_order(report)}, same seed, temperature 0")
    wide_columns = ["TTFT ms (v / s)", "n"] if with_ttft else []
    for col in ("suite", "vanilla", "speculative", "speedup", "acceptance", *wide_columns, "advice"):
        table.add_column(col, justify="left" if col == "suite" else "right", no_wrap=True)
    for suite, row in config["per_suite"].items():
        ttft = f"{_fmt(row['vanilla_ttft_ms'], '{:.0f}')} / {_fmt(row['speculative_ttft_ms'], '{:.0f}')}"
        table.add_row(suite, _fmt(row["vanilla_decode_tokens_per_s"]), _fmt(row["speculative_decode_tokens_per_s"]),
                      _fmt(row["speedup"], "{:.2f}x"), _fmt(row["acceptance_rate"], "{:.0%}"),
                      *([ttft, str(row["n"])] if with_ttft else []), row.get("advice", "-"))
    return table


def render_report(report: dict, console) -> None:
    from velollm_core.tables import fitting

    configs = report.get("configs") or {  # a report from before several configurations: the one it had
        "speculative": {"types": ["speculative"], "acceptance_source": "per-request totals", **report}}
    for name, config in configs.items():
        console.print(fitting(console, lambda c=config, n=name: _report_table(report, c, with_ttft=True, name=n),
                              lambda c=config, n=name: _report_table(report, c, with_ttft=False, name=n)))
        console.print(f"{name}: speedup (median over suites) {_fmt(config.get('speedup'), '{:.2f}x')}"
                      f"{_interval(config.get('speedup_interval'))}   "
                      f"acceptance {_fmt(config.get('acceptance_rate'), '{:.0%}')}")
        identity = config.get("identity")
        if identity:
            console.print(f"  text vs vanilla: {identity['verdict']} ({identity['why']})", highlight=False)
        else:
            console.print(f"  outputs identical: {'yes' if config['outputs_identical'] else 'NO'}")
        by_position = config.get("acceptance_by_position")
        if by_position:
            console.print("  acceptance by draft position (server metrics): " + ", ".join(
                f"{rate:.2f}" for rate in by_position["rates"][:16]))
        elif config.get("inferred"):
            inferred = config["inferred"]
            console.print(f"  acceptance {config['acceptance_source']}; inferred from the speedup: at least "
                          f"{_fmt(inferred.get('acceptance_rate_min'), '{:.0%}')} of drafted tokens")
        else:
            console.print(f"  acceptance from {config['acceptance_source']} (no per-position metrics)")
        advice = config.get("advisor")
        if advice and advice.get("curve"):
            fitted = advice.get("costs_ms", {}).get("calibrated")
            calibrated = " (head cost fitted to these runs)" if fitted and fitted["head"] else ""
            fit = advice.get("fit_speedup_measured_config", advice.get("predicted_speedup_measured_config"))
            console.print(f"  advisor: a draft token costs {advice['draft_cost_ratio']:.0%} of a target "
                          f"token{calibrated}; fit {fit:.2f}x to the measured "
                          f"{_fmt(advice.get('measured_speedup'), '{:.2f}x')} (a fit, not a prediction)")
            if advice.get("acceptance_inferred"):
                console.print(f"  advisor's acceptance: {advice['per_token_acceptance']:.0%} per drafted token, "
                              f"{advice['acceptance_source']}", highlight=False)
            if advice.get("costs_ms", {}).get("timed_by"):  # how a backend timed what it cannot time alone
                console.print(f"  costs: {advice['costs_ms']['timed_by']}", highlight=False, markup=False)
            second = advice.get("second_length")
            if second:
                console.print(f"  fitted at two measured draft lengths: {advice.get('measured_draft_max')} and "
                              f"{second['draft_max']} ({_fmt(second['measured_speedup'], '{:.2f}x')} measured there)")
            console.print("  predicted speedup by draft max (* = fitted): " + ", ".join(
                f"{row['draft_max']}{'*' if row.get('basis') == 'fit' else ''}: {row['predicted_speedup']:.2f}x"
                for row in advice["curve"]))
        if advice:
            console.print(f"  {advice['recommendation']}")
        check = (advice or {}).get("check")
        if check and check.get("error"):
            console.print(f"  draft max {check['draft_max']} could not be measured: {check['error']}", highlight=False)
        elif check:
            console.print(f"  measured at draft max {check['draft_max']}: "
                          f"{_fmt(check['measured_speedup'], '{:.2f}x')}{_interval(check['speedup_interval'])} vs "
                          f"{check['predicted_speedup']:.2f}x predicted (held out: "
                          f"{_fmt(check['prediction_error'], '{:+.0%}')})", highlight=False)
    ready = report.get("ready")
    if ready:
        if ready["command"]:
            console.print(f"best measured: {','.join(ready['types'])} draft max {ready.get('draft_max')} "
                          f"{ready['measured_speedup']:.2f}x{_interval(ready.get('speedup_interval'))}",
                          highlight=False)
            console.print("run it with:")
            console.print(ready["command"], soft_wrap=True, highlight=False, markup=False)
        else:
            console.print(ready["why"])


def _ints(values: tuple[str, ...], default: tuple[int, ...], what: str) -> tuple[int, ...]:
    """A grid axis from repeated or comma-separated options; ``default`` where none is given."""
    try:
        found = tuple(int(v) for value in values for v in value.split(",") if v.strip())
    except ValueError:
        raise UserInputError(f"{what} takes whole numbers, e.g. 4,8,16") from None
    if any(v < 1 or v > 256 for v in found):
        raise UserInputError(f"{what} takes numbers from 1 to 256")
    return found or default


@speculative_group.command("search")
@click.option("--target", required=True, help="Target model: GGUF path or name (an Ollama model name: Ollama).")
@click.option("--draft", help="Draft model or head, or ngram / ngram-<kind> (llama.cpp).")
@click.option("--spec-type", "spec_types", multiple=True,
              help="Speculation types to search, each a comma list (repeat; e.g. --spec-type ngram-mod "
                   "--spec-type ngram-map-k; Ollama: draft, mtp), or 'all': every type the target and draft "
                   "support. Default: the type the draft names.")
@click.option("--draft-max", "draft_maxes", multiple=True, help="Draft lengths to try (comma list; default 4,8,16).")
@click.option("--ngram-match", "ngram_matches", multiple=True,
              help="N-gram drafting: match lengths to try (comma list; default 4,8,12).")
@click.option("--p-min", "p_mins", multiple=True, type=click.FloatRange(0, 1),
              help="Draft model or head: confidence floors to try (repeat; default 0.5, 0.75, 0.9).")
@click.option("--threads", type=click.IntRange(1), help="Target threads (every server).")
@click.option("--suite", "suites", multiple=True, help="Suites (default: the input-grounded ones).")
@click.option("--iterations", type=click.IntRange(1), default=1, show_default=True,
              help="Runs per suite in the first round; each later round doubles them.")
@click.option("--warmup", type=click.IntRange(0), default=1, show_default=True)
@click.option("--max-tokens", type=click.IntRange(1), help="Override each suite's output length.")
@click.option("--option", "options", multiple=True, help="Backend option KEY=VALUE for every server.")
@click.option("--no-advise", is_flag=True, help="Skip the advisor and its held-out check.")
@click.option("--exact/--fast-kernels", default=False, help="Batch-invariant kernels (see speculative bench).")
@ONE_AT_A_TIME
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace --output even when it is not a VeloLLM result.")
@click.option("--backend", "backend_name", help=BACKEND_HELP)
@click.option("--json", "as_json", is_flag=True)
def search_command(target, draft, spec_types, draft_maxes, ngram_matches, p_mins, threads, suites, iterations, warmup,
                   max_tokens, options, no_advise, exact, one_at_a_time, output, force, backend_name, as_json) -> None:
    """The best speculation setting by successive halving: type x draft max x the type's knob, few runs,
    each round against plain decoding; the advisor's pick beside the best measured, per suite."""
    from velollm_core.bench.commands import parse_options, warn_if_busy
    from velollm_core.bench.suites import INPUT_GROUNDED_SUITES
    from velollm_core.contract.files import prepare_output
    from velollm_core.contract.output import print_json, stderr_console, stdout_console
    from velollm_core.speculative.bench import SpeculativePlan, config_name, require_speculative_backend
    from velollm_core.speculative.search import SpeculativeSearch, grid

    if not draft and not spec_types:
        raise UserInputError("name a --draft, a --spec-type, or both (see velollm speculative check TARGET)")
    backend = require_speculative_backend(backend_name, target)
    types = [["all"]] if "all" in spec_types else [backend.parse_types(value) for value in spec_types]
    plan = SpeculativePlan(target=target, draft=draft, types=types, suites=_chosen_suites(suites or INPUT_GROUNDED_SUITES,
                                                                                           max_tokens),
                           iterations=iterations, warmup=warmup, threads=threads, options=parse_options(options),
                           advise=not no_advise, exact=exact, backend=backend_name, one_at_a_time=one_at_a_time)
    resolved = backend.resolve(target, draft, types)
    unused = [f"--{knob.replace('_', '-')}" for knob, given in (("ngram_match", ngram_matches), ("p_min", p_mins))
              if given and not any(knob in backend.knobs(config) for config in resolved["configs"])]
    if unused:
        searched = " and ".join(config_name(config) for config in resolved["configs"])
        knobs = sorted({f"--{knob.replace('_', '-')}" for config in resolved["configs"] for knob in backend.knobs(config)})
        varied = ["--draft-max", *knobs, *(["the type"] if len(resolved["configs"]) > 1 else [])]
        raise UserInputError(f"{backend.runtime} has no {' or '.join(unused)} for {searched}; the search varies "
                             f"{', '.join(varied)}")
    candidates = grid(resolved["configs"], backend.knobs, draft_maxes=_ints(draft_maxes, (4, 8, 16), "--draft-max"),
                      values={"ngram_match": _ints(ngram_matches, (4, 8, 12), "--ngram-match"),
                              "p_min": tuple(p_mins) or (0.5, 0.75, 0.9)})
    out = prepare_output(output, force=force, protect=(resolved["target"], resolved["draft"]))
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = stderr_console()
    try:
        search = SpeculativeSearch(plan, candidates, on_round=out.write_json if out is not None else None)
        warn_if_busy(console)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as progress:
            task = progress.add_task(f"{len(search.candidates)} settings", total=search.total_runs())
            search.on_run = lambda label, record: progress.update(task, advance=1, description=label)
            report = search.run()
    finally:
        if out is not None:
            out.release()
    if as_json:
        print_json(report)
    else:
        render_search(report, stdout_console())


def _chosen_suites(names, max_tokens: int | None):
    from dataclasses import replace

    from velollm_core.bench.suites import get_suites

    chosen = get_suites(names)
    return [replace(s, max_tokens=max_tokens) for s in chosen] if max_tokens else chosen


def render_search(report: dict, console) -> None:
    """The last measurement of every setting, best first; per suite; the advisor against the measurements."""
    from rich.table import Table

    latest = {}
    for round_ in report["rounds"]:
        latest.update(round_["candidates"])
    table = Table(title=f"speculation settings, {len(report['rounds'])} rounds of successive halving",
                  caption="speedup: median decode tok/s over plain, per suite then median; "
                          + _order(report["settings"]))
    for col in ("setting", "round", "speedup", "95% interval", "accepted"):
        table.add_column(col, justify="left" if col == "setting" else "right")
    for name, row in sorted(latest.items(), key=lambda item: item[1]["speedup"] or 0, reverse=True):
        interval = row["speedup_interval"]
        table.add_row(name, str(row["round"]), _fmt(row["speedup"], "{:.2f}x"),
                      f"{interval['low']:.2f}-{interval['high']:.2f}" if interval else "-",
                      _fmt(row["acceptance_rate"], "{:.0%}"))
    console.print(table)
    best = report["best"]
    console.print(f"best measured: {best['name']} {_fmt(best['speedup'], '{:.2f}x')}{_interval(best['speedup_interval'])}",
                  highlight=False)
    for suite, row in report["per_suite"].items():
        console.print(f"  {suite}: {row['advice']} (best {row['best']} {_fmt(row['speedup'], '{:.2f}x')}"
                      f"{_interval(row['speedup_interval'])})", highlight=False)
    advisor = report.get("advisor")
    if advisor:
        fitted = advisor["fitted_at"]
        console.print(f"advisor fitted at {fitted['name']} in round {fitted.get('round', 1)} (fit "
                      f"{_fmt(fitted['fit_speedup'], '{:.2f}x')}, measured {_fmt(fitted['measured_speedup'], '{:.2f}x')});"
                      " predicted on held-out draft lengths:", highlight=False)
        if advisor.get("acceptance_inferred"):
            console.print(f"  its acceptance: {_fmt(advisor['per_token_acceptance'], '{:.0%}')} per drafted token, "
                          f"{advisor['acceptance_source']}", highlight=False)
        for row in advisor["held_out"]:
            console.print(f"  draft max {row['draft_max']}: predicted {row['predicted_speedup']:.2f}x, measured "
                          f"{_fmt(row['measured_speedup'], '{:.2f}x')} ({_fmt(row['error'], '{:+.0%}')})")
        pick = advisor["pick"]
        console.print(f"advisor's pick: {pick['name']} (draft max {pick['draft_max']}), measured "
                      f"{_fmt(pick['measured_speedup'], '{:.2f}x')} = {_fmt(advisor['pick_vs_best'], '{:.0%}')} of the "
                      "best measured", highlight=False)
    ready = report.get("ready")
    if ready and ready["command"]:
        console.print("run the best measured setting with:")
        console.print(ready["command"], soft_wrap=True, highlight=False, markup=False)
    elif ready:
        console.print(ready["why"])


@speculative_group.command("pairs")
@click.option("--dir", "dirs", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="A directory of GGUF files to scan (repeatable).")
@click.option("--max-ratio", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Largest draft/target size ratio to list.")
@click.option("--backend", "backend_name", help=BACKEND_HELP)
@click.option("--json", "as_json", is_flag=True)
def pairs_command(dirs, max_ratio, backend_name, as_json) -> None:
    """Scan local models (directories, the Ollama store, test models) for compatible pairs."""
    from velollm_core.contract.output import print_json
    from velollm_core.speculative.bench import require_speculative_backend, speculative_backends
    from velollm_core.speculative.pairs import local_models

    found = speculative_backends()
    # Without --backend, several speculative backends each pair the models they run (pairs name theirs).
    if backend_name is not None or len(found) < 2:
        backends = {backend_name or "": require_speculative_backend(backend_name)}
    else:
        backends = found
    models = local_models(dirs)
    if not models:
        raise UserInputError("no local GGUF models found (name directories with --dir)")
    pairs = [{**pair, **({"backend": name} if len(backends) > 1 else {})}
             for name, backend in backends.items() for pair in backend.pairs(models, max_ratio=max_ratio)]
    if as_json:
        print_json({"models": len(models), "pairs": pairs})
        return
    click.echo(f"{len(models)} local model(s) scanned; {len(pairs)} compatible pair(s) with draft <= "
               f"{max_ratio:.0%} of the target")
    for pair in pairs:
        runs_on = f"  [{pair['backend']}]" if "backend" in pair else ""
        click.echo(f"  target {pair['target']}  +  draft {pair['draft']}  (size ratio {pair['size_ratio']:.2f})"
                   f"{runs_on}")
