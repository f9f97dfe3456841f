"""HTTP side of the ``tgi`` backend: ``GET /info``, ``POST /tokenize``, streamed ``POST /generate_stream``.

The secrets of a ``--host`` URL (``user:password@`` and its query) go only to the HTTP client's auth
and params; the base URL that messages and results show carries none.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from velollm_core.api import (
    CONNECT_TIMEOUT_S,
    BackendError,
    Deadlines,
    RequestWatch,
    ServerGone,
    StreamCall,
    UserInputError,
    plain_request,
    read_bounded,
    scrub,
    split_server_url,
    stream_cut,
)
from velollm_tgi.events import TGIStream

SERVER_NAME = "Text Generation Inference"
INFO_TIMEOUT_S = 30.0


def error_message(status: int, body: bytes) -> str:
    """TGI's own error text (``{"error": ..., "error_type": ...}``) on one line, or the raw body's start."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        kind = data.get("error_type")
        return f"{data['error']} ({kind})" if isinstance(kind, str) else data["error"]
    return " ".join(body[:200].decode(errors="replace").split()) or f"HTTP {status} with an empty body"


class TGIServer:
    """A thread-safe client for one TGI router, with one connection per concurrent stream."""

    def __init__(self, host: str, *, deadlines: Deadlines, max_concurrency: int = 1) -> None:
        import httpx

        url = split_server_url(host)
        self.base = url.base
        self.who = f"{SERVER_NAME} at {self.base}"
        self.deadlines = deadlines
        self._auth, self._params, self._secrets = url.auth, url.params, url.secrets()
        size = max(max_concurrency, 1) + 1
        self._http = httpx.Client(auth=url.auth, params=url.params,
                                  limits=httpx.Limits(max_connections=size, max_keepalive_connections=size))

    def close(self) -> None:
        self._http.close()

    def _unreachable(self, exc: Exception) -> ServerGone:
        """Nothing listens at --host: before the first run a wrong address, later a server that died."""
        return ServerGone(f"{self.who} is not reachable ({type(exc).__name__}); is text-generation-launcher "
                            "running there? (pass its address with --host)")

    def status_error(self, status: int, body: bytes) -> Exception:
        """The readable error for a refused request: 422 is TGI's validation (the request the user asked
        for cannot run there: a prompt or max_tokens over its limits), the rest a failure of the server."""
        text = scrub(error_message(status, body), self._secrets)
        if status == 422:
            return UserInputError(f"{self.who} refused the request: {text}")
        if status in (401, 403):
            return UserInputError(f"{self.who} refused the credentials of --host (HTTP {status}: {text})")
        return BackendError(f"{self.who} answered HTTP {status}: {text}")

    def _plain(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request that is not a stream, its answer read whole; an error status raises."""
        import httpx

        try:
            response = plain_request(self._http, method, f"{self.base}{path}",
                                     self.deadlines.plain(INFO_TIMEOUT_S),
                                     server=SERVER_NAME, connect_s=CONNECT_TIMEOUT_S, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        if response.status_code != 200:
            raise self.status_error(response.status_code, response.content)
        return response

    def info(self) -> dict[str, Any]:
        """``GET /info``: the model served (``model_id``), the version and the router's limits."""
        response = self._plain("GET", "/info")
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("model_id"), str):
            raise BackendError(f"{self.who} answered /info with no model_id: is this a TGI router? "
                               f"({scrub(response.text[:120], self._secrets)!r})")
        return data

    def tokenize(self, text: str) -> list[int]:
        """``POST /tokenize``: the token ids of ``text`` as the served model's tokenizer counts them."""
        response = self._plain("POST", "/tokenize", json={"inputs": text})
        try:
            tokens = response.json()
        except ValueError:
            tokens = None
        if not isinstance(tokens, list) or not all(
                isinstance(token, dict) and isinstance(token.get("id"), int) for token in tokens):
            raise BackendError(f"{self.who} answered /tokenize with something other than a list of tokens")
        return [token["id"] for token in tokens]

    def stream_call(self, body: dict[str, Any], accumulator: Any) -> StreamCall:
        """``body`` POSTed to ``/generate_stream`` as a StreamCall for the core's load generator."""
        return StreamCall(url=f"{self.base}/generate_stream", body=body, accumulator=accumulator,
                          framing="sse", server=self.who, auth=self._auth, params=self._params or None,
                          status_error=self.status_error)

    def stream(self, body: dict[str, Any], events: TGIStream) -> Iterator[tuple[float, dict[str, Any]]]:
        """``(arrival time, event)`` of each ``data:`` line of one ``/generate_stream`` answer, under the
        benchmark's deadlines; the caller feeds them to ``events`` and stops after the final one."""
        import httpx

        url = f"{self.base}/generate_stream"
        timeout = self.deadlines.httpx_timeout(CONNECT_TIMEOUT_S)
        request = self._http.build_request("POST", url, json=body, timeout=timeout)
        watch = RequestWatch(self.deadlines, server=SERVER_NAME, url=url)
        try:
            with watch:
                response = self._http.send(request, stream=True)
                try:
                    watch.attach(response)
                    if response.status_code != 200:
                        body = read_bounded(response, server=self.who).content  # a bomb is an error too
                        raise self.status_error(response.status_code, body)
                    for line in watch.lines(response):
                        arrived = time.perf_counter()
                        if not line.startswith("data:"):
                            continue  # blank separators, comments, "event:" lines
                        yield arrived, self._event(line[5:].strip())
                        watch.event()
                finally:
                    response.close()
        except httpx.HTTPError as exc:
            passed = watch.error(exc)
            if passed is not None:
                raise passed from None
            if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
                raise self._unreachable(exc) from None
            raise stream_cut(self.who, len(events.token_times)) from None

    def _event(self, payload: str) -> Any:
        try:
            return json.loads(payload)
        except ValueError:
            raise BackendError(f"{self.who} sent a stream event that is not JSON: "
                               f"{scrub(payload[:120], self._secrets)!r}") from None
