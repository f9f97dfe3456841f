"""VeloLLM plugin: Ollama backend: benchmark runner, model store, config optimizer."""
