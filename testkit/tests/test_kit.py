"""The test kit as a distribution: its pytest plugin loads through the entry point, its llama-server
harness asks the llamacpp plugin's command in-process, a missing component skips (or fails in CI)."""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from velollm_testkit import llama_server, real


def test_the_fixtures_load_through_the_pytest11_entry_point(request):
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        pytest.skip("entry-point plugins are switched off (the root conftest.py names the kit instead)")
    (entry,) = [entry for entry in entry_points(group="pytest11") if entry.value == "velollm_testkit.plugin"]
    assert request.config.pluginmanager.get_plugin(entry.name).__name__ == "velollm_testkit.plugin"


def test_where_asks_the_llamacpp_plugins_command_in_process():
    found = llama_server.llamacpp_where()
    assert "llama-server" in found["programs"] and "cache" in found  # a path, or None where not built


def test_where_without_the_llamacpp_plugin_says_so(monkeypatch):
    monkeypatch.setattr("velollm_core.contract.plugins.call_each", lambda hook_name, **kwargs: [])
    assert "velollm-llamacpp" in llama_server.llamacpp_where()["error"]


@pytest.mark.parametrize("switch", [real.REQUIRE_REAL_ENV, real.REQUIRE_LLAMACPP_ENV])
def test_a_missing_component_skips_the_test_or_fails_it_where_ci_requires_it(monkeypatch, switch):
    for name in (real.REQUIRE_REAL_ENV, real.REQUIRE_LLAMACPP_ENV):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(pytest.skip.Exception, match="llama-server is not available: not built"):
        real.missing("llama-server", "not built")
    monkeypatch.setenv(switch, "1")
    with pytest.raises(pytest.fail.Exception, match=f"not built .{real.REQUIRE_REAL_ENV}=1 requires it"):
        real.missing("llama-server", "not built")


def test_no_test_skips_a_real_component_past_the_kit():
    """Every skip for a missing model, build, browser or data file goes through ``real.missing``;
    ``pytest.skip`` stays only in tests of hardware a CPU machine cannot have (GPU, RAPL, Ollama)."""
    hardware_tests = {"test_gpu_real.py", "test_nvidia_telemetry.py", "test_telemetry_rapl.py", "test_live.py",
                      "test_kit.py"}
    repo = Path(__file__).resolve().parents[2]
    test_files = [*repo.glob("tests/test_*.py"), *repo.glob("plugins/*/tests/test_*.py"),
                  *repo.glob("libs/*/tests/test_*.py"), repo / "conftest.py"]
    offenders = [f"{path.relative_to(repo)}:{number}" for path in test_files if path.name not in hardware_tests
                 for number, line in enumerate(path.read_text().splitlines(), 1) if "pytest.skip(" in line]
    assert offenders == []
