"""docs/PLUGINS.md is the reference a third party writes a plugin from: it must keep up with the code.

Every hook spec has its section with the spec's signature (and says firstresult where it is one), every
name of the plugin API is mentioned, every Backend method has its lifecycle entry, every field of the
models a backend receives or returns is in its table, and every Python example at least compiles."""

from __future__ import annotations

import dataclasses
import inspect
import re
import textwrap
from pathlib import Path

import pytest

from velollm_core import api, hookspecs
from velollm_core.contract.backends import Backend, BackendOptions, Capabilities
from velollm_core.contract.formats import ConfigFormat, ReportFormat, ReportSource
from velollm_core.contract.schemas import (
    BackendInfo,
    BenchmarkContext,
    ConfigChange,
    ConfigProposal,
    DecodeTraffic,
    GenerationRequest,
    GenerationTiming,
    GpuInfo,
    ModelFacts,
)
from velollm_core.contract.speculation import Speculative
from velollm_core.contract.streamclient import Accumulator, StreamCall
from velollm_core.contract.telemetry import DeviceReading, TelemetrySource

DOC = (Path(__file__).resolve().parents[1] / "docs" / "PLUGINS.md").read_text()


def hook_specs() -> dict[str, object]:
    return {name: fn for name, fn in vars(hookspecs).items()
            if inspect.isfunction(fn) and hasattr(fn, "velollm_spec")}


def section(heading: str) -> str:
    """The text under ``heading`` (a whole heading line) up to the next heading of any level."""
    start = DOC.index(f"\n{heading}\n")
    following = re.search(r"\n#{1,4} ", DOC[start + len(heading) + 2:])
    end = start + len(heading) + 2 + following.start() if following else len(DOC)
    return DOC[start:end]


@pytest.mark.parametrize("name", sorted(hook_specs()))
def test_every_hook_has_its_section_with_the_specs_signature(name):
    spec = hook_specs()[name]
    signature = f"{name}({', '.join(inspect.signature(spec).parameters)})"
    text = section(f"### `{signature}`")
    firstresult = spec.velollm_spec.get("firstresult", False)
    assert ("**firstresult.**" in text) == firstresult, f"{name}: firstresult={firstresult} not said"
    assert "```python" in text, f"{name}: no example"
    assert f"[`{signature}`]" in section("## Hooks"), f"{name} is missing from the table of hooks"


def test_no_section_for_a_hook_that_is_gone():
    documented = set(re.findall(r"^### `(\w+)\(", DOC, re.MULTILINE)) & {
        "benchmark_backends", "describe_backend", "check_benchmark", "verify_config"}
    assert not documented or documented <= set(hook_specs()), documented


@pytest.mark.parametrize("name", sorted(api.__all__))
def test_every_api_name_is_documented(name):
    assert f"`{name}`" in DOC or f"`{name}(" in DOC


@pytest.mark.parametrize("method", sorted(
    name for name, member in vars(Backend).items() if callable(member) and not name.startswith("_")))
def test_every_backend_method_has_its_lifecycle_entry(method):
    assert re.search(rf"^#### `{method}\(", DOC, re.MULTILINE), method


REQUEST = "### `GenerationRequest` (what `generate`, `stream` and `check` receive)"
TIMING = "### `GenerationTiming` (what `generate` and an accumulator's `finish` return)"
INFO = "### `BackendInfo` (what `describe` returns; the result's `environment.backend`)"
STREAMING = "### Streaming at load levels: `StreamCall` and its accumulator"


@pytest.mark.parametrize(("heading", "fields"), [
    (REQUEST, GenerationRequest.model_fields),
    (TIMING, GenerationTiming.model_fields),
    (INFO, BackendInfo.model_fields),
    ("### `ModelFacts`", [*ModelFacts.model_fields, *DecodeTraffic.model_fields]),
    ("### `BenchmarkContext` (the `context` of every backend call)",
     [f.name for f in dataclasses.fields(BenchmarkContext)]),
    ("### `BackendOptions` (the base of your `Options`)", BackendOptions.model_fields),
    ("### `GpuInfo` (what `detect_gpu` returns)", [f.name for f in dataclasses.fields(GpuInfo)]),
    ("### `ConfigProposal` and `ConfigChange` (what `propose_config` returns)",
     [*ConfigProposal.model_fields, *ConfigChange.model_fields]),
    ("### Capabilities", [f.name for f in dataclasses.fields(Capabilities)]),
    (STREAMING, [f.name for f in dataclasses.fields(StreamCall)]),
])
def test_every_field_is_in_its_table(heading, fields):
    text = section(heading)
    missing = [name for name in fields if f"`{name}`" not in text]
    assert not missing, f"{heading}: {missing}"


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def protocol_members(protocol: type) -> list[str]:
    names = [name for name in vars(protocol) if not name.startswith("_")]
    return [*getattr(protocol, "__annotations__", {}), *(n for n in names if callable(getattr(protocol, n)))]


@pytest.mark.parametrize(("heading", "members"), [
    ("### `speculative_backend(backend)`", protocol_members(Speculative)),
    (STREAMING, protocol_members(Accumulator)),
    ("### `telemetry_sources()`", [*protocol_members(TelemetrySource), *field_names(DeviceReading)]),
    ("### `register_report_formats(register)`", [*field_names(ReportFormat), *field_names(ReportSource)]),
    ("### `register_config_formats(register)`", field_names(ConfigFormat)),
])
def test_every_member_of_a_returned_object_is_documented(heading, members):
    text = section(heading)
    missing = [name for name in members if f"`{name}`" not in text and f"`{name}(" not in text]
    assert not missing, f"{heading}: {missing}"


def test_every_python_example_compiles():
    blocks = re.findall(r"```python\n(.*?)```", DOC, re.DOTALL)
    assert len(blocks) > 10
    for block in blocks:
        compile(textwrap.dedent(block), "<PLUGINS.md>", "exec")  # blocks in a list item are indented


def test_the_test_kit_is_documented():
    import velollm_testkit.plugin
    from velollm_testkit.mock import MockConfig

    text = section("## Testing your plugin")
    source = Path(velollm_testkit.plugin.__file__).read_text()
    fixtures = re.findall(r"^@pytest\.fixture[^\n]*\ndef (\w+)\(", source, re.MULTILINE)
    assert len(fixtures) > 5
    missing = [name for name in [*fixtures, *(f.name for f in dataclasses.fields(MockConfig))]
               if f"`{name}`" not in text]
    assert not missing, missing


def test_the_hello_example_is_shown_as_it_is():
    root = Path(__file__).resolve().parents[1] / "docs" / "examples" / "velollm-hello"
    text = section("## A command plugin: velollm-hello")
    shown = re.search(r"```toml\n(.*?)```", text, re.DOTALL).group(1)
    lines = (root / "pyproject.toml").read_text().splitlines()
    real = "\n".join(line for line in lines if not line.startswith("#"))
    assert shown.strip() == real.strip()
    source = (root / "velollm_hello" / "__init__.py").read_text()
    for hook in ("register_commands", "resolve_model"):
        assert f"def {hook}(" in source and f"`{hook}`" in text


def test_examples_named_by_the_doc_exist():
    root = Path(__file__).resolve().parents[1]
    for example in re.findall(r"\]\((examples/[\w-]+)\)", DOC):
        assert (root / "docs" / example / "pyproject.toml").is_file(), example
