"""Speculative decoding on the real llama-server: flags per build, compatibility, the comparison."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from velollm_gguf.compat import NGRAM_TYPES as NGRAM
from velollm_llamacpp.server import _split_help_line
from velollm_testkit.real import missing

from velollm_core.contract.errors import UserInputError
from velollm_core.speculative.advisor import (
    Observation,
    advise,
    expected_accepted,
    fit_alpha,
    predicted_speedup,
    step_ms,
    with_sampling,
)
from velollm_core.speculative.bench import first_difference

VELOLLM = [sys.executable, "-m", "velollm_core"]

# An older llama-server --help (b4xxx era): --draft-max was the live spelling then.
OLD_HELP = """\
-md,   --model-draft FNAME              draft model for speculative decoding (default: unused)
--draft-max, --draft, --draft-n N       number of tokens to draft for speculative decoding (default: 16)
--draft-min, --draft-n-min N            minimum number of draft tokens to use for speculative decoding
--draft-p-min P                         minimum speculative decoding probability (greedy) (default: 0.8)
"""


def velollm(*args, timeout=900):
    return subprocess.run([*VELOLLM, *args], check=False, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def spec_backend():
    from velollm_llamacpp.install import find_program
    from velollm_llamacpp.speculative import LlamaCppSpeculative

    from velollm_core.contract.errors import UserInputError

    try:
        find_program("llama-server")
    except UserInputError as exc:
        missing("llama-server", str(exc))
    return LlamaCppSpeculative()


def test_help_parser_reads_old_and_removed_spellings():
    names = [_split_help_line(line)[0] for line in OLD_HELP.splitlines()]
    assert names[1] == ["--draft-max", "--draft", "--draft-n"]
    removed = "--draft, --draft-n, --draft-max N       the argument has been removed. use --spec-draft-n-max"
    assert "has been removed" in _split_help_line(removed)[1]


def test_model_draft_flags_for_this_build(spec_backend, tmp_path):
    args = spec_backend.server_args(draft="model", draft_path=tmp_path / "d.gguf", p_min=0.75)
    # This build renamed the draft flags and needs --spec-type, or the draft is loaded but never used.
    assert args[:2] == ["--spec-draft-model", str(tmp_path / "d.gguf")]
    assert "--spec-type" in args and args[args.index("--spec-type") + 1] == "draft-simple"
    assert args[args.index("--spec-draft-n-max") + 1] == "16"
    assert args[args.index("--spec-draft-p-min") + 1] == "0.75"
    assert "--draft-max" not in args


def test_ngram_flags_and_unknown_kind(spec_backend):
    # This CPU build: shorter matches and drafts than llama.cpp's GPU-minded defaults, unless set.
    assert spec_backend.server_args(draft="ngram") == [
        "--spec-type", "ngram-mod", "--spec-ngram-mod-n-max", "8", "--spec-ngram-mod-n-min", "2",
        "--spec-ngram-mod-n-match", "8", "--metrics"]
    assert spec_backend.server_args(draft="ngram-simple", draft_max=8)[-3:-1] == ["--spec-ngram-simple-size-m", "8"]
    assert spec_backend.server_args(draft="ngram", draft_max=16, draft_min=2, ngram_match=12) == [
        "--spec-type", "ngram-mod", "--spec-ngram-mod-n-max", "16", "--spec-ngram-mod-n-min", "2",
        "--spec-ngram-mod-n-match", "12", "--metrics"]
    assert spec_backend.server_args(draft="ngram-map-k", ngram_match=6)[-3:-1] == ["--spec-ngram-map-k-size-n", "6"]

    with pytest.raises(UserInputError, match="unknown n-gram drafter"):
        spec_backend.server_args(draft="ngram-bogus")


def test_first_difference():
    assert first_difference("abc", "abc") is None
    assert first_difference("abcd", "abxd") == 2
    assert first_difference("ab", "abc") == 2


def test_advisor_cost_model():
    assert expected_accepted(0.5, 2) == pytest.approx(0.75)
    assert fit_alpha(expected_accepted(0.8, 8), 8) == pytest.approx(0.8, abs=1e-3)
    costs = {"target_token_ms": 10.0, "draft_token_ms": 9.0, "verify_ms": {1: 11.0, 4: 14.0, 16: 30.0}}
    # A draft almost as costly as the target: speculation cannot pay, whatever the acceptance.
    expensive = advise(costs, Observation(generated=400, drafted=1600, accepted=1560))
    assert expensive["recommended_draft_max"] is None and "don't use speculation" in expensive["recommendation"]
    assert expensive["recommendation"].startswith("off")
    # A cheap draft (5% of the target) accepted 240 of 1200 tokens over 400 generated: 160 steps of 7.5
    # drafted and 1.5 accepted, a per-token acceptance of about 0.606.
    cheap = advise({**costs, "draft_token_ms": 0.5}, Observation(generated=400, drafted=1200, accepted=240))
    assert (cheap["mean_drafted_per_step"], cheap["mean_accepted_per_step"]) == (7.5, 1.5)
    assert cheap["per_token_acceptance"] == pytest.approx(0.6056, abs=1e-3)
    speedups = {row["draft_max"]: row["predicted_speedup"] for row in cheap["curve"]}
    # Draft 1: 1.606 tokens per step of verify 11 ms + the draft's re-evaluation (5% of it) + one draft decode.
    assert speedups[1] == pytest.approx(1.6056 * 10.0 / (11.0 + 0.05 * 11.0 + 0.5), rel=1e-3)
    # Long drafts verify more than they win: below 1x from 12 on; the measured 7.5 gains little.
    assert [k for k, speedup in speedups.items() if speedup < 1] == [12, 16, 24, 32]
    # The measured configuration's figure is fitted to its own runs, and labelled so; the rest is predicted.
    assert cheap["fit_speedup_measured_config"] == pytest.approx(1.07, abs=0.01)
    assert "predicted_speedup_measured_config" not in cheap and "prediction_error" not in cheap
    assert {row["basis"] for row in cheap["curve"]} == {"predicted"}  # no draft max was measured
    labelled = advise({**costs, "draft_token_ms": 0.5}, Observation(generated=400, drafted=1200, accepted=240),
                      draft_max=8)
    assert [row["draft_max"] for row in labelled["curve"] if row["basis"] == "fit"] == [8]
    assert (cheap["recommended_draft_max"], cheap["recommendation"]) == (2, "use draft max 2: 1.45x predicted")


def test_advisor_step_model_counts_every_part_of_a_server_step():
    costs = {"target_token_ms": 10.0, "draft_token_ms": 2.0, "verify_ms": {4: 14.0}, "draft_verify_ms": {4: 3.0}}
    # A step of 4 drafted tokens yielding 3: verify 14 + draft re-evaluation 3 + 4 draft decodes x 2.
    assert step_ms(costs, 4, 3) == pytest.approx(14 + 3 + 8)
    # A draft that stops on its confidence decodes once more; s = 1 ms per sampled token on top.
    sampled = with_sampling(costs, vanilla_tokens_per_s=1000 / 11)
    assert sampled["sampling_ms"] == pytest.approx(1.0)
    assert step_ms(sampled, 4, 3, early_stop=True) == pytest.approx(14 + 3 + 5 * (2 + 1) + 3 * 1)
    assert predicted_speedup(sampled, 4, 3, early_stop=True) == pytest.approx(3 * 11 / 35)
    # Draftless drafting costs only the verification and the sampling.
    ngram = {"target_token_ms": 10.0, "draft_token_ms": 0.0, "verify_ms": {4: 14.0}, "sampling_ms": 1.0}
    assert step_ms(ngram, 4, 5) == pytest.approx(14 + 5)


def test_advisor_does_not_promise_longer_drafts_than_the_draft_makes():
    costs = {"target_token_ms": 10.0, "draft_token_ms": 1.0, "verify_ms": {1: 11.0, 16: 20.0}}
    # All accepted, but p_min ended each draft after ~3 tokens although draft max was 16.
    observed = Observation(generated=400, drafted=300, accepted=300)
    limited = advise(costs, observed, early_stop=True, draft_max=16)
    assert limited["confidence_limited"]
    by_k = {row["draft_max"]: row["predicted_speedup"] for row in limited["curve"]}
    assert by_k[32] == pytest.approx(by_k[4]) == pytest.approx(limited["fit_speedup_measured_config"], rel=1e-2)
    free = advise(costs, observed, draft_max=3)
    assert not free["confidence_limited"] and free["curve"][-1]["predicted_speedup"] > by_k[32]


def test_costs_come_from_llama_bench_one_run_per_model(spec_backend):
    from velollm_core.contract.modelfiles import resolve_model_path

    target, draft = resolve_model_path("gemma3-270m-f16"), resolve_model_path("gemma3-270m")
    costs = spec_backend.measure_costs(target, draft, threads=2, draft_lengths=(1, 4), n_gen=8)
    assert set(costs["verify_ms"]) == set(costs["draft_verify_ms"]) == {1, 4}
    times = [costs["target_token_ms"], costs["draft_token_ms"], *costs["verify_ms"].values(),
             *costs["draft_verify_ms"].values()]
    assert all(0 < ms < 60_000 for ms in times), costs
    assert spec_backend.measure_costs(target, None, threads=2, draft_lengths=(1,), n_gen=8)["draft_token_ms"] == 0.0


def test_check_compatible_and_incompatible_pairs(spec_backend):
    ok = velollm("speculative", "check", "gemma3-270m-f16", "gemma3-270m", "--json")
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["compatible"] and report["size_ratio"] < 0.5
    bad = velollm("speculative", "check", "gemma3-270m", "smollm2-135m")
    assert bad.returncode == 1 and "NOT compatible" in bad.stdout
    assert "tokenizer models differ" in bad.stdout and "vocabulary sizes differ" in bad.stdout


def test_bench_refuses_incompatible_and_oversized_drafts(spec_backend, tmp_path):
    proc = velollm("speculative", "bench", "--target", "gemma3-270m", "--draft", "smollm2-135m")
    assert proc.returncode == 1 and "not compatible" in proc.stderr and "Traceback" not in proc.stderr
    proc = velollm("speculative", "bench", "--target", "gemma3-270m", "--draft", "gemma3-270m-f16")
    assert proc.returncode == 2 and "is not smaller than the target" in proc.stderr
    proc = velollm("speculative", "bench", "--target", "gemma3-270m", "--draft", str(tmp_path / "nope.gguf"))
    assert proc.returncode == 2 and "model file not found" in proc.stderr


def test_ngram_bench_on_the_standard_build_measures_explains_and_checks_its_advice(spec_backend, tmp_path):
    """No kernel flag: the standard build and kernels. Exit 0 with the speed measured and its interval;
    the text check is its own verdict, each difference explained by the plain server's candidates; the
    advisor's own figure is a fit, its recommendation is measured before its command is printed."""
    out = tmp_path / "spec.json"
    proc = velollm("speculative", "bench", "--target", "gemma3-270m", "--draft", "ngram", "--suite",
                   "quote_answer", "--iterations", "2", "--warmup", "0", "--max-tokens", "96", "--threads", "2",
                   "--two-lengths", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["status"] == "complete" and report["settings"]["exact"] is False
    row = report["per_suite"]["quote_answer"]
    assert row["drafted"] > 0 and 0 < report["acceptance_rate"] <= 1
    assert report["speedup"] == pytest.approx(row["speedup"]) and row["speedup"] > 0
    assert report["vanilla"]["runs"][0]["completion_tokens"] == 96
    # each side's own result ended with the comparison (they had said "running" for ever)
    assert report["vanilla"]["status"] == report["speculative"]["status"] == "complete"
    assert report["vanilla"]["finished_at"] and report["speculative"]["finished_at"]
    assert len(row["paired_ratios"]) == 2 and row["advice"] in ("on", "off", "unsure")
    interval = report["speedup_interval"]
    assert interval["n"] == 2 and interval["low"] <= interval["geomean"] <= interval["high"]
    identity = report["identity"]
    assert identity["verdict"] in ("identical", "near-ties", "different", "unexplained")
    assert f"text vs vanilla: {identity['verdict']}" in proc.stdout
    assert (identity["verdict"] == "identical") == report["outputs_identical"]
    for difference in report["differences"]:  # the first differing token, with the candidates there
        assert difference["token"] >= 0 and len(difference["candidates"]) >= 2, difference
        assert difference["why"].startswith(("near-tie", "real difference"))
    advice = report["configs"]["ngram-mod"]["advisor"]
    assert "prediction_error" not in advice and advice["measured_draft_max"] == 8
    assert 0 <= advice["costs_ms"]["undrafted_share"] < 1  # u, the text left to plain steps
    # --two-lengths: fitted at two measured draft lengths, the default and twice it, one more configuration
    second = report["configs"]["ngram-mod draft max 16"]
    assert second["draft_max"] == 16 and second["per_suite"]["quote_answer"]["drafted"] > 0
    assert "--spec-ngram-mod-n-max" in second["server_args"] and "advisor" not in second
    assert advice["second_length"] == {"name": "ngram-mod draft max 16", "draft_max": 16,
                                       "measured_speedup": second["speedup"]}
    assert advice["costs_ms"]["calibrated"]["second"]["drafted"] > 0
    assert advice["costs_ms"]["drafted_overhead_ms"] >= 0 and advice["costs_ms"]["step_overhead_ms"] >= 0
    assert [r["draft_max"] for r in advice["curve"] if r["basis"] == "fit"] == [8, 16]
    assert "fitted at two measured draft lengths: 8 and 16" in proc.stdout
    check = advice.get("check")
    if advice["recommended_draft_max"] not in (None, 8, 16):  # measured before its command is printed
        assert check["basis"] == "held-out" and check["draft_max"] == advice["recommended_draft_max"]
        assert check["measured_speedup"] > 0 and f"measured at draft max {check['draft_max']}" in proc.stdout
    else:
        assert check is None
    ready = report["ready"]
    if ready["command"]:  # the fastest measured: a configuration compared or the check
        fastest = max([c["speedup"] for c in report["configs"].values()] + [(check or {}).get("measured_speedup") or 0])
        assert ready["measured_speedup"] == fastest and "run it with:" in proc.stdout


def test_one_server_at_a_time_runs_each_block_alone_and_pairs_runs_by_iteration(spec_backend):
    """For a target too large for two copies in memory: each configuration's runs in a block with its
    server alone, the plain server last (still up to explain differences); runs paired by iteration."""
    import psutil

    from velollm_core.bench.suites import get_suites
    from velollm_core.speculative.bench import SpeculativeComparison, SpeculativePlan

    servers_up, labels = [], []

    def on_run(label, record):
        labels.append(label.split(":")[0])
        servers_up.append(sum(1 for child in psutil.Process().children(recursive=True)
                              if "llama-server" in child.name()))

    from dataclasses import replace

    suite = replace(get_suites(["quote_answer"])[0], max_tokens=32)
    plan = SpeculativePlan(target="gemma3-270m", draft="ngram", suites=[suite], iterations=2, warmup=0,
                           threads=2, types=[["ngram-mod"], ["ngram-simple"]], advise=False, one_at_a_time=True)
    report = SpeculativeComparison(plan, on_run=on_run).run()
    assert report["status"] == "complete" and report["order"] == "one server at a time"
    assert servers_up == [1] * 6, servers_up  # every run with its own server alone
    assert labels == ["ngram-mod"] * 2 + ["ngram-simple"] * 2 + ["vanilla"] * 2  # blocks, plain last
    for config in report["configs"].values():
        row = config["per_suite"]["quote_answer"]
        assert len(row["paired_ratios"]) == 2 and row["speedup"] > 0


def test_explain_difference_names_the_token_and_the_plain_servers_candidates(llama_server_url):
    """A speculative text that takes the plain server's second candidate at one position: the first
    differing token is found there, the two are its top two, their real log-probabilities decide."""
    from types import SimpleNamespace

    import httpx
    from velollm_llamacpp.speculative import NEAR_TIE_LOGPROB, LlamaCppSpeculative

    prompt = "The three primary colours are"
    plain = httpx.post(f"{llama_server_url}/completion", json={
        "prompt": prompt, "n_predict": 12, "temperature": 0, "top_k": 1, "n_probs": 2, "cache_prompt": False},
        timeout=120).json()
    steps = plain["completion_probabilities"]
    at = 3
    second = steps[at]["top_logprobs"][1]
    vanilla_text = plain["content"]
    speculative_text = "".join(step["token"] for step in steps[:at]) + second["token"] + " and so on"
    context = SimpleNamespace(state={"url": llama_server_url})
    explained = LlamaCppSpeculative().explain_difference(context, prompt, vanilla_text, speculative_text)
    assert explained["token"] == at, explained
    assert [c["id"] for c in explained["candidates"][:2]] == [steps[at]["id"], second["id"]]
    gap = steps[at]["top_logprobs"][0]["logprob"] - second["logprob"]
    assert explained["logprob_gap"] == pytest.approx(gap, abs=0.05)
    assert explained["near_tie"] == (explained["logprob_gap"] <= NEAR_TIE_LOGPROB)
    assert explained["speculative_token"] == second["token"]
    # A text that is a prefix of the other parts in length only.
    assert "prefix" in LlamaCppSpeculative().explain_difference(context, prompt, vanilla_text,
                                                                vanilla_text[:5])["why"]
    assert LlamaCppSpeculative().explain_difference(SimpleNamespace(state={}), prompt, "a", "b") is None


def test_near_tie_verdict():
    from velollm_llamacpp.speculative import near_tie_verdict

    candidates = [{"id": 1, "text": " a", "logprob": -1.30}, {"id": 2, "text": " the", "logprob": -1.35},
                  {"id": 3, "text": " my", "logprob": -2.0}]
    tie = near_tie_verdict(7, (1, " a"), (2, " the"), candidates)
    assert tie["near_tie"] and tie["logprob_gap"] == pytest.approx(0.05) and tie["why"].startswith("near-tie")
    far = near_tie_verdict(7, (1, " a"), (3, " my"), candidates)  # not the runner-up: a real difference
    assert not far["near_tie"] and far["logprob_gap"] is None and "not the top two" in far["why"]
    wide = near_tie_verdict(0, (1, " a"), (2, " the"), [{**candidates[0], "logprob": -0.1}, candidates[1]])
    assert not wide["near_tie"] and "1.250 nats apart" in wide["why"]


# --- every speculation type: random-weight Qwen3.5 + MTP head, Llama + EAGLE-3 / DFlash / DSpark ---

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


@pytest.fixture(scope="module")
def spec_models(tmp_path_factory):
    """Tiny random-weight models from the benchmark scripts: a Llama target, an EAGLE-3 head, a DFlash
    and a DSpark block drafter for it, and Qwen3.5 with its own MTP head (random, and one that repeats
    its input token, as the random target mostly does, so drafts are accepted for real; likewise a
    DSpark whose Markov head repeats the anchor token)."""
    out = tmp_path_factory.mktemp("spec-models")
    script = os.path.join(REPO, "benchmarks")
    for args in (["make_spec_models.py", "--mtp", "tiny", "--eagle3", "tiny", "--dflash", "tiny", "--dspark", "tiny"],
                 ["make_spec_models.py", "--mtp", "tiny", "--dspark", "tiny", "--copy-head"],
                 ["make_gguf_models.py", "--shapes", "tiny"]):
        proc = subprocess.run([sys.executable, os.path.join(script, args[0]), "--out", str(out), *args[1:],
                               "--type" if args[0] == "make_spec_models.py" else "--types", "q8_0"],
                              capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, proc.stderr
    return {"llama": out / "llama-tiny-random-q8_0.gguf", "eagle3": out / "eagle3-tiny-random-q8_0.gguf",
            "mtp": out / "qwen35-tiny-mtp-random-q8_0.gguf", "mtp_copy": out / "qwen35-tiny-mtp-copy-random-q8_0.gguf",
            "dflash": out / "dflash-tiny-random-q8_0.gguf", "dspark": out / "dspark-tiny-random-q8_0.gguf",
            "dspark_copy": out / "dspark-tiny-copy-random-q8_0.gguf"}


def test_check_names_the_types_each_model_supports(spec_models):
    mtp = json.loads(velollm("speculative", "check", str(spec_models["mtp"]), "--json").stdout)
    assert mtp["supported"] == ["draft-mtp", *NGRAM]
    assert "ngram-mod,draft-mtp" in mtp["combinations"]
    assert "needs a draft model" in mtp["types"]["draft-eagle3"]["why"]
    proc = velollm("speculative", "check", str(spec_models["llama"]), str(spec_models["eagle3"]), "--json")
    assert proc.returncode == 0, proc.stdout
    eagle = json.loads(proc.stdout)
    assert eagle["supported"] == ["draft-eagle3", *NGRAM] and eagle["compatible"]
    assert "EAGLE-3" in eagle["types"]["draft-simple"]["why"] or "eagle3" in eagle["types"]["draft-simple"]["why"]
    assert "no MTP head for architecture 'llama'" in eagle["types"]["draft-mtp"]["why"]


def test_dflash_and_dspark_files_have_the_loaders_layout(spec_models):
    """The tensors and keys llama.cpp's dflash loader reads, for the tiny Llama (2 layers, width 256)."""
    from velollm_gguf import read_summary

    for name, markov in (("dflash", False), ("dspark", True), ("dspark_copy", True)):
        summary = read_summary(spec_models[name])
        shapes = {t.name: list(t.shape) for t in summary.tensors}
        assert summary.architecture == "dflash"
        assert summary.arch_value("target_layers") == [0, 1] and summary.arch_value("block_size") == 8
        assert summary.metadata["tokenizer.ggml.mask_token_id"] == 128002
        assert shapes["fc.weight"] == [512, 256]  # two target layers of 256 in, the drafter's 256 out
        assert "enc.output_norm.weight" in shapes and "blk.0.attn_q_norm.weight" in shapes
        assert "token_embd.weight" not in shapes and "output.weight" not in shapes  # the target's are used
        assert ("markov_w1.weight" in shapes) == markov
        if markov:
            assert shapes["markov_w1.weight"] == shapes["markov_w2.weight"] == [64, 128256]
            assert shapes["conf_proj.weight"] == [256 + 64, 1]
            assert summary.arch_value("sample_from_anchor") is True


def test_check_names_dflash_and_dspark(spec_models):
    llama = str(spec_models["llama"])
    for name, kind, other in (("dflash", "draft-dflash", "draft-dspark"), ("dspark", "draft-dspark", "draft-dflash")):
        proc = velollm("speculative", "check", llama, str(spec_models[name]), "--json")
        assert proc.returncode == 0, proc.stdout
        report = json.loads(proc.stdout)
        assert report["compatible"] and report["supported"] == [kind, *NGRAM]
        assert f"ngram-mod,{kind}" in report["combinations"]
        assert f"is a {kind} drafter (dflash)" in report["types"][other]["why"]
        text = velollm("speculative", "check", llama, str(spec_models[name]))
        assert f"compatible: llama.cpp will speculate with this pair ({kind})" in text.stdout
    # A drafter for another target: its vocabulary is named.
    proc = velollm("speculative", "check", "gemma3-270m", str(spec_models["dflash"]), "--spec-type", "draft-dflash")
    assert proc.returncode == 1 and "vocabulary sizes differ" in proc.stdout
    # DFlash files carry no target_hidden_size: the width is read from fc (2 layers x 256 in).
    assert "hidden size 256, the target's is 640" in proc.stdout


def test_check_and_bench_refuse_impossible_combinations_before_starting(spec_models):
    llama, head = str(spec_models["llama"]), str(spec_models["eagle3"])
    proc = velollm("speculative", "check", llama, head, "--spec-type", "draft-simple,draft-eagle3")
    assert proc.returncode == 1 and "one draft context" in proc.stdout and "refused draft-simple,draft-eagle3" in proc.stdout
    # A head trained on another target's hidden states: its width and vocabulary are named.
    proc = velollm("speculative", "check", "gemma3-270m", head, "--spec-type", "draft-eagle3")
    assert proc.returncode == 1 and "hidden size 256, the target's is 640" in proc.stdout
    assert "vocabulary sizes differ" in proc.stdout
    for args, message in (((llama, "--spec-type", "draft-mtp"), "no MTP head for architecture 'llama'"),
                          ((llama, "--spec-type", "draft-eagle3"), "needs a draft model file"),
                          ((llama, "--spec-type", "draft-bogus"), "unknown speculation type draft-bogus")):
        bench = velollm("speculative", "bench", "--target", args[0], *args[1:], "--iterations", "1", timeout=60)
        assert bench.returncode == 2 and message in bench.stderr, bench.stderr
        assert "Traceback" not in bench.stderr and "starting" not in bench.stderr


def test_server_flags_for_each_type(spec_backend, spec_models):
    head = spec_models["eagle3"]
    mtp = spec_backend.server_args(draft="model", types=["draft-mtp"], draft_max=3, p_min=0.0)
    assert "--spec-draft-model" not in mtp  # the target's own head
    assert mtp[:2] == ["--spec-type", "draft-mtp"] and mtp[mtp.index("--spec-draft-n-max") + 1] == "3"
    assert mtp[-1] == "--metrics"
    eagle = spec_backend.server_args(draft="model", types=["ngram-mod", "draft-eagle3"], draft_path=head)
    assert eagle[:4] == ["--spec-draft-model", str(head), "--spec-type", "ngram-mod,draft-eagle3"]
    # Beside a drafter, n-gram drafting keeps its own (CPU) lengths; draft max is the drafter's.
    assert eagle[eagle.index("--spec-ngram-mod-n-max") + 1] == "8" and eagle[eagle.index("--spec-draft-n-max") + 1] == "16"
    with pytest.raises(UserInputError, match="needs a draft model file"):
        spec_backend.server_args(draft="model", types=["draft-eagle3"])
    assert set(spec_backend.available_types()) == {*NGRAM, "draft-simple", "draft-eagle3", "draft-mtp", "draft-dflash",
                                                    "draft-dspark"}


def test_metrics_counters_give_acceptance_per_position():
    from velollm_llamacpp.speculative import parse_spec_counters

    from velollm_core.speculative import metrics

    page = ('# TYPE llamacpp:spec_decode_num_drafts_total counter\nllamacpp:spec_decode_num_drafts_total 10\n'
            'llamacpp:spec_decode_num_draft_tokens_total 40\nllamacpp:spec_decode_num_accepted_tokens_total 18\n'
            'llamacpp:spec_decode_num_accepted_tokens_per_pos_total{position="0"} 8\n'
            'llamacpp:spec_decode_num_accepted_tokens_per_pos_total{position="1"} 6\n'
            'llamacpp:spec_decode_num_accepted_tokens_per_pos_total{position="2"} 3\n'
            'llamacpp:spec_decode_num_accepted_tokens_per_pos_total{position="3"} 1\n')
    before = parse_spec_counters(page.replace(" 10\n", " 4\n").replace('"0"} 8', '"0"} 2'))
    grown = metrics.delta(parse_spec_counters(page), before)
    assert grown["steps"] == 6 and grown["per_position"] == [6, 0, 0, 0]
    curve = metrics.curve(parse_spec_counters(page))
    assert curve["rates"] == [0.8, 0.6, 0.3, 0.1] and curve["conditional"][1] == pytest.approx(0.75)
    assert curve["tokens_per_step"] == pytest.approx(2.8)
    assert parse_spec_counters("llamacpp:prompt_tokens_total 5\n") is None


def test_advisor_reads_the_position_curve_and_says_off():
    from velollm_core.speculative.advisor import calibrate, curve_tokens

    assert curve_tokens([0.8, 0.6, 0.3], 2) == pytest.approx(2.4)
    assert curve_tokens([0.8, 0.4], 4) == pytest.approx(1 + 0.8 + 0.4 + 0.2 + 0.1)  # the last ratio goes on
    costs = {"target_token_ms": 10.0, "draft_token_ms": 0.0, "verify_ms": {4: 14.0}, "sampling_ms": 1.0}
    # One measured step of 4 drafted tokens yielding 3: 14 + d (4 + 1.4) + 1 (4 + 3) = 26.4 -> d = 1.
    calibrated = calibrate(costs, 26.4, 4, 3, head=True)
    assert calibrated["draft_token_ms"] == pytest.approx(1.0) and calibrated["step_overhead_ms"] == pytest.approx(0)
    assert step_ms(calibrated, 4, 3) == pytest.approx(14 + 1.4 + 4 * 2 + 3)
    # A drafter llama-bench measured: what the step took beyond the model is per-step overhead.
    measured = calibrate({**costs, "draft_token_ms": 1.0}, 30.0, 4, 3)
    assert measured["step_overhead_ms"] == pytest.approx(30.0 - 26.4) and measured["draft_token_ms"] == 1.0
    dear = {**costs, "draft_token_ms": 9.0}
    off = advise(dear, Observation(generated=100, drafted=160, accepted=40), rates=[0.3, 0.1, 0.0, 0.0])
    assert off["recommended_draft_max"] is None and off["recommendation"].startswith("off")
    assert off["acceptance_source"] == "per-position server metrics"


def test_mtp_bench_end_to_end_identical_text_and_ready_command(spec_backend, spec_models, tmp_path):
    """Qwen3.5 with its MTP head, exact mode: accepted drafts, the same text, per-position counts
    from the server, and a command line that starts the measured best."""
    import shlex

    out = tmp_path / "mtp.json"
    proc = velollm("speculative", "bench", "--target", str(spec_models["mtp_copy"]), "--spec-type", "draft-mtp",
                   "--spec-type", "ngram-mod,draft-mtp", "--suite", "short_completion", "--iterations", "1",
                   "--warmup", "0", "--max-tokens", "24", "--threads", "2", "--draft-max", "4", "--p-min", "0",
                   "--exact", "--output", str(out))
    report = json.loads(out.read_text())
    assert proc.returncode == 0, proc.stderr
    assert report["status"] == "complete" and report["outputs_identical"]
    for name in ("draft-mtp", "ngram-mod,draft-mtp"):
        config = report["configs"][name]
        assert config["per_suite"]["short_completion"]["accepted"] > 0, config
        by_position = config["acceptance_by_position"]
        assert by_position["steps"] > 0 and len(by_position["rates"]) >= 4
        assert config["advisor"]["acceptance_source"] == "per-position server metrics"
    assert report["configs"]["draft-mtp"]["server_args"][:2] == ["--spec-type", "draft-mtp"]
    ready = report["ready"]
    best = max(c["speedup"] for c in report["configs"].values())
    if best < 1.05:  # on a busy CPU speculation may not pay: then the bench says to leave it off
        assert ready["command"] is None and "leave speculation off" in proc.stdout
        return
    argv = shlex.split(ready["command"])
    assert argv == ready["argv"] and argv[argv.index("--model") + 1] == str(spec_models["mtp_copy"])
    assert "--spec-type" in argv and "--metrics" not in argv and argv[argv.index("--threads") + 1] == "2"
    assert "run it with:" in proc.stdout


def test_ready_command_is_shell_quoted(spec_backend, tmp_path):
    import shlex

    odd = tmp_path / "my model's dir" / "t.gguf"
    argv = spec_backend.ready_command(odd, spec_backend.server_args(draft="model", types=["draft-mtp"], draft_max=3),
                                      threads=4, n_gpu_layers=99)
    assert shlex.split(shlex.join(argv)) == argv and argv[1:3] == ["--model", str(odd)]
    assert argv[-4:] == ["--threads", "4", "--n-gpu-layers", "99"]


def _head_bench(spec_models, tmp_path, draft, spec_type, *extra, infer_type=False):
    """``speculative bench`` of the tiny Llama with a head file (``infer_type``: no --spec-type, the file
    says which): complete, identical text, the head passed to the server; its row and configuration."""
    out = tmp_path / f"{spec_type}.json"
    type_args = [] if infer_type else ["--spec-type", spec_type]
    proc = velollm("speculative", "bench", "--target", str(spec_models["llama"]), "--draft", str(spec_models[draft]),
                   *type_args, "--suite", "short_completion", "--iterations", "1", "--warmup", "0",
                   "--max-tokens", "24", "--threads", "2", "--draft-max", "4", "--no-advise", "--exact", *extra,
                   "--output", str(out))
    report = json.loads(out.read_text())
    assert proc.returncode == 0, proc.stderr
    assert report["status"] == "complete" and report["outputs_identical"], report.get("differences")
    config = report["configs"][spec_type]
    assert config["server_args"][:4] == ["--spec-draft-model", str(spec_models[draft]), "--spec-type", spec_type]
    assert config["outputs_identical"] and config["differences"] == []
    assert config["acceptance_by_position"]["steps"] > 0
    return config["per_suite"]["short_completion"], config


def test_eagle3_bench_end_to_end(spec_backend, spec_models, tmp_path):
    """A Llama target with an EAGLE-3 head drafts every step; random heads are rejected, and the text
    stays the target's."""
    row, _ = _head_bench(spec_models, tmp_path, "eagle3", "draft-eagle3", "--p-min", "0", infer_type=True)
    assert row["drafted"] > 0


@pytest.mark.parametrize("draft,spec_type", [("dflash", "draft-dflash"), ("dspark", "draft-dspark")])
def test_dflash_and_dspark_bench_end_to_end(spec_backend, spec_models, tmp_path, draft, spec_type):
    """A DFlash / DSpark block drafter reads the Llama target's layer inputs and drafts a block every
    step; random weights are rejected, and the text stays the target's."""
    row, config = _head_bench(spec_models, tmp_path, draft, spec_type, "--p-min", "0")
    # A block of the 4 asked for each step (block size 8 allows 7 for DFlash, 8 for DSpark), fewer only
    # in the last steps, where fewer tokens remain (24 tokens, none accepted: 19 x 4 + 3 + 2 + 1).
    steps = config["acceptance_by_position"]["steps"]
    assert 4 * steps >= row["drafted"] > 3 * steps > 0
    assert 0 <= row["accepted"] <= row["drafted"] and row["speculative_decode_tokens_per_s"] > 0


def test_dspark_copy_head_drafts_are_accepted_with_identical_text(spec_backend, spec_models, tmp_path):
    """The DSpark whose Markov head repeats the anchor token, under the default p_min (0.75, so its
    confidence head is read): accepted drafts, and still the target's text."""
    row, config = _head_bench(spec_models, tmp_path, "dspark_copy", "draft-dspark")
    assert config["server_args"][config["server_args"].index("--spec-draft-p-min") + 1] == "0.75"
    assert row["accepted"] > 0 and row["acceptance_rate"] > 0.3, row
    assert config["acceptance_by_position"]["rates"][0] > 0.3


def test_draft_files_name_their_type(tmp_path):
    """llama.cpp infers the type from the draft file: a DFlash block drafter (with a Markov head:
    DSpark), an EAGLE-3 head, an MTP head alone (a sidecar without the trunk), or a whole model."""
    import numpy as np
    from velollm_gguf import read_summary
    from velollm_gguf.compat import draft_kind, type_support
    from velollm_testkit.gguf_writer import finish_gguf, gguf_writer

    def model(name, arch="llama", tensors=(), **arrays):
        writer = gguf_writer(tmp_path / name, arch=arch)
        for key, value in arrays.items():
            writer.add_array(f"{arch}.{key}", value)
        for tensor in tensors:
            writer.add_tensor(tensor, np.zeros((4, 32), dtype=np.float16))
        return finish_gguf(writer)

    target = model("target.gguf")
    dflash = model("dflash.gguf", "dflash", target_layers=[0])
    dspark = model("dspark.gguf", "dflash", ["markov_w1.weight"], target_layers=[0])
    sidecar = model("mtp.gguf", "qwen35", ["blk.0.nextn.eh_proj.weight"])
    assert [draft_kind(read_summary(p)) for p in (dflash, dspark, sidecar, target)] == [
        "draft-dflash", "draft-dspark", "draft-mtp", "draft-simple"]
    support = type_support(target, dspark)
    assert support["draft-dspark"] is None and "draft-dspark drafter" in support["draft-dflash"]
    assert type_support(target, dflash, available=("ngram-mod",))["draft-dflash"] == "this llama-server build does not have it"

    # llama's graph records the inputs of layers 0..n_layer-1 only: a head reading layer n_layer aborts it.
    writer = gguf_writer(tmp_path / "two-layers.gguf", arch="llama")
    writer.add_uint32("llama.block_count", 2)
    two_layers = finish_gguf(writer)
    for layers, ok in (([0, 1], True), ([0, 2], False), ([-1, 1], False)):
        head = model(f"dflash-{layers[0]}-{layers[1]}.gguf", "dflash", target_layers=layers)
        why = type_support(two_layers, head)["draft-dflash"]
        assert (why is None) == ok and (ok or "the target's are 0-1" in why), (layers, why)


def test_the_draft_length_a_configuration_runs_with():
    from velollm_llamacpp.speculative import LlamaCppSpeculative

    spec = LlamaCppSpeculative()
    assert spec.draft_max(["draft-simple"], {"draft_max": 12}, ["--spec-draft-n-max", "16"]) == 12
    assert spec.draft_max(["ngram-mod"], {}, ["--spec-type", "ngram-mod", "--spec-ngram-mod-n-max", "8",
                                              "--spec-ngram-mod-n-min", "2", "--metrics"]) == 8
    assert spec.draft_max(["ngram-mod"], {}, ["--spec-ngram-mod-n-max=24"]) == 24
    assert spec.draft_max(["draft-simple"], {}, ["--draft-max", "16"]) == 16
    assert spec.draft_max(["draft-simple"], {}, []) == spec.default_draft_max  # a model draft's default
    # No length among the flags (a GPU build keeps llama.cpp's ngram-mod defaults): llama.cpp's own 64, so
    # the advisor is fitted at the length the server drafted (the H100 run had fitted at none)
    assert spec.draft_max(["ngram-mod"], {}, ["--spec-type", "ngram-mod", "--metrics"]) == 64
    assert spec.draft_max(["ngram-mod"], {}, ["--metrics", "--draft-max", "²"]) == 64
    assert spec.draft_max(["ngram-simple"], {}, ["--spec-type", "ngram-simple"]) is None


def test_search_grid_measures_each_setting_once_and_checks_the_advisor_on_held_out_points(spec_backend, tmp_path):
    """Successive halving on the real server: the defaults and the grid (a grid point equal to the
    defaults measured once), rounds that halve and double, the advisor fitted at the defaults and
    set beside a draft length measured on its own, the best per suite."""
    out = tmp_path / "search.json"
    proc = velollm("speculative", "search", "--target", "gemma3-270m", "--draft", "ngram", "--suite", "quote_answer",
                   "--draft-max", "4,8", "--ngram-match", "8", "--max-tokens", "48", "--warmup", "0",
                   "--threads", "2", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["status"] == "complete" and report["servers"] == 3 + 2
    # ngram-mod's CPU defaults are draft max 8, match 8: that grid point is the defaults, measured once.
    assert [c["name"] for c in report["candidates"]] == ["ngram-mod defaults", "ngram-mod draft-max 4 ngram-match 8"]
    assert [(r["round"], r["iterations"], len(r["candidates"])) for r in report["rounds"]] == [(1, 1, 2), (2, 2, 1)]
    assert report["best"]["name"] == next(iter(report["rounds"][1]["candidates"]))
    assert report["best"]["speedup"] > 0 and report["per_suite"]["quote_answer"]["advice"] in ("on", "off", "unsure")
    advisor = report["advisor"]
    assert advisor["fitted_at"]["basis"] == "fit" and advisor["fitted_at"]["draft_max"] == 8
    # Fitted where the defaults had the most runs: round 2 if they survived round 1, else round 1.
    survived = "ngram-mod defaults" in report["rounds"][1]["candidates"]
    assert (advisor["fitted_at"]["round"], advisor["fitted_at"]["iterations"]) == ((2, 2) if survived else (1, 1))
    (held_out,) = advisor["held_out"]
    assert held_out["basis"] == "predicted" and held_out["draft_max"] == 4 and held_out["measured_speedup"] > 0
    assert held_out["error"] == pytest.approx(held_out["predicted_speedup"] / held_out["measured_speedup"] - 1)
    assert advisor["pick"]["draft_max"] in (4, 8) and advisor["pick_vs_best"] > 0
    assert "advisor's pick" in proc.stdout and "best measured" in proc.stdout


def test_search_grid_and_bad_axes():
    from velollm_llamacpp.speculative import LlamaCppSpeculative

    from velollm_core.speculative.search import Candidate, grid

    found = grid([["ngram-mod"], ["draft-simple"]], LlamaCppSpeculative.knobs, draft_maxes=(4, 8),
                 values={"ngram_match": (6,), "p_min": (0.5, 0.9)})
    assert found[0] == Candidate(("ngram-mod",)) and found[0].name == "ngram-mod defaults"
    assert [c.name for c in found[1:3]] == ["ngram-mod draft-max 4 ngram-match 6", "ngram-mod draft-max 8 ngram-match 6"]
    assert "draft-simple draft-max 8 p-min 0.9" in [c.name for c in found] and len(found) == 1 + 2 + 4
    proc = velollm("speculative", "search", "--target", "gemma3-270m", "--draft", "ngram", "--draft-max", "4,x")
    assert proc.returncode == 2 and "whole numbers" in proc.stderr and "Traceback" not in proc.stderr


def test_a_step_faster_than_its_parts_scales_them_and_never_predicts_below_zero():
    """Costs timed under other load than the runs: the measured step is shorter than the model's parts.
    A negative overhead would make short drafts cost less than nothing (predictions of -120x were
    printed); the parts are scaled instead, and every prediction stays a positive speedup."""
    from velollm_core.speculative.advisor import calibrate

    costs = {"target_token_ms": 40.0, "draft_token_ms": 0.0, "verify_ms": {1: 45.0, 4: 60.0, 8: 90.0},
             "sampling_ms": 5.0, "plain_ms": 45.0, "drafting_share": 0.5}
    modelled = step_ms(costs, 8, 4.0)
    fitted = calibrate(costs, modelled / 3, 8, 4.0)
    assert fitted["step_overhead_ms"] == 0 and fitted["step_scale"] == pytest.approx(1 / 3)
    assert step_ms(fitted, 8, 4.0) == pytest.approx(modelled / 3)
    advice = advise(fitted, Observation(generated=400, drafted=800, accepted=300), draft_max=8,
                    rates=[0.9, 0.8, 0.8, 0.7, 0.7, 0.6, 0.6, 0.6])
    assert all(row["predicted_speedup"] > 0 for row in advice["curve"])
    slower = calibrate(costs, modelled + 2.0, 8, 4.0)
    assert slower["step_overhead_ms"] == pytest.approx(2.0) and "step_scale" not in slower


def test_two_measured_draft_lengths_split_the_unexplained_time_per_step_and_per_drafted_token():
    """A server whose step costs llama-bench's batch plus 5 ms per step plus 0.5 ms per drafted token (the
    logits of every verified position): one measured length cannot tell those apart and misprices a long
    draft; two recover both, and the third length is predicted from them."""
    from velollm_core.speculative.advisor import calibrate

    costs = {"target_token_ms": 10.0, "draft_token_ms": 0.0, "sampling_ms": 1.0, "plain_ms": 11.0,
             "drafting_share": 0.8, "verify_ms": {1: 11.0, 8: 18.0, 16: 26.0, 32: 42.0}}

    def server_step(drafted, tokens, share=0.8):
        return step_ms({**costs, "drafting_share": share}, drafted, tokens) + 5.0 + 0.5 * share * drafted

    one = calibrate(costs, server_step(7.5, 6.0), 7.5, 6.0)
    two = calibrate(costs, server_step(7.5, 6.0), 7.5, 6.0,
                    second={"step_ms": server_step(14.0, 9.0, 0.75), "drafted": 14.0, "tokens_per_step": 9.0,
                            "drafting_share": 0.75})
    assert two["step_overhead_ms"] == pytest.approx(5.0) and two["drafted_overhead_ms"] == pytest.approx(0.5)
    assert two["calibrated"]["second"]["drafted"] == 14.0 and "drafted_overhead_ms" not in one
    truth = server_step(30.0, 12.0)
    assert step_ms(two, 30.0, 12.0) == pytest.approx(truth)
    assert step_ms(one, 30.0, 12.0) < truth - 5  # one length prices the long draft too cheap
    # a second step no slower than the model's parts falls back to the one-length fit
    fallback = calibrate(costs, server_step(7.5, 6.0), 7.5, 6.0,
                         second={"step_ms": 1.0, "drafted": 14.0, "tokens_per_step": 9.0, "drafting_share": 0.75})
    assert "drafted_overhead_ms" not in fallback and "second" not in fallback["calibrated"]


def test_the_share_of_text_left_to_plain_steps_sets_how_many_steps_draft_at_each_length():
    """n-gram drafting drafts only where the context matches: the share of tokens from plain steps, u,
    is measured and held; the share of *steps* that draft then falls as drafts grow (each covers more
    text)."""
    from velollm_core.speculative.advisor import per_step

    held = {"drafting_share": 0.7, "undrafted_share": 0.05}
    tokens, share = per_step(held, 7.0)  # 8 tokens per drafting step
    assert tokens == pytest.approx(1 / (0.05 + 0.95 / 8)) and share == pytest.approx((0.95 / 8) / (0.05 + 0.95 / 8))
    longer_tokens, longer_share = per_step(held, 14.0)
    assert longer_share < share and longer_tokens > tokens  # longer drafts: fewer of the steps draft
    assert per_step({"drafting_share": 0.7}, 7.0) == (pytest.approx(1 + 0.7 * 7.0), 0.7)  # u not measured
    assert per_step({"undrafted_share": 0.0}, 7.0) == (8.0, 1.0)  # every step drafts (a model draft, MTP)
