"""``velollm share ID|FILE``: one result as a self-contained markdown bundle to paste into an issue or a
forum thread: a summary table, the hardware fingerprint, and the result's JSON, validated against its
published schema, with secrets and home-directory paths scrubbed. Nothing is fetched or sent.

Scrubbing is the history's (``secrets.scrub_document``: API keys, tokens, passwords, credentials in
URLs, ``Authorization``/``Bearer`` values) plus what identifies the person rather than the machine:
home-directory paths (``/home/NAME``, ``/Users/NAME``, ``C:\\Users\\NAME``, ``/root``) become
``~``, and this user's login and host name become ``<user>`` and ``<host>`` wherever they appear.
Generated texts of the runs are left out (they are the model's words, not measurements).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import socket
from pathlib import Path
from typing import Any

import click

from velollm_core.contract.errors import UserInputError

MARKER = "<!-- VeloLLM share: velollm share -->"
# Home directories by platform: the folder after them is a person's name.
_HOME = re.compile(r"(?P<root>/home/|/Users/|[A-Za-z]:\\\\?Users\\\\?)(?P<name>[^/\\\s\"'<>]+)")
_ROOT_HOME = re.compile(r"(?<![\w.-])/root(?=/|\b)")
# Names shorter than this are too likely to match ordinary words to be replaced everywhere.
MIN_NAME = 3


def _identities() -> list[tuple[str, str]]:
    """(text, replacement) for this user's home directory (wherever it is: not every home is under
    /home), login and host name, longest first."""
    found = []
    home = _safe(lambda: os.path.expanduser("~").rstrip("/\\"))
    if home and os.path.isabs(home) and len(home) > 1:
        found.append((home, "~"))
    for value, replacement in ((_safe(getpass.getuser), "<user>"), (_safe(socket.gethostname), "<host>")):
        if value and len(value) >= MIN_NAME:
            found.append((value, replacement))
    return sorted(found, key=lambda item: -len(item[0]))


def _safe(read) -> str | None:
    try:
        return read()
    except Exception:  # noqa: BLE001 - no login name (a container's odd uid): nothing to replace
        return None


def scrub_paths(node: Any, identities: list[tuple[str, str]] | None = None) -> Any:
    """A copy of ``node`` with home-directory paths shortened to ``~`` and this user's and host's names
    replaced, in every text and key."""
    identities = _identities() if identities is None else identities
    if isinstance(node, dict):
        return {scrub_paths(key, identities): scrub_paths(value, identities) for key, value in node.items()}
    if isinstance(node, list):
        return [scrub_paths(item, identities) for item in node]
    if not isinstance(node, str):
        return node
    text = _HOME.sub("~", node)
    text = _ROOT_HOME.sub("~", text)
    for value, replacement in identities:
        text = re.sub(rf"(?<![\w-]){re.escape(value)}(?![\w-])", replacement, text)
    return text


def _without_texts(document: Any) -> Any:
    """The document with every run's generated text left out."""
    if isinstance(document, dict):
        return {key: ("" if key == "text" and isinstance(value, str) else _without_texts(value))
                for key, value in document.items()}
    if isinstance(document, list):
        return [_without_texts(item) for item in document]
    return document


def _load(ref: str) -> tuple[str, dict[str, Any], str]:
    """(name, document, kind) of a result file (VeloLLM's, a detect report, or another tool's) or history id."""
    from velollm_core.history.documents import hardware_report, kind_of, validate_document
    from velollm_core.history.store import result_documents

    documents = result_documents(ref)
    if len(documents) != 1:
        raise UserInputError(f"{ref} holds {len(documents)} results: `velollm history import` it and share "
                             "one history id")
    name, data = documents[0].name, documents[0].data
    if documents[0].imported:
        return name, data, "benchmark"
    if kind_of(data) == "detect":
        hardware_report(data, name)
        return name, data, "detect"
    return name, data, validate_document(data, name)


def _hardware(document: dict[str, Any], kind: str) -> dict[str, Any] | None:
    if kind == "detect":
        return document
    if kind == "speculative":
        document = document.get("vanilla") or {}
    hardware = (document.get("environment") or {}).get("hardware")
    return hardware if isinstance(hardware, dict) else None


def fingerprint(hardware: dict[str, Any] | None) -> tuple[list[str], str | None]:
    """Lines describing the hardware and a short hash of them (equal on the same machine, whoever shares)."""
    if hardware is None:
        return ["not recorded in this result"], None
    cpu, memory, system = hardware.get("cpu") or {}, hardware.get("memory") or {}, hardware.get("os") or {}
    facts = {
        "os": " ".join(str(system.get(key)) for key in ("system", "release", "machine") if system.get(key)),
        "cpu": f"{cpu.get('model') or 'unknown CPU'} ({cpu.get('physical_cores') or '?'} cores, "
               f"{cpu.get('logical_cores') or '?'} threads)",
        "memory": f"{memory['total_bytes'] / 2**30:.1f} GiB" if isinstance(memory.get("total_bytes"), int) else "unknown",
        "gpus": [f"{gpu.get('name')} ({gpu['memory_total_bytes'] / 2**30:.1f} GiB)"
                 if isinstance(gpu.get("memory_total_bytes"), int) else str(gpu.get("name"))
                 for gpu in hardware.get("gpus") or [] if isinstance(gpu, dict) and gpu.get("vendor") != "other"],
    }
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:12]
    lines = [f"OS: {facts['os'] or 'unknown'}", f"CPU: {facts['cpu']}", f"memory: {facts['memory']}",
             f"GPUs: {', '.join(facts['gpus']) or 'none'}"]
    return lines, digest


