"""No byte from a server, a file or a plugin reaches the terminal as a control sequence: the consoles and
the error printer of contract/output.py drop or show them, on a terminal and through a pipe."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.table import Table
from velollm_testkit.hostile import ESCAPES

from tests.test_history import measured
from velollm_core.contract import output
from velollm_core.history import store

# What must never come out: a screen clear, hidden text, an OSC (title, link), BEL, a C1 CSI, bidi.
INJECTED = ("\x1b[2J", "\x1b[8m", "\x1b]", "\x07", "\x9b", "\u202e", "\u2066", "\u2069")
TERMINAL = {"FORCE_COLOR": "1", "TTY_COMPATIBLE": "1", "COLUMNS": "200"}


def assert_clean(text: str) -> None:
    for sequence in INJECTED:
        assert sequence not in text, (sequence, text)


def velollm(*args: str, db: Path, terminal: bool) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("NO_COLOR", "TERM")}
    env.update({store.HISTORY_DB_ENV: str(db), "COLUMNS": "200", **(TERMINAL if terminal else {})})
    return subprocess.run([sys.executable, "-m", "velollm_core", *args], check=False, capture_output=True,
                          text=True, timeout=120, env=env)


def test_safe_text_shows_every_control_and_bidi_character():
    assert output.safe_text("a\x1b[2Jb\u202ec\x9bd\te\nf") == "a\\u001b[2Jb\\u202ec\\u009bd\te\nf"
    assert output.stripped_text(ESCAPES) == "[2J[8mhidden[0m]0;pwned31mevilx"
    assert_clean(output.safe_text(ESCAPES))
    assert output.safe_text("line\r\nover\rwritten") == "line\r\nover\\u000dwritten"  # CRLF ends a line
    # JSON's own escape: a document written out this way (history export) reads back the same.
    document = {"model": f"m{ESCAPES}\x85"}
    assert json.loads(output.safe_text(json.dumps(document, ensure_ascii=False))) == document


@pytest.mark.parametrize("terminal", [True, False], ids=["tty", "pipe"])
def test_consoles_keep_their_own_colours_and_drop_the_servers(terminal):
    for make in (output.stdout_console, output.stderr_console):
        sink = io.StringIO()
        console = make(file=sink, force_terminal=terminal, width=100)
        table = Table(title=f"llama-server {ESCAPES}")
        table.add_column("model")
        table.add_row(f"m{ESCAPES}")
        console.print(table)
        console.print(f"[red]failed:[/red] [link=https://evil.example]{ESCAPES}[/link]")
        text = sink.getvalue()
        assert_clean(text)
        assert "pwned" in text and ("\x1b[" in text) == terminal  # rich's own styling, on a terminal only


@pytest.mark.parametrize("terminal", [True, False], ids=["tty", "pipe"])
def test_history_cells_and_error_lines_carry_no_escape(tmp_path, terminal):
    db = tmp_path / "history.db"
    doc = measured(100.0, model=f"/m/evil{ESCAPES}.gguf")
    doc["backend"] = f"fake{ESCAPES}"
    doc["environment"]["hardware"]["cpu"]["model"] = f"CPU{ESCAPES}"
    path = tmp_path / "evil.json"
    path.write_text(json.dumps(doc))
    imported = velollm("history", "import", str(path), "--label", f"l{ESCAPES}", db=db, terminal=terminal)
    assert imported.returncode == 0, imported.stderr
    for args in ((), ("--json",)):
        listed = velollm("history", *args, db=db, terminal=terminal)
        assert listed.returncode == 0, listed.stderr
        assert_clean(listed.stdout + listed.stderr)
    assert "evil" in listed.stdout
    # compare --baseline's refusal names the model: the error line shows its escapes, harmless.
    lonely = tmp_path / "lonely.json"
    lonely.write_text(json.dumps(measured(90.0, model=f"/m/other{ESCAPES}.gguf")))
    refused = velollm("compare", "--baseline", str(lonely), db=db, terminal=terminal)
    assert refused.returncode == 2 and "other" in refused.stderr and "\\u001b" in refused.stderr
    assert_clean(refused.stderr)


def test_a_live_progress_line_is_safe_too():
    from rich.progress import Progress, TextColumn

    sink = io.StringIO()
    console = output.stderr_console(file=sink, force_terminal=True, width=100)
    with Progress(TextColumn("{task.description}"), console=console, auto_refresh=False) as progress:
        progress.add_task(f"short_completion {ESCAPES}", total=2)
        progress.refresh()
    assert "pwned" in sink.getvalue()
    assert_clean(sink.getvalue())


def test_no_module_makes_a_console_of_its_own():
    """Every console comes from contract/output.py (the choke point): a rich Console made elsewhere
    would print a server's escape sequences as they are."""
    repo = Path(__file__).resolve().parents[1]
    sources = [*repo.glob("velollm_core/**/*.py"), *repo.glob("plugins/*/velollm_*/**/*.py")]
    makers = [str(path.relative_to(repo)) for path in sources
              if path.name != "output.py" and "Console(" in path.read_text(encoding="utf-8")]
    assert not makers, makers


def test_while_the_cli_runs_every_writer_is_made_safe(capsys):
    import click

    with output.safe_streams():
        click.echo(f"a{ESCAPES}")  # a command's own line quoting a file, a plugin's print
        print(f"b{ESCAPES}", file=sys.stderr)
        output.stdout_console(force_terminal=True).print("[bold]bold[/bold]")
    out, err = capsys.readouterr()
    assert_clean(out + err)
    assert "hidden\\u001b]0;pwned" in out and "b\\u001b[2J" in err  # click itself drops CSI off a TTY
    assert "\x1b[1mbold" in out  # the console's own escapes pass, past the safe stream
