"""The results history: one SQLite database (stdlib ``sqlite3``, WAL) of every benchmark, speculative
bench and verification, at ``$VELOLLM_HISTORY_DB`` or the user data folder.

Each result is one row of ``results`` (what the list filters on, the settings, environment and
telemetry as JSON, and the whole document as it was written) and its runs, summary and load levels
in their own tables, all written in one transaction: two writers at once wait for each other (WAL,
``BEGIN IMMEDIATE``, a busy timeout), and a writer killed mid-way leaves nothing of its result.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import sqlite3
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from velollm_core.contract.errors import UserInputError, VeloError
from velollm_core.contract.jsontext import dig
from velollm_core.history.documents import check_text, parse_document, read_document, validate_document
from velollm_core.history.schema import LATEST, MIGRATIONS
from velollm_core.history.secrets import scrub_document

HISTORY_DB_ENV = "VELOLLM_HISTORY_DB"
# Values of the variable that switch the history off (tests, a read-only home, no wish to keep one).
OFF_VALUES = frozenset({"off", "none", "0", "false", "no", "disabled"})
# A second writer waits this long for the first one's transaction (a big result takes milliseconds).
BUSY_TIMEOUT_S = 60.0
_RUN_COLUMNS = ("benchmark", "iteration", "concurrency", "level", "ttft_ms", "prompt_tokens", "completion_tokens",
                "prompt_tokens_per_s", "decode_tokens_per_s", "client_decode_tokens_per_s", "total_ms")
_STAT_COLUMNS = ("mean", "median", "stdev", "min", "max", "n")
_LIST_COLUMNS = ("id", "kind", "status", "started_at", "finished_at", "recorded_at", "backend", "backend_version",
                 "build_commit", "model", "machine", "hostname", "label", "origin", "headline")


class HistoryError(VeloError):
    """The database cannot be opened or written (exit 1); ``record`` turns it into one warning."""


def default_path() -> Path:
    from platformdirs import user_data_path

    return user_data_path("velollm") / "history.db"


def db_path() -> Path | None:
    """``$VELOLLM_HISTORY_DB`` (a file; ``off`` switches the history off: None), else the default."""
    value = os.environ.get(HISTORY_DB_ENV)
    if value is None or not value.strip():
        return default_path()
    if value.strip().lower() in OFF_VALUES:
        return None
    return Path(value).expanduser()


def document_text(document: Any) -> str:
    """The JSON text of a document exactly as ``files.atomic_write_json`` writes it to ``--output``."""
    return json.dumps(document, indent=2, sort_keys=False, allow_nan=False) + "\n"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def machine_of(environment: Any) -> str | None:
    """'CPU model + GPU names' from a result's environment: what ``--machine`` matches."""
    hardware = dig(environment, "hardware")
    if not isinstance(hardware, dict):
        return None
    parts = [str(dig(hardware, "cpu", "model") or "unknown CPU")]
    gpus = [str(gpu.get("name")) for gpu in hardware.get("gpus") or [] if isinstance(gpu, dict)
            and gpu.get("vendor") in ("nvidia", "amd", "apple", "intel") and gpu.get("name")]
    return " + ".join([*parts, *gpus])


def headline_of(kind: str, document: dict) -> float | None:
    """One number for the list: median decode tok/s over single-stream suites (a sweep's ``@c1``), the speedup, or the
    verified proposal's decode ratio."""
    if kind == "speculative":
        value = document.get("speedup")
    elif kind == "verify":
        value = dig(document, "final", "vs_defaults", "decode_tokens_per_s", "ratio")
    else:
        medians = [dig(metrics, "decode_tokens_per_s", "median") for suite, metrics in
                   (document.get("summary") or {}).items() if "@" not in suite or suite.endswith("@c1")]
        medians = [m for m in medians if isinstance(m, (int, float))]
        value = statistics.median(medians) if medians else None
    return float(value) if isinstance(value, (int, float)) else None


