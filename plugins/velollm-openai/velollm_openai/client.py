"""HTTP side of the ``openai`` backend: ``/v1/models``, streamed generations, and readable errors.

The API key lives only in the client's default headers: every text that leaves this module (error
messages included) goes through ``redact`` first, because some servers echo the key they rejected.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from velollm_core.errors import BackendError, UserInputError

CONNECT_TIMEOUT_S = 10.0
SERVER_NAME = "OpenAI-compatible server"


class StreamOptionsRejected(Exception):
    """The server refused ``stream_options`` (older servers): retry without it, count chunks."""


def api_base(host: str) -> str:
    """'localhost:8000', 'http://h:8000/' or 'http://h:8000/v1' -> 'http://h:8000/v1'."""
    url = host.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url if url.endswith("/v1") else url + "/v1"


def error_text(response: Any, limit: int = 300) -> str:
    """The server's own error message: OpenAI ``{"error": {"message"}}``, TGI ``{"error": str}``,
    FastAPI ``{"detail"}``, or the raw body."""
    try:
        response.read()
        data = json.loads(response.text)
    except (ValueError, UnicodeDecodeError):
        return (response.text or "").strip()[:limit] or "(empty body)"
    if isinstance(data, dict):
        error = data.get("error", data.get("detail", data.get("message", data)))
        if isinstance(error, dict):
            error = error.get("message", error)
        return str(error)[:limit]
    return str(data)[:limit]


class OpenAIServer:
    """A thread-safe client for one OpenAI-compatible server, sized for ``parallel`` streams."""

    def __init__(
        self,
        host: str,
        *,
        api_key: str | None = None,
        api_key_env: str | None = None,
        parallel: int = 1,
        timeout_s: float = 600.0,
    ) -> None:
        import httpx

        self.base = api_base(host)
        self.api_key_env = api_key_env
        self._api_key = api_key
        self.model_ids: list[str] = []
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # One connection per parallel stream (plus one spare), so concurrent requests really overlap.
        size = max(parallel, 1) + 1
        self._http = httpx.Client(
            headers=headers,
            limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
            timeout=httpx.Timeout(timeout_s, connect=CONNECT_TIMEOUT_S),
        )

    def close(self) -> None:
        self._http.close()

    @property
    def root(self) -> str:
        return self.base.removesuffix("/v1")

    def redact(self, text: str) -> str:
        """``text`` with the API key (should a server echo it) replaced by ``***``."""
        return text.replace(self._api_key, "***") if self._api_key else text

    def _unreachable(self, exc: Exception) -> BackendError:
        return BackendError(f"{SERVER_NAME} is not reachable at {self.base} ({type(exc).__name__})")

    def list_models(self) -> tuple[list[dict[str, Any]], dict[str, str]] | None:
        """``(data, response headers)`` of ``GET /v1/models``; None where the server has no such route."""
        import httpx

        try:
            response = self._http.get(f"{self.base}/models", timeout=CONNECT_TIMEOUT_S * 3)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        if response.status_code in (404, 405):
            return None
        self.raise_for_status(response, model=None)
        try:
            data = response.json().get("data") or []
        except (ValueError, AttributeError):
            raise BackendError(
                f"{SERVER_NAME} at {self.base} answered /v1/models with something that is not the "
                f"OpenAI list format: {self.redact(response.text[:200])!r}"
            ) from None
        self.model_ids = [str(m.get("id")) for m in data if isinstance(m, dict) and m.get("id")]
        return [m for m in data if isinstance(m, dict)], dict(response.headers)

    def get_json(self, url: str) -> dict[str, Any] | None:
        """A best-effort GET (e.g. vLLM's ``/version``): the JSON object, or None on any failure."""
        import httpx

        try:
            response = self._http.get(url, timeout=CONNECT_TIMEOUT_S)
            data = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def offered(self) -> str:
        return ", ".join(self.model_ids) or "(the server lists none)"

    def raise_for_status(self, response: Any, *, model: str | None, path: str = "") -> None:
        """Map an error status to a readable VeloError; 200 passes."""
        status = response.status_code
        if status == 200:
            return
        text = self.redact(error_text(response))
        where = f"{SERVER_NAME} at {self.base}"
        if status in (401, 403):
            if self.api_key_env:
                raise UserInputError(
                    f"{where} rejected the API key from environment variable {self.api_key_env} "
                    f"(HTTP {status}: {text})"
                )
            raise UserInputError(
                f"{where} requires an API key (HTTP {status}: {text}); put the key in an environment "
                "variable and name it with --api-key-env VAR"
            )
        if model is not None and _is_unknown_model(status, text):
            raise UserInputError(
                f"{where} does not serve model {model!r} (HTTP {status}: {text}); it offers: {self.offered()}"
            )
        if status in (404, 405):
            raise UserInputError(
                f"{where} has no {path or 'such'} endpoint (HTTP {status}: {text}); "
                "try the other one with --endpoint chat|completions"
            )
        if status == 429:
            retry = response.headers.get("retry-after")
            hint = f"; Retry-After: {retry} s" if retry else "; the server sent no Retry-After"
            raise BackendError(f"{where} is rate limiting requests (HTTP 429: {text}){hint}")
        if status >= 500:
            raise BackendError(f"{where} failed with HTTP {status}: {text}")
        raise BackendError(f"{where} rejected the request with HTTP {status}: {text}")

    def stream(self, path: str, body: dict[str, Any]) -> Iterator[tuple[float, dict[str, Any]]]:
        """POST ``body`` to ``path`` with ``stream: true``; yield (arrival time, event) per SSE event.

        Ends quietly at ``data: [DONE]`` or when the server closes the stream; a transport failure
        mid-way becomes a BackendError.
        """
        import httpx

        events = 0
        try:
            with self._http.stream("POST", f"{self.base}{path}", json=body) as response:
                if response.status_code != 200:
                    if response.status_code in (400, 422) and "stream_options" in body:
                        text = error_text(response)
                        if "stream_options" in text or "include_usage" in text:
                            raise StreamOptionsRejected(text)
                    self.raise_for_status(response, model=body.get("model"), path=path)
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue  # comments (":"), "event:", "id:" and blank separators
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        return
                    try:
                        event = json.loads(payload)
                    except ValueError:
                        raise BackendError(
                            f"{SERVER_NAME} at {self.base} sent a malformed stream event: "
                            f"{self.redact(payload[:120])!r}"
                        ) from None
                    events += 1
                    yield time.perf_counter(), event
        except httpx.ConnectError as exc:
            raise self._unreachable(exc) from None
        except httpx.TransportError as exc:
            raise BackendError(
                f"the stream from {SERVER_NAME} at {self.base}{path} was cut mid-way after {events} "
                f"event(s) ({type(exc).__name__}: {self.redact(str(exc)) or 'no detail'})"
            ) from None


def _is_unknown_model(status: int, text: str) -> bool:
    lowered = text.lower()
    if status == 404 and "model" in lowered:
        return True
    return (
        status in (400, 422)
        and "model" in lowered
        and any(phrase in lowered for phrase in ("not found", "does not exist", "unknown", "not available"))
    )
