"""VeloLLM plugin: Intel GPU probe (xpu-smi)."""
