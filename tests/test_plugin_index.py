"""The plugin index: what it saves at start-up, and that it never serves stale or broken answers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import pytest

from velollm_core.cli import VeloGroup
from velollm_core.contract import cachedir, plugin_index
from velollm_core.contract.plugins import load_errors, pm
from velollm_core.hookspecs import hookimpl

REPO = Path(__file__).resolve().parents[1]


def velollm(*args, cache: Path, env=None, importtime=False) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "VELOLLM_CACHE_DIR": str(cache), **(env or {})}
    python = [sys.executable, *(["-X", "importtime"] if importtime else [])]
    return subprocess.run([*python, "-m", "velollm_core", *args], check=False, capture_output=True, text=True,
                          env=full_env, timeout=120, cwd=tempfile.gettempdir())


def imported(proc: subprocess.CompletedProcess) -> set[str]:
    """Module names a ``-X importtime`` run imported."""
    return {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


# --- what the index saves -------------------------------------------------------------------------


def test_second_detect_json_scans_no_entry_points_and_loads_no_pydantic(cache):
    first = velollm("detect", "--json", cache=cache, importtime=True)
    assert first.returncode == 0, first.stderr
    assert "importlib.metadata" in imported(first)  # no index yet: one scan, saved
    second = velollm("detect", "--json", cache=cache, importtime=True)
    assert second.returncode == 0, second.stderr
    modules = imported(second)
    assert "importlib.metadata" not in modules
    if not json.loads(second.stdout)["gpus"]:  # a GPU record is validated by the models
        assert not {name for name in modules if name.split(".")[0] in ("pydantic", "rich", "httpx")}


def modules_after(*args, cache: Path) -> tuple[subprocess.CompletedProcess, set[str]]:
    """A CLI run and every module it imported, worker threads' too (``-X importtime`` sees only the main
    thread's, and plugins are imported in a worker thread)."""
    code = ("import atexit, sys; atexit.register(lambda: sys.stderr.write('\\nMODULES ' + ' '.join(sys.modules)));"
            "from velollm_core.cli import main; sys.argv = ['velollm', *sys.argv[1:]]; main()")
    proc = subprocess.run([sys.executable, "-c", code, *args], check=False, capture_output=True, text=True,
                          env={**os.environ, "VELOLLM_CACHE_DIR": str(cache)}, timeout=120, cwd=tempfile.gettempdir())
    return proc, set(proc.stderr.rsplit("MODULES ", 1)[-1].split())


def test_detect_imports_only_the_plugins_implementing_detect_gpu(cache):
    first, modules = modules_after("detect", "--json", cache=cache)  # no index yet: every plugin loads
    assert first.returncode == 0, first.stderr
    backend_plugins = {"velollm_llamacpp", "velollm_ollama", "velollm_openai"}
    assert backend_plugins <= modules
    second, modules = modules_after("detect", "--json", cache=cache)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) | {"memory": None} == json.loads(first.stdout) | {"memory": None}
    assert not {name for name in modules if name.startswith((*backend_plugins, "velollm_core.bench"))}
    assert {"velollm_nvidia", "velollm_amd", "velollm_apple", "velollm_core.hardware.pci_gpus"} <= modules
    # Every plugin still loads for a command that needs them all.
    listed = json.loads(velollm("plugins", "--json", cache=cache).stdout)["plugins"]
    assert {"llamacpp", "ollama", "nvidia"} <= {plugin["name"] for plugin in listed}


def test_the_hook_listing_goes_stale_when_a_plugin_file_changes(fresh_index, tmp_path):
    plugin_index.store_hooks("all", {"nvidia": ["detect_gpu"], "llamacpp": ["register_backends"]}, [])
    plugin_index.forget()
    assert plugin_index.cached_hooks("all") == {"nvidia": ["detect_gpu"], "llamacpp": ["register_backends"]}
    source = tmp_path / "plugin.py"
    source.write_text("# v1\n")
    plugin_index.store_hooks("all", {"nvidia": ["detect_gpu"]}, [str(source)])
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # edited: its hooks may have changed
    assert plugin_index.cached_hooks("all") is None


def test_help_lists_plugin_commands_without_importing_plugins(cache):
    first = velollm("--help", cache=cache)
    second = velollm("--help", cache=cache, importtime=True)
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    assert "llamacpp" in second.stdout and "ollama" in second.stdout
    modules = imported(second)
    assert not {name for name in modules if name.startswith(("velollm_llamacpp", "velollm_ollama", "pluggy"))}


