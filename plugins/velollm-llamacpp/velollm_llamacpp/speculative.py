"""Speculative decoding with llama-server: a draft model beside the target, or draftless n-gram
drafting, in the flag spellings this build accepts."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from velollm_core.api import BackendError, UserInputError

NGRAM_KINDS = ("ngram-mod", "ngram-simple", "ngram-map-k", "ngram-map-k4v", "ngram-cache")
# ngram-mod on a CPU-only build, for the settings the user leaves unset. llama.cpp's defaults (match
# 24 tokens, then draft 48-64) suit GPUs, where verifying 64 tokens costs about as much as one; on a
# CPU every verified token costs compute, so shorter drafts after shorter matches win. Measured
# (docs/BENCHMARKS.md, Gemma 3 270M, 2 cores, exact mode): code_edit 1.62x -> 2.2x, quote_answer
# 2.97x -> 2.29x, identical text.
CPU_NGRAM_MOD = {"ngram_match": 8, "draft_min": 2, "draft_max": 8}


@dataclass
class SpeculativeSettings:
    """What to speculate with; None means the build's default (except p_min, always explicit)."""

    MODEL_DRAFT_MAX = 16

    draft: str  # a GGUF path for a draft model, or "ngram" / "ngram-<kind>"
    draft_max: int | None = None  # model draft: 16; n-gram: the build's own default
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


class LlamaCppSpeculative:
    """The ``speculative_backend`` of velollm-llamacpp."""

    name = "llamacpp"
    backend = "llamacpp"
    default_draft_max = SpeculativeSettings.MODEL_DRAFT_MAX

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

        kind = settings.ngram_kind
        args: list[str] = []
        if kind is None:
            if draft_path is None:
                raise UserInputError("a draft model path is needed for model-draft speculation")
            args += [flag("--spec-draft-model", "--model-draft", "-md"), str(draft_path)]
            if "--spec-type" in flags:
                # Without it this build loads the draft and never uses it.
                args += ["--spec-type", "draft-simple"]
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
            return args
        if "--spec-type" not in flags:
            raise BackendError("this llama-server build has no draftless n-gram speculation (--spec-type)")
        args += ["--spec-type", kind]
        if kind == "ngram-mod" and self._cpu_only(binary):
            settings = dataclasses.replace(settings, **{
                key: value for key, value in CPU_NGRAM_MOD.items() if getattr(settings, key) is None})
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

    @staticmethod
    def _cpu_only(binary: Path) -> bool:
        from velollm_llamacpp.tune_facts import build_devices

        return build_devices(str(binary)) == ()

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
                      draft_lengths: tuple[int, ...] = (1, 2, 4, 8, 16), n_gen: int = 32,
                      exact: bool = False, n_gpu_layers: int | None = None) -> dict:
        """Per-token decode time of target and draft, and the time each takes for a batch of k+1
        tokens (the target verifies it, the draft re-evaluates it), from llama-bench (ms), with the
        kernels the comparison used. Draftless drafting costs nothing."""
        import json
        import os
        import subprocess

        from velollm_core.api import interrupt
        from velollm_llamacpp.install import find_program

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
