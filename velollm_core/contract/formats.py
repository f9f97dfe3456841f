"""Output formats that plugins register: report formats (``velollm report --format``) and config formats
(``velollm optimize --format``).

A plugin implements ``register_report_formats(register)`` or ``register_config_formats(register)`` and
calls ``register(ReportFormat(...))`` / ``register(ConfigFormat(...))``; the built-in formats register
the same way, from the report and tune features. A name is taken by its first registration, in
pluggy's call order (the built-ins register ``tryfirst``, so their names stay theirs); a later one, or an
object that is not a format, costs a warning, not the command.
Nothing here imports a feature or pydantic: the CLI builds its ``--format`` choices from these names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:  # the models import pydantic: kept off the CLI's start-up path
    from velollm_core.contract.schemas import ConfigProposal

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*\Z")
# Per hook: the plugins registered when the formats were collected, and the formats. Collected again
# when the plugins change (a test registering a fake), so a bad registration is warned about once.
_collected: dict[str, tuple[frozenset[object], dict[str, Any]]] = {}


@dataclass
class ReportSource:
    """One input of ``velollm report``: a result document, scrubbed of secrets as it was loaded."""

    name: str  # as given: a path, or '#12' for a history id
    kind: str  # benchmark, speculative, verify
    data: dict[str, Any]  # the result document (the JSON of docs/PLUGINS.md's result schemas)
    label: str = ""  # short name for legends, unique among the sources

    def results(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(side, legend name, benchmark-shaped result): one for a benchmark, two for a speculative bench."""
        if self.kind == "benchmark":
            return [("", self.label, self.data)]
        if self.kind == "speculative":
            return [(side, f"{self.label} {side}", self.data[side]) for side in ("vanilla", "speculative")
                    if isinstance(self.data.get(side), dict)]
        return []


@dataclass(frozen=True)
class ReportFormat:
    """A ``velollm report --format`` choice: ``render(sources)`` returns the whole report as text."""

    name: str
    render: Callable[[list[ReportSource]], str]
    suffixes: tuple[str, ...] = ()  # ".csv": --output FILE.csv picks this format when --format is not given
    # The first bytes of what ``render`` writes: a file starting with them may be replaced without --force.
    marker: bytes | None = None
    file_only: bool = False  # written with --output only, never to the terminal (html)
    description: str = ""


@dataclass(frozen=True)
class ConfigFormat:
    """A ``velollm optimize --format`` choice: ``render(proposals)`` returns the settings as text.

    ``render`` raises ``UserInputError`` for proposals the format cannot express (a systemd drop-in
    is written for one service).
    """

    name: str
    render: Callable[[list[ConfigProposal]], str]
    suffixes: tuple[str, ...] = ()  # ".ps1": --output FILE.ps1 picks this format when --format is not given
    description: str = ""


Format = TypeVar("Format", ReportFormat, ConfigFormat)


def imported_on_call(module: str, name: str) -> Callable[..., Any]:
    """``module.name``, imported when first called: formats are registered at every plugin load, and
    their renderers' imports would slow every command down."""

    def call(*args: Any, **kwargs: Any) -> Any:
        import importlib

        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__qualname__ = call.__name__ = name
    return call


def _collect(hook_name: str, kind: type[Format]) -> dict[str, Format]:
    """Every format the plugins register through ``hook_name``, by name, in pluggy's call order."""
    from velollm_core.contract import plugins

    plugins.load_plugins()
    registered = frozenset(plugins.pm.get_plugins())
    if hook_name in _collected and _collected[hook_name][0] == registered:
        return _collected[hook_name][1]
    found: dict[str, Format] = {}

    def register(item: Format) -> None:
        if not isinstance(item, kind):
            plugins.warn(f"{hook_name}: {item!r} is no velollm_core.api.{kind.__name__}; ignored")
        elif not isinstance(item.name, str) or not _NAME.match(item.name):
            plugins.warn(f"{hook_name}: format name {item.name!r} is not lower-case letters, digits, - or _; ignored")
        elif item.name in found:
            plugins.warn(f"{hook_name}: format {item.name!r} is registered twice; the first one is kept")
        else:
            found[item.name] = item

    plugins.call_each(hook_name, register=register)
    _collected[hook_name] = (registered, found)
    return found


def report_formats() -> dict[str, ReportFormat]:
    """The registered report formats, by name."""
    return _collect("register_report_formats", ReportFormat)


def config_formats() -> dict[str, ConfigFormat]:
    """The registered config formats, by name."""
    return _collect("register_config_formats", ConfigFormat)


def format_for_suffix(formats: dict[str, Format], suffix: str) -> str | None:
    """The name of the first format claiming the file suffix ``suffix`` (any case), else None."""
    return next((name for name, item in formats.items() if suffix.lower() in item.suffixes), None)


class FormatChoice(click.Choice):
    """A ``--format`` option whose choices are the registered formats' names, read when first needed
    (help, or a value to check): importing a command module loads no plugin."""

    def __init__(self, names: Callable[[], Iterable[str]]) -> None:
        self._names = names
        super().__init__(())

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(self._names())

    @choices.setter
    def choices(self, _ignored: Iterable[str]) -> None:
        pass  # click.Choice.__init__ assigns its fixed choices; these come from the registry
