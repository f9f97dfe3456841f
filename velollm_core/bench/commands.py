"""``velollm benchmark`` and ``velollm compare``."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import click

from velollm_core.bench.profiles import ARRIVALS, PROFILES, profile_named
from velollm_core.bench.shape import workload_flags
from velollm_core.contract.errors import UserInputError


def parse_concurrency(value: str) -> list[int]:
    """'1,2,4' -> [1, 2, 4]; each level a positive integer."""
    try:
        levels = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"expected a comma list of integers, got {value!r}") from None
    if not levels or any(level < 1 for level in levels):
        raise click.BadParameter("concurrency levels must be integers >= 1")
    return levels


def parse_rates(value: str | None) -> list[float]:
    """'1,2.5,4' -> [1.0, 2.5, 4.0]; each a positive number of requests per second."""
    if not value:
        return []
    try:
        rates = [float(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"expected a comma list of requests per second, got {value!r}") from None
    if not rates or any(not 0 < rate < 1e6 for rate in rates):
        raise click.BadParameter("rates must be positive numbers of requests per second")
    return rates


# The longest wait for one arrival a rate level may ask: as long as the longest --duration.
MAX_ARRIVAL_GAP_S = 86400.0


def check_arrival_gaps(rates: list[float], duration_s: float | None) -> None:
    """Refuse a rate whose requests arrive too far apart to be measured: more than a day apart, or
    further apart than the level's ``--duration`` (the level would wait for ever without a word)."""
    limit, reason = MAX_ARRIVAL_GAP_S, "more than a day"
    if duration_s is not None and duration_s < limit:
        limit, reason = duration_s, f"longer than --duration {duration_s:g}, so no measured request would arrive"
    for rate in rates:
        if 1.0 / rate > limit:
            raise UserInputError(f"--rate {rate:g} sends one request every {1.0 / rate:.3g} s, {reason}; "
                                 f"give at least {1.0 / limit:.3g} requests per second")


def _first_repeated(items: list[tuple[str, str]]) -> tuple[str, str, str] | None:
    """The first key given twice in (key, source) pairs: (key, first source, second source)."""
    seen: dict[str, str] = {}
    for key, source in items:
        if key in seen:
            return key, seen[key], source
        seen[key] = source
    return None


def check_distinct_keys(plan: Any, datasets: tuple[Path, ...] | list[Path], concurrency: str, rates: str | None) -> None:
    """Refuse jobs or load levels that would share one result key: their runs would merge into one row
    (two ``x.jsonl`` from different folders, a dataset named like a suite, ``--concurrency 2,2``).
    ``datasets``, ``concurrency`` and ``rates`` are the options as given, for the message."""
    jobs = ([(suite.name, f"--suite {suite.name}") for suite in plan.suites]
            + [(workload.name, f"--workload {workload.name}") for workload in plan.workloads]
            + [(dataset.name, f"--dataset {path}") for dataset, path in zip(plan.datasets, datasets)])
    repeated = _first_repeated(jobs)
    if repeated:
        name, first, second = repeated
        given = f"{first} is given twice" if first == second else f"{first} and {second} would both be reported"
        raise UserInputError(f"{given} as {name!r}, merging their results into one row; give each job once "
                             "(rename a dataset file to tell it apart)")
    levels = [(level.key, f"--rate {rates}" if level.rate is not None else f"--concurrency {concurrency}")
              for level in plan.profile.levels(plan)]
    repeated = _first_repeated(levels)
    if repeated:
        key, flag, _ = repeated
        raise UserInputError(f"{flag} gives the load level {key!r} twice, merging their results into one row; "
                             "give each level once")


def parse_options(pairs: tuple[str, ...], backend: str | None = None) -> dict[str, Any]:
    """KEY=VALUE pairs, each value read by the type of the option it sets in ``backend``'s ``Options``
    (``velollm_core.contract.options``): a text option keeps ``123`` as text, a number option gets 123,
    an untyped one (``request.<field>``) its JSON value or the text. No registered backend: every
    value is read as untyped."""
    from velollm_core.contract import backends
    from velollm_core.contract.options import read_options

    texts: dict[str, str] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}")
        texts[key.strip()] = text
    registered = backends.get(backend) if backend is not None else None
    return read_options(registered.Options if registered is not None else backends.BackendOptions, texts)


def known_backends() -> list[str]:
    """The names of the backends plugins registered (``register_backends``)."""
    from velollm_core.contract import backends

    return backends.registry().names()


