"""OllamaClient: Ollama's HTTP API over httpx, every failure turned into one readable message."""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
import shlex
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from velollm_core.api import (
    PLAIN_TIMEOUT_S,
    BackendError,
    Deadlines,
    RequestWatch,
    ServerURL,
    UserInputError,
    VeloError,
    plain_request,
    read_bounded,
    scrub,
    split_server_url,
)

DEFAULT_PORT = "11434"
DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORT}"
CONNECT_TIMEOUT_S = 5.0
_MODEL_NOT_FOUND = re.compile(r"model\s.*not found", re.IGNORECASE)


def _split_host_port(hostport: str) -> tuple[str, str]:
    """Go's ``net.SplitHostPort``: ``host:port`` or ``[v6]:port``; ValueError otherwise."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or hostport[end + 1 : end + 2] != ":":
            raise ValueError(hostport)
        return hostport[1:end], hostport[end + 2 :]
    if hostport.count(":") != 1:
        raise ValueError(hostport)
    host, port = hostport.split(":")
    return host, port


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def normalize_host(raw: str | None) -> str:
    """A base URL from an ``OLLAMA_HOST``-style value, read the way Ollama reads it.

    ``0.0.0.0``, ``host:port``, ``https://h``, ``[::1]:8080`` and an empty value all work: the scheme
    defaults to http, the port to 11434 (80/443 when the scheme is given), and a bind-all address
    becomes loopback, because a client cannot connect to 0.0.0.0 everywhere (Windows).
    """
    text = (raw or "").strip().strip("\"'").strip()
    default_port = DEFAULT_PORT
    scheme, sep, hostport = text.partition("://")
    if not sep:
        scheme, hostport = "http", text
        if text == "ollama.com":
            scheme, hostport = "https", "ollama.com:443"
    elif scheme == "http":
        default_port = "80"
    elif scheme == "https":
        default_port = "443"
    hostport, _, path = hostport.partition("/")
    try:
        host, port = _split_host_port(hostport)
    except ValueError:
        host, port = "127.0.0.1", default_port
        ip = _parse_ip(hostport.strip("[]"))
        if ip is not None:
            host = str(ip)
        elif hostport:
            host = hostport
    if not port.isdigit() or int(port) > 65535:
        port = default_port
    ip = _parse_ip(host)
    if not host or (ip is not None and ip.is_unspecified):
        host = "::1" if ip is not None and ip.version == 6 else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}" + (f"/{path}" if path else "")


def server_url(host: str | None = None) -> ServerURL:
    """``host`` (the --host URL) when given, else ``$OLLAMA_HOST``, else http://127.0.0.1:11434.

    A ``user:password@`` or a query in it is split off the base URL (which messages and results show)
    and sent with every request: userinfo as HTTP basic auth, as Ollama's own client does with it.
    """
    split = split_server_url(host if host else os.environ.get("OLLAMA_HOST") or "", default_scheme=None,
                             what="--host" if host else "OLLAMA_HOST")
    return replace(split, base=normalize_host(split.base))


def default_base_url(host: str | None = None) -> str:
    """The base URL of ``server_url(host)``: no credentials, no query."""
    return server_url(host).base


def is_loopback_url(url: str) -> bool:
    """Whether ``url`` points at this machine."""
    import httpx

    host = httpx.URL(url).host
    if host == "localhost":
        return True
    ip = _parse_ip(host)
    return ip is not None and ip.is_loopback


def error_text(body: bytes) -> str:
    """Ollama's own message from an error body ``{"error": "..."}``, or the body's start."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:300] or "(empty body)"
    if isinstance(data, dict) and data.get("error"):
        return str(data["error"])
    return text[:300]


