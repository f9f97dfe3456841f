"""Ollama's speculative decoding behind the ``speculative_backend`` door: ``velollm speculative check |
bench | pairs --backend ollama`` ask ``OllamaSpeculative`` for Ollama's rules, as they ask llama.cpp's
object for its own.

Ollama has two speculation types: ``draft`` (a smaller model of its store loaded as the target's
``DRAFT`` layer) and ``mtp`` (the target's own multi-token-prediction head), both drafting
``draft_num_predict`` tokens a step. A configuration is switched on by Modelfile lines (its "server
args": ``DRAFT "<blob>"``, ``PARAMETER draft_num_predict "N"``), not by server flags: the draft needs a
temporary model (``/api/create``, deleted when the comparison ends), the head only the option. Ollama
counts no accepted tokens: acceptance is inferred from the measured speedup (``drafts.infer_acceptance``
for its lower bounds; the core's advisor fits it to the speedup with the costs ``measure_costs`` times on
the server). Its one knob is the draft length, so a search varies type and draft_num_predict alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from velollm_core.api import BackendError, UserInputError, VeloError
from velollm_ollama.drafts import DEFAULT_DRAFT_NUM_PREDICT, PROBE_SUFFIX, modelfile_value

TYPES = ("draft", "mtp")
# The one CLI setting Ollama has (draft_num_predict); p_min is llama.cpp's and Ollama sets its own.
SETTINGS = ("draft_max", "p_min")
# What the costs are timed on: prose of a few hundred tokens (a batch the prompt rate is read from),
# after a nonce so no earlier request's cache answers it, and the decode tokens timed per model.
COST_PROMPT = ("Continue this report in plain sentences. The survey covered rivers, lakes and coastal waters over "
               "four seasons; samples were taken at dawn and at noon, filtered, weighed and logged with their "
               "temperature, depth and the weather of the day. ") * 4
COST_TOKENS = 48
COST_RUNS = 3  # per model: the first has no prompt rate (its cache state is unknown), the median of the rest
# Batch sizes (drafted tokens + 1) whose verification cost is estimated from the prompt rate.
VERIFY_SIZES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)


def parse_lines(args: list[str]) -> tuple[str | None, dict[str, Any]]:
    """(the DRAFT file, the PARAMETERs) of a configuration's Modelfile lines; UserInputError for others."""
    draft, parameters = None, {}
    for line in args:
        keyword, _, rest = str(line).strip().partition(" ")
        if keyword == "DRAFT" and rest:
            draft = _unquoted(rest)
        elif keyword == "PARAMETER" and " " in rest.strip():
            key, value = rest.strip().split(" ", 1)
            parameters[key] = _value(_unquoted(value))
        else:
            raise UserInputError(f"Ollama switches speculation on with Modelfile lines (DRAFT \"FILE\", PARAMETER "
                                 f"KEY \"VALUE\"), not {line!r}")
    return draft, parameters


