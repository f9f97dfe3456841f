"""Ollama's speculative decoding end to end against the replay server: the store sees the draft, the
bench compares without/with it interleaved, and `velollm optimize` proposes the Modelfile only when it pays."""

from __future__ import annotations

import json
import shlex
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

from velollm_core.contract.errors import UserInputError


def bench(velollm, *args: str) -> dict:
    code, out, err = velollm("ollama", "draft-bench", "--model", "tiny", "--iterations", "2", "--max-tokens", "8",
                             "--json", *args)
    assert code == 0, err
    return json.loads(out)


def test_draft_that_pays_is_measured_and_proposed(velollm, drafts, hw):
    report = bench(velollm, "--draft", "tiny-draft")
    assert report["status"] == "complete" and report["ollama_version"] == drafts.version
    # Interleaved: vanilla and speculative alternate on each prompt, the draft alone once per prompt.
    names = [r["model"] for r in drafts.requests if r["path"] == "/api/generate"]
    temporary = report["temporary_model"]
    assert names[:6] == ["tiny", temporary] * 3
    assert names.count("tiny-draft") == 3
    # The temporary model: FROM tiny plus the draft's blob, deleted afterwards.
    [create] = [r for r in drafts.requests if r["path"] == "/api/create"]
    digest = create["draft_files"]["draft.gguf"]
    assert create["from"] == "tiny" and report["draft_path"].endswith(digest.replace(":", "-"))
    assert drafts.deleted == [temporary] and temporary not in drafts.installed
    # Both variants see the same prompt (no nonce): greedy texts compare.
    assert len({r["prompt"] for r in drafts.requests if r["path"] == "/api/generate"}) == 3
    assert report["outputs_identical"] is True
    assert report["speedup"] == pytest.approx(drafts.draft_speedup, rel=0.3)
    assert report["pays"] is True
    inferred = report["inferred"]
    assert 0 < inferred["acceptance_rate_min"] <= 1 and inferred["tokens_per_step_min"] > report["speedup"]
    assert inferred["draft_to_target_time"] == pytest.approx(1 / drafts.speed["tiny-draft"], rel=0.5)
    # The Modelfile, every value quoted, and the command that creates the model.
    assert report["modelfile"] == (f'FROM "tiny"\nDRAFT "{report["draft_path"]}"\n'
                                   'PARAMETER draft_num_predict "4"\n')
    assert report["create_shell"] == shlex.join(["ollama", "create", "tiny-draft:latest", "-f",
                                                 report["modelfile_path"]])
    assert Path(report["modelfile_path"]).read_text() == report["modelfile"]
    # `velollm optimize --backend ollama --model tiny` proposes it.
    [proposal] = plugin.propose_config(hardware=hw.report([hw.nvidia(total_gib=8)]), model="tiny", backend="ollama")
    data = proposal.model_dump()
    assert data["modelfile"] == report["modelfile"]
    assert data["modelfile_command"] == report["create_command"]
    assert any(n.startswith("create the model with the draft: ollama create tiny-draft:latest -f ")
               for n in proposal.notes)


def test_draft_measured_slower_is_never_proposed(velollm, drafts, hw):
    drafts.draft_speedup = 0.7
    report = bench(velollm, "--draft", "tiny-draft")
    assert report["speedup"] < 1 and report["pays"] is False
    assert "modelfile" not in report and "modelfile_path" not in report
    assert load_measurement("tiny")["pays"] is False
    [proposal] = plugin.propose_config(hardware=hw.report([hw.nvidia(total_gib=8)]), model="tiny", backend="ollama")
    assert "modelfile" not in proposal.model_dump()
    assert any("no gain, so no Modelfile with a draft is proposed" in n for n in proposal.notes)


def test_mtp_head_is_measured_by_draft_num_predict(velollm, drafts, hw):
    code, out, err = velollm("ollama", "draft-bench", "--model", "mtp", "--mtp", "--iterations", "1", "--warmup",
                             "0", "--max-tokens", "8", "--draft-num-predict", "3", "--json")
    assert code == 0, err
    report = json.loads(out)
    generates = [r for r in drafts.requests if r["path"] == "/api/generate"]
    assert [r["options"]["draft_num_predict"] for r in generates[:2]] == [0, 3]
    assert {r["model"] for r in generates} == {"mtp"} and not drafts.created
    assert report["pays"] and report["modelfile"] == 'FROM "mtp"\nPARAMETER draft_num_predict "3"\n'
    assert report["inferred"]["draft_to_target_time"] is None  # an MTP head's own cost is not measured


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
    text = render_modelfile("m:1b", tmp_path / "blob with space", 4)
    assert text.splitlines() == ['FROM "m:1b"', f'DRAFT "{tmp_path}/blob with space"', 'PARAMETER draft_num_predict "4"']
    for bad in ("a\nPARAMETER num_ctx 1", "a\rb", 'a"b', "a\u2028b", "a\x00b"):
        with pytest.raises(UserInputError):
            modelfile_value(bad)
        with pytest.raises(UserInputError):
            render_modelfile("m", tmp_path / bad, 4)
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


def test_table_output_names_the_modelfile_and_the_command(velollm, drafts):
    code, out, err = velollm("ollama", "draft-bench", "--model", "tiny", "--draft", "tiny-draft", "--iterations", "1",
                             "--warmup", "0", "--max-tokens", "8")
    assert code == 0, err
    assert "without tok/s" in out and "identical text: yes" in out
    assert "Modelfile written to " in out and 'DRAFT "' in out
    assert "create the model with: ollama create tiny-draft:latest -f " in out
    assert max(len(line) for line in out.splitlines()[:8]) <= 80
