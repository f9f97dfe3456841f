"""The ``echo`` backend: "generates" by streaming the prompt's words back, one every ``token_delay_ms``.

Nothing here is a real model, but every number is measured as a real backend measures it: the time
to the first token, the decode rate between the first and the last token, the whole request.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import click

from velollm_core.api import (
    BackendBase,
    BackendInfo,
    BackendOptions,
    BenchmarkContext,
    Capabilities,
    Field,
    GenerationRequest,
    GenerationTiming,
    ModelFacts,
    UserInputError,
)


class EchoOptions(BackendOptions):
    """``--option token_delay_ms=5``; ``--echo-prefix TEXT`` (the backend's own flag) sets ``echo_prefix``."""

    token_delay_ms: float = Field(2.0, ge=0, description="Milliseconds between two streamed tokens.")
    echo_prefix: str = Field("", description="Words streamed before the prompt's.")


def stream_words(words: list[str], count: int, delay_s: float) -> Iterator[tuple[float, str]]:
    """``count`` tokens cycling through ``words``, each after ``delay_s``: (arrival time, token)."""
    for word in itertools.islice(itertools.cycle(words or ["echo"]), count):
        time.sleep(delay_s)
        yield time.perf_counter(), word


class EchoBackend(BackendBase):
    """No server to start or stop (``start``/``close`` keep ``BackendBase``'s defaults), no streaming
    for the load generator (load levels run ``generate`` on a thread per stream), no tokenizer (prompt
    sizes are calibrated), no metrics; it always streams ``max_tokens`` words, so a fixed output
    length holds (``ignore_eos``)."""

    name = "echo"
    Options = EchoOptions
    capabilities = Capabilities(ignore_eos=True)
    cli_options = (click.Option(["--echo-prefix"], metavar="TEXT", help="echo backend: words sent first."),)

    def check(self, context: BenchmarkContext, requests: list[GenerationRequest]) -> None:
        """Refuse, before any run, a benchmark whose longest request would outlast its deadline (from the
        options alone: check may make no network call)."""
        settings: EchoOptions = context.settings
        longest = max((r.max_tokens for r in requests), default=0) * settings.token_delay_ms / 1000
        limit = settings.timeout_s or 600.0
        if longest > limit:
            raise UserInputError(f"echo: {longest:.0f} s per request is more than timeout_s={limit:g}; "
                                 "lower --option token_delay_ms or --max-tokens")

    def generate(self, request: GenerationRequest, context: BenchmarkContext) -> GenerationTiming:
        settings: EchoOptions = context.settings
        words = [*settings.echo_prefix.split(), *request.prompt.split()]
        started = time.perf_counter()
        arrivals, tokens = [], []
        for arrived, token in stream_words(words, request.max_tokens, settings.token_delay_ms / 1000):
            arrivals.append(arrived)
            tokens.append(token)
        ended = time.perf_counter()
        first, last = arrivals[0], arrivals[-1]
        decode = (len(arrivals) - 1) / (last - first) if len(arrivals) > 1 and last > first else None
        prompt_tokens = len(request.prompt.split())
        return GenerationTiming(
            ttft_ms=(first - started) * 1000,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(tokens),
            prompt_tokens_per_s=prompt_tokens / (first - started) if first > started else None,
            decode_tokens_per_s=decode,  # no server clock here: the client's is the only one
            client_decode_tokens_per_s=decode,
            total_ms=(ended - started) * 1000,
            stop_reason="length",
            text=" ".join(tokens),
        )

    def describe(self, context: BenchmarkContext) -> BackendInfo:
        settings: EchoOptions = context.settings
        return BackendInfo(name=self.name, version="0.1.0", model=ModelFacts(name=context.model),
                           server_flags=[f"token_delay_ms={settings.token_delay_ms:g}"])
