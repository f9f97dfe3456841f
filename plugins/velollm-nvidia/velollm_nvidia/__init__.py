"""VeloLLM plugin: NVIDIA GPU probe (NVML via nvidia-ml-py, nvidia-smi fallback)."""