@dataclass
class Added:
    id: int
    new: bool  # False: the same document was already stored (as this id)
    scrubbed: bool  # secrets were removed before storing: the stored text differs from the input


def _sides(kind: str, document: dict) -> list[tuple[str, dict]]:
    """(side, benchmark-shaped result) pairs whose runs, summary and levels get their own rows."""
    if kind == "speculative":
        return [(side, document[side]) for side in ("vanilla", "speculative") if isinstance(document.get(side), dict)]
    if kind == "benchmark":
        return [("", document)]
    return []


def _json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(value, allow_nan=False)


def _number(value: Any) -> Any:
    """A number for a REAL or INTEGER column; None for anything else, an integer beyond SQLite's 64 bits included."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if not isinstance(value, int) or -(2**63) <= value < 2**63 else None


# SQLite's primary result codes for a disk that is full or failing, or a file beside the database (the
# WAL's -wal and -shm) that cannot be created: the database itself may be perfectly healthy.
_DISK_ERRORS = {10: "SQLITE_IOERR", 13: "SQLITE_FULL", 14: "SQLITE_CANTOPEN"}


def _open_error(path: Path, exc: sqlite3.DatabaseError) -> HistoryError:
    """The one sentence for a history that cannot be opened: a disk problem is worded as one (freeing
    space fixes it; deleting the file would lose a healthy history), damage as damage."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in _DISK_ERRORS:
        return HistoryError(f"cannot open the results history {path}: {exc}; is its disk full? SQLite needs room "
                            f"beside it for {path.name}-wal and {path.name}-shm: free some space and try again "
                            "(the database itself is not reported damaged)")
    return HistoryError(f"the results history {path} is unusable: {exc}")


# When a result ran (an imported one without started_at: when it was recorded), for filters and order.
_STARTED = "coalesce(started_at, recorded_at)"


