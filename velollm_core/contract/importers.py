"""Other tools' result files that ``velollm history import`` reads: importers that plugins register.

A plugin implements ``register_result_importers(register)`` and calls ``register(ResultImporter(...))``;
the core asks each importer, in pluggy's call order, whether it knows a file (``sniff``), and the first
that does turns it into VeloLLM benchmark documents (``load``), which the core then validates as it
validates its own results. Knowledge of a tool's file layout lives in the plugin of that tool's
runtime; nothing here imports a feature or pydantic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The bytes of a file an importer's sniff sees: enough for a header, a first JSON object or line.
SNIFF_BYTES = 64 * 1024


@dataclass(frozen=True)
class ResultImporter:
    """One tool's result files: ``sniff(path, head)`` says whether a file is one, ``load(path)`` reads it."""

    name: str  # the tool, as the imported results name it (``imported.tool``)
    sniff: Callable[[Path, bytes], bool]
    load: Callable[[Path], list[dict[str, Any]]]
    description: str = ""


def result_importers() -> dict[str, ResultImporter]:
    """The registered importers, by tool name, in pluggy's call order."""
    from velollm_core.contract.formats import _collect

    return _collect("register_result_importers", ResultImporter)


def importer_for(path: Path) -> ResultImporter | None:
    """The first importer that knows ``path``, or None (then it is VeloLLM's own, or nobody's)."""
    try:
        with open(path, "rb") as file:
            head = file.read(SNIFF_BYTES)
    except OSError:
        return None  # the reader that follows says why, in its own words
    for importer in result_importers().values():
        try:
            if importer.sniff(path, head):
                return importer
        except Exception as exc:  # noqa: BLE001 - a plugin's broken sniff costs that plugin, not the import
            from velollm_core.contract import plugins

            plugins.warn(f"register_result_importers: {importer.name}'s sniff failed on {path.name}: {exc}")
    return None
