"""llama-bench's result files, both ways: VeloLLM results written as llama-bench writes them (the
``-o md`` table, and the ``-o json`` / ``-o jsonl`` rows that llama.cpp's
``scripts/compare-llama-bench.py`` reads), and llama-bench's JSON, JSONL, SQL and SQLite output
imported into VeloLLM's history (``velollm history import``).

llama-bench measures a prompt-processing test (``pp512``: n_prompt 512, n_gen 0) and a generation
test (``tg128``: n_prompt 0, n_gen 128) separately, each repeated; VeloLLM's workload ``pp512/tg128``
measures both in one request (the prompt's rate, then the decode rate after it). Imported, a
llama-bench run's pp and tg tests at one depth become one VeloLLM workload whose i-th run pairs the
i-th pp repetition with the i-th tg repetition; a test alone becomes ``ppN`` or ``tgN``. Written out,
a VeloLLM workload becomes one pp row and one tg row. llama-bench's tg starts from an empty context
where VeloLLM's decodes after its prompt: at 512 tokens of a small model the difference is within
noise on the machines measured, but it is a difference, and the rows say which tool measured them.
"""

from __future__ import annotations

import json
import re
import sqlite3
import statistics
from pathlib import Path
from typing import Any

from velollm_core.api import UserInputError, dig

TOOL = "llama-bench"
# The fields of a llama-bench row, in its order (llama-bench's test::get_fields(), as
# compare-llama-bench.py's LLAMA_BENCH_DB_FIELDS lists them), with samples_* that JSON adds.
FIELDS = (
    "build_commit", "build_number", "cpu_info", "gpu_info", "backends", "model_filename", "model_type",
    "model_size", "model_n_params", "n_batch", "n_ubatch", "n_threads", "cpu_mask", "cpu_strict", "poll",
    "type_k", "type_v", "n_gpu_layers", "split_mode", "main_gpu", "no_kv_offload", "flash_attn", "tensor_split",
    "tensor_buft_overrides", "load_mode", "embeddings", "no_op_offload", "n_prompt", "n_gen", "n_depth",
    "test_time", "avg_ns", "stddev_ns", "avg_ts", "stddev_ts", "n_cpu_moe", "fit_target", "fit_min_ctx",
)
SAMPLE_FIELDS = ("samples_ns", "samples_ts")
# What makes two rows one llama-bench invocation: everything but the test itself and its timing.
TEST_FIELDS = {"n_prompt", "n_gen", "n_depth", "test_time", "avg_ns", "stddev_ns", "avg_ts", "stddev_ts",
               *SAMPLE_FIELDS}
_REQUIRED = {"build_commit", "n_prompt", "n_gen", "avg_ts"}
# llama-server's defaults for what compare-llama-bench keys rows on, where VeloLLM started the server
# without the flag (they are llama-bench's defaults too): a result of another backend says "unknown".
SERVER_DEFAULTS = {
    "n_batch": 2048, "n_ubatch": 512, "type_k": "f16", "type_v": "f16", "n_gpu_layers": -1, "split_mode": "layer",
    "main_gpu": 0, "no_kv_offload": 0, "flash_attn": -1, "tensor_split": "0.00", "tensor_buft_overrides": "none",
    "embeddings": 0, "cpu_mask": "0x0", "cpu_strict": 0, "poll": 50, "n_cpu_moe": 0, "load_mode": "auto",
    "no_op_offload": 0, "fit_target": 0, "fit_min_ctx": 0,
}
# llama-server's flags for those fields (every spelling it takes).
SERVER_FLAGS = {
    "n_threads": ("-t", "--threads"), "n_batch": ("-b", "--batch-size"), "n_ubatch": ("-ub", "--ubatch-size"),
    "type_k": ("-ctk", "--cache-type-k"), "type_v": ("-ctv", "--cache-type-v"),
    "n_gpu_layers": ("-ngl", "--gpu-layers", "--n-gpu-layers"), "split_mode": ("-sm", "--split-mode"),
    "main_gpu": ("-mg", "--main-gpu"), "flash_attn": ("-fa", "--flash-attn"),
}
_INTEGER_FIELDS = {"n_batch", "n_ubatch", "n_threads", "n_gpu_layers", "main_gpu"}
_FLASH_ATTN = {"on": 1, "off": 0, "auto": -1}
_WORKLOAD = re.compile(r"^(?:pp(?P<pp>\d+))?(?:/?tg(?P<tg>\d+))?(?:@d(?P<d>\d+))?$")
# What the markdown says when no result holds a workload llama-bench's rows can express.
NO_ROWS = ("(no pp/tg workload measured one request at a time in these results: llama-bench's table holds only "
           "those; velollm benchmark --workload pp512/tg128)")


