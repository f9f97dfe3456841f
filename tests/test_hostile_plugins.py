"""Hostile plugins: one that hangs, exits or prints while it is imported, or claims a shipped backend's
name, is a named load error; every command still works and ``detect --json`` stays one JSON document."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

IMPOSTOR = """
from velollm_core.api import BackendBase, hookimpl


class Impostor(BackendBase):
    name = "openai"

    def generate(self, request, context):
        raise RuntimeError("the impostor ran")


@hookimpl
def register_backends(register):
    register(Impostor())
"""
BODIES = {
    # Each import leaves a mark beside the module (a later --help must not import it again).
    "hang": "import pathlib, time\nwith pathlib.Path(__file__).with_suffix('.imported').open('a') as mark:\n"
            "    mark.write('x')\ntime.sleep(3600)\n",
    "exits": "import sys\nsys.exit(0)\n",
    "prints": "print('hello from a plugin')\n",
    "impostor": IMPOSTOR,
    # Asked before every other plugin (pluggy iterates trylast first): order alone cannot keep the name.
    "pushy": IMPOSTOR.replace("@hookimpl\n", "@hookimpl(trylast=True)\n"),
}


def install(site: Path, name: str, body: str) -> None:
    """A distribution ``velollm-NAME`` with one plugin entry point ``NAME``, as pip would lay it out."""
    module = f"velollm_{name}"
    (site / f"{module}.py").write_text(textwrap.dedent(body))
    info = site / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: velollm-{name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[velollm]\n{name} = {module}\n")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile-site")
    for name, body in BODIES.items():
        install(folder, name, body)
    return folder


def velollm(site: Path, *args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    # A cache of its own: the plugin index is one file per interpreter, which other runs would replace.
    env = {**os.environ, "PYTHONPATH": str(site), "VELOLLM_PLUGIN_IMPORT_TIMEOUT_S": "2",
           "VELOLLM_HISTORY_DB": "off", "VELOLLM_CACHE_DIR": str(site / "cache")}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "velollm_core", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)
    return proc, time.monotonic() - started


def test_plugins_lists_each_hostile_plugin_as_a_load_error(site):
    proc, seconds = velollm(site, "plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    assert seconds < 30
    data = json.loads(proc.stdout)
    errors = {error["name"]: error for error in data["errors"]}
    assert "did not finish importing within 2 s" in errors["hang"]["error"]
    assert "sys.exit(0)" in errors["exits"]["error"]
    for impostor in ("impostor", "pushy"):
        assert "backend 'openai'" in errors[impostor]["error"], errors
        assert errors[impostor]["distribution"] == f"velollm-{impostor}"
    assert "openai" not in errors  # the shipped plugin keeps its name
    assert "hello from a plugin" in proc.stderr


def test_help_and_the_plugins_table_still_answer(site):
    proc, seconds = velollm(site, "--help")
    assert proc.returncode == 0 and "benchmark" in proc.stdout and seconds < 30, proc.stderr
    proc, _ = velollm(site, "plugins")
    assert proc.returncode == 0 and "failed to load" in proc.stdout and "hang" in proc.stdout, proc.stderr
    # The listing is remembered with the hanging plugin's file: --help imports it no more.
    marks = (site / "velollm_hang.imported").read_text()
    proc, _ = velollm(site, "--help")
    assert proc.returncode == 0 and (site / "velollm_hang.imported").read_text() == marks


def test_detect_json_is_one_document_despite_them(site):
    proc, _ = velollm(site, "detect", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "memory" in json.loads(proc.stdout)


def test_the_benchmark_of_openai_runs_the_shipped_backend(site):
    proc, _ = velollm(site, "benchmark", "--backend", "openai", "--host", "http://127.0.0.1:9", "--model", "m",
                      "--suite", "short_completion", "--warmup", "0", "--iterations", "1")
    assert "impostor" not in proc.stdout + proc.stderr.replace("velollm-impostor", "").replace("plugin impostor", "")
    assert "not reachable" in proc.stderr, proc.stderr
