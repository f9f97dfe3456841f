"""What a report shows, read out of result documents: sources (files or history ids), and per source
the suite statistics, load levels, speculative curve, roofline and telemetry series.

Every document is scrubbed of secrets (``history.secrets``) as it is loaded, so nothing below it
(HTML, CSV, markdown, JSONL) can show one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from velollm_core.contract.formats import ReportSource
from velollm_core.contract.jsontext import dig, json_number

SUITE_METRICS = ("decode_tokens_per_s", "prompt_tokens_per_s", "ttft_ms", "total_ms",
                 # reasoning models and tool calls: present only where the runs carry them
                 "time_to_first_answer_ms", "reasoning_tokens", "tool_args_ms")
# Per-run answer checks (True/False, None: not asked), reported as the share that passed.
ANSWER_CHECKS = ("json_valid", "tool_call_valid")
LATENCIES = ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms")


def load_sources(refs: list[str]) -> list[ReportSource]:
    """Each of ``refs`` a result file or a history id ('12', '#12', 'latest'); a file wins over an id."""
    from velollm_core.history.documents import validate_document
    from velollm_core.history.secrets import scrub_document
    from velollm_core.history.store import result_documents

    sources = []
    for ref in refs:
        for document in result_documents(ref):
            # another tool's file was validated as it was converted; the validation import and compare apply
            kind = "benchmark" if document.imported else validate_document(document.data, document.name)
            sources.append(ReportSource(name=document.name, kind=kind, data=scrub_document(document.data)))
    _label(sources)
    return sources


def _label(sources: list[ReportSource]) -> None:
    """Legend names: the file's name (its path where two share a name), or '#id'."""
    short = [Path(s.name).name if not s.name.startswith("#") else s.name for s in sources]
    for source, name in zip(sources, short):
        source.label = name if short.count(name) == 1 else source.name


def facts(source: ReportSource) -> dict[str, Any]:
    """Backend, version, build, model, machine, status and start of a source, for headers and rows."""
    from velollm_core.history.store import machine_of

    first = source.results()[0][2] if source.results() else source.data
    environment = first.get("environment")
    model = (source.data.get("target") if source.kind == "speculative" else source.data.get("model")
             if source.kind == "verify" else dig(source.data, "settings", "model"))
    return {
        "source": source.name,
        "kind": source.kind,
        "backend": dig(first, "settings", "backend") or source.data.get("runtime"),
        "backend_version": dig(environment, "backend", "version"),
        "build_commit": dig(environment, "backend", "build_commit"),
        "model": model,
        "machine": machine_of(environment),
        "started_at": source.data.get("started_at"),
        "status": source.data.get("status") or ("complete" if source.kind == "verify" else None),
    }


def _summary_key(run: dict) -> str:
    from velollm_core.history.summary import summary_key

    return summary_key(str(run.get("benchmark")), int(run.get("concurrency") or 1))


def run_values(result: dict, suite: str, metric: str) -> list[float]:
    return [v for run in result.get("runs") or [] if isinstance(run, dict) and _summary_key(run) == suite
            and (v := json_number(run.get(metric))) is not None]


def suite_stats(result: dict) -> dict[str, dict[str, dict]]:
    """{suite: {metric: {median, stdev, min, max, n, values}}} from the summary and the runs."""
    out: dict[str, dict[str, dict]] = {}
    for suite, metrics in (result.get("summary") or {}).items():
        if not isinstance(metrics, dict):
            continue
        for metric in SUITE_METRICS:
            stats = metrics.get(metric)
            if isinstance(stats, dict) and json_number(stats.get("median")) is not None:
                out.setdefault(suite, {})[metric] = {**{k: json_number(stats.get(k)) for k in
                                                         ("median", "stdev", "min", "max", "mean")},
                                                      "n": stats.get("n"),
                                                      "values": run_values(result, suite, metric)}
    return out


def answer_shares(result: dict, suite: str) -> dict[str, float]:
    """Per answer check asked of ``suite``'s runs, the share that passed ({} where none was asked)."""
    shares = {}
    for check in ANSWER_CHECKS:
        seen = [run[check] for run in result.get("runs") or [] if isinstance(run, dict)
                and _summary_key(run) == suite and isinstance(run.get(check), bool)]
        if seen:
            shares[check] = sum(seen) / len(seen)
    return shares


def levels(result: dict) -> list[dict]:
    """The load levels (engine v2 ``levels``), each with ``knee`` set where ``sweep.knee`` names it."""
    knee = dig(result, "sweep", "knee")
    return [{**level, "is_knee": level.get("key") == knee} for level in result.get("levels") or []
            if isinstance(level, dict)]


def legacy_concurrency(result: dict) -> list[dict]:
    """Levels from the older ``concurrency`` report ({"c4": {suite: {...}}}), shaped like ``levels``."""
    out = []
    for key, suites in (result.get("concurrency") or {}).items():
        for suite, entry in (suites or {}).items() if isinstance(suites, dict) else ():
            throughput = json_number(dig(entry, "aggregate_decode_tokens_per_s", "median"))
            ttft = json_number(entry.get("ttft_ms_p50")) if isinstance(entry, dict) else None
            if throughput is None or ttft is None:
                continue
            digits = re.sub(r"\D", "", str(key))
            out.append({"key": str(key), "workload": suite, "profile": "concurrent",
                        "concurrency": int(digits) if digits else None, "output_throughput": throughput,
                        "ttft_ms": {"median": ttft, "p90": json_number(entry.get("ttft_ms_p90")),
                                    "p99": json_number(entry.get("ttft_ms_p99"))},
                        "request_throughput": json_number(dig(entry, "requests_per_s", "median")), "is_knee": False})
    return out


