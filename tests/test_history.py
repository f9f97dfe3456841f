"""The results history: SQLite for real (WAL, migrations), two writers at once, a writer SIGKILLed
mid-transaction, export byte for byte, filters and the 80-column list, secrets kept out, and
``velollm compare`` with history ids and ``--baseline``."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from velollm_testkit.plugin import BackendPlugin, FakeBackend

from velollm_core.bench.plan import BenchmarkPlan
from velollm_core.bench.runner import BenchmarkRunner
from velollm_core.bench.suites import get_suites
from velollm_core.history import store

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def db(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "history.db"
    monkeypatch.setenv(store.HISTORY_DB_ENV, str(path))
    return path


def velollm(*args: str, db: Path | str, columns: int = 80) -> subprocess.CompletedProcess:
    env = {**os.environ, store.HISTORY_DB_ENV: str(db), "COLUMNS": str(columns)}
    return subprocess.run([sys.executable, "-m", "velollm_core", *args], check=False, capture_output=True,
                          text=True, timeout=120, env=env)


def measured(speed: float, *, model: str = "/models/smollm2-135m.gguf", iterations: int = 3, jitter: float = 0.0,
             started_at: str | None = None) -> dict:
    """A benchmark the real engine ran over the test kit's FakeBackend (decode ``speed`` ± ``jitter``)."""
    from velollm_core.contract.plugins import load_plugins, pm

    class Jittery(FakeBackend):
        calls = 0

        def generate(self, request, context):
            timing = super().generate(request, context)
            Jittery.calls += 1
            wobble = jitter * (Jittery.calls % 3 - 1)
            timing.decode_tokens_per_s = timing.client_decode_tokens_per_s = speed + wobble
            return timing

    load_plugins()
    plugin = BackendPlugin(Jittery())
    pm.register(plugin, name=f"history-fake-{id(plugin)}")
    try:
        plan = BenchmarkPlan(backend="fake", model=model, suites=get_suites(["short_completion"]),
                             iterations=iterations, warmup=0, options={"tokens_per_s": speed})
        runner = BenchmarkRunner(plan)
        runner.run()
        doc = runner.result.model_dump(mode="json")
    finally:
        pm.unregister(plugin)
    doc["environment"]["hardware"] = {"os": {"system": "Linux", "release": "6", "machine": "x86_64"},
                                      "cpu": {"model": "Test CPU 9000", "flags": []},
                                      "memory": {"total_bytes": 1, "available_bytes": 1, "used_bytes": 0},
                                      "gpus": [{"vendor": "nvidia", "name": "NVIDIA H200", "source": "nvml"}]}
    if started_at:
        doc["started_at"] = started_at
    return doc


def write(path: Path, doc: dict, indent: int = 2) -> Path:
    path.write_text(json.dumps(doc, indent=indent) + "\n")
    return path


# -- storing and giving back ----------------------------------------------------------------------
def test_record_then_export_gives_the_result_file_byte_for_byte(db, tmp_path):
    from velollm_core.contract.files import atomic_write_json
    from velollm_core.history import record

    doc = measured(100.0)
    result_id = record(doc)
    assert result_id == 1
    atomic_write_json(tmp_path / "file.json", doc)  # what --output holds
    proc = velollm("history", "export", "1", db=db)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.encode() == (tmp_path / "file.json").read_bytes()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == store.LATEST
        assert conn.execute("SELECT count(*) FROM runs WHERE result_id = 1").fetchone()[0] == 3
        median = conn.execute("SELECT median FROM summary WHERE suite = 'short_completion' "
                              "AND metric = 'decode_tokens_per_s'").fetchone()[0]
        assert median == 100.0
        machine, settings = conn.execute("SELECT machine, settings FROM results").fetchone()
        assert machine == "Test CPU 9000 + NVIDIA H200" and json.loads(settings)["backend"] == "fake"


def test_import_keeps_any_formatting_and_is_idempotent(db, tmp_path):
    doc = measured(90.0)
    doc["settings"]["note"] = "Zürich ✓"
    odd = write(tmp_path / "odd.json", doc, indent=4)
    first = velollm("history", "import", str(odd), "--label", "before-upgrade", db=db)
    again = velollm("history", "import", str(odd), db=db)
    assert first.returncode == again.returncode == 0, first.stderr + again.stderr
    assert first.stdout.strip().endswith("-> #1") and "already there" in again.stdout
    out = tmp_path / "back.json"
    assert velollm("history", "export", "latest", "--output", str(out), db=db).returncode == 0
    assert out.read_bytes() == odd.read_bytes()


