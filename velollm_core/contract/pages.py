"""A web page where an LLM API should answer: named for what it is.

A wrong ``--host`` port, a captive portal or a proxy's login page answers ``200 OK`` with HTML. Read
as a stream it looks like one that ended before its first event, read as JSON like a broken server;
both send the user looking in the wrong place. Every client (the backends' httpx requests through
``RequestWatch``, the load generator's own stream client) asks ``html_answer`` once the headers are
in, and says what came back instead.
"""

from __future__ import annotations

import html
import re

from velollm_core.contract.errors import BackendError

# Enough of a page to hold its <title>; the rest is never read.
HEAD_BYTES = 64 << 10
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title", re.IGNORECASE | re.DOTALL)
_TITLE_CHARS = 80


def is_html(content_type: str | None) -> bool:
    """Whether a Content-Type names an HTML (or XHTML) page."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media in ("text/html", "application/xhtml+xml")


def page_title(head: bytes) -> str | None:
    """The ``<title>`` of a page's first bytes, unescaped and shortened; None where it has none."""
    match = _TITLE.search(head[:HEAD_BYTES])
    if not match:
        return None
    title = " ".join(html.unescape(match.group(1).decode("utf-8", errors="replace")).split())
    return (title[:_TITLE_CHARS] + "...") if len(title) > _TITLE_CHARS else title or None


def html_answer(server: str, content_type: str | None, head: bytes = b"") -> BackendError | None:
    """The error for ``server``'s successful answer when it is an HTML page (None when it is not).

    ``head``: the answer's first bytes, for the page's title."""
    if not is_html(content_type):
        return None
    title = page_title(head)
    named = f"an HTML page titled {title!r}" if title else "an HTML page"
    return BackendError(f"{server} answered with {named} ({content_type}), not an LLM API: is the URL the "
                        "server's API, with no login page or proxy in between?")
