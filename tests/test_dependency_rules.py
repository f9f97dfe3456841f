"""The dependency rules of docs/ARCHITECTURE.md, read from every file's imports (``ast``, nothing run):
the core never imports a plugin (its tests included), no plugin imports another, and a plugin takes from
the core only the declared API (``velollm_core.api``) and, in its tests, the test kit. Inside the core,
the contract (``hookspecs``, ``api``, ``contract/``) imports nothing of the features, the features
import only downwards (``FEATURE_LAYERS``), and the core holds no runtime knowledge and no test tooling."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from velollm_core import api

REPO = Path(__file__).resolve().parents[1]
CORE_PACKAGE = "velollm_core"
PLUGIN_API = {"velollm_core.api"}
# Libraries the plugins share (libs/<name>: no entry point, not plugins): a plugin may import them; they
# import from the core only velollm_core.api and no plugin; the core never imports them.
SHARED_LIBRARIES = {"velollm_gguf": REPO / "libs" / "velollm-gguf"}
# The test kit (distribution velollm-testkit): tests may import it, no package does.
TEST_KIT = "velollm_testkit"
TEST_KIT_ROOT = REPO / "testkit" / TEST_KIT
# Example plugins are written against the same API as the plugins we ship.
# Files still importing what the rules forbid, each with why; a file leaves this list when it is fixed
# (test_pending_files_still_need_their_exception fails once it no longer offends).
PENDING: dict[str, str] = {}
PLUGIN_ROOTS = [*sorted((REPO / "plugins").glob("velollm-*")), *sorted((REPO / "docs" / "examples").glob("velollm-*"))]


def python_files(root: Path, pending: bool = False) -> list[Path]:
    """The sources under ``root``; the PENDING ones only when ``pending``."""
    return [path for path in sorted(root.rglob("*.py"))
            if not any(part in ("build", ".venv") or part.endswith(".egg-info") for part in path.parts)
            and (str(path.relative_to(REPO)) in PENDING) == pending]


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, names imported from it, line) for every import in ``path``, nested ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names], node.lineno))
    return found


def plugin_package(module: str) -> str | None:
    """``velollm_<name>`` for a module of a plugin package (anything velollm_* but the core)."""
    top = module.split(".")[0]
    return top if top.startswith("velollm_") and top not in (CORE_PACKAGE, TEST_KIT) else None


def own_package(root: Path) -> str:
    return "velollm_" + root.name.removeprefix("velollm-")


def core_offences(path: Path) -> list[str]:
    return [f"{path.relative_to(REPO)}:{line} imports {module}" for module, _, line in imports(path)
            if plugin_package(module)]


def plugin_offences(root: Path, path: Path) -> list[str]:
    """A plugin file's imports of another plugin, and (in its package) of the core beyond the API.

    A plugin's tests may use the core as the CLI's user does too; its package may not.
    """
    mine, offenders = own_package(root), []
    in_tests = "tests" in path.relative_to(root).parts
    for module, names, line in imports(path):
        where = f"{path.relative_to(REPO)}:{line}"
        other = plugin_package(module)
        if other and other != mine and other not in SHARED_LIBRARIES:
            offenders.append(f"{where} imports another plugin: {module}")
        elif module.split(".")[0] == CORE_PACKAGE and module not in PLUGIN_API and not in_tests:
            offenders.append(f"{where} imports {module}: plugins import only velollm_core.api")
        elif module.split(".")[0] == TEST_KIT and not in_tests:
            offenders.append(f"{where} imports the test kit {module} outside its tests")
        elif module == "velollm_core.api":
            offenders += [f"{where} imports {name}, which velollm_core.api does not declare"
                          for name in names if name not in api.__all__]
    return offenders


def test_core_never_imports_a_plugin():
    paths = [*python_files(REPO / CORE_PACKAGE), *python_files(REPO / "tests"), REPO / "conftest.py"]
    offenders = [offence for path in paths for offence in core_offences(path)]
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("root", PLUGIN_ROOTS, ids=[root.name for root in PLUGIN_ROOTS])
def test_plugin_imports_only_itself_and_the_declared_api(root):
    offenders = [offence for path in python_files(root) for offence in plugin_offences(root, path)]
    assert not offenders, "\n".join(offenders)


def test_the_core_never_imports_the_test_kit():
    offenders = [f"{path.relative_to(REPO)}:{line} imports {module}" for path in python_files(REPO / CORE_PACKAGE)
                 for module, _, line in imports(path) if module.split(".")[0] == TEST_KIT]
    assert not offenders, "\n".join(offenders)


def test_the_test_kit_imports_only_the_api_and_the_contract():
    """The kit is a client of the plugin API: it reaches backends, models and llama-server through the
    contract and the plugins' hooks, never a feature of the core or a plugin's modules."""
    offenders = []
    for path in python_files(TEST_KIT_ROOT):
        for module, _, line in imports(path):
            where = f"{path.relative_to(REPO)}:{line}"
            if plugin_package(module):
                offenders.append(f"{where} imports the plugin {module}")
            elif module.split(".")[0] == CORE_PACKAGE and not (
                    module in PLUGIN_API or module == "velollm_core.contract" or module.startswith("velollm_core.contract.")):
                offenders.append(f"{where} imports {module}: the kit imports only velollm_core.api and the contract")
    assert offenders == [] and python_files(TEST_KIT_ROOT), "\n".join(offenders)



@pytest.mark.parametrize("library", sorted(SHARED_LIBRARIES))
def test_shared_library_imports_only_the_declared_api(library):
    root = SHARED_LIBRARIES[library]
    offenders = [offence for path in python_files(root) for offence in plugin_offences(root, path)]
    assert python_files(root) and not offenders, "\n".join(offenders)

def test_pending_files_still_need_their_exception():
    fixed = []
    for name in PENDING:
        path = REPO / name
        root = next((r for r in PLUGIN_ROOTS if path.is_relative_to(r)), None)
        if path.is_file() and not (plugin_offences(root, path) if root else core_offences(path)):
            fixed.append(name)
    assert not fixed, f"no longer offending: remove from PENDING: {fixed}"


def test_every_declared_name_exists():
    for name in api.__all__:
        assert getattr(api, name) is not None, name


# --- inside the core ------------------------------------------------------------------------------------

CONTRACT = {"__init__", "hookspecs", "api", "contract"}
# The built-in features, lowest first: a feature imports the contract and the features below it only.
FEATURE_LAYERS = ["tables", "hardware", "telemetry", "history", "bench", "report", "tune", "speculative", "cli",
                  "__main__"]
# Core files still breaking an in-core rule, each with why; a file leaves this list when fixed.
CORE_PENDING: dict[str, str] = {
}
# api names still defined in a feature, and core parts still to move out (same rule: leave when fixed).
API_PENDING = {"verify_proposal", "read_unit_environment", "unit_installed", "detect_hardware"}
PARTS_PENDING: set[str] = set()


def core_part(module: str) -> str | None:
    """The top-level part of the core a dotted module belongs to (``bench``, ``contract``, ...)."""
    parts = module.split(".")
    if parts[0] != CORE_PACKAGE:
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def core_imports(path: Path) -> list[tuple[str, int]]:
    """The core modules ``path`` imports (``from velollm_core import x`` counted as ``velollm_core.x``)."""
    found = []
    for module, names, line in imports(path):
        if module == CORE_PACKAGE:
            found += [(f"{module}.{name}", line) for name in names]
        elif module.startswith(CORE_PACKAGE + "."):
            found.append((module, line))
    return found


def layer_offences(path: Path) -> list[str]:
    mine = path.relative_to(REPO / CORE_PACKAGE).parts[0].removesuffix(".py")
    offences = []
    for module, line in core_imports(path):
        part = core_part(module)
        where = f"{path.relative_to(REPO)}:{line}"
        if mine in CONTRACT and part not in CONTRACT and part != "__version__":
            offences.append(f"{where}: the contract imports the feature {module}")
        elif mine in FEATURE_LAYERS and part in FEATURE_LAYERS and FEATURE_LAYERS.index(part) > FEATURE_LAYERS.index(mine):
            offences.append(f"{where}: {mine} imports {module}, a layer above it")
    return offences


def core_files() -> list[Path]:
    return [path for path in python_files(REPO / CORE_PACKAGE)]


def test_the_contract_imports_no_feature_and_features_import_only_downwards():
    offenders = [offence for path in core_files() if str(path.relative_to(REPO)) not in CORE_PENDING
                 for offence in layer_offences(path)]
    assert not offenders, "\n".join(offenders)


def test_every_api_name_lives_in_the_contract():
    outside = {name: module for name, module in api._EXPORTS.items()
               if core_part(module) not in CONTRACT and name not in API_PENDING}
    assert not outside, f"velollm_core.api exports names from features: {outside}"


def test_every_core_part_is_the_contract_or_a_known_feature():
    parts = {path.relative_to(REPO / CORE_PACKAGE).parts[0].removesuffix(".py") for path in core_files()}
    assert parts <= CONTRACT | set(FEATURE_LAYERS) | PARTS_PENDING, sorted(parts - CONTRACT - set(FEATURE_LAYERS))


def test_the_contract_names_no_feature_module_even_as_a_string():
    """No list of feature modules to load by name: the built-in plugins are entry points of the velollm
    distribution (pyproject.toml), found as a third party's are."""
    offenders = []
    for path in python_files(REPO / CORE_PACKAGE / "contract"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                named = node.value.split(".")
                if named[0] == CORE_PACKAGE and len(named) > 1 and named[1] in FEATURE_LAYERS:
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} names {node.value}")
    assert not offenders, "\n".join(offenders)


