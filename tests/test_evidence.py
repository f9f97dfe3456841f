"""Evidence a stranger can check: the data the tests and the docs rest on is in the repository and says
where it came from."""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass
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


# --- Every table of figures in README.md and docs/ names its raw files, and shows their numbers ----------
# The convention, stated at the top of docs/BENCHMARKS.md: the first non-blank line after a table of
# figures reads "Raw: `path`, `path/*.json` ..." (files in the repository, globs allowed), and the section
# above the table holds the command that made them. Every number in the table must be a number of those
# files printed to the digits shown; a column that a test above computes from the raw values (a ratio, a
# unit change) is named in COMPUTED_COLUMNS and left to that test. A table that is no measurement says so on
# the same line instead: "Not measured: <why>".

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SEPARATOR_ROW = re.compile(r"^\|[\s:|-]+\|$")
CODE_SPAN = re.compile(r"`[^`]*`")
# A figure: a number not glued to a name (Q4_0, 270M, tg32, EAGLE-3 are names), its sign where the sign
# stands alone, thousands separators, an x or % suffix; "N min M s" is one figure, in seconds.
FIGURE = re.compile(r"(?<![\w.,])(?<![A-Za-z]-)(?:(?<=[\s(\[])[-+])?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?[x%]?(?![\w.]*\w)")
DURATION = re.compile(r"(\d+) min (\d+) s\b")
UNITS = re.compile(r"tok/s|tok/J|GB/s|MiB|GiB|MB|GB|ms|min|s|W|x|%")
RAW_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?")
RAW_DURATION = re.compile(r"(\d+)m(\d+(?:\.\d+)?)s")  # the shell's `time`: 5m18.837s
# GNU time -v: "Elapsed (wall clock) time (h:mm:ss or m:ss): 17:20.10" (hours optional)
GNU_ELAPSED = re.compile(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):(\d+(?:\.\d+)?)")
COMMAND = re.compile(r"^```|^    \S|`(?:[A-Z_]+=\S* )*(?:python3?|velollm|bash|taskset|time|llama-bench|\./scripts/"
                     r"|benchmarks/)", re.MULTILINE)

# Columns that a per-table test above computes from the raw values, by the table's header row.
COMPUTED_COLUMNS: dict[str, set[str]] = {
    "| target | token | k=1 | k=2 | k=3 | k=4 | k=4 / token |": {"k=4 / token"},
    "| model | flags | KV estimate | KV (server log) | compute estimate | compute (server) | total estimate "
    "| NVML used |": {"KV estimate", "KV (server log)", "compute estimate", "compute (server)", "total estimate",
                     "NVML used"},
}


@dataclass
class DocTable:
    """One markdown table of a document: where it starts, its cells, the line after it and the text above
    it back to the nearest heading."""

    doc: Path
    line: int
    header_line: str
    header: list[str]
    rows: list[list[str]]
    after: str
    section: str

    @property
    def name(self) -> str:
        return f"{self.doc.name}:{self.line}"


def table_cells(line: str) -> list[str]:
    return [cell.strip().replace("**", "") for cell in line.strip().strip("|").split("|")]


def doc_tables(doc: Path) -> list[DocTable]:
    """Every table of ``doc`` (a table indented under a list item counts too)."""
    lines = doc.read_text().splitlines()
    tables, index, heading = [], 0, 0
    while index < len(lines):
        text = lines[index].strip()
        if text.startswith("#"):
            heading = index
        if text.startswith("|") and index + 1 < len(lines) and SEPARATOR_ROW.match(lines[index + 1].strip()):
            end = index + 2
            while end < len(lines) and lines[end].strip().startswith("|"):
                end += 1
            after = next((line.strip() for line in lines[end:] if line.strip()), "")
            tables.append(DocTable(doc, index + 1, text, table_cells(text),
                                   [table_cells(line) for line in lines[index + 2:end]], after,
                                   "\n".join(lines[heading:index])))
            index = end
        else:
            index += 1
    return tables


def figures(cell: str) -> list[str]:
    """The figures a cell shows, outside code spans (flags and commands are not figures)."""
    text = CODE_SPAN.sub(" ", cell)
    return [m.group(0) for m in DURATION.finditer(text)] + FIGURE.findall(DURATION.sub(" ", text))


def is_figure_cell(cell: str) -> bool:
    """Whether a cell holds only figures (a decimal, a number with its unit, a duration), no words."""
    shown = figures(cell)
    if not any("." in f or "," in f or f[-1] in "x%" or DURATION.fullmatch(f) for f in shown) and not (
            shown and UNITS.search(cell)):
        return False
    rest = UNITS.sub(" ", FIGURE.sub(" ", DURATION.sub(" ", cell)))
    return not re.sub(r"[\s/,;:()\[\]→~≤≥<>=+-]", "", rest)


def has_figures(table: DocTable) -> bool:
    return any(is_figure_cell(cell) for row in table.rows for cell in row)


def raw_sources(table: DocTable) -> list[str]:
    """The repository paths (code spans with a folder in them) the table's Raw line names."""
    if not table.after.startswith("Raw:"):
        return []
    return [span for span in re.findall(r"`([^`]+)`", table.after) if "/" in span]


def numbers_in(text: str) -> list[float]:
    found = [float(m.group(0).replace(",", "")) for m in RAW_NUMBER.finditer(text)]
    found += [int(minutes) * 60 + float(seconds) for minutes, seconds in RAW_DURATION.findall(text)]
    found += [int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
              for hours, minutes, seconds in GNU_ELAPSED.findall(text)]
    return found + [-value for value in found if value < 0]  # "406-435" is a range, not -435


