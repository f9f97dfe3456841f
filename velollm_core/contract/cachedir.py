"""Where VeloLLM keeps what it can rebuild: ``$VELOLLM_CACHE_DIR``, else the user cache folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

CACHE_DIR_ENV = "VELOLLM_CACHE_DIR"
APP_NAME = "velollm"


def _plain_linux_cache_dir() -> Path | None:
    """The XDG answer where every platformdirs release gives the same one, else None.

    Every command reads the plugin index from the cache folder, and importing platformdirs costs
    more than the rest of ``velollm --help`` (it pulls in tempfile and random). On Linux with an
    absolute ``$XDG_CACHE_HOME`` (or none, and an absolute ``$HOME``) the folder is plain; anything
    else (Android, a relative value, other systems) asks platformdirs. tests/test_plugin_index.py
    holds this to platformdirs' answer.
    """
    if sys.platform != "linux" or hasattr(sys, "getandroidapilevel") or os.environ.get("ANDROID_ROOT"):
        return None
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):
        return Path(xdg) / APP_NAME
    home = os.environ.get("HOME", "")
    if not xdg.strip() and os.path.isabs(home):
        return Path(home) / ".cache" / APP_NAME
    return None


def cache_dir() -> Path:
    """``$VELOLLM_CACHE_DIR`` if set, else ``platformdirs.user_cache_path("velollm")``."""
    override = os.environ.get(CACHE_DIR_ENV)
    if override:
        return Path(override)
    plain = _plain_linux_cache_dir()
    if plain is not None:
        return plain
    from platformdirs import user_cache_path

    return user_cache_path(APP_NAME)