# -- reading llama-bench's files --------------------------------------------------------------------

def _looks_like_row(text: bytes) -> bool:
    return all(f'"{key}"'.encode() in text for key in _REQUIRED)


def sniff(path: Path, head: bytes) -> bool:
    """llama-bench output: a SQLite database with its table, its SQL, or JSON / JSONL rows of its fields."""
    if head.startswith(b"SQLite format 3\x00"):
        return "llama_bench" in _sqlite_tables(path)
    text = head.lstrip()
    if text.startswith((b"CREATE TABLE IF NOT EXISTS llama_bench", b"INSERT INTO llama_bench")):
        return True
    return text[:1] in (b"[", b"{") and _looks_like_row(text[:8192])


def _sqlite_tables(path: Path) -> set[str]:
    try:
        with _read_only(path) as db:
            return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error:
        return set()


class _read_only:
    """A SQLite file opened read-only (nothing VeloLLM reads may change it), closed on exit."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)

    def __enter__(self) -> sqlite3.Connection:
        return self.db

    def __exit__(self, *exc: object) -> None:
        self.db.close()


def _table_rows(db: sqlite3.Connection) -> list[dict[str, Any]]:
    cursor = db.execute("SELECT * FROM llama_bench")
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row)) for row in cursor]


# What a llama-bench SQL file may do, by SQLite authorizer action: create its table and insert its rows
# (creating a table reads and writes the schema table itself). Anything else (ATTACH writes files,
# PRAGMA changes settings, functions) is refused while the file runs, in a database in memory.
_SQL_ALLOWED = {
    sqlite3.SQLITE_CREATE_TABLE: {"llama_bench"}, sqlite3.SQLITE_INSERT: {"llama_bench", "sqlite_master"},
    sqlite3.SQLITE_UPDATE: {"sqlite_master"}, sqlite3.SQLITE_READ: {"sqlite_master"},
}


def _sql_rows(path: Path) -> list[dict[str, Any]]:
    script = Path(path).read_text(encoding="utf-8")
    db = sqlite3.connect(":memory:")

    def authorize(action: int, first: str | None, *_: object) -> int:
        if action == sqlite3.SQLITE_TRANSACTION or first in _SQL_ALLOWED.get(action, ()):
            return sqlite3.SQLITE_OK
        return sqlite3.SQLITE_DENY

    try:
        db.set_authorizer(authorize)
        db.executescript(script)
        db.set_authorizer(None)
        return _table_rows(db)
    except sqlite3.Error as exc:
        raise UserInputError(f"{path} is not llama-bench SQL output (-o sql) that can be read: {exc}") from None
    finally:
        db.close()


def read_rows(path: Path) -> tuple[str, list[dict[str, Any]]]:
    """(format, rows) of a llama-bench file: json, jsonl, sql or sqlite."""
    with open(path, "rb") as file:
        head = file.read(64)
    if head.startswith(b"SQLite format 3\x00"):
        try:
            with _read_only(path) as db:
                return "sqlite", _table_rows(db)
        except sqlite3.Error as exc:
            raise UserInputError(f"{path}: its llama_bench table cannot be read: {exc}") from None
    if head.lstrip().startswith((b"CREATE", b"INSERT")):
        return "sql", _sql_rows(path)
    text = Path(path).read_text(encoding="utf-8")
    try:
        if text.lstrip().startswith("["):
            fmt, rows = "json", json.loads(text)
        else:
            fmt, rows = "jsonl", [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError as exc:
        raise UserInputError(f"{path} is not llama-bench JSON or JSONL: {exc}") from None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise UserInputError(f"{path} is not llama-bench output: its rows are not JSON objects")
    for number, row in enumerate(rows, 1):
        missing = _REQUIRED - row.keys()
        if missing:
            raise UserInputError(f"{path}: row {number} lacks {', '.join(sorted(missing))}: not llama-bench output")
    return fmt, rows


def _count(value: Any, what: str, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserInputError(f"{path}: {what} {value!r} is not a token count")
    return value


def _test_name(n_prompt: int, n_gen: int) -> str:
    return f"pp{n_prompt}" if n_gen == 0 else f"tg{n_gen}" if n_prompt == 0 else f"pp{n_prompt}+tg{n_gen}"


def _samples(row: dict[str, Any]) -> list[float]:
    """The repetitions' tokens/s (JSON has them); SQL keeps only their mean: one value then."""
    samples = row.get("samples_ts")
    if isinstance(samples, list) and samples:
        return samples
    return [row["avg_ts"]]


