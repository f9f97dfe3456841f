"""velollm-echo: a complete VeloLLM backend plugin, written only against ``velollm_core.api``."""