# --- no runtime knowledge in the core -------------------------------------------------------------------

# The runtimes' own words, as code would use them: the names of the backends we ship and of llama.cpp's
# programs (what a dispatch compares or passes), llama-server's ``timings`` fields, and the prefix of its
# Prometheus metric names; and the GGUF file library.
RUNTIME_NAMES = {"llamacpp", "ollama", "openai", "llama-server", "llama-bench", "llama.cpp"}
RUNTIME_FIELDS = {"prompt_n", "predicted_n", "cache_n", "draft_n", "draft_n_accepted", "prompt_ms", "predicted_ms",
                  "prompt_per_second", "predicted_per_second"}
RUNTIME_PREFIXES = ("llamacpp:",)
RUNTIME_LIBRARIES = {"gguf"}


def docstring_nodes(tree: ast.AST) -> set[int]:
    """The ids of the string constants that are docstrings (module, class, function)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                found.add(id(first.value))
    return found


def runtime_knowledge(path: Path) -> list[str]:
    where = path.relative_to(REPO) if path.is_relative_to(REPO) else path.name
    offences = [f"{where}:{line} imports {module}" for module, _, line in imports(path)
                if module.split(".")[0] in RUNTIME_LIBRARIES]
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = docstring_nodes(tree)
    strings = [node for node in ast.walk(tree)
               if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]
    for node in sorted(strings, key=lambda node: (node.lineno, node.col_offset)):
        text = node.value
        if text in RUNTIME_NAMES | RUNTIME_FIELDS or any(prefix in text for prefix in RUNTIME_PREFIXES):
            offences.append(f"{where}:{node.lineno} holds the runtime's word {text[:60]!r}")
    return offences


def test_the_core_holds_no_runtime_knowledge():
    """No core file imports ``gguf``, and no string constant in the core's code (docstrings excepted)
    is one of a runtime's own words: a string *equal to* a shipped backend's or llama.cpp program's name
    (``"llamacpp"``, ``"ollama"``, ``"openai"``, ``"llama-server"``, ``"llama-bench"``, ``"llama.cpp"``)
    or to a field of llama-server's ``timings``, or a string *containing* its metric prefix
    ``llamacpp:``. Equality is the rule for names because that is how code dispatches on one
    (``backend == "ollama"``, ``speculative_backend(backend="llamacpp")``); a message or help text
    that mentions a runtime as an example ("install a backend plugin that does, such as
    velollm-llamacpp") is a longer sentence and passes. Such knowledge lives in the plugins and in
    libs/velollm-gguf, reached through the backend doors."""
    offenders = [offence for path in core_files() for offence in runtime_knowledge(path)]
    assert not offenders, "\n".join(offenders)


def test_the_core_distribution_needs_no_runtime_library():
    """``velollm`` itself depends on no runtime's library (``gguf`` is velollm-gguf's and the test kit's)."""
    tomllib = pytest.importorskip("tomllib")
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {dependency.split(">")[0].split("=")[0].split("<")[0].strip().lower() for dependency in dependencies}
    assert not names & RUNTIME_LIBRARIES, sorted(names & RUNTIME_LIBRARIES)


def test_the_runtime_rule_sees_dispatch_and_wire_names_but_not_docstrings(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('"""Talks to llamacpp and ollama."""\nimport gguf\n\n\ndef pick(backend):\n'
                      '    """Uses \'llamacpp\'."""\n    if backend == "ollama":\n        return timings["draft_n"]\n'
                      '    return f"{backend} llamacpp:requests_processing"\n')
    assert [offence.split(":", 1)[1] for offence in runtime_knowledge(sample)] == [
        "2 imports gguf", "7 holds the runtime's word 'ollama'", "8 holds the runtime's word 'draft_n'",
        "9 holds the runtime's word ' llamacpp:requests_processing'"]
