"""Fault suite: ``velollm compare`` on hostile result files refuses them in one sentence (exit 2), and
its ``--json`` stays standard JSON (no bare NaN or Infinity)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

VELOLLM = [sys.executable, "-m", "velollm_core"]


def result(decode: list[float], **fields) -> dict:
    runs = [{"benchmark": "short_completion", "iteration": i + 1, "decode_tokens_per_s": value,
             "ttft_ms": 10.0 + i, "total_ms": 100.0 + i} for i, value in enumerate(decode)]
    return {"status": "complete", "started_at": "2025-01-01T00:00:00+00:00", "runs": runs,
            "summary": {"short_completion": {}}, **fields}


def write(path: Path, data: dict | str) -> Path:
    # json.dumps writes NaN and Infinity for non-finite floats, as a careless or hostile writer would.
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def compare(a: Path, b: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*VELOLLM, "compare", str(a), str(b), *args], capture_output=True, text=True,
                          timeout=60, check=False)


def strict_json(text: str):
    def refuse(constant: str):
        raise ValueError(f"not standard JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def good(tmp_path) -> Path:
    return write(tmp_path / "good.json", result([10.0, 11.0, 10.5]))


@pytest.mark.parametrize("name, content, fragment", [
    ("nan", result([float("nan"), 11.0, 10.5]), "has nan at runs[0].decode_tokens_per_s"),
    ("inf", result([10.0, float("inf"), 10.5]), "has inf at runs[1].decode_tokens_per_s"),
    ("neg-inf", result([10.0, 11.0, 10.5], roofline={"x": float("-inf")}), "has -inf at roofline.x"),
    ("overflow-literal", json.dumps(result([10.0, 11.0, 10.5])).replace("10.5", "1e999"), "has inf at runs[2]"),
    ("huge", result([1e308, 1e308, 1e308]), "has decode_tokens_per_s = 1e+308 in runs[0]"),
    ("huge-int", json.dumps(result([10.0, 11.0, 10.5])).replace('"ttft_ms": 10.0', '"prompt_tokens": 1' + "0" * 400
                                                                  + ', "ttft_ms": 10.0'),
     "has prompt_tokens = a 401-digit number in runs[0]"),
    ("tiny", result([1e-300, 11.0, 10.5]), "has decode_tokens_per_s = 1e-300 in runs[0]"),
    ("deep", "[" * 100_000 + "]" * 100_000, "nests JSON too deeply"),
    ("deep-inside", json.dumps(result([10.0, 11.0, 10.5], settings={"x": [[[[[[[[[[]]]]]]]]]]})).replace(
        "[[[[[[[[[[]]]]]]]]]]", "[" * 500 + "]" * 500), "nests JSON more than 64 levels deep (under 'settings')"),
    ("not-json", "{runs: [", "is not valid JSON"),
    ("array", "[1, 2]", "is not a VeloLLM benchmark result: it holds a JSON list"),
    ("detect-output", {"os": {}, "cpu": {}}, "is not a VeloLLM benchmark result (started_at: Field required)"),
    ("binary", "\udcff", "is not valid JSON"),
])
def test_hostile_result_is_refused_in_one_sentence(tmp_path, good, name, content, fragment):
    path = tmp_path / f"{name}.json"
    if content == "\udcff":
        path.write_bytes(b"\xff\xfe\x00garbage")
    else:
        write(path, content)
    for a, b in ((good, path), (path, good)):
        proc = compare(a, b, "--json")
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and proc.stdout == ""
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"Error: {path}"), proc.stderr
        assert fragment in lines[0], lines[0]


def test_missing_file(tmp_path, good):
    proc = compare(good, tmp_path / "nope.json")
    assert proc.returncode == 2 and proc.stderr.strip() == f"Error: result file not found: {tmp_path / 'nope.json'}"


def test_json_output_is_standard_json(tmp_path, good):
    other = write(tmp_path / "other.json", result([20.0, 21.0, 20.5]))
    proc = compare(good, other, "--json")
    assert proc.returncode == 0, proc.stderr
    rows = strict_json(proc.stdout)["rows"]
    decode = next(r for r in rows if r["metric"] == "decode_tokens_per_s")
    assert decode["verdict"] == "better" and decode["ratio"] == pytest.approx(20.5 / 10.5)


def test_zero_metrics_are_still_accepted(tmp_path, good):
    # 0 is no measurement of speed, but a file may carry it (a run that produced no token).
    zero = write(tmp_path / "zero.json", result([0.0, 11.0, 10.5]))
    proc = compare(good, zero, "--json")
    assert proc.returncode == 0, proc.stderr
    strict_json(proc.stdout)
