"""VeloLLM plugin: AMD GPU probe (amdsmi, amd-smi, rocm-smi, sysfs)."""