def test_plugin_command_runs_from_an_index_listing(cache):
    velollm("--help", cache=cache)
    proc = velollm("llamacpp", "--help", cache=cache)
    assert proc.returncode == 0, proc.stderr
    assert "install" in proc.stdout


# --- invalidation and damage ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def hello_wheel_tree(tmp_path_factory) -> Path:
    """The example plugin installed by pip into a folder of its own (the package and its dist-info)."""
    target = tmp_path_factory.mktemp("hello-site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(REPO / "docs" / "examples" / "velollm-hello")],
                   check=True, capture_output=True, timeout=300)
    return target


def test_installing_a_plugin_into_a_known_folder_is_seen(cache, tmp_path, hello_wheel_tree):
    site = tmp_path / "site"
    site.mkdir()
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    before = velollm("--help", cache=cache, env=env)
    assert before.returncode == 0 and "hello" not in before.stdout
    for item in hello_wheel_tree.iterdir():  # "pip install" into a folder already on sys.path
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, site / item.name)
    after = velollm("--help", cache=cache, env=env)
    assert "hello" in after.stdout, after.stdout
    plugins = json.loads(velollm("plugins", "--json", cache=cache, env=env).stdout)["plugins"]
    hello = next(p for p in plugins if p["name"] == "hello")
    assert hello["distribution"] == "velollm-hello" and hello["version"] == "0.1.0"


def test_corrupt_index_is_rebuilt(cache):
    assert velollm("--help", cache=cache).returncode == 0
    [index] = (cache / "plugin-index").iterdir()
    valid = json.loads(index.read_text())
    for damage in ("{not json", json.dumps({"format": plugin_index.FORMAT}), json.dumps([1, 2]),
                   json.dumps({**valid, "entry_points": [[1]]}), json.dumps({**valid, "commands": []}),
                   json.dumps({**valid, "commands": {"all": {"files": 3}}}),
                   json.dumps({**valid, "commands": {"all": {"files": {}, "commands": {"x": {"bogus": 1}}}}})):
        index.write_text(damage)
        proc = velollm("plugins", "--json", cache=cache)
        assert proc.returncode == 0, proc.stderr
        assert {"nvidia", "llamacpp"} <= {p["name"] for p in json.loads(proc.stdout)["plugins"]}
        assert "llamacpp" in velollm("--help", cache=cache).stdout
        assert json.loads(index.read_text())["entry_points"]  # rewritten whole


def test_unwritable_cache_never_breaks_the_cli(tmp_path):
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("")
    cache = blocker / "cache"  # mkdir fails: a file is in the way
    for args in (["--help"], ["detect", "--json"], ["plugins", "--json"]):
        proc = velollm(*args, cache=cache)
        assert proc.returncode == 0, (args, proc.stderr)
    assert "llamacpp" in velollm("--help", cache=cache).stdout


def test_plugins_env_restricts_the_listing_too(cache):
    assert "ollama" in velollm("--help", cache=cache).stdout
    only = velollm("--help", cache=cache, env={"VELOLLM_PLUGINS": "llamacpp"})
    assert "llamacpp" in only.stdout and "ollama" not in only.stdout
    assert "ollama" in velollm("--help", cache=cache).stdout


def test_disabled_plugins_leave_the_cached_listing_too(cache):
    """The listing is cached per selection: one made with every plugin never lists a disabled one."""
    assert "llamacpp" in velollm("--help", cache=cache).stdout  # the cache now holds the full listing
    off = velollm("--help", cache=cache, env={"VELOLLM_DISABLE": "llamacpp"})
    assert off.returncode == 0 and "llamacpp" not in off.stdout and "ollama" in off.stdout


# --- the in-process API ---------------------------------------------------------------------------


@pytest.fixture
def fresh_index(monkeypatch, tmp_path):
    monkeypatch.setenv("VELOLLM_CACHE_DIR", str(tmp_path / "cache"))
    plugin_index.forget()
    yield
    plugin_index.forget()


def test_a_changed_plugin_file_invalidates_its_command_listing(fresh_index, tmp_path):
    source = tmp_path / "commands.py"
    source.write_text("# v1\n")
    listing = {"hello": {"help": "Say hello.", "short_help": None, "hidden": False, "deprecated": False}}
    plugin_index.store_commands("all", listing, [str(source)])
    plugin_index.forget()  # as a new process would
    assert plugin_index.cached_commands("all") == listing
    assert plugin_index.cached_commands("only:x") is None
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert plugin_index.cached_commands("all") is None


