"""Server URLs from the user (``--host``, ``OLLAMA_HOST``, package indexes): split, joined, redacted.

A URL may carry secrets in two places: its userinfo (``user:password@``) and its query
(``?api_key=...``). Requests need them; messages, logs and result files must never show them. Every
URL that is recorded goes through ``redact_url``; a ``--host`` is split once, by ``split_server_url``,
into a base that is safe to show and the secrets that only the HTTP client sees.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

from velollm_core.contract.errors import UserInputError

REDACTED = "***"


def _parts(url: str):
    """``urlsplit`` that also reads a URL without a scheme (``host:8000``, ``user:pw@host``).

    Without ``//`` urlsplit takes ``host`` for a scheme and ``8000`` for a path: such a URL is read
    as a network location instead.
    """
    parts = urlsplit(url)
    if parts.netloc:
        return parts, True
    return urlsplit("//" + url), False


def _unsplit(parts, had_scheme: bool) -> str:
    text = urlunsplit(parts)
    return text if had_scheme else text.removeprefix("//")


def _shown(raw: str) -> str:
    """``raw`` for a message when it may not parse: anything before its last ``@`` (the userinfo)
    after the scheme becomes ``***``, and the query goes."""
    scheme, sep, rest = raw.partition("://")
    if not sep:
        scheme, rest = "", raw
    rest = rest.split("?", 1)[0]
    if "@" in rest:
        rest = f"{REDACTED}@{rest.rpartition('@')[2]}"
    return f"{scheme}{sep}{rest}"


def check_server_url(raw: str, *, what: str = "--host") -> str:
    """``raw`` as given when it is a usable server URL; else one UserInputError saying why.

    Usable: it parses (an IPv6 address is bracketed whole), it names a host, its port (if any) is a TCP
    port, and it holds no whitespace or control characters. The scheme is left to the backend (a
    server URL without one is ``http``). The message never shows the URL's userinfo or query.
    """
    shown = _shown(raw.strip())
    if not raw.strip() or any(char.isspace() or not char.isprintable() for char in raw.strip()):
        raise UserInputError(f"{what} {shown!r} is not a URL: it is empty or holds spaces or control characters")
    try:
        # With "://" the host is what follows it ("http://" names none); without, the whole text is
        # the network location, as _parts reads it.
        parts = urlsplit(raw.strip()) if "://" in raw else urlsplit("//" + raw.strip())
        port = parts.port
    except ValueError as exc:
        raise UserInputError(f"{what} {shown!r} is not a URL: {exc}") from None
    if not parts.hostname:
        raise UserInputError(f"{what} {shown!r} names no host (expected e.g. http://127.0.0.1:8000)")
    if port == 0:
        raise UserInputError(f"{what} {shown!r}: port 0 is no server's port (1-65535)")
    return raw


def redact_url(url: str) -> str:
    """``url`` fit for messages and files: userinfo becomes ``***@``, each query value ``***``.

    A URL without either comes back unchanged, character for character; one that does not parse
    comes back with everything that could be userinfo or query cut out.
    """
    try:
        parts, had_scheme = _parts(url.strip())
    except ValueError:
        return _shown(url.strip())
    _userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at and not parts.query:
        return url
    netloc = f"{REDACTED}@{hostport}" if at else hostport
    query = "&".join(f"{quote(key, safe='')}={REDACTED}" for key, _ in parse_qsl(parts.query, keep_blank_values=True))
    return _unsplit(parts._replace(netloc=netloc, query=query), had_scheme)


def join_url(base: str, *segments: str) -> str:
    """``base`` with path segments appended: ``('http://h:1/api/', 'v1')`` -> ``http://h:1/api/v1``.

    A query or fragment of ``base`` is kept at the end, where it belongs (never ``?k=v/v1``).
    """
    parts, had_scheme = _parts(base)
    path = "/".join([parts.path.rstrip("/"), *(segment.strip("/") for segment in segments)])
    return _unsplit(parts._replace(path=path), had_scheme)


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` (a server's error message, say) with each of ``secrets`` replaced by ``***``."""
    # Longest first: a short password may occur inside the base64 header value that holds it.
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


@dataclass(frozen=True)
class ServerURL:
    """A ``--host`` URL split into what a request needs.

    ``base`` has no userinfo and no query, so it is safe in messages and result files; ``params`` (the
    query) and ``auth`` (the userinfo, as HTTP basic auth credentials) go to the HTTP client only.
    """

    base: str
    params: tuple[tuple[str, str], ...] = ()
    auth: tuple[str, str] | None = None

    def secrets(self) -> list[str]:
        """Every secret this URL carries, for scrubbing server texts that might echo one: the query's
        values, the password, and the basic-auth header value (base64 hides nothing)."""
        found = [value for _, value in self.params if value]
        if self.auth:
            user, password = self.auth
            found += [password, base64.b64encode(f"{user}:{password}".encode()).decode()]
        return [secret for secret in found if secret]


def split_server_url(raw: str, default_scheme: str | None = "http", *, what: str = "--host") -> ServerURL:
    """``raw`` split into base, query parameters and userinfo credentials.

    The base keeps the rest of ``raw`` as it was (scheme, host, port, path less a trailing ``/``);
    ``default_scheme`` is prefixed where ``raw`` has none (None leaves it out, for callers that
    apply their own rules, such as Ollama's ``OLLAMA_HOST`` reading). A control character (an
    escape sequence, a right-to-left override) is a UserInputError naming ``what`` gave the URL: it
    would reach every message that shows the URL.
    """
    if any(not char.isprintable() for char in raw.strip()):
        raise UserInputError(f"{what} {_shown(raw.strip())!r} is not a URL: it holds control characters")
    parts, had_scheme = _parts(raw.strip())
    userinfo, at, hostport = parts.netloc.rpartition("@")
    auth = None
    if at:
        user, _, password = userinfo.partition(":")
        auth = (unquote(user), unquote(password))
    params = tuple(parse_qsl(parts.query, keep_blank_values=True))
    clean = parts._replace(netloc=hostport, path=parts.path.rstrip("/"), query="", fragment="")
    if not had_scheme and default_scheme:
        clean, had_scheme = clean._replace(scheme=default_scheme), True
    return ServerURL(base=_unsplit(clean, had_scheme), params=params, auth=auth)
