"""Fault suite: the standard streams VeloLLM is started with are not to be trusted either.

A closed stderr (``2>&-``) or stdout leaves Python's stream None; a stdout in latin-1 cannot hold the
characters of a model name or a report. The run must work (or fail with its own exit code), the
result file must say what happened to the benchmark, never an AttributeError about a stream.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

VELOLLM = [sys.executable, "-m", "velollm_core"]
POSIX = pytest.mark.skipif(os.name != "posix", reason="POSIX shell redirections")
# Characters latin-1 cannot hold: CJK, an em dash, a check mark.
FOREIGN_MODEL = "模型—✓-1b"


def _env() -> dict[str, str]:
    return {**os.environ, "VELOLLM_HISTORY_DB": "off"}


def shell(redirect: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``velollm ARGS`` started by sh with ``redirect`` applied (``2>&-`` closes stderr)."""
    return subprocess.run(["sh", "-c", f'exec "$@" {redirect}', "sh", *VELOLLM, *args], check=False,
                          capture_output=True, text=True, timeout=120, env=env or _env())


def benchmark_args(mock, out: Path) -> tuple[str, ...]:
    return ("benchmark", "--backend", "openai", "--host", mock.url, "--model", "velollm-mock", "--iterations",
            "2", "--warmup", "0", "--suite", "short_completion", "--output", str(out))


@POSIX
def test_a_benchmark_with_stderr_closed_runs_and_its_file_says_complete(mock_llm_server, tmp_path):
    out = tmp_path / "r.json"
    proc = shell("2>&-", *benchmark_args(mock_llm_server, out))
    assert proc.returncode == 0, proc.stdout
    document = json.loads(out.read_text())
    assert document["status"] == "complete" and document.get("error") is None, document.get("error")
    assert len(document["runs"]) == 2
    assert "AttributeError" not in out.read_text()


@POSIX
def test_a_failing_benchmark_with_stderr_closed_keeps_its_exit_code(tmp_path):
    out = tmp_path / "r.json"
    proc = shell("2>&-", "benchmark", "--backend", "openai", "--host", "http://127.0.0.1:9", "--model", "m",
                 "--iterations", "1", "--warmup", "0", "--output", str(out))
    assert proc.returncode == 1, proc.stdout
    assert "AttributeError" not in (out.read_text() if out.exists() else "")


@POSIX
def test_detect_json_with_stdout_closed_and_stderr_closed_exits_0(tmp_path):
    out = tmp_path / "hw.json"
    proc = shell(">&- 2>&-", "detect", "--json", "--output", str(out))
    assert proc.returncode == 0
    assert "cpu" in json.loads(out.read_text())


@pytest.fixture(scope="module")
def foreign_result(mock_llm_server, tmp_path_factory) -> Path:
    """A real result file whose model name latin-1 cannot hold."""
    out = tmp_path_factory.mktemp("latin1") / "r.json"
    proc = subprocess.run([*VELOLLM, *benchmark_args(mock_llm_server, out)], check=False, capture_output=True,
                          text=True, timeout=120, env=_env())
    assert proc.returncode == 0, proc.stderr
    document = json.loads(out.read_text())
    document["settings"]["model"] = FOREIGN_MODEL
    out.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return out


@pytest.mark.parametrize("fmt", ["md", "csv"])
def test_a_report_on_a_latin1_stdout_replaces_what_it_cannot_hold(foreign_result, fmt):
    proc = subprocess.run([*VELOLLM, "report", str(foreign_result), "--format", fmt], check=False,
                          capture_output=True, timeout=120, env={**_env(), "PYTHONIOENCODING": "latin-1"})
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert b"Traceback" not in proc.stderr
    text = proc.stdout.decode("latin-1")
    assert "short_completion" in text
    assert "??" in text and "-1b" in text  # the model's name, its foreign characters replaced