def offered_load(level: dict) -> float:
    """What a level asked of the server (concurrency or rate): the order of the curve's points."""
    return json_number(level.get("concurrency")) or json_number(level.get("rate")) or 0.0


def draft_max_of(data: dict) -> int | None:
    """The draft length a speculative bench measured, as it recorded it (``settings.draft_max``)."""
    value = dig(data, "settings", "draft_max")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def speculative_curve(data: dict) -> dict[str, Any] | None:
    """The advisor's predicted speedup per draft length and the measured point(s), or None."""
    advisor = data.get("advisor") if isinstance(data.get("advisor"), dict) else {}
    curve = [(float(row["draft_max"]), float(row["predicted_speedup"])) for row in advisor.get("curve") or []
             if json_number(row.get("draft_max")) is not None and json_number(row.get("predicted_speedup")) is not None]
    measured = json_number(data.get("speedup"))
    if not curve and measured is None:
        return None
    return {"curve": curve, "measured": measured, "draft_max": draft_max_of(data),
            "predicted_measured_config": json_number(advisor.get("fit_speedup_measured_config",
                                                          advisor.get("predicted_speedup_measured_config"))),
            "recommendation": advisor.get("recommendation"), "per_suite": data.get("per_suite") or {},
            "acceptance_rate": json_number(data.get("acceptance_rate")), "outputs_identical": data.get("outputs_identical")}


def roofline(result: dict) -> dict[str, float]:
    """{suite: % of the bandwidth limit} where the result has a roofline."""
    suites = dig(result, "roofline", "suites") or {}
    return {suite: pct for suite, entry in suites.items() if (pct := json_number(dig(entry, "pct_of_limit"))) is not None}


def telemetry_series(result: dict) -> list[dict[str, Any]]:
    """Plot-ready telemetry: one entry per (device or server, field) with at least two samples.

    Reads ``telemetry.series`` as velollm_core/telemetry/session.py writes it: ``devices`` and
    ``server`` hold columns (``{"t": [...], "power_w": [...]}``), ``levels`` the level spans.
    """
    series = dig(result, "telemetry", "series")
    if not isinstance(series, dict):
        return []
    names = {d.get("id"): d.get("name") for d in dig(result, "telemetry", "devices") or [] if isinstance(d, dict)}
    groups = [(f"{names.get(key) or key}", columns) for key, columns in (series.get("devices") or {}).items()]
    groups.append(("server", series.get("server") or {}))
    spans = [(float(m["start_s"]), float(m["end_s"]), str(m.get("key"))) for m in series.get("levels") or []
             if isinstance(m, dict) and json_number(m.get("start_s")) is not None and json_number(m.get("end_s")) is not None]
    out = []
    for group, columns in groups:
        if not isinstance(columns, dict) or not isinstance(columns.get("t"), list):
            continue
        times = columns["t"]
        for field_name, values in columns.items():
            if field_name == "t" or not isinstance(values, list):
                continue
            points = [(float(t), float(v)) for t, v in zip(times, values) if json_number(t) is not None and json_number(v) is not None]
            if len(points) >= 2:
                out.append({"group": group, "field": field_name, "points": points, "spans": spans})
    return out


def verify_candidates(data: dict) -> list[dict[str, Any]]:
    """A verification's candidates with their decode and prefill samples (one per round)."""
    out = []
    for candidate in data.get("candidates") or []:
        if not isinstance(candidate, dict):
            continue
        decode = [v for v in candidate.get("decode_tokens_per_s") or [] if json_number(v) is not None]
        prefill = [v for v in candidate.get("prompt_tokens_per_s") or [] if json_number(v) is not None]
        out.append({"name": str(candidate.get("name")), "decode": decode, "prefill": prefill,
                    "error": candidate.get("error")})
    return out


def spread(values: list[float]) -> dict[str, float | int | None]:
    """median, stdev, min, max, n of plain values (a verification's rounds)."""
    from velollm_core.contract.stats import summarize

    stats = summarize(values)  # finite for any finite values (statistics.stdev overflows near 1e308)
    if stats is None:
        return {"median": None, "stdev": None, "min": None, "max": None, "n": 0}
    return {"median": stats.median, "stdev": stats.stdev, "min": stats.min, "max": stats.max, "n": stats.n}


def telemetry_levels(result: dict) -> list[dict[str, Any]]:
    """Per load level: the client's and the server's figures side by side (with the 2% flag) and
    tokens per joule per device kind, as velollm_core/telemetry/session.py summarizes a level."""
    out = []
    for level in dig(result, "telemetry", "levels") or []:
        if not isinstance(level, dict):
            continue
        figures = {name: f for name, f in (level.get("client_vs_server") or {}).items() if isinstance(f, dict)}
        per_joule = {kind: parts for kind, parts in (level.get("tokens_per_joule") or {}).items()
                     if isinstance(parts, dict)}
        out.append({"key": level.get("key"), "workload": level.get("workload"), "figures": figures,
                    "tokens_per_joule": per_joule})
    return out
