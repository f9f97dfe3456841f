"""Readable tables for benchmark results and comparisons."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from velollm_core.contract.schemas import BenchmarkResult

_LABELS = {
    "decode_tokens_per_s": "decode tok/s",
    "client_decode_tokens_per_s": "client decode tok/s",
    "prompt_tokens_per_s": "prompt tok/s",
    "ttft_ms": "TTFT ms",
    "total_ms": "total ms",
    "prompt_tokens": "prompt tokens",
    "completion_tokens": "completion tokens",
}


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _digits(metric: str) -> int:
    return 0 if metric.endswith("_ms") else 1


_SHOWN = ["decode_tokens_per_s", "client_decode_tokens_per_s", "prompt_tokens_per_s", "ttft_ms", "total_ms"]


def _two_lines(label: str) -> str:
    """A header on two lines at its first space ("decode\ntok/s"), for the narrower layouts."""
    return label.replace(" ", "\n", 1)


def _stat_cell(stats, metric: str, separator: str = " ") -> str:
    if stats is None:
        return "-"
    digits = _digits(metric)
    return f"{_fmt(stats.median, digits)}{separator}±{_fmt(stats.stdev, digits)}"


def _suite_rows(result: BenchmarkResult) -> list[tuple[str, dict, int, str | None]]:
    """(suite, metrics, n, % of roofline or None) for each suite of ``result``."""
    roofline_suites = (result.roofline or {}).get("suites") or {}
    rows = []
    for suite, metrics in result.summary.items():
        n = max((metrics[metric].n for metric in _SHOWN if metrics.get(metric) is not None), default=0)
        pct = (roofline_suites.get(suite) or {}).get("pct_of_limit") if roofline_suites else None
        rows.append((suite, metrics, n, None if not roofline_suites else "-" if pct is None else f"{pct:.0f}%"))
    return rows


def _result_table(result: BenchmarkResult, stacked_cells: bool):
    """One row per suite; ``stacked_cells``: median over ±stdev and two-line headers (narrower)."""
    from rich.table import Table

    rows = _suite_rows(result)
    table = Table(title=_result_title(result), caption=_result_caption(result))
    table.add_column("suite", no_wrap=True)
    label = _two_lines if stacked_cells else str
    for metric in _SHOWN:
        table.add_column(label(_LABELS[metric]), justify="right", no_wrap=True)
    table.add_column("n", justify="right", no_wrap=True)
    if any(pct is not None for *_, pct in rows):
        table.add_column(label("% roofline"), justify="right", no_wrap=True)
    for suite, metrics, n, pct in rows:
        cells = [_stat_cell(metrics.get(metric), metric, "\n" if stacked_cells else " ") for metric in _SHOWN]
        table.add_row(suite, *cells, str(n), *([] if pct is None else [pct]))
    return table


def _result_stacked(result: BenchmarkResult):
    """One row per suite and metric: any width."""
    from rich.table import Table

    table = Table(title=_result_title(result), caption=_result_caption(result))
    table.add_column("suite")
    table.add_column("metric", no_wrap=True)
    table.add_column("median", justify="right", no_wrap=True)
    table.add_column("± stdev", justify="right", no_wrap=True)
    table.add_column("n", justify="right", no_wrap=True)
    rows = _suite_rows(result)
    for number, (suite, metrics, n, pct) in enumerate(rows):
        facts = [(_LABELS[metric], metrics.get(metric), metric) for metric in _SHOWN]
        for position, (label, stats, metric) in enumerate(facts):
            digits = _digits(metric)
            median, stdev = ("-", "") if stats is None else (_fmt(stats.median, digits), _fmt(stats.stdev, digits))
            first = position == 0
            table.add_row(suite if first else "", label, median, stdev, str(n) if first else "",
                          end_section=pct is None and position == len(facts) - 1 and number < len(rows) - 1)
        if pct is not None:
            table.add_row("", "% roofline", pct, "", "", end_section=number < len(rows) - 1)
    return table


def _result_title(result: BenchmarkResult) -> str:
    backend = result.environment.backend
    title = f"{result.settings.get('backend')} · {result.settings.get('model')}"
    if backend and backend.version:
        title += f" · {backend.name} {backend.version}"
    return title


def _result_caption(result: BenchmarkResult) -> str:
    return f"median ± stdev over n runs · status: {result.status}"


def _efficiency(level: dict[str, Any]) -> str:
    efficiency = level.get("server_efficiency")
    return "-" if efficiency is None else f"{efficiency:.0%}"


def _level_columns(wide: bool, efficiency: bool = False,
                   compact: bool = False) -> list[tuple[str, Callable[[dict[str, Any]], str]]]:
    def dist(metric: str, q: str) -> Callable[[dict[str, Any]], str]:
        return lambda lv: _fmt((lv.get(metric) or {}).get(q))

    columns = [
        ("level", lambda lv: lv["key"] + ("*" if (lv.get("client") or {}).get("limited") else "")),
        ("workload", lambda lv: lv["workload"]),
        ("req/s", lambda lv: _fmt(lv.get("request_throughput"), 2)),
        ("out tok/s", lambda lv: _fmt(lv.get("output_throughput"))),
        ("TTFT p50", dist("ttft_ms", "median")),
        ("TTFT p99", dist("ttft_ms", "p99")),
        ("TPOT p50", dist("tpot_ms", "median")),
    ]
    if efficiency:  # server output tok/s / the engine alone at the level's shape (--engine-ceiling)
        columns.append(("% engine", _efficiency))
        if compact:  # the column it costs at 80: TTFT's tail stays in the JSON
            columns = [column for column in columns if column[0] != "TTFT p99"]
    if wide:
        columns += [("ITL p99", dist("itl_ms", "p99")), ("E2E p50", dist("e2el_ms", "median")),
                    ("streams", lambda lv: str(lv.get("max_concurrency") or "-"))]
    columns.append(("ok/fail", lambda lv: f"{lv['completed']}/{lv['failed']}"))
    if wide:
        columns.append(("goodput", lambda lv: _fmt((lv.get("goodput") or {}).get("requests_per_s"), 2)))
    return columns


def _levels_table(result: BenchmarkResult, wide: bool, two_line_headers: bool):
    from rich.table import Table

    label = _two_lines if two_line_headers else str
    table = Table(title="load levels", caption="latencies in ms (TTFT, TPOT per output token, ITL, end to end)")
    columns = _level_columns(wide, efficiency=any(level.get("server_efficiency") is not None
                                                  for level in result.levels), compact=two_line_headers)
    for name, _ in columns:
        table.add_column(label(name), justify="left" if name in ("level", "workload") else "right", no_wrap=True)
    for level in result.levels:
        table.add_row(*(cell(level) for _, cell in columns))
    return table


def _level_notes(result: BenchmarkResult) -> list[str]:
    """What a reader must know beside the table: short answers, prompt counts off, failures, the knee."""
    notes = []
    matched = []
    for level in result.levels:
        where = f"{level['workload']} {level['key']}"
        if level.get("short_outputs"):
            notes.append(f"{where}: {level['short_outputs']} answer(s) shorter than the fixed output length "
                         "(the runtime stopped early; counted as measured, flagged in the JSON)")
        check = level.get("prompt_tokens") or {}
        if check.get("mismatch"):
            notes.append(f"{where}: prompt tokens requested {check['requested']}, the server reported "
                         f"{check['reported_median']:g}: off by more than 1%")
        elif check.get("reported_median") is not None:
            matched.append(f"{level['workload']}: {check['requested']}")
        for reason, count in (level.get("failures") or {}).items():
            notes.append(f"{where}: {count} failed: {reason}")
        notes.extend(_client_notes(where, level.get("client") or {}))
    if matched:
        sizing = (result.settings.get("prompt_sizing") or {}).get("method", "tokenizer")
        notes.insert(0, f"prompt tokens as requested, by the server's count ({', '.join(dict.fromkeys(matched))}; "
                        f"sized by {'its tokenizer' if sizing == 'tokenizer' else 'calibration from its counts'})")
    if result.sweep and result.sweep.get("knee"):
        notes.append(f"knee: {result.sweep['knee']} ({result.sweep['why']})")
    from velollm_core.bench.answers import answer_notes, turn_notes

    return notes + turn_notes(result) + answer_notes(result)


# The diagnosis lines are cut to this width: the table's own, so nothing wraps at 80 columns.
DIAGNOSIS_WIDTH = 80


def _diagnosis_lines(result: BenchmarkResult) -> list[str]:
    """One line per level: what limited it (``velollm_core.bench.diagnosis``; the JSON has the reasons)."""
    lines = []
    for level in result.levels:
        verdict = level.get("diagnosis")
        if not isinstance(verdict, dict):
            continue
        line = f"{level['key']} {level['workload']}: {verdict.get('line', '')}"
        lines.append(line if len(line) <= DIAGNOSIS_WIDTH else line[:DIAGNOSIS_WIDTH - 3] + "...")
    return lines


def _client_notes(where: str, client: dict[str, Any]) -> list[str]:
    """The load generator's own account of a level: its workers where more than one, and a level marked
    * whose client was the limit."""
    notes = []
    if (client.get("workers") or 1) > 1 or client.get("where", "this host") != "this host":
        hosts = max(len(client.get("hosts") or []), client.get("nodes") or 0)
        on = f" on {hosts} {'nodes' if client.get('nodes') else 'hosts'}" if hosts > 1 else ""
        notes.append(f"{where}: {client['workers']} client workers{on} ({client.get('workers_why')})")
    for lost in client.get("lost") or []:
        notes.append(f"{where}: {lost}; its finished requests are kept")
    if client.get("limited"):
        notes.append(f"{where}*: {client['why']}")
    return notes


def render_result(result: BenchmarkResult, console) -> None:
    """Median (± stdev) of every metric per suite, then the load levels when any ran.

    Wide terminals get one row per suite; narrower ones the same with two-line cells, then one row
    per suite and metric (``velollm_core.tables``).
    """
    from velollm_core.tables import fitting

    console.print(fitting(console, lambda: _result_table(result, stacked_cells=False),
                          lambda: _result_table(result, stacked_cells=True),
                          lambda: _result_stacked(result)))
    if result.roofline:
        roof = result.roofline
        console.print(
            f"roofline: {roof['bandwidth_gbps']:.0f} GB/s ({roof['source']}) / "
            f"{roof['bytes_per_token'] / 2**20:.0f} MiB per token = at most "
            f"{roof['max_decode_tokens_per_s']:.1f} decode tok/s (plus the KV cache read per suite)",
            highlight=False,
        )
    if any(level["profile"] != "sequential" for level in result.levels) or result.settings.get("workloads"):
        console.print(fitting(console, lambda: _levels_table(result, wide=True, two_line_headers=False),
                              lambda: _levels_table(result, wide=False, two_line_headers=False),
                              lambda: _levels_table(result, wide=False, two_line_headers=True)))
        diagnosis = _diagnosis_lines(result)
        if diagnosis:
            console.print("what limited each level (reasons in the JSON's levels[].diagnosis):", highlight=False)
            for line in diagnosis:
                console.print(line, markup=False, highlight=False, overflow="ignore", crop=False)
    from velollm_core.bench.answers import reasoning_table

    if (table := reasoning_table(result)) is not None:
        console.print(table)
    for note in _level_notes(result):
        console.print(note, markup=False, highlight=False)
    if result.error:
        console.print(f"[red]{result.status}:[/red] {result.error}")
_COMPARISON_COLORS = {"better": "green", "worse": "red"}


def _verdict(verdict: str) -> str:
    color = _COMPARISON_COLORS.get(verdict)
    return f"[{color}]{verdict}[/{color}]" if color else verdict


def _interval(row: dict[str, Any]) -> str:
    interval = row["interval_95"]
    return f"{interval[0]:.3f}-{interval[1]:.3f}" if interval else "-"


def _comparison_title(a_name: str, b_name: str) -> str:
    return f"B / A  (A = {a_name}, B = {b_name})"


_COMPARISON_CAPTION = "95% bootstrap interval of the ratio"


def _comparison_wide(rows: list[dict[str, Any]], a_name: str, b_name: str):
    from rich.table import Table

    table = Table(title=_comparison_title(a_name, b_name), caption=_COMPARISON_CAPTION)
    for column in ("suite", "metric", "A median", "B median", "B/A", "interval", "verdict"):
        table.add_column(column, justify="left" if column in ("suite", "metric", "verdict") else "right",
                         no_wrap=True)
    for row in rows:
        table.add_row(row["benchmark"], _LABELS.get(row["metric"], row["metric"]), _fmt(row["a_median"]),
                      _fmt(row["b_median"]), f"{row['ratio']:.3f}x", _interval(row), _verdict(row["verdict"]))
    return table


def _comparison_stacked(rows: list[dict[str, Any]], a_name: str, b_name: str):
    """The suite as a heading row above its metrics: one column fewer."""
    from rich.table import Table

    # No outer border: the two columns it costs are what "within noise" needs on one line at 80.
    table = Table(title=_comparison_title(a_name, b_name), caption="A, B: medians · " + _COMPARISON_CAPTION,
                  show_edge=False)
    table.add_column("suite / metric", no_wrap=True)
    for column in ("A", "B", "B/A", "interval"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("verdict")
    suite = None
    for row in rows:
        if row["benchmark"] != suite:
            if suite is not None:
                table.add_section()
            suite = row["benchmark"]
            table.add_row(f"[bold]{suite}[/bold]", "", "", "", "", "")
        table.add_row(_LABELS.get(row["metric"], row["metric"]), _fmt(row["a_median"]), _fmt(row["b_median"]),
                      f"{row['ratio']:.3f}x", _interval(row), _verdict(row["verdict"]))
    return table


def render_comparison(rows: list[dict[str, Any]], console, a_name: str, b_name: str) -> None:
    """B/A per suite and metric with its interval and verdict; the suite becomes a heading when narrow."""
    from velollm_core.tables import fitting

    console.print(fitting(console, lambda: _comparison_wide(rows, a_name, b_name),
                          lambda: _comparison_stacked(rows, a_name, b_name)))
