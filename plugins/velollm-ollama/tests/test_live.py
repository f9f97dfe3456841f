"""Against a real Ollama at $OLLAMA_HOST (default 127.0.0.1:11434); skipped when none answers."""

from __future__ import annotations

import pytest
from velollm_ollama.backend import OllamaBackend
from velollm_ollama.client import OllamaClient, default_base_url
from velollm_testkit.plugin import BackendCalls

from velollm_core.contract.errors import UserInputError, VeloError
from velollm_core.contract.schemas import BenchmarkContext, GenerationRequest

plugin = BackendCalls(OllamaBackend())  # called as the engine calls it

pytestmark = pytest.mark.ollama_live


@pytest.fixture(scope="module")
def live() -> tuple[OllamaClient, str]:
    """A client for the real server and its smallest installed model that generates text."""
    url = default_base_url()
    client = OllamaClient(url, connect_timeout=1.0, read_timeout=300.0)
    try:
        client.version()
        models = client.tags()
    except VeloError:
        client.close()
        pytest.skip(f"no Ollama answers at {url}")
    candidates = [m for m in models if "embed" not in str(m.get("name"))
                  and (m.get("details") or {}).get("format", "gguf") == "gguf"]
    if not candidates:
        client.close()
        pytest.skip(f"Ollama at {url} has no text model installed")
    smallest = min(candidates, key=lambda m: int(m.get("size") or 0))
    yield client, str(smallest["name"])
    client.close()


def test_generation_timing(live):
    client, model = live
    context = BenchmarkContext(backend="ollama", model=model, host=client.base_url)
    request = GenerationRequest(benchmark="live", prompt="Count from 1 to 20.", max_tokens=16)
    with context.resources:
        plugin.generate(request, context)  # loads the model
        timing = plugin.generate(request, context)
        info = plugin.describe(context)
    assert timing.completion_tokens and timing.completion_tokens <= 16
    assert timing.ttft_ms > 0 and timing.total_ms >= timing.ttft_ms
    assert timing.decode_tokens_per_s > 0
    assert timing.stop_reason in ("length", "stop")
    assert info.version and info.model.quantization


def test_missing_model_message(live):
    client, _ = live
    with pytest.raises(UserInputError, match="ollama pull velollm-no-such-model"):
        client.show("velollm-no-such-model:nope")


def test_store_resolves_installed_models(live):
    _, model = live
    from velollm_ollama.store import ModelStore

    store = ModelStore.default()
    if not store.existing_dirs():
        pytest.skip("Ollama's model store is not readable from this user")
    found = store.find(model)
    if found is None:
        pytest.skip(f"{model} is not in the stores this user can read ({store.models_dirs})")
    assert found.gguf_path is None or found.gguf_path.read_bytes()[:4] == b"GGUF"


def test_proposal_for_the_live_server(live):
    _, model = live
    from velollm_core.hardware.report import detect_hardware

    [proposal] = plugin.propose_config(hardware=detect_hardware(), model=model, backend="ollama")
    assert proposal.runtime == "ollama"
    assert all(change.reason for change in proposal.changes)


def test_prompt_rate_on_evaluated_tokens(live):
    """Ollama >= 0.30.1 counts the cached template header: the rate is on evaluated tokens only."""
    from velollm_ollama.versions import has

    client, model = live
    version = client.version()
    context = BenchmarkContext(backend="ollama", model=model, host=client.base_url)
    request = GenerationRequest(benchmark="live", prompt="Name three colours.", max_tokens=4)
    with context.resources:
        timings = [plugin.generate(request, context) for _ in range(2)]
    for timing in timings:
        method = timing.extra["prompt_rate_method"]
        if has(version, "prompt_count_includes_cache"):
            assert method in ("context_prefix", "unknown_cache")
            if method == "context_prefix":
                assert timing.prompt_tokens == timing.extra["prompt_tokens_evaluated"] + timing.extra["prompt_tokens_cached"]
        else:
            assert method == "reported"
