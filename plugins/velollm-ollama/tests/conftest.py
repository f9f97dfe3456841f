"""Fixtures: a loopback server speaking Ollama's wire format, a fake model store, hardware reports."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from velollm_core.contract.schemas import CpuInfo, GpuInfo, HardwareReport, MemoryInfo, OsInfo

GIB = 1024**3
MIB = 1024**2

TINY_INFO = {
    "general.architecture": "llama",
    "general.parameter_count": 1235814432,
    "llama.block_count": 16,
    "llama.context_length": 131072,
    "llama.embedding_length": 2048,
    "llama.attention.head_count": 32,
    "llama.attention.head_count_kv": 8,
    "llama.vocab_size": 128256,
    "tokenizer.ggml.tokens": [],
}
TINY_DETAILS = {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                "parameter_size": "1.2B", "quantization_level": "Q8_0"}
TOKENS = ["The", " sky", " is", " blue", " because", " of", " Rayleigh", " scattering", ".", " Short",
          " wavelengths", " scatter", " more", "."]
# A Llama 3 chat template's text around the prompt: Ollama >= 0.30.1 counts the header's tokens,
# cached from the previous request, in prompt_eval_count.
HEADER = ("<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
          "Today Date: 02 Dec 2026\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n")
FOOTER = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
_PIECE = re.compile(r"<\|[a-z_]+\|>| ?[A-Za-z]+| ?\d|\s|[^\sA-Za-z\d]")
BOS = 1
CURRENT_VERSION = "0.33.0-rc2"  # prompt counts with cached tokens (>= 0.30.1), drafts (>= 0.30.0)
OLD_VERSION = "0.24.0"  # the last release before llama-server: counts evaluated tokens only


class FakeOllama:
    """Behaviour per model name; every request body is recorded.

    ``version`` picks the wire behaviour: CURRENT_VERSION (default) counts a cached prompt prefix in
    prompt_eval_count as Ollama >= 0.30.1 does; OLD_VERSION counts evaluated tokens only.
    """

    HEADER = HEADER
    FOOTER = FOOTER
    OLD_VERSION = OLD_VERSION
    CURRENT_VERSION = CURRENT_VERSION

    def tokenize(self, text: str) -> list[int]:
        return tokenize(self, text)

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.token_delay = 0.01
        self.first_token_delay = 0.05
        self.load_duration_ns = 1_234_567_890
        self.version = CURRENT_VERSION
        self.prompt_token_ns = 2_000_000  # server time per evaluated prompt token
        self.slots: list[list[int]] = [[]]  # what each llama-server slot holds (one slot: parallel 1)
        self.vocabulary: dict[str, int] = {}
        self.lock = threading.Lock()
        # Models with a draft (name -> draft digest), made by /api/create; decode runs this much faster.
        self.drafts: dict[str, str] = {}
        self.parameters: dict[str, dict[str, Any]] = {}
        self.draft_speedup = 1.6
        self.speed = {"tiny-draft": 4.0}  # decode speed against the target's, by model name
        # None: drafting speeds decode by draft_speedup at any draft length; a rate: by what llama-server's
        # step gives at draft_num_predict N (drafted_speedup), so the best N exists and can be searched.
        self.acceptance: float | None = None
        self.head_cost = 0.0  # an MTP head's time per drafted token, against a target token
        self.created: list[str] = []
        self.deleted: list[str] = []
        self.installed = {"tiny:latest": 1_321_098_329, "llama3.2:1b": 1_321_098_329}
        self.loaded: list[dict[str, Any]] = [{
            "name": "tiny:latest", "model": "tiny:latest", "size": 1_900_000_000,
            "digest": "a" * 64, "details": TINY_DETAILS,
            "expires_at": "2025-06-04T14:38:31.83753-07:00", "size_vram": 1_900_000_000,
            "context_length": 4096,
        }]
        self.url = ""


def drafted_speedup(fake: FakeOllama, draft_num_predict: int, with_draft: bool) -> float:
    """Decode speedup of a drafting model: ``draft_speedup``; with ``acceptance`` a, llama-server's step
    of N drafted tokens: (1 - a^(N+1)) / (1 - a) tokens a step, for one target step plus the drafter's
    N decodes and its pass over the verified batch (at 1/speed of the draft model, or the head's cost)."""
    if fake.acceptance is None:
        return fake.draft_speedup
    a, n = fake.acceptance, draft_num_predict
    cost = 1 / fake.speed["tiny-draft"] if with_draft else fake.head_cost
    return (1 - a ** (n + 1)) / (1 - a) / (1 + cost * (n + 1))


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split("-")[0].split("."))


