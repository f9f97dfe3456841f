"""Speculative decoding with llama-server: a draft model beside the target, or draftless n-gram
drafting, in the flag spellings this build accepts.

``LlamaCppSpeculative`` is what the ``speculative_backend`` door returns for the llamacpp backend: the
core's ``velollm speculative`` commands ask it which speculation types a target and draft support
(llama.cpp's rules, from velollm-gguf), which flags start them, what they cost (llama-bench) and how
many drafted tokens the server accepted (its ``timings`` and Prometheus counters).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from velollm_core.api import BackendError, UserInputError, VeloError

NGRAM_KINDS = ("ngram-mod", "ngram-simple", "ngram-map-k", "ngram-map-k4v", "ngram-cache")
# ngram-mod on a CPU-only build, for the settings the user leaves unset. llama.cpp's defaults (match
# 24 tokens, then draft 48-64) suit GPUs, where verifying 64 tokens costs about as much as one; on a
# CPU every verified token costs compute, so shorter drafts after shorter matches win. Measured
# (docs/BENCHMARKS.md, Gemma 3 270M, 2 cores, exact mode): code_edit 1.62x -> 2.2x, quote_answer
# 2.97x -> 2.29x, identical text.
CPU_NGRAM_MOD = {"ngram_match": 8, "draft_min": 2, "draft_max": 8}
# llama.cpp's own ngram-mod draft length (common.h, common_params_speculative_ngram_mod.n_max): what a
# GPU build drafts when no flag sets it.
LLAMA_NGRAM_MOD_N_MAX = 64


DRAFTERS = ("draft-simple", "draft-eagle3", "draft-mtp", "draft-dflash", "draft-dspark")
_SPEC_TYPE_HELP = re.compile(r"^--spec-type\s+([a-z0-9,-]+)", re.MULTILINE)
# llama-server's Prometheus counters of speculation (``--metrics``, 0c1e570), summed over finished requests:
#   llamacpp:spec_decode_num_drafts_total          verification steps
#   llamacpp:spec_decode_num_draft_tokens_total    tokens drafted
#   llamacpp:spec_decode_num_accepted_tokens_total tokens accepted
#   llamacpp:spec_decode_num_accepted_tokens_per_pos_total{position="i"}  steps in which position i was accepted
_SPEC_COUNTER = re.compile(r'^llamacpp:(spec_decode_[a-z_]+)(?:\{position="(\d+)"\})?\s+([0-9.eE+-]+)\s*$',
                           re.MULTILINE)
_COUNTER_NAMES = {"spec_decode_num_drafts_total": "steps", "spec_decode_num_draft_tokens_total": "drafted",
                  "spec_decode_num_accepted_tokens_total": "accepted"}


# Two candidates whose log-probabilities lie this close (nats; probabilities within about 10% of each
# other) are a near-tie: a batch of k+1 tokens and a batch of one round differently on the CPU's fast
# kernels, enough to swap them, without either text being wrong.
NEAR_TIE_LOGPROB = 0.1
NEAR_TIE_CANDIDATES = 4


def near_tie_verdict(index: int, vanilla: tuple[int, str], speculative: tuple[int, str],
                     candidates: list[dict]) -> dict:
    """The explanation of a first differing token: ``near_tie`` when both texts' tokens are the top two
    candidates of the plain server at that prefix and their log-probabilities lie within NEAR_TIE_LOGPROB."""
    ranked = {c["id"]: c["logprob"] for c in candidates[:2]}
    gap = abs(ranked[vanilla[0]] - ranked[speculative[0]]) if {vanilla[0], speculative[0]} <= ranked.keys() else None
    near_tie = gap is not None and gap <= NEAR_TIE_LOGPROB
    why = (f"near-tie: {vanilla[1]!r} and {speculative[1]!r} are the top two candidates, "
           f"{gap:.3f} nats apart (margin {NEAR_TIE_LOGPROB})" if near_tie else
           f"real difference: {vanilla[1]!r} vs {speculative[1]!r}, "
           + (f"{gap:.3f} nats apart" if gap is not None else "not the top two candidates"))
    return {"token": index, "vanilla_token": vanilla[1], "speculative_token": speculative[1],
            "candidates": candidates, "logprob_gap": gap, "near_tie": near_tie, "why": why}


def is_draftless(draft: str) -> bool:
    """Whether ``draft`` names n-gram drafting (``ngram`` / ``ngram-<kind>``) rather than a model."""
    return draft == "ngram" or draft.startswith("ngram-")


def parse_spec_counters(text: str | None) -> dict | None:
    """{steps, drafted, accepted, per_position: [count, ...]} from a /metrics page; None without them.

    Read with a few lines rather than a Prometheus library: only these counters are needed."""
    if not text:
        return None
    found: dict = {"per_position": []}
    positions: dict[int, int] = {}
    for name, position, value in _SPEC_COUNTER.findall(text):
        if name == "spec_decode_num_accepted_tokens_per_pos_total" and position:
            positions[int(position)] = int(float(value))
        elif name in _COUNTER_NAMES:
            found[_COUNTER_NAMES[name]] = int(float(value))
    if "steps" not in found:
        return None
    found["per_position"] = [positions.get(i, 0) for i in range(max(positions) + 1)] if positions else []
    return found


@dataclass
class SpeculativeSettings:
    """What to speculate with; None means the build's default (except p_min, always explicit)."""

    MODEL_DRAFT_MAX = 16

    draft: str  # "model" (a draft file or MTP head), or "ngram" / "ngram-<kind>" (legacy spelling)
    types: tuple[str, ...] | list[str] | None = None  # --spec-type values, e.g. ("ngram-mod", "draft-mtp")
    draft_max: int | None = None  # drafters: 16; n-gram alone: the build's own default
    draft_min: int | None = None
    p_min: float = 0.75
    draft_ctx: int | None = None
    draft_gpu_layers: int | None = None
    draft_threads: int | None = None
    ngram_match: int | None = None  # n-gram drafting: tokens of context that must match before drafting

    @property
    def ngram_kind(self) -> str | None:
        if self.draft == "ngram":
            return "ngram-mod"
        if self.draft.startswith("ngram-"):
            if self.draft not in NGRAM_KINDS:
                raise UserInputError(f"unknown n-gram drafter {self.draft!r}; known: ngram, {', '.join(NGRAM_KINDS)}")
            return self.draft
        return None

    def spec_types(self) -> list[str]:
        if self.types:
            return list(self.types)
        return [self.ngram_kind or "draft-simple"]


