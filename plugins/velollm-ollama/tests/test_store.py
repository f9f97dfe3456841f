"""The model store on a fake ~/.ollama/models tree laid out like the real one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from velollm_ollama import plugin
from velollm_ollama.store import ModelName, ModelStore, blob_path, default_models_dirs

from velollm_core.contract.errors import UserInputError


@pytest.mark.parametrize(
    "text, parts, short",
    [
        ("llama3.2", ("registry.ollama.ai", "library", "llama3.2", "latest"), "llama3.2:latest"),
        ("llama3.2:1b", ("registry.ollama.ai", "library", "llama3.2", "1b"), "llama3.2:1b"),
        ("library/llama3.2:3b", ("registry.ollama.ai", "library", "llama3.2", "3b"), "llama3.2:3b"),
        ("jmorgan/tiny:q4", ("registry.ollama.ai", "jmorgan", "tiny", "q4"), "jmorgan/tiny:q4"),
        ("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
         ("hf.co", "bartowski", "Llama-3.2-1B-Instruct-GGUF", "Q4_K_M"),
         "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M"),
        ("localhost:5000/team/m", ("localhost:5000", "team", "m", "latest"), "localhost:5000/team/m:latest"),
        ("https://registry.ollama.ai/library/qwen3:8b", ("registry.ollama.ai", "library", "qwen3", "8b"),
         "qwen3:8b"),
    ],
)
def test_parse_names(text, parts, short):
    name = ModelName.parse(text)
    assert name.parts == parts
    assert name.short() == short


@pytest.mark.parametrize("text", ["", "../etc/passwd", "a/b/c/d", "model:../x", "-x", "a/../b", "m:"])
def test_invalid_names_never_become_paths(text):
    with pytest.raises(UserInputError):
        ModelName.parse(text)


def test_blob_path_accepts_only_sha256(tmp_path):
    digest = "sha256:" + "ab" * 32
    assert blob_path(tmp_path, digest) == tmp_path / "blobs" / ("sha256-" + "ab" * 32)
    assert blob_path(tmp_path, "sha256:../../x") is None
    assert blob_path(tmp_path, "md5:abc") is None


def test_default_dirs(tmp_path):
    dirs = default_models_dirs(environ={}, home=tmp_path)
    assert dirs == [tmp_path / ".ollama" / "models", Path("/usr/share/ollama/.ollama/models")]
    dirs = default_models_dirs(environ={"OLLAMA_MODELS": ' "/data/models" '}, home=tmp_path,
                               service_models_dir="/srv/ollama")
    assert dirs[:2] == [Path("/data/models"), Path("/srv/ollama")]


def test_resolve_and_list(fake_store, gguf_file):
    gguf = gguf_file().read_bytes()
    fake_store.add("registry.ollama.ai", "library", "llama3.2", "1b", gguf)
    fake_store.add("registry.ollama.ai", "library", "llava", "7b", gguf + b"x", projector=b"clip-weights")
    fake_store.add("hf.co", "bartowski", "Tiny-GGUF", "Q4_K_M", gguf + b"y")
    fake_store.add("registry.ollama.ai", "library", "cloudy", "latest", None)
    fake_store.add("registry.ollama.ai", "library", "partial", "latest", gguf + b"z", skip_blob=True)
    store = ModelStore([fake_store.root])

    found = store.find("llama3.2:1b")
    assert found.gguf_path.read_bytes() == gguf
    assert found.gguf_path.name.startswith("sha256-")
    assert found.model_bytes == len(gguf)
    assert found.size_bytes > len(gguf)  # template, license, params and config count too, as in `ollama list`
    assert store.find("library/llama3.2:1b").gguf_path == found.gguf_path
    assert store.find("LLAMA3.2:1B").gguf_path == found.gguf_path  # Ollama names are case-insensitive
    assert store.find("llama3.2") is None  # no :latest tag installed
    assert len(store.find("llava:7b").projector_paths) == 1
    assert store.find("hf.co/bartowski/Tiny-GGUF:Q4_K_M").gguf_path is not None
    assert store.find("cloudy").gguf_path is None
    partial = store.find("partial")
    assert partial.gguf_path is None and partial.missing_blobs

    names = [m.name for m in store.list()]
    assert names == ["cloudy:latest", "hf.co/bartowski/Tiny-GGUF:Q4_K_M", "llama3.2:1b", "llava:7b",
                     "partial:latest"]


def test_broken_manifest_is_skipped_with_a_warning(fake_store, gguf_file):
    fake_store.add("registry.ollama.ai", "library", "good", "latest", gguf_file().read_bytes())
    bad = fake_store.root / "manifests" / "registry.ollama.ai" / "library" / "bad" / "latest"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    store = ModelStore([fake_store.root])
    assert [m.name for m in store.list()] == ["good:latest"]
    assert any("bad" in w for w in store.warnings)


def test_first_directory_wins(tmp_path, fake_store, gguf_file):
    gguf = gguf_file().read_bytes()
    other = type(fake_store)(tmp_path / "other-models")
    fake_store.add("registry.ollama.ai", "library", "same", "latest", gguf)
    other.add("registry.ollama.ai", "library", "same", "latest", gguf + b"newer")
    other.add("registry.ollama.ai", "library", "only-there", "latest", gguf)
    store = ModelStore([fake_store.root, other.root, tmp_path / "missing"])
    assert store.find("same").models_dir == fake_store.root
    assert store.find("only-there").models_dir == other.root
    assert [m.name for m in store.list()] == ["only-there:latest", "same:latest"]
    assert store.existing_dirs() == [fake_store.root, other.root]


def test_resolve_model_hook(isolated_ollama, fake_store, gguf_file, monkeypatch):
    monkeypatch.setenv("OLLAMA_MODELS", str(fake_store.root))
    gguf = gguf_file().read_bytes()
    fake_store.add("registry.ollama.ai", "library", "qwen3", "0.6b", gguf)
    fake_store.add("registry.ollama.ai", "library", "cloudy", "latest", None)
    assert plugin.resolve_model(name="qwen3:0.6b").read_bytes() == gguf
    assert plugin.resolve_model(name="gemma3-270m") is None  # not Ollama's: the next plugin answers
    assert plugin.resolve_model(name="/not/a:name/at/all") is None
    with pytest.raises(UserInputError, match=r"not in the model store .* ollama pull qwen3:32b"):
        plugin.resolve_model(name="qwen3:32b")
    with pytest.raises(UserInputError, match="no GGUF weights on disk"):
        plugin.resolve_model(name="cloudy:latest")


def test_resolve_through_the_core(isolated_ollama, fake_store, gguf_file, monkeypatch):
    from velollm_core.contract.modelfiles import resolve_model_path

    monkeypatch.setenv("OLLAMA_MODELS", str(fake_store.root))
    fake_store.add("registry.ollama.ai", "library", "smol", "135m", gguf_file().read_bytes())
    path = resolve_model_path("smol:135m")
    assert path.parent == fake_store.root / "blobs"


def test_service_models_dir_from_systemd(isolated_ollama, fake_store, gguf_file, tmp_path):
    unit_dir = tmp_path / "systemd" / "ollama.service.d"
    unit_dir.mkdir(parents=True)
    (unit_dir / "override.conf").write_text(f'[Service]\nEnvironment="OLLAMA_MODELS={fake_store.root}"\n')
    fake_store.add("registry.ollama.ai", "library", "svc", "latest", gguf_file().read_bytes())
    assert ModelStore.default().find("svc") is not None


def test_models_command(isolated_ollama, fake_store, gguf_file, monkeypatch):
    import click

    monkeypatch.setenv("OLLAMA_MODELS", str(fake_store.root))
    fake_store.add("registry.ollama.ai", "library", "llama3.2", "1b", gguf_file().read_bytes())
    group = click.Group()
    plugin.register_commands(cli=group)
    runner = CliRunner()
    result = runner.invoke(group, ["ollama", "models", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [m["name"] for m in data["models"]] == ["llama3.2:1b"]
    assert data["models"][0]["gguf_path"].startswith(str(fake_store.root))
    result = runner.invoke(group, ["ollama", "models"])
    assert result.exit_code == 0 and "llama3.2:1b" in result.output


def test_models_command_empty_store(isolated_ollama):
    import click

    group = click.Group()
    plugin.register_commands(cli=group)
    result = CliRunner().invoke(group, ["ollama", "models"])
    assert result.exit_code == 0
    assert "No Ollama models found" in result.output


def test_unreadable_store_is_reported(isolated_ollama, fake_store, gguf_file, monkeypatch):
    monkeypatch.setenv("OLLAMA_MODELS", str(fake_store.root))
    fake_store.add("registry.ollama.ai", "library", "locked", "1b", gguf_file().read_bytes())

    def denied(parent, name):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("velollm_ollama.store._find_dir", denied)
    with pytest.raises(UserInputError, match=r"cannot read .*: Permission denied"):
        plugin.resolve_model(name="locked:1b")


def test_local_models_hook(isolated_ollama, fake_store, gguf_file, monkeypatch):
    monkeypatch.setenv("OLLAMA_MODELS", str(fake_store.root))
    gguf = gguf_file().read_bytes()
    fake_store.add("registry.ollama.ai", "library", "qwen3", "0.6b", gguf)
    fake_store.add("registry.ollama.ai", "library", "cloudy", "latest", None)
    [model] = plugin.local_models()
    assert model["name"] == "qwen3:0.6b"
    assert model["size_bytes"] == len(gguf)
    assert Path(model["path"]).read_bytes()[:4] == b"GGUF"


def test_draft_layer_is_seen_and_loaded_with_the_model(fake_store, gguf_file, isolated_ollama, monkeypatch):
    """A Modelfile's DRAFT (layer application/vnd.ollama.image.draft, Ollama >= 0.30.0): its bytes count."""
    from velollm_ollama.inputs import load_architecture

    gguf = gguf_file(layers=8).read_bytes()
    draft = gguf_file(layers=2).read_bytes()
    fake_store.add("registry.ollama.ai", "library", "big", "latest", gguf)
    fake_store.add("registry.ollama.ai", "library", "big-draft", "latest", gguf, draft=draft)
    store = ModelStore([fake_store.root])
    plain, drafted = store.find("big"), store.find("big-draft")
    assert plain.draft_path is None and plain.load_bytes == len(gguf)
    assert drafted.draft_path.read_bytes() == draft
    assert drafted.draft_bytes == len(draft)
    assert drafted.load_bytes == len(gguf) + len(draft)
    assert drafted.to_dict()["draft_path"] == str(drafted.draft_path)
    assert drafted.gguf_path == plain.gguf_path  # the draft is never taken for the model's weights
    sized = load_architecture("big-draft", None, store)
    assert sized.weights_bytes == len(gguf) + len(draft)  # the footprint holds the draft's weights too


def test_mtp_head_is_read_from_the_gguf(gguf_file):
    from velollm_ollama.modelfacts import ModelArchitecture, mtp_layers

    with_head = gguf_file(arch="qwen35", nextn_layers=1)
    assert mtp_layers(with_head) == 1
    assert ModelArchitecture.from_gguf("q", with_head).has_mtp
    assert mtp_layers(gguf_file()) == 0
    meta = {"general.architecture": "qwen35", "qwen35.nextn_predict_layers": 2}
    assert ModelArchitecture.from_metadata("q", meta).nextn_predict_layers == 2
    assert not ModelArchitecture.from_metadata("q", {"general.architecture": "llama"}).has_mtp