def _unquoted(text: str) -> str:
    text = text.strip()
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def _value(text: str) -> Any:
    """A PARAMETER value as Ollama's options take it: a number where it reads as one, else the text."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else text


def _mtp_problem(target: Path) -> str | None:
    """Why ``target`` has no head Ollama drafts with: Ollama reads ``<arch>.nextn_predict_layers``."""
    from velollm_gguf import read_summary

    layers = read_summary(target).arch_value("nextn_predict_layers")
    if isinstance(layers, int) and layers > 0:
        return None
    return "the target has no MTP head (<arch>.nextn_predict_layers is not set)"


class OllamaSpeculative:
    """The ``speculative_backend`` of velollm-ollama."""

    backend = "ollama"
    runtime = "Ollama"
    default_draft_max = DEFAULT_DRAFT_NUM_PREDICT
    host: str | None = None  # the server of the comparison (``prepare``), which ``measure_costs`` times

    # --- what the commands ask before anything starts ----------------------------------------------

    def handles(self, model: str) -> bool:
        """A model of this machine's Ollama store (a GGUF path is another runtime's)."""
        from velollm_ollama.store import ModelStore

        path = Path(model).expanduser()
        if path.suffix.lower() == ".gguf" or path.exists():
            return False
        try:
            return ModelStore.default().find(model) is not None
        except UserInputError:  # not a valid Ollama name
            return False

    def parse_types(self, value: str) -> list[str]:
        """``draft`` or ``mtp``: Ollama drafts with one of them at a time."""
        types = [name.strip() for name in value.split(",") if name.strip()]
        unknown = [name for name in types if name not in TYPES]
        if unknown or not types:
            raise UserInputError(f"unknown Ollama speculation type {', '.join(unknown) or value!r}; known: "
                                 f"{', '.join(TYPES)}")
        if len(types) > 1:
            raise UserInputError(f"Ollama drafts with one type at a time, not {value!r}")
        return types

    def _support(self, target: Path, draft: Path | None) -> dict[str, str | None]:
        """{type: None where it runs, else why not}, from the GGUF files (Ollama's runner is llama.cpp,
        whose vocabulary rules a draft must pass)."""
        from velollm_gguf.compat import check_pair

        if draft is None:
            why = "needs a draft model (--draft NAME, a smaller model of the store)"
        else:
            pair = check_pair(target, draft)
            why = "; ".join(pair.problems) if not pair.compatible else None
            if why is None and pair.facts["draft_size_bytes"] >= pair.facts["target_size_bytes"]:
                why = "the draft is not smaller than the target: it cannot be faster"
        return {"draft": why, "mtp": _mtp_problem(target)}

    @staticmethod
    def _refusals(configs: list[list[str]], support: dict[str, str | None]) -> list[str]:
        return [f"{t}: {support[t]}" for c in configs for t in c if support.get(t)]

    def check(self, target: Path, draft: Path | None, combinations: list[list[str]]) -> dict:
        """``velollm speculative check``: which of ``draft`` / ``mtp`` run for ``target`` (and ``draft``)."""
        from velollm_gguf.compat import check_pair

        support = self._support(target, draft)
        refused = {",".join(c): self._refusals([c], support) for c in combinations}
        pair = check_pair(target, draft).to_json() if draft is not None else {"draft": None}
        names = _store_names()
        report = {
            **pair,
            # As Ollama names them where they are models of its store (the check reads their files).
            "target": names.get(target, str(target)),
            "draft": names.get(draft, str(draft)) if draft is not None else None,
            "types": {t: {"supported": why is None, "why": why} for t, why in support.items()},
            "supported": [t for t, why in support.items() if why is None],
            "combinations": [t for t, why in support.items() if why is None],
            "refused": {name: problems for name, problems in refused.items() if problems},
        }
        if draft is not None:
            report["drafters"] = ["draft"] if support["draft"] is None else []
            report["compatible"] = bool(report["drafters"])
            report["reasons"] = [] if report["compatible"] else [support["draft"]]
        return report

    def resolve(self, target: str, draft: str | None, configs: list[list[str]]) -> dict:
        """The target's name (what requests and the temporary model name), the draft's file in the store,
        the configurations; all checked before anything starts."""
        from velollm_gguf.compat import check_pair

        from velollm_core.api import resolve_model_path

        target_path = resolve_model_path(target)
        draft_path = None
        if draft is not None:
            if not self.handles(draft):
                raise UserInputError(f"Ollama's DRAFT is a model of its store: {draft!r} is not one (ollama pull it)")
            draft_path = resolve_model_path(draft)
        support = self._support(target_path, draft_path)
        if configs == [["all"]]:
            configs = [[t] for t, why in support.items() if why is None]
        elif not configs:
            configs = [["draft"]]
        problems = self._refusals(configs, support)
        if draft_path is not None and not any("draft" in c for c in configs):
            problems.append("a draft model is given but no configuration uses the draft type")
        if not configs:
            problems.append("no speculation type runs for this target" + (" and draft" if draft_path else ""))
        if problems:
            raise UserInputError("cannot speculate so: " + "; ".join(problems))
        compatibility = check_pair(target_path, draft_path).to_json() if draft_path is not None else None
        return {"target": target, "draft": draft_path, "support": support, "configs": configs,
                "compatibility": compatibility}

    def pairs(self, models: list[dict], *, max_ratio: float = 0.5) -> list[dict]:
        """Compatible pairs among the models of Ollama's store, named as Ollama names them."""
        from velollm_gguf.compat import find_pairs

        names = {model["path"]: model["name"] for model in models if model.get("source") == "ollama"}
        return [{**pair, "target": names[pair["target"]], "draft": names[pair["draft"]]}
                for pair in find_pairs([{"name": n, "path": p} for p, n in names.items()], max_ratio=max_ratio)]

    # --- one configuration -----------------------------------------------------------------------------

    @staticmethod
    def roles(types: list[str]) -> dict[str, bool]:
        """``draft`` drafts with a separate model, ``mtp`` with a head on the target."""
        return {"drafter": True, "draft_model": types == ["draft"], "head": types == ["mtp"]}

    @staticmethod
    def knobs(types: list[str]) -> tuple[str, ...]:
        """None beside the draft length: Ollama sets the draft's confidence floor itself."""
        return ()

    def settings(self, types: list[str], **settings: Any) -> dict:
        """``draft_max`` as draft_num_predict (Ollama's default 4); settings Ollama has not are refused."""
        unsupported = sorted(key for key, value in settings.items() if key not in SETTINGS and value is not None)
        if unsupported:
            flags = ", ".join("--" + key.replace("_", "-") for key in unsupported)
            raise UserInputError(f"Ollama has no setting for {flags}: it drafts draft_num_predict (--draft-max) "
                                 "tokens a step")
        return {"draft": "model" if types == ["draft"] else "mtp", "types": list(types),
                "draft_max": settings.get("draft_max") or DEFAULT_DRAFT_NUM_PREDICT}

    def draft_max(self, types: list[str], settings: dict[str, Any], spec_args: list[str]) -> int | None:
        """draft_num_predict: the last PARAMETER line that sets it, else the setting, else Ollama's default."""
        found = parse_lines(spec_args)[1].get("draft_num_predict")
        if isinstance(found, int):
            return found
        return settings.get("draft_max") if isinstance(settings.get("draft_max"), int) else self.default_draft_max

    def uses_draft_file(self, types: list[str], draft_path: Path | None) -> bool:
        return draft_path is not None and "draft" in types

    def server_args(self, *, draft_path: Path | None = None, **settings: Any) -> list[str]:
        """The Modelfile lines of the configuration: ``DRAFT`` (a draft model) and draft_num_predict."""
        lines = [f"DRAFT {modelfile_value(draft_path, 'draft path')}"] if draft_path is not None else []
        draft_max = settings.get("draft_max") or DEFAULT_DRAFT_NUM_PREDICT
        return [*lines, f"PARAMETER draft_num_predict {modelfile_value(int(draft_max))}"]

    def base_options(self, options: dict[str, Any], *, threads: int | None = None, exact: bool = True) -> dict:
        """The user's options and ``threads`` (num_thread). ``exact`` is not applied: Ollama has no switch
        for batch-invariant kernels, so matching text is measured, not arranged."""
        return {**options, **({"num_thread": threads} if threads else {})}

    def configure(self, target: str, options: dict[str, Any], args: list[str]) -> tuple[str, dict]:
        """The plain server: the target with draft_num_predict 0 (an MTP head then stays off). A draft:
        the temporary model ``prepare`` makes, one per draft length (the configurations of a search
        each make and delete their own). A head: the target. Both with the PARAMETERs as options."""
        from velollm_ollama.drafts import drafted_name

        draft, parameters = parse_lines(args)
        length = parameters.get("draft_num_predict")
        suffix = PROBE_SUFFIX + (f"-{length}" if isinstance(length, int) else "")
        model = drafted_name(target, suffix) if draft is not None else target
        return model, {**options, "draft_num_predict": 0, **parameters}

    def prepare(self, context, target: str, args: list[str]) -> None:
        """Check the server drafts at all; with a DRAFT line, make the temporary model (deleted when the
        comparison's resources close)."""
        self.host = context.host
        if not args:
            return
        from velollm_ollama.backend import client_for
        from velollm_ollama.drafts import check_drafted, create_drafted, require_drafts

        client = client_for(context)
        require_drafts(client.version())
        draft, parameters = parse_lines(args)
        if draft is None:
            return
        create_drafted(client, context.model, target, Path(draft), parameters)
        context.resources.callback(_delete, client, context.model)
        check_drafted(client, context.model)

    # --- what the runs tell -------------------------------------------------------------------------

    @staticmethod
    def acceptance(extra: dict) -> tuple[int, int] | None:
        """None: Ollama counts no drafted or accepted tokens."""
        return None

    @staticmethod
    def acceptance_counters(context) -> dict | None:
        return None

    @staticmethod
    def explain_difference(context, prompt: str, vanilla_text: str, speculative_text: str) -> dict | None:
        """None: Ollama's API gives no token candidates to tell a near-tie from a real difference."""
        return None

    @staticmethod
    def infer_acceptance(speedup: float | None, draft_max: int | None) -> dict | None:
        """Lower bounds on tokens per step and the accepted share, from the speedup (``drafts.infer_acceptance``;
        the draft's own cost is not measured here, which keeps them lower bounds)."""
        from velollm_ollama.drafts import infer_acceptance

        return infer_acceptance(speedup, draft_max or DEFAULT_DRAFT_NUM_PREDICT, None)

    def measure_costs(self, target: str, draft: Path | None, *, threads: int | None = None, exact: bool = False,
                      options: dict[str, Any] | None = None) -> dict:
        """Per-token costs timed on the server the comparison ran on: the target's decode (draft_num_predict
        0) and prompt rates, the draft model's decode alone. Ollama cannot time a batch of k+1 tokens
        alone: its verification is estimated as max(one decode step, k+1 tokens at the prompt rate), the
        roofline of a batch. An MTP head cannot run alone either: its cost is taken as 0, so the
        acceptance the advisor fits to the speedup is a lower bound."""
        from velollm_ollama.client import OllamaClient

        base = self.base_options(options or {}, threads=threads)
        draft_name = _store_names().get(draft) if draft is not None else None
        if draft is not None and draft_name is None:
            raise BackendError(f"the draft {draft} is no model of Ollama's store, so it cannot be timed alone")
        client = OllamaClient(self.host)
        try:
            version = client.version()
            target_decode, target_prompt = _time_model(client, target, {**base, "draft_num_predict": 0}, version)
            draft_decode = _time_model(client, draft_name, base, version)[0] if draft_name else None
        finally:
            client.close()
        if not target_decode or (draft_name and not draft_decode):
            raise BackendError("Ollama reported no decode rate for the cost runs")
        target_ms = 1000.0 / target_decode
        prompt_ms = 1000.0 / target_prompt if target_prompt else None
        return {
            "target_token_ms": target_ms,
            "draft_token_ms": 1000.0 / draft_decode if draft_decode else 0.0,
            "verify_ms": {k: max(target_ms, (k + 1) * prompt_ms) for k in VERIFY_SIZES} if prompt_ms else {},
            "timed_by": ("Ollama's decode rates (target with draft_num_predict 0"
                         + (", the draft alone" if draft_name else "; an MTP head taken as free")
                         + "); verification of k drafted tokens: max(one step, k+1 tokens at the prompt rate)"
                         + ("" if prompt_ms else ", no prompt rate reported: one step")),
        }

    def ready_command(self, target: str, spec_args: list[str], *, threads: int | None = None,
                      options: dict[str, Any] | None = None) -> list[str]:
        """``ollama create <target>-draft -f <Modelfile>``; the Modelfile (FROM the target, the
        configuration's lines, num_thread) is written beside the measurement ``velollm optimize`` reads."""
        from velollm_core.api import atomic_write_text
        from velollm_ollama.drafts import create_command, drafted_name, measurement_path, render_modelfile

        modelfile = measurement_path(target).with_suffix(".Modelfile")
        atomic_write_text(modelfile, render_modelfile(target, spec_args, threads))
        return create_command(drafted_name(target), modelfile)


