"""velollm-tgi: a VeloLLM backend for Hugging Face Text Generation Inference, written only against
``velollm_core.api``. Its native API streams its own events (``POST /generate_stream``), has its own
tokenizer endpoint (``POST /tokenize``) and no way to ignore the end-of-sequence token."""
