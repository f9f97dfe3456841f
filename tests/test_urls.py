"""velollm_core.contract.urls: --host URLs split into base and secrets, joined by path, redacted for display."""

from __future__ import annotations

import subprocess
import sys

import pytest

from velollm_core.contract.errors import UserInputError
from velollm_core.contract.urls import (
    ServerURL,
    check_server_url,
    join_url,
    redact_url,
    scrub,
    split_server_url,
)


@pytest.mark.parametrize("url, shown", [
    ("http://user:secret@127.0.0.1:8000", "http://***@127.0.0.1:8000"),
    ("http://h:1/?api_key=secret", "http://h:1/?api_key=***"),
    ("https://token@pypi.example/simple/?a=1&b=", "https://***@pypi.example/simple/?a=***&b=***"),
    ("user:pw@h:1/x", "***@h:1/x"),  # no scheme: read as host, not as scheme "user"
    ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),  # nothing secret: unchanged
    ("localhost:8000", "localhost:8000"),
    ("[::1]:9999", "[::1]:9999"),
    ("", ""),
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown


@pytest.mark.parametrize("raw, expected", [
    ("http://user:p%40ss@127.0.0.1:8000/", ServerURL("http://127.0.0.1:8000", (), ("user", "p@ss"))),
    ("http://h:1/?api_key=secret", ServerURL("http://h:1", (("api_key", "secret"),))),
    ("localhost:8000", ServerURL("http://localhost:8000")),
    ("https://h.example/openai/", ServerURL("https://h.example/openai")),
    ("tok@h:1", ServerURL("http://h:1", (), ("tok", ""))),
])
def test_split_server_url(raw, expected):
    assert split_server_url(raw) == expected


def test_split_without_default_scheme_keeps_the_text():
    # Ollama reads OLLAMA_HOST by its own rules (0.0.0.0, ports by scheme): only secrets are taken off.
    assert split_server_url("user:pw@0.0.0.0:8080", default_scheme=None).base == "0.0.0.0:8080"
    assert split_server_url("", default_scheme=None).base == ""


def test_join_url_keeps_the_query_at_the_end():
    assert join_url("http://h:1/?k=v", "v1") == "http://h:1/v1?k=v"
    assert join_url("http://h:1/api/", "v1", "/models") == "http://h:1/api/v1/models"
    assert join_url("h:1", "health") == "h:1/health"


def test_secrets_include_the_basic_auth_header_value():
    server = split_server_url("http://u:pw@h:1/?t=tok")
    assert set(server.secrets()) == {"tok", "pw", "dTpwdw=="}  # base64("u:pw")
    assert scrub("echo: Basic dTpwdw== pw tok", server.secrets()) == "echo: Basic *** *** ***"


@pytest.mark.parametrize("raw, why", [
    ("http://[::1", "is not a URL: Invalid IPv6 URL"),
    ("http://h:99999", "is not a URL: Port out of range"),
    ("http://user:pw-SECRET@h:abc/?k=tok-SECRET", "is not a URL: Port could not be cast"),
    ("http://", "names no host"),
    ("http://h:0", "port 0"),
    ("http://a b:1", "spaces or control characters"),
    ("", "is not a URL"),
])
def test_malformed_server_urls_are_one_user_error_without_secrets(raw, why):
    with pytest.raises(UserInputError, match=why) as caught:
        check_server_url(raw)
    assert "SECRET" not in str(caught.value)


@pytest.mark.parametrize("raw", ["http://127.0.0.1:8000", "localhost:11434", "u:p@h:1", "http://[::1]:8080/v1",
                                 "0.0.0.0", "https://h.example/openai/?api_key=k"])
def test_usable_server_urls_pass_unchanged(raw):
    assert check_server_url(raw) == raw


def test_redact_url_of_a_malformed_url_shows_no_secret():
    assert redact_url("http://u:pw@[::1?k=secret") == "http://***@[::1"


@pytest.mark.parametrize("host", ["http://[::1", "http://h:port", "http://"])
def test_benchmark_with_a_malformed_host_exits_2_in_one_line(host):
    proc = subprocess.run([sys.executable, "-m", "velollm_core", "benchmark", "--backend", "openai", "--host", host,
                           "--model", "x"], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("Error: --host "), proc.stderr