def _cell(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _median(metrics: dict[str, Any], metric: str) -> float | None:
    stats = metrics.get(metric)
    value = stats.get("median") if isinstance(stats, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def summary_table(document: dict[str, Any], kind: str) -> list[str]:
    """The markdown table of a result's suites (both sides of a speculative bench): medians per metric."""
    if kind == "detect":
        return []
    if kind == "verify":
        final = (document.get("final") or {}).get("vs_defaults") or {}
        lines = ["| metric | ratio to defaults | verdict |", "|---|---:|---|"]
        return lines + [f"| {_cell(metric)} | {_cell(entry.get('ratio'), 3)} | {_cell(entry.get('verdict'))} |"
                        for metric, entry in final.items() if isinstance(entry, dict)]
    sides = [("", document)] if kind == "benchmark" else [
        (side, document[side]) for side in ("vanilla", "speculative") if isinstance(document.get(side), dict)]
    lines = ["| suite | n | decode tok/s | prefill tok/s | TTFT ms | total ms |", "|---|---:|---:|---:|---:|---:|"]
    for side, result in sides:
        for suite, metrics in (result.get("summary") or {}).items():
            if not isinstance(metrics, dict):
                continue
            counts = [stats.get("n") for stats in metrics.values() if isinstance(stats, dict)]
            lines.append(f"| {_cell(f'{side} {suite}'.strip())} | {_cell(max(counts, default=None))} | "
                         f"{_cell(_median(metrics, 'decode_tokens_per_s'))} | "
                         f"{_cell(_median(metrics, 'prompt_tokens_per_s'))} | {_cell(_median(metrics, 'ttft_ms'))} | "
                         f"{_cell(_median(metrics, 'total_ms'))} |")
    return lines


def _headline(document: dict[str, Any], kind: str) -> str:
    first = document.get("vanilla") if kind == "speculative" else document
    settings = (first or {}).get("settings") or {}
    backend = (((first or {}).get("environment") or {}).get("backend") or {})
    tool = (document.get("imported") or {}).get("tool")
    parts = [kind, str(settings.get("backend") or document.get("runtime") or "")]
    if backend.get("version"):
        parts.append(str(backend["version"]))
    model = document.get("target") if kind == "speculative" else document.get("model") or settings.get("model")
    if model:
        parts.append(Path(str(model)).name)
    if tool:
        parts.append(f"measured by {tool}")
    return " · ".join(part for part in parts if part)


def share_text(ref: str) -> str:
    """The markdown bundle of one result."""
    from velollm_core.contract.schemas import SCHEMA_VERSIONS
    from velollm_core.history.documents import plausibility
    from velollm_core.history.schemas import schema_id
    from velollm_core.history.secrets import scrub_document

    _, document, kind = _load(ref)
    clean = scrub_paths(scrub_document(_without_texts(document)))
    lines, digest = fingerprint(_hardware(clean, kind))
    written = document.get("schema_version")
    schema = (f"schema v{written}" if written else f"written before results carried a schema version; read as "
              f"v{SCHEMA_VERSIONS[kind]}") + f", {schema_id(kind, written)}"
    parts = [MARKER, f"### VeloLLM result: {_cell(_headline(clean, kind))}", ""]
    if kind != "detect":
        started = clean.get("started_at") or (clean.get("vanilla") or {}).get("started_at")
        parts += [f"status {clean.get('status') or 'complete'}" + (f", started {started}" if started else ""), ""]
    parts += [*summary_table(clean, kind)]
    flags = plausibility(document, kind) if kind != "detect" else []
    if flags:
        parts += ["", *(f"> **flagged:** {_cell(flag)}" for flag in flags)]
    parts += ["", f"**Hardware fingerprint** `{digest or 'unknown'}`", "", *(f"- {_cell(line)}" for line in lines), ""]
    summary = f"The result's JSON ({schema}; secrets and home paths scrubbed, run texts left out)"
    parts += [f"<details><summary>{summary}</summary>", "",
              "```json", json.dumps(clean, indent=1, ensure_ascii=False, allow_nan=False).replace("```", "` ` `"),
              "```", "", "</details>", "",
              "<sub>Shared with `velollm share`: validated against the published schema, nothing sent.</sub>", ""]
    return "\n".join(parts)


@click.command("share")
@click.argument("ref", metavar="ID|FILE")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here (else stdout).")
@click.option("--force", is_flag=True, help="Replace --output even when it is not a VeloLLM file.")
def share_command(ref: str, output: Path | None, force: bool) -> None:
    """One result (history id or file) as a markdown bundle to paste into an issue or a thread: summary
    table, hardware fingerprint and the JSON, secrets and home paths scrubbed. Nothing is sent."""
    out = None
    if output is not None:
        from velollm_core.contract.files import prepare_output

        out = prepare_output(output, force=force, markers=(MARKER.encode(),))
    text = share_text(ref)
    if out is None:
        from velollm_core.contract.output import echo

        echo(text, nl=False)
        return
    with out:
        out.write_text(text)
    click.echo(f"written to {output}", err=True)
