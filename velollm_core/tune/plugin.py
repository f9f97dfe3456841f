"""The tune feature's hook implementations: the built-in ``velollm optimize --format`` renderers.

Loaded with every plugin, so it imports only the hook marker until formats are asked for;
``tune.render`` is imported when a format is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from velollm_core.hookspecs import hookimpl

if TYPE_CHECKING:
    from collections.abc import Callable

    from velollm_core.contract.formats import ConfigFormat

RENDER = "velollm_core.tune.render"


@hookimpl(tryfirst=True)
def register_config_formats(register: Callable[[ConfigFormat], None]) -> None:
    """shell, systemd, launchctl, powershell and json."""
    from velollm_core.contract.formats import ConfigFormat, imported_on_call

    register(ConfigFormat("shell", imported_on_call(RENDER, "render_shell"), suffixes=(".sh", ".bash", ".env"),
                          description="export lines for the shell that starts the server"))
    register(ConfigFormat("systemd", imported_on_call(RENDER, "render_systemd_service"), suffixes=(".conf",),
                          description="a drop-in for the runtime's systemd service"))
    register(ConfigFormat("launchctl", imported_on_call(RENDER, "render_launchctl"), suffixes=(".plist",),
                          description="launchctl setenv lines (macOS)"))
    register(ConfigFormat("powershell", imported_on_call(RENDER, "render_powershell"), suffixes=(".ps1",),
                          description="per-user environment variables (Windows)"))
    register(ConfigFormat("json", imported_on_call(RENDER, "render_json"), suffixes=(".json",),
                          description="the proposals as JSON"))
