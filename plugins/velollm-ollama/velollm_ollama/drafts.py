"""Ollama's speculative decoding, measured: a model with and without its draft, interleaved on the
same prompts, and the Modelfile that uses the draft when the measurement says it pays.

Ollama >= 0.30.0 loads a Modelfile's ``DRAFT`` (a GGUF file, stored as layer
``application/vnd.ollama.image.draft``) beside the target and passes ``--spec-type draft-mtp``
(``draft-dflash`` for a dflash draft, 0.32.8+) with ``--spec-draft-n-max draft_num_predict`` to
llama-server; a model with an embedded MTP head (``<arch>.nextn_predict_layers``) drafts with it once
``draft_num_predict`` is set. Ollama reports no acceptance at all: what VeloLLM infers from the timings
is written down with its assumptions.

The draft is measured without touching the user's models: a temporary model (the target ``FROM``
plus the draft's blob, made through ``/api/create``) is deleted afterwards. An MTP head is measured on
the model itself, ``draft_num_predict`` 0 against N (each switch reloads the model; load time is
reported apart and is no part of the decode rate).
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import statistics
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from velollm_core.api import GenerationRequest, UserInputError, VeloError

DEFAULT_DRAFT_NUM_PREDICT = 4  # Ollama's default with a separate draft (api.DefaultOptions)
# A speedup below this is noise or a loss: no Modelfile is proposed.
PAYS_AT = 1.05
# Text a draft predicts well and text it does not: speculation pays differently on each.
PROMPTS = (
    ("code", "Write a Python function that returns the n-th Fibonacci number iteratively, with a docstring."),
    ("list", "List the planets of the solar system in order from the Sun, one per line, with one fact each."),
    ("prose", "Explain in three sentences why the sky is blue."),
)
MEASUREMENTS_DIR = "ollama-drafts"
# The temporary model a measurement makes: the target's name with this suffix (deleted afterwards).
PROBE_SUFFIX = "velollm-draft-probe"


@dataclass
class DraftPlan:
    """What to compare: ``model`` without and with ``draft`` (an installed Ollama model) or its MTP head."""

    model: str
    draft: str | None = None
    mtp: bool = False
    draft_num_predict: int = DEFAULT_DRAFT_NUM_PREDICT
    iterations: int = 3
    warmup: int = 1
    max_tokens: int = 128
    keep: bool = False  # keep the temporary model with the draft
    prompts: tuple[tuple[str, str], ...] = PROMPTS
    options: dict[str, Any] = field(default_factory=dict)


# --- text that Ollama and a shell read -------------------------------------------------------------


def _one_line(value: Any, what: str) -> str:
    text = str(value)
    if any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in text):
        raise UserInputError(f"{what} {text!r} holds a line break or control character: it cannot be written "
                             "into a Modelfile")
    return text


def modelfile_value(value: Any, what: str = "value") -> str:
    """``value`` in double quotes as Ollama's Modelfile parser reads it (parser/parser.go ``unquote``).

    The parser has no escapes: a value holding a quote, a line break or a control character could end
    the value early or add a line, so it is refused rather than written.
    """
    text = _one_line(value, what)
    if '"' in text:
        raise UserInputError(f"{what} {text!r} holds a double quote: it cannot be written into a Modelfile")
    return f'"{text}"'


def render_modelfile(model: str, draft_path: Path | None, draft_num_predict: int) -> str:
    """``FROM`` the model, ``DRAFT`` the draft's GGUF file (none for an MTP head), and draft_num_predict."""
    lines = [f"FROM {modelfile_value(model, 'model name')}"]
    if draft_path is not None:
        lines.append(f"DRAFT {modelfile_value(draft_path, 'draft path')}")
    lines.append(f"PARAMETER draft_num_predict {modelfile_value(int(draft_num_predict))}")
    return "\n".join(lines) + "\n"


def drafted_name(model: str, suffix: str = "draft") -> str:
    """``llama3.2:3b`` -> ``llama3.2-draft:3b``: the name ``ollama create`` gets (checked as Ollama checks)."""
    from velollm_ollama.store import ModelName

    name = ModelName.parse(model)
    return ModelName.parse("/".join([name.host, name.namespace, f"{name.model}-{suffix}"]) + f":{name.tag}").short()


def create_command(name: str, modelfile: Path) -> list[str]:
    """``ollama create NAME -f FILE`` as arguments (shell text through ``shlex.join``)."""
    return ["ollama", "create", _one_line(name, "model name"), "-f", _one_line(modelfile, "Modelfile path")]


