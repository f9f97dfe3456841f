"""Download the pinned ``llama-cpp-python`` sdist from the package index, without pip.

``pip download`` cannot fetch an sdist without preparing its metadata, which runs the sdist's build
backend (scikit-build-core) in the current environment: on a fresh machine it is not there. We only
want the file, so we ask the index ourselves (PEP 691 JSON, PEP 503 HTML as a fallback), honouring
pip's index settings, and check the file against the sha256 pinned here.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

from velollm_core.api import VeloError, redact_url

PROJECT = "llama-cpp-python"
VERSION = "0.3.36"
FILENAME = f"llama_cpp_python-{VERSION}.tar.gz"
SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
# The llama.cpp commit this sdist vendors: the gitlink of vendor/llama.cpp in the sdist's own .git
# (tests/test_cold_install.py reads it from the downloaded file and compares).
LLAMA_CPP_COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"
DEFAULT_INDEX = "https://pypi.org/simple/"
SIZE_HINT_MB = 77

_PIP_INDEX = re.compile(r"^[\w:.-]*\.(index-url|extra-index-url)='(.*)'$")


def retry_hint() -> str:
    return (
        "retry with `velollm llamacpp install`; on a machine without access to the index, fetch "
        f"{FILENAME} elsewhere (`pip download --no-deps --no-binary :all: --no-build-isolation "
        f"{PROJECT}=={VERSION}` or from https://pypi.org/project/{PROJECT}/{VERSION}/#files) and set "
        f"VELOLLM_LLAMACPP_SDIST=/path/to/{FILENAME}"
    )


def index_urls() -> list[str]:
    """The indexes pip would ask, primary first: $PIP_INDEX_URL / pip config, then the extra ones."""
    primary: list[str] = []
    extra: list[str] = []
    try:
        listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                                timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        listed = ""
    for line in listed.splitlines():
        match = _PIP_INDEX.match(line.strip())
        if match:
            (primary if match.group(1) == "index-url" else extra).extend(match.group(2).split())
    if os.environ.get("PIP_INDEX_URL"):
        primary = [os.environ["PIP_INDEX_URL"]]
    extra += os.environ.get("PIP_EXTRA_INDEX_URL", "").split()
    urls: list[str] = []
    for url in (primary[:1] or [DEFAULT_INDEX]) + extra:
        url = url.rstrip("/") + "/"
        if url not in urls:
            urls.append(url)
    return urls


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.links.append(href)


def _read(url: str, accept: str) -> tuple[str, str]:
    """(content type, text) of an index page; file:// indexes are read from disk."""
    if url.startswith("file://"):
        path = Path(unquote(urlsplit(url).path))
        if path.is_dir():
            path = path / "index.html"
        return "text/html", path.read_text(encoding="utf-8", errors="replace")
    import httpx

    response = httpx.get(url, headers={"Accept": accept}, timeout=60.0, follow_redirects=True)
    response.raise_for_status()
    return response.headers.get("content-type", ""), response.text


def find_file_url(index: str) -> str | None:
    """The URL of our sdist on one index, or None when the index does not list it."""
    import json

    page = urljoin(index, f"{PROJECT}/")
    kind, text = _read(page, "application/vnd.pypi.simple.v1+json, text/html;q=0.1")
    if "json" in kind:
        for entry in json.loads(text).get("files", []):
            if entry.get("filename") == FILENAME:
                return urljoin(page, entry["url"])
        return None
    parser = _Links()
    parser.feed(text)
    for href in parser.links:
        if unquote(urlsplit(href).path).rsplit("/", 1)[-1] == FILENAME:
            return urljoin(page, href)
    return None


def _copy_to(url: str, dest: Path, progress: Callable[[str, int], None]) -> None:
    if url.startswith("file://"):
        shutil.copyfile(unquote(urlsplit(url).path), dest)
        return
    import httpx

    with httpx.stream("GET", url, timeout=httpx.Timeout(60.0), follow_redirects=True) as response:
        response.raise_for_status()
        total = int(response.headers.get("content-length") or 0) or SIZE_HINT_MB * 1_000_000
        done = 0
        with dest.open("wb") as out:
            for chunk in response.iter_bytes(1 << 20):
                out.write(chunk)
                done += len(chunk)
                progress("download", min(99, done * 100 // total))
    progress("download", 100)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: Path, origin: str) -> None:
    actual = sha256_of(path)
    if actual != SHA256:
        raise VeloError(
            f"{path} (from {origin}) is not the pinned {FILENAME}: sha256 {actual[:16]}..., expected "
            f"{SHA256[:16]}...; delete it and {retry_hint()}"
        )


def download(workdir: Path, *, log: Callable[[str], None], progress: Callable[[str, int], None]) -> Path:
    """Download the pinned sdist into ``workdir`` and return its path."""
    import httpx

    failures: list[str] = []
    for index in index_urls():
        shown = redact_url(index)
        try:
            url = find_file_url(index)
            if url is None:
                failures.append(f"{shown} does not list {FILENAME}")
                continue
            log(f"downloading {FILENAME} (about {SIZE_HINT_MB} MB) from {redact_url(url)}")
            dest = workdir / FILENAME
            _copy_to(url, dest, progress)
        except httpx.HTTPStatusError as exc:
            failures.append(f"{shown}: HTTP {exc.response.status_code} for {redact_url(str(exc.request.url))}")
            continue
        except (httpx.HTTPError, OSError, ValueError) as exc:
            failures.append(f"{shown}: {type(exc).__name__}: {exc}")
            continue
        check_sha256(dest, origin=redact_url(url))
        return dest
    raise VeloError(f"could not download the {PROJECT} {VERSION} sdist ({'; '.join(failures)}); {retry_hint()}")
