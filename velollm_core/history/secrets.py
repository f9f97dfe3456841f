"""Secrets out of documents before they reach the history database or a report.

The result models already redact ``--host`` (``velollm_core.contract.urls.redact_url``); a file written by an
older or another tool, a backend option named like a key (``--option api_key=...``) or a raw
``server_args="--api-key sk-..."`` would still carry one. Every document the history stores and every
result a report shows goes through :func:`scrub_document` first: a second line of defence, so a key
never reaches the database or an HTML page even when the first one missed it.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "***"

# Keys whose value is a secret, matched on the key's last word (``request.api_key``, ``ssl_password``).
# ``api_key_env`` names an environment variable (never the key) and token counts (``prompt_tokens``,
# ``eos_token``) are no credentials: both are kept.
_SECRET_WORDS = {"apikey", "api_key", "password", "passwd", "secret", "client_secret", "authorization", "auth",
                 "bearer", "token", "access_token", "auth_token", "api_token", "hf_token", "bearer_token"}
# A flag that takes a secret as its value, in a list of arguments or inside one string of them.
_SECRET_FLAGS = ("--api-key", "--hf-token", "--ssl-key-file-password")
_FLAG_IN_TEXT = re.compile(r"(?P<flag>" + "|".join(map(re.escape, _SECRET_FLAGS)) + r")(?P<sep>[= ]+)(?P<value>\S+)")
# Credentials inside a URL: user:password@ or a query string.
_URL = re.compile(r"\b[a-z][a-z0-9+.\-]*://[^\s\"'<>]+", re.IGNORECASE)
_BEARER = re.compile(r"\bBearer\s+\S+", re.IGNORECASE)


def is_secret_key(key: str) -> bool:
    """``api_key``, ``request.api-key``, ``Authorization``, ``hf_token``: yes; ``api_key_env``, ``prompt_tokens``: no."""
    last = key.lower().replace("-", "_").rsplit(".", 1)[-1]
    return last in _SECRET_WORDS or last.endswith(("_api_key", "_password", "_secret"))


def scrub_text(text: str) -> str:
    """``text`` with URL credentials, ``--api-key VALUE`` and ``Bearer VALUE`` replaced by ``***``."""
    if "://" in text:
        from velollm_core.contract.urls import redact_url

        text = _URL.sub(lambda match: redact_url(match.group(0)), text)
    if "--" in text:
        text = _FLAG_IN_TEXT.sub(lambda m: f"{m.group('flag')}{m.group('sep')}{REDACTED}", text)
    if "earer" in text:
        text = _BEARER.sub(f"Bearer {REDACTED}", text)
    return text


def scrub_document(node: Any) -> Any:
    """A copy of ``node`` (parsed JSON) with every secret replaced; equal to ``node`` when it holds none."""
    if isinstance(node, dict):
        return {key: (REDACTED if isinstance(key, str) and is_secret_key(key) and value not in (None, "")
                      else scrub_document(value)) for key, value in node.items()}
    if isinstance(node, list):
        out = []
        hide_next = False
        for item in node:
            if hide_next and isinstance(item, str):
                out.append(REDACTED)
            else:
                out.append(scrub_document(item))
            hide_next = isinstance(item, str) and item in _SECRET_FLAGS
        return out
    if isinstance(node, str):
        return scrub_text(node)
    return node