def counts_cached(version: str) -> bool:
    """Whether a server of ``version`` counts cached prompt tokens (Ollama >= 0.30.1)."""
    return version_tuple(version) >= (0, 30, 1)


def tokenize(fake: FakeOllama, text: str) -> list[int]:
    """Token ids of ``text``: one per word, digit, space or sign, after a BOS (stable per fake)."""
    with fake.lock:
        return [BOS, *(fake.vocabulary.setdefault(piece, len(fake.vocabulary) + 2) for piece in _PIECE.findall(text))]


def evaluate_prompt(fake: FakeOllama, tokens: list[int]) -> tuple[int, int]:
    """(cache_n, prompt_n) as llama-server counts them: the slot sharing the longest prefix is reused,
    and at least the last token is evaluated again."""
    with fake.lock:
        def shared(slot: list[int]) -> int:
            n = 0
            for a, b in zip(slot, tokens):
                if a != b:
                    break
                n += 1
            return n

        index = max(range(len(fake.slots)), key=lambda i: shared(fake.slots[i]))
        cache_n = min(shared(fake.slots[index]), len(tokens) - 1)
        fake.slots[index] = list(tokens)
        return cache_n, len(tokens) - cache_n


def _iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat()


def _make_handler(fake: FakeOllama):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # keep pytest output clean
            pass

        def _json(self, status: int, data: Any) -> None:
            body = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            data = json.loads(self.rfile.read(length) or b"{}")
            fake.requests.append({"path": self.path, **data})
            return data

        def _chunk(self, line: str | bytes) -> None:
            data = line if isinstance(line, bytes) else (line + "\n").encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _end(self) -> None:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

        def _drop(self) -> None:
            # The runner crashed: the connection closes without the chunked body's terminator.
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

        def do_GET(self) -> None:
            if self.path == "/api/version":
                self._json(200, {"version": fake.version})
            elif self.path == "/api/tags":
                self._json(200, {"models": [
                    {"name": n, "model": n, "modified_at": _iso(), "size": s, "digest": "b" * 64,
                     "details": TINY_DETAILS} for n, s in fake.installed.items()]})
            elif self.path == "/api/ps":
                self._json(200, {"models": fake.loaded})
            else:
                self.send_response(404)
                self.send_header("Content-Length", "18")
                self.end_headers()
                self.wfile.write(b"404 page not found")

        def do_POST(self) -> None:
            body = self._body()
            model = str(body.get("model") or "")
            if self.path == "/api/show":
                if model in fake.installed or f"{model}:latest" in fake.installed:
                    info = dict(TINY_INFO)
                    if model.split(":")[0] == "mtp":
                        info["llama.nextn_predict_layers"] = 1  # an embedded multi-token-prediction head
                    draft = fake.drafts.get(model) or fake.drafts.get(f"{model}:latest")
                    modelfile = f"FROM {model}\n" + (f"DRAFT /blobs/{draft.replace(':', '-')}\n" if draft else "")
                    self._json(200, {"details": TINY_DETAILS, "model_info": info, "modelfile": modelfile,
                                     "capabilities": ["completion"], "parameters": "", "template": ""})
                else:
                    self._json(404, {"error": f"model '{model}' not found"})
                return
            if self.path == "/api/create":
                self._create(model, body)
                return
            if self.path != "/api/generate":
                self._json(404, {"error": "404 page not found"})
                return
            try:
                self._generate(model, body)
            except (BrokenPipeError, ConnectionResetError):  # the client went away (a cancelled stream)
                self.close_connection = True

        def do_DELETE(self) -> None:
            body = self._body()
            model = str(body.get("model") or "")
            if self.path != "/api/delete":
                self._json(404, {"error": "404 page not found"})
            elif fake.installed.pop(model, None) is None:
                self._json(404, {"error": f"model '{model}' not found"})
            else:
                fake.drafts.pop(model, None)
                fake.deleted.append(model)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        def _create(self, model: str, body: dict[str, Any]) -> None:
            base = str(body.get("from") or "")
            base_key = base if base in fake.installed else f"{base}:latest"
            if base_key not in fake.installed:
                self._json(404, {"error": f"model '{base}' not found"})
                return
            name = model if ":" in model else f"{model}:latest"
            fake.installed[name] = fake.installed[base_key]
            drafts = body.get("draft_files") or {}
            if drafts and version_tuple(fake.version) >= (0, 30, 0):  # older servers ignore draft_files
                fake.drafts[name] = next(iter(drafts.values()))
            fake.parameters[name] = dict(body.get("parameters") or {})
            fake.created.append(name)
            self._json(200, {"status": "success"})

        def _generate(self, model: str, body: dict[str, Any]) -> None:
            name = model.split(":")[0]
            if name == "boom":
                self._json(500, {"error": "llama runner process has terminated: exit status 2"})
                return
            if name == "bad-request":
                self._json(400, {"error": "option \"num_ctx\" must be of type integer"})
                return
            full = model if ":" in model else f"{model}:latest"
            if name not in ("tiny", "llama3.2", "cached", "slow-first", "drop", "garbage", "midstream-error",
                            "no-done", "thinker", "one-token", "mtp", "tiny-draft") and full not in fake.drafts:
                self._json(404, {"error": f"model '{model}' not found"})
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            limit = int((body.get("options") or {}).get("num_predict") or 8)
            first_delay = 0.3 if name == "slow-first" else fake.first_token_delay
            tokens = TOKENS[:1] if name == "one-token" else TOKENS[: min(limit, len(TOKENS))]
            thinking = ["Let", " me", " think"] if name == "thinker" else []
            raw = bool(body.get("raw"))
            prompt = str(body.get("prompt") or "")
            prompt_ids = tokenize(fake, prompt if raw else HEADER + prompt + FOOTER)
            cache_n, prompt_n = evaluate_prompt(fake, prompt_ids)
            options = {**fake.parameters.get(full, {}), **(body.get("options") or {})}
            # draft_num_predict: 4 by default with a draft layer; an MTP head drafts only when it is set.
            drafted = int(options.get("draft_num_predict", 4 if full in fake.drafts else 0))
            speedup = drafted_speedup(fake, drafted, full in fake.drafts) if drafted > 0 else 1.0
            token_delay = fake.token_delay / speedup / fake.speed.get(name, 1.0)
            time.sleep(first_delay)
            eval_ns = 0
            for i, token in enumerate([*thinking, *tokens]):
                if i:
                    time.sleep(token_delay)
                    eval_ns += int(token_delay * 1e9)
                field = "thinking" if i < len(thinking) else "response"
                chunk = {"model": model, "created_at": _iso(), "response": "", "done": False}
                chunk[field] = token
                self._chunk(json.dumps(chunk))
                if name == "drop" and i == 2:
                    self._drop()
                    return
                if name == "garbage" and i == 1:
                    self._chunk("this is not json")
                    self._end()
                    return
                if name == "midstream-error" and i == 1:
                    self._chunk(json.dumps({"error": "an error was encountered while running the model"}))
                    self._end()
                    return
            if name == "no-done":
                self._end()
                return
            final: dict[str, Any] = {
                "model": model, "created_at": _iso(), "response": "", "done": True,
                "done_reason": "length" if len(tokens) >= limit else "stop",
                "total_duration": int((first_delay + eval_ns / 1e9) * 1e9) + fake.load_duration_ns,
                "load_duration": fake.load_duration_ns,
                # llama-server's cache_n + prompt_n from 0.30.1; the evaluated tokens alone before.
                "prompt_eval_count": cache_n + prompt_n if counts_cached(fake.version) else prompt_n,
                "prompt_eval_duration": prompt_n * fake.prompt_token_ns,
                "eval_count": len(thinking) + len(tokens),
                "eval_duration": eval_ns,
            }
            if not raw:  # the templated prompt's tokens, then the answer's (Ollama omits it for raw)
                final["context"] = prompt_ids + tokenize(fake, "".join(tokens))[1:]
            if name == "cached":
                # Zero values are omitted by Ollama: a fully cached prompt has no prompt_eval_* fields.
                del final["prompt_eval_count"], final["prompt_eval_duration"], final["load_duration"]
            if name == "one-token":
                del final["eval_duration"]
            self._chunk(json.dumps(final))
            self._end()

    return Handler


