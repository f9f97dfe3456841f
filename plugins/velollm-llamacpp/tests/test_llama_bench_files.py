"""llama-bench's files both ways, with the real programs: the llama-bench built here measures Gemma 3
270M and `velollm history import` reads its JSON, JSONL and SQL; `velollm report --format llama-bench*`
writes what llama.cpp's own scripts/compare-llama-bench.py (from the vendored source tree) reads; and a
VeloLLM pp512/tg128 result, that llama-bench run and a GuideLLM run sit in one `velollm compare`."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from click.testing import CliRunner
from velollm_testkit.real import missing

from velollm_core.cli import cli

pytestmark = pytest.mark.llamacpp
REPOSITORY = Path(__file__).resolve().parents[3]
# A real VeloLLM run of the same workload on the same model (its raw file, committed as evidence) and a
# real GuideLLM run against llama-server (tests/data/peers/README.md says how it was made).
VELOLLM_RESULT = REPOSITORY / "benchmarks" / "results" / "peer" / "velollm-pp512-tg128-d0-r1.json"
GUIDELLM_RESULT = REPOSITORY / "tests" / "data" / "peers" / "guidellm-0.8.1-pp512-tg128-synchronous.json"
COMPARE_NEEDS = ("GitPython", "tabulate")


def velollm(*args: str, history: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "VELOLLM_HISTORY_DB": str(history)}
    return subprocess.run([sys.executable, "-m", "velollm_core", *args], capture_output=True, text=True,
                          timeout=300, check=False, env=env)


@pytest.fixture(scope="module")
def llama_bench(llama_server_bin) -> Path:
    from velollm_llamacpp.install import find_program

    from velollm_core.api import UserInputError

    try:
        return find_program("llama-bench")
    except UserInputError as exc:
        missing("llama-bench", str(exc))


@pytest.fixture(scope="module")
def bench_outputs(llama_bench, gemma, tmp_path_factory) -> dict[str, Path]:
    """Real llama-bench output: pp512/tg128 twice repeated, as json (stdout) and jsonl (stderr) of one run,
    and a shorter run's sql."""
    folder = tmp_path_factory.mktemp("llama-bench")

    def run(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(llama_bench), "-m", str(gemma), "-t", "2", *args], capture_output=True, text=True,
                              timeout=600, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc

    measured = run("-p", "512", "-n", "128", "-r", "2", "-o", "json", "-oe", "jsonl")
    short = run("-p", "64", "-n", "16", "-r", "1", "-o", "sql")
    outputs = {"json": measured.stdout, "jsonl": measured.stderr, "sql": short.stdout}
    for fmt, text in outputs.items():
        (folder / f"gemma.{fmt}").write_text(text)
    return {fmt: folder / f"gemma.{fmt}" for fmt in outputs}


def test_history_import_reads_each_llama_bench_format(bench_outputs, tmp_path):
    history = tmp_path / "history.db"
    for path in bench_outputs.values():
        imported = velollm("history", "import", str(path), history=history)
        assert imported.returncode == 0, imported.stderr
        assert "(llama-bench)" in imported.stdout
    listed = json.loads(velollm("history", "--json", history=history).stdout)["results"]
    assert {entry["backend"] for entry in listed} == {"llama-bench"}
    exported = json.loads(velollm("history", "export", str(listed[-1]["id"]), history=history).stdout)
    rows = json.loads(bench_outputs["json"].read_text())
    runs = exported["runs"]
    assert exported["imported"] == {"tool": "llama-bench", "tool_version": rows[0]["build_commit"], "format": "json",
                                    "source": "gemma.json"}
    assert {run["benchmark"] for run in runs} == {"pp512/tg128"}
    # Each run pairs a pp repetition with a tg repetition; what llama-bench does not time stays unknown.
    assert [run["prompt_tokens_per_s"] for run in runs] == rows[0]["samples_ts"]
    assert [run["decode_tokens_per_s"] for run in runs] == rows[1]["samples_ts"]
    assert all(run["ttft_ms"] is None and run["total_ms"] is None for run in runs)
    assert exported["schema_version"] >= 2
    assert exported["summary"]["pp512/tg128"]["decode_tokens_per_s"]["n"] == 2


