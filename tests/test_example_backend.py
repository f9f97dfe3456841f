"""The documented example backend (docs/examples/velollm-echo), installed from its own directory with
pip, listed by ``velollm plugins`` and benchmarked through the CLI with its typed options and its own flag."""

from __future__ import annotations

import json

import pytest

from tests.test_plugins import REPO, pip_install_target, velollm


@pytest.fixture(scope="module")
def echo_site(tmp_path_factory):
    """velollm-echo pip-installed into a folder put on PYTHONPATH; removed with the folder after."""
    target = tmp_path_factory.mktemp("echo-site")
    pip_install_target(REPO / "docs" / "examples" / "velollm-echo", target)
    return {"PYTHONPATH": str(target)}


def test_echo_plugin_is_listed_with_its_backend(echo_site):
    proc = velollm("plugins", "--json", env=echo_site)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    echo = next(p for p in data["plugins"] if p["name"] == "echo")
    assert echo["distribution"] == "velollm-echo" and echo["backends"] == ["echo"]
    assert "register_backends" in echo["hooks"] and "run_benchmark" in echo["hooks"]
    assert not [e for e in data["errors"] if e["name"] == "echo"]


def test_echo_benchmark_with_typed_options_and_its_own_flag(echo_site, tmp_path):
    out = tmp_path / "echo.json"
    proc = velollm("benchmark", "--backend", "echo", "--model", "x", "--iterations", "2", "--warmup", "0", "--suite", "short_completion",
                   "--max-tokens", "8", "--option", "token_delay_ms=1", "--echo-prefix", "hi there",
                   "--output", str(out), "--json", env=echo_site)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "complete" and len(result["runs"]) == 2
    run = result["runs"][0]
    assert run["completion_tokens"] == 8 and run["text"].startswith("hi there ")
    assert 0 < run["decode_tokens_per_s"] <= 1000  # one token per millisecond at most
    assert result["settings"]["options"] == {"token_delay_ms": 1, "echo_prefix": "hi there"}
    assert result["environment"]["backend"]["server_flags"] == ["token_delay_ms=1"]
    assert json.loads(out.read_text())["runs"] == result["runs"]


def test_echo_options_are_validated(echo_site):
    unknown = velollm("benchmark", "--backend", "echo", "--model", "x", "--option", "delay=1", env=echo_site)
    assert unknown.returncode == 2 and "unknown echo option 'delay'; known:" in unknown.stderr
    assert "token_delay_ms" in unknown.stderr and "Traceback" not in unknown.stderr
    negative = velollm("benchmark", "--backend", "echo", "--model", "x", "--option", "token_delay_ms=-1",
                       env=echo_site)
    assert negative.returncode == 2 and "token_delay_ms=-1" in negative.stderr
    too_long = velollm("benchmark", "--backend", "echo", "--model", "x", "--option", "token_delay_ms=100000",
                       env=echo_site)
    assert too_long.returncode == 2 and "more than timeout_s" in too_long.stderr
    foreign = velollm("benchmark", "--backend", "llamacpp", "--model", "x", "--echo-prefix", "a", env=echo_site)
    assert foreign.returncode == 2 and "--echo-prefix is an option of the echo backend" in foreign.stderr


def test_echo_text_option_given_digits_stays_text(echo_site):
    proc = velollm("benchmark", "--backend", "echo", "--model", "x", "--iterations", "1", "--warmup", "0",
                   "--suite", "short_completion", "--max-tokens", "4", "--option", "token_delay_ms=1",
                   "--option", "echo_prefix=42", "--json", env=echo_site)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["runs"][0]["text"].startswith("42 ")
    assert result["settings"]["options"] == {"token_delay_ms": 1, "echo_prefix": "42"}