def _parameters(n_params: Any) -> str | None:
    """A parameter count as llama-bench's table prints it ('268.10 M', '7.24 B')."""
    if not isinstance(n_params, int) or isinstance(n_params, bool) or n_params <= 0:
        return None
    return f"{n_params / 1e6:.2f} M" if n_params < 1e9 else f"{n_params / 1e9:.2f} B"


def _document(rows: list[dict[str, Any]], fmt: str, path: Path) -> dict[str, Any]:
    """One llama-bench invocation (rows sharing every setting) as one VeloLLM benchmark document."""
    first = rows[0]
    warnings: list[str] = []
    by_depth: dict[int, dict[str, list[dict]]] = {}
    for row in rows:
        n_prompt, n_gen = _count(row["n_prompt"], "n_prompt", path), _count(row["n_gen"], "n_gen", path)
        depth = _count(row.get("n_depth") or 0, "n_depth", path)
        if n_prompt and n_gen:
            warnings.append(f"llama-bench's test {_test_name(n_prompt, n_gen)} (-pg) times prompt and generation "
                            "together: no rate VeloLLM keeps, left out")
            continue
        by_depth.setdefault(depth, {"pp": [], "tg": []})["pp" if n_prompt else "tg"].append(row)
    runs: list[dict[str, Any]] = []
    for depth, tests in by_depth.items():
        suffix = f"@d{depth}" if depth else ""
        if len(tests["pp"]) == 1 and len(tests["tg"]) == 1:
            pp, tg = tests["pp"][0], tests["tg"][0]
            suite = f"pp{pp['n_prompt']}/tg{tg['n_gen']}{suffix}"
            prompt_rates, decode_rates = _samples(pp), _samples(tg)
            for i in range(max(len(prompt_rates), len(decode_rates))):
                runs.append({"benchmark": suite, "iteration": i, "prompt_tokens": pp["n_prompt"],
                             "completion_tokens": tg["n_gen"],
                             "prompt_tokens_per_s": prompt_rates[i] if i < len(prompt_rates) else None,
                             "decode_tokens_per_s": decode_rates[i] if i < len(decode_rates) else None})
            continue
        for row in (*tests["pp"], *tests["tg"]):
            suite = _test_name(row["n_prompt"], row["n_gen"]) + suffix
            rate = "prompt_tokens_per_s" if row["n_prompt"] else "decode_tokens_per_s"
            runs += [{"benchmark": suite, "iteration": i, "prompt_tokens": row["n_prompt"] or None,
                      "completion_tokens": row["n_gen"] or None, rate: value}
                     for i, value in enumerate(_samples(row))]
    if fmt in ("sql", "sqlite"):
        warnings.append(f"llama-bench's {fmt.upper()} output keeps each test's mean, not its repetitions: one run per test")
    times = sorted(str(row["test_time"]) for row in rows if row.get("test_time"))
    settings = {key: first.get(key) for key in FIELDS if key not in TEST_FIELDS and key in first}
    build = str(first.get("build_commit") or "") or None
    return {
        "status": "complete",
        "started_at": times[0] if times else "",
        "finished_at": times[-1] if times else None,
        "settings": {"backend": TOOL, "model": first.get("model_filename"),
                     "workloads": list(dict.fromkeys(run["benchmark"] for run in runs)),
                     "iterations": max((run["iteration"] + 1 for run in runs), default=0), TOOL: settings},
        "environment": {"backend": {
            "name": "llamacpp", "build_commit": build, "warnings": warnings,
            "version": f"build {first.get('build_number')} ({build})" if build else None,
            "model": {"name": str(first.get("model_type") or first.get("model_filename") or "unknown"),
                      "path": first.get("model_filename"), "size_bytes": first.get("model_size"),
                      "parameters": _parameters(first.get("model_n_params"))}}},
        "runs": runs,
        "imported": {"tool": TOOL, "tool_version": build, "format": fmt, "source": Path(path).name},
    }


