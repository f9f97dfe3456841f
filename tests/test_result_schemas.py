"""The published JSON Schemas (docs/schemas/) match the models, and the repository's result files pass them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from velollm_core.cli import cli
from velollm_core.contract.schemas import HardwareReport
from velollm_core.history import documents, schemas

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def result_kind(data: object) -> str | None:
    """The result kind of a parsed file: a history kind, or detect's hardware report; None for other JSON."""
    kind = documents.kind_of(data)
    if kind is None and isinstance(data, dict) and {"os", "cpu", "memory"} <= data.keys():
        return "detect"
    return kind


def result_files() -> list[tuple[Path, str, object]]:
    """(path, kind, parsed JSON) of every result file of a known kind under benchmarks/results."""
    found = []
    for path in sorted(RESULTS.rglob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        kind = result_kind(data)
        if kind is not None:
            found.append((path, kind, data))
    return found


@pytest.mark.parametrize("kind", list(schemas.SCHEMA_VERSIONS))
def test_published_schema_is_what_the_model_generates(kind):
    path = schemas.schema_file(kind)
    assert path.is_file(), f"{path} is missing: run `{schemas.REGENERATE}`"
    published = json.loads(path.read_text(encoding="utf-8"))
    assert published == schemas.json_schema(kind), (
        f"{path.name} differs from what {schemas.MODELS[kind]} generates now. A published schema never "
        f"changes: bump SCHEMA_VERSIONS[{kind!r}] in velollm_core/history/schemas.py (unless this version "
        f"was never released), then run `{schemas.REGENERATE}` and commit the new file"
    )
    assert published["$id"].endswith(f"/{kind}/v{schemas.SCHEMA_VERSIONS[kind]}.json")


def test_every_kind_documents_validates_has_a_schema():
    assert set(documents.KINDS) <= set(schemas.SCHEMA_VERSIONS)


def test_the_repository_has_result_files_of_the_main_kinds():
    kinds = {kind for _, kind, _ in result_files()}
    assert {"benchmark", "detect"} <= kinds


@pytest.mark.parametrize(("path", "kind", "data"), result_files(),
                         ids=lambda value: str(value.relative_to(RESULTS)) if isinstance(value, Path) else "")
def test_result_file_passes_its_published_schema(path, kind, data):
    published = json.loads(schemas.schema_file(kind).read_text(encoding="utf-8"))
    try:
        import jsonschema
    except ImportError:  # no new dependency for this: the schema is the models', so the models decide
        if kind == "detect":
            HardwareReport.model_validate(data)
        else:
            assert documents.validate_document(data, path, kind) == kind
    else:
        jsonschema.validate(data, published, cls=jsonschema.Draft202012Validator)


def test_schema_command_prints_the_published_schema():
    printed = CliRunner().invoke(cli, ["schema", "benchmark"])
    assert printed.exit_code == 0, printed.output
    assert printed.output == schemas.schema_file("benchmark").read_text(encoding="utf-8")


def test_schema_command_refuses_an_unknown_kind_in_one_line():
    printed = CliRunner().invoke(cli, ["schema", "estimate"])
    assert printed.exit_code == 2
    assert "Traceback" not in printed.output


def test_check_reports_a_stale_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(schemas, "SCHEMA_DIRECTORY", tmp_path)
    assert schemas.main(["--check"]) == 1
    assert schemas.REGENERATE in capsys.readouterr().err
    schemas.main(["--write"])
    assert schemas.main(["--check"]) == 0
