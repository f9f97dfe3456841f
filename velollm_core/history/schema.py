"""The history database's schema, as numbered migrations (``PRAGMA user_version`` holds the last applied).

A migration is a list of statements run in one transaction with the version bump: a process killed
in the middle leaves the previous version, whole. Never edit a released migration; append the next.
"""

from __future__ import annotations

MIGRATIONS: list[list[str]] = [
    # 1: results with their settings, environment and telemetry; runs, summary and load levels per side.
    [
        """CREATE TABLE results (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL CHECK (kind IN ('benchmark', 'speculative', 'verify')),
            status TEXT,
            started_at TEXT,
            finished_at TEXT,
            recorded_at TEXT NOT NULL,
            backend TEXT,
            backend_version TEXT,
            build_commit TEXT,
            model TEXT,
            machine TEXT,
            hostname TEXT,
            label TEXT,
            origin TEXT NOT NULL,
            sha256 TEXT NOT NULL UNIQUE,
            settings TEXT,
            environment TEXT,
            telemetry TEXT,
            headline REAL,
            document TEXT NOT NULL
        )""",
        "CREATE INDEX results_started ON results (started_at)",
        "CREATE INDEX results_model ON results (model, backend)",
        """CREATE TABLE runs (
            result_id INTEGER NOT NULL REFERENCES results (id) ON DELETE CASCADE,
            side TEXT NOT NULL,
            seq INTEGER NOT NULL,
            benchmark TEXT,
            iteration INTEGER,
            concurrency INTEGER,
            level TEXT,
            ttft_ms REAL,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            prompt_tokens_per_s REAL,
            decode_tokens_per_s REAL,
            client_decode_tokens_per_s REAL,
            total_ms REAL,
            PRIMARY KEY (result_id, side, seq)
        )""",
        """CREATE TABLE summary (
            result_id INTEGER NOT NULL REFERENCES results (id) ON DELETE CASCADE,
            side TEXT NOT NULL,
            suite TEXT NOT NULL,
            metric TEXT NOT NULL,
            mean REAL, median REAL, stdev REAL, min REAL, max REAL, n INTEGER,
            PRIMARY KEY (result_id, side, suite, metric)
        )""",
        """CREATE TABLE levels (
            result_id INTEGER NOT NULL REFERENCES results (id) ON DELETE CASCADE,
            side TEXT NOT NULL,
            seq INTEGER NOT NULL,
            key TEXT NOT NULL,
            profile TEXT,
            workload TEXT,
            concurrency INTEGER,
            rate REAL,
            completed INTEGER,
            failed INTEGER,
            request_throughput REAL,
            output_throughput REAL,
            data TEXT NOT NULL,
            PRIMARY KEY (result_id, side, seq)
        )""",
    ],
]

LATEST = len(MIGRATIONS)
