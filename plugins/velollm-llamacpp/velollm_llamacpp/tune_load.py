"""llama-server flags for a load of N streams (``velollm optimize --for-concurrency N --verify``).

The starting point is the proposal sized for N slots (``propose_llamacpp(parallel=N)``); the steps are
the flags that bear on many streams at once, each offered only where this build lists it:

- ``-fa on``: flash attention: attention over N sequences' KV without materialising the scores.
- ``--kv-unified`` / ``--no-kv-unified``: one KV buffer for every slot, or one per slot; which
  decodes a wide batch faster depends on the backend's kernels (measured, never assumed).
- ``-b 512 -ub 512``: a prompt enters in smaller pieces, so the other streams' decode steps wait less
  behind it (prefill interference).
- ``-ctk q8_0 -ctv q8_0`` (with ``-fa on``): half the KV bytes read per step at wide batches.
- ``-c`` just large enough for the load: N slots of the workload's prompt and answer (less KV to
  allocate and, with a unified cache, to mask).
- ``--poll 0``: the CPU threads sleep instead of spinning between steps, leaving cores to the HTTP
  threads and the sampler.
- ``--threads-http N``: one HTTP thread per stream, so no stream's tokens wait for a busy one.

``--cache-reuse`` is not a step: the measured requests share no prefix, so it could change nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from velollm_core.api import ConfigProposal, LoadStep, LoadTuning, UserInputError, resolve_model_path

# The spellings of one flag across releases: any of them is removed before the new value is set.
SPELLINGS = {
    "-fa": ("-fa", "--flash-attn"), "-b": ("-b", "--batch-size"), "-ub": ("-ub", "--ubatch-size"),
    "-ctk": ("-ctk", "--cache-type-k"), "-ctv": ("-ctv", "--cache-type-v"), "-c": ("-c", "--ctx-size"),
    "--poll": ("--poll",), "--threads-http": ("--threads-http",),
}
UNIFIED = ("-kvu", "--kv-unified")
NOT_UNIFIED = ("-no-kvu", "--no-kv-unified")
SWITCHES = (*UNIFIED, *NOT_UNIFIED)


def without(args: list[str], spellings: tuple[str, ...]) -> list[str]:
    """``args`` with every occurrence of the flag (any spelling, ``--x=v`` too) and its value removed."""
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in spellings:
            skip = "=" not in arg and name not in SWITCHES
            continue
        out.append(arg)
    return out


def value_of(args: list[str], flag: str) -> str | None:
    """The last value given to ``flag`` (any spelling) in ``args``, or None."""
    found = None
    for index, arg in enumerate(args):
        name, sep, inline = arg.partition("=")
        if name in SPELLINGS[flag]:
            found = inline if sep else (args[index + 1] if index + 1 < len(args) else None)
    return found


def set_values(args: list[str], **values: str) -> list[str]:
    """``args`` with each flag (``fa="on"`` is ``-fa on``; ``threads_http`` is ``--threads-http``) set."""
    for key, value in values.items():
        flag = {"fa": "-fa", "b": "-b", "ub": "-ub", "ctk": "-ctk", "ctv": "-ctv", "c": "-c", "poll": "--poll",
                "threads_http": "--threads-http"}[key]
        args = [*without(args, SPELLINGS[flag]), flag, value]
    return args


def _unified(args: list[str]) -> bool:
    """Whether the flags ask for one KV buffer for every slot (llama-server's default with -np is not)."""
    last = [arg for arg in args if arg in SWITCHES]
    return bool(last) and last[-1] in UNIFIED


def load_steps(flags: frozenset[str], concurrency: int, prompt_tokens: int, output_tokens: int) -> list[LoadStep]:
    """The steps this build offers (``flags``: its --help spellings), in the order they are tried."""
    steps: list[LoadStep] = []

    def offer(flag: str, step: LoadStep) -> None:
        if flag in flags:
            steps.append(step)

    offer("-fa", LoadStep("-fa on", "flash attention over every stream's KV",
                          lambda a: None if value_of(a, "-fa") == "on" else set_values(a, fa="on")))
    offer("--kv-unified", LoadStep(
        "--kv-unified / --no-kv-unified", "one KV buffer for all slots, or one per slot",
        lambda a: [*without(a, SWITCHES), NOT_UNIFIED[1] if _unified(a) else UNIFIED[1]]))
    offer("-ub", LoadStep("-b 512 -ub 512", "prompts in smaller pieces, so decode steps wait less behind them",
                          lambda a: None if value_of(a, "-ub") == "512" and value_of(a, "-b") == "512"
                          else set_values(a, b="512", ub="512")))
    offer("-ctk", LoadStep("-ctk q8_0 -ctv q8_0", "half the KV cache bytes read per step",
                           lambda a: None if value_of(a, "-ctk") == "q8_0"
                           else set_values(a, fa="on", ctk="q8_0", ctv="q8_0")))
    per_slot = -(-(prompt_tokens + output_tokens + 64) // 256) * 256
    offer("-c", LoadStep(f"-c {concurrency * per_slot}", f"{per_slot} tokens per slot: the load's, no more",
                         lambda a: None if value_of(a, "-c") == str(concurrency * per_slot)
                         else set_values(a, c=str(concurrency * per_slot))))
    offer("--poll", LoadStep("--poll 0", "threads sleep between steps instead of spinning",
                             lambda a: None if value_of(a, "--poll") == "0" else set_values(a, poll="0")))
    offer("--threads-http", LoadStep(f"--threads-http {concurrency}", "one HTTP thread per stream",
                                     lambda a: set_values(a, threads_http=str(concurrency))))
    return steps


def tune_for_load(proposal: ConfigProposal, model: str | None, concurrency: int, workload: Any) -> LoadTuning:
    """``Backend.tune_for_load``: the proposal's flags for N slots to start from, and this build's steps."""
    from velollm_llamacpp.install import find_program
    from velollm_llamacpp.server import server_flags
    from velollm_llamacpp.tune import benchmark_options

    if not model:
        raise UserInputError("--verify benchmarks a model: pass --model")
    path: Path = resolve_model_path(model)
    binary = find_program("llama-server")
    start = [arg for change in proposal.changes if change.kind == "flag" for arg in (change.args or [])]
    steps = load_steps(server_flags(binary), concurrency, workload.depth + workload.prompt_tokens,
                       workload.output_tokens)
    program = (proposal.command or ["llama-server"])[0]
    return LoadTuning(model=str(path), start_args=start, steps=steps, options_for=benchmark_options,
                      command_for=lambda args: [program, "-m", str(path), *args])
