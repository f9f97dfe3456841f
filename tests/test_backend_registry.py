"""Backend objects, the registry and the bridge; the isolation policy; VELOLLM_DISABLE; unknown hooks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from velollm_testkit.plugin import BackendPlugin, FakeBackend

from velollm_core.bench.plan import BenchmarkPlan
from velollm_core.bench.runner import BenchmarkRunner
from velollm_core.bench.suites import get_suites
from velollm_core.contract import backends, plugins
from velollm_core.contract.errors import UserInputError
from velollm_core.hookspecs import hookimpl


def test_fake_backend_runs_through_the_engine_with_validated_options(fake_backend, tmp_path):
    plan = BenchmarkPlan(backend="fake", model="m", suites=get_suites(["short_completion"]), iterations=2,
                         warmup=0, options={"tokens_per_s": 50})
    result = BenchmarkRunner(plan, output=tmp_path / "r.json").run()
    assert [run.decode_tokens_per_s for run in result.runs] == [50.0, 50.0]
    assert result.environment.backend.name == "fake" and len(fake_backend.requests) == 2


def test_unknown_and_mistyped_options_are_one_user_error(fake_backend):
    with pytest.raises(UserInputError, match=r"unknown fake option 'speed'; known: .*tokens_per_s"):
        backends.validate_options(fake_backend, {"speed": 1})
    with pytest.raises(UserInputError, match=r"--option tokens_per_s=-1"):
        backends.validate_options(fake_backend, {"tokens_per_s": -1})
    with pytest.raises(UserInputError, match="must be a positive number of seconds"):
        backends.validate_options(fake_backend, {"timeout_s": "soon"})
    settings = backends.validate_options(fake_backend, {"request.top_p": 0.5, "tokens_per_s": 3})
    assert settings.request == {"top_p": 0.5} and settings.tokens_per_s == 3


def test_a_second_backend_of_the_same_name_is_a_load_error(register_plugin):
    first, second = FakeBackend(), FakeBackend()
    register_plugin(BackendPlugin(first), name="fake-one")
    register_plugin(BackendPlugin(second), name="fake-two")
    before = len(plugins.load_errors)
    assert backends.get("fake") is first  # the first registration is kept
    errors = plugins.load_errors[before:]
    assert [e.name for e in errors] == ["fake-two"]
    assert "backend 'fake' is already registered by plugin fake-one" in errors[0].error
    del plugins.load_errors[before:]


def test_a_raising_plugin_costs_only_itself(register_plugin, capsys):
    class Raising:
        @hookimpl
        def local_models(self):
            raise ValueError("store unreadable")

    class Listing:
        @hookimpl
        def local_models(self):
            return [{"name": "a", "path": "/a.gguf", "size_bytes": 1}]

    register_plugin(Listing(), name="listing")
    register_plugin(Raising(), name="raising")
    answers = plugins.call_each("local_models")
    assert [{"name": "a", "path": "/a.gguf", "size_bytes": 1}] in answers
    assert "warning: plugin raising failed in local_models: ValueError: store unreadable" in capsys.readouterr().err


def _velollm(*args, env):
    return subprocess.run([sys.executable, "-m", "velollm_core", *args], check=False, capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=120)


def test_velollm_disable_blocks_plugins_and_built_ins():
    proc = _velollm("plugins", "--json", env={"VELOLLM_DISABLE": "openai,velollm_core.telemetry.rapl"})
    names = {p["name"] for p in json.loads(proc.stdout)["plugins"]}
    assert "openai" not in names and "velollm_core.telemetry.rapl" not in names and "llamacpp" in names
    bench = _velollm("benchmark", "--backend", "openai", "--model", "m", env={"VELOLLM_DISABLE": "openai"})
    assert bench.returncode == 2 and "unknown backend 'openai'" in bench.stderr


def test_a_misspelt_hook_is_a_load_error_and_the_plugin_is_not_registered():
    class Misspelt:
        @hookimpl
        def detect_gpus(self):
            return []

    record = plugins.PluginRecord("misspelt", "velollm-misspelt", "0", builtin=False)
    with pytest.raises(ValueError, match="implements detect_gpus, which is no VeloLLM hook"):
        plugins._register(Misspelt(), record)
    assert plugins.pm.get_plugin("misspelt") is None and "misspelt" not in plugins.records
