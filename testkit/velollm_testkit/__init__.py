"""VeloLLM's test kit (distribution ``velollm-testkit``): the pytest plugin (``plugin.py``: fixtures
such as ``register_plugin``, ``fake_backend``, ``llama_server_url``, ``mock_llm_server``), the fuzzing
helpers (``fuzz.py``), a tiny GGUF writer (``gguf_writer.py``), the real llama-server harness
(``llama_server.py``) and the mock LLM server (``mock/``, one module per wire format).

Used by tests only: nothing in ``velollm_core`` or in a plugin's package imports it. The package's
own import is light (nothing here), so ``python -m velollm_testkit.mock`` starts fast.
"""
