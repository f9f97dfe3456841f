"""Fault suite: result documents and history ids from outside.

One validation (history/documents.py) serves ``history import``, the history's own writes, ``compare``
and ``report``: a document whose ``summary`` is a list, whose ``status`` is an object, that holds an
integer beyond 64 bits or a lone surrogate, is one sentence and exit 2 in each of them, never a
traceback; a document one of them accepts, the others accept too (property tests over mutated
documents). History ids are ASCII digits, bounded: '²' and '١' are no ids, and no id is too large to
be refused in a sentence. Reports draw (or refuse in a sentence) values near the float range.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from velollm_testkit.fuzz import FUZZ, json_mutants

from velollm_core.contract.errors import UserInputError
from velollm_core.history import store

VELOLLM = [sys.executable, "-m", "velollm_core"]


def result(decode: list[float], **fields) -> dict:
    runs = [{"benchmark": "short_completion", "iteration": i + 1, "decode_tokens_per_s": value, "ttft_ms": 10.0 + i,
             "total_ms": 100.0 + i, "completion_tokens": 16} for i, value in enumerate(decode)]
    stats = {"mean": 10.0, "median": 10.0, "stdev": 0.1, "min": 9.9, "max": 10.1, "n": len(decode)}
    return {"status": "complete", "started_at": "2026-01-01T00:00:00+00:00", "settings": {"backend": "fake",
            "model": "m"}, "runs": runs, "summary": {"short_completion": {"decode_tokens_per_s": stats}},
            "levels": [{"key": "seq", "completed": len(decode)}], **fields}


def velollm(*args: str, db: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, store.HISTORY_DB_ENV: str(db)}
    return subprocess.run([*VELOLLM, *args], capture_output=True, text=True, timeout=120, check=False, env=env)


def one_sentence(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def db(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "history.db"
    monkeypatch.setenv(store.HISTORY_DB_ENV, str(path))
    return path


# -- one validation for import, compare and report -------------------------------------------------
HOSTILE = {
    "summary-list": (lambda d: {**d, "summary": []}, "summary"),
    "status-object": (lambda d: {**d, "status": {"x": 1}}, "status"),
    "int-beyond-64-bits": (lambda d: {**d, "levels": [{"key": "seq", "completed": 2**63}]}, "levels[0].completed"),
    "int-in-settings": (lambda d: {**d, "settings": {**d["settings"], "iterations": 10**30}}, "settings.iterations"),
    "lone-surrogate": (lambda d: {**d, "settings": {**d["settings"], "model": "m\ud800"}}, "settings.model"),
    "surrogate-key": (lambda d: {**d, "settings": {**d["settings"], "\udfff": 1}}, "not valid Unicode"),
    "negative-count": (lambda d: {**d, "runs": [{**d["runs"][0], "completion_tokens": -5}]}, "completion_tokens = -5"),
    "count-1e30": (lambda d: {**d, "runs": [{**d["runs"][0], "completion_tokens": 10**30}]}, "31-digit"),
    "summary-1.7e308": (lambda d: {**d, "summary": {"s": {"decode_tokens_per_s": {
        **d["summary"]["short_completion"]["decode_tokens_per_s"], "median": 1.7e308}}}}, "median of decode"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_import_compare_and_report_refuse_a_hostile_document_alike(case, tmp_path, db):
    change, fragment = HOSTILE[case]
    good = tmp_path / "good.json"
    good.write_text(json.dumps(result([10.0, 10.2, 9.9])))
    bad = tmp_path / "bad.json"
    # json.dumps writes a lone surrogate as the escape \ud800, as a hostile file would.
    bad.write_text(json.dumps(change(result([10.0, 10.2, 9.9]))))
    one_sentence(velollm("history", "import", str(bad), db=db), str(bad), fragment)
    assert not db.exists() or store.History(db).count() == 0
    one_sentence(velollm("compare", str(good), str(bad), db=db), str(bad))
    one_sentence(velollm("report", str(bad), "--format", "csv", db=db), str(bad))


def test_the_history_write_names_the_number_not_the_history(db, capsys):
    from velollm_core.history import record

    doc = result([10.0, 10.1])
    doc["levels"] = [{"key": "seq", "completed": 10**30}]
    assert record(doc) is None
    err = capsys.readouterr().err
    assert "levels[0].completed" in err and "31-digit" in err and "unusable" not in err, err


# -- history ids ------------------------------------------------------------------------------------
@pytest.mark.parametrize("ref", ["\u00b2", "\u0661", "\uff11", "1\u0661"])
def test_an_id_of_non_ascii_digits_is_no_id(ref, tmp_path, db):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(result([10.0, 10.2])))
    assert velollm("history", "import", str(path), db=db).returncode == 0
    one_sentence(velollm("history", "rm", ref, db=db), "is not a history id")
    with store.History(db) as history:
        assert history.count() == 1  # `history rm ١` removed #1 once
    assert store.parse_ref(ref) is None


@pytest.mark.parametrize("args", [("history", "rm", "99999999999999999999999"),
                                  ("history", "export", "#99999999999999999999999"),
                                  ("history", "label", "9223372036854775808", "x"),
                                  ("compare", "99999999999999999999999", "1")])
def test_an_id_beyond_64_bits_is_refused_in_one_sentence(args, tmp_path, db):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(result([10.0, 10.2])))
    assert velollm("history", "import", str(path), db=db).returncode == 0
    one_sentence(velollm(*args, db=db), "too large")


def test_the_largest_id_is_still_an_id():
    assert store.parse_ref(str(store.MAX_ID)) == store.MAX_ID and store.parse_ref("#12") == 12
    with pytest.raises(UserInputError):
        store.parse_ref(str(store.MAX_ID + 1))


# -- reports near the float range --------------------------------------------------------------------
def test_ticks_and_labels_of_values_near_the_float_range():
    from velollm_core.report.svg import fmt, nice_ticks

    for lo, hi in ((-1.7e308, 1.7e308), (1.7e308, 1.7e308), (0.0, 1.7e308), (-1.7e308, -1e308), (0.0, 1e-300)):
        ticks = nice_ticks(lo, hi)
        assert all(isinstance(t, float) and abs(t) <= sys.float_info.max for t in ticks), ticks
        assert ticks[0] <= lo and ticks[-1] >= min(hi, sys.float_info.max) and 2 <= len(ticks) <= 12, ticks
        assert all(fmt(t) for t in ticks)


# The formats VeloLLM ships; a plugin's (llama-bench's rows of pp/tg workloads) may have nothing to write.
BUILT_IN_FORMATS = ("html", "csv", "md", "jsonl")


def test_report_draws_telemetry_and_runs_near_the_float_range(tmp_path):
    from velollm_core.contract.formats import ReportSource, report_formats

    doc = result([10.0, 10.2, 9.9])
    doc["telemetry"] = {"series": {"devices": {"gpu0": {"t": [0.0, 1.0, 2.0], "power_w": [1.7e308, -1.7e308, 1e308]}},
                                   "server": {"t": [0.0, 1.7e308], "x": [1.0, 2.0]},
                                   "levels": [{"key": "seq", "start_s": -1.7e308, "end_s": 1.7e308}]}}
    doc["levels"] = [{"key": "c1", "concurrency": 1, "output_throughput": 1.7e308, "ttft_ms": {"median": -1.7e308}},
                     {"key": "c2", "concurrency": 2, "output_throughput": -1.7e308, "ttft_ms": {"median": 1.7e308}}]
    source = ReportSource(name="huge.json", kind="benchmark", data=doc, label="huge")
    for name, chosen in report_formats().items():
        assert chosen.render([source]) or name not in BUILT_IN_FORMATS, name  # a plugin's may have no rows


def test_report_of_a_verification_near_the_float_range(tmp_path):
    from velollm_core.contract.formats import ReportSource, report_formats

    verify = {"runtime": "llamacpp", "model": "m", "rounds": 2, "changes": [], "notes": [],
              "candidates": [{"name": "defaults", "args": [], "decode_tokens_per_s": [1.7e308, -1.7e308],
                              "prompt_tokens_per_s": [1.7e308, 1.7e308], "error": None}],
              "final": {"args": [], "measured_as": "defaults", "vs_defaults": {}}}
    source = ReportSource(name="v.json", kind="verify", data=verify, label="v")
    for name, chosen in report_formats().items():
        assert chosen.render([source]) or name not in BUILT_IN_FORMATS, name  # a plugin's may have no rows


def test_report_refuses_runs_beyond_measurement_in_one_sentence(tmp_path, db):
    path = tmp_path / "huge.json"
    path.write_text(json.dumps(result([1.7e308, -1.7e308, 1.7e308])))
    one_sentence(velollm("report", str(path), "--output", str(tmp_path / "r.html"), db=db), "beyond any measurement")


# -- properties over mutated documents ------------------------------------------------------------
SEED = result([10.0, 10.2, 9.9, 10.1])
READ = frozenset({"status", "summary", "runs", "levels", "settings", "decode_tokens_per_s", "completion_tokens",
                  "median", "n", "key", "completed", "telemetry", "model"})


def _accepted(document) -> bool:
    from velollm_core.history.documents import check_values, validate_document

    try:
        check_values(document, "doc")
        validate_document(document, "doc")
    except UserInputError as exc:
        message = str(exc)
        assert message.strip() and "\n" not in message.strip(), message
        return False
    return True


@FUZZ
@given(document=json_mutants(SEED, READ))
def test_a_document_import_accepts_compare_and_report_accept(document, tmp_path_factory):
    """Import, compare and report agree: what the one validation passes, each of them takes whole."""
    from velollm_core.contract.formats import ReportSource, report_formats
    from velollm_core.history.compare import compare_results
    from velollm_core.history.documents import benchmark_result

    if not _accepted(document):
        return
    with store.History(tmp_path_factory.mktemp("db") / "h.db") as history:
        history.add(document, origin="fuzz")
    compare_results(benchmark_result(SEED, "seed"), benchmark_result(document, "doc"))
    source = ReportSource(name="doc", kind="benchmark", data=document, label="doc")
    for chosen in report_formats().values():
        chosen.render([source])


@FUZZ
@given(value=st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**70), 2**70)),
       field=st.sampled_from(["decode_tokens_per_s", "ttft_ms", "completion_tokens", "prompt_tokens_per_s"]))
def test_any_number_in_a_run_is_stored_compared_and_reported_or_refused_in_one_sentence(value, field,
                                                                                         tmp_path_factory):
    document = result([10.0, 10.2, 9.9])
    document["runs"][1][field] = value
    test_a_document_import_accepts_compare_and_report_accept.hypothesis.inner_test(document, tmp_path_factory)


@pytest.mark.parametrize("args", [("history", "import", "{doc}", "--label", "\udcff"),
                                  ("history", "label", "1", "\udcfe"),
                                  ("history", "--model", "\udcfe"), ("history", "--machine", "x\udcfe")])
def test_command_line_bytes_that_are_not_utf8_are_one_sentence(args, tmp_path, db):
    """Python reads argv bytes that are not UTF-8 as lone surrogates; SQLite takes none."""
    path = tmp_path / "r.json"
    path.write_text(json.dumps(result([10.0, 10.2])))
    assert velollm("history", "import", str(path), db=db).returncode == 0
    argv = [os.fsencode(arg.replace("{doc}", str(path))) for arg in args]  # '\udcff' is the byte 0xff
    env = {**os.environ, store.HISTORY_DB_ENV: str(db)}
    proc = subprocess.run([*map(os.fsencode, VELOLLM), *argv], capture_output=True, text=True, timeout=60, check=False, env=env)
    one_sentence(proc, "not valid Unicode")