class BenchmarkCommand(click.Command):
    """``velollm benchmark``, with the flags each installed backend adds (``Backend.cli_options``).

    The backends are asked only when the command is run or its help shown, never at ``velollm --help``.
    """

    def _backend_flags(self) -> dict:
        from velollm_core.contract import backends

        return backends.cli_flags(backends.registry().all())

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        params = super().get_params(ctx)
        own = {param.name for param in params}
        extra = [option for name, (option, _) in self._backend_flags().items() if name not in own]
        return [*params[:-1], *extra, params[-1]] if params and extra else params  # --help stays last

    def invoke(self, ctx: click.Context):
        from click.core import ParameterSource

        flags = self._backend_flags()
        given = {name: ctx.params.pop(name) for name in list(ctx.params) if name in flags
                 and ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)}
        for name in flags:
            ctx.params.pop(name, None)
        ctx.params["backend_flags"] = (flags, given)
        return super().invoke(ctx)


@click.command("benchmark", cls=BenchmarkCommand)
@click.option("--backend", required=True, help="Backend to measure (see `velollm plugins`).")
@click.option("--model", required=True, help="GGUF path, Ollama name, or a bundled test model.")
@click.option("--host", help="URL of an already-running server to attach to.")
@click.option("--iterations", type=click.IntRange(1, 1000), default=3, show_default=True)
@click.option("--warmup", type=click.IntRange(0, 100), default=1, show_default=True, help="Uncounted runs.")
@click.option("--suite", "suites", multiple=True, help="Suite name (repeatable), or 'all'.")
@click.option("--concurrency", default="1", show_default=True, help="Parallel streams, e.g. 1,2,4.")
@click.option("--max-tokens", type=click.IntRange(1, 100000), help="Override each suite's output length.")
@click.option("--workload", "workloads", multiple=True, metavar="ppN/tgM[@dD]",
              help="Synthetic workload with exact token counts, e.g. pp512/tg128 or pp512/tg128@d4096 (repeatable).")
@click.option("--dataset", "datasets", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Your own prompts: JSONL (prompt/messages) or ShareGPT JSON (repeatable); --max-tokens sets the answer length (default 128).")
@click.option("--profile", type=click.Choice(list(PROFILES)),
              help="Load profile (default: sequential at concurrency 1, continuous streams at the others).")
@click.option("--rate", "rates", help="Requests per second for constant/poisson profiles, e.g. 0.5,1,2.")
@click.option("--requests", type=click.IntRange(1, 1_000_000), help="Measured requests per load level.")
@click.option("--duration", type=click.FloatRange(0.1, 86400), help="Seconds each load level sends measured requests.")
@click.option("--max-concurrency", type=click.IntRange(1, 100000),
              help="Most streams open at once in rate profiles and sweeps (and server slots).")
@click.option("--workers", type=click.IntRange(1, 4096),
              help="Client processes per load level, each with its own event loop (default: 1, more where a "
                   "level's streams need them, at most one per core).")
@click.option("--cluster", metavar="ADDRESS|auto",
              help="Run the client workers as Ray actors across the nodes of this Ray cluster (velollm[ray]).")
@click.option("--arrivals", type=click.Choice(ARRIVALS), default=ARRIVALS[0], show_default=True,
              help="Arrivals of a sweep's rate levels.")
@click.option("--slo", help="Goodput SLOs in ms, e.g. ttft_ms=500,tpot_ms=50 (keys: ttft_ms, tpot_ms, e2el_ms).")
@click.option("--natural-stop", is_flag=True, help="Let the model stop at end-of-sequence (default: fixed output length).")
@click.option("--prefix-cache", is_flag=True, help="Let requests share prompts and hit the server's prefix cache.")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--engine-ceiling", is_flag=True,
              help="After the levels, measure the engine alone at each level's streams and lengths (backends "
                   "that can) and report server efficiency = output tok/s / that ceiling.")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE",
              help="Backend option (repeatable). VALUE stays text for a text option, else is read as JSON where it "
                   "parses (request.stop='[\"END\"]'); request.a.b=1 nests.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Result file (JSON).")
