"""The mock LLM server of the test kit: one asyncio process on real sockets that streams tokens on a
schedule in the wire formats of llama-server (``llamacpp.py``), OpenAI (``openai.py``), Ollama
(``ollama.py``) and Hugging Face TGI (``tgi.py``), over shared parts: the tokenizer, the scheduler
(slots, prefix cache, counters), the HTTP server and the command line (``python -m
velollm_testkit.mock``). ``mock_llm(**config)`` runs it in its own process for a test or a benchmark.
"""

from velollm_testkit.mock.config import MockConfig
from velollm_testkit.mock.process import MockLLM, mock_llm

__all__ = ["MockConfig", "MockLLM", "mock_llm"]
