"""The published JSON Schema of each result kind, generated from the models that validate it.

``docs/schemas/<kind>-v<version>.json`` is what a user or another tool validates a result file
against; ``velollm schema KIND`` prints it. The models stay the one truth (``history.documents``
validates through them); a schema file is their ``model_json_schema()`` plus a versioned ``$id``.
A published version never changes: a model change that changes the schema bumps that kind's
version in SCHEMA_VERSIONS and writes a new file beside the old one.

Regenerate after a model change: ``python -m velollm_core.history.schemas --write``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

import click

# The version each kind's published schema has now; bump it when its model changes the schema.
SCHEMA_VERSIONS = {"benchmark": 1, "speculative": 1, "verify": 1, "detect": 1}
# The model behind each kind, as "module:class", imported only when a schema is asked for.
MODELS = {
    "benchmark": "velollm_core.contract.schemas.bench:BenchmarkResult",
    "speculative": "velollm_core.history.documents:SpeculativeDocument",
    "verify": "velollm_core.history.documents:VerifyDocument",
    "detect": "velollm_core.contract.schemas.hardware:HardwareReport",
}
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_DIRECTORY = Path(__file__).resolve().parents[2] / "docs" / "schemas"
REGENERATE = "python -m velollm_core.history.schemas --write"


def schema_id(kind: str) -> str:
    """The schema's ``$id``: where it is published, its version in the name."""
    return f"https://velollm.dev/schemas/{kind}/v{SCHEMA_VERSIONS[kind]}.json"


def schema_file(kind: str) -> Path:
    """The committed file of ``kind``'s current schema version."""
    return SCHEMA_DIRECTORY / f"{kind}-v{SCHEMA_VERSIONS[kind]}.json"


def json_schema(kind: str) -> dict[str, Any]:
    """``kind``'s JSON Schema as its model generates it now, with its dialect, ``$id`` and version."""
    module, name = MODELS[kind].split(":")
    model = getattr(importlib.import_module(module), name)
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": schema_id(kind),
        "x-velollm-kind": kind,
        "x-velollm-schema-version": SCHEMA_VERSIONS[kind],
        **model.model_json_schema(mode="validation"),
    }


def schema_text(kind: str) -> str:
    """``json_schema(kind)`` as the committed file holds it."""
    return json.dumps(json_schema(kind), indent=2, ensure_ascii=True) + "\n"


def stale_kinds() -> list[str]:
    """The kinds whose committed schema file is missing or differs from what the models generate."""
    return [kind for kind in SCHEMA_VERSIONS
            if not schema_file(kind).is_file() or schema_file(kind).read_text(encoding="utf-8") != schema_text(kind)]


def write_schemas() -> list[Path]:
    """Write every kind's current schema file; the files written."""
    SCHEMA_DIRECTORY.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in SCHEMA_VERSIONS:
        schema_file(kind).write_text(schema_text(kind), encoding="utf-8")
        written.append(schema_file(kind))
    return written


@click.command("schema")
@click.argument("kind", type=click.Choice(list(SCHEMA_VERSIONS)))
def schema_command(kind: str) -> None:
    """Print the JSON Schema of a result kind (benchmark, speculative, verify, detect)."""
    click.echo(schema_text(kind), nl=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m velollm_core.history.schemas", description=__doc__.split("\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help=f"write the schema files under {SCHEMA_DIRECTORY}")
    action.add_argument("--check", action="store_true", help="exit 1 when a schema file is missing or stale")
    arguments = parser.parse_args(argv)
    if arguments.write:
        for path in write_schemas():
            print(path)
        return 0
    stale = stale_kinds()
    for kind in stale:
        print(f"{schema_file(kind)} is missing or differs from the models: run `{REGENERATE}`", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
