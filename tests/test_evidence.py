"""Evidence a stranger can check: the data the tests and the docs rest on is in the repository and says
where it came from."""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOOL_OUTPUTS = REPO / "tests" / "data" / "tool-outputs"


def test_every_captured_tool_output_is_in_the_repository_with_its_source():
    readme = (TOOL_OUTPUTS / "README.md").read_text()
    captures = sorted(path.relative_to(TOOL_OUTPUTS).as_posix() for path in TOOL_OUTPUTS.rglob("*")
                      if path.is_file() and path.name != "README.md")
    assert len(captures) >= 24
    unnamed = [capture for capture in captures if capture not in readme and Path(capture).name not in readme]
    assert unnamed == []


# --- docs/BENCHMARKS.md against its raw result files ---------------------------------------------------
# Each table checked here has raw files in the repository; every figure it shows must be the raw value
# printed to the digits shown (a rounding error or a hand-copied figure fails).

BENCHMARKS = REPO / "docs" / "BENCHMARKS.md"
GPU_RESULTS = REPO / "docs" / "gpu-results"
SPEC6 = REPO / "benchmarks" / "results" / "gpu"
MIB = 2**20


def doc_table(heading: str) -> list[list[str]]:
    """The body rows (cells stripped of ** and spaces) of the first table after the line starting ``heading``
    (a table indented under a list item counts too)."""
    lines = [line.lstrip() for line in BENCHMARKS.read_text().splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith(heading.lstrip()))
    first = next(i for i in range(start, len(lines)) if lines[i].startswith("|"))
    rows = []
    for line in lines[first + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip().replace("**", "") for cell in line.strip("|").split("|")])
    return rows


def shown(value: float, figure: str) -> str:
    """``value`` printed as ``figure`` is: the same decimals, thousands separators and unit suffix."""
    number = figure.rstrip("xMiB% ").replace(",", "")
    decimals = len(number.split(".")[1]) if "." in number else 0
    text = f"{value:,.{decimals}f}" if "," in figure else f"{value:.{decimals}f}"
    return text + figure[len(figure.rstrip("xMiB% ")):]


def assert_figures(row_name: str, figures: list[str], raw: list[float]) -> None:
    expected = [shown(value, figure) for value, figure in zip(raw, figures, strict=True)]
    assert figures == expected, f"{row_name}: the docs show {figures}, the raw file {expected}"


SPEC6_ROWS = {"Qwen3.5-27B Q8_0": "spec6-mtp27-q8_0.txt", "Qwen3.5-27B Q4_0": "spec6-mtp27-q4_0.txt",
              "Qwen3.5-9B Q4_0": "spec6-mtp9-q4_0.txt", "Llama 8B F16": "spec6-eagle8-f16.txt",
              "Llama 8B Q4_0": "spec6-eagle8-q4_0.txt"}


def test_the_h200_llama_bench_costs_are_the_raw_files():
    rows = doc_table("llama-bench costs on the H200")
    assert [row[0] for row in rows] == list(SPEC6_ROWS)
    for name, *figures in rows:
        costs = (SPEC6 / SPEC6_ROWS[name]).read_text().splitlines()[0]  # "costs (llama-bench, ms): target token 4.763, ..."
        parts = dict(part.strip().rsplit(" ", 1) for part in costs.split(":", 1)[1].replace("verify ", "").split(",")
                     if part.strip())
        values = {key.rstrip(":"): float(value) for key, value in parts.items()}
        token, batches = values["target token"], [values[f"k={k}"] for k in range(1, 5)]
        assert_figures(name, figures, [token, *batches, batches[3] / token])


def test_the_synthetic_speculation_rows_are_the_raw_files():
    raw_files = {"3B Q4_0 + 1B Q4_0": "spec-3b-q4_0.json", "8B F16 + 1B Q4_0": "spec-8b-f16.json"}
    rows = [row for row in doc_table("| target + draft | draft max") if row[0] in raw_files]
    assert len(rows) == 4
    for name, draft_max, acceptance, accepted, vanilla, speculative, speedup, predicted in rows:
        raw = [r for r in json.loads((GPU_RESULTS / raw_files[name]).read_text())["rows"]
               if r["draft_max"] == int(draft_max)]
        label = f"{name}, draft max {draft_max}"
        assert_figures(label, acceptance.split(" / "), [r["per_token_acceptance"] for r in raw])
        assert_figures(label, accepted.split(" / "), [r["acceptance_rate"] for r in raw])
        low, high = vanilla.split("-")
        speeds = [r["vanilla_decode_tokens_per_s"] for r in raw]
        assert_figures(label, [low, high], [min(speeds), max(speeds)])
        assert_figures(label, speculative.split(" / "), [r["speculative_decode_tokens_per_s"] for r in raw])
        assert_figures(label, speedup.split(" / "), [r["speedup"] for r in raw])
        assert_figures(label, predicted.split(" / "), [r["predicted_speedup"] for r in raw])


def test_the_estimate_vs_server_table_is_the_raw_file():
    raw = json.loads((GPU_RESULTS / "estimate-vs-server.json").read_text())
    rows = doc_table("**Estimate vs the server's own numbers and NVML**")
    assert len(rows) == len(raw)
    for (model, flags, *figures), run in zip(rows, raw, strict=True):
        assert model.split()[0].lower() in run["model"] and run["flags"][run["flags"].index("-ctk") + 1] in flags
        assert_figures(f"{model} {flags}", figures, [run[key] / MIB for key in (
            "kv_estimate", "kv_server", "compute_estimate", "compute_server", "total_estimate", "gpu_used_nvml")])


