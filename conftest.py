"""Fixtures shared by the core tests (tests/) and every plugin's tests (plugins/*/tests)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent

# Tests never write the user's results history (every finished benchmark is recorded); a test of the
# history points VELOLLM_HISTORY_DB at its own tmp_path.
os.environ["VELOLLM_HISTORY_DB"] = "off"

# The test kit's fixtures (register_plugin, fake_backend, llama_server_bin, gemma, llama_server_url,
# gguf_seeds, fuzz_scratch, mock_llm_server) come from the velollm-testkit distribution, which pytest
# loads through its pytest11 entry point (testkit/velollm_testkit/plugin.py). Naming it here as well
# would register it twice, so only where entry-point plugins are switched off.
if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
    pytest_plugins = ("velollm_testkit.plugin",)


TOOL_OUTPUTS = REPO_ROOT / "tests" / "data" / "tool-outputs"


@pytest.fixture
def tool_outputs() -> Path:
    """The real captured outputs of GPU/CPU tools (tests/data/tool-outputs; its README names each source)."""
    return TOOL_OUTPUTS


_FAKE_TOOL = """#!{python}
import sys, time
args = " ".join(sys.argv[1:])
with open({log!r}, "a") as log:
    log.write(args + "\\n")
for needle, stdout, exit_code, stderr, sleep_s in {rules!r}:
    if needle is None or needle in args:
        time.sleep(sleep_s)
        sys.stdout.write(stdout)
        sys.stderr.write(stderr)
        sys.exit(exit_code)
"""


@pytest.fixture
def fake_tools(tmp_path, monkeypatch):
    """PATH holds only fake executables; ``add(name, stdout, ...)`` creates one, returns its call log.

    ``rules`` are (substring of the arguments, stdout, exit code, stderr, sleep seconds), first match
    wins, before the default answer. Real tools of the machine are hidden, so tests stay deterministic.
    """
    import sys

    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))

    def add(name, stdout="", exit_code=0, stderr="", sleep_s=0.0, rules=()):
        log = bin_dir / f"{name}.calls"
        log.touch()
        all_rules = [tuple(rule) for rule in rules] + [(None, stdout, exit_code, stderr, sleep_s)]
        script = bin_dir / name
        script.write_text(_FAKE_TOOL.format(python=sys.executable, log=str(log), rules=all_rules))
        script.chmod(0o755)
        return log

    return add
