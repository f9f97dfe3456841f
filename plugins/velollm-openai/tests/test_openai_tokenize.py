"""The openai backend's /tokenize: one round trip a count once it knows which body its server answers
(vLLM's and SGLang's ``prompt`` or llama-server's ``content``), against the mock server."""

from __future__ import annotations

import pytest
from velollm_testkit.mock import mock_llm


@pytest.fixture(scope="module")
def mock():
    with mock_llm() as server:
        yield server


def test_the_openai_backend_asks_its_server_once_a_count(mock, monkeypatch):
    """The mock answers /tokenize as llama-server does: vLLM's body first gets no tokens, once."""
    import velollm_openai.client as client_module

    sent: list[dict] = []
    plain = client_module.plain_request

    def counted(*args, **kwargs):
        if str(args[2]).endswith("/tokenize"):
            sent.append(kwargs["json"])
        return plain(*args, **kwargs)

    monkeypatch.setattr(client_module, "plain_request", counted)
    client = client_module.OpenAIServer(mock.url)
    try:
        counts = [len(client.tokenize("velollm-mock", text) or []) for text in ("one two", "three four five")]
    finally:
        client.close()
    assert counts[1] == counts[0] + 1
    assert ["content" in body for body in sent] == [False, True, True]
