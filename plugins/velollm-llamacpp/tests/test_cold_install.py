"""The cold path of `velollm llamacpp install`, for real, on every CI run: download of the pinned sdist
from the package index, sha256 check, unpack, cmake configure, into an empty cache (no compile).

A warm machine hides a broken download (the build is cached); these tests never use the cache.
Set VELOLLM_OFFLINE=1 on a machine without access to the index to skip the ones that download.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest
from velollm_testkit.real import missing

VELOLLM = [sys.executable, "-m", "velollm_core"]
needs_index = pytest.mark.skipif(os.environ.get("VELOLLM_OFFLINE") == "1", reason="VELOLLM_OFFLINE=1")


@pytest.fixture
def build_tools() -> None:
    """cmake and git, which ./scripts/setup needs to build llama.cpp: a test needing them is skipped where
    they are absent, and fails instead under VELOLLM_REQUIRE_REAL=1."""
    for tool in ("cmake", "git"):
        if shutil.which(tool) is None:
            missing(tool, f"not on PATH (Debian: apt-get install -y {tool})")


needs_build_tools = pytest.mark.usefixtures("build_tools")


def cold_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment with an empty HOME and cache, and no sdist handed over."""
    env = {k: v for k, v in os.environ.items() if k not in ("VELOLLM_LLAMACPP_SDIST", "VELOLLM_LLAMACPP_DIR")}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env.update(HOME=str(home), VELOLLM_CACHE_DIR=str(tmp_path / "cache"), PIP_NO_CACHE_DIR="1", **extra)
    return env


def install(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*VELOLLM, "llamacpp", "install", *args], check=False, capture_output=True, text=True,
                          env=env, timeout=600)


@needs_index
@needs_build_tools
def test_cold_install_downloads_unpacks_and_configures(tmp_path):
    from velollm_llamacpp import install as inst
    from velollm_llamacpp import sdist

    proc = install(cold_env(tmp_path), "--configure-only")
    assert proc.returncode == 0, proc.stderr
    assert f"configured llama.cpp {sdist.LLAMA_CPP_COMMIT[:7]}" in proc.stderr
    root = tmp_path / "cache" / "llama.cpp" / inst.build_key(False)
    assert (root / "src" / "CMakeLists.txt").is_file()
    assert not (root / "src" / "objects").exists(), "the sdist's git objects are not part of the tree"
    cache = (root / "build" / "CMakeCache.txt").read_text()
    assert f"LLAMA_BUILD_COMMIT:UNINITIALIZED={sdist.LLAMA_CPP_COMMIT[:7]}" in cache
    source = json.loads((root / inst.SOURCE_INFO).read_text())
    assert source["llama_cpp_commit"] == sdist.LLAMA_CPP_COMMIT and source["sdist_sha256"] == sdist.SHA256
    assert not list(root.glob("tmp*")), "the downloaded archive is not left behind"


@needs_index
@needs_build_tools
def test_the_pinned_commit_is_the_one_the_sdist_vendors(tmp_path):
    """The commit we record is read from the downloaded sdist's own git tree (the vendor/llama.cpp gitlink)."""
    from velollm_llamacpp import sdist

    archive = sdist.download(tmp_path, log=lambda line: None, progress=lambda what, pct: None)
    with tarfile.open(archive) as tar:
        top = tar.getmembers()[0].name.split("/")[0]
        members = [m for m in tar.getmembers() if m.name.startswith(f"{top}/.git/")]
        tar.extractall(tmp_path / "x", members=members, filter="data")
    tree = subprocess.run(["git", "--git-dir", str(tmp_path / "x" / top / ".git"), "ls-tree", "HEAD",
                           "vendor/llama.cpp"], capture_output=True, text=True, check=True).stdout
    assert tree.split()[2] == sdist.LLAMA_CPP_COMMIT, tree


class _Index(http.server.BaseHTTPRequestHandler):
    """A package index (PEP 503 HTML) that lists our sdist but serves other bytes."""

    def do_GET(self):
        from velollm_llamacpp import sdist

        if self.path.endswith("/llama-cpp-python/"):
            body = f'<a href="../../files/{sdist.FILENAME}">{sdist.FILENAME}</a>'.encode()
            kind = "text/html"
        elif self.path.endswith(sdist.FILENAME):
            body, kind = b"not the sdist", "application/octet-stream"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_index():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://user:s3cret@127.0.0.1:{server.server_port}/simple/"
    server.shutdown()


@needs_build_tools
def test_a_file_that_is_not_the_pinned_sdist_is_refused(tmp_path, fake_index):
    proc = install(cold_env(tmp_path, PIP_INDEX_URL=fake_index, PIP_EXTRA_INDEX_URL=""))
    assert proc.returncode == 1, proc.stderr
    assert "is not the pinned llama_cpp_python-0.3.36.tar.gz" in proc.stderr and "Traceback" not in proc.stderr
    assert "s3cret" not in proc.stderr, "credentials in an index URL are never shown"


@needs_build_tools
def test_an_unreachable_index_says_what_to_do(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connection refused
        proc = install(cold_env(tmp_path, PIP_INDEX_URL=f"http://127.0.0.1:{port}/simple",
                                PIP_EXTRA_INDEX_URL=""))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    message = " ".join(proc.stderr.split())
    assert f"127.0.0.1:{port}" in message and "ConnectError" in message
    assert "retry with `velollm llamacpp install`" in message and "VELOLLM_LLAMACPP_SDIST=" in message


def test_a_missing_toolchain_is_named(tmp_path, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    env = cold_env(tmp_path, PATH=str(empty))
    proc = install(env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "cannot build llama.cpp: missing cmake" in " ".join(proc.stderr.split())


def test_a_tree_records_its_commit_only_when_it_says_where_it_came_from(tmp_path):
    """An unpacked tree (VELOLLM_LLAMACPP_SDIST=DIR) is anything, unless it carries the record of its sdist."""
    from velollm_llamacpp import install as inst
    from velollm_llamacpp import sdist

    plain = tmp_path / "plain"
    plain.mkdir()
    assert inst._source_record(plain)["llama_cpp_commit"] is None
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / inst.SOURCE_INFO).write_text(json.dumps({"llama_cpp_commit": sdist.LLAMA_CPP_COMMIT}))
    assert inst._source_record(cut) == {"llama_cpp_commit": sdist.LLAMA_CPP_COMMIT, "source": str(cut)}
