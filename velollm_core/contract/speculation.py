"""What the core asks of a backend's speculative object: the ``speculative_backend`` door's answer.

``velollm speculative check | bench | pairs`` know no runtime: the speculation types, their rules, the
flags that start them, what a step costs and how many drafted tokens the server accepted are the
backend's. A backend offers speculation by declaring ``capabilities.speculative`` and returning such an
object from ``Backend.speculative()`` (the hook's default answers with it), or by answering the hook
itself. A configuration is a list of the backend's type names (llama.cpp's ``--spec-type`` values,
Ollama's ``draft`` / ``mtp``); its "server args" are whatever text switches it on for that runtime
(llama-server flags; Ollama's Modelfile lines).

A comparison calls, in order: ``handles`` (which backend, where none is named) -> ``resolve`` ->
``base_options`` -> ``settings`` / ``server_args`` / ``configure`` per configuration (nothing has
started yet) -> per server: the Backend's ``start``, then ``prepare`` -> runs, reading ``acceptance``
and ``acceptance_counters`` -> ``explain_difference`` (texts that part, the plain server still up)
-> ``infer_acceptance`` (runtimes that count nothing) -> ``measure_costs``
(the advisor: fitted to the counted acceptance, or where the runtime counts none, the acceptance fitted
to the measured speedup) -> ``ready_command``. ``speculative search`` asks ``knobs`` for its grid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Speculative(Protocol):
    """The speculative object of one backend; every method is called by the core, in this order of need."""

    backend: str  # the registered backend that runs both servers of a comparison
    runtime: str  # how messages name the runtime ("llama.cpp")
    default_draft_max: int | None  # tokens drafted per step when the user gives none (advisor's reference)

    def handles(self, model: str) -> bool:
        """Whether ``model``, as the user wrote it, is this runtime's to run (llama.cpp: a GGUF path or
        a bundled test model; Ollama: a model of its store). With several speculative backends and no
        ``--backend``, the one backend that handles the target is chosen; no network."""

    def parse_types(self, value: str) -> list[str]:
        """One ``--spec-type`` value (a comma list) as type names; UserInputError for unknown ones."""

    def check(self, target: Path, draft: Path | None, combinations: list[list[str]]) -> dict:
        """``speculative check``'s JSON document: ``target``, ``draft``, ``types`` {type: {supported, why}},
        ``supported``, ``combinations`` (what runs), ``refused`` {combination: [reasons]}; with a draft also
        ``compatible``, ``drafters`` (the types it serves), ``reasons`` (why none) and the pair's facts
        (``target_size_bytes``, ``draft_size_bytes``, ``target_vocab``, ``draft_vocab``, ``problems``)."""

    def resolve(self, target: str, draft: str | None, configs: list[list[str]]) -> dict:
        """The comparison's models and configurations, checked before anything starts:
        {"target", "draft": Path | None, "support", "configs", "compatibility"}: ``target`` the model as
        ``configure`` and ``ready_command`` take it (llama.cpp: the GGUF Path; Ollama: its name), ``draft``
        the draft's file. ``configs`` [["all"]]: every supported one; []: what the draft names.
        UserInputError / VeloError to refuse."""

    def pairs(self, models: list[dict], *, max_ratio: float = 0.5) -> list[dict]:
        """Compatible {target, draft, size_ratio} pairs among ``models`` ({name, path, ...})."""

    def roles(self, types: list[str]) -> dict[str, bool]:
        """{"drafter", "draft_model", "head"}: whether the configuration drafts with a model or head, a
        separate draft model the cost measurement times, a head reading the target's hidden states."""

    def knobs(self, types: list[str]) -> tuple[str, ...]:
        """The settings of the configuration a search varies beside ``draft_max`` (llama.cpp: ``p_min``
        for a drafter, ``ngram_match`` for n-gram drafting; Ollama: none); () where it has none."""

    def settings(self, types: list[str], **settings: Any) -> dict:
        """The configuration's settings as ``server_args`` takes them and the report records them."""

    def draft_max(self, types: list[str], settings: dict[str, Any], spec_args: list[str]) -> int | None:
        """Tokens drafted per step by this configuration (from ``settings`` or the server flags it runs
        with), or None where it has no such bound: what the result records as ``settings.draft_max``."""

    def uses_draft_file(self, types: list[str], draft_path: Path | None) -> bool:
        """Whether the configuration loads the draft file."""

    def server_args(self, *, draft_path: Path | None = None, **settings: Any) -> list[str]:
        """What switches the configuration on, as text ``configure`` reads and the report records
        (llama.cpp: llama-server flags; Ollama: Modelfile lines)."""

    def base_options(self, options: dict[str, Any], *, threads: int | None = None, exact: bool = True) -> dict:
        """The backend options both servers run with (``--option``s, ``--threads``; with ``exact``, those
        under which speculative and plain decoding give the same greedy text)."""

    def configure(self, target: Any, options: dict[str, Any], args: list[str]) -> tuple[str, dict]:
        """(model, backend options) of one server of the comparison: the model name its requests carry
        and the options it runs with, ``options`` (``base_options``) switched on by ``args``
        (``server_args``; empty: the plain server). No network: ``prepare`` makes what it names."""

    def prepare(self, context: Any, target: Any, args: list[str]) -> None:
        """Make what the server of a configuration (``args``; empty: the plain server) needs before its
        first request, once its Backend has started on ``context`` (Ollama: the temporary model of
        ``target`` with the draft, named ``context.model``), registering the undoing on
        ``context.resources``; nothing where options alone switch it on. UserInputError to refuse."""

    def acceptance(self, extra: dict) -> tuple[int, int] | None:
        """(drafted, accepted) tokens of one generation, from its ``GenerationTiming.extra``; None where
        the runtime counts none (then ``infer_acceptance`` is asked and the advisor infers acceptance
        from the measured speedup)."""

    def infer_acceptance(self, speedup: float | None, draft_max: int | None) -> dict | None:
        """For a runtime that counts no acceptance: what a configuration's measured ``speedup`` implies
        about it (lower bounds, with the method written out), recorded as the configuration's
        ``inferred``; None where nothing can be said."""

    def explain_difference(self, context: Any, prompt: str, vanilla_text: str, speculative_text: str) -> dict | None:
        """Why the greedy texts of a plain and a speculative run of ``prompt`` part, asked of the plain
        server (``context``, still running): {token (index of the first differing token), vanilla_token,
        speculative_token, candidates [{id, text, logprob}] (its top candidates at the common prefix),
        logprob_gap, near_tie (both tokens the top two, within the runtime's small margin), why (one
        sentence)}; None where the runtime cannot say."""

    def acceptance_counters(self, context: Any) -> dict | None:
        """The server's acceptance counters now, {steps, drafted, accepted, per_position}; None without."""

    def measure_costs(self, target: Path, draft: Path | None, *, threads: int | None = None, exact: bool = False,
                      options: dict[str, Any] | None = None) -> dict:
        """Per-token and per-batch costs (ms) of target and draft, for the advisor (``speculative.advisor``):
        ``target_token_ms``, ``draft_token_ms`` (0 for draftless drafting), ``verify_ms`` {k: ms of a
        batch of k+1 tokens}. Asked after the runs; a VeloError where the runtime cannot time them (the
        advisor then says so; the measurements stand)."""

    def ready_command(self, target: Path, spec_args: list[str], *, threads: int | None = None,
                      options: dict[str, Any] | None = None) -> list[str]:
        """The command line (argv) that realizes a configuration for the user (llama.cpp: the server's;
        Ollama: ``ollama create`` of a Modelfile this call writes)."""