def load(path: Path) -> list[dict[str, Any]]:
    """Each llama-bench invocation in ``path`` (rows sharing every setting) as a VeloLLM benchmark document."""
    fmt, rows = read_rows(path)
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        key = json.dumps({k: v for k, v in row.items() if k not in TEST_FIELDS}, sort_keys=True, default=str)
        groups.setdefault(key, []).append(row)
    return [_document(group, fmt, path) for group in groups.values()]


# -- writing VeloLLM results as llama-bench rows ----------------------------------------------------

def _flag_values(flags: list[str]) -> dict[str, Any]:
    """The compare-llama-bench key fields a llama-server command line sets."""
    values: dict[str, Any] = {}
    for field, names in SERVER_FLAGS.items():
        for i, flag in enumerate(flags):
            value = flag.split("=", 1)[1] if "=" in flag and flag.split("=", 1)[0] in names else \
                flags[i + 1] if flag in names and i + 1 < len(flags) else None
            if value is None:
                continue
            if field == "flash_attn":
                values[field] = _FLASH_ATTN.get(value.lower(), value)
            elif field in _INTEGER_FIELDS:
                values[field] = int(value) if value.lstrip("-").isdigit() else value
            else:
                values[field] = value
    return values


def _fixed_fields(result: dict[str, Any], source_name: str) -> dict[str, Any]:
    """The row fields one result shares: build, hardware, model and settings, as llama-bench names them."""
    imported = dig(result, "settings", TOOL)
    if dig(result, "imported", "tool") == TOOL and isinstance(imported, dict):
        return {key: imported.get(key) for key in FIELDS if key not in TEST_FIELDS}
    backend = dig(result, "environment", "backend") or {}
    model = backend.get("model") or {}
    hardware = dig(result, "environment", "hardware") or {}
    gpus = [gpu.get("name") for gpu in hardware.get("gpus") or [] if isinstance(gpu, dict) and gpu.get("name")
            and gpu.get("vendor") != "other"]
    ours = backend.get("name") == "llamacpp"  # a server this plugin started: llama.cpp's defaults apply
    row: dict[str, Any] = {key: (SERVER_DEFAULTS.get(key, "unknown") if ours else "unknown")
                           for key in FIELDS if key not in TEST_FIELDS}
    row["n_gpu_layers"] = -1 if not ours else row["n_gpu_layers"]  # compare-llama-bench reads it as an integer
    row.update(_flag_values([str(flag) for flag in backend.get("server_flags") or []]))
    threads = dig(result, "settings", "options", "threads")
    if isinstance(threads, int) and "n_threads" not in _flag_values(backend.get("server_flags") or []):
        row["n_threads"] = threads
    commit = backend.get("build_commit")
    quantization = model.get("quantization")
    row.update({
        # llama-bench writes the short commit its build was made from; compare-llama-bench matches builds on it.
        "build_commit": str(commit)[:7] if commit else f"velollm:{source_name}",
        "build_number": _build_number(backend.get("version")),
        "cpu_info": dig(hardware, "cpu", "model") or "unknown",
        "gpu_info": ", ".join(gpus),
        "backends": _backends(backend) if ours else str(backend.get("name") or "unknown"),
        "model_filename": model.get("path") or model.get("name") or dig(result, "settings", "model") or "unknown",
        "model_type": " ".join(str(part) for part in (model.get("architecture"), model.get("parameters"), quantization)
                               if part) or str(model.get("name") or "unknown"),
        "model_size": model.get("size_bytes"),
        "model_n_params": _parameter_count(model.get("path")),
    })
    return row


