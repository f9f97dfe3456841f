"""VeloLLM plugin: llama.cpp backend: build, llama-server lifecycle, benchmark runner, speculative decoding."""
