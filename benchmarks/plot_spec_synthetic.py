"""Speedup vs SYNTHETIC acceptance from benchmarks/speculative_synthetic.py results: one SVG per file
(measured lines and the advisor's predictions, per draft length) and one Markdown table for them all;
files of the same drafter and target (the same label) share one chart.

    python benchmarks/plot_spec_synthetic.py RESULT.json [...] --out docs/img [--goal 0.75:2.0]

The charts use the report's SVG code (velollm_core/report/svg.py), its chart styles inlined
(``svg.standalone``), so each file renders on its own (a browser, GitHub's Markdown).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from velollm_core.report.svg import Mark, Series, color, standalone, xy_chart


def _name(path: Path, data: dict) -> str:
    """'mtp-27b-q8_0' -> 'MTP 27B Q8_0', 'eagle3-8b-f16' -> 'EAGLE-3 8B F16'."""
    label = next((row["label"] for row in data["rows"] if row.get("label")), path.stem)
    kind, _, rest = label.partition("-")
    return " ".join([{"mtp": "MTP", "eagle3": "EAGLE-3"}.get(kind, kind), *rest.upper().split("-")])


def chart(path: Path, data: dict, goal: tuple[float, float] | None) -> str:
    series = []
    for i, k in enumerate(sorted({row["draft_max"] for row in data["rows"]})):
        rows = sorted((r for r in data["rows"] if r["draft_max"] == k), key=lambda r: r["per_token_acceptance"])
        # No point labels: they collide where two draft lengths meet; the table beside the chart has the numbers.
        series.append(Series(f"k={k} measured", color(i), [(r["per_token_acceptance"], r["speedup"]) for r in rows]))
        predicted = [(r["per_token_acceptance"], r["predicted_speedup"]) for r in rows
                     if r.get("predicted_speedup") is not None and not r.get("calibration_point")]
        if predicted:
            series.append(Series(f"k={k} advisor", color(i), predicted, dashed=True, line=False))
    marks = [Mark(goal[0], goal[1], f"goal {goal[1]:g}x", color="#222")] if goal else []
    title = f"{_name(path, data)} on the H200: speedup vs acceptance (SYNTHETIC)"
    svg = xy_chart(f"spec-{path.stem}", title, "per-token acceptance a (--spec-synth-rates)", "decode speedup (x)",
                   series, marks=marks, hline=(1.0, "1x: no gain"), y_zero=True)
    return standalone(svg)


def table(results: list[tuple[Path, dict]]) -> str:
    lines = ["| drafter | k | a | t/step | plain | spec | meas | pred | err |",
             "|---|---|---|---|---|---|---|---|---|"]
    for path, data in results:
        for r in data["rows"]:
            cal = r.get("calibration_point")
            pred = "(fit)" if cal else f"{r['predicted_speedup']:.2f}x" if r.get("predicted_speedup") else "-"
            # Older files name the error prediction_error (predicted from the point's own tokens per step).
            error = r.get("predicted_error", r.get("prediction_error"))
            err = "" if cal or error is None else f"{error:+.0%}"
            lines.append(f"| {_name(path, data)} | {r['draft_max']} | {r['per_token_acceptance']:.2f} | "
                         f"{r['tokens_per_step']:.2f} | {r['vanilla_decode_tokens_per_s']:.1f} | "
                         f"{r['speculative_decode_tokens_per_s']:.1f} | {r['speedup']:.2f}x | {pred} | {err} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("results", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="Folder for the SVG files.")
    parser.add_argument("--goal", default="0.75:2.0", help="a:speedup to ring on every chart ('' for none).")
    args = parser.parse_args()
    goal = tuple(float(v) for v in args.goal.split(":")) if args.goal else None
    args.out.mkdir(parents=True, exist_ok=True)
    results = [(p, json.loads(p.read_text())) for p in args.results]
    # Files of one drafter and target (e.g. more draft lengths run later) share a chart and a table block.
    groups: dict[str, list[tuple[Path, dict]]] = {}
    for path, data in results:
        groups.setdefault(_name(path, data), []).append((path, data))
    merged = [(min((path for path, _ in files), key=lambda path: len(path.stem)), {"rows": [row for _, data in files for row in data["rows"]]}) for files in groups.values()]
    for path, data in merged:
        svg_path = args.out / f"{path.stem}.svg"
        svg_path.write_text(chart(path, data, goal) + "\n")
        print(f"wrote {svg_path}")
    print(table(merged))


if __name__ == "__main__":
    main()