def require_drafts(version: str | None) -> None:
    """UserInputError where an Ollama of ``version`` has no speculative decoding."""
    from velollm_ollama.versions import has, since

    if not has(version, "draft"):
        raise UserInputError(f"Ollama {version} has no speculative decoding: DRAFT and draft_num_predict "
                             f"came with Ollama {since('draft')}")


def create_drafted(client, name: str, model: str, draft_path: Path, parameters: dict[str, Any]) -> None:
    """Make ``name``: ``model`` plus the draft's blob (already in the store) as its DRAFT layer."""
    digest = "sha256:" + draft_path.name.removeprefix("sha256-")
    client.create({"model": name, "from": model, "draft_files": {"draft.gguf": digest}, "parameters": parameters})


def check_drafted(client, name: str) -> None:
    """A VeloError where the server made ``name`` without the draft (it does not take ``draft_files``)."""
    if "DRAFT" not in str(client.show(name).get("modelfile") or ""):
        raise VeloError(f"Ollama made {name} without the draft (its Modelfile has no DRAFT): this server "
                        "does not take draft_files")


# --- measurements kept for `velollm optimize` ----------------------------------------------------------


def measurement_path(model: str) -> Path:
    """Where the last draft measurement of ``model`` is kept (the cache directory)."""
    from velollm_core.api import cache_dir
    from velollm_ollama.store import ModelName

    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", ModelName.parse(model).short())
    return cache_dir() / MEASUREMENTS_DIR / f"{safe}.json"


def load_measurement(model: str) -> dict[str, Any] | None:
    """The last finished draft measurement of ``model``, or None (none, unreadable, or not finished)."""
    try:
        data = json.loads(measurement_path(model).read_text(encoding="utf-8"))
    except (OSError, ValueError, UserInputError):
        return None
    return data if isinstance(data, dict) and data.get("status") == "complete" else None


# --- the comparison --------------------------------------------------------------------------------------


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def first_difference(a: str, b: str) -> int | None:
    """Index of the first differing character, None when the texts are identical."""
    if a == b:
        return None
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def infer_acceptance(speedup: float | None, draft_num_predict: int, draft_cost: float | None) -> dict[str, Any]:
    """Tokens per target step and the share of drafted tokens accepted, inferred from decode rates.

    One speculative step drafts N tokens (N x the draft's time per token) and verifies them in one
    target pass that costs at least one plain step. With r = draft time / target time per token, the
    step takes >= (1 + N r) plain steps, so the tokens it yields are >= speedup x (1 + N r), and the
    accepted share (llama.cpp's draft_n_accepted / draft_n) is >= (tokens - 1) / N: lower bounds,
    exact where verifying N + 1 tokens costs one plain step (a GPU, a small batch). An MTP head's own
    cost is not measured (r taken as 0).
    """
    if not speedup or draft_num_predict <= 0:
        return {"tokens_per_step_min": None, "acceptance_rate_min": None}
    ratio = draft_cost or 0.0
    tokens = speedup * (1 + draft_num_predict * ratio)
    return {
        "tokens_per_step_min": round(tokens, 3),
        "acceptance_rate_min": round(min(1.0, max(0.0, (tokens - 1) / draft_num_predict)), 3),
        "draft_to_target_time": round(ratio, 4) if draft_cost is not None else None,
        "method": ("from decode rates: speedup x (1 + N x draft/target time per token), verification taken "
                   "to cost one plain step; lower bounds (Ollama reports no acceptance)"),
    }


def _facts(client, name: str) -> dict[str, Any]:
    info = client.show(name).get("model_info") or {}
    arch = info.get("general.architecture")
    return {"architecture": arch, "vocab_size": info.get(f"{arch}.vocab_size"),
            "tokenizer": info.get("tokenizer.ggml.model"), "pre": info.get("tokenizer.ggml.pre"),
            "nextn_predict_layers": info.get(f"{arch}.nextn_predict_layers") or 0}