@pytest.fixture
def fake_ollama():
    """A FakeOllama answering on a real loopback socket; ``.url`` is its base URL."""
    fake = FakeOllama()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(fake))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture
def dead_url() -> str:
    """A loopback URL where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- model store ------------------------------------------------------------------------------------


def write_gguf(path: Path, arch: str = "llama", *, layers: int = 4, heads: int = 8, kv_heads: int = 2,
               embedding: int = 256, context: int = 8192, pooling: bool = False, nextn_layers: int = 0,
               vocab: int = 1000) -> Path:
    """A small real GGUF file with the metadata sizing reads."""
    import gguf
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(layers)
    writer.add_context_length(context)
    writer.add_embedding_length(embedding)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_vocab_size(vocab)
    if nextn_layers:  # an embedded multi-token-prediction head
        writer.add_uint32(f"{arch}.nextn_predict_layers", nextn_layers)
    if pooling:
        writer.add_pooling_type(gguf.PoolingType.MEAN)
    writer.add_tensor("token_embd.weight", np.zeros((16, 16), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


class FakeStore:
    """Builds ``<root>/manifests/...`` and ``<root>/blobs/sha256-...`` the way Ollama lays them out."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def blob(self, data: bytes) -> tuple[str, int]:
        digest = hashlib.sha256(data).hexdigest()
        path = self.root / "blobs" / f"sha256-{digest}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return f"sha256:{digest}", len(data)

    def add(self, host: str, namespace: str, model: str, tag: str, gguf_bytes: bytes | None,
            projector: bytes | None = None, skip_blob: bool = False, draft: bytes | None = None) -> Path:
        layers = []
        if gguf_bytes is not None:
            digest, size = self.blob(gguf_bytes)
            if skip_blob:
                (self.root / "blobs" / digest.replace(":", "-")).unlink()
            layers.append({"mediaType": "application/vnd.ollama.image.model", "digest": digest, "size": size})
        if projector is not None:
            digest, size = self.blob(projector)
            layers.append({"mediaType": "application/vnd.ollama.image.projector", "digest": digest,
                           "size": size})
        if draft is not None:  # a Modelfile's DRAFT (Ollama >= 0.30.0)
            digest, size = self.blob(draft)
            layers.append({"mediaType": "application/vnd.ollama.image.draft", "digest": digest, "size": size})
        for media, text in (("template", "{{ .Prompt }}"), ("license", "MIT"), ("params", '{"stop":["<|eot|>"]}')):
            digest, size = self.blob(text.encode())
            layers.append({"mediaType": f"application/vnd.ollama.image.{media}", "digest": digest, "size": size})
        config_digest, config_size = self.blob(json.dumps({"model_format": "gguf"}).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "digest": config_digest, "size": config_size},
            "layers": layers,
        }
        path = self.root / "manifests" / host / namespace / model / tag
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(manifest))
        return path


