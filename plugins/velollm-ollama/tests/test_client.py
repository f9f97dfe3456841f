"""OllamaClient against the loopback server: host normalization, JSON endpoints, error messages."""

from __future__ import annotations

import pytest
from velollm_ollama.client import OllamaClient, default_base_url, error_text, is_loopback_url, normalize_host

from velollm_core.contract.errors import BackendError, UserInputError


@pytest.mark.parametrize(
    "raw, url",
    [
        (None, "http://127.0.0.1:11434"),
        ("", "http://127.0.0.1:11434"),
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("0.0.0.0:8080", "http://127.0.0.1:8080"),
        ("localhost", "http://localhost:11434"),
        ("example.com:1234", "http://example.com:1234"),
        ("http://example.com", "http://example.com:80"),
        ("https://example.com", "https://example.com:443"),
        ("https://example.com:8443/", "https://example.com:8443"),
        ("http://10.0.0.5:11434/ollama", "http://10.0.0.5:11434/ollama"),
        ("[::1]:9999", "http://[::1]:9999"),
        ("::1", "http://[::1]:11434"),
        ("::", "http://[::1]:11434"),
        ('"127.0.0.1:5000"', "http://127.0.0.1:5000"),
        ("  host:99999 ", "http://host:11434"),
        ("ollama.com", "https://ollama.com:443"),
    ],
)
def test_normalize_host_like_ollama(raw, url):
    assert normalize_host(raw) == url


def test_default_base_url_prefers_host_over_env(monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "0.0.0.0:7777")
    assert default_base_url(None) == "http://127.0.0.1:7777"
    assert default_base_url("http://box:1") == "http://box:1"


def test_is_loopback():
    assert is_loopback_url("http://127.0.0.1:1")
    assert is_loopback_url("http://localhost:1")
    assert is_loopback_url("http://[::1]:1")
    assert not is_loopback_url("http://10.1.2.3:1")


def test_error_text_reads_ollama_error_bodies():
    assert error_text(b'{"error": "model \'x\' not found"}') == "model 'x' not found"
    assert error_text(b"plain text") == "plain text"
    assert error_text(b"") == "(empty body)"


def test_json_endpoints(fake_ollama):
    client = OllamaClient(fake_ollama.url)
    try:
        assert client.version() == fake_ollama.version
        assert {m["name"] for m in client.tags()} == {"tiny:latest", "llama3.2:1b"}
        assert client.ps()[0]["size_vram"] == 1_900_000_000
        shown = client.show("tiny")
        assert shown["model_info"]["llama.block_count"] == 16
        assert fake_ollama.requests[-1] == {"path": "/api/show", "model": "tiny"}
    finally:
        client.close()


def test_unreachable_server_message(dead_url):
    client = OllamaClient(dead_url)
    with pytest.raises(BackendError) as info:
        client.version()
    assert str(info.value) == f"Ollama is not reachable at {dead_url} — is `ollama serve` running?"


def test_missing_model_lists_installed_and_suggests_pull(fake_ollama):
    client = OllamaClient(fake_ollama.url)
    with pytest.raises(UserInputError) as info:
        client.show("llama3.2:3b")
    message = str(info.value)
    assert "model 'llama3.2:3b' is not installed" in message
    assert "model 'llama3.2:3b' not found" in message  # Ollama's own words
    assert "Installed: llama3.2:1b, tiny:latest." in message
    assert "Did you mean llama3.2:1b?" in message
    assert message.endswith("ollama pull llama3.2:3b")
    client.close()


def test_missing_model_name_is_shell_quoted_in_the_suggestion(fake_ollama):
    client = OllamaClient(fake_ollama.url)
    with pytest.raises(UserInputError) as info:
        client.show("x; rm -rf /")
    assert str(info.value).endswith("ollama pull 'x; rm -rf /'")
    client.close()


def test_not_an_ollama_server(fake_ollama):
    client = OllamaClient(fake_ollama.url)
    with pytest.raises(BackendError, match="HTTP 404: 404 page not found"):
        client.request_json("GET", "/nothing-here")
    client.close()


# Moved from tests/test_urls.py: the core's tests import no plugin.
def test_ollama_host_with_credentials_is_read_like_ollama():
    pytest.importorskip("velollm_ollama")
    from velollm_ollama.client import default_base_url, server_url

    # Before: the userinfo was taken for an IPv6 host, "http://[user:pw@127.0.0.1:5]:80".
    assert default_base_url("http://user:pw@127.0.0.1:5") == "http://127.0.0.1:5"
    assert server_url("user:pw@0.0.0.0").auth == ("user", "pw")
    assert server_url("user:pw@0.0.0.0").base == "http://127.0.0.1:11434"