class OllamaClient:
    """Ollama's HTTP API: ``/api/generate`` streaming, ``/api/show``, ``/api/tags``, ``/api/ps``, ``/api/version``."""

    def __init__(
        self,
        host: str | None = None,
        *,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        read_timeout: float = PLAIN_TIMEOUT_S,
        deadlines: Deadlines | None = None,
    ) -> None:
        """``read_timeout`` bounds each JSON request as a whole; ``deadlines`` each generation."""
        import httpx

        server = server_url(host)
        self.base_url = server.base
        self.auth, self.params = server.auth, server.params  # the URL's credentials, for streams run elsewhere
        self._secrets = server.secrets()  # scrubbed from server texts: a proxy may echo its credentials
        self.connect_timeout = connect_timeout
        self.deadlines = deadlines or Deadlines()
        self.plain = self.deadlines.plain(read_timeout)
        self._http = httpx.Client(
            base_url=self.base_url,
            params=server.params,
            auth=server.auth,
            timeout=self.plain.httpx_timeout(connect_timeout),
            # A proxy from HTTP_PROXY must not capture loopback traffic (Ollama's own client skips it too).
            trust_env=not is_loopback_url(self.base_url),
        )

    def close(self) -> None:
        self._http.close()

    # --- errors ---------------------------------------------------------------------------------

    def unreachable_message(self) -> str:
        return f"Ollama is not reachable at {self.base_url} — is `ollama serve` running?"

    def _transport_error(self, exc: Exception, watch: RequestWatch | None = None) -> VeloError:
        import httpx

        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
            return BackendError(self.unreachable_message())
        passed = watch.error(exc) if watch is not None else None
        if passed is not None:
            return passed
        if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
            return BackendError(
                f"Ollama at {self.base_url} closed the connection in the middle of its answer ({exc}); "
                "the server or its model runner may have crashed: check Ollama's log"
            )
        return BackendError(f"request to Ollama at {self.base_url} failed: {type(exc).__name__}: {exc}")

    def installed_names(self) -> list[str]:
        return sorted(str(m.get("name") or m.get("model")) for m in self.tags())

    def _model_missing(self, model: str, text: str) -> UserInputError:
        message = f"model {model!r} is not installed in Ollama at {self.base_url} (Ollama says: {text})."
        try:
            installed = self.installed_names()
        except VeloError:
            installed = None
        if installed:
            close = difflib.get_close_matches(model, installed, n=1)
            if close:
                message += f" Did you mean {close[0]}?"
            message += f" Installed: {', '.join(installed)}."
        elif installed == []:
            message += " No models are installed."
        return UserInputError(f"{message} Get it with: ollama pull {shlex.quote(model)}")

    def status_error(self, status: int, body: bytes, model: str | None) -> VeloError:
        """The error of an HTTP ``status`` answer with ``body``: Ollama's own text, a missing model named."""
        text = scrub(error_text(body), self._secrets)
        if status == 404 and model and _MODEL_NOT_FOUND.search(text):
            return self._model_missing(model, text)
        return BackendError(f"Ollama at {self.base_url} answered HTTP {status}: {text}")

    # --- plain JSON endpoints -------------------------------------------------------------------

    def request_json(self, method: str, path: str, body: Any = None, *, model: str | None = None,
                     empty_ok: bool = False) -> Any:
        """One request whose answer is a JSON document (or, with ``empty_ok``, nothing: None); errors
        become BackendError/UserInputError."""
        import httpx

        try:
            response = plain_request(self._http, method, path, self.plain, server="Ollama",
                                     connect_s=self.connect_timeout, json=body)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        if response.status_code >= 400:
            raise self.status_error(response.status_code, response.content, model)
        if empty_ok and not response.content.strip():
            return None
        try:
            return response.json()
        except ValueError:
            raise BackendError(
                f"{self.base_url}{path} did not answer JSON: is this an Ollama server? "
                f"It sent: {response.text[:120]!r}"
            ) from None

    def version(self) -> str | None:
        data = self.request_json("GET", "/api/version")
        return data.get("version") if isinstance(data, dict) else None

    def tags(self) -> list[dict[str, Any]]:
        """Installed models (``/api/tags``)."""
        data = self.request_json("GET", "/api/tags")
        return list(data.get("models") or []) if isinstance(data, dict) else []

    def ps(self) -> list[dict[str, Any]]:
        """Loaded models (``/api/ps``), with ``size_vram``: how much of each is on the GPU."""
        data = self.request_json("GET", "/api/ps")
        return list(data.get("models") or []) if isinstance(data, dict) else []

    def show(self, model: str) -> dict[str, Any]:
        """``/api/show``: details, model_info (architecture fields), parameters, capabilities."""
        data = self.request_json("POST", "/api/show", {"model": model}, model=model)
        return data if isinstance(data, dict) else {}

    def create(self, body: dict[str, Any]) -> None:
        """``/api/create`` (not streamed): a model ``from`` another, with ``draft_files``, ``parameters``..."""
        self.request_json("POST", "/api/create", {**body, "stream": False}, model=body.get("from"))

    def delete(self, model: str) -> None:
        """``DELETE /api/delete``: remove an installed model (Ollama answers with an empty body)."""
        self.request_json("DELETE", "/api/delete", {"model": model}, model=model, empty_ok=True)

    # --- streaming ------------------------------------------------------------------------------

    def generate_stream(self, body: dict[str, Any]) -> Iterator[tuple[float, dict[str, Any]]]:
        """POST ``/api/generate`` (``/api/chat`` for a body of messages) with streaming; yield (arrival
        time, parsed chunk) per NDJSON line.

        The request is sent when iteration starts. A line that is not a JSON object or a connection
        cut mid-stream raise BackendError; an ``error`` object inside the stream is the reader's
        (``runner.StreamAccumulator``) to raise.
        """
        import httpx

        from velollm_ollama.runner import endpoint

        model = body.get("model")
        watch = RequestWatch(self.deadlines, server="Ollama", url=self.base_url)
        timeout = self.deadlines.httpx_timeout(self.connect_timeout)
        try:
            with watch, self._http.stream("POST", endpoint(body), json={**body, "stream": True},
                                          timeout=timeout) as response:
                watch.attach(response)
                if response.status_code >= 400:
                    raise self.status_error(response.status_code, read_bounded(response, server=watch.who).content, model)
                for line in watch.lines(response):
                    arrived = time.perf_counter()
                    if not line.strip():
                        continue
                    try:
                        chunk = json.loads(line)
                    except ValueError:
                        chunk = None
                    if not isinstance(chunk, dict):
                        raise BackendError(
                            f"Ollama at {self.base_url} sent a stream line that is not a JSON object: "
                            f"{line[:200]!r}"
                        )
                    watch.event()
                    yield arrived, chunk
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, watch) from None
