"""VeloLLM core: hook contract, plugin manager, hardware detection and the benchmark engine."""

__version__ = "0.1.0"
