"""Base class of VeloLLM's pydantic models, and the ``schema_version`` field every result kind carries."""

from pydantic import BaseModel, ConfigDict, Field

from velollm_core.contract.schemas import SCHEMA_VERSIONS


class VeloModel(BaseModel):
    model_config = ConfigDict(extra="allow")


def schema_version_field(kind: str):
    """The ``schema_version`` field of ``kind``'s result model: the published schema it follows (absent in
    files written before results carried one, which still validate)."""
    return Field(SCHEMA_VERSIONS[kind], ge=1, description=(
        f"The version of the published JSON Schema this {kind} result follows "
        f"(urn:velollm:schema:{kind}:<N>, printed by `velollm schema {kind} --version N`); absent in results "
        "written before versioning."))