@click.option("--force", is_flag=True, help="Replace --output even when it is not a VeloLLM result.")
@click.option("--json", "as_json", is_flag=True, help="Print the result JSON to stdout.")
@workload_flags
def benchmark_command(
    backend, model, host, iterations, warmup, suites, concurrency, max_tokens, workloads, datasets, profile, rates, requests,
    duration, max_concurrency, arrivals, slo, natural_stop, prefix_cache, seed, options, output, force, as_json,
    engine_ceiling=False, workers=None, cluster=None,
    backend_flags=({}, {}), shape=None, replay=None,
) -> None:
    """Benchmark a local backend with standard suites and honest statistics."""
    from velollm_core.bench.levels import parse_slo
    from velollm_core.bench.plan import BenchmarkPlan
    from velollm_core.bench.runner import BenchmarkRunner
    from velollm_core.bench.suites import get_suites
    from velollm_core.bench.workloads import load_dataset, parse_workload
    from velollm_core.contract.backends import flag_options
    from velollm_core.contract.files import prepare_output
    from velollm_core.contract.output import print_json, stderr_console, stdout_console
    from velollm_core.contract.urls import check_server_url
    from velollm_core.hardware.report import detect_hardware

    if host is not None:
        check_server_url(host)  # a malformed URL is the user's to fix, before any backend gets it
    backends = known_backends()
    if backend not in backends:
        raise UserInputError(
            f"unknown backend {backend!r}; installed: {', '.join(backends) or 'none'} "
            "(backends come from plugins: see `velollm plugins`)"
        )
    flags, given = backend_flags
    parsed_workloads = [parse_workload(text) for text in workloads]
    parsed_rates = parse_rates(rates)
    check_arrival_gaps(parsed_rates, duration)
    load_profile = replay or profile_named(profile)
    load_profile.check(rates=parsed_rates, workloads=parsed_workloads)
    plan = BenchmarkPlan(
        backend=backend,
        model=model,
        suites=get_suites(suites) if suites or not (parsed_workloads or datasets or replay) else [],
        shape=shape,
        trace=replay.trace if replay is not None else None,
        workloads=parsed_workloads,
        datasets=[load_dataset(path, max_tokens or 128) for path in datasets],
        profile=load_profile,
        rates=parsed_rates,
        requests=requests,
        duration_s=duration,
        max_concurrency=max_concurrency,
        arrivals=arrivals,
        workers=workers,
        cluster=cluster,
        slo=parse_slo(slo),
        natural_stop=natural_stop or shape.ends_itself,  # a JSON answer or tool call ends itself
        prefix_cache=prefix_cache,
        iterations=iterations,
        warmup=warmup,
        concurrency=parse_concurrency(concurrency),
        host=host,
        options={**parse_options(options, backend), **flag_options(backend, given, flags)},
        seed=seed,
        max_tokens=max_tokens,
    )
    check_distinct_keys(plan, datasets, concurrency, rates)
    out = prepare_output(output, force=force, protect=(model,))
    console = stderr_console()
    with out or contextlib.nullcontext():
        runner = BenchmarkRunner(plan, hardware=detect_hardware(), output=out, telemetry=True,
                                 engine_ceiling=engine_ceiling,
                                 warn=lambda message: console.print(f"warning: {message}", markup=False, highlight=False))
        runner.check()  # what cannot run is refused before the load is sampled or a server starts
        busy = warn_if_busy(console)
        try:
            _run_with_progress(runner, console, busy)
        finally:
            if runner.result.runs:  # also an interrupted or failed run's finished part, its status said
                from velollm_core import history

                history.record(runner.result, "benchmark")
    if as_json:
        print_json(runner.result.model_dump(mode="json"))
    else:
        from velollm_core.bench.render import render_result

        render_result(runner.result, stdout_console())
    if output:
        console.print(f"results written to {output}")


def warn_if_busy(console) -> tuple[float, int] | None:
    """Sample how busy this process's CPUs are; warn when other work competes for them."""
    from velollm_core.contract.probing.load import busy_warning, cpu_busy

    busy = cpu_busy()
    warning = busy_warning(busy)
    if warning:
        console.print(f"warning: {warning}", markup=False, highlight=False)
    return busy


def record_busy(result, busy: tuple[float, int] | None) -> None:
    if busy is not None:
        result.environment.cpu_busy_at_start, result.environment.usable_cpus = round(busy[0], 2), busy[1]


