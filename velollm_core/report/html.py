"""One self-contained HTML page of results: inline CSS and SVG, no script, nothing fetched.

The Content-Security-Policy forbids every load (``default-src 'none'``), so a page that tried to
fetch anything would say so in the browser's console: the report test fails on that.
"""

from __future__ import annotations

import datetime as _dt
from html import escape
from typing import Any

from velollm_core.contract.jsontext import dig, json_number
from velollm_core.report import data as d
from velollm_core.report.svg import CHART_CSS, Bar, Mark, Series, bar_chart, color, fmt, xy_chart

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1b1b;margin:0;background:#fafafa}
main{max-width:1500px;margin:0 auto;padding:18px 28px 40px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#555;font-size:13px}
.table-wrap{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:8px 0 4px;font-size:13px;background:#fff}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f0f0f0}td.text,th.text{text-align:left;white-space:normal}
.charts{display:flex;flex-wrap:wrap;gap:14px}
figure.chart{margin:0;background:#fff;border:1px solid #e2e2e2;border-radius:4px;padding:6px}
figcaption{font-size:12px;color:#555;max-width:680px;padding:2px 6px 4px}
svg{display:block;max-width:100%;height:auto}
""" + CHART_CSS + """.bad{color:#b00020;font-weight:600}.note{color:#555;font-size:13px}
"""


def _cell(value: Any, digits: int = 1) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return escape(str(value))


def _table(headers: list[str], rows: list[list[Any]], text_columns: int = 1) -> str:
    head = "".join(f'<th class="{"text" if i < text_columns else ""}">{escape(h)}</th>' for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td class="{"text" if i < text_columns else ""}">{_cell(v)}</td>'
                                    for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _figure(svg: str, kind: str, caption: str) -> str:
    return f'<figure class="chart" data-kind="{escape(kind)}">{svg}<figcaption>{escape(caption)}</figcaption></figure>'


def _sources_section(sources: list[d.ReportSource]) -> str:
    rows = []
    for source in sources:
        f = d.facts(source)
        rows.append([source.label, f["kind"], f["backend"],
                     f["backend_version"], (f["build_commit"] or "")[:12] or None, f["model"], f["machine"], f["started_at"], f["status"]])
    head = ["source", "kind", "backend", "version", "build", "model", "machine", "started (UTC)", "status"]
    errors = "".join(f'<p class="bad">{escape(s.label)}: {escape(str(s.data.get("status")))}: '
                     f'{escape(str(s.data.get("error")))}</p>' for s in sources if s.data.get("error"))
    return f"<h2>Sources</h2>{_table(head, rows, text_columns=len(head))}{errors}"


def _results(sources: list[d.ReportSource]) -> list[tuple[int, str, dict]]:
    """(colour index, legend name, benchmark-shaped result) over all sources; sides get their own colour."""
    out, i = [], 0
    for source in sources:
        for _, name, result in source.results():
            out.append((i, name, result))
            i += 1
    return out


def _bar(stats: dict | None) -> Bar | None:
    if not stats or stats.get("median") is None:
        return None
    low = stats.get("min") if stats.get("min") is not None else stats["median"]
    high = stats.get("max") if stats.get("max") is not None else stats["median"]
    return Bar(stats["median"], low, high, list(stats.get("values") or []),
               note=f", stdev {fmt(stats['stdev'])}" if stats.get("stdev") is not None else "")


def _suites_section(sources: list[d.ReportSource]) -> str:
    results = [(i, name, d.suite_stats(result)) for i, name, result in _results(sources)]
    suites = list(dict.fromkeys(s for _, _, stats in results for s in stats))
    if not suites:
        return ""
    figures = []
    for metric, title, unit in (("decode_tokens_per_s", "Decode speed per suite", "decode tok/s"),
                                ("prompt_tokens_per_s", "Prefill speed per suite", "prompt tok/s")):
        groups = [(name, color(i), [_bar(stats.get(s, {}).get(metric)) for s in suites]) for i, name, stats in results]
        if any(bar for _, _, bars in groups for bar in bars):
            figures.append(_figure(bar_chart(f"chart-{metric}", title, unit, suites, groups), metric,
                                   "Bars: median; whiskers: min to max; dots: each counted run."))
    table_rows = []
    # A reasoning model's time to its first answer token, beside TTFT, where any run reasoned.
    reasoning = any("time_to_first_answer_ms" in metrics and "reasoning_tokens" in metrics
                    for _, _, stats in results for metrics in stats.values())
    for _, name, stats in results:
        for suite, metrics in stats.items():
            dec, pre = metrics.get("decode_tokens_per_s", {}), metrics.get("prompt_tokens_per_s", {})
            answer = [metrics.get(key, {}).get("median") for key in ("time_to_first_answer_ms", "reasoning_tokens")]
            table_rows.append([name, suite, dec.get("median"), dec.get("stdev"), pre.get("median"), pre.get("stdev"),
                               metrics.get("ttft_ms", {}).get("median"), *(answer if reasoning else []), dec.get("n")])
    headers = ["result", "suite", "decode tok/s", "± stdev", "prompt tok/s", "± stdev", "TTFT ms",
               *(["TTFA ms", "thinking tok"] if reasoning else []), "n"]
    table = _table(headers, table_rows, text_columns=2)
    return f'<h2>Decode and prefill per suite</h2><div class="charts">{"".join(figures)}</div>{table}'


def _diagnosis(level: dict) -> str:
    """The level's diagnosis line (what limited it), or empty."""
    verdict = level.get("diagnosis")
    return str(verdict.get("line") or "") if isinstance(verdict, dict) else ""


def _latency(level: dict, name: str, stat: str = "median") -> float | None:
    value = level.get(name)
    return json_number(value.get(stat)) if isinstance(value, dict) else None


def _load_section(sources: list[d.ReportSource]) -> str:
    curves = []  # (colour, name, workload, levels sorted by offered load)
    for i, name, result in _results(sources):
        found = d.levels(result) or d.legacy_concurrency(result)
        by_workload: dict[str, list[dict]] = {}
        for level in found:
            if json_number(level.get("output_throughput")) is not None:
                by_workload.setdefault(str(level.get("workload") or ""), []).append(level)
        for workload, group in by_workload.items():
            curves.append((i, name, workload, sorted(group, key=d.offered_load)))
    table_curves = curves
    curves = [curve for curve in curves if len(curve[3]) >= 2]  # one level (a sequential suite) is no curve
    if not table_curves:
        return ""
    figures = []
    several = len({w for *_, w, _ in curves}) > 1 or len(curves) > 1
    for latency, title in (("ttft_ms", "Time to first token vs throughput"),
                           ("tpot_ms", "Time per output token vs throughput"),
                           ("e2el_ms", "End-to-end latency vs throughput")):
        series, marks = [], []
        for i, name, workload, group in curves:
            legend = f"{name} {workload}".strip() if several else name
            for stat, dashed in (("median", False), ("p99", True)):
                pts = [(float(lv["output_throughput"]), v, str(lv.get("key"))) for lv in group
                       if (v := _latency(lv, latency, stat)) is not None]
                if pts:
                    series.append(Series(f"{legend} {stat}", color(i), [(x, y) for x, y, _ in pts],
                                         labels=[k for *_, k in pts] if not dashed else [], dashed=dashed))
            for level in group:
                value = _latency(level, latency)
                if level.get("is_knee") and value is not None:
                    marks.append(Mark(float(level["output_throughput"]), value, f"knee {level.get('key')}"))
        if series:
            figures.append(_figure(xy_chart(f"chart-load-{latency}", title, "output tok/s", latency.replace("_", " "),
                                            series, marks=marks, x_zero=True), "load",
                                   "Each point a load level (label: its key), in order of offered load; solid: "
                                   "median, dashed: p99; ring: the knee, where more load stops buying throughput."))
    why = [f"{name}: {escape(str(dig(result, 'sweep', 'why')))}" for _, name, result in _results(sources)
           if dig(result, "sweep", "why")]
    rows = []
    for _, name, workload, group in table_curves:
        for lv in group:
            goodput = lv.get("goodput") if isinstance(lv.get("goodput"), dict) else {}
            rows.append([name, lv.get("key"), workload, lv.get("request_throughput"), lv.get("output_throughput"),
                         _latency(lv, "ttft_ms"), _latency(lv, "ttft_ms", "p99"), _latency(lv, "tpot_ms"),
                         _latency(lv, "itl_ms", "p99"), goodput.get("share"), lv.get("completed"), lv.get("failed"),
                         json_number(lv.get("server_efficiency")), _diagnosis(lv), "knee" if lv.get("is_knee") else ""])
    table = _table(["result", "level", "workload", "req/s", "out tok/s", "TTFT p50", "TTFT p99", "TPOT p50",
                    "ITL p99", "goodput", "done", "failed", "of engine", "limit", ""], rows, text_columns=3)
    notes = "".join(f'<p class="note">knee · {w}</p>' for w in why)
    return f'<h2>Load: throughput vs latency</h2><div class="charts">{"".join(figures)}</div>{notes}{table}'


def _speculative_section(sources: list[d.ReportSource]) -> str:
    figures, rows = [], []
    for i, source in enumerate(sources):
        if source.kind != "speculative":
            continue
        spec = d.speculative_curve(source.data)
        if spec is None:
            continue
        series, marks = [], []
        if spec["curve"]:
            series.append(Series(f"{source.label} predicted (advisor)", color(i), spec["curve"], dashed=True))
        if spec["measured"] is not None and spec["draft_max"] is not None:
            series.append(Series(f"{source.label} measured", color(i), [(float(spec["draft_max"]), spec["measured"])],
                                 labels=[f"{spec['measured']:.2f}x measured"], line=False))
            if spec["predicted_measured_config"] is not None:
                marks.append(Mark(float(spec["draft_max"]), spec["predicted_measured_config"],
                                  f"predicted {spec['predicted_measured_config']:.2f}x", color="#666"))
        if series:
            figures.append(_figure(xy_chart(f"chart-speculative-{i}", f"Speculative speedup vs draft length · "
                                            f"{source.label}", "draft max (tokens)", "speedup (x)", series,
                                            marks=marks, hline=(1.0, "1x: no gain"), x_zero=True), "speculative",
                                   f"Dashed: the advisor's predicted speedup per draft length; filled point: the "
                                   f"measured median speedup; grey ring: the advisor's prediction for the measured "
                                   f"configuration. {spec.get('recommendation') or ''}"))
        for suite, row in spec["per_suite"].items():
            rows.append([source.label, suite, row.get("vanilla_decode_tokens_per_s"),
                         row.get("speculative_decode_tokens_per_s"), row.get("speedup"),
                         row.get("acceptance_rate"), row.get("n")])
        if spec["outputs_identical"] is False:
            figures.append(f'<p class="bad">{escape(source.label)}: speculative output differs from vanilla</p>')
    if not figures and not rows:
        return ""
    table = _table(["result", "suite", "vanilla tok/s", "speculative tok/s", "speedup", "acceptance", "n"], rows,
                   text_columns=2)
    return f'<h2>Speculative decoding</h2><div class="charts">{"".join(figures)}</div>{table}'


def _roofline_section(sources: list[d.ReportSource]) -> str:
    results = [(i, name, d.roofline(result), result) for i, name, result in _results(sources)]
    results = [r for r in results if r[2]]
    if not results:
        return ""
    suites = list(dict.fromkeys(s for _, _, pct, _ in results for s in pct))
    groups = [(name, color(i), [Bar(pct[s], pct[s], pct[s], note="") if s in pct else None for s in suites])
              for i, name, pct, _ in results]
    svg = bar_chart("chart-roofline", "Decode speed as % of the memory-bandwidth roofline", "% of roofline",
                    suites, groups, hline=(100.0, "100%: bandwidth limit"))
    notes = "".join(f'<p class="note">{escape(name)}: {fmt(r["roofline"]["bandwidth_gbps"])} GB/s '
                    f'({escape(str(r["roofline"].get("source")))}) → at most '
                    f'{fmt(r["roofline"]["max_decode_tokens_per_s"])} decode tok/s before the KV cache</p>'
                    for _, name, _, r in results if isinstance(r.get("roofline"), dict)
                    and {"bandwidth_gbps", "max_decode_tokens_per_s"} <= r["roofline"].keys())
    return ('<h2>Roofline</h2><div class="charts">'
            + _figure(svg, "roofline", "Median decode speed over the limit that memory bandwidth sets "
                                       "(weights plus the KV cache read per token).") + f"</div>{notes}")


_UNITS = {"memory_used_bytes": ("memory used (GiB)", 2**30), "power_w": ("power (W)", 1),
          "utilization_pct": ("utilization (%)", 1), "kv_cache_usage": ("KV cache used (share)", 1)}


def _figure_cell(figure: dict) -> str:
    """'client / server (diff %)', marked when they disagree by more than 2%."""
    text = f"{_cell(figure.get('client'))} / {_cell(figure.get('server'))}"
    if figure.get("diff_pct") is not None:
        text += f" ({figure['diff_pct']:+.1f}%)"
    return f'<span class="bad">{text} ≠</span>' if figure.get("disagree") else text


def _telemetry_table(sources: list[d.ReportSource]) -> str:
    rows = []
    for _, name, result in _results(sources):
        for level in d.telemetry_levels(result):
            figures = level["figures"]
            joules = "; ".join(f"{kind}: {_cell(parts.get('decode'), 2)} decode, {_cell(parts.get('end_to_end'), 2)} e2e"
                               for kind, parts in level["tokens_per_joule"].items()
                               if isinstance(parts.get("decode"), float) or isinstance(parts.get("end_to_end"), float))
            rows.append("<tr>" + "".join(f'<td class="text">{escape(str(v))}</td>' for v in
                                         (name, level["key"], level["workload"] or "")) +
                        "".join(f"<td>{_figure_cell(figures[k]) if k in figures else '-'}</td>" for k in
                                ("decode_tokens_per_s", "prompt_tokens", "completion_tokens")) +
                        f'<td class="text">{escape(joules) or "unknown"}</td></tr>')
    if not rows:
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("result", "level", "workload", "decode tok/s per stream (client / server)",
                                             "prompt tokens", "generated tokens", "tokens per joule"))
    return (f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
            '<p class="note">≠: client and server differ by more than 2%.</p>')


def _telemetry_section(sources: list[d.ReportSource]) -> str:
    table = _telemetry_table(sources)
    charts: dict[str, list[tuple[int, str, dict]]] = {}
    for i, name, result in _results(sources):
        for entry in d.telemetry_series(result):
            charts.setdefault(entry["field"], []).append((i, f"{name} · {entry['group']}", entry))
    if not charts:
        why = [f"{name}: {'; '.join(map(str, dig(result, 'telemetry', 'why') or []))}"
               for _, name, result in _results(sources) if dig(result, "telemetry", "why")]
        notes = "".join(f'<p class="note">{escape(w)}</p>' for w in why)
        return f"<h2>Telemetry</h2>{notes}{table}" if why or table else ""
    figures = []
    for number, (field_name, entries) in enumerate(charts.items()):
        label, scale = _UNITS.get(field_name, (field_name.replace("_", " "), 1))
        series = [Series(name, color(i + k), [(t, v / scale) for t, v in entry["points"]])
                  for k, (i, name, entry) in enumerate(entries)]
        spans = entries[0][2]["spans"] if len(entries) == 1 else []
        figures.append(_figure(xy_chart(f"chart-telemetry-{number}", f"{label[0].upper()}{label[1:]} over time", "seconds", label, series,
                                        spans=spans, x_zero=True), "telemetry",
                               "Sampled during the run; shaded: the load levels."))
    return f'<h2>Telemetry</h2><div class="charts">{"".join(figures)}</div>{table}'


def _verify_section(sources: list[d.ReportSource]) -> str:
    parts = []
    for i, source in enumerate(sources):
        if source.kind != "verify":
            continue
        candidates = d.verify_candidates(source.data)
        names = [c["name"] for c in candidates]
        groups = []
        for metric, key in (("decode tok/s", "decode"), ("prompt tok/s", "prefill")):
            bars = []
            for c in candidates:
                s = d.spread(c[key])
                bars.append(Bar(s["median"], s["min"], s["max"], c[key]) if s["median"] is not None else None)
            groups.append((metric, key, bars))
        figures = [_figure(bar_chart(f"chart-verify-{i}-{key}", f"{source.label}: {metric} per candidate", metric,
                                     names, [(source.label, color(i), bars)]), "verify",
                           "One dot per interleaved round; bars: median, whiskers: min to max.")
                   for metric, key, bars in groups if any(bars)]
        parts.append("".join(figures))
    return f'<h2>Verification</h2><div class="charts">{"".join(parts)}</div>' if any(parts) else ""


def render_html(sources: list[d.ReportSource]) -> str:
    """The whole page."""
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    from velollm_core import __version__

    body = "".join(section(sources) for section in (_sources_section, _suites_section, _load_section,
                                                     _speculative_section, _roofline_section, _telemetry_section,
                                                     _verify_section))
    names = ", ".join(s.label for s in sources)
    return ("<!DOCTYPE html>\n<!-- VeloLLM report: velollm report --format html -->\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>VeloLLM report · {escape(names)}</title><style>{_CSS}</style></head><body><main>"
            f"<h1>VeloLLM report</h1><p class=\"meta\">{escape(names)} · made {now} by velollm {__version__}</p>"
            f"{body}</main></body></html>\n")
