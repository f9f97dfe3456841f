"""VeloLLM plugin: benchmark backend for OpenAI-compatible servers (/v1/completions, /v1/chat/completions)."""