def _backends(backend: dict[str, Any]) -> str:
    """llama-bench's ``backends`` of a llama-server this plugin built: CUDA when built with it, else CPU."""
    args = dig(backend, "build", "cmake_args") or []
    return "CUDA" if any("GGML_CUDA=ON" in str(arg) for arg in args) else "CPU"


def _parameter_count(path: Any) -> int | None:
    """The model's parameters, counted from its GGUF tensors where the file is on this machine; else None."""
    if not isinstance(path, str) or not Path(path).is_file():
        return None
    try:
        from gguf import GGUFReader

        return int(sum(int(tensor.n_elements) for tensor in GGUFReader(path).tensors))
    except Exception:  # noqa: BLE001 - a file that moved or is no GGUF costs the column, not the report
        return None


def _build_number(version: Any) -> int | None:
    """llama.cpp's build number out of VeloLLM's version text ('... (build 6543, commit abc1234)')."""
    found = re.search(r"\bbuild (\d+)", str(version or ""))
    return int(found.group(1)) if found else None


def _results(sources: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, benchmark-shaped result) of every source: a benchmark, each side of a speculative bench."""
    return [(f"{source.label}{f' {side}' if side else ''}", result)
            for source in sources for side, _, result in source.results()]


def _test_rows(fixed: dict[str, Any], result: dict[str, Any], suite: str, started: str) -> list[dict[str, Any]]:
    match = _WORKLOAD.match(suite)
    if not match or not (match["pp"] or match["tg"]):
        return []
    depth = int(match["d"] or 0)
    runs = [run for run in result.get("runs") or [] if isinstance(run, dict) and run.get("benchmark") == suite
            and (run.get("concurrency") or 1) == 1 and not run.get("level") and not run.get("failed")]
    rows = []
    for metric, n_prompt, n_gen in (("prompt_tokens_per_s", int(match["pp"] or 0), 0),
                                    ("decode_tokens_per_s", 0, int(match["tg"] or 0))):
        tokens = n_prompt or n_gen
        samples = [run[metric] for run in runs if isinstance(run.get(metric), (int, float)) and run[metric] > 0]
        if not tokens or not samples:
            continue
        samples_ns = [round(1e9 * tokens / rate) for rate in samples]
        avg_ts, stddev_ts = _mean_stdev(samples)
        avg_ns, stddev_ns = _mean_stdev(samples_ns)
        rows.append({**fixed, "n_prompt": n_prompt, "n_gen": n_gen, "n_depth": depth, "test_time": started,
                     "avg_ns": round(avg_ns), "stddev_ns": round(stddev_ns), "avg_ts": avg_ts, "stddev_ts": stddev_ts,
                     "samples_ns": samples_ns, "samples_ts": samples})
    return rows


def _mean_stdev(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value), as llama-bench reports them; scaled so values
    near the float range do not overflow."""
    scale = max(abs(value) for value in values) or 1.0
    scaled = [value / scale for value in values]
    stdev = statistics.stdev(scaled) if len(scaled) > 1 else 0.0
    return statistics.fmean(scaled) * scale, stdev * scale


def rows(sources: list[Any]) -> list[dict[str, Any]]:
    """llama-bench rows (its -o json objects) of every pp/tg workload measured one request at a time."""
    out = []
    for name, result in _results(sources):
        fixed = _fixed_fields(result, name)
        for suite in result.get("summary") or {}:
            out += _test_rows(fixed, result, suite, str(result.get("started_at") or ""))
    return out