@pytest.fixture
def fake_store(tmp_path) -> FakeStore:
    return FakeStore(tmp_path / "ollama-models")


@pytest.fixture
def gguf_file(tmp_path):
    """Factory: a small real GGUF file; keyword arguments as ``write_gguf``."""
    counter = iter(range(1000))

    def make(**kwargs) -> Path:
        return write_gguf(tmp_path / f"model-{next(counter)}.gguf", **kwargs)

    return make


@pytest.fixture
def isolated_ollama(tmp_path, monkeypatch):
    """No real Ollama state leaks in: empty HOME, no OLLAMA_* variables, an empty systemd directory."""
    for key in list(os.environ):
        if key.startswith("OLLAMA_"):
            monkeypatch.delenv(key)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    systemd_dir = tmp_path / "systemd"
    systemd_dir.mkdir()
    monkeypatch.setenv("VELOLLM_SYSTEMD_DIR", str(systemd_dir))
    monkeypatch.setenv("VELOLLM_CACHE_DIR", str(tmp_path / "cache"))
    from velollm_ollama import store

    monkeypatch.setattr(store, "SERVICE_MODELS_DIR", tmp_path / "service-models")
    return home


# --- hardware -----------------------------------------------------------------------------------------


def nvidia(name: str = "NVIDIA GeForce RTX 4090", total_gib: float = 24, free_gib: float | None = None,
           cc: str = "8.9", bus: str = "0000:01:00.0") -> GpuInfo:
    total = int(total_gib * GIB)
    return GpuInfo(vendor="nvidia", name=name, memory_total_bytes=total,
                   memory_free_bytes=int((free_gib if free_gib is not None else total_gib - 0.3) * GIB),
                   pci_bus_id=bus, compute_capability=cc, source="nvml")


