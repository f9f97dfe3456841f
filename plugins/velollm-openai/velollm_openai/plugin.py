"""Hook implementations of velollm-openai (imports only the hook marker: the CLI starts fast)."""

from __future__ import annotations

from velollm_core.api import hookimpl


@hookimpl
def register_backends(register):
    from velollm_openai.backend import OpenAIBackend

    register(OpenAIBackend())


@hookimpl
def register_result_importers(register):
    """The benchmark tools of OpenAI-compatible servers: GuideLLM's JSON and `vllm bench serve`'s JSON."""
    from velollm_core.api import ResultImporter

    def peers():
        from velollm_openai import peers

        return peers

    register(ResultImporter("guidellm", lambda path, head: peers().sniff_guidellm(path, head),
                            lambda path: peers().load_guidellm(path), description="guidellm run --output kind=json"))
    register(ResultImporter("vllm-bench-serve", lambda path, head: peers().sniff_vllm_bench(path, head),
                            lambda path: peers().load_vllm_bench(path),
                            description="vllm bench serve --save-result --save-detailed"))