def test_import_refuses_what_is_no_result_and_imports_nothing(db, tmp_path):
    good = write(tmp_path / "good.json", measured(90.0))
    other = write(tmp_path / "detect.json", {"os": {}, "cpu": {}, "gpus": []})
    broken = tmp_path / "broken.json"
    broken.write_text('{"runs": [')
    for bad in (other, broken, tmp_path / "missing.json"):
        proc = velollm("history", "import", str(good), str(bad), db=db)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert not db.exists() or store.History(db).count() == 0


def test_speculative_and_verify_documents_are_stored_with_their_sides(db):
    from velollm_core.history import record

    vanilla, spec = measured(50.0), measured(80.0)
    doc = {"status": "complete", "started_at": vanilla["started_at"], "target": "/m/target.gguf",
           "draft": "/m/draft.gguf", "settings": {"draft_max": 8}, "vanilla": vanilla, "speculative": spec,
           "per_suite": {}, "speedup": 1.6, "acceptance_rate": 0.7, "outputs_identical": True, "differences": []}
    verify = {"runtime": "llamacpp", "model": "/m/target.gguf", "rounds": 3, "elapsed_s": 1.0,
              "candidates": [{"name": "defaults", "args": [], "decode_tokens_per_s": [10.0, 11.0],
                              "prompt_tokens_per_s": [50.0, 52.0], "error": None}],
              "changes": [], "final": {"args": [], "measured_as": "x",
                                       "vs_defaults": {"decode_tokens_per_s": {"ratio": 1.12}}},
              "proposal": {}, "notes": []}
    spec_id, verify_id = record(doc, kind="speculative"), record(verify, kind="verify")
    with store.History(db) as history:
        assert len(history.runs(spec_id, "vanilla")) == 3 and len(history.runs(spec_id, "speculative")) == 3
        entries = {e["id"]: e for e in history.find()}
    assert entries[spec_id]["model"] == "/m/target.gguf" and entries[spec_id]["headline"] == 1.6
    assert entries[spec_id]["backend"] == "fake" and entries[verify_id]["backend"] == "llamacpp"
    assert entries[verify_id]["headline"] == 1.12 and entries[verify_id]["kind"] == "verify"


# -- listing --------------------------------------------------------------------------------------
def test_list_filters_and_fits_80_columns(db, tmp_path):
    docs = [("a", measured(100.0, started_at="2026-11-30T09:00:00+00:00")),
            ("b", measured(90.0, model="/very/long/path/to/models/llama-3.2-1b-instruct-q4_k_m.gguf",
                           started_at="2026-12-01T10:00:00+00:00")),
            ("c", measured(95.0, started_at="2026-12-02T11:00:00+00:00"))]
    docs[2][1]["environment"]["hardware"]["cpu"]["model"] = "Other CPU"
    paths = [write(tmp_path / f"{name}.json", doc) for name, doc in docs]
    assert velollm("history", "import", *map(str, paths[:2]), "--label", "old build", db=db).returncode == 0
    assert velollm("history", "import", str(paths[2]), db=db).returncode == 0

    def ids(*args: str) -> list[int]:
        proc = velollm("history", "--json", *args, db=db)
        assert proc.returncode == 0, proc.stderr
        return [entry["id"] for entry in json.loads(proc.stdout)["results"]]

    assert ids() == [3, 2, 1]  # newest first
    assert ids("--model", "LLAMA-3.2") == [2]
    assert ids("--machine", "other cpu") == [3] and ids("--machine", "H200") == [3, 2, 1]
    assert ids("--since", "2026-12-01") == [3, 2] and ids("--until", "2026-12-01") == [2, 1]
    assert ids("--label", "old") == [2, 1] and ids("--backend", "fake", "--limit", "1") == [3]
    assert ids("--backend", "ollama") == []
    assert velollm("history", "--since", "yesterday", db=db).returncode == 2
    for columns in (80, 120):
        table = velollm("history", db=db, columns=columns)
        assert table.returncode == 0, table.stderr
        *lines, footer = table.stdout.splitlines()  # the footer names the database file: a path of any length
        assert max(map(len, lines)) <= columns and footer.startswith("3 result(s) in "), table.stdout
        assert "old build" in table.stdout and "100.0 tok/s" in table.stdout
    assert velollm("history", "label", "3", "new build", db=db).returncode == 0
    assert ids("--label", "new") == [3]
    # A long label (with brackets rich would take for markup) moves under the model: still 80 columns.
    assert velollm("history", "label", "2", "[rc] after the llama.cpp upgrade, fans loud", db=db).returncode == 0
    table = velollm("history", db=db, columns=80)
    *lines, _ = table.stdout.splitlines()
    assert max(map(len, lines)) <= 80 and "[rc] after the" in table.stdout, table.stdout
    assert velollm("history", "rm", "1", db=db).returncode == 0 and ids() == [3, 2]
    missing = velollm("history", "export", "99", db=db)
    assert missing.returncode == 2 and "no result #99" in missing.stderr