class History:
    """An open history database; ``with History(path) as history: ...`` closes it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are ours (BEGIN IMMEDIATE ... COMMIT), none implicit.
            self.db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise HistoryError(f"cannot open the results history {self.path}: {exc}") from None
        try:
            self.db.row_factory = sqlite3.Row
            mode = self._wal()
            if mode != "wal":  # a file system without shared memory (some network mounts)
                raise HistoryError(f"the results history {self.path} cannot use WAL here (journal mode {mode})")
            # FULL: a committed result is on disk before record() returns, not only in the WAL.
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise _open_error(self.path, exc) from None
        except BaseException:
            self.db.close()
            raise

    def _wal(self) -> str:
        """Switch to WAL once per file. The switch takes an exclusive lock without waiting on the busy
        timeout (two processes opening a new file at once: 'database is locked'), so it is retried."""
        import time

        mode = self.db.execute("PRAGMA journal_mode").fetchone()[0]
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while mode != "wal":
            try:
                mode = self.db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        return mode

    def __enter__(self) -> History:  # noqa: PYI034 - returns self
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    # -- schema ------------------------------------------------------------------------------------
    def version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        if self.version() == LATEST:
            return
        self.db.execute("BEGIN IMMEDIATE")  # the write lock first: two new processes migrate once
        try:
            version = self.version()
            if version > LATEST:
                raise HistoryError(f"the results history {self.path} has schema version {version}, newer than "
                                   f"this velollm knows ({LATEST}): upgrade velollm, or point "
                                   f"{HISTORY_DB_ENV} at another file")
            for number in range(version + 1, LATEST + 1):
                for statement in MIGRATIONS[number - 1]:
                    self.db.execute(statement)
            self.db.execute(f"PRAGMA user_version = {LATEST}")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    # -- writing -----------------------------------------------------------------------------------
    def add(self, document: Any, *, kind: str | None = None, text: str | None = None, origin: str = "recorded",
            label: str | None = None, hostname: str | None = None) -> Added:
        """Store one result document (``text``: the exact JSON text it came from, kept for export)."""
        # Whatever the source (a file, a finished run), the one validation of result documents: a
        # number or text the database cannot hold is refused naming its place, never a database error.
        kind = validate_document(document, "the result" if origin == "recorded" else origin, kind)
        check_text(label, "the label")
        clean = scrub_document(document)
        scrubbed = clean != document
        if text is None or scrubbed:
            text = document_text(clean)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            found = self.db.execute("SELECT id FROM results WHERE sha256 = ?", (digest,)).fetchone()
            if found is not None:
                self.db.execute("ROLLBACK")
                return Added(int(found[0]), new=False, scrubbed=scrubbed)
            result_id = self._insert(clean, kind, text, digest, origin, label, hostname)
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise
        return Added(result_id, new=True, scrubbed=scrubbed)

    def _insert(self, doc: dict, kind: str, text: str, digest: str, origin: str, label: str | None,
                hostname: str | None) -> int:
        first = dict(_sides(kind, doc)).get("vanilla", doc)  # a speculative bench: its vanilla side's facts
        settings = doc.get("settings")
        environment = first.get("environment")
        backend = dig(first, "settings", "backend") or (doc.get("runtime") if kind == "verify" else None)
        model = doc.get("target") if kind == "speculative" else doc.get("model") if kind == "verify" else \
            dig(doc, "settings", "model")
        label = label if label is not None else dig(doc, "settings", "label")
        telemetry = doc.get("telemetry") if kind != "speculative" else {
            side: result.get("telemetry") for side, result in _sides(kind, doc) if result.get("telemetry")} or None
        cursor = self.db.execute(
            "INSERT INTO results (kind, status, started_at, finished_at, recorded_at, backend, backend_version, "
            "build_commit, model, machine, hostname, label, origin, sha256, settings, environment, telemetry, "
            "headline, document) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (kind, doc.get("status") or ("complete" if kind == "verify" else None), doc.get("started_at"),
             doc.get("finished_at") or first.get("finished_at"), _now(), backend,
             dig(environment, "backend", "version"), dig(environment, "backend", "build_commit"),
             str(model) if model is not None else None, machine_of(environment), hostname,
             str(label) if label not in (None, "") else None, origin, digest, _json_or_none(settings),
             _json_or_none(environment), _json_or_none(telemetry), headline_of(kind, doc), text),
        )
        result_id = int(cursor.lastrowid)
        for side, result in _sides(kind, doc):
            self.db.executemany(
                f"INSERT INTO runs (result_id, side, seq, {', '.join(_RUN_COLUMNS)}) "
                f"VALUES (?, ?, ?{', ?' * len(_RUN_COLUMNS)})",
                run_rows(result_id, side, result.get("runs") or []))
            self.db.executemany(
                f"INSERT INTO summary (result_id, side, suite, metric, {', '.join(_STAT_COLUMNS)}) "
                f"VALUES (?, ?, ?, ?{', ?' * len(_STAT_COLUMNS)})",
                ((result_id, side, suite, metric, *(_number(stats.get(c)) for c in _STAT_COLUMNS))
                 for suite, metrics in (result.get("summary") or {}).items() if isinstance(metrics, dict)
                 for metric, stats in metrics.items() if isinstance(stats, dict)))
            self.db.executemany(
                "INSERT INTO levels (result_id, side, seq, key, profile, workload, concurrency, rate, completed, "
                "failed, request_throughput, output_throughput, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ((result_id, side, seq, str(level.get("key")), level.get("profile"), level.get("workload"),
                  _number(level.get("concurrency")), _number(level.get("rate")), _number(level.get("completed")),
                  _number(level.get("failed")), _number(level.get("request_throughput")),
                  _number(level.get("output_throughput")), json.dumps(level, allow_nan=False))
                 for seq, level in enumerate(result.get("levels") or []) if isinstance(level, dict)))
        return result_id

    def set_label(self, result_id: int, label: str | None) -> None:
        check_text(label, "the label")
        self._one(result_id)
        self.db.execute("UPDATE results SET label = ? WHERE id = ?", (label or None, result_id))

    def delete(self, result_id: int) -> None:
        self._one(result_id)
        self.db.execute("DELETE FROM results WHERE id = ?", (result_id,))  # runs, summary, levels cascade

    # -- reading -----------------------------------------------------------------------------------
    def _one(self, result_id: int) -> sqlite3.Row:
        row = self.db.execute(f"SELECT {', '.join(_LIST_COLUMNS)}, document FROM results WHERE id = ?",
                              (result_id,)).fetchone()
        if row is None:
            raise UserInputError(f"no result #{result_id} in the history ({self.path}); see `velollm history`")
        return row

    def entry(self, result_id: int) -> dict[str, Any]:
        """The list columns of one result."""
        row = self._one(result_id)
        return {column: row[column] for column in _LIST_COLUMNS}

    def document(self, result_id: int) -> str:
        """The JSON text of one result, exactly as it was recorded or imported."""
        return self._one(result_id)["document"]

    def latest_id(self) -> int:
        row = self.db.execute("SELECT max(id) FROM results").fetchone()
        if row[0] is None:
            raise UserInputError(f"the results history ({self.path}) is empty")
        return int(row[0])

    def find(self, *, model: str | None = None, backend: str | None = None, machine: str | None = None,
             since: str | None = None, until: str | None = None, label: str | None = None,
             kind: str | None = None, status: str | None = None, limit: int | None = 50) -> list[dict[str, Any]]:
        """Results newest first. ``model``/``machine``/``label``: case-insensitive substrings (machine also
        matches the host name); ``since``/``until``: ISO dates or times, ``until`` a date includes that day."""
        where, args = self._where(model=model, backend=backend, machine=machine, since=since, until=until,
                                  label=label, kind=kind, status=status)
        sql = f"SELECT {', '.join(_LIST_COLUMNS)} FROM results{where} ORDER BY {_STARTED} DESC, id DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [dict(row) for row in self.db.execute(sql, args)]

    def _where(self, *, model: str | None = None, backend: str | None = None, machine: str | None = None,
               since: str | None = None, until: str | None = None, label: str | None = None,
               kind: str | None = None, status: str | None = None) -> tuple[str, list[str]]:
        """The ``WHERE`` clause (or nothing) and its arguments for ``find``'s filters."""
        for option, value in (("--model", model), ("--backend", backend), ("--machine", machine), ("--since", since),
                              ("--until", until), ("--label", label)):
            check_text(value, option)
        where, args = [], []
        for column, value in (("model", model), ("label", label)):
            if value:
                where.append(f"instr(lower({column}), lower(?)) > 0")
                args.append(value)
        if machine:
            where.append("(instr(lower(machine), lower(?)) > 0 OR instr(lower(hostname), lower(?)) > 0)")
            args += [machine, machine]
        for column, value in (("backend", backend), ("kind", kind), ("status", status)):
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        if since:
            where.append(f"{_STARTED} >= ?")
            args.append(since)
        if until:
            where.append(f"{_STARTED} < ?")
            args.append(_after(until))
        return (" WHERE " + " AND ".join(where) if where else ""), args

    def count(self, **filters: str | None) -> int:
        """How many results match ``filters`` (``find``'s, without its limit); all of them without any."""
        where, args = self._where(**filters)
        return int(self.db.execute(f"SELECT count(*) FROM results{where}", args).fetchone()[0])

    def runs(self, result_id: int, side: str = "") -> list[dict[str, Any]]:
        return [dict(row) for row in self.db.execute(
            f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs WHERE result_id = ? AND side = ? ORDER BY seq",
            (result_id, side))]

    def baselines(self, entry: dict[str, Any], limit: int) -> list[int]:
        """Up to ``limit`` complete benchmarks started before ``entry`` (its own started_at excludes it),
        of the same backend, model and machine, newest first."""
        when = entry.get("started_at") or entry.get("recorded_at") or _now()
        rows = self.db.execute(
            "SELECT id FROM results WHERE kind = 'benchmark' AND status = 'complete' "
            "AND backend IS ? AND model IS ? AND machine IS ? AND coalesce(started_at, recorded_at) < ? "
            "ORDER BY coalesce(started_at, recorded_at) DESC, id DESC LIMIT ?",
            (entry.get("backend"), entry.get("model"), entry.get("machine"), when, limit))
        return [int(row[0]) for row in rows]


