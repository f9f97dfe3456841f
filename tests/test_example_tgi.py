"""The documented non-OpenAI example backend (docs/examples/velollm-tgi), as a third party ships it:
copied out of the repository, pip-installed from the copy, listed by ``velollm plugins`` and
benchmarked through the CLI against the test kit's mock server speaking TGI's native API
(``/info``, ``/tokenize``, ``/generate_stream``), sequentially, at load levels, and with its server gone.

Nothing here is skipped: a missing piece (pip, the test kit) fails the test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from velollm_testkit.mock import mock_llm

from tests.test_plugins import REPO, pip_install_target, velollm

EXAMPLE = REPO / "docs" / "examples" / "velollm-tgi"
# The mock's "model" ends every answer after ANSWER_WORDS words with its end-of-sequence token, which
# TGI counts as generated; we ask for more, as a benchmark with a fixed output length does: TGI cannot
# ignore the end of sequence, so the answers are short.
ANSWER_WORDS = 6
ANSWER_TOKENS = ANSWER_WORDS + 1
ASKED_TOKENS = 12


@pytest.fixture(scope="module")
def tgi_site(tmp_path_factory) -> dict[str, str]:
    """velollm-tgi copied to a temporary folder (as a user's checkout of it), pip-installed from there
    into another one put on PYTHONPATH: nothing is written into docs/."""
    copy = tmp_path_factory.mktemp("tgi-src") / "velollm-tgi"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp_path_factory.mktemp("tgi-site")
    pip_install_target(copy, target)
    return {"PYTHONPATH": str(target)}


@pytest.fixture(scope="module")
def tgi_server():
    with mock_llm(ttft_ms=5, itl_ms=2, output_tokens=ANSWER_WORDS) as mock:
        yield mock


def benchmark(env: dict[str, str], host: str, output, *args: str) -> subprocess.CompletedProcess:
    return velollm("benchmark", "--backend", "tgi", "--host", host, "--model", "velollm-mock",
                   "--suite", "short_completion", "--max-tokens", str(ASKED_TOKENS), "--warmup", "0",
                   "--output", str(output), *args, env=env)


def test_tgi_plugin_is_listed_with_its_backend(tgi_site):
    proc = velollm("plugins", "--json", env=tgi_site)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    tgi = next(p for p in data["plugins"] if p["name"] == "tgi")
    assert tgi["distribution"] == "velollm-tgi" and tgi["backends"] == ["tgi"]
    assert "register_backends" in tgi["hooks"]
    assert not [e for e in data["errors"] if e["name"] == "tgi"]
    # The same in process, as a plugin's own test checks it: the entry point is installed.
    check = ("from velollm_core.api import installed_plugins; "
             "print([(p.name, p.value, p.distribution) for p in installed_plugins() if p.name == 'tgi'])")
    listed = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True,
                            env={**os.environ, **tgi_site})
    assert listed.stdout.strip() == "[('tgi', 'velollm_tgi.plugin', 'velollm-tgi')]"


def test_sequential_benchmark_flags_short_answers(tgi_site, tgi_server, tmp_path):
    out = tmp_path / "tgi.json"
    proc = benchmark(tgi_site, tgi_server.url, out, "--iterations", "2", "--option", "top_k=40")
    assert proc.returncode == 0, proc.stderr
    assert "tgi cannot generate past the end-of-sequence token" in proc.stderr
    result = json.loads(out.read_text())
    assert result["settings"]["options"] == {"top_k": 40}
    assert result["status"] == "complete" and len(result["runs"]) == 2
    for run in result["runs"]:
        assert run["completion_tokens"] == ANSWER_TOKENS and run["short_output"] is True
        assert run["prompt_tokens"] and run["ttft_ms"] > 0 and run["decode_tokens_per_s"] > 0
        assert run["stop_reason"] == "eos_token" and run["prompt_tokens_per_s"] is None
    assert result["summary"]["short_completion"]["decode_tokens_per_s"]["n"] == 2
    backend = result["environment"]["backend"]
    assert backend["name"] == "tgi" and backend["model"]["name"] == "velollm-mock"


def test_concurrency_levels_stream_through_the_core(tgi_site, tgi_server, tmp_path):
    out = tmp_path / "levels.json"
    proc = benchmark(tgi_site, tgi_server.url, out, "--concurrency", "1,4", "--requests", "8")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["status"] == "complete"
    levels = {level["key"]: level for level in result["levels"]}
    assert {"seq", "c4"} <= set(levels), list(levels)  # concurrency 1 is the sequential level
    assert levels["c4"]["max_concurrency"] == 4
    runs = [run for run in result["runs"] if run["level"] == "c4"]
    assert len(runs) == 8 and not [run for run in runs if run["failed"]]
    assert all(run["short_output"] and run["completion_tokens"] == ANSWER_TOKENS for run in runs)


def test_workload_prompts_are_sized_by_the_tgi_tokenizer(tgi_site, tgi_server, tmp_path):
    out = tmp_path / "pp.json"
    proc = velollm("benchmark", "--backend", "tgi", "--host", tgi_server.url, "--model", "velollm-mock",
                   "--workload", "pp64/tg4", "--iterations", "2", "--warmup", "0", "--output", str(out),
                   env=tgi_site)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["settings"]["prompt_sizing"]["method"] == "tokenizer"
    assert [run["prompt_tokens"] for run in result["runs"]] == [64, 64]


def test_unknown_model_is_a_user_error(tgi_site, tgi_server, tmp_path):
    proc = velollm("benchmark", "--backend", "tgi", "--host", tgi_server.url, "--model", "llama3.2:1b",
                   "--suite", "short_completion", "--iterations", "1", env=tgi_site)
    assert proc.returncode == 2 and "serves model 'velollm-mock', not 'llama3.2:1b'" in proc.stderr
    no_host = velollm("benchmark", "--backend", "tgi", "--model", "velollm-mock", env=tgi_site)
    assert no_host.returncode == 2 and "pass --host URL" in no_host.stderr
    refused = velollm("benchmark", "--backend", "tgi", "--host", tgi_server.url, "--model", "velollm-mock",
                      "--option", "top_k=0", env=tgi_site)
    assert refused.returncode == 2 and "top_k" in refused.stderr and "Traceback" not in refused.stderr
    assert "Traceback" not in proc.stderr


def test_server_gone_mid_run_fails_with_a_valid_result_file(tgi_site, tmp_path):
    out = tmp_path / "gone.json"
    with mock_llm(ttft_ms=5, itl_ms=20, output_tokens=ASKED_TOKENS) as mock:
        cli = subprocess.Popen(
            [sys.executable, "-m", "velollm_core", "benchmark", "--backend", "tgi", "--host", mock.url,
             "--model", "velollm-mock", "--suite", "short_completion", "--max-tokens", str(ASKED_TOKENS),
             "--warmup", "0", "--iterations", "200", "--output", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **tgi_site})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _runs_saved(out):
            time.sleep(0.05)
        assert _runs_saved(out), "no run was saved within 60 s"
    # The mock is stopped here, mid-benchmark.
    _, stderr = cli.communicate(timeout=120)
    assert cli.returncode == 1, stderr
    assert "Text Generation Inference at " in stderr and "Traceback" not in stderr
    result = json.loads(out.read_text())
    assert result["status"] == "failed" and "Text Generation Inference" in result["error"]
    assert 0 < len(result["runs"]) < 200


def _runs_saved(path) -> bool:
    try:
        return bool(json.loads(path.read_text())["runs"])
    except (OSError, ValueError, KeyError):
        return False


def test_the_examples_own_tests_pass_against_the_installed_copy(tgi_site, tmp_path):
    """Its tests/ (the event reader, the backend in process against the kit's mock and its hostile
    server), run as a third party runs them: pytest in the copy, the distribution installed, the test
    kit loaded by itself."""
    copy = tmp_path / "velollm-tgi"
    shutil.copytree(EXAMPLE / "tests", copy / "tests")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=copy,
                          capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, **tgi_site})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "14 passed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout[-500:]


def _table_rows(text: str) -> dict[str, tuple[str, str]]:
    """The rows of a ``velollm plugins`` table: name -> (distribution, hooks), wrapped cells joined."""
    rows: dict[str, list[str]] = {}
    name = None
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if "│" not in line or len(cells) != 4:
            continue
        if cells[0]:
            name = cells[0]
            rows[name] = [cells[1], cells[3]]
        elif name is not None:
            rows[name][1] = f"{rows[name][1]} {cells[3]}".strip()
    return {key: (dist, " ".join(hooks.split())) for key, (dist, hooks) in rows.items()}


def test_the_plugins_sample_in_plugins_md_is_what_the_command_prints(tgi_site):
    """PLUGINS.md shows `velollm plugins` with this example installed: the same rows, the same hooks."""
    doc = (REPO / "docs" / "PLUGINS.md").read_text()
    sample = doc.split("   ```text\n", 1)[1].split("   ```", 1)[0]
    printed = velollm("plugins", env={**tgi_site, "COLUMNS": "110"})
    assert printed.returncode == 0, printed.stderr
    # Plugins installed here from elsewhere (a user's own) are not this checkout's to document.
    ours = {"velollm", "velollm-tgi", *(path.name for path in (REPO / "plugins").glob("velollm-*"))}
    rows = {name: row for name, row in _table_rows(printed.stdout).items() if row[0] in ours}
    assert _table_rows(sample) == rows, (
        "PLUGINS.md's sample is stale: paste what `COLUMNS=110 velollm plugins` prints with velollm-tgi "
        "installed")
    assert "tgi" in _table_rows(sample)
