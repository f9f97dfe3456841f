"""Base class of VeloLLM's pydantic models."""

from pydantic import BaseModel, ConfigDict


class VeloModel(BaseModel):
    model_config = ConfigDict(extra="allow")