def _time_model(client, model: str, options: dict[str, Any], version: str | None) -> tuple[float | None, float | None]:
    """(decode, prompt) tokens/s of ``model``: medians of COST_RUNS greedy runs of COST_PROMPT."""
    import statistics
    import uuid

    from velollm_core.api import GenerationRequest
    from velollm_ollama.runner import run_generation

    state: dict[str, Any] = {}
    decode, prompt = [], []
    for _ in range(COST_RUNS):
        request = GenerationRequest(benchmark="costs", prompt=f"[{uuid.uuid4().hex}] {COST_PROMPT}",
                                    max_tokens=COST_TOKENS, temperature=0.0)
        timing = run_generation(client, model, request, options, state, version=version)
        decode.append(timing.decode_tokens_per_s)
        prompt.append(timing.prompt_tokens_per_s)

    def median(values: list[float | None]) -> float | None:
        found = [v for v in values if v]
        return statistics.median(found) if found else None

    return median(decode), median(prompt)


def _store_names() -> dict[Path, str]:
    """{GGUF file: its model's name} for the models of this machine's Ollama store."""
    from velollm_ollama.store import ModelStore

    return {m.gguf_path: m.name for m in ModelStore.default().list() if m.gguf_path is not None}


def _delete(client, name: str) -> None:
    """Delete the temporary model; a failure is a warning (the measurement stands)."""
    from velollm_core.api import stderr_console

    try:
        client.delete(name)
    except VeloError as exc:
        stderr_console().print(f"warning: could not delete {name}: {exc}", markup=False, highlight=False)
