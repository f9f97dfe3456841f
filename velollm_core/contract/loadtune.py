"""Tuning for a load: what a backend hands the core so that ``velollm optimize --for-concurrency N
--verify`` can search its server's flags at N streams (``Backend.tune_for_load``).

The backend knows its flags: where to start (its proposal for N slots), which single changes may
matter at that load (``LoadStep``), how a set of flags becomes benchmark options, and how it reads as
a command. The core (``velollm_core.tune.load``) measures every step A/B at the load and decides.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LoadStep:
    """One change to try: ``name`` as a user reads it (``-fa on``), ``why`` it may help at load, and
    ``apply(flags)``: the current flags with the change made, or None where it changes nothing."""

    name: str
    why: str
    apply: Callable[[list[str]], list[str] | None]


@dataclass(frozen=True)
class LoadTuning:
    """A backend's answer to ``tune_for_load``: ``model`` as the benchmark starts it, ``start_args``
    (the server flags to start from), ``steps`` in the order to try them, ``options_for(flags)`` (the
    benchmark options that start the server with exactly those flags) and ``command_for(flags)`` (the
    command a user runs)."""

    model: str
    start_args: list[str]
    steps: list[LoadStep]
    options_for: Callable[[list[str]], dict[str, Any]]
    command_for: Callable[[list[str]], list[str]]
