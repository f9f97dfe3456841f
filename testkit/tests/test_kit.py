"""The test kit as a distribution: its pytest plugin loads through the entry point, its llama-server
harness asks the llamacpp plugin's command in-process, a missing component skips (or fails in CI)."""

from __future__ import annotations

import os
from importlib.metadata import entry_points

import pytest
from velollm_testkit import llama_server


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


def test_a_missing_component_skips_the_test_or_fails_it_where_ci_requires_it(monkeypatch):
    monkeypatch.delenv(llama_server.REQUIRE_LLAMACPP_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="no llama-server"):
        llama_server.missing("no llama-server")
    monkeypatch.setenv(llama_server.REQUIRE_LLAMACPP_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="no llama-server"):
        llama_server.missing("no llama-server")