class LlamaCppSpeculative:
    """The ``speculative_backend`` of velollm-llamacpp."""

    name = "llamacpp"
    backend = "llamacpp"
    runtime = "llama.cpp"
    default_draft_max = SpeculativeSettings.MODEL_DRAFT_MAX

    # --- what the commands ask before anything starts ----------------------------------------------

    def handles(self, model: str) -> bool:
        """A GGUF file (a path, existing or named ``*.gguf``) or a bundled test model (or one derived
        from it) is llama.cpp's; a name of another runtime's store is not."""
        from velollm_llamacpp.derived import DERIVED
        from velollm_llamacpp.testmodels import TEST_MODELS

        path = Path(model).expanduser()
        return model in TEST_MODELS or model in DERIVED or path.suffix.lower() == ".gguf" or path.is_file()

    def parse_types(self, value: str) -> list[str]:
        """``draft-mtp,ngram-mod`` -> its types, in order; unknown names and repeats refused."""
        from velollm_gguf.compat import parse_types

        return parse_types(value)

    def build_types(self) -> tuple[str, ...] | None:
        """``available_types``, or None where no llama-server is installed (every type is then checked)."""
        try:
            return self.available_types()
        except VeloError:
            return None

    def check(self, target: Path, draft: Path | None, combinations: list[list[str]]) -> dict:
        """``velollm speculative check``: which types run for ``target`` (and ``draft``), and why the
        given ``combinations`` would not (``refused``). With a draft: ``compatible`` (it serves at least
        one drafter type), ``drafters`` (those types) and ``reasons`` (why none, where it serves none)."""
        from velollm_gguf.compat import check_pair, combination_problems, supported_combinations, type_support

        support = type_support(target, draft, self.build_types())
        refused = {",".join(c): combination_problems(c, support, has_draft=draft is not None) for c in combinations}
        pair = check_pair(target, draft) if draft is not None else None
        report = {
            **(pair.to_json() if pair else {"target": str(target), "draft": None}),
            "types": {t: {"supported": why is None, "why": why} for t, why in support.items()},
            "supported": [t for t, why in support.items() if why is None],
            "combinations": [",".join(c) for c in supported_combinations(support)],
            "refused": {name: problems for name, problems in refused.items() if problems},
        }
        if pair is not None:
            # Compatible: the draft serves at least one drafter type (a head is not a draft-simple model).
            report["drafters"] = [t for t in DRAFTERS if support.get(t, "missing") is None]
            report["compatible"] = bool(report["drafters"])
            report["reasons"] = [] if report["compatible"] else pair.problems or [support["draft-simple"]]
        return report

    def resolve(self, target: str, draft: str | None, configs: list[list[str]]) -> dict:
        """Target and draft paths and the configurations a comparison runs, all checked before anything
        starts: {"target", "draft", "support", "configs", "compatibility"}. ``configs``: lists of types;
        [["all"]] every supported one; [] the one type the draft names (a model's kind, or an n-gram kind)."""
        from velollm_gguf import read_summary
        from velollm_gguf.compat import (
            check_pair,
            combination_problems,
            draft_kind,
            parse_types,
            supported_combinations,
            type_support,
        )

        from velollm_core.api import resolve_model_path

        target_path = resolve_model_path(target)
        draft_path = None if draft is None or is_draftless(draft) else resolve_model_path(draft)
        support = type_support(target_path, draft_path, self.available_types())
        every = configs == [["all"]]
        if every:
            configs = supported_combinations(support)
        elif configs:
            configs = [list(c) for c in configs]
        elif draft_path is None:
            configs = [parse_types("ngram-mod" if draft in (None, "ngram") else draft)]
        else:
            configs = [[draft_kind(read_summary(draft_path))]]
        problems = [f"{','.join(c)}: {p}" for c in configs for p in combination_problems(c, support, has_draft=False)]
        if draft_path is not None and not every and not any(t in DRAFTERS for c in configs for t in c):
            problems.append("a draft model is given but no configuration uses a draft-* type")
        if not configs:
            problems.append("no speculation type runs for this target" + (" and draft" if draft_path else ""))
        compatibility = None
        if draft_path is not None and any("draft-simple" in c for c in configs):
            report = check_pair(target_path, draft_path)
            compatibility = report.to_json()
            if not report.compatible:
                raise VeloError("draft and target are not compatible: " + "; ".join(report.problems))
            if report.facts["draft_size_bytes"] >= report.facts["target_size_bytes"]:
                raise UserInputError(
                    f"the draft ({report.facts['draft_size_bytes'] / 2**20:.0f} MiB) is not smaller than the "
                    f"target ({report.facts['target_size_bytes'] / 2**20:.0f} MiB): speculation cannot be faster")
        if problems:
            raise UserInputError("cannot speculate so:\n  " + "\n  ".join(problems))
        return {"target": target_path, "draft": draft_path, "support": support, "configs": configs,
                "compatibility": compatibility}

    def pairs(self, models: list[dict], *, max_ratio: float = 0.5) -> list[dict]:
        """Every compatible (target, draft) pair of ``models`` whose draft is at most ``max_ratio`` of the target."""
        from velollm_gguf.compat import find_pairs

        return find_pairs(models, max_ratio=max_ratio)

    # --- one configuration -----------------------------------------------------------------------------

    @staticmethod
    def roles(types: list[str]) -> dict[str, bool]:
        """What a configuration drafts with: ``drafter`` (a draft model or head at all), ``draft_model``
        (a separate model llama-bench can time), ``head`` (a head reading the target's hidden states)."""
        drafters = [t for t in types if t in DRAFTERS]
        return {"drafter": bool(drafters), "draft_model": "draft-simple" in drafters,
                "head": any(t != "draft-simple" for t in drafters)}

    @classmethod
    def knobs(cls, types: list[str]) -> tuple[str, ...]:
        """What a search varies beside the draft length: a drafter's confidence floor, else the n-gram match."""
        return ("p_min",) if cls.roles(types)["drafter"] else ("ngram_match",)

    def settings(self, types: list[str], **settings: Any) -> dict:
        """The settings of one configuration, as ``server_args`` takes them and the report records them."""
        drafter = self.roles(types)["drafter"]
        out = {"draft": "model" if drafter else types[0], "types": list(types), **settings}
        if drafter:
            out.setdefault("p_min", 0.75)
        return out

    def draft_max(self, types: list[str], settings: dict[str, Any], spec_args: list[str]) -> int | None:
        """The draft length: the setting, else the last ``--draft-max``/``--draft`` (model drafts) or
        ``--spec-<kind>-n-max`` (n-gram drafts) among the flags, else a model draft's default, or
        ngram-mod's (llama.cpp's 64; unknown for the other n-gram kinds: None)."""
        if isinstance(settings.get("draft_max"), int):
            return settings["draft_max"]
        found = None
        for i, arg in enumerate(spec_args):
            flag, _, value = str(arg).partition("=")
            if flag in ("--draft-max", "--draft") or (flag.startswith("--spec-") and flag.endswith("-n-max")):
                value = value or (str(spec_args[i + 1]) if i + 1 < len(spec_args) else "")
                if value.isascii() and value.isdigit():
                    found = int(value)
        if found is None and self.roles(types)["drafter"]:
            return self.default_draft_max
        if found is None and "ngram-mod" in types:  # no flag (a GPU build): llama.cpp's own default
            return LLAMA_NGRAM_MOD_N_MAX
        return found

    def uses_draft_file(self, types: list[str], draft_path: Path | None) -> bool:
        """Whether the configuration loads the draft file (the type llama.cpp infers from it is among ``types``)."""
        from velollm_gguf import read_summary
        from velollm_gguf.compat import draft_kind

        return draft_path is not None and draft_kind(read_summary(draft_path)) in types

    def available_types(self) -> tuple[str, ...]:
        """The speculation types this llama-server build lists in ``--spec-type`` (older builds: a
        draft model only)."""
        from velollm_llamacpp.install import find_program
        from velollm_llamacpp.server import help_text

        match = _SPEC_TYPE_HELP.search(help_text(find_program("llama-server")))
        if match is None:
            return ("draft-simple",)
        return tuple(t for t in match.group(1).split(",") if t != "none")

    def server_args(self, *, draft_path: Path | None = None, **settings) -> list[str]:
        """llama-server flags that switch speculation on (``settings``: the SpeculativeSettings
        fields), in the spellings this build's ``--help`` lists."""
        return self._server_args(SpeculativeSettings(**settings), draft_path)

    def _server_args(self, settings: SpeculativeSettings, draft_path: Path | None) -> list[str]:
        from velollm_llamacpp.install import find_program
        from velollm_llamacpp.server import pick_flag, server_flags

        binary = find_program("llama-server")
        flags = server_flags(binary)

        def flag(*spellings: str) -> str:
            try:
                return pick_flag(binary, *spellings)
            except BackendError:
                raise BackendError(
                    f"this llama-server build has no speculative decoding support ({spellings[0]} is missing)"
                ) from None

        types = settings.spec_types()
        drafter = next((t for t in types if t in DRAFTERS), None)
        ngrams = [t for t in types if t in NGRAM_KINDS]
        if "--spec-type" not in flags and types != ["draft-simple"]:
            raise BackendError(f"this llama-server build has no --spec-type, so no {', '.join(types)}")
        args: list[str] = []
        if drafter not in (None, "draft-mtp") and draft_path is None:
            raise UserInputError(f"{drafter} needs a draft model file (--draft)")
        if draft_path is not None:
            args += [flag("--spec-draft-model", "--model-draft", "-md"), str(draft_path)]
        if "--spec-type" in flags:
            # Always explicit: without it this build loads a draft model and never uses it.
            args += ["--spec-type", ",".join(types)]
        if drafter is not None:
            draft_max = settings.draft_max or settings.MODEL_DRAFT_MAX
            args += [flag("--spec-draft-n-max", "--draft-max", "--draft-n", "--draft"), str(draft_max)]
            if settings.draft_min is not None:
                args += [flag("--spec-draft-n-min", "--draft-min", "--draft-n-min"), str(settings.draft_min)]
            # Always explicit: its default changed across releases (0.9, 0.75, 0.0).
            args += [flag("--spec-draft-p-min", "--draft-p-min"), str(settings.p_min)]
            if settings.draft_ctx is not None:
                if not flags & {"--ctx-size-draft", "-cd"}:
                    raise UserInputError("this llama-server build has no draft context size flag (it uses the target's)")
                args += [flag("--ctx-size-draft", "-cd"), str(settings.draft_ctx)]
            if settings.draft_gpu_layers is not None:
                args += [flag("--spec-draft-ngl", "--n-gpu-layers-draft", "-ngld"), str(settings.draft_gpu_layers)]
            if settings.draft_threads is not None:
                args += [flag("--spec-draft-threads", "--threads-draft", "-td"), str(settings.draft_threads)]
            # Beside a drafter, draft max and min are the drafter's; n-gram drafting keeps its defaults.
            settings = dataclasses.replace(settings, draft_max=None, draft_min=None)
        for kind in ngrams:
            args += self._ngram_args(kind, settings, binary, flag)
        if "--metrics" in flags:
            args.append("--metrics")  # per-position acceptance counters (spec_decode_*)
        return args

    def _ngram_args(self, kind: str, settings: SpeculativeSettings, binary: Path, flag) -> list[str]:
        if kind == "ngram-mod" and self._cpu_only(binary):
            settings = dataclasses.replace(settings, **{
                key: value for key, value in CPU_NGRAM_MOD.items() if getattr(settings, key) is None})
        if settings.draft_max is not None and settings.draft_min is not None and settings.draft_min > settings.draft_max:
            # A shorter draft max than the CPU default's minimum (a search's candidate): the minimum follows.
            settings = dataclasses.replace(settings, draft_min=settings.draft_max)
        args = []
        if kind == "ngram-mod":
            if settings.draft_max is not None:
                args += [flag("--spec-ngram-mod-n-max"), str(settings.draft_max)]
            if settings.draft_min is not None:
                args += [flag("--spec-ngram-mod-n-min"), str(settings.draft_min)]
            if settings.ngram_match is not None:
                args += [flag("--spec-ngram-mod-n-match"), str(settings.ngram_match)]
        elif kind in ("ngram-simple", "ngram-map-k", "ngram-map-k4v"):
            if settings.draft_max is not None:
                args += [flag(f"--spec-{kind}-size-m"), str(settings.draft_max)]
            if settings.ngram_match is not None:
                args += [flag(f"--spec-{kind}-size-n"), str(settings.ngram_match)]
        return args

    def ready_command(self, target: Path, spec_args: list[str], *, threads: int | None = None,
                      n_gpu_layers: int | None = None, options: dict[str, Any] | None = None) -> list[str]:
        """The llama-server command (argv) a user runs to get the measured speedup: the build the
        comparison used, the target, the speculation flags, the threads and GPU layers (``n_gpu_layers``,
        else the benchmark ``options``' own)."""
        from velollm_llamacpp.install import find_program
        from velollm_llamacpp.server import pick_flag

        n_gpu_layers = _gpu_layers(n_gpu_layers, options)
        binary = find_program("llama-server")
        # --metrics served the comparison's counters; the user's server does not need it.
        spec_args = [a for a in spec_args if a != "--metrics"]
        argv = [str(binary), pick_flag(binary, "--model", "-m"), str(target), *spec_args]
        if threads:
            argv += [pick_flag(binary, "--threads", "-t"), str(threads)]
        if n_gpu_layers is not None:
            argv += [pick_flag(binary, "--n-gpu-layers", "--gpu-layers", "-ngl"), str(n_gpu_layers)]
        return argv

    def acceptance_counters(self, context) -> dict | None:
        """The speculative server's acceptance counters now ({steps, drafted, accepted, per_position}),
        None where it exports none; the core takes their growth over each measured request."""
        return parse_spec_counters(self.metrics_text(context))

    def metrics_text(self, context) -> str | None:
        """The speculative server's Prometheus page (``--metrics``), None where it has none."""
        import httpx

        url = context.state.get("url")
        if url is None:
            return None
        try:
            response = httpx.get(f"{url}/metrics", timeout=10)
        except httpx.HTTPError:
            return None
        return response.text if response.status_code == 200 else None

    def explain_difference(self, context, prompt: str, vanilla_text: str, speculative_text: str) -> dict | None:
        """Where the two greedy texts part, in tokens, and the plain server's top candidates there: the
        prompt and the common tokens re-sent to it for one token with ``n_probs``. None where it cannot
        answer (no server, an error): the difference then stays unexplained."""
        import httpx

        url = context.state.get("url")
        if url is None:
            return None
        try:
            with httpx.Client(base_url=url, timeout=60) as client:
                def tokens(text: str, special: bool) -> list[int]:
                    answer = client.post("/tokenize", json={"content": text, "add_special": special})
                    answer.raise_for_status()
                    return [int(t) for t in answer.json()["tokens"]]

                vanilla, speculative = tokens(vanilla_text, False), tokens(speculative_text, False)
                index = next((i for i, (a, b) in enumerate(zip(vanilla, speculative)) if a != b),
                             min(len(vanilla), len(speculative)))
                if index >= min(len(vanilla), len(speculative)):
                    return {"token": index, "near_tie": False, "candidates": [],
                            "why": "one text is a prefix of the other: a length difference, not a choice"}
                body = {"prompt": tokens(prompt, True) + vanilla[:index], "n_predict": 1, "temperature": 0,
                        "top_k": 1, "n_probs": NEAR_TIE_CANDIDATES, "cache_prompt": False}
                answer = client.post("/completion", json=body)
                answer.raise_for_status()
                top = answer.json()["completion_probabilities"][0]["top_logprobs"]
                pieces = client.post("/detokenize", json={"tokens": [vanilla[index]]}).json()["content"], \
                    client.post("/detokenize", json={"tokens": [speculative[index]]}).json()["content"]
        except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError):
            return None
        candidates = [{"id": int(c["id"]), "text": str(c["token"]), "logprob": float(c["logprob"])} for c in top]
        return near_tie_verdict(index, (vanilla[index], pieces[0]), (speculative[index], pieces[1]), candidates)

    @staticmethod
    def _cpu_only(binary: Path) -> bool:
        from velollm_llamacpp.tune_facts import build_devices

        return build_devices(str(binary)) == ()

    def base_options(self, options: dict[str, Any], *, threads: int | None = None, exact: bool = True) -> dict:
        """The backend options both servers of a comparison run with: the user's, ``threads``, and with
        ``exact`` the batch-invariant kernels (``exact_options``)."""
        base = dict(options)
        if threads:
            base["threads"] = threads
        if exact:
            kernels = self.exact_options()
            base["server_args"] = " ".join(filter(None, [str(base.get("server_args", "")), kernels.pop("server_args")]))
            base.update(kernels)
        return base

    @staticmethod
    def with_server_args(options: dict[str, Any], args: list[str]) -> dict:
        """``options`` with ``args`` (speculation flags) added to the server's command line."""
        import shlex

        return {**options, "server_args": " ".join([str(options.get("server_args", "")),
                                                    *map(shlex.quote, map(str, args))]).strip()}

    def configure(self, target: Path, options: dict[str, Any], args: list[str]) -> tuple[str, dict]:
        """The target file and ``options`` with the speculation flags on the server's command line."""
        return str(target), self.with_server_args(options, args) if args else dict(options)

    def prepare(self, context, target: Path, args: list[str]) -> None:
        """Nothing: the flags alone switch speculation on when the server starts."""

    @staticmethod
    def infer_acceptance(speedup: float | None, draft_max: int | None) -> dict | None:
        """Never asked: llama-server counts drafted and accepted tokens itself."""
        return None

    def exact_options(self) -> dict[str, str]:
        """Backend options that make the CPU kernels batch-invariant, for both servers.

        Verifying k drafted tokens runs one batch of k+1 tokens, plain decoding runs batches of one;
        llama.cpp's CPU paths for the two differ (weight repacking, the tiled K-quant matmul, flash
        attention) and round differently, so near-ties flip and greedy text diverges. With these
        off, in a build without llamafile's sgemm (`velollm llamacpp install --exact`), both take
        the same per-row dot products and the texts match token for token.
        """
        from velollm_llamacpp.install import find_program
        from velollm_llamacpp.server import pick_flag

        binary = find_program("llama-server", exact=True)
        args = [pick_flag(binary, "--no-repack", "-nr"), pick_flag(binary, "--flash-attn", "-fa"), "off"]
        return {"server_args": " ".join(args), "env.GGML_CPU_TILED_MM": "0", "exact_build": True}

    @staticmethod
    def acceptance(extra: dict) -> tuple[int, int]:
        """(drafted, accepted) tokens of one generation, from the server's own timings."""
        return int(extra.get("draft_n") or 0), int(extra.get("draft_n_accepted") or 0)

    def measure_costs(self, target: Path, draft: Path | None, *, threads: int | None = None,
                      draft_lengths: tuple[int, ...] = (1, 2, 4, 8, 12, 16, 24, 32, 64), n_gen: int = 32,
                      exact: bool = False, n_gpu_layers: int | None = None,
                      options: dict[str, Any] | None = None) -> dict:
        """Per-token decode time of target and draft, and the time each takes for a batch of k+1
        tokens (the target verifies it, the draft re-evaluates it), from llama-bench (ms), with the
        kernels the comparison used. Draftless drafting costs nothing. The batches span the draft lengths
        the advisor recommends from (up to 32) and llama.cpp's ngram-mod default (64), so no verify cost it
        relies on is extrapolated."""
        import json
        import os
        import subprocess

        from velollm_core.api import interrupt
        from velollm_llamacpp.install import find_program

        n_gpu_layers = _gpu_layers(n_gpu_layers, options)
        bench = find_program("llama-bench", exact=exact)
        env = {**os.environ, "GGML_CPU_TILED_MM": "0"} if exact else None
        kernels = ["--repack", "0", "-fa", "off"] if exact else []

        def run(model: Path, *args: str) -> list[dict]:
            cmd = [str(bench), "-m", str(model), "-r", "3", "-o", "json", *kernels, *args]
            if threads:
                cmd += ["-t", str(threads)]
            if n_gpu_layers is not None:
                cmd += ["-ngl", str(n_gpu_layers)]
            try:
                proc = interrupt.run(cmd, timeout=900, env=env)
            except subprocess.TimeoutExpired:
                raise BackendError(f"llama-bench did not finish within 900 s: {' '.join(cmd)}") from None
            if proc.returncode != 0:
                raise BackendError(f"llama-bench failed: {(proc.stderr or proc.stdout).strip()[-300:]}")
            return json.loads(proc.stdout)

        def model_ms(model: Path) -> tuple[float, dict[int, float]]:
            """(ms per decoded token, ms per batch of k+1 tokens by k): one llama-bench run, one model load."""
            decode, batches = None, {}
            for row in run(model, "-p", ",".join(str(k + 1) for k in draft_lengths), "-n", str(n_gen)):
                if row["n_prompt"] == 0:
                    decode = 1000.0 / row["avg_ts"]
                else:
                    batches[row["n_prompt"] - 1] = row["n_prompt"] / row["avg_ts"] * 1000.0
            if decode is None:
                raise BackendError(f"llama-bench reported no decode test for {model.name}")
            return decode, batches

        target_ms, verify = model_ms(target)
        costs = {"target_token_ms": target_ms, "draft_token_ms": 0.0, "verify_ms": verify}
        if draft is not None:
            draft_ms, draft_verify = model_ms(draft)
            costs.update(draft_token_ms=draft_ms, draft_verify_ms=draft_verify)
        return costs


def _gpu_layers(n_gpu_layers: int | None, options: dict[str, Any] | None) -> int | None:
    """``n_gpu_layers`` as given, else the benchmark options' (``--option n_gpu_layers=N``)."""
    if n_gpu_layers is not None or not options or options.get("n_gpu_layers") is None:
        return n_gpu_layers
    return int(options["n_gpu_layers"])
