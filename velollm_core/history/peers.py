"""Results of other tools (a llama-bench, GuideLLM or ``vllm bench serve`` file) as VeloLLM benchmark
documents, through the importers plugins register (``contract.importers``), validated exactly as
VeloLLM's own results are: ``history import``, ``compare`` and ``report`` read them all alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from velollm_core.contract.errors import UserInputError
from velollm_core.history.documents import check_values, validate_document


def peer_documents(path: Path) -> list[tuple[str, dict[str, Any]]] | None:
    """(name, validated benchmark document) per result in ``path`` when an importer knows the file; None
    when none does (a VeloLLM result, or no result at all: the caller's reader says which)."""
    from velollm_core.contract.importers import importer_for

    importer = importer_for(path)
    if importer is None:
        return None
    try:
        documents = importer.load(path)
    except UserInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin's reader failing on a file is one sentence, not a traceback
        raise UserInputError(f"{path} looks like {importer.name} output but cannot be read as such: "
                             f"{type(exc).__name__}: {exc}") from None
    if not documents:
        raise UserInputError(f"{path} holds no result that {importer.name} measured")
    named = []
    for number, document in enumerate(documents, 1):
        name = f"{path} ({importer.name}{f' #{number}' if len(documents) > 1 else ''})"
        check_values(document, name)  # a plugin's numbers pass the checks a file's do
        validate_document(document, name, "benchmark")
        named.append((name, completed(document, name)))
    return named


def completed(document: dict[str, Any], name: str) -> dict[str, Any]:
    """An importer's document as VeloLLM writes its own: the current schema version, and the summary the
    engine computes from the runs (the statistics stay the core's, whoever measured)."""
    from velollm_core.contract.schemas import SCHEMA_VERSIONS, BenchmarkResult
    from velollm_core.history.summary import summarize_runs

    result = BenchmarkResult.model_validate({**document, "schema_version": SCHEMA_VERSIONS["benchmark"]})
    if not result.summary:
        result.summary = summarize_runs(result.runs)
    # Through the model: every field of every run is written, None where the tool measured nothing.
    document = result.model_dump(mode="json")
    validate_document(document, name, "benchmark")
    return document