def test_entry_points_match_importlib_metadata(fresh_index):
    from importlib import metadata

    expected = [(ep.name, ep.value, ep.dist.metadata["Name"], ep.dist.version)
                for ep in metadata.entry_points(group="velollm")]
    assert [tuple(ep) for ep in plugin_index.entry_points()] == expected
    plugin_index.forget()
    assert [tuple(ep) for ep in plugin_index.entry_points()] == expected  # now read from the file


def test_entry_point_load_follows_the_value_syntax():
    assert plugin_index.EntryPoint("x", "os.path", None, None).load() is os.path
    assert plugin_index.EntryPoint("x", "os.path:join", None, None).load() is os.path.join
    assert plugin_index.EntryPoint("x", "os : path.join [extra]", None, None).load() is os.path.join


@pytest.mark.parametrize("env", [
    {},
    {"XDG_CACHE_HOME": "/srv/cache"},
    {"XDG_CACHE_HOME": ""},
    {"XDG_CACHE_HOME": "relative/cache"},
    {"HOME": "/home/someone"},
])
def test_cache_dir_is_platformdirs_answer(monkeypatch, env):
    from platformdirs import user_cache_path

    monkeypatch.delenv("VELOLLM_CACHE_DIR", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cachedir.cache_dir() == user_cache_path("velollm")
    monkeypatch.setenv("VELOLLM_CACHE_DIR", "/x/y")
    assert cachedir.cache_dir() == Path("/x/y")


# --- plugin commands: registered alone, core names reserved ---------------------------------------


class ClashingPlugin:
    @hookimpl
    def register_commands(self, cli):
        @cli.command("extra-one")
        def extra_one():
            """A new command: allowed."""

        @cli.command("detect")
        def fake_detect():
            """Not allowed: detect is a core command."""


class RaisingPlugin:
    @hookimpl
    def register_commands(self, cli):
        raise RuntimeError("register bug")


def test_plugins_add_commands_but_cannot_replace_core_ones(fresh_index):
    from velollm_core import cli as cli_module

    group = VeloGroup(name="velollm", commands={"detect": cli_module.detect_command})
    plugins = {"fake-clash": ClashingPlugin(), "fake-raise": RaisingPlugin()}
    for name, plugin in plugins.items():
        pm.register(plugin, name=name)
    errors_before = len(load_errors)
    try:
        added = group.load_plugin_commands()
    finally:
        for name in plugins:
            pm.unregister(name=name)
        new_errors = load_errors[errors_before:]
        del load_errors[errors_before:]
    assert "extra-one" in added and "llamacpp" in added  # the real plugins still registered theirs
    assert group.commands["detect"] is cli_module.detect_command
    messages = {error.name: error.error for error in new_errors}
    assert "'detect' is a core command" in messages["fake-clash"]
    assert "RuntimeError: register bug" in messages["fake-raise"]
    ctx = click.Context(group)
    assert "extra-one" in group.list_commands(ctx)


def test_no_cache_folder_at_all_means_a_scan(fresh_index, monkeypatch):
    def no_home():
        raise RuntimeError("Could not determine home directory")

    monkeypatch.setattr(plugin_index, "cache_dir", no_home)
    assert "nvidia" in {ep.name for ep in plugin_index.entry_points()}
    assert plugin_index.cached_commands("all") is None
    plugin_index.store_commands("all", {}, [])  # nowhere to write: nothing happens


@pytest.mark.parametrize("columns", ["40", "79", "100", "200", "", "junk"])
def test_help_width_is_clicks_rule_without_shutil(monkeypatch, columns):
    from velollm_core.cli import VeloContext, cli, help_width

    monkeypatch.setenv("COLUMNS", columns)
    assert help_width(None) == max(min(shutil.get_terminal_size().columns, 80) - 2, 50)
    assert cli.get_help(VeloContext(cli)) == cli.get_help(click.Context(cli))


def test_plugins_are_listed_built_ins_first_after_a_load_per_hook(cache):
    code = ("import json; from velollm_core.hardware.report import collect_gpus; collect_gpus([]);"
            "from velollm_core.contract import plugins;"
            "print(json.dumps([p['name'] for p in plugins.describe_plugins()]))")
    env = {**os.environ, "VELOLLM_CACHE_DIR": str(cache)}
    orders = [json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                                        env=env, timeout=120, cwd=tempfile.gettempdir()).stdout)
              for _ in range(2)]  # the first loads everything; the second GPU probes first, the rest after
    assert orders[0] == orders[1]
    builtin = [name.startswith("velollm_core.") for name in orders[1]]
    assert builtin == sorted(builtin, reverse=True)
