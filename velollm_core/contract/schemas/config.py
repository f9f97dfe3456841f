"""Configuration proposals (what `velollm optimize` shows and renders)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from velollm_core.contract.schemas.base import VeloModel as _Model


class ConfigChange(_Model):
    key: str
    current: str | None = None
    proposed: str | None
    reason: str
    kind: Literal["env", "flag"] = "env"
    # For command-line flags: the exact arguments this change adds (e.g. ["-t", "8"]), changes that
    # are measured together (e.g. "-ctk"/"-ctv" share a group), and why the change is there:
    # "speed" (verified by measurement), "capacity" (context, slots: not a speed change) or
    # "explicit" (same effect as the runtime's default here, written out so the command is portable).
    args: list[str] | None = None
    group: str | None = None
    purpose: Literal["speed", "capacity", "explicit"] | None = None


class ConfigProposal(_Model):
    runtime: str
    changes: list[ConfigChange] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    command: list[str] | None = None
    # The systemd service that runs this runtime (e.g. "ollama"): where --format systemd and --apply write.
    systemd_unit: str | None = None
