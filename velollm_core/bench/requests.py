"""The requests a plan sends: a suite's fixed prompt, a synthetic workload's prompts of exact token
counts (sized with the backend's tokenizer, or calibrated against its counts), a dataset's prompts."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from typing import Any

from velollm_core.bench.suites import Suite
from velollm_core.bench.trace import Trace
from velollm_core.bench.workloads import Dataset, PromptBuilder, Workload, build_each, build_prompts
from velollm_core.contract.schemas import GenerationRequest, GenerationTiming

Tokenize = Callable[[str], Any]
# A request and the depth context to send into the server's cache before it (or None).
RequestPair = tuple[GenerationRequest, GenerationRequest | None]


class RequestBuilder:
    """Builds the plan's GenerationRequests; prompt sizing starts the backend only when a synthetic
    workload needs it (``tokenizer`` and ``generate`` are the runner's)."""

    def __init__(self, plan: Any, *, tokenizer: Callable[[], Tokenize | None],
                 generate: Callable[[GenerationRequest], GenerationTiming]) -> None:
        self.plan = plan
        self._tokenizer = tokenizer
        self._generate = generate
        self._builder: PromptBuilder | None = None
        # How prompts were sized, once they were: the method, and with a tokenizer its round trips and
        # the seconds spent (all before the levels' clocks start).
        self.prompt_sizing: dict[str, Any] | None = None

    def max_tokens(self, job: Suite | Workload | Dataset | Trace) -> int:
        if isinstance(job, (Workload, Trace)):
            return job.output_tokens
        if isinstance(job, Dataset):
            return job.max_tokens
        return self.plan.max_tokens or job.max_tokens

    def request(self, job: Suite | Workload | Dataset | Trace, prompt: str | None = None,
                target: int | None = None) -> GenerationRequest:
        """One request of ``job`` as the plan sends it (``target``: the prompt's size in tokens)."""
        synthetic = isinstance(job, (Workload, Trace))
        return GenerationRequest(
            benchmark=job.name,
            prompt=prompt if prompt is not None else getattr(job, "prompt", ""),
            max_tokens=self.max_tokens(job),
            seed=self.plan.seed,
            options=dict(self.plan.options),
            ignore_eos=not self.plan.natural_stop,
            raw=synthetic,
            cache_prompt=self.plan.prefix_cache or bool(synthetic and job.depth),
            prompt_tokens_target=target,
            **self.plan.shape.request_fields(),
        )

    def one_per_job(self) -> list[GenerationRequest]:
        """One request per job as it will be sent, for ``Backend.check``: a synthetic workload's with its
        prompt size (depth included) as prompt_tokens_target, a dataset's with its longest prompt."""
        requests = [self.request(suite) for suite in self.plan.suites]
        requests += [self.request(w, target=w.depth + w.prompt_tokens) for w in self.plan.workloads]
        requests += [self.request(d, max(d.prompts, key=len)) for d in self.plan.datasets]
        if self.plan.trace is not None:
            requests.append(self.request(self.plan.trace, target=self.plan.trace.prompt_tokens))
        return requests

    def _prompt_builder(self) -> PromptBuilder:
        if self._builder is None:
            builder = PromptBuilder(self._tokenizer())
            if builder.tokenize is None:
                def count(text: str) -> int | None:
                    return self._generate(GenerationRequest(benchmark="calibration", prompt=text, max_tokens=1,
                                                            seed=self.plan.seed, options=dict(self.plan.options),
                                                            raw=True)).prompt_tokens

                builder.calibrate(count, random.Random(self.plan.seed))
                self.prompt_sizing = {"method": "calibrated", "fit": builder.fit}
            else:
                self.prompt_sizing = {"method": "tokenizer"}
            self._builder = builder
        return self._builder

    def pairs(self, job: Suite | Workload | Dataset | Trace, count: int, *, unique: bool,
              offset: int) -> list[RequestPair]:
        """``count`` requests of ``job``, each with the depth context to prime first (or None);
        ``offset`` (the runs so far) moves the seed and a dataset's position on.

        Synthetic workloads are unique from their first token unless the plan measures prefix caching;
        a suite's fixed prompt gets a unique first line at load levels (``unique``) for the same reason.
        """
        if isinstance(job, (Workload, Trace)):
            return self._sized_pairs(job, count, offset)
        if isinstance(job, Dataset):
            return [(self.request(job, job.prompt(offset + i, self.plan.seed)), None) for i in range(count)]
        if not unique or self.plan.prefix_cache:
            return [(self.request(job), None) for _ in range(count)]
        return [(self.request(job, f"Request {uuid.uuid4().hex[:8]}.\n{job.prompt}"), None) for _ in range(count)]

    def _sized_pairs(self, job: Workload | Trace, count: int, offset: int) -> list[RequestPair]:
        """``pairs`` of a synthetic job: every prompt sized now, the round trips and seconds it took
        added to ``prompt_sizing``."""
        builder = self._prompt_builder()
        started = time.perf_counter()
        if isinstance(job, Trace):
            pairs: list[RequestPair] = [(request, None) for request in
                                        build_each(builder, lambda index: self._trace_request(job, index), count)]
        else:
            pairs = []
            for prompt in build_prompts(job, builder, count, self.plan.seed + offset, shared=self.plan.prefix_cache):
                prime = None
                if prompt.depth_text is not None:
                    prime = self.request(job, prompt.depth_text).model_copy(update={"max_tokens": 1, "cache_prompt": True})
                pairs.append((self.request(job, prompt.text, prompt.tokens), prime))
        if self.prompt_sizing is not None and builder.tokenize is not None:
            self.prompt_sizing["round_trips"] = builder.round_trips
            self.prompt_sizing["seconds"] = round(self.prompt_sizing.get("seconds", 0.0)
                                                  + time.perf_counter() - started, 3)
        return pairs

    def _trace_request(self, trace: Trace, index: int) -> GenerationRequest:
        """The ``index``-th request of ``trace``: a prompt of exactly its input tokens, its output length."""
        record = trace.records[index % len(trace.records)]
        rng = random.Random(f"{self.plan.seed}:{trace.name}:{index}")
        text, _ = self._prompt_builder().build(record.input_tokens, rng)
        request = self.request(trace, text, record.input_tokens)
        return request.model_copy(update={"max_tokens": record.output_tokens})
