"""HTTP side of the ``openai`` backend: ``/v1/models``, streamed generations, and readable errors.

The API key lives only in the client's default headers, and the secrets of a ``--host`` URL (its
``user:password@`` and query) only in the client's auth and params: the base URL that messages and
results show carries none, and every server text that leaves this module goes through ``redact``
first, because some servers echo the key they rejected.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from velollm_core.api import (
    BackendError,
    Deadlines,
    RequestWatch,
    ServerURL,
    StreamCall,
    UserInputError,
    join_url,
    plain_request,
    read_bounded,
    scrub,
    split_server_url,
    stream_cut,
)

CONNECT_TIMEOUT_S = 10.0
SERVER_NAME = "OpenAI-compatible server"


class StreamOptionsRejected(Exception):
    """The server refused ``stream_options`` (older servers): retry without it, count chunks."""


def api_url(host: str) -> ServerURL:
    """The ``--host`` URL with ``/v1`` as the last path segment (where it is not already)."""
    server = split_server_url(host)
    if urlsplit(server.base).path.rsplit("/", 1)[-1] != "v1":
        server = replace(server, base=join_url(server.base, "v1"))
    return server


def api_base(host: str) -> str:
    """'localhost:8000', 'http://h:8000/' or 'http://h:8000/v1' -> 'http://h:8000/v1' (no secrets)."""
    return api_url(host).base


def error_text(response: Any, limit: int = 300) -> str:
    """The server's own error message: OpenAI ``{"error": {"message"}}``, TGI ``{"error": str}``,
    FastAPI ``{"detail"}``, or the raw body; on one line (it ends up in a one-line error). ``response``
    is read (``plain_request``'s, or a stream's through ``read_bounded``)."""
    try:
        data = json.loads(response.text)
    except (ValueError, UnicodeDecodeError):
        return " ".join((response.text or "").split())[:limit] or "(empty body)"
    if isinstance(data, dict):
        error = data.get("error", data.get("detail", data.get("message", data)))
        if isinstance(error, dict):
            error = error.get("message", error)
        data = error
    return " ".join(str(data).split())[:limit]


class OpenAIServer:
    """A thread-safe client for one OpenAI-compatible server, sized for ``max_concurrency`` streams."""

    def __init__(
        self,
        host: str,
        *,
        api_key: str | None = None,
        api_key_env: str | None = None,
        max_concurrency: int = 1,
        deadlines: Deadlines | None = None,
    ) -> None:
        import httpx

        server = api_url(host)
        if server.auth and api_key:
            # Both would set the Authorization header, and httpx lets the URL's win: the key would be
            # dropped without a word and a rejection blamed on it. We refuse to guess.
            raise UserInputError(
                f"--host carries a user name and password and --api-key-env names {api_key_env}: both "
                "would set the Authorization header, so give one (the password is sent as HTTP basic auth)"
            )
        self.base = server.base
        self._auth, self._params = server.auth, server.params  # for StreamCalls; never shown
        self.api_key_env = api_key_env
        self.basic_auth = server.auth is not None
        self._secrets = [secret for secret in (api_key, *server.secrets()) if secret]
        self.deadlines = deadlines or Deadlines()
        self.model_ids: list[str] = []
        # The /tokenize body this server answered (vLLM/SGLang's or llama-server's), once one has: each
        # later prompt is then one round trip, not a refused one first.
        self._tokenize_form: int | None = None
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # One connection per concurrent stream (plus one spare), so concurrent requests really overlap.
        size = max(max_concurrency, 1) + 1
        self._http = httpx.Client(
            headers=headers,
            # A user:password@ in --host is meant for the server (a proxy's basic auth, as curl sends it).
            auth=server.auth,
            params=server.params,
            limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
            timeout=self.deadlines.plain().httpx_timeout(CONNECT_TIMEOUT_S),
        )

    def close(self) -> None:
        self._http.close()

    @property
    def root(self) -> str:
        return self.base.removesuffix("/v1")

    def redact(self, text: str) -> str:
        """``text`` with the API key and the URL's secrets (should a server echo one) replaced by ``***``."""
        return scrub(text, self._secrets)

    def _plain(self, url: str, seconds: float) -> Any:
        """A GET whose whole answer must arrive within ``seconds`` (the response, read)."""
        limits = self.deadlines.plain(seconds)
        return plain_request(self._http, "GET", url, limits, server=SERVER_NAME, connect_s=CONNECT_TIMEOUT_S)

    def _unreachable(self, exc: Exception) -> BackendError:
        return BackendError(f"{SERVER_NAME} is not reachable at {self.base} ({type(exc).__name__})")

    def list_models(self) -> tuple[list[dict[str, Any]], dict[str, str]] | None:
        """``(data, response headers)`` of ``GET /v1/models``; None where the server has no such route."""
        import httpx

        try:
            response = self._plain(f"{self.base}/models", CONNECT_TIMEOUT_S * 3)
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
            response = self._plain(url, CONNECT_TIMEOUT_S)
            data = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, BackendError, ValueError):
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
            if self.basic_auth:
                raise UserInputError(f"{where} rejected the user name and password of --host (HTTP {status}: {text})")
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

    def status_error(self, status: int, body: bytes, *, model: str | None = None, path: str = "") -> Exception:
        """The readable error ``raise_for_status`` gives for a refused request, from its raw body."""
        import httpx

        try:
            self.raise_for_status(httpx.Response(status, content=body), model=model, path=path)
        except Exception as exc:  # noqa: BLE001 - the mapped error is the value returned
            return exc
        return BackendError(f"{SERVER_NAME} at {self.base} answered HTTP {status}")

    def stream_call(self, path: str, body: dict[str, Any], accumulator: Any) -> StreamCall:
        """``body`` POSTed to ``path`` as a StreamCall: the key in its headers, the URL's secrets in
        its auth and params, every server text redacted."""
        auth_header = self._http.headers.get("Authorization")
        return StreamCall(
            url=f"{self.base}{path}", body=body, accumulator=accumulator, framing="sse",
            server=f"{SERVER_NAME} at {self.base}",
            headers={"Authorization": auth_header} if auth_header else {},
            auth=self._auth, params=self._params or None,
            status_error=lambda status, raw: self.status_error(status, raw, model=body.get("model"), path=path),
        )

    def tokenize(self, model: str, text: str) -> list[int] | None:
        """The server's own tokenizer, where it has one (vLLM/SGLang ``/tokenize`` with ``prompt``,
        llama-server's with ``content``); None otherwise."""
        import httpx

        forms = ({"model": model, "prompt": text, "add_special_tokens": True}, {"content": text, "add_special": True})
        order = [self._tokenize_form] if self._tokenize_form is not None else range(len(forms))
        for form in order:
            body = forms[form]
            try:
                limits = self.deadlines.plain(CONNECT_TIMEOUT_S * 3)
                response = plain_request(self._http, "POST", f"{self.root}/tokenize", limits, server=SERVER_NAME,
                                         connect_s=CONNECT_TIMEOUT_S, json=body)
            except (httpx.HTTPError, BackendError):
                return None
            if response.status_code == 404:
                return None
            try:
                tokens = response.json().get("tokens") if response.status_code == 200 else None
            except (ValueError, AttributeError):
                tokens = None
            if isinstance(tokens, list) and tokens:
                self._tokenize_form = form
                return tokens
        return None

    def stream(self, path: str, body: dict[str, Any], *,
               tokens_arrived: Callable[[], int] | None = None) -> Iterator[tuple[float, dict[str, Any]]]:
        """POST ``body`` to ``path`` with ``stream: true``; yield (arrival time, event) per SSE event.

        Ends quietly at ``data: [DONE]`` or when the server closes the stream; a transport failure
        mid-way becomes the core's ``stream_cut`` error, with ``tokens_arrived()`` (the consumer's count;
        the events read where it gives none).
        """
        import httpx

        events = 0
        watch = RequestWatch(self.deadlines, server=SERVER_NAME, url=self.base)
        timeout = self.deadlines.httpx_timeout(CONNECT_TIMEOUT_S)
        try:
            with watch, self._http.stream("POST", f"{self.base}{path}", json=body, timeout=timeout) as response:
                watch.attach(response)
                if response.status_code != 200:
                    refusal = read_bounded(response, server=watch.who)
                    if refusal.status_code in (400, 422) and "stream_options" in body:
                        text = error_text(refusal)
                        if "stream_options" in text or "include_usage" in text:
                            raise StreamOptionsRejected(text)
                    self.raise_for_status(refusal, model=body.get("model"), path=path)
                for line in watch.lines(response):
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
                    watch.event()
                    yield time.perf_counter(), event
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise self._unreachable(exc) from None
        except httpx.TransportError as exc:
            tokens = tokens_arrived() if tokens_arrived is not None else events
            raise watch.error(exc) or stream_cut(f"the {SERVER_NAME} at {self.base}{path}", tokens,
                                                 self.redact(str(exc)) or None) from None


def _is_unknown_model(status: int, text: str) -> bool:
    lowered = text.lower()
    if status == 404 and "model" in lowered:
        return True
    return (
        status in (400, 422)
        and "model" in lowered
        and any(phrase in lowered for phrase in ("not found", "does not exist", "unknown", "not available"))
    )