def run_rows(result_id: int, side: str, runs: list) -> Iterator[tuple]:
    """The ``runs`` table's rows of one side (a generator: executemany streams it)."""
    for seq, run in enumerate(runs):
        if isinstance(run, dict):
            yield (result_id, side, seq, *(run.get(c) if c in ("benchmark", "level") else _number(run.get(c))
                                           for c in _RUN_COLUMNS))


def _after(until: str) -> str:
    """The first instant after ``until``: a date (2026-12-02) covers its whole day."""
    try:
        day = _dt.date.fromisoformat(until)
    except ValueError:
        return until + "\uffff"  # a time: everything up to and including it, as text compares
    return (day + _dt.timedelta(days=1)).isoformat()


# SQLite's largest rowid: an id beyond it names no result.
MAX_ID = 2**63 - 1


def parse_ref(ref: str) -> int | str | None:
    """A history id ('12', '#12') or 'latest'; None when ``ref`` is neither (a file name, then).

    Ids are ASCII digits: ``str.isdigit`` also takes '²' and '١' (which int() reads as 1). An id
    beyond MAX_ID is a UserInputError.
    """
    text = ref.strip().removeprefix("#")
    if text.isascii() and text.isdigit():
        if len(text) > len(str(MAX_ID)) or int(text) > MAX_ID:
            raise UserInputError(f"history id {text[:24]}{'...' if len(text) > 24 else ''} is too large: "
                                 f"ids run from 1 to {MAX_ID}")
        return int(text)
    if text.lower() == "latest":
        return "latest"
    return None


