"""Ollama's speculative decoding, the runtime's side: the Modelfile text that switches a draft on, the
temporary model a measurement drafts with, and the measurement kept for ``velollm optimize``.

Ollama >= 0.30.0 loads a Modelfile's ``DRAFT`` (a GGUF file, stored as layer
``application/vnd.ollama.image.draft``) beside the target and passes ``--spec-type draft-mtp``
(``draft-dflash`` for a dflash draft, 0.32.8+) with ``--spec-draft-n-max draft_num_predict`` to
llama-server; a model with an embedded MTP head (``<arch>.nextn_predict_layers``) drafts with it once
``draft_num_predict`` is set. Ollama reports no acceptance at all: what VeloLLM infers from the timings
is written down with its assumptions.

The measuring is the core's (``velollm speculative bench | search --backend ollama``; ``velollm ollama
draft-bench`` runs the same comparison under Ollama's names), asking ``speculative.OllamaSpeculative``
for these rules. The draft is measured without touching the user's models: a temporary model (the
target ``FROM`` plus the draft's blob, made through ``/api/create``) is deleted afterwards. An MTP head
is measured on the model itself, ``draft_num_predict`` 0 against N.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path
from typing import Any

from velollm_core.api import UserInputError, VeloError

DEFAULT_DRAFT_NUM_PREDICT = 4  # Ollama's default with a separate draft (api.DefaultOptions)
# A speedup below this is noise or a loss: no Modelfile is proposed.
PAYS_AT = 1.05
MEASUREMENTS_DIR = "ollama-drafts"
# The temporary model a measurement makes: the target's name with this suffix (deleted afterwards).
PROBE_SUFFIX = "velollm-draft-probe"


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


def render_modelfile(model: str, lines: list[str], threads: int | None = None) -> str:
    """``FROM`` the model, the configuration's lines (``DRAFT``, ``PARAMETER draft_num_predict``), and
    ``num_thread`` where the measurement set it."""
    return "\n".join([f"FROM {modelfile_value(model, 'model name')}", *lines,
                      *([f"PARAMETER num_thread {modelfile_value(int(threads))}"] if threads else [])]) + "\n"


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


# --- what a measurement says ----------------------------------------------------------------------------


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


def kept_measurement(report: dict[str, Any], draft: str | None) -> dict[str, Any]:
    """What ``velollm optimize`` reads of a finished comparison (the core's speculative report): whether
    its best measured setting pays, and the Modelfile ``OllamaSpeculative.ready_command`` wrote for that
    setting (never for one that was not measured)."""
    ready = report.get("ready") or {}
    argv = ready.get("argv")
    speedup = ready.get("measured_speedup") if argv else report.get("speedup")
    kept = {**report, "draft": draft or "mtp", "draft_path": report.get("draft") if draft else None,
            "speedup": speedup, "pays": bool(argv and speedup and speedup >= PAYS_AT)}
    if kept["pays"]:
        modelfile = Path(argv[-1])
        kept.update(modelfile_path=str(modelfile), modelfile=modelfile.read_text(encoding="utf-8"),
                    proposed_model=argv[2], create_command=argv, draft_num_predict=ready.get("draft_max"),
                    measured_in=ready.get("measured_in"))
    return kept