def _run_with_progress(runner, console, busy=None):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    plan, output = runner.plan, runner.output
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        # One more step where the engine is measured alone after the levels (--engine-ceiling).
        task = progress.add_task(f"{plan.backend}: starting",
                                 total=plan.profile.total_runs(plan) + int(runner.engine_ceiling))

        def on_run(label: str, record) -> None:
            speed = ""
            if record is not None and record.decode_tokens_per_s:
                speed = f" ({record.decode_tokens_per_s:.1f} tok/s)"
            progress.update(task, advance=1, description=f"{plan.backend}: {label}{speed}")

        runner.on_run = on_run
        record_busy(runner.result, busy)
        try:
            runner.run()
        except BaseException:
            if output is not None and runner.saved_runs:
                console.print(f"{runner.saved_runs} finished run(s) kept in {output.path}")
            raise
    return runner


@click.command("compare")
@click.argument("results", nargs=-1, required=True, metavar="A B [C ...] | NEW")
@click.option("--baseline", is_flag=True,
              help="Regression check: B (or NEW alone: against up to --baseline-runs earlier history results "
                   "of the same backend, model and machine) must not be worse than A beyond noise; exit 1 if it is.")
@click.option("--baseline-runs", type=click.IntRange(1, 100), default=5, show_default=True,
              help="How many earlier history results make the baseline of NEW.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def compare_command(results: tuple[str, ...], baseline: bool, baseline_runs: int, as_json: bool) -> None:
    """Compare results (files or history ids): ratio of medians (B/A) and whether it exceeds noise.

    With more than two, each of B, C, ... against A: a VeloLLM result beside another tool's (a
    llama-bench or GuideLLM file, or its history id after `velollm history import`).
    """
    from velollm_core.contract.output import print_json, stdout_console
    from velollm_core.history.compare import baseline_rows, compare_results, find_baselines, load_source

    if (baseline and len(results) > 2) or (not baseline and len(results) < 2):
        raise UserInputError("compare takes results A B [C ...] (files or history ids), or one or two with --baseline")
    loaded = [load_source(source) for source in results]
    if not baseline and len(loaded) > 2:
        _compare_several(loaded, as_json)
        return
    (b_name, b), older = loaded[-1], loaded[:-1]
    if baseline and not older:
        older = find_baselines(b.model_dump(mode="json"), baseline_runs)
        if not older:
            raise UserInputError(f"no earlier complete benchmark of {b.settings.get('backend')} · "
                                 f"{b.settings.get('model')} on this machine in the history to compare "
                                 f"{b_name} with")
    a_name = ",".join(name for name, _ in older)
    rows = (baseline_rows([result for _, result in older], b) if baseline
            else compare_results(older[0][1], b))
    if not rows:
        raise UserInputError(f"{a_name} and {b_name} have no suite in common to compare")
    regressions = [row for row in rows if row.get("regression")]
    if as_json:
        print_json({"a": a_name, "b": b_name, "rows": rows, **({"regressions": len(regressions)} if baseline else {})})
    else:
        from velollm_core.bench.render import render_comparison

        render_comparison(rows, stdout_console(), a_name if not baseline else f"baseline {a_name}", b_name)
        if baseline:
            noise = ("within-run bootstrap only (one baseline)" if rows[0].get("noise_band") is None
                     else f"bootstrap and the spread of {rows[0]['baselines']} baseline results")
            click.echo(f"noise: {noise}")
            for row in regressions:
                click.echo(f"REGRESSION {row['benchmark']} {row['metric']}: {row['a_median']:.2f} -> "
                           f"{row['b_median']:.2f} ({row['ratio']:.3f}x)")
            if not regressions:
                click.echo("no regression beyond noise")
    if regressions:
        raise SystemExit(1)


def _compare_several(loaded: list, as_json: bool) -> None:
    """B, C, ... each against A: one table per pair, a pair without a suite in common said in one line."""
    from velollm_core.bench.render import render_comparison
    from velollm_core.contract.output import print_json, stdout_console
    from velollm_core.history.compare import compare_results

    (a_name, a), others = loaded[0], loaded[1:]
    pairs = [(name, compare_results(a, result)) for name, result in others]
    if not any(rows for _, rows in pairs):
        raise UserInputError(f"{a_name} has no suite in common with any of {', '.join(name for name, _ in others)}")
    if as_json:
        print_json({"a": a_name, "comparisons": [{"b": name, "rows": rows} for name, rows in pairs]})
        return
    console = stdout_console()
    for name, rows in pairs:
        if rows:
            render_comparison(rows, console, a_name, name)
        else:
            click.echo(f"{a_name} and {name} have no suite in common to compare")