def open_history(*, must_exist: bool = False) -> History:
    """The user's history database; a UserInputError when it is switched off (or absent, if ``must_exist``)."""
    path = db_path()
    if path is None:
        raise UserInputError(f"the results history is switched off ({HISTORY_DB_ENV}={os.environ[HISTORY_DB_ENV]})")
    if must_exist and not path.exists():
        raise UserInputError(f"no results history yet ({path}): a benchmark records one, or "
                             "`velollm history import FILE`")
    return History(path)


def load_ref(ref: str) -> tuple[str, str] | None:
    """(name, JSON text) of history ref ``ref`` ('12', '#12', 'latest'); None when it is no ref."""
    parsed = parse_ref(ref)
    if parsed is None:
        return None
    with open_history(must_exist=True) as history:
        result_id = history.latest_id() if parsed == "latest" else parsed
        return f"#{result_id}", history.document(result_id)


@dataclass(frozen=True)
class ResultDocument:
    """One result read from a file or the history: ``data`` is its parsed JSON, checked by ``check_values``;
    ``imported`` marks another tool's result, converted by its importer and already validated as a benchmark."""

    name: str
    data: Any
    imported: bool = False


def result_documents(ref: str, *, history: bool = True) -> list[ResultDocument]:
    """The results ``ref`` names: a result file (VeloLLM's: one document; another tool's that an importer
    reads: one per result) or, with ``history``, a history id ('12', '#12', 'latest'); a file wins over an
    id. One UserInputError sentence when it is neither, or cannot be read."""
    from velollm_core.history.peers import peer_documents

    path = Path(ref)
    imported = peer_documents(path) if path.is_file() else None
    if imported is not None:
        return [ResultDocument(name, data, imported=True) for name, data in imported]
    if path.exists() or not history:
        return [ResultDocument(ref, read_document(path)[1])]
    found = load_ref(ref)
    if found is None:
        raise UserInputError(f"result file not found: {ref}")
    name, text = found
    return [ResultDocument(name, parse_document(text, name))]