def apple(name: str = "Apple M2 Pro", usable_gib: float | None = 21.3) -> GpuInfo:
    return GpuInfo(vendor="apple", name=name, unified_memory=True, source="system_profiler",
                   memory_total_bytes=int(usable_gib * GIB) if usable_gib else None)


def hardware(gpus: list[GpuInfo] | None = None, ram_gib: float = 64, available_gib: float | None = None,
             system: str = "Linux") -> HardwareReport:
    return HardwareReport(
        os=OsInfo(system=system, release="6.8", machine="x86_64"),
        cpu=CpuInfo(model="Test CPU", physical_cores=8, logical_cores=16),
        memory=MemoryInfo(total_bytes=int(ram_gib * GIB),
                          available_bytes=int((available_gib if available_gib is not None else ram_gib * 0.8) * GIB),
                          used_bytes=int(ram_gib * 0.2 * GIB)),
        gpus=gpus or [],
    )


@pytest.fixture
def hw():
    """Builders: ``hw.nvidia(...)``, ``hw.apple(...)``, ``hw.report(...)``."""

    class Builders:
        pass

    builders = Builders()
    builders.nvidia = nvidia
    builders.apple = apple
    builders.report = hardware
    return builders


@pytest.fixture
def velollm(capsys):
    """Run ``velollm ARGS`` in-process; return (exit code, stdout, stderr)."""
    from velollm_core import cli

    def run(*args: str) -> tuple[int, str, str]:
        code = 0
        try:
            cli.main(list(args))
        except SystemExit as exc:
            code = exc.code or 0
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def drafts(fake_ollama, fake_store, gguf_file, isolated_ollama, monkeypatch):
    """tiny (8 layers), tiny-draft (2 layers) and mtp (a head) in the store and on the loopback server."""
    monkeypatch.setenv("OLLAMA_HOST", fake_ollama.url)
    monkeypatch.setenv("OLLAMA_MODELS", str(fake_store.root))
    # The target's file is the larger one (bytes after its tensors stand for more weights).
    fake_store.add("registry.ollama.ai", "library", "tiny", "latest", gguf_file(layers=8).read_bytes() + bytes(8192))
    fake_store.add("registry.ollama.ai", "library", "tiny-draft", "latest", gguf_file(layers=2).read_bytes())
    fake_store.add("registry.ollama.ai", "library", "mtp", "latest", gguf_file(nextn_layers=1).read_bytes())
    fake_ollama.installed["tiny-draft:latest"] = 300_000_000
    fake_ollama.installed["mtp:latest"] = 1_321_098_329
    fake_ollama.token_delay = 0.004
    fake_ollama.first_token_delay = 0.005
    return fake_ollama
