"""The formats people paste elsewhere, as llama-bench's ``-o csv|md|jsonl``: one row per measurement.

Rows come in four tables (column ``table``): ``suite`` (a suite of a benchmark, or one side of a
speculative bench), ``level`` (a load level), ``speculative`` (a suite of a speculative bench) and
``verify`` (a candidate of a verification). CSV and JSONL hold every row with the same columns
(empty where a column does not apply); markdown prints one table per kind, with only its columns.

Cells hold text from result files (model names, versions, machine names), which anyone may have
written: a CSV cell that a spreadsheet would run as a formula is neutralised as OWASP recommends, and a
markdown cell can open no HTML tag, link or new cell.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from velollm_core.contract.output import safe_text
from velollm_core.report import data as d

COMMON = ("table", "source", "kind", "side", "backend", "backend_version", "build_commit", "model", "machine",
          "started_at", "status")
COLUMNS = {
    "suite": ("suite", "n", "decode_tps_median", "decode_tps_stdev", "decode_tps_min", "decode_tps_max",
              "prompt_tps_median", "prompt_tps_stdev", "ttft_ms_median", "total_ms_median", "roofline_pct",
              "ttfa_ms_median", "reasoning_tokens_median", "tool_args_ms_median", "json_valid_share",
              "tool_call_valid_share"),
    "level": ("level", "profile", "workload", "concurrency", "rate", "completed", "failed", "request_throughput",
              "output_throughput", "ttft_ms_median", "ttft_ms_p99", "tpot_ms_median", "tpot_ms_p99", "itl_ms_p99",
              "e2el_ms_median", "goodput_share", "knee", "server_efficiency", "limit"),
    "speculative": ("suite", "n", "vanilla_decode_tps", "speculative_decode_tps", "speedup", "acceptance_rate",
                    "draft_max", "predicted_speedup"),
    "verify": ("suite", "n", "decode_tps_median", "decode_tps_stdev", "prompt_tps_median", "prompt_tps_stdev"),
}
ALL_COLUMNS = tuple(dict.fromkeys([*COMMON, *(c for cols in COLUMNS.values() for c in cols)]))


def _r(value: Any, digits: int = 3) -> Any:
    return round(value, digits) if isinstance(value, float) else value


def _limit(level: dict[str, Any]) -> str | None:
    """What limited the level (its diagnosis' label), or None where it has none."""
    verdict = level.get("diagnosis")
    return verdict.get("label") if isinstance(verdict, dict) else None


def rows(sources: list[d.ReportSource]) -> list[dict[str, Any]]:
    out = []
    for source in sources:
        base = d.facts(source)
        for side, _, result in source.results():
            pct = d.roofline(result)
            for suite, metrics in d.suite_stats(result).items():
                decode, prompt = metrics.get("decode_tokens_per_s", {}), metrics.get("prompt_tokens_per_s", {})
                out.append({**base, "table": "suite", "side": side, "suite": suite,
                            "n": decode.get("n") or prompt.get("n"),
                            "decode_tps_median": _r(decode.get("median")), "decode_tps_stdev": _r(decode.get("stdev")),
                            "decode_tps_min": _r(decode.get("min")), "decode_tps_max": _r(decode.get("max")),
                            "prompt_tps_median": _r(prompt.get("median")), "prompt_tps_stdev": _r(prompt.get("stdev")),
                            "ttft_ms_median": _r(metrics.get("ttft_ms", {}).get("median")),
                            "total_ms_median": _r(metrics.get("total_ms", {}).get("median")),
                            "roofline_pct": pct.get(suite),
                            "ttfa_ms_median": _r(metrics.get("time_to_first_answer_ms", {}).get("median")),
                            "reasoning_tokens_median": _r(metrics.get("reasoning_tokens", {}).get("median")),
                            "tool_args_ms_median": _r(metrics.get("tool_args_ms", {}).get("median")),
                            **{f"{check}_share": _r(share) for check, share in d.answer_shares(result, suite).items()}})
            for level in d.levels(result) or d.legacy_concurrency(result):
                lat = {name: level.get(name) if isinstance(level.get(name), dict) else {} for name in d.LATENCIES}
                goodput = level.get("goodput") if isinstance(level.get("goodput"), dict) else {}
                out.append({**base, "table": "level", "side": side, "level": level.get("key"),
                            "profile": level.get("profile"), "workload": level.get("workload"),
                            "concurrency": level.get("concurrency"), "rate": level.get("rate"),
                            "completed": level.get("completed"), "failed": level.get("failed"),
                            "request_throughput": _r(level.get("request_throughput")),
                            "output_throughput": _r(level.get("output_throughput")),
                            "ttft_ms_median": _r(lat["ttft_ms"].get("median")), "ttft_ms_p99": _r(lat["ttft_ms"].get("p99")),
                            "tpot_ms_median": _r(lat["tpot_ms"].get("median")), "tpot_ms_p99": _r(lat["tpot_ms"].get("p99")),
                            "itl_ms_p99": _r(lat["itl_ms"].get("p99")), "e2el_ms_median": _r(lat["e2el_ms"].get("median")),
                            "goodput_share": _r(goodput.get("share")), "knee": level["is_knee"],
                            "server_efficiency": _r(level.get("server_efficiency")),
                            "limit": _limit(level)})
        if source.kind == "speculative":
            spec = d.speculative_curve(source.data) or {}
            for suite, row in (spec.get("per_suite") or {}).items():
                out.append({**base, "table": "speculative", "side": "", "suite": suite, "n": row.get("n"),
                            "vanilla_decode_tps": _r(row.get("vanilla_decode_tokens_per_s")),
                            "speculative_decode_tps": _r(row.get("speculative_decode_tokens_per_s")),
                            "speedup": _r(row.get("speedup")), "acceptance_rate": _r(row.get("acceptance_rate")),
                            "draft_max": spec.get("draft_max"), "predicted_speedup": _r(spec.get("predicted_measured_config"))})
        if source.kind == "verify":
            for candidate in d.verify_candidates(source.data):
                decode, prompt = d.spread(candidate["decode"]), d.spread(candidate["prefill"])
                out.append({**base, "table": "verify", "side": "", "suite": candidate["name"], "n": decode["n"],
                            "decode_tps_median": _r(decode["median"]), "decode_tps_stdev": _r(decode["stdev"]),
                            "prompt_tps_median": _r(prompt["median"]), "prompt_tps_stdev": _r(prompt["stdev"])})
    return out


# What starts a formula in Excel, LibreOffice or Google Sheets (OWASP "CSV Injection"): such a text cell
# gets a leading apostrophe, which spreadsheets show as text and do not evaluate. Numbers stay numbers.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """``value`` as a CSV cell: empty for None, a text that would start a formula neutralised, a carriage
    return made a newline (the writer quotes a cell holding a newline, not one holding a lone CR, which
    readers take for the end of the row)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return ("'" + value if value.startswith(FORMULA_START) else value).replace("\r", "\n")
    return value


def to_csv(table_rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=ALL_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in table_rows:
        writer.writerow({k: csv_cell(v) for k, v in row.items()})
    return buffer.getvalue()


def to_jsonl(table_rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps({c: row.get(c) for c in ALL_COLUMNS}, allow_nan=False) + "\n" for row in table_rows)


# A markdown cell's text: HTML opens no tag (entities), backslash, brackets and backticks are escaped
# (no link, image or code span), a pipe is escaped (no new cell) and a line break is a space (no new row).
_MD_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\\": "\\\\", "|": "\\|", "[": "\\[",
                             "]": "\\]", "`": "\\`", "\n": " ", "\r": " "})


def _md_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        value = f"{value:.2f}"
    return safe_text(str(value)).translate(_MD_ESCAPES)


# Markdown repeats less: the facts that vary between sources, then the table's own columns.
_MD_COMMON = ("source", "side", "backend", "backend_version", "model")


def to_markdown(table_rows: list[dict[str, Any]]) -> str:
    parts = ["<!-- VeloLLM report: velollm report --format md -->", ""]
    for table, columns in COLUMNS.items():
        chosen = [r for r in table_rows if r["table"] == table]
        if not chosen:
            continue
        shown = [c for c in (*_MD_COMMON, *columns) if any(r.get(c) not in (None, "", False) for r in chosen)]
        parts.append(f"### {table}\n")
        parts.append("| " + " | ".join(shown) + " |")
        parts.append("|" + "|".join("---:" if isinstance(chosen[0].get(c), (int, float)) and
                                    not isinstance(chosen[0].get(c), bool) else "---" for c in shown) + "|")
        parts += ["| " + " | ".join(_md_cell(r.get(c)) for c in shown) + " |" for r in chosen]
        parts.append("")
    return "\n".join(parts)


def csv_report(sources: list[d.ReportSource]) -> str:
    """The ``csv`` report format: every row, every column."""
    return to_csv(rows(sources))


def markdown_report(sources: list[d.ReportSource]) -> str:
    """The ``md`` report format: one table per kind of row."""
    return to_markdown(rows(sources))


def jsonl_report(sources: list[d.ReportSource]) -> str:
    """The ``jsonl`` report format: one object per row."""
    return to_jsonl(rows(sources))