def test_a_velollm_result_llama_bench_and_guidellm_in_one_compare(bench_outputs, tmp_path):
    history = tmp_path / "history.db"
    for path in (VELOLLM_RESULT, bench_outputs["json"], GUIDELLM_RESULT):
        assert velollm("history", "import", str(path), history=history).returncode == 0
    compared = velollm("compare", "1", "2", "3", "--json", history=history)
    assert compared.returncode == 0, compared.stderr
    report = json.loads(compared.stdout)
    assert [pair["b"] for pair in report["comparisons"]] == ["#2", "#3"]
    by_tool = {pair["b"]: {row["metric"]: row for row in pair["rows"]} for pair in report["comparisons"]}
    # llama-bench times prefill and decode; GuideLLM decode and TTFT but no prefill rate of the server.
    assert {"decode_tokens_per_s", "prompt_tokens_per_s"} <= by_tool["#2"].keys()
    assert "decode_tokens_per_s" in by_tool["#3"] and "prompt_tokens_per_s" not in by_tool["#3"]
    assert all(row["benchmark"] == "pp512/tg128" for rows in by_tool.values() for row in rows.values())
    table = velollm("compare", "1", "2", "3", history=history)
    assert table.returncode == 0 and table.stdout.count("pp512/tg128") == 2, table.stdout


def test_report_writes_llama_benchs_markdown_table(tmp_path):
    printed = CliRunner().invoke(cli, ["report", str(VELOLLM_RESULT), "--format", "llama-bench"])
    assert printed.exit_code == 0, printed.output
    lines = printed.output.splitlines()
    assert [cell.strip() for cell in lines[0].strip("|").split("|")] == [
        "model", "size", "params", "backend", "threads", "test", "t/s"]
    result = json.loads(VELOLLM_RESULT.read_text())
    decode = [run["decode_tokens_per_s"] for run in result["runs"]]
    import statistics

    tg = next(line for line in lines if "tg128" in line)
    assert f"{statistics.fmean(decode):.2f} ± {statistics.stdev(decode):.2f}" in tg
    assert "| CPU " in tg and "|       2 |" in tg
    assert lines[-1] == "build: 0c1e570 (0)"


@pytest.fixture(scope="module")
def compare_llama_bench(llama_bench, tmp_path_factory) -> tuple[str, Path]:
    """(python with GitPython and tabulate, compare-llama-bench.py of the source tree llama-bench was built from)."""
    script = llama_bench.parents[2] / "src" / "scripts" / "compare-llama-bench.py"
    if not script.is_file():
        missing("compare-llama-bench.py", f"no llama.cpp source tree beside {llama_bench} (velollm llamacpp install)")
    python = sys.executable
    if subprocess.run([python, "-c", "import git, tabulate"], capture_output=True, check=False).returncode != 0:
        folder = tmp_path_factory.mktemp("compare-venv")
        venv.create(folder, with_pip=True)
        python = str(folder / "bin" / "python")
        installed = subprocess.run([python, "-m", "pip", "install", "-q", *COMPARE_NEEDS], capture_output=True,
                                   text=True, timeout=600, check=False)
        if installed.returncode != 0:
            missing("compare-llama-bench.py's dependencies", f"pip install {' '.join(COMPARE_NEEDS)} failed: "
                    f"{installed.stderr.strip()[-300:]}")
    return python, script


@pytest.mark.parametrize("fmt", ["llama-bench-json", "llama-bench-jsonl", "llama-bench-sql"])
def test_compare_llama_bench_reads_velollm_output(compare_llama_bench, fmt, tmp_path):
    python, script = compare_llama_bench
    written = tmp_path / f"velollm.{fmt.rsplit('-', 1)[1]}"
    report = CliRunner().invoke(cli, ["report", str(VELOLLM_RESULT), "--format", fmt, "--output", str(written)])
    assert report.exit_code == 0, report.output
    rows = json.loads(CliRunner().invoke(cli, ["report", str(VELOLLM_RESULT), "--format", "llama-bench-json"]).output)
    if fmt.endswith("sql"):  # as llama.cpp's docs say: llama-bench -o sql | sqlite3 llama-bench.sqlite
        database = tmp_path / "llama-bench.sqlite"
        with sqlite3.connect(database) as db:
            db.executescript(written.read_text())
        written = database
    build = rows[0]["build_commit"]
    proc = subprocess.run([python, str(script), "-t", "llama-bench", "-i", str(written), "-b", build, "-c", build],
                          cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = proc.stdout
    assert "pp512" in table and "tg128" in table, table
    for row in rows:  # each row's t/s, as the script prints it, baseline and compare alike
        assert f"{row['avg_ts']:.2f}" in table, table