class DraftComparison:
    """Interleaved runs without and with the draft (A B A B, same prompts, greedy), then the verdict."""

    def __init__(self, plan: DraftPlan, client, *, on_run: Callable[[str], None] | None = None) -> None:
        self.plan = plan
        self.client = client
        self.on_run = on_run or (lambda label: None)
        if plan.draft is None and not plan.mtp:
            raise UserInputError("name a draft model (--draft NAME) or measure the model's MTP head (--mtp)")
        if plan.draft_num_predict < 1:
            raise UserInputError("--draft-num-predict must be at least 1 (0 turns drafting off)")
        self.version = client.version()
        require_drafts(self.version)
        self.target = _facts(client, plan.model)
        self.draft_path: Path | None = None
        self.draft_facts: dict[str, Any] | None = None
        self.temporary: str | None = None
        if plan.mtp:
            if not self.target["nextn_predict_layers"]:
                raise UserInputError(f"{plan.model} has no MTP head ({self.target['architecture']}."
                                     "nextn_predict_layers is not set): name a draft model instead")
        else:
            self._check_draft()
        self.report: dict[str, Any] = {
            "status": "running",
            "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "backend": "ollama",
            "ollama_version": self.version,
            "target": plan.model,
            "draft": plan.draft or "mtp",
            "draft_path": None,
            "settings": {"draft_num_predict": plan.draft_num_predict, "iterations": plan.iterations,
                         "warmup": plan.warmup, "max_tokens": plan.max_tokens,
                         "prompts": [label for label, _ in plan.prompts]},
        }

    def _check_draft(self) -> None:
        from velollm_ollama.store import ModelStore

        draft = self.plan.draft
        self.draft_facts = _facts(self.client, draft)
        problems = [f"{key}: {self.target[key]!r} vs {self.draft_facts[key]!r}"
                    for key in ("tokenizer", "pre", "vocab_size")
                    if self.target[key] is not None and self.draft_facts[key] is not None
                    and self.target[key] != self.draft_facts[key]]
        if problems:
            raise UserInputError(f"{draft} cannot draft for {self.plan.model}: their vocabularies differ ("
                                 + "; ".join(problems) + ")")
        local = ModelStore.default().find(draft)
        if local is None or local.gguf_path is None:
            raise UserInputError(f"{draft} has no GGUF file in this machine's Ollama store: DRAFT needs the "
                                 "draft's file (the server must run here)")
        target = ModelStore.default().find(self.plan.model)
        if target is not None and target.model_bytes and local.model_bytes and local.model_bytes >= target.model_bytes:
            raise UserInputError(f"the draft {draft} is not smaller than {self.plan.model}: it cannot be faster")
        self.draft_path = local.gguf_path

    # variants: (label, model name, options)

    def _variants(self) -> list[tuple[str, str, dict[str, Any]]]:
        base = dict(self.plan.options)
        if self.plan.mtp:
            return [("vanilla", self.plan.model, {**base, "draft_num_predict": 0}),
                    ("speculative", self.plan.model, {**base, "draft_num_predict": self.plan.draft_num_predict})]
        return [("vanilla", self.plan.model, {**base, "draft_num_predict": 0}),
                ("speculative", self.temporary, {**base, "draft_num_predict": self.plan.draft_num_predict})]

    def _create_temporary(self) -> None:
        name = drafted_name(self.plan.model, PROBE_SUFFIX)
        create_drafted(self.client, name, self.plan.model, self.draft_path,
                       {"draft_num_predict": self.plan.draft_num_predict})
        self.temporary = name
        check_drafted(self.client, name)

    def _delete_temporary(self) -> None:
        if self.temporary and not self.plan.keep:
            try:
                self.client.delete(self.temporary)
            except VeloError as exc:
                self.report.setdefault("warnings", []).append(f"could not delete {self.temporary}: {exc}")
            else:
                self.temporary = None

    def _run(self, label: str, name: str, options: dict[str, Any], prompt: str, state: dict) -> Any:
        from velollm_ollama.runner import run_generation

        # Same prompt for both (no nonce: greedy texts must be comparable); prefill is not compared.
        request = GenerationRequest(benchmark=label, prompt=prompt, max_tokens=self.plan.max_tokens,
                                    temperature=0.0, seed=42, cache_prompt=True)
        return run_generation(self.client, name, request, options, state, version=self.version)

    def total_runs(self) -> int:
        per_prompt = 2 * (self.plan.warmup + self.plan.iterations) + (0 if self.plan.mtp else 1)
        return len(self.plan.prompts) * per_prompt

    def run(self, write: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Measure; ``write`` gets the report after every pair of runs and at the end."""
        write = write or (lambda report: None)
        runs: dict[str, list[dict[str, Any]]] = {"vanilla": [], "speculative": [], "draft_alone": []}
        try:
            if not self.plan.mtp:
                self._create_temporary()
                self.report["draft_path"] = str(self.draft_path)
                self.report["temporary_model"] = self.temporary
            states = {"vanilla": {}, "speculative": {}, "draft_alone": {}}
            for prompt_label, prompt in self.plan.prompts:
                for iteration in range(-self.plan.warmup + 1, self.plan.iterations + 1):
                    for label, name, options in self._variants():
                        timing = self._run(prompt_label, name, options, prompt, states[label])
                        self.on_run(f"{label}: {prompt_label} #{iteration}" if iteration > 0 else
                                    f"{label}: {prompt_label} warm-up")
                        if iteration > 0:
                            runs[label].append({"benchmark": prompt_label, "iteration": iteration,
                                                **timing.model_dump(mode="json")})
                    self._summarize(runs)
                    write(self.report)
                if not self.plan.mtp:
                    # The draft's own decode rate: what one drafted token costs against a target token.
                    timing = self._run(prompt_label, self.plan.draft, dict(self.plan.options), prompt,
                                       states["draft_alone"])
                    self.on_run(f"draft alone: {prompt_label}")
                    runs["draft_alone"].append({"benchmark": prompt_label, **timing.model_dump(mode="json")})
            self._summarize(runs)
            self.report["status"] = "complete"
        except KeyboardInterrupt:
            self.report["status"] = "interrupted"
            raise
        except VeloError as exc:
            self.report.update(status="failed", error=str(exc))
            raise
        finally:
            self._delete_temporary()
            write(self.report)
        return self.report

    def _summarize(self, runs: dict[str, list[dict[str, Any]]]) -> None:
        per_prompt, differences = {}, []
        for prompt_label, _ in self.plan.prompts:
            vanilla = [r for r in runs["vanilla"] if r["benchmark"] == prompt_label]
            spec = [r for r in runs["speculative"] if r["benchmark"] == prompt_label]
            if not vanilla or not spec:
                continue
            for v, s in zip(vanilla, spec):
                at = first_difference(v["text"], s["text"])
                if at is not None:
                    differences.append({"benchmark": prompt_label, "iteration": v["iteration"], "position": at,
                                        "vanilla": v["text"][at:at + 40], "speculative": s["text"][at:at + 40]})
            v_rate = _median(r["decode_tokens_per_s"] for r in vanilla)
            s_rate = _median(r["decode_tokens_per_s"] for r in spec)
            per_prompt[prompt_label] = {
                "vanilla_decode_tokens_per_s": v_rate, "speculative_decode_tokens_per_s": s_rate,
                "speedup": s_rate / v_rate if v_rate and s_rate else None,
                "vanilla_load_ms": _median(r["load_ms"] for r in vanilla),
                "speculative_load_ms": _median(r["load_ms"] for r in spec),
                "n": min(len(vanilla), len(spec)),
            }
        speedups = [row["speedup"] for row in per_prompt.values() if row["speedup"]]
        speedup = statistics.median(speedups) if speedups else None
        target_rate = _median(r["decode_tokens_per_s"] for r in runs["vanilla"])
        draft_rate = _median(r["decode_tokens_per_s"] for r in runs["draft_alone"])
        draft_cost = target_rate / draft_rate if target_rate and draft_rate else None
        pays = bool(speedup and speedup >= PAYS_AT)
        self.report.update(
            vanilla={"runs": runs["vanilla"]},
            speculative={"runs": runs["speculative"]},
            draft_alone={"runs": runs["draft_alone"]} if runs["draft_alone"] else None,
            per_prompt=per_prompt,
            speedup=speedup,
            acceptance_rate=None,  # Ollama reports none; inferred below
            inferred=infer_acceptance(speedup, self.plan.draft_num_predict, draft_cost if not self.plan.mtp else None),
            outputs_identical=not differences,
            differences=differences,
            pays=pays,
            verdict=(f"the draft pays: {speedup:.2f}x decode" if pays else
                     "the draft does not pay" + (f": {speedup:.2f}x decode" if speedup else "")),
        )
        if pays:
            text = render_modelfile(self.plan.model, self.draft_path, self.plan.draft_num_predict)
            self.report["modelfile"] = text
            self.report["proposed_model"] = drafted_name(self.plan.model)
        else:
            self.report.pop("modelfile", None)
            self.report.pop("proposed_model", None)