def test_history_switched_off_records_nothing(tmp_path, monkeypatch, capsys):
    from velollm_core.history import record

    monkeypatch.setenv(store.HISTORY_DB_ENV, "off")
    assert record(measured(10.0)) is None
    assert capsys.readouterr().err == ""
    proc = velollm("history", db="off")
    assert proc.returncode == 2 and "switched off" in proc.stderr


def test_record_never_raises_and_warns_once(tmp_path, monkeypatch, capsys):
    from velollm_core import history

    monkeypatch.setattr(history, "_warned", False)
    not_sqlite = tmp_path / "notes.db"
    not_sqlite.write_text("these are my notes, not a database\n" * 100)
    for target in (not_sqlite, tmp_path):  # a foreign file, then a directory
        monkeypatch.setenv(store.HISTORY_DB_ENV, str(target))
        assert history.record(measured(10.0)) is None
    err = capsys.readouterr().err
    assert err.count("warning: not recorded in the results history") == 1, err
    assert not_sqlite.read_text().startswith("these are my notes")


def test_a_newer_schema_is_refused_untouched(db):
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE future (x)")
        conn.execute(f"PRAGMA user_version = {store.LATEST + 1}")
    with pytest.raises(store.HistoryError, match="newer than this velollm knows"):
        store.History(db)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == store.LATEST + 1
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'results'").fetchone() is None


# -- secrets --------------------------------------------------------------------------------------
SECRETS = ("hunter2", "sk-live-111", "sk-live-222", "sk-live-333", "sk-live-444")


def leaky(doc: dict) -> dict:
    doc["settings"]["host"] = "http://admin:hunter2@127.0.0.1:8080/v1?api_key=sk-live-111"
    doc["settings"]["options"] = {"api_key": "sk-live-222", "server_args": "--api-key sk-live-333 -t 2",
                                  "api_key_env": "OPENAI_API_KEY"}
    doc["environment"]["backend"]["server_flags"] = ["--api-key", "sk-live-444", "--port", "8080"]
    return doc


def test_secrets_never_reach_the_database(db, tmp_path):
    from velollm_core.history import record

    record(leaky(measured(10.0)))
    path = write(tmp_path / "leaky.json", leaky(measured(11.0)))
    proc = velollm("history", "import", str(path), db=db)
    assert proc.returncode == 0 and "secrets removed" in proc.stdout, proc.stderr
    raw = b"".join(p.read_bytes() for p in db.parent.glob("history.db*"))  # the WAL too
    with sqlite3.connect(db) as conn:
        dump = "\n".join(conn.iterdump())
    for secret in SECRETS:
        assert secret.encode() not in raw and secret not in dump
    exported = json.loads(velollm("history", "export", "2", db=db).stdout)
    assert exported["settings"]["options"]["api_key"] == "***"
    assert exported["settings"]["options"]["api_key_env"] == "OPENAI_API_KEY"  # a variable's name is kept
    assert exported["settings"]["host"] == "http://***@127.0.0.1:8080/v1?api_key=***"


# -- concurrency and crashes ----------------------------------------------------------------------
_WRITER = """
import json, sys, time
from pathlib import Path
from velollm_core.history import record
doc = json.loads(Path(sys.argv[1]).read_text())
start = Path(sys.argv[2])
while not start.exists():
    time.sleep(0.001)
for i in range(int(sys.argv[3])):
    doc["started_at"] = f"2026-12-02T10:{i // 60:02d}:{i % 60:02d}+00:00"
    doc["settings"]["writer"] = sys.argv[4]
    assert record(doc) is not None
"""


def test_two_writers_at_once_lose_nothing(db, tmp_path):
    doc = measured(100.0, iterations=40)  # a bigger transaction: more overlap between the writers
    path = write(tmp_path / "doc.json", doc)
    script, start, per_writer = tmp_path / "writer.py", tmp_path / "go", 30
    script.write_text(_WRITER)
    env = {**os.environ, store.HISTORY_DB_ENV: str(db)}
    writers = [subprocess.Popen([sys.executable, str(script), str(path), str(start), str(per_writer), name],
                                env=env, stderr=subprocess.PIPE, text=True) for name in ("one", "two")]
    time.sleep(1.0)  # both imported and waiting
    start.touch()
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0 and "warning" not in err, err
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        counts = dict(conn.execute("SELECT json_extract(settings, '$.writer'), count(*) FROM results GROUP BY 1"))
        assert counts == {"one": per_writer, "two": per_writer}
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 2 * per_writer * 40


_KILLED = """
import json, sys, time
from pathlib import Path
from velollm_core.history import record, store
doc = json.loads(Path(sys.argv[1]).read_text())
real = store.run_rows
def paused(result_id, side, runs):
    for i, row in enumerate(real(result_id, side, runs)):
        if i == len(runs) // 2:  # half the runs inserted, inside the transaction
            print("mid-write", flush=True)
            time.sleep(600)
        yield row
store.run_rows = paused
doc["started_at"] = "2026-12-02T11:00:00+00:00"
record(doc)
"""


