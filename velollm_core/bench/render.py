"""Readable tables for benchmark results and comparisons."""

from __future__ import annotations

from typing import Any

from velollm_core.models import BenchmarkResult

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


def render_result(result: BenchmarkResult, console) -> None:
    """Median (± stdev) of every metric per suite, plus the concurrency report when present."""
    from rich.table import Table

    backend = result.environment.backend
    title = f"{result.settings.get('backend')} · {result.settings.get('model')}"
    if backend and backend.version:
        title += f" · {backend.name} {backend.version}"
    table = Table(title=title, caption=f"median ± stdev over n runs · status: {result.status}")
    table.add_column("suite", no_wrap=True)
    shown = ["decode_tokens_per_s", "client_decode_tokens_per_s", "prompt_tokens_per_s", "ttft_ms", "total_ms"]
    for metric in shown:
        table.add_column(_LABELS[metric], justify="right", no_wrap=True)
    table.add_column("n", justify="right")
    roofline_suites = (result.roofline or {}).get("suites") or {}
    if roofline_suites:
        table.add_column("% roofline", justify="right", no_wrap=True)
    for suite, metrics in result.summary.items():
        cells = []
        n = 0
        for metric in shown:
            stats = metrics.get(metric)
            if stats is None:
                cells.append("-")
                continue
            n = max(n, stats.n)
            digits = _digits(metric)
            cells.append(f"{_fmt(stats.median, digits)} ±{_fmt(stats.stdev, digits)}")
        cells.append(str(n))
        if roofline_suites:
            pct = (roofline_suites.get(suite) or {}).get("pct_of_limit")
            cells.append("-" if pct is None else f"{pct:.0f}%")
        table.add_row(suite, *cells)
    console.print(table)
    if result.roofline:
        roof = result.roofline
        console.print(
            f"roofline: {roof['bandwidth_gbps']:.0f} GB/s ({roof['source']}) / "
            f"{roof['bytes_per_token'] / 2**20:.0f} MiB per token = at most "
            f"{roof['max_decode_tokens_per_s']:.1f} decode tok/s (plus the KV cache read per suite)",
            highlight=False,
        )
    if result.concurrency:
        conc = Table(title="concurrency")
        for column in ("level", "suite", "aggregate tok/s", "req/s", "TTFT p50", "p90", "p99"):
            conc.add_column(column, justify="right")
        for level, suites in result.concurrency.items():
            for suite, entry in suites.items():
                agg = entry.get("aggregate_decode_tokens_per_s") or {}
                rps = entry.get("requests_per_s") or {}
                conc.add_row(
                    level,
                    suite,
                    _fmt(agg.get("median")),
                    _fmt(rps.get("median"), 2),
                    _fmt(entry.get("ttft_ms_p50")),
                    _fmt(entry.get("ttft_ms_p90")),
                    _fmt(entry.get("ttft_ms_p99")),
                )
        console.print(conc)
    if result.error:
        console.print(f"[red]{result.status}:[/red] {result.error}")


def render_comparison(rows: list[dict[str, Any]], console, a_name: str, b_name: str) -> None:
    from rich.table import Table

    table = Table(title=f"B / A  (A = {a_name}, B = {b_name})", caption="95% bootstrap interval of the ratio")
    for column in ("suite", "metric", "A median", "B median", "B/A", "interval", "verdict"):
        table.add_column(column, justify="right" if column not in ("suite", "metric", "verdict") else "left")
    colors = {"better": "green", "worse": "red"}
    for row in rows:
        interval = row["interval_95"]
        verdict = row["verdict"]
        color = colors.get(verdict)
        table.add_row(
            row["benchmark"],
            _LABELS.get(row["metric"], row["metric"]),
            _fmt(row["a_median"]),
            _fmt(row["b_median"]),
            f"{row['ratio']:.3f}x",
            f"{interval[0]:.3f}-{interval[1]:.3f}" if interval else "-",
            f"[{color}]{verdict}[/{color}]" if color else verdict,
        )
    console.print(table)