STARTUP = REPO / "benchmarks" / "results" / "startup"


def startup_medians(name: str) -> list[tuple[str, str]]:
    """(ms, ratio) of each ``median`` line of a start-up raw file, in its order."""
    found = []
    for line in (STARTUP / name).read_text().splitlines():
        if " median " in line:
            ms, ratio = line.split(" median ", 1)[1].split()[0], line.split(" ms ", 1)[1].split()[0]
            found.append((ms, ratio))
    return found


def test_the_start_up_figures_are_the_raw_files():
    after, from_source, before = (startup_medians("h100-2026-12-05.txt")[i:i + 3] for i in (0, 3, 6))
    rows = {row[0]: row[1:] for row in doc_table("| H100 host (16 cores)")}
    for label, medians in (("before (cdb5a66)", before), ("after", after),
                           ("after, `--from-source` (no bytecode)", from_source)):
        (plain, _), (help_ms, help_ratio), (detect_ms, detect_ratio) = medians
        assert rows[label] == [f"{plain} ms", f"{help_ms} ms ({help_ratio})", f"{detect_ms} ms ({detect_ratio})"], label
    (plain, _), (help_ms, help_ratio), (detect_ms, detect_ratio) = startup_medians("xeon-2core-2026-12-05.txt")
    prose = " ".join(BENCHMARKS.read_text().replace("**", "").split())
    assert (f"`python -c pass` {plain} ms, `velollm --help` {help_ms} ms ({help_ratio}), "
            f"`velollm detect --json` {detect_ms} ms ({detect_ratio})") in prose
    end = (REPO / "benchmarks" / "results" / "startup" / "xeon-2core-2026-12-05-end.txt").read_text()
    detect_ratios = [line.split()[-4] for line in end.splitlines() if line.startswith("velollm detect --json")]
    assert ", ".join(detect_ratios) in prose


CPU_NGRAM_ROWS = {"VeloLLM defaults, run 1": "spec-ngram-velollm-defaults-r1.json",
                  "VeloLLM defaults, run 2": "spec-ngram-velollm-defaults-r2.json",
                  "VeloLLM defaults, run 3": "spec-ngram-velollm-defaults-r3.json",
                  "llama.cpp defaults": "spec-ngram-llamacpp-defaults.json"}


def test_the_cpu_ngram_rerun_table_is_its_raw_files():
    rows = {row[0]: row[1:] for row in doc_table("**Rerun on 5 Dec 2026, with raw files** (`benchmarks/results/cpu/spec-ngram")}
    assert set(rows) == set(CPU_NGRAM_ROWS)
    for name, file in CPU_NGRAM_ROWS.items():
        result = json.loads((REPO / "benchmarks" / "results" / "cpu" / file).read_text())
        assert result["status"] == "complete" and result["outputs_identical"] is True
        raw = []
        for suite in ("code_edit", "quote_answer"):
            row = result["per_suite"][suite]
            raw += [row["vanilla_decode_tokens_per_s"], row["speculative_decode_tokens_per_s"], row["speedup"]]
        assert_figures(name, rows[name], raw)


def test_the_client_vs_server_rerun_is_its_raw_output():
    import re

    rows = {row[0]: row[1:] for row in doc_table("**Rerun on 5 Dec 2026, with raw files** (the same two commands")}
    files = {"Gemma 3 270M Q4_K_M": "gemma3-270m", "SmolLM2 135M Q4_1": "smollm2-135m"}
    assert set(rows) == set(files)
    for name, model in files.items():
        text = (REPO / "benchmarks" / "results" / "cpu" / f"llama-bench-vs-server-{model}.txt").read_text()
        medians = [re.search(rf"{label}.*?median\s+([\d.]+) tok/s", text).group(1)
                   for label in ("llama-bench tg32", r"llama-server \(server timing\)", r"llama-server \(client timing\)")]
        ratios = re.search(r"server / llama-bench: ([\d.]+)\s+client / server: ([\d.]+)", text).groups()
        assert rows[name] == [f"{value} tok/s" for value in medians] + list(ratios), name


def test_the_model_draft_rerun_is_its_raw_files():
    rows = {row[0]: row[1:] for row in doc_table("**Rerun on 5 Dec 2026, with raw files** (`benchmarks/results/cpu/spec-model")}
    assert set(rows) == {"F16", "Q8_0"}
    for name, row in rows.items():
        raw = REPO / "benchmarks" / "results" / "cpu" / f"spec-model-draft-{name.lower()}.json"
        result = json.loads(raw.read_text())
        suites = list(result["per_suite"].values())
        assert row[0] == " / ".join(f"{s['vanilla_decode_tokens_per_s']:.1f}" for s in suites)
        assert row[1] == " / ".join(f"{s['speculative_decode_tokens_per_s']:.1f}" for s in suites)
        assert row[2] == " / ".join(f"{s['speedup']:.2f}" for s in suites) + f" → {result['speedup']:.2f}x"
        assert row[3] == f"{result['acceptance_rate']:.0%}" and result["outputs_identical"] and row[4] == "identical"
