"""Reports of hostile result files: CSV cells cannot become formulas (OWASP's neutralisation), markdown
cannot carry HTML, links or table breakers, and the HTML page stays escaped."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_history import measured

FORMULAS = ['=HYPERLINK("http://evil.example","click")', "@SUM(A1)", "+cmd|' /C calc'!A0", "-2+3", "\t=1", "\r=1"]
MARKUP = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "a|b\nc", "[click](javascript:alert(1))"]


def report(path: Path, *args: str) -> subprocess.CompletedProcess:
    """``velollm report``, its output as text without newline translation (a CR inside a cell stays)."""
    proc = subprocess.run([sys.executable, "-m", "velollm_core", "report", str(path), *args], check=False,
                          capture_output=True, timeout=120, env={**os.environ, "VELOLLM_HISTORY_DB": "off"})
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def hostile_file(folder: Path, model: str, backend_version: str) -> Path:
    doc = measured(100.0, model=model)
    doc["environment"]["hardware"]["cpu"]["model"] = backend_version
    doc["backend_version"] = backend_version
    path = folder / f"r{abs(hash(model))}.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("formula", FORMULAS)
def test_csv_cells_never_start_a_formula(tmp_path, formula):
    proc = report(hostile_file(tmp_path, formula, formula), "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout, newline="")))
    assert rows
    for row in rows:
        for cell in row.values():
            assert not cell or cell[0] not in "=+-@\t\r" or _number(cell), (cell, row)
        assert row["model"] == "'" + formula.replace("\r", "\n")


def _number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def test_markdown_carries_no_html_link_or_table_breaker(tmp_path):
    for markup in MARKUP:
        out = tmp_path / f"{abs(hash(markup))}.md"
        proc = report(hostile_file(tmp_path, markup, markup), "--output", str(out))
        assert proc.returncode == 0, proc.stderr
        text = out.read_text()
        assert "<script" not in text and "<img" not in text and not re.search(r"(?<!\\)\]\(", text), text
        for table in text.split("### ")[1:]:  # every row of a table as wide as its header
            widths = {len(line.replace("\\|", "").split("|")) for line in table.splitlines() if line.startswith("|")}
            assert len(widths) == 1, text


def test_the_html_report_stays_escaped(tmp_path):
    out = tmp_path / "r.html"
    proc = report(hostile_file(tmp_path, MARKUP[0], MARKUP[1]), "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert "<script>alert" not in text and "<img src=x" not in text and "&lt;script&gt;" in text
