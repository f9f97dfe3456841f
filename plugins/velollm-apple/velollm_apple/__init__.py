"""VeloLLM plugin: Apple silicon GPU probe (system_profiler, sysctl)."""