def raw_numbers(path: Path) -> list[float]:
    """Every number of a raw file: JSON values (numbers inside strings too), or the numbers of a text."""
    if path.suffix != ".json":
        return numbers_in(path.read_text(errors="replace"))
    values: list[float] = []
    pending = [json.loads(path.read_text())]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, str):
            values.extend(numbers_in(node))
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            values.append(float(node))
    return values


def figure_matches(figure: str, raw_sorted: list[float]) -> bool:
    """Whether some raw value, printed to the digits ``figure`` shows, is ``figure`` (a % may be a fraction
    in the raw file; a tie rounds either way)."""
    duration = DURATION.fullmatch(figure)
    if duration:
        value, half = int(duration.group(1)) * 60 + int(duration.group(2)), 0.5
    else:
        number = figure.rstrip("x%").replace(",", "")
        value, half = float(number), 0.5 * 10 ** -(len(number.split(".")[1]) if "." in number else 0)
    for scale in (1, 100) if figure.endswith("%") else (1,):
        low = bisect.bisect_left(raw_sorted, (value - half) / scale - 1e-12)
        if low < len(raw_sorted) and raw_sorted[low] * scale <= value + half + 1e-9:
            return True
    return False


def table_problems(table: DocTable, computed: set[str] = frozenset(), root: Path = REPO) -> list[str]:
    """What keeps a table of figures from being checkable against its raw files under ``root`` (empty:
    nothing)."""
    if not has_figures(table) or table.after.startswith("Not measured:"):
        return []
    sources = raw_sources(table)
    if not sources:
        return [f"{table.name}: a table of figures with no 'Raw:' line after it"]
    paths = []
    for pattern in sources:
        matched = sorted(path for path in root.glob(pattern) if path.is_file())
        if not matched:
            return [f"{table.name}: its Raw line names {pattern}, which is no file in the repository"]
        paths += matched
    problems = []
    if not COMMAND.search(table.section + "\n" + table.after):
        problems.append(f"{table.name}: no command above the table (a code block or `python ...`)")
    raw_sorted = sorted(value for path in paths for value in raw_numbers(path))
    for row in table.rows:
        for column, cell in zip(table.header, row, strict=False):
            if column in computed:
                continue
            missing = [figure for figure in figures(cell) if not figure_matches(figure, raw_sorted)]
            if missing:
                problems.append(f"{table.name}: {missing} in row {row[0]!r}, column {column!r}: "
                                f"in none of {', '.join(sources)}")
    return problems


def test_every_table_of_figures_in_the_docs_names_raw_files_that_hold_its_numbers():
    tables = [table for doc in DOCS for table in doc_tables(doc)]
    assert sum(has_figures(table) for table in tables) >= 20
    exempt = [table.name for table in tables if has_figures(table) and table.after.startswith("Not measured:")]
    assert len(exempt) <= 3, f"'Not measured:' is for the odd table that is no measurement, not a way out: {exempt}"
    for header, columns in COMPUTED_COLUMNS.items():
        matching = [table for table in tables if table.header_line == header]
        assert len(matching) == 1 and columns <= set(matching[0].header), header
    problems = [problem for table in tables
                for problem in table_problems(table, COMPUTED_COLUMNS.get(table.header_line, set()))]
    assert problems == [], "\n".join(problems)


def test_the_table_check_finds_a_missing_source_a_missing_file_and_a_figure_the_raw_file_lacks(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "run.json").write_text(json.dumps(
        {"model": "gemma-3-270m-q4_k_m.gguf", "decode": 47.4213, "ratio": 0.92512, "share": 0.11}))
    (tmp_path / "raw" / "time.txt").write_text("real\t5m18.837s\n")
    table = "| model | decode | ratio | share | demo |\n|---|---|---|---|---|\n| Gemma 3 270M Q4_K_M | {} tok/s | 0.925 | 11% | 5 min 19 s |\n"
    command = "## Run\n\n```\npython benchmarks/x.py\n```\n\n"
    cases = {
        "sourced": (table.format("47.42") + "\nRaw: `raw/run.json`, `raw/*.txt` (made by `python x`).\n", []),
        "off by one digit": (table.format("47.43") + "\nRaw: `raw/run.json`, `raw/*.txt`.\n", ["['47.43']"]),
        "no source": (table.format("47.42") + "\nMeasured on CPU-2.\n", ["no 'Raw:' line"]),
        "a file that is not there": (table.format("47.42") + "\nRaw: `raw/gone.json`.\n", ["raw/gone.json"]),
        "exempt": (table.format("1.00") + "\nNot measured: an example of the layout.\n", []),
    }
    for case, (body, expected) in cases.items():
        doc = tmp_path / f"{case.replace(' ', '-')}.md"
        doc.write_text(command + body)
        [found] = doc_tables(doc)
        problems = table_problems(found, root=tmp_path)
        assert len(problems) == len(expected) and all(e in p for e, p in zip(expected, problems)), (case, problems)
    no_command = tmp_path / "no-command.md"
    no_command.write_text("## Run\n\n" + table.format("47.42") + "\nRaw: `raw/run.json`, `raw/*.txt`.\n")
    assert ["no command" in problem for problem in table_problems(doc_tables(no_command)[0], root=tmp_path)] == [True]
    reference = tmp_path / "reference.md"
    reference.write_text("| raised | exit |\n|---|---|\n| UserInputError | 2 |\n| `FIRST_TOKEN_TIMEOUT_S` (300 s) | 1 |\n")
    assert not has_figures(doc_tables(reference)[0])


def test_raw_durations_are_read_in_both_time_formats():
    assert 318.837 in numbers_in("real\t5m18.837s")
    assert 1040.1 in numbers_in("\tElapsed (wall clock) time (h:mm:ss or m:ss): 17:20.10")
    assert 3600 + 62.5 in numbers_in("\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:01:02.50")
