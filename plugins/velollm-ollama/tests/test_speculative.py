"""Ollama's drafts through the core's ``velollm speculative check | bench | pairs`` (the
``speculative_backend`` door), against the replay server: the same feature as llama.cpp's types."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from velollm_ollama.speculative import OllamaSpeculative, parse_lines

from velollm_core.contract.errors import UserInputError


def spec_bench(velollm, *args: str) -> tuple[int, str, str]:
    return velollm("speculative", "bench", "--suite", "short_completion", "--iterations", "2", "--max-tokens", "8", *args)


def test_an_ollama_model_chooses_the_ollama_backend_and_a_gguf_path_llamacpp(drafts, gguf_file):
    from velollm_core.speculative.bench import require_speculative_backend

    assert require_speculative_backend(None, "tiny").backend == "ollama"
    assert require_speculative_backend(None, str(gguf_file())).backend == "llamacpp"
    assert require_speculative_backend(None, "gemma3-270m").backend == "llamacpp"
    with pytest.raises(UserInputError, match="unknown model 'not-installed-anywhere'"):
        require_speculative_backend(None, "not-installed-anywhere")
    with pytest.raises(UserInputError, match=r"several backends run speculative decoding \(llamacpp, ollama\): "
                                             "choose one with --backend"):
        require_speculative_backend(None, None)


def test_check_without_backend_names_ollamas_types(velollm, drafts):
    code, out, err = velollm("speculative", "check", "tiny", "tiny-draft", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["compatible"] is True and report["drafters"] == ["draft"]
    assert (report["target"], report["draft"]) == ("tiny:latest", "tiny-draft:latest")
    assert report["types"]["draft"] == {"supported": True, "why": None}
    assert report["types"]["mtp"]["supported"] is False and "no MTP head" in report["types"]["mtp"]["why"]
    code, out, err = velollm("speculative", "check", "mtp", "--backend", "ollama")
    assert code == 0, err
    assert "yes  mtp" in out and "no   draft" in out and "runs: mtp" in out
    code, _, err = velollm("speculative", "check", "tiny", "--spec-type", "mtp")
    assert code == 1
    code, _, err = velollm("speculative", "check", "tiny", "--spec-type", "draft-mtp")
    assert code == 2 and "unknown Ollama speculation type" in err and "Traceback" not in err


def test_bench_with_a_draft_makes_and_deletes_the_temporary_model(velollm, drafts, tmp_path):
    output = tmp_path / "spec.json"
    code, out, err = spec_bench(velollm, "--target", "tiny", "--draft", "tiny-draft", "--draft-max", "3",
                                "--output", str(output), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert json.loads(output.read_text())["status"] == "complete"
    [create] = [r for r in drafts.requests if r["path"] == "/api/create"]
    temporary = create["model"]
    assert create["from"] == "tiny" and create["parameters"] == {"draft_num_predict": 3}
    assert report["draft"].endswith(create["draft_files"]["draft.gguf"].replace(":", "-"))
    assert drafts.deleted == [temporary] and temporary not in drafts.installed
    # Interleaved: the plain server (draft_num_predict 0) and the temporary model alternate.
    generates = [r for r in drafts.requests if r["path"] == "/api/generate"]
    assert [r["model"] for r in generates] == ["tiny", temporary] * 3  # one warm-up and two runs each
    assert [r["options"]["draft_num_predict"] for r in generates[:2]] == [0, 3]
    config = report["configs"]["draft"]
    assert config["server_args"] == [f'DRAFT "{report["draft"]}"', 'PARAMETER draft_num_predict "3"']
    assert report["settings"]["draft_max"] == 3 and config["uses_draft_file"] is True
    assert report["outputs_identical"] is True
    assert report["speedup"] == pytest.approx(drafts.draft_speedup, rel=0.3)
    # Ollama counts nothing: the acceptance is inferred, the advisor gives no curve.
    assert report["acceptance_rate"] is None and config["acceptance_source"] == "not counted by Ollama"
    assert 0 < config["inferred"]["acceptance_rate_min"] <= 1
    assert config["advisor"]["recommendation"] == "no advice: Ollama counts no accepted tokens"
    # The ready command: ollama create of a Modelfile with the draft.
    ready = report["ready"]
    assert ready["argv"][:3] == ["ollama", "create", "tiny-draft:latest"] and ready["command"] == shlex.join(ready["argv"])
    assert Path(ready["argv"][-1]).read_text() == (f'FROM "tiny"\nDRAFT "{report["draft"]}"\n'
                                                   'PARAMETER draft_num_predict "3"\n')
    # The result is a speculative result like llama.cpp's: the report formats read it.
    code, out, err = velollm("report", str(output), "--format", "md")
    assert code == 0, err
    assert "short_completion" in out


def test_bench_of_an_mtp_head_switches_draft_num_predict(velollm, drafts):
    code, out, err = spec_bench(velollm, "--target", "mtp", "--spec-type", "mtp", "--backend", "ollama")
    assert code == 0, err
    assert "no advice: Ollama counts no accepted tokens" in out and "inferred from the speedup" in out
    generates = [r for r in drafts.requests if r["path"] == "/api/generate"]
    assert {r["model"] for r in generates} == {"mtp"} and not drafts.created
    assert [r["options"]["draft_num_predict"] for r in generates[:2]] == [0, 4]


def test_bench_refusals_are_one_line_before_anything_runs(velollm, drafts):
    code, _, err = spec_bench(velollm, "--target", "tiny", "--draft", "tiny-draft", "--ngram-match", "4")
    assert code == 2 and "Ollama has no setting for --ngram-match" in err
    code, _, err = spec_bench(velollm, "--target", "tiny", "--spec-type", "mtp", "--backend", "ollama")
    assert code == 2 and "mtp: the target has no MTP head" in err
    drafts.version = drafts.OLD_VERSION
    code, _, err = spec_bench(velollm, "--target", "tiny", "--draft", "tiny-draft")
    assert code == 2 and "came with Ollama 0.30.0" in err and "Traceback" not in err
    assert not drafts.created


def test_pairs_name_ollama_models(velollm, drafts):
    code, out, err = velollm("speculative", "pairs", "--backend", "ollama", "--json")
    assert code == 0, err
    pairs = json.loads(out)["pairs"]
    assert ("tiny:latest", "tiny-draft:latest") in [(p["target"], p["draft"]) for p in pairs]
    assert all(":" in p["target"] and ":" in p["draft"] for p in pairs)  # Ollama's names, not blob paths
    # Without --backend every speculative backend pairs the models it runs, each pair naming it.
    code, out, err = velollm("speculative", "pairs", "--json")
    assert code == 0, err
    pairs = json.loads(out)["pairs"]
    assert {"target": "tiny:latest", "draft": "tiny-draft:latest", "backend": "ollama"} in [
        {key: p[key] for key in ("target", "draft", "backend")} for p in pairs]
    assert {p["backend"] for p in pairs} <= {"ollama", "llamacpp"}


def test_modelfile_lines_are_the_configurations_switch():
    assert parse_lines(['DRAFT "/b/sha256-1"', 'PARAMETER draft_num_predict "6"']) == ("/b/sha256-1",
                                                                                      {"draft_num_predict": 6})
    with pytest.raises(UserInputError, match="Modelfile lines"):
        parse_lines(["--draft-max", "4"])
    ollama = OllamaSpeculative()
    assert ollama.configure("tiny", {"num_ctx": 512}, []) == ("tiny", {"num_ctx": 512, "draft_num_predict": 0})
    model, options = ollama.configure("tiny", {}, ollama.server_args(draft_path=Path("/b/sha256-1"), draft_max=5))
    assert model == "tiny-velollm-draft-probe:latest" and options == {"draft_num_predict": 5}
