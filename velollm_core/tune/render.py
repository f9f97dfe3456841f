"""Render configuration proposals as text a user runs or installs: shell, systemd, launchctl, PowerShell, JSON.

Values come from hardware probes, model files and the user's own settings, so every value is
quoted for its target (never pasted raw) and every variable name is checked before it is written.
"""

from __future__ import annotations

import json
import re
import shlex
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from velollm_core.contract.errors import UserInputError, VeloError
from velollm_core.tune import systemd

if TYPE_CHECKING:  # the models import pydantic: kept off the CLI's start-up path
    from velollm_core.contract.schemas import ConfigChange, ConfigProposal

# The built-in formats (tune/plugin.py registers them); plugins add more (``register_config_formats``).
FORMATS = ("shell", "systemd", "launchctl", "powershell", "json")
DEFAULT_FORMAT = "shell"

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# PowerShell ends a single-quoted string at any of these, not only at the ASCII quote.
_PS_SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"


def format_for_path(path: Path) -> str:
    """The output format implied by a file name (``.json`` -> json, ``.conf`` -> systemd, ...), else shell."""
    from velollm_core.contract.formats import config_formats, format_for_suffix

    return format_for_suffix(config_formats(), path.suffix) or DEFAULT_FORMAT


def check_env_name(key: str) -> str:
    """Return ``key`` when it is a plain environment variable name; refuse anything else."""
    if not _ENV_NAME.match(key):
        raise VeloError(f"refusing to render {key!r}: not a valid environment variable name")
    return key


def comment_text(text: str) -> str:
    """One line of comment text: control characters and line separators become spaces."""
    return "".join(" " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in text)


def env_changes(proposal: ConfigProposal) -> list[ConfigChange]:
    """The environment-variable changes of a proposal (flag changes are rendered as comments)."""
    return [change for change in proposal.changes if change.kind == "env"]


def _show(value: str | None) -> str:
    return "unset" if value is None else value


def _change_comment(change: ConfigChange) -> str:
    return comment_text(f"{change.key}: {_show(change.current)} -> {_show(change.proposed)}. {change.reason}")


def _flag_comments(proposal: ConfigProposal) -> list[str]:
    lines = []
    for change in proposal.changes:
        if change.kind == "flag":
            lines.append("# flag " + _change_comment(change))
    if proposal.command:
        lines.append("# command: " + comment_text(shlex.join(proposal.command)))
    return lines


def _notes(proposal: ConfigProposal) -> list[str]:
    return ["# note: " + comment_text(note) for note in proposal.notes]


def _header(proposal: ConfigProposal, how: str) -> list[str]:
    title = comment_text(f"VeloLLM proposal for {proposal.runtime} (velollm optimize)")
    return [f"# {title}", f"# {how}"]


def _render_lines(
    proposals: Iterable[ConfigProposal], how: str, set_line, unset_line
) -> str:
    """Shared layout of the line-per-variable formats: header, reason comment, then the command."""
    out: list[str] = []
    for proposal in proposals:
        if out:
            out.append("")
        out += _header(proposal, how)
        out += _notes(proposal)
        out += _flag_comments(proposal)
        changes = env_changes(proposal)
        if not changes and not proposal.command:
            out.append("# nothing to change")
        for change in changes:
            key = check_env_name(change.key)
            out.append("# " + _change_comment(change))
            out.append(unset_line(key) if change.proposed is None else set_line(key, change.proposed))
    return "\n".join(out) + "\n"


def command_line(proposal: ConfigProposal) -> str | None:
    """The ready shell command of a runtime configured by flags alone (llama-server), else None."""
    return shlex.join(proposal.command) if proposal.command and not env_changes(proposal) else None


def render_shell(proposals: list[ConfigProposal]) -> str:
    """``export KEY=value`` lines, each value shell-quoted, for the shell that starts the server; a
    runtime configured by flags alone (llama-server) gets its runnable command line."""
    text = _render_lines(
        proposals,
        "Source this in the shell that starts the server (`. ./FILE`), then restart the server.",
        lambda key, value: f"export {key}={shlex.quote(value)}",
        lambda key: f"unset {key}",
    )
    commands = [command for command in map(command_line, proposals) if command]
    return text + "".join(f"{command}\n" for command in commands)


# --- the table `velollm optimize` prints -----------------------------------------------------------


def _shown(value: str | None) -> str:
    return "(unset)" if value is None else value


def _proposal_table(proposal: ConfigProposal):
    """setting | current | proposed | why: wide terminals."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{escape(proposal.runtime)}: proposed configuration", show_lines=True)
    table.add_column("setting", no_wrap=True)
    table.add_column("current", min_width=20)  # short phrases that may wrap
    table.add_column("proposed", no_wrap=True)
    table.add_column("why", min_width=40)
    for change in proposal.changes:
        table.add_row(escape(change.key), escape(_shown(change.current)),
                      f"[bold]{escape(_shown(change.proposed))}[/bold]", escape(change.reason))
    return table


def _proposal_stacked(proposal: ConfigProposal):
    """setting | "current -> proposed" above its reason: the reason gets the whole width."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{escape(proposal.runtime)}: proposed configuration", show_lines=True)
    table.add_column("setting", no_wrap=True)
    table.add_column("current → proposed, and why")
    for change in proposal.changes:
        table.add_row(escape(change.key), f"{escape(_shown(change.current))} → "
                      f"[bold]{escape(_shown(change.proposed))}[/bold]\n[dim]{escape(change.reason)}[/dim]")
    return table


