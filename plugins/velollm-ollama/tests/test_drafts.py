"""Ollama's speculative decoding end to end against the replay server: the store sees the draft, the
bench compares without/with it interleaved, and `velollm optimize` proposes the Modelfile only when it pays."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from velollm_ollama import plugin
from velollm_ollama.drafts import (
    create_command,
    drafted_name,
    infer_acceptance,
    load_measurement,
    modelfile_value,
    render_modelfile,
)
from velollm_ollama.speculative import OllamaSpeculative

from velollm_core.contract.errors import UserInputError


def bench(velollm, *args: str) -> dict:
    code, out, err = velollm("ollama", "draft-bench", "--model", "tiny", "--suite", "short_completion", "--iterations",
                             "2", "--max-tokens", "16", "--json", *args)
    assert code == 0, err
    return json.loads(out)


def test_draft_that_pays_is_measured_and_proposed(velollm, drafts, hw):
    report = bench(velollm, "--draft", "tiny-draft")
    assert report["status"] == "complete"
    # The core's comparison: the plain model and the temporary one interleaved, then the advisor's check.
    creates = [r for r in drafts.requests if r["path"] == "/api/create"]
    temporary = creates[0]["model"]
    names = [r["model"] for r in drafts.requests if r["path"] == "/api/generate"]
    assert names[:6] == ["tiny", temporary] * 3
    assert creates[0]["from"] == "tiny" and creates[0]["parameters"] == {"draft_num_predict": 4}
    assert report["draft"].endswith(creates[0]["draft_files"]["draft.gguf"].replace(":", "-"))
    assert set(drafts.deleted) == {r["model"] for r in creates} and not [m for m in drafts.installed if "probe" in m]
    assert report["outputs_identical"] is True
    assert report["speedup"] == pytest.approx(drafts.draft_speedup, rel=0.3)
    config = report["configs"]["draft"]
    assert config["per_suite"]["short_completion"]["advice"] == "on"
    inferred = config["inferred"]
    assert 0 < inferred["acceptance_rate_min"] <= 1 and inferred["tokens_per_step_min"] >= report["speedup"]
    # The advisor's draft cost: the draft model timed alone on the server.
    assert config["advisor"]["draft_cost_ratio"] == pytest.approx(1 / drafts.speed["tiny-draft"], rel=0.5)
    assert "tiny-draft:latest" in names
    # What `velollm optimize` reads: the best measured setting's Modelfile, every value quoted.
    kept = load_measurement("tiny")
    ready = report["ready"]
    assert kept["pays"] is True and kept["speedup"] == ready["measured_speedup"]
    assert kept["draft_num_predict"] == ready["draft_max"]
    assert kept["modelfile"] == (f'FROM "tiny"\nDRAFT "{report["draft"]}"\n'
                                 f'PARAMETER draft_num_predict "{ready["draft_max"]}"\n')
    assert kept["create_command"] == ["ollama", "create", "tiny-draft:latest", "-f", kept["modelfile_path"]]
    assert Path(kept["modelfile_path"]).read_text() == kept["modelfile"]
    # `velollm optimize --backend ollama --model tiny` proposes it.
    [proposal] = plugin.propose_config(hardware=hw.report([hw.nvidia(total_gib=8)]), model="tiny", backend="ollama")
    data = proposal.model_dump()
    assert data["modelfile"] == kept["modelfile"]
    assert data["modelfile_command"] == kept["create_command"]
    assert any(n.startswith("create the model with the draft: ollama create tiny-draft:latest -f ")
               for n in proposal.notes)


def test_draft_measured_slower_is_never_proposed(velollm, drafts, hw):
    drafts.draft_speedup = 0.7
    report = bench(velollm, "--draft", "tiny-draft")
    assert report["speedup"] < 1 and report["ready"]["command"] is None
    assert report["configs"]["draft"]["per_suite"]["short_completion"]["advice"] == "off"
    # Where the advisor predicts another length would pay, that length was measured and lost too.
    advisor = report["configs"]["draft"]["advisor"]
    if advisor["recommended_draft_max"] is not None:
        assert advisor["check"]["measured_speedup"] < 1 and len(drafts.created) == 2
    kept = load_measurement("tiny")
    assert kept["pays"] is False and "modelfile" not in kept
    [proposal] = plugin.propose_config(hardware=hw.report([hw.nvidia(total_gib=8)]), model="tiny", backend="ollama")
    assert "modelfile" not in proposal.model_dump()
    assert any("no gain, so no Modelfile with a draft is proposed" in n for n in proposal.notes)


def test_mtp_head_is_measured_by_draft_num_predict(velollm, drafts, hw):
    code, out, err = velollm("ollama", "draft-bench", "--model", "mtp", "--mtp", "--suite", "short_completion",
                             "--iterations", "2", "--warmup", "0", "--max-tokens", "16", "--draft-num-predict", "3",
                             "--json")
    assert code == 0, err
    report = json.loads(out)
    generates = [r for r in drafts.requests if r["path"] == "/api/generate"]
    assert [r["options"]["draft_num_predict"] for r in generates[:2]] == [0, 3]
    assert {r["model"] for r in generates} == {"mtp"} and not drafts.created
    kept = load_measurement("mtp")
    assert kept["pays"] and kept["modelfile"] == f'FROM "mtp"\nPARAMETER draft_num_predict "{kept["draft_num_predict"]}"\n'
    config = report["configs"]["mtp"]
    assert config["inferred"]["draft_to_target_time"] is None  # an MTP head's own cost is not measured
    assert "an MTP head taken as free" in config["advisor"]["costs_ms"]["timed_by"]


def test_mtp_is_suggested_before_it_is_measured(drafts, hw):
    [proposal] = plugin.propose_config(hardware=hw.report([hw.nvidia(total_gib=8)]), model="mtp", backend="ollama")
    assert any("has an MTP head" in n and "velollm ollama draft-bench --model mtp --mtp" in n for n in proposal.notes)


def test_a_model_without_mtp_head_is_refused(velollm, drafts):
    code, _, err = velollm("ollama", "draft-bench", "--model", "tiny", "--mtp")
    assert code == 2 and "has no MTP head" in err


def test_older_ollama_has_no_drafts(velollm, drafts):
    drafts.version = drafts.OLD_VERSION
    code, _, err = velollm("ollama", "draft-bench", "--model", "tiny", "--draft", "tiny-draft")
    assert code == 2
    assert "came with Ollama 0.30.0" in err and "Traceback" not in err
    assert not drafts.created


def test_draft_or_mtp_is_required(velollm, drafts):
    code, _, err = velollm("ollama", "draft-bench", "--model", "tiny")
    assert code == 2 and "--draft NAME, or pass --mtp" in err


def test_modelfile_values_are_quoted_and_cannot_add_a_line(tmp_path):
    assert modelfile_value("llama3.2:3b") == '"llama3.2:3b"'
    assert modelfile_value(4) == '"4"'
    lines = OllamaSpeculative().server_args(draft_path=tmp_path / "blob with space", draft_max=4)
    text = render_modelfile("m:1b", lines, threads=2)
    assert text.splitlines() == ['FROM "m:1b"', f'DRAFT "{tmp_path}/blob with space"', 'PARAMETER draft_num_predict "4"',
                                 'PARAMETER num_thread "2"']
    for bad in ("a\nPARAMETER num_ctx 1", "a\rb", 'a"b', "a\u2028b", "a\x00b"):
        with pytest.raises(UserInputError):
            modelfile_value(bad)
        with pytest.raises(UserInputError):
            OllamaSpeculative().server_args(draft_path=tmp_path / bad)
        with pytest.raises(UserInputError):
            render_modelfile(bad, [])
    with pytest.raises(UserInputError):
        create_command("m", tmp_path / "x\ny")
    assert drafted_name("llama3.2:3b") == "llama3.2-draft:3b"
    assert drafted_name("hf.co/u/m:q4") == "hf.co/u/m-draft:q4"


def test_acceptance_inferred_from_timings():
    # 1.6x with a draft costing a tenth of a target token, 4 drafted per step: >= 2.24 tokens a step.
    inferred = infer_acceptance(1.6, 4, 0.1)
    assert inferred["tokens_per_step_min"] == pytest.approx(2.24)
    assert inferred["acceptance_rate_min"] == pytest.approx(0.31)
    assert infer_acceptance(0.8, 4, 0.0)["acceptance_rate_min"] == 0.0  # slower: nothing can be claimed
    assert infer_acceptance(None, 4, 0.1)["acceptance_rate_min"] is None


def test_table_output_prints_the_measured_modelfile(velollm, drafts):
    code, out, err = velollm("ollama", "draft-bench", "--model", "tiny", "--draft", "tiny-draft", "--suite",
                             "short_completion", "--iterations", "2", "--max-tokens", "16", "--no-check")
    assert code == 0, err
    assert "vanilla vs draft" in out and "text vs vanilla: identical" in out
    assert "acceptance not counted by Ollama; inferred from the speedup" in out
    assert "Modelfile of the best measured setting (draft_num_predict 4, 1.60x measured in the comparison)" in out
    assert '  PARAMETER draft_num_predict "4"' in out and '  DRAFT "' in out
    assert "velollm optimize --backend ollama --model tiny proposes it" in out
    assert max(len(line) for line in out.splitlines()[:12]) <= 80


def test_host_flag_reaches_every_client_and_is_given_back(velollm, drafts, monkeypatch, dead_url):
    monkeypatch.delenv("OLLAMA_HOST")
    code, out, err = velollm("ollama", "draft-bench", "--model", "tiny", "--draft", "tiny-draft", "--host", drafts.url,
                             "--suite", "short_completion", "--iterations", "1", "--max-tokens", "16", "--json")
    assert code == 0, err
    assert json.loads(out)["status"] == "complete" and "OLLAMA_HOST" not in os.environ
    code, _, err = velollm("ollama", "draft-bench", "--model", "tiny", "--draft", "tiny-draft", "--host", dead_url)
    assert code == 1 and f"Ollama is not reachable at {dead_url}" in err and "Traceback" not in err, err
    assert "OLLAMA_HOST" not in os.environ
