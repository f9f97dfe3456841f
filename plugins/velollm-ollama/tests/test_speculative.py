"""Ollama's drafts through the core's ``velollm speculative check | bench | pairs`` (the
``speculative_backend`` door), against the replay server: the same feature as llama.cpp's types."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from velollm_ollama.speculative import COST_PROMPT, OllamaSpeculative, parse_lines

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
    # The comparison's temporary model, then the advisor's check of its recommended draft length.
    create, check = [r for r in drafts.requests if r["path"] == "/api/create"]
    temporary = create["model"]
    assert create["from"] == "tiny" and create["parameters"] == {"draft_num_predict": 3}
    assert check["parameters"] == {"draft_num_predict": report["advisor"]["check"]["draft_max"]}
    assert report["draft"].endswith(create["draft_files"]["draft.gguf"].replace(":", "-"))
    assert drafts.deleted == [temporary, check["model"]] and not [m for m in drafts.installed if "probe" in m]
    # Interleaved: the plain server (draft_num_predict 0) and the temporary model alternate.
    generates = [r for r in drafts.requests if r["path"] == "/api/generate"]
    assert [r["model"] for r in generates[:6]] == ["tiny", temporary] * 3  # one warm-up and two runs each
    assert [r["options"]["draft_num_predict"] for r in generates[:2]] == [0, 3]
    config = report["configs"]["draft"]
    assert config["server_args"] == [f'DRAFT "{report["draft"]}"', 'PARAMETER draft_num_predict "3"']
    assert report["settings"]["draft_max"] == 3 and config["uses_draft_file"] is True
    assert report["outputs_identical"] is True
    assert report["speedup"] == pytest.approx(drafts.draft_speedup, rel=0.3)
    # Ollama counts nothing: the acceptance is inferred, and the advisor fits it to the speedup.
    assert report["acceptance_rate"] is None and config["acceptance_source"] == "not counted by Ollama"
    assert 0 < config["inferred"]["acceptance_rate_min"] <= 1
    advisor = config["advisor"]
    assert advisor["acceptance_inferred"] is True and "inferred from the measured speedup" in advisor["acceptance_source"]
    [fitted] = [row for row in advisor["curve"] if row["basis"] == "fit"]
    assert fitted["draft_max"] == 3 and advisor["fit_speedup_measured_config"] == pytest.approx(report["speedup"])
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
    assert "advisor's acceptance: " in out and "(Ollama counts no accepted tokens)" in out
    assert "inferred from the speedup" in out and "an MTP head taken as free" not in out  # that is in --json
    generates = [r for r in drafts.requests if r["path"] == "/api/generate"]
    assert {r["model"] for r in generates} == {"mtp"} and not drafts.created
    assert [r["options"]["draft_num_predict"] for r in generates[:2]] == [0, 4]
    # The head's costs: the target alone (draft_num_predict 0); no draft model to time.
    costs = [r for r in generates if COST_PROMPT in r["prompt"]]
    assert costs and {(r["model"], r["options"]["draft_num_predict"]) for r in costs} == {("mtp", 0)}


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
    assert model == "tiny-velollm-draft-probe-5:latest" and options == {"draft_num_predict": 5}


# --- the advisor and the search on Ollama's one knob, draft_num_predict --------------------------------------

ACCEPTANCE = 0.9  # the replay server's per-token acceptance: its best draft_num_predict is near 10


@pytest.fixture
def accepting(drafts):
    """Drafting that pays by draft length as llama-server's step does (acceptance 0.9, a draft token a
    tenth of a target token, a head's a fifth), prompts evaluated fast (a batch verifies in one step)."""
    drafts.acceptance = ACCEPTANCE
    drafts.speed["tiny-draft"] = 10.0
    drafts.head_cost = 0.2
    drafts.prompt_token_ns = 100_000
    return drafts


def created(fake) -> list[int]:
    return [r["parameters"]["draft_num_predict"] for r in fake.requests if r["path"] == "/api/create"]


def test_the_recommended_draft_length_is_measured_before_its_modelfile_is_printed(velollm, accepting):
    code, out, err = velollm("speculative", "bench", "--backend", "ollama", "--target", "tiny", "--draft", "tiny-draft",
                             "--draft-max", "2", "--suite", "short_completion", "--iterations", "2",
                             "--max-tokens", "16", "--json")
    assert code == 0, err
    report = json.loads(out)
    advisor = report["configs"]["draft"]["advisor"]
    # Fitted at draft_num_predict 2 (the acceptance inferred from its speedup), the rest predicted.
    assert advisor["per_token_acceptance"] == pytest.approx(ACCEPTANCE, abs=0.02)
    assert {row["draft_max"]: row["basis"] for row in advisor["curve"]}[2] == "fit"
    recommended = advisor["recommended_draft_max"]
    assert recommended not in (None, 2)
    # Its check: a comparison of its own, with a temporary model drafting that many tokens.
    check = advisor["check"]
    assert check["draft_max"] == recommended and check["basis"] == "held-out" and created(accepting) == [2, recommended]
    assert check["measured_speedup"] > report["speedup"]
    # The Modelfile printed is the measured one: the check's length and speedup.
    ready = report["ready"]
    assert ready["measured_in"] == "the advisor's check" and ready["draft_max"] == recommended
    assert ready["measured_speedup"] == check["measured_speedup"]
    assert f'PARAMETER draft_num_predict "{recommended}"' in Path(ready["argv"][-1]).read_text()