def print_proposals(proposals: list[ConfigProposal], console) -> None:
    """Current -> proposed with the reason of each change, one table per runtime; then its notes and,
    for a runtime configured by flags alone, the command line that ``--format shell`` ends with."""
    from rich.markup import escape
    from rich.padding import Padding

    from velollm_core.tables import fitting

    if not proposals:
        console.print("No installed plugin has a proposal for this machine.")
    for proposal in proposals:
        if proposal.changes:
            console.print(fitting(console, lambda p=proposal: _proposal_table(p),
                                  lambda p=proposal: _proposal_stacked(p)))
        else:
            console.print(f"{escape(proposal.runtime)}: nothing to change.")
        for note in proposal.notes:
            console.print(Padding(f"note: {escape(note)}", (0, 0, 0, 2)))  # wrapped lines stay indented
        command = command_line(proposal)
        if command:
            console.print("run:", style="bold")
            # One unbroken line (soft wrap): what is copied from the terminal runs as it is.
            console.print(command, soft_wrap=True, markup=False, highlight=False)


def render_launchctl(proposals: list[ConfigProposal]) -> str:
    """``launchctl setenv`` lines for macOS apps (they last until the next reboot)."""
    return _render_lines(
        proposals,
        "Run these in Terminal, then quit the app from the menu bar and open it again "
        "(launchctl settings last until reboot).",
        lambda key, value: f"launchctl setenv {key} {shlex.quote(value)}",
        lambda key: f"launchctl unsetenv {key}",
    )


def powershell_quote(value: str) -> str:
    """A PowerShell single-quoted string literal: every single-quote character doubled."""
    return "'" + "".join(ch * 2 if ch in _PS_SINGLE_QUOTES else ch for ch in value) + "'"


def render_powershell(proposals: list[ConfigProposal]) -> str:
    """Persistent per-user variables through ``[Environment]::SetEnvironmentVariable``."""
    return _render_lines(
        proposals,
        "Run in PowerShell, then quit the app from the taskbar and start it again.",
        lambda key, value: f"[Environment]::SetEnvironmentVariable({powershell_quote(key)}, "
        f"{powershell_quote(value)}, 'User')",
        lambda key: f"[Environment]::SetEnvironmentVariable({powershell_quote(key)}, $null, 'User')",
    )


def restart_commands(unit: str) -> str:
    return f"sudo systemctl daemon-reload && sudo systemctl restart {unit}"


def render_systemd(
    proposal: ConfigProposal,
    kept: dict[str, str] | None = None,
    kept_unset: Iterable[str] = (),
) -> str:
    """A drop-in for the proposal's unit: ``[Service]`` with ``Environment=`` lines and restart commands.

    ``kept`` / ``kept_unset``: settings of a previous VeloLLM drop-in that this proposal leaves alone,
    so rewriting the file never silently drops them.
    """
    unit = proposal.systemd_unit
    if not unit:
        raise UserInputError(f"{proposal.runtime} does not run as a systemd service: use another --format")
    path = systemd.dropin_path(unit)
    out = _header(proposal, f"Install as {path}, then run:")
    out.append(f"#   {restart_commands(unit)}")
    out += _notes(proposal)
    out += _flag_comments(proposal)
    out.append("[Service]")
    changed = {change.key for change in env_changes(proposal)}
    for key, value in sorted((kept or {}).items()):
        if key not in changed:
            out.append("# kept from the previous VeloLLM drop-in")
            out.append(f'Environment="{check_env_name(key)}={systemd.escape_value(value)}"')
    for key in sorted(set(kept_unset) - changed):
        out.append("# kept from the previous VeloLLM drop-in")
        out.append(f"UnsetEnvironment={check_env_name(key)}")
    for change in env_changes(proposal):
        key = check_env_name(change.key)
        out.append("# " + _change_comment(change))
        if change.proposed is None:
            out.append(f"UnsetEnvironment={key}")
        else:
            out.append(f'Environment="{key}={systemd.escape_value(change.proposed)}"')
    return "\n".join(out) + "\n"


def render_json(proposals: list[ConfigProposal]) -> str:
    return json.dumps({"proposals": [p.model_dump(mode="json") for p in proposals]}, indent=2) + "\n"


def render_systemd_service(proposals: list[ConfigProposal]) -> str:
    """The drop-in of the one service among ``proposals``; refused when there is none or several."""
    services = [p for p in proposals if p.systemd_unit]
    if len(services) != 1:
        names = ", ".join(p.runtime for p in (services or proposals)) or "none"
        raise UserInputError(
            f"--format systemd writes the drop-in of one service; runtimes here: {names}. "
            "Choose one with --backend."
        )
    return render_systemd(services[0])


def render(proposals: list[ConfigProposal], fmt: str) -> str:
    """Render ``proposals`` in the registered format ``fmt`` (``FORMATS`` and the plugins' formats)."""
    from velollm_core.contract.formats import config_formats

    formats = config_formats()
    if fmt not in formats:
        raise UserInputError(f"unknown format {fmt!r}; known: {', '.join(formats)}")
    return formats[fmt].render(proposals)
