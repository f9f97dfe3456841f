"""Tuning llama-server for a load: the steps this build offers rewrite the flags as they say, and
`velollm optimize --for-concurrency N --verify` measures them A/B on the real server within its budget
(after the first, a step is tried only when the budget left covers its rounds at the pace so far)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from velollm_llamacpp.tune_load import load_steps, set_values, value_of, without

FLAGS = frozenset({"-fa", "--kv-unified", "-ub", "-ctk", "-c", "--poll", "--threads-http"})


def steps_by_name(flags=FLAGS):
    return {step.name: step for step in load_steps(flags, 8, 512, 128)}


def test_a_flag_is_replaced_in_any_spelling_and_switches_take_no_value():
    args = ["-c", "4096", "--flash-attn", "auto", "--kv-unified", "-ub=256", "-t", "2"]
    assert without(args, ("-fa", "--flash-attn")) == ["-c", "4096", "--kv-unified", "-ub=256", "-t", "2"]
    assert value_of(args, "-ub") == "256" and value_of(args, "-fa") == "auto" and value_of(args, "-b") is None
    assert set_values(args, fa="on", ub="512") == ["-c", "4096", "--kv-unified", "-t", "2", "-fa", "on",
                                                    "-ub", "512"]


def test_each_step_makes_its_change_and_none_where_it_is_already_made():
    steps = steps_by_name()
    assert steps["-fa on"].apply(["-fa", "on"]) is None
    assert steps["-fa on"].apply(["-t", "2"]) == ["-t", "2", "-fa", "on"]
    toggle = steps["--kv-unified / --no-kv-unified"]
    assert toggle.apply(["-np", "8"]) == ["-np", "8", "--kv-unified"]
    assert toggle.apply(["-np", "8", "-kvu"]) == ["-np", "8", "--no-kv-unified"]
    # a quantized V cache needs flash attention: the step turns it on with the cache types
    assert steps["-ctk q8_0 -ctv q8_0"].apply(["-fa", "off"]) == ["-fa", "on", "-ctk", "q8_0", "-ctv", "q8_0"]
    # 8 slots of 512 + 128 tokens and 64 for the template, rounded up to 256: 8 x 768
    assert steps["-c 6144"].apply(["-c", "65536"]) == ["-c", "6144"]
    assert steps["--threads-http 8"].apply([]) == ["--threads-http", "8"]


def test_only_the_flags_this_build_lists_are_offered():
    assert list(steps_by_name(frozenset({"-fa", "--poll"}))) == ["-fa on", "--poll 0"]


@pytest.mark.llamacpp
def test_optimize_for_concurrency_measures_each_change_at_that_load_on_gemma(gemma, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "velollm_core", "optimize", "--backend", "llamacpp", "--model",
                           "gemma3-270m", "--for-concurrency", "2", "--workload", "pp16/tg4", "--budget", "120",
                           "--verify"], capture_output=True, text=True, timeout=900, check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (written,) = tmp_path.glob("velollm-optimize-*-load.json")
    report = json.loads(written.read_text())
    assert (report["concurrency"], report["workload"], report["budget_s"]) == (2, "pp16/tg4", 120)
    assert report["start_args"][report["start_args"].index("-np") + 1] == "2"  # the proposal for 2 slots
    tried = [step["name"] for step in report["steps"]]
    assert tried and set(tried).isdisjoint(report["untried"])
    for step in report["steps"]:
        if step["verdict"].startswith("the server did not start"):
            continue
        assert len(step["baseline_output_tokens_per_s"]) == len(step["candidate_output_tokens_per_s"]) == 3
        assert all(value > 0 for value in step["baseline_output_tokens_per_s"] + step["candidate_output_tokens_per_s"])
        assert step["kept"] == (step["effect"]["verdict"] == "better")
    kept = [arg for step in report["steps"] if step["kept"] for arg in step["args"]]
    assert report["command"][-len(report["final_args"]):] == report["final_args"]
    assert set(kept) <= set(report["final_args"])
    assert "command: " in proc.stdout and "each change A/B" in proc.stdout


def test_a_malformed_workload_is_refused_before_anything_runs():
    proc = subprocess.run([sys.executable, "-m", "velollm_core", "optimize", "--backend", "llamacpp",
                           "--for-concurrency", "4", "--workload", "pp12x", "--verify"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and "--workload 'pp12x'" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""
