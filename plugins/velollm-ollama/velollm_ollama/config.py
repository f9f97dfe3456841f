"""The Ollama server's current settings, from where its server reads them, parsed as Ollama parses them.

A Linux service installed by Ollama's script reads ``ollama.service`` and its drop-ins, not the user's
shell; the macOS app reads ``launchctl setenv`` values; ``ollama serve`` in a shell reads that shell.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

SERVICE_UNIT = "ollama"

# The server variables VeloLLM reads or proposes; all of them exist in Ollama's envconfig.
SETTINGS: dict[str, str] = {
    "OLLAMA_FLASH_ATTENTION": "flash attention",
    "OLLAMA_KV_CACHE_TYPE": "K/V cache type (f16, q8_0, q4_0)",
    "OLLAMA_CONTEXT_LENGTH": "default context length in tokens",
    "OLLAMA_NUM_PARALLEL": "parallel requests per loaded model",
    "OLLAMA_MAX_LOADED_MODELS": "models kept loaded at once",
    "OLLAMA_KEEP_ALIVE": "how long an idle model stays loaded",
    "OLLAMA_SCHED_SPREAD": "always spread a model over all GPUs",
    "OLLAMA_GPU_OVERHEAD": "VRAM kept free on each GPU, in bytes",
    "OLLAMA_MODELS": "model directory",
    # Ollama >= 0.30 passes its environment to llama-server, which reads these itself.
    "LLAMA_ARG_FIT": "llama.cpp's automatic fit of unset memory options (on/off)",
    "LLAMA_ARG_FIT_TARGET": "VRAM llama.cpp's fit keeps free per GPU, in MiB",
    "OLLAMA_HOST": "listen address",
}

_GO_BOOL = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
            "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def clean(value: str | None) -> str:
    """A value as Ollama reads it: surrounding spaces and quotes removed (envconfig.Var)."""
    return (value or "").strip().strip("\"'")


def parse_bool(value: str | None) -> bool | None:
    """Ollama's boolean: unset -> None; Go's ParseBool; any other non-empty text counts as true."""
    text = clean(value)
    if not text:
        return None
    return _GO_BOOL.get(text, True)


def parse_uint(value: str | None) -> int | None:
    """A non-negative integer, or None when unset or invalid (Ollama then uses its default)."""
    text = clean(value)
    return int(text) if text.isdigit() else None


def parse_go_duration(text: str) -> float | None:
    """Go's ``time.ParseDuration`` in seconds (``1h30m``, ``300ms``, ``-5m``); None when invalid."""
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if body == "0":
        return 0.0
    if not body:
        return None
    total, position = 0.0, 0
    for match in _DURATION_PART.finditer(body):
        if match.start() != position:
            return None
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    return sign * total if position == len(body) and position else None


def parse_keep_alive(value: str | None) -> float | None:
    """OLLAMA_KEEP_ALIVE in seconds (math.inf for "forever"); None when unset or unparseable."""
    text = clean(value)
    if not text:
        return None
    seconds = parse_go_duration(text)
    if seconds is None and re.fullmatch(r"[+-]?\d+", text):
        seconds = float(int(text))
    if seconds is None:
        return None
    return math.inf if seconds < 0 else seconds


@dataclass
class Setting:
    value: str
    source: str


@dataclass
class OllamaConfig:
    """Settings the server most likely runs with, where each came from, and ignored shell values."""

    scope: str
    settings: dict[str, Setting] = field(default_factory=dict)
    shadowed: dict[str, Setting] = field(default_factory=dict)

    def value(self, key: str) -> str | None:
        """The cleaned value of ``key``, or None when unset."""
        setting = self.settings.get(key)
        if setting is None:
            return None
        return clean(setting.value) or None

    def source(self, key: str) -> str | None:
        setting = self.settings.get(key)
        return setting.source if setting else None

    def describe(self) -> list[str]:
        """``KEY=value (source)`` lines for result files."""
        return [f"{key}={s.value} ({s.source})" for key, s in sorted(self.settings.items())]


def service_environment(root: Path | None = None) -> dict[str, str]:
    """The environment ``ollama.service`` gives the server (empty when there is no such unit)."""
    from velollm_core.api import read_unit_environment

    try:
        return read_unit_environment(SERVICE_UNIT, root).effective()
    except OSError:
        return {}


def launchctl_environment(keys: list[str], getenv: Callable[[str], str | None] | None = None) -> dict[str, str]:
    """``launchctl getenv`` for each key (macOS apps read these), skipping unset ones."""
    getenv = getenv or _launchctl_getenv
    found = {}
    for key in keys:
        value = getenv(key)
        if value:
            found[key] = value
    return found


def _launchctl_getenv(key: str) -> str | None:
    from velollm_core.api import ProbeError, run_tool

    try:
        return run_tool(["launchctl", "getenv", key], timeout=5).strip() or None
    except ProbeError:
        return None


def read_ollama_config(
    environ: Mapping[str, str] | None = None,
    *,
    systemd_root: Path | None = None,
    platform: str | None = None,
    launchctl_getenv: Callable[[str], str | None] | None = None,
) -> OllamaConfig:
    """The current Ollama settings: systemd service on Linux when installed, launchctl on macOS, else env."""
    from velollm_core.api import read_unit_environment, unit_installed

    env = os.environ if environ is None else environ
    platform = platform or sys.platform
    shell = {key: Setting(env[key], "environment") for key in SETTINGS if key in env}
    if platform.startswith("linux") and unit_installed(SERVICE_UNIT, systemd_root):
        unit = read_unit_environment(SERVICE_UNIT, systemd_root)
        effective = unit.effective()
        config = OllamaConfig(scope="systemd")
        for key in SETTINGS:
            if key in effective:
                config.settings[key] = Setting(effective[key], f"systemd: {unit.sources[key]}")
        # The service never sees the user's shell: those values only mislead.
        config.shadowed = {k: s for k, s in shell.items() if k not in config.settings
                           or clean(config.settings[k].value) != clean(s.value)}
        return config
    if platform == "darwin":
        config = OllamaConfig(scope="launchctl")
        for key, value in launchctl_environment(list(SETTINGS), launchctl_getenv).items():
            config.settings[key] = Setting(value, "launchctl")
        for key, setting in shell.items():
            config.settings.setdefault(key, setting)
        return config
    return OllamaConfig(scope="environment", settings=shell)
