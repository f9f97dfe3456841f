"""Every table readable at 80 columns (no header cut to "…", no collapsed column, no line wider than
the terminal) and the wide layout where there is room. No llama-server needed: real result files
from docs/gpu-results and hand-built reports."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console
from rich.table import Table
from velollm_testkit.real import missing

from velollm_core import tables
from velollm_core.bench.render import render_comparison, render_result
from velollm_core.contract.schemas import (
    BenchmarkResult,
    ConfigChange,
    ConfigProposal,
    GpuInfo,
    HardwareReport,
)
from velollm_core.hardware.report import render_hardware
from velollm_core.history.compare import compare_results, load_result
from velollm_core.speculative.commands import render_report
from velollm_core.tune.render import print_proposals

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "gpu-results"
WIDTHS = (80, 140)


def rendered(width: int, render) -> str:
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    render(console)
    return console.export_text()


def check_readable(text: str, width: int, unbroken: tuple[str, ...] = ()) -> None:
    """``unbroken``: lines printed soft-wrapped on purpose (a command line to copy)."""
    assert "…" not in text, text
    assert "┃┃" not in text and "││" not in text, text  # a column squeezed to nothing
    too_wide = [line for line in text.splitlines() if len(line) > width and line not in unbroken]
    assert not too_wide, "\n".join(too_wide)


def header_line(text: str) -> str:
    """The first line of column headers of the first table in ``text``."""
    return next(line for line in text.splitlines() if line.startswith(("┃", " ")) and "┃" in line)


# --- benchmark results and comparisons ------------------------------------------------------------


@pytest.fixture
def result() -> BenchmarkResult:
    return BenchmarkResult.model_validate(json.loads((RESULTS / "bench-1b-random-q4_0.json").read_text()))


@pytest.fixture
def result_with_concurrency(result) -> BenchmarkResult:
    entry = {"aggregate_decode_tokens_per_s": {"median": 1234.5}, "requests_per_s": {"median": 3.21},
             "ttft_ms_p50": 12.3, "ttft_ms_p90": 15.0, "ttft_ms_p99": 20.1}
    return result.model_copy(update={"concurrency": {"1": {"medium_completion": entry},
                                                     "4": {"medium_completion": entry}}})


@pytest.mark.parametrize("width", WIDTHS)
def test_result_table(result_with_concurrency, width):
    text = rendered(width, lambda console: render_result(result_with_concurrency, console))
    check_readable(text, width)
    for suite in result_with_concurrency.summary:
        assert suite in text
    if width == 140:  # one row per suite, every header on one line
        assert "client decode tok/s" in header_line(text) and "% roofline" in header_line(text)
    else:  # one row per suite and metric
        assert "client decode tok/s" in text and "% roofline" in text


def test_result_table_without_roofline(result):
    bare = result.model_copy(update={"roofline": None})
    for width in WIDTHS:
        text = rendered(width, lambda console: render_result(bare, console))
        check_readable(text, width)
        assert "roofline" not in text


@pytest.fixture
def comparison_rows() -> list[dict]:
    return compare_results(load_result(RESULTS / "bench-1b-random-q4_0.json"),
                           load_result(RESULTS / "bench-1b-random-q8_0.json"))


@pytest.mark.parametrize("width", WIDTHS)
def test_comparison_table(comparison_rows, width):
    text = rendered(width, lambda console: render_comparison(comparison_rows, console, "docs/gpu-results/a.json",
                                                             "docs/gpu-results/b.json"))
    check_readable(text, width)
    assert "within noise" in text  # on one line
    assert ("metric" in header_line(text)) is True
    if width == 140:
        assert "A median" in header_line(text)


# --- hardware -------------------------------------------------------------------------------------


def two_gpu_report() -> HardwareReport:
    report = HardwareReport.model_validate(json.loads((RESULTS / "detect.json").read_text()))
    apple = GpuInfo(vendor="apple", name="Apple M3 Max", source="system_profiler", unified_memory=True,
                    memory_total_bytes=96 * 2**30, bandwidth_gbps=400.0)
    return report.model_copy(update={"gpus": [*report.gpus, apple]})


@pytest.mark.parametrize("width", WIDTHS)
def test_detect_tables(width):
    report = two_gpu_report()
    text = rendered(width, lambda console: render_hardware(report, console))
    check_readable(text, width)
    for expected in ("NVIDIA H200", "4814 GB/s", "580.159.04", "0000:00:06.0", "nvml", "Apple M3 Max", "unified"):
        assert expected in text
    gpu_header = next(line for line in text.splitlines() if "┃ #" in line)
    assert ("source" in gpu_header) is (width == 140)


def test_plugins_table(monkeypatch):
    from click.testing import CliRunner

    from velollm_core import cli

    for width in WIDTHS:
        console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
        monkeypatch.setattr(cli, "stdout_console", lambda console=console: console)
        assert CliRunner().invoke(cli.cli, ["plugins"]).exit_code == 0
        text = console.export_text()
        check_readable(text, width)
        assert "velollm_core.hardware.pci_gpus" in text and "velollm-llamacpp" in text
        assert ("version" in header_line(text)) is (width == 140)


# --- tuning ---------------------------------------------------------------------------------------


def llamacpp_proposal() -> ConfigProposal:
    data = json.loads((RESULTS / "proposal-8b.json").read_text())
    return ConfigProposal.model_validate(data["proposals"][0])


def ollama_proposal() -> ConfigProposal:
    change = ConfigChange(key="OLLAMA_FLASH_ATTENTION", current=None, proposed="1", kind="env",
                          reason="flash attention: smaller compute buffers, and needed for a quantized KV cache")
    return ConfigProposal(runtime="ollama", changes=[change], notes=["restart the service"], systemd_unit="ollama")


@pytest.mark.parametrize("width", WIDTHS)
def test_proposal_tables_end_with_the_ready_command(width):
    proposal = llamacpp_proposal()
    from velollm_core.tune.render import command_line, render_shell

    text = rendered(width, lambda console: print_proposals([proposal, ollama_proposal()], console))
    check_readable(text, width, unbroken=(command_line(proposal),))
    for change in proposal.changes:
        assert change.key in text

    assert render_shell([proposal]).endswith(command_line(proposal) + "\n")  # what the table ends with too
    assert command_line(ollama_proposal()) is None  # configured by environment: no command line
    if width == 140:
        assert "why" in header_line(text) and "proposed" in header_line(text)


def test_proposal_output_ends_with_the_command_on_one_unbroken_line():
    from velollm_core.tune.render import command_line

    proposal = llamacpp_proposal()
    out = io.StringIO()
    print_proposals([proposal], Console(width=80, file=out, color_system=None))
    # Soft-wrapped, not broken: copied from the terminal, it runs as it is.
    assert out.getvalue().rstrip("\n").splitlines()[-1] == command_line(proposal)


def test_estimate_table():
    """``velollm estimate`` (the llamacpp plugin's command), run through the CLI at each width."""
    from click.testing import CliRunner

    from velollm_core.api import UserInputError
    from velollm_core.cli import cli
    from velollm_core.contract.modelfiles import resolve_model_path

    try:
        path = resolve_model_path("gemma3-270m")
    except UserInputError as exc:
        missing("the bundled Gemma 3 270M", str(exc))
    for width in WIDTHS:
        outcome = CliRunner(env={"COLUMNS": str(width)}).invoke(
            cli, ["estimate", str(path), "--kv-type", "q8_0", "--parallel", "2", "--n-gpu-layers", "10"])
        assert outcome.exit_code == 0, outcome.output
        check_readable(outcome.output, width)
        assert "KV cache" in outcome.output and "total" in outcome.output


# --- speculative ----------------------------------------------------------------------------------


def speculative_report() -> dict:
    def row(vanilla, spec, ttft):
        return {"vanilla_decode_tokens_per_s": vanilla, "speculative_decode_tokens_per_s": spec,
                "speedup": spec / vanilla, "vanilla_ttft_ms": ttft, "speculative_ttft_ms": ttft * 1.04,
                "drafted": 400, "accepted": 300, "acceptance_rate": 0.75, "n": 5}

    return {
        "target": "/models/llama-3.1-8b-instruct-f16.gguf", "draft": "/models/llama-3.2-1b-instruct-q4_k_m.gguf",
        "per_suite": {"short_completion": row(41.2, 77.9, 250.4), "medium_completion": row(40.8, 70.1, 251.0),
                      "code_generation": row(40.1, 95.3, 1250.0)},
        "speedup": 1.89, "acceptance_rate": 0.75, "outputs_identical": True, "differences": [],
        "advisor": {"draft_cost_ratio": 0.12, "per_token_acceptance": 0.81,
                    "predicted_speedup_measured_config": 1.95, "measured_speedup": 1.89,
                    "curve": [{"draft_max": k, "predicted_speedup": 1.5 + k / 40} for k in (2, 4, 8, 16)],
                    "recommendation": "use draft max 8: 1.70x predicted"},
    }


@pytest.mark.parametrize("width", WIDTHS)
def test_speculative_table(width):
    text = rendered(width, lambda console: render_report(speculative_report(), console))
    check_readable(text, width)
    assert "1.89x" in text and "medium_completion" in text
    assert ("TTFT ms (v / s)" in header_line(text)) is (width == 140)


# --- the layout chooser ---------------------------------------------------------------------------


def test_fitting_takes_the_first_layout_that_fits():
    def table(*cells: str, prose: bool = False) -> Table:
        t = Table()
        for number, cell in enumerate(cells):
            t.add_column(f"c{number}", no_wrap=not prose, min_width=10 if prose else None)
        t.add_row(*cells)
        return t

    console = Console(width=40, file=io.StringIO())
    wide, narrow = (lambda: table("x" * 30, "y" * 30)), (lambda: table("x" * 10))
    assert len(tables.fitting(console, wide, narrow).columns) == 1
    assert len(tables.fitting(Console(width=100, file=io.StringIO()), wide, narrow).columns) == 2
    # A prose column counts at its min_width: long text does not push the layout out.
    assert len(tables.fitting(console, lambda: table("a" * 5, "word " * 40, prose=True), narrow).columns) == 2
    last = tables.fitting(console, wide, wide)
    assert last.columns[0].no_wrap  # the last layout keeps its numbers whole