def test_without_the_check_the_printed_modelfile_is_the_measured_setting(velollm, accepting):
    code, out, err = velollm("speculative", "bench", "--backend", "ollama", "--target", "tiny", "--draft", "tiny-draft",
                             "--draft-max", "2", "--suite", "short_completion", "--iterations", "2",
                             "--max-tokens", "16", "--no-check")
    assert code == 0, err
    assert created(accepting) == [2]
    assert "predicted speedup by draft max (* = fitted): 1: " in out and ", 2*: " in out
    assert "best measured: draft draft max 2 " in out and "run it with:\nollama create tiny-draft:latest" in out


def search(velollm, *args: str) -> tuple[int, str, str]:
    return velollm("speculative", "search", "--backend", "ollama", "--suite", "short_completion", "--suite", "code_edit",
                   "--max-tokens", "16", *args)


def test_search_over_draft_num_predict_picks_the_best_measured(velollm, accepting, tmp_path):
    output = tmp_path / "search.json"
    code, out, err = search(velollm, "--target", "tiny", "--draft", "tiny-draft", "--draft-max", "2,8,32",
                            "--output", str(output), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert json.loads(output.read_text())["status"] == "complete"
    # Ollama's knob is the draft length alone: the defaults (4) and 2, 8, 32.
    assert [c["name"] for c in report["candidates"]] == ["draft defaults", "draft draft-max 2", "draft draft-max 8",
                                                          "draft draft-max 32"]
    first = report["rounds"][0]["candidates"]
    assert max(first, key=lambda name: first[name]["speedup"]) == "draft draft-max 8"
    assert report["best"]["name"] == "draft draft-max 8" and report["best"]["round"] == len(report["rounds"]) > 1
    assert all(row["advice"] == "on" and row["best"] == "draft draft-max 8" for row in report["per_suite"].values())
    # The advisor, fitted at the defaults, predicted the other lengths; its pick is the best measured.
    advisor = report["advisor"]
    assert advisor["acceptance_inferred"] and advisor["fitted_at"]["draft_max"] == 4
    assert {row["draft_max"] for row in advisor["held_out"]} == {2, 8, 32}
    assert all(row["basis"] == "predicted" and abs(row["error"]) < 0.1 for row in advisor["held_out"])
    assert advisor["pick"]["draft_max"] == 8 and advisor["pick_vs_best"] == pytest.approx(1.0)
    # The command printed is the best measured setting's.
    ready = report["ready"]
    assert ready["name"] == "draft draft-max 8" and ready["argv"][:3] == ["ollama", "create", "tiny-draft:latest"]
    assert 'PARAMETER draft_num_predict "8"' in Path(ready["argv"][-1]).read_text()
    # Each setting drafted with a temporary model of its own, deleted once at the end of its round.
    assert accepting.deleted and sorted(accepting.deleted) == sorted(accepting.created)
    assert not [name for name in accepting.installed if "probe" in name] and "could not delete" not in err


def test_search_over_types_where_the_model_has_both(velollm, accepting, fake_store, gguf_file):
    # A target with an MTP head, larger than the draft.
    fake_store.add("registry.ollama.ai", "library", "mtp", "latest", gguf_file(nextn_layers=1).read_bytes() + bytes(8192))
    code, out, err = search(velollm, "--target", "mtp", "--draft", "tiny-draft", "--spec-type", "all",
                            "--draft-max", "2,8,32")
    assert code == 0, err
    # Both types, each by draft length; the draft (a tenth of a step) beats the head (a fifth).
    assert "best measured: draft draft-max 8 " in out
    assert "mtp draft-max 8" in out and "its acceptance: 90% per drafted token, inferred from the measured speedup" in out
    assert "advisor's pick: draft draft-max 8 (draft max 8), measured " in out and "= 100% of the" in out
    assert "run the best measured setting with:\nollama create mtp-draft:latest -f " in out
    assert max(len(line) for line in out.splitlines() if not line.startswith("ollama create")) <= 80


def test_search_errors_are_one_sentence(velollm, accepting):
    for args, words in (
            (("--target", "tiny", "--draft", "tiny-draft", "--p-min", "0.5"),
             "Ollama has no --p-min for draft; the search varies --draft-max"),
            (("--target", "tiny", "--spec-type", "mtp"), "cannot speculate so: mtp: the target has no MTP head"),
            (("--target", "tiny", "--spec-type", "draft-mtp"), "unknown Ollama speculation type 'draft-mtp'"),
            (("--target", "tiny", "--draft", "tiny-draft", "--draft-max", "4,x"), "--draft-max takes whole numbers")):
        code, _, err = search(velollm, *args)
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
    accepting.version = accepting.OLD_VERSION
    code, _, err = search(velollm, "--target", "tiny", "--draft", "tiny-draft", "--draft-max", "2")
    assert code == 2 and "came with Ollama 0.30.0" in err and "Traceback" not in err
    assert not accepting.created
