"""The published JSON Schema of each result kind, generated from the models that validate it.

``<kind>-v<version>.json`` is what a user or another tool validates a result file against: shipped
with the package (``velollm_core/history/published/``, every version ever published, so an old file
can be checked against the schema it was written for) and copied in ``docs/schemas/``; ``velollm
schema KIND [--version N]`` prints it. The models stay the one truth (``history.documents`` validates
through them, in pydantic's strict JSON mode); a schema file is their ``model_json_schema()`` plus a
versioned ``$id`` (``urn:velollm:schema:<kind>:<version>``). A published version never changes: a model change that changes the schema bumps
that kind's version in ``contract.schemas.SCHEMA_VERSIONS`` and writes a new file beside the old one.

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

from velollm_core.contract.errors import UserInputError
from velollm_core.contract.schemas import SCHEMA_VERSIONS

# The model behind each kind, as "module:class", imported only when a schema is asked for.
MODELS = {
    "benchmark": "velollm_core.contract.schemas.bench:BenchmarkResult",
    "speculative": "velollm_core.history.documents:SpeculativeDocument",
    "verify": "velollm_core.history.documents:VerifyDocument",
    "detect": "velollm_core.contract.schemas.hardware:HardwareReport",
}
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
# Where the package ships every published version, and the repository's copy for readers of docs/.
PACKAGE_DIRECTORY = Path(__file__).resolve().parent / "published"
SCHEMA_DIRECTORY = Path(__file__).resolve().parents[2] / "docs" / "schemas"
REGENERATE = "python -m velollm_core.history.schemas --write"


def schema_id(kind: str, version: int | None = None) -> str:
    """The ``$id`` of ``kind``'s schema ``version`` (default: the current one): a URN, since the schemas are
    published with the package and in docs/schemas/, at no web address (``velollm schema`` prints them)."""
    return f"urn:velollm:schema:{kind}:{version or SCHEMA_VERSIONS[kind]}"


def schema_file(kind: str, directory: Path | None = None, version: int | None = None) -> Path:
    """The file of ``kind``'s schema ``version`` (default: the current one) in ``directory`` (default: docs)."""
    return (directory or SCHEMA_DIRECTORY) / f"{kind}-v{version or SCHEMA_VERSIONS[kind]}.json"


def published_schema(kind: str, version: int | None = None) -> dict[str, Any]:
    """``kind``'s published schema ``version`` (default: the current one) as the package ships it."""
    version = version or SCHEMA_VERSIONS[kind]
    path = schema_file(kind, PACKAGE_DIRECTORY, version)
    if not path.is_file():
        shipped = sorted(int(p.stem.rsplit("-v", 1)[1]) for p in PACKAGE_DIRECTORY.glob(f"{kind}-v*.json"))
        raise UserInputError(f"no published {kind} schema v{version}: this VeloLLM ships "
                             + ", ".join(f"v{n}" for n in shipped))
    return json.loads(path.read_text(encoding="utf-8"))


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


def _directories() -> tuple[Path, Path]:
    return PACKAGE_DIRECTORY, SCHEMA_DIRECTORY


def stale_kinds() -> list[str]:
    """The kinds whose current schema file (shipped or in docs) is missing or differs from what the models
    generate."""
    return [kind for kind in SCHEMA_VERSIONS if any(
        not schema_file(kind, d).is_file() or schema_file(kind, d).read_text(encoding="utf-8") != schema_text(kind)
        for d in _directories())]


def write_schemas() -> list[Path]:
    """Write every kind's current schema file, shipped and in docs (older versions stay); the files written."""
    written = []
    for directory in _directories():
        directory.mkdir(parents=True, exist_ok=True)
        for kind in SCHEMA_VERSIONS:
            schema_file(kind, directory).write_text(schema_text(kind), encoding="utf-8")
            written.append(schema_file(kind, directory))
    return written


@click.command("schema")
@click.argument("kind", type=click.Choice(list(SCHEMA_VERSIONS)))
@click.option("--version", "version", type=click.IntRange(1), help="A published version (default: the current one).")
def schema_command(kind: str, version: int | None) -> None:
    """Print the JSON Schema of a result kind (benchmark, speculative, verify, detect)."""
    schema = published_schema(kind, version)
    click.echo(json.dumps(schema, indent=2, ensure_ascii=True) + "\n", nl=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m velollm_core.history.schemas", description=__doc__.split("\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true",
                        help=f"write the current schema files under {PACKAGE_DIRECTORY} and {SCHEMA_DIRECTORY}")
    action.add_argument("--check", action="store_true", help="exit 1 when a schema file is missing or stale")
    arguments = parser.parse_args(argv)
    if arguments.write:
        for path in write_schemas():
            print(path)
        return 0
    stale = stale_kinds()
    for kind in stale:
        print(f"{schema_file(kind, PACKAGE_DIRECTORY)} or its docs copy is missing or differs from the models: run `{REGENERATE}`", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