def json_report(sources: list[Any]) -> str:
    """``--format llama-bench-json``: the array llama-bench -o json writes."""
    return json.dumps(rows(sources), indent=2, allow_nan=False) + "\n"


def jsonl_report(sources: list[Any]) -> str:
    """``--format llama-bench-jsonl``: one row per line, as llama-bench -o jsonl writes."""
    return "".join(json.dumps(row, allow_nan=False) + "\n" for row in rows(sources))


_REAL_FIELDS = {"avg_ts", "stddev_ts"}
_TEXT_FIELDS = {"build_commit", "cpu_info", "gpu_info", "backends", "model_filename", "model_type", "cpu_mask",
                "type_k", "type_v", "split_mode", "tensor_split", "tensor_buft_overrides", "load_mode", "test_time"}


def _sql_value(value: Any) -> str:
    """A value as SQL text: NULL, a number, or a quoted text (a quote inside doubled, so a model name
    cannot end the statement)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def sql_report(sources: list[Any]) -> str:
    """``--format llama-bench-sql``: llama-bench -o sql's statements (``| sqlite3 llama-bench.sqlite`` makes
    the database compare-llama-bench.py reads by default)."""
    columns = ",\n".join(f"  {field} {'REAL' if field in _REAL_FIELDS else 'TEXT' if field in _TEXT_FIELDS else 'INTEGER'}"
                         for field in FIELDS)
    lines = [f"CREATE TABLE IF NOT EXISTS llama_bench (\n{columns}\n);", ""]
    lines += [f"INSERT INTO llama_bench ({', '.join(FIELDS)}) VALUES ({', '.join(_sql_value(row.get(f)) for f in FIELDS)});"
              for row in rows(sources)]
    return "\n".join(lines) + "\n"


def _md_cell(value: Any) -> str:
    """A cell of text from a result file: no new cell, no new row."""
    return str(value).replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def markdown_report(sources: list[Any]) -> str:
    """``--format llama-bench``: the table llama-bench -o md prints (model, size, params, backend, ngl or
    threads, test, t/s), its build line under it; one table per build."""
    table_rows = rows(sources)
    if not table_rows:
        return NO_ROWS + "\n"
    parts = []
    for build in dict.fromkeys(row["build_commit"] for row in table_rows):
        chosen = [row for row in table_rows if row["build_commit"] == build]
        cpu = all(str(row["backends"]).startswith(("CPU", "BLAS")) for row in chosen)
        fields = ["model", "size", "params", "backend", "threads" if cpu else "ngl", "test", "t/s"]
        widths = {"model": -30, "size": 10, "params": 10, "backend": -10, "ngl": 3, "threads": 7, "test": 15,
                  "t/s": 20}
        parts.append("|" + "".join(f" {name:{'<' if widths[name] < 0 else '>'}{abs(widths[name])}} |"
                                   for name in fields))
        parts.append("|" + "".join(f" {'-' * (abs(widths[name]) - 1)}{'-' if widths[name] < 0 else ':'} |"
                                   for name in fields))
        for row in chosen:
            size, params = row.get("model_size"), row.get("model_n_params")
            test = _test_name(row["n_prompt"], row["n_gen"]) + (f" @ d{row['n_depth']}" if row["n_depth"] else "")
            cells = {
                "model": row["model_type"],
                "size": "-" if not isinstance(size, int) else f"{size / 2**20:.2f} MiB" if size < 2**30
                else f"{size / 2**30:.2f} GiB",
                "params": _parameters(params) or "-",
                "backend": row["backends"], "ngl": row["n_gpu_layers"], "threads": row["n_threads"], "test": test,
                "t/s": f"{row['avg_ts']:.2f} ± {row['stddev_ts']:.2f}",
            }
            parts.append("|" + "".join(f" {_md_cell(cells[name]):{'<' if widths[name] < 0 else '>'}{abs(widths[name])}} |"
                                       for name in fields))
        parts.append("")
        parts.append(f"build: {build} ({chosen[0].get('build_number')})")
        parts.append("")
    return "\n".join(parts)
