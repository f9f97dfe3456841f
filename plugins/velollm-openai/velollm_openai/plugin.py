"""Hook implementations of velollm-openai (imports only the hook marker: the CLI starts fast)."""

from __future__ import annotations

from velollm_core.api import hookimpl


@hookimpl
def register_backends(register):
    from velollm_openai.backend import OpenAIBackend

    register(OpenAIBackend())
