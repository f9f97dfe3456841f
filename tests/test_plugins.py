"""Plugin discovery through real entry points: the five plugins, a third-party example installed
with pip, and a broken plugin that must be reported without taking the CLI down."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from velollm_core.contract.errors import UserInputError
from velollm_core.contract.modelfiles import check_gguf

REPO = Path(__file__).resolve().parents[1]
FIVE = {"nvidia", "amd", "apple", "ollama", "llamacpp"}


def velollm(*args, env=None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "velollm_core", *args], check=False, capture_output=True, text=True,
                          env=full_env, timeout=120)


def pip_install_target(project: Path, target: Path) -> None:
    """A real pip install (wheel built from the project) into a directory we put on PYTHONPATH."""
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(project)], check=True, capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def third_party(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    pip_install_target(REPO / "docs" / "examples" / "velollm-hello", target)
    pip_install_target(REPO / "tests" / "data" / "velollm-broken", target)
    return target


def test_five_plugins_load_without_error():
    proc = velollm("plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    names = {p["name"]: p for p in data["plugins"]}
    assert FIVE <= set(names), names
    assert not [e for e in data["errors"] if e["name"] in FIVE]
    assert names["llamacpp"]["distribution"] == "velollm-llamacpp"
    assert "run_benchmark" in names["llamacpp"]["hooks"] and "detect_gpu" in names["nvidia"]["hooks"]
    assert names["velollm_core.hardware.pci_gpus"]["builtin"] is True


def test_third_party_plugin_appears_and_broken_one_is_reported(third_party):
    env = {"PYTHONPATH": str(third_party)}
    proc = velollm("plugins", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    hello = next(p for p in data["plugins"] if p["name"] == "hello")
    assert hello["distribution"] == "velollm-hello" and hello["version"] == "0.1.0"
    assert set(hello["hooks"]) == {"register_commands", "resolve_model"}
    broken = next(e for e in data["errors"] if e["name"] == "broken")
    assert broken["distribution"] == "velollm-broken" and "exploded on import" in broken["error"]
    # Everything else still works, the third party's command included.
    hello_cmd = velollm("hello", "--name", "ci", env=env)
    assert hello_cmd.returncode == 0 and "hello ci:" in hello_cmd.stdout, hello_cmd.stderr
    detect = velollm("detect", "--json", env=env)
    assert detect.returncode == 0 and "memory" in json.loads(detect.stdout)
    table = velollm("plugins", env=env)
    assert "failed to load" in table.stdout and "broken" in table.stdout


def test_velollm_plugins_env_restricts_loading(third_party):
    proc = velollm("plugins", "--json", env={"PYTHONPATH": str(third_party), "VELOLLM_PLUGINS": "hello"})
    data = json.loads(proc.stdout)
    external = {p["name"] for p in data["plugins"] if not p["builtin"]}
    assert external == {"hello"} and data["errors"] == []


def test_third_party_model_alias_resolves(third_party, tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 16)
    code = ("from velollm_core.contract.modelfiles import resolve_model_path; "
            "print(resolve_model_path('hello-model'))")
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(third_party), "HELLO_MODEL_PATH": str(model)})
    assert proc.stdout.strip() == str(model), proc.stderr


def test_check_gguf_messages(tmp_path):
    with pytest.raises(UserInputError, match="not found"):
        check_gguf(tmp_path / "x.gguf")
    with pytest.raises(UserInputError, match="not a file"):
        check_gguf(tmp_path)
    text = tmp_path / "t.gguf"
    text.write_text("hello")
    with pytest.raises(UserInputError, match="not a GGUF file"):
        check_gguf(text)


def test_usage_errors_exit_2_without_traceback():
    proc = velollm("benchmark", "--backend", "llamacpp")
    assert proc.returncode == 2 and "Missing option '--model'" in proc.stderr
    proc = velollm("benchmark", "--backend", "nope", "--model", "m")
    assert proc.returncode == 2 and "unknown backend 'nope'" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = velollm("benchmark", "--backend", "llamacpp", "--model", "m", "--concurrency", "0")
    assert proc.returncode == 2 and "concurrency" in proc.stderr


EXAMPLES = sorted(path.name for path in (REPO / "docs" / "examples").glob("velollm-*"))


@pytest.mark.parametrize("example", EXAMPLES)
def test_installing_an_example_writes_nothing_into_its_folder(example, tmp_path):
    source = tmp_path / example
    shutil.copytree(REPO / "docs" / "examples" / example, source,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    before = sorted(path.relative_to(source) for path in source.rglob("*"))
    pip_install_target(source, tmp_path / "site")
    assert sorted(path.relative_to(source) for path in source.rglob("*")) == before
    assert any((tmp_path / "site").glob(f"{example.replace('-', '_')}-*.dist-info"))


def _toml(path: Path) -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads(path.read_text())


def _requirement_name(requirement: str) -> str:
    return requirement.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].split("!")[0].strip()


@pytest.mark.parametrize("example", EXAMPLES)
def test_an_example_declares_every_distribution_it_imports(example):
    folder = REPO / "docs" / "examples" / example
    project = _toml(folder / "pyproject.toml")["project"]
    # The package's imports are its dependencies; its own tests may also use its "test" extra.
    runtime = {_requirement_name(requirement) for requirement in project["dependencies"]}
    extra = {_requirement_name(requirement) for requirement in project.get("optional-dependencies", {}).get("test", [])}
    own = example.replace("-", "_")
    for path in folder.rglob("*.py"):
        in_tests = "tests" in path.relative_to(folder).parts
        imported = _third_party_imports(path, own)
        declared = {name.replace("-", "_") for name in runtime | (extra if in_tests else set())}
        assert imported <= declared, f"{path.relative_to(REPO)} imports {sorted(imported - declared)} undeclared"


def _third_party_imports(path: Path, own: str) -> set[str]:
    """The distributions (as import names; velollm_core is velollm's) a file imports, stdlib aside."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {own, "__future__"}
    return {"velollm" if name == "velollm_core" else name for name in third_party}


def test_built_ins_are_entry_points_of_the_velollm_distribution():
    from velollm_core import api
    from velollm_core.contract import plugins

    declared = _toml(REPO / "pyproject.toml")["project"]["entry-points"]["velollm"]
    installed = api.installed_plugins()
    assert {entry_point.name for entry_point in installed if entry_point.builtin} == set(declared)
    assert all(entry_point.distribution == "velollm" for entry_point in installed if entry_point.builtin)
    first_third_party = next(i for i, entry_point in enumerate(installed) if not entry_point.builtin)
    assert all(entry_point.builtin for entry_point in installed[:first_third_party])  # built-ins first
    # The contract names no feature: the built-ins are found as entry points, as a third party's are.
    assert not hasattr(plugins, "BUILTIN_PLUGINS")
    assert "velollm_core.hardware" not in Path(plugins.__file__).read_text()


def test_a_plugin_checks_in_process_that_its_entry_point_is_installed():
    from velollm_core.api import installed_plugins

    openai = next(entry_point for entry_point in installed_plugins() if entry_point.name == "openai")
    assert (openai.distribution, openai.builtin) == ("velollm-openai", False)
    assert openai.value.startswith("velollm_openai")


def test_plugin_env_variables_take_distribution_names(third_party):
    env = {"PYTHONPATH": str(third_party), "VELOLLM_PLUGINS": "velollm-hello", "VELOLLM_DISABLE": "Velollm_Broken"}
    data = json.loads(velollm("plugins", "--json", env=env).stdout)
    assert {p["name"] for p in data["plugins"] if not p["builtin"]} == {"hello"} and data["errors"] == []
    proc = velollm("plugins", "--json", env={"VELOLLM_DISABLE": "velollm-openai"})
    assert "openai" not in {p["name"] for p in json.loads(proc.stdout)["plugins"]}
    assert "warning" not in proc.stderr, proc.stderr


def test_a_plugin_env_name_that_matches_nothing_is_warned_about():
    proc = velollm("plugins", "--json", env={"VELOLLM_DISABLE": "velollm-nvidai,openai",
                                             "VELOLLM_PLUGINS": "olama"})
    assert proc.returncode == 0, proc.stderr
    assert "warning: VELOLLM_DISABLE names 'velollm-nvidai', which is no installed plugin" in proc.stderr
    assert "warning: VELOLLM_PLUGINS names 'olama', which is no installed plugin" in proc.stderr
    assert "'openai'" not in proc.stderr
    json.loads(proc.stdout)  # stdout stays one JSON document
