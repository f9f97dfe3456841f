"""The published JSON Schemas (docs/schemas/) match the models, and the repository's result files pass them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
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
    assert published["$id"] == f"urn:velollm:schema:{kind}:{schemas.SCHEMA_VERSIONS[kind]}"


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


# -- versions, shipping, what the schema refuses ------------------------------------------------------

LEGACY = RESULTS / "peer" / "velollm-pp512-tg128-d0-r1.json"  # written before results carried schema_version


def published_versions() -> list[tuple[str, int]]:
    return sorted((path.stem.rsplit("-v", 1)[0], int(path.stem.rsplit("-v", 1)[1]))
                  for path in schemas.PACKAGE_DIRECTORY.glob("*-v*.json"))


def test_the_package_ships_every_published_version_and_docs_holds_the_same_files():
    shipped = published_versions()
    assert {(kind, version) for kind, version in shipped} >= {(kind, n) for kind, current in
                                                             schemas.SCHEMA_VERSIONS.items() for n in range(1, current + 1)}
    for kind, version in shipped:
        assert schemas.schema_file(kind, schemas.PACKAGE_DIRECTORY, version).read_bytes() == \
            schemas.schema_file(kind, version=version).read_bytes()


def test_the_package_data_is_declared_for_the_wheel():
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"velollm_core.history" = ["published/*.json"]' in pyproject


def test_schema_command_prints_an_older_version_and_refuses_an_unknown_one(tmp_path):
    older = CliRunner().invoke(cli, ["schema", "benchmark", "--version", "1"])
    assert older.exit_code == 0 and json.loads(older.output)["$id"] == "urn:velollm:schema:benchmark:1"
    unknown = velollm("schema", "benchmark", "--version", "99", history=tmp_path / "h.db")
    assert unknown.returncode == 2 and "v99" in unknown.stderr and "Traceback" not in unknown.stderr


def test_results_written_now_carry_their_schema_version():
    from velollm_core.contract.schemas import SCHEMA_VERSIONS, BenchmarkResult
    from velollm_core.hardware.report import detect_hardware_data

    assert BenchmarkResult(started_at="2026-12-05T00:00:00Z").model_dump()["schema_version"] == SCHEMA_VERSIONS["benchmark"]
    assert detect_hardware_data()["schema_version"] == SCHEMA_VERSIONS["detect"]
    assert HardwareReport.model_validate(detect_hardware_data()).schema_version == SCHEMA_VERSIONS["detect"]
    for kind in ("speculative", "verify"):
        model = schemas.MODELS[kind].split(":")[1]
        assert getattr(documents, model).model_fields["schema_version"].default == SCHEMA_VERSIONS[kind]


def _legacy() -> dict:
    return json.loads(LEGACY.read_text())


def _set(document: dict, path: str, value) -> dict:
    node = document
    *parents, last = path.split(".")
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return document


# Each a document the published schema refuses: the library must refuse it too (and did not, for the
# lax ones, before validation became strict: import stored them, and the schema disowned them).
SHAPE_REFUSALS = {
    "a count as text": ("runs.0.iteration", "1"),
    "a rate as text": ("runs.0.decode_tokens_per_s", "47.4"),
    "an unknown status": ("status", "done"),
    "a run that is no object": ("runs.0", [1, 2]),
    "a text that is a number": ("started_at", 20261202),
    "a schema version as text": ("schema_version", "2"),
    "a schema version of zero": ("schema_version", 0),
}


@pytest.mark.parametrize("case", list(SHAPE_REFUSALS))
def test_the_library_refuses_what_the_published_schema_refuses(case):
    import jsonschema

    from velollm_core.contract.errors import UserInputError

    document = _set(_legacy(), *SHAPE_REFUSALS[case])
    published = json.loads(schemas.schema_file("benchmark").read_text(encoding="utf-8"))
    assert list(jsonschema.Draft202012Validator(published).iter_errors(document)), "the schema accepts it"
    with pytest.raises(UserInputError, match="is not a VeloLLM benchmark result"):
        documents.validate_document(document, "doc.json")


# What no schema expresses but physics does: refused by the library's own checks.
VALUE_REFUSALS = {
    "a negative rate": ("runs.0.decode_tokens_per_s", -47.4, "beyond any measurement"),
    "a negative median": ("summary.pp512/tg128.ttft_ms.median", -1.0, "no measurement is negative"),
    "a newer schema": ("schema_version", 99, "newer than this VeloLLM reads"),
}


@pytest.mark.parametrize("case", list(VALUE_REFUSALS))
def test_the_library_refuses_impossible_values(case):
    from velollm_core.contract.errors import UserInputError

    path, value, words = VALUE_REFUSALS[case]
    document = _legacy()
    if path.startswith("summary."):
        document["summary"]["pp512/tg128"]["ttft_ms"]["median"] = value
    else:
        _set(document, path, value)
    with pytest.raises(UserInputError, match=words):
        documents.validate_document(document, "doc.json")


def test_a_non_finite_number_is_refused_as_it_is_read():
    from velollm_core.contract.errors import UserInputError

    text = re.sub(r'"decode_tokens_per_s": [0-9.]+', '"decode_tokens_per_s": NaN', LEGACY.read_text(), count=1)
    assert "NaN" in text
    with pytest.raises(UserInputError, match="nan"):
        documents.parse_document(text, "doc.json")


def test_a_decode_rate_far_above_the_roofline_is_flagged_not_refused():
    document = _legacy()
    limit = document["roofline"]["suites"]["pp512/tg128"]["max_decode_tokens_per_s"]
    assert documents.plausibility(document, "benchmark") == []  # 89% of the limit: plausible
    document["roofline"]["suites"]["pp512/tg128"]["max_decode_tokens_per_s"] = limit / 2
    (flag,) = documents.plausibility(document, "benchmark")
    assert "pp512/tg128" in flag and "memory-bandwidth limit" in flag
    assert documents.validate_document(document, "doc.json") == "benchmark"


def velollm(*args: str, history: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "VELOLLM_HISTORY_DB": str(history)}
    return subprocess.run([sys.executable, "-m", "velollm_core", *args], capture_output=True, text=True, timeout=120,
                          check=False, env=env)


def test_an_older_result_without_schema_version_imports_and_compares(tmp_path):
    assert "schema_version" not in _legacy()
    history = tmp_path / "h.db"
    imported = velollm("history", "import", str(LEGACY), history=history)
    assert imported.returncode == 0, imported.stderr
    compared = velollm("compare", "1", str(LEGACY), "--json", history=history)
    assert compared.returncode == 0, compared.stderr
    assert {row["verdict"] for row in json.loads(compared.stdout)["rows"]} <= {"within noise", "too few runs"}


def test_import_refuses_what_compare_would_refuse(tmp_path):
    """Before validation was strict, a lax document (a count as text) was imported and stored, and only the
    published schema disowned it; now import and compare refuse it alike, in one sentence each."""
    history = tmp_path / "h.db"
    lax = tmp_path / "lax.json"
    lax.write_text(json.dumps(_set(_legacy(), "runs.0.iteration", "1")))
    imported = velollm("history", "import", str(lax), history=history)
    compared = velollm("compare", str(lax), str(LEGACY), history=history)
    for done in (imported, compared):
        assert done.returncode == 2 and "runs.0.iteration" in done.stderr and "Traceback" not in done.stderr
    assert not history.exists() or json.loads(velollm("history", "--json", history=history).stdout)["total"] == 0


def test_compare_names_a_stored_verification_for_what_it_is(tmp_path):
    verify = tmp_path / "verify.json"
    verify.write_text(json.dumps({"schema_version": 2, "runtime": "llamacpp", "model": "m.gguf", "candidates": [],
                                  "changes": [], "final": {"args": [], "vs_defaults": {}}}))
    history = tmp_path / "h.db"
    assert velollm("history", "import", str(verify), history=history).returncode == 0
    compared = velollm("compare", "1", str(LEGACY), history=history)
    assert compared.returncode == 2 and "is a verification" in compared.stderr