def test_a_writer_killed_mid_transaction_leaves_the_database_whole(db, tmp_path):
    from velollm_core.history import record

    doc = measured(100.0, iterations=20)
    assert record(doc) == 1
    path = write(tmp_path / "doc.json", doc)
    script = tmp_path / "killed.py"
    script.write_text(_KILLED)
    child = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, store.HISTORY_DB_ENV: str(db)})
    try:
        assert child.stdout.readline().strip() == "mid-write"
        with pytest.raises(sqlite3.OperationalError, match="locked"):  # it holds the write lock: mid-transaction
            sqlite3.connect(db, timeout=0, isolation_level=None).execute("BEGIN IMMEDIATE")
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
    with store.History(db) as history:  # opens, recovers, takes new writes
        assert history.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert [e["id"] for e in history.find()] == [1]
        assert history.db.execute("SELECT count(*) FROM runs").fetchone()[0] == 20  # none of the killed one's
        assert history.document(1) == store.document_text(doc)
    doc["started_at"] = "2026-12-02T12:00:00+00:00"
    assert record(doc) == 2


# -- compare with history ids and --baseline ----------------------------------------------------
def test_compare_takes_history_ids(db, tmp_path):
    from velollm_core.history import record

    a, b = measured(100.0, jitter=1.0), measured(80.0, jitter=1.0)
    record(a)
    record(b)
    file_a = write(tmp_path / "a.json", a)
    for args in (("1", "2"), (str(file_a), "#2")):
        proc = velollm("compare", *args, "--json", db=db)
        assert proc.returncode == 0, proc.stderr
        rows = {row["metric"]: row for row in json.loads(proc.stdout)["rows"]}
        assert rows["decode_tokens_per_s"]["verdict"] == "worse"
        assert rows["decode_tokens_per_s"]["ratio"] == pytest.approx(0.8, rel=0.02)
    one = velollm("compare", "1", db=db)
    assert one.returncode == 2 and "--baseline" in one.stderr


def test_baseline_flags_a_regression_beyond_run_to_run_noise(db, tmp_path):
    from velollm_core.history import record

    # Five earlier runs of one setup whose medians wander by up to 3% between runs.
    for i, speed in enumerate((100.0, 103.0, 98.0, 101.0, 99.5)):
        record(measured(speed, jitter=0.5, started_at=f"2026-12-01T0{i}:00:00+00:00"))
    other_machine = measured(60.0, jitter=0.5, started_at="2026-12-01T06:00:00+00:00")
    other_machine["environment"]["hardware"]["cpu"]["model"] = "Slow CPU"
    record(other_machine)  # never a baseline for this machine

    # 2% slower: beyond the within-run bootstrap, but inside how far runs wander: no regression.
    drift = write(tmp_path / "drift.json", measured(98.0, jitter=0.5, started_at="2026-12-02T00:00:00+00:00"))
    proc = velollm("compare", "--baseline", str(drift), db=db)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no regression beyond noise" in proc.stdout and "spread of 5 baseline results" in proc.stdout

    slow = write(tmp_path / "slow.json", measured(85.0, jitter=0.5, started_at="2026-12-02T01:00:00+00:00"))
    proc = velollm("compare", "--baseline", str(slow), "--json", db=db)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    decode = next(r for r in report["rows"] if r["metric"] == "decode_tokens_per_s")
    assert decode["regression"] and decode["baselines"] == 5 and decode["a_median"] == pytest.approx(100.0)
    assert report["a"] == "#5,#4,#3,#2,#1" and report["regressions"] >= 1

    explicit = velollm("compare", "--baseline", "1", str(slow), db=db)
    assert explicit.returncode == 1 and "REGRESSION short_completion decode_tokens_per_s" in explicit.stdout

    lonely = write(tmp_path / "lonely.json", measured(85.0, model="/m/other.gguf"))
    proc = velollm("compare", "--baseline", str(lonely), db=db)
    assert proc.returncode == 2 and "no earlier complete benchmark" in proc.stderr


def test_optimize_verify_records_its_benchmarks(db, tmp_path, fake_backend, monkeypatch):
    """``optimize --verify`` (no plugin verifier) runs the current-settings benchmark: it lands in the history."""
    from velollm_core.tune.commands import _run_benchmark

    monkeypatch.chdir(tmp_path)
    _run_benchmark("fake", "/m/model.gguf", None, tmp_path / "velollm-optimize-20261202-101010-before.json")
    with store.History(db) as history:
        (entry,) = history.find()
    assert entry["label"] == "optimize --verify: before" and entry["backend"] == "fake" and entry["headline"] == 100.0
