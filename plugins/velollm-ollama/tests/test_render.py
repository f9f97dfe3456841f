"""Every output format of `velollm optimize`: valid syntax, exact values, no injection through values."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from velollm_core.contract.errors import UserInputError, VeloError
from velollm_core.contract.schemas import ConfigChange, ConfigProposal
from velollm_core.tune import systemd
from velollm_core.tune.render import (
    FORMATS,
    format_for_path,
    powershell_quote,
    render,
    render_systemd,
)

NASTY = [
    "$(rm -rf /)",
    "`touch /tmp/velollm-pwned`",
    "it's",
    'say "hi"',
    "back\\slash\\",
    "semi; echo pwned",
    "new\nline",
    "100% %h",
    "${HOME}",
    "tab\there",
    "smart \u2019quote\u2018",
    "",
    "ünïcødé ✓",
    "--flag",
]


def proposal(values: list[str | None], reason: str = "because") -> ConfigProposal:
    changes = [ConfigChange(key=f"VELO_T{i}", current=None, proposed=value, reason=reason)
               for i, value in enumerate(values)]
    return ConfigProposal(runtime="ollama", changes=changes, notes=["a note"], systemd_unit="ollama")


def real() -> ConfigProposal:
    return ConfigProposal(
        runtime="ollama",
        systemd_unit="ollama",
        changes=[
            ConfigChange(key="OLLAMA_FLASH_ATTENTION", current=None, proposed="1", reason="faster"),
            ConfigChange(key="OLLAMA_KV_CACHE_TYPE", current="f16", proposed="q8_0", reason="half the memory"),
            ConfigChange(key="OLLAMA_SCHED_SPREAD", current="1", proposed=None, reason="fits one GPU"),
        ],
    )


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
def test_shell_script_is_valid_and_exact(tmp_path):
    script = tmp_path / "ollama.sh"
    script.write_text(render([proposal(NASTY)], "shell"))
    subprocess.run(["bash", "-n", str(script)], check=True)
    if shutil.which("sh"):
        subprocess.run(["sh", "-n", str(script)], check=True)
    marker = Path("/tmp/velollm-pwned")
    marker.unlink(missing_ok=True)
    reader = " ".join(f'printf "%s\\0" "${{VELO_T{i}-UNSET}}";' for i in range(len(NASTY)))
    out = subprocess.run(["bash", "-c", f". {shlex.quote(str(script))} >/dev/null; {reader}"],
                         capture_output=True, check=True, env={"PATH": "/usr/bin:/bin"}).stdout
    assert out.decode().split("\0")[:-1] == NASTY
    assert not marker.exists()


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
def test_shell_unset_and_reasons_cannot_break_out(tmp_path):
    p = proposal([None, "x"], reason="line one\nexport VELO_EVIL=1 # \r more")
    p.notes = ["note\n echo pwned"]
    script = tmp_path / "s.sh"
    text = render([p], "shell")
    script.write_text(text)
    subprocess.run(["bash", "-n", str(script)], check=True)
    out = subprocess.run(["bash", "-c", f"VELO_T0=old; . {script}; echo \"${{VELO_T0-gone}} ${{VELO_EVIL-no}}\""],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "gone no"
    assert "unset VELO_T0" in text
    assert all(line.startswith(("#", "export ", "unset ")) for line in text.splitlines() if line)


def test_shell_real_proposal():
    text = render([real()], "shell")
    assert "export OLLAMA_FLASH_ATTENTION=1\n" in text
    assert "export OLLAMA_KV_CACHE_TYPE=q8_0\n" in text
    assert "unset OLLAMA_SCHED_SPREAD\n" in text
    assert "# OLLAMA_KV_CACHE_TYPE: f16 -> q8_0. half the memory" in text


@pytest.mark.parametrize("key", ["BAD KEY", "A=B", "$(x)", "1ABC", "", "A;B", "Ä"])
@pytest.mark.parametrize("fmt", ["shell", "systemd", "launchctl", "powershell"])
def test_unsafe_variable_names_are_refused(key, fmt):
    p = ConfigProposal(runtime="ollama", systemd_unit="ollama",
                       changes=[ConfigChange(key=key, proposed="1", reason="r")])
    with pytest.raises(VeloError, match="not a valid environment variable name"):
        render([p], fmt)


def test_systemd_dropin_round_trips(tmp_path):
    text = render([proposal(NASTY)], "systemd")
    lines = text.splitlines()
    assert "[Service]" in lines
    assert "#   sudo systemctl daemon-reload && sudo systemctl restart ollama" in lines
    assert all(line.startswith(("#", "[Service]", 'Environment="', "UnsetEnvironment=")) for line in lines)
    env = systemd.UnitEnvironment()
    systemd.parse_unit_text(text, env, tmp_path / "velollm.conf")
    assert env.values == {f"VELO_T{i}": value for i, value in enumerate(NASTY)}


def test_systemd_real_proposal_and_unset():
    text = render([real()], "systemd")
    assert 'Environment="OLLAMA_FLASH_ATTENTION=1"' in text
    assert "UnsetEnvironment=OLLAMA_SCHED_SPREAD" in text
    assert f"Install as {systemd.dropin_path('ollama')}" in text


def test_systemd_keeps_previous_settings():
    text = render_systemd(real(), kept={"OLLAMA_KEEP_ALIVE": "30m", "OLLAMA_FLASH_ATTENTION": "0"},
                          kept_unset={"OLLAMA_NUM_PARALLEL"})
    assert 'Environment="OLLAMA_KEEP_ALIVE=30m"' in text
    assert "UnsetEnvironment=OLLAMA_NUM_PARALLEL" in text
    assert 'Environment="OLLAMA_FLASH_ATTENTION=0"' not in text  # the new proposal replaces it
    env = systemd.UnitEnvironment()
    systemd.parse_unit_text(text, env, Path("velollm.conf"))
    assert env.effective()["OLLAMA_FLASH_ATTENTION"] == "1"


def test_systemd_needs_exactly_one_service():
    other = ConfigProposal(runtime="llamacpp", changes=[], command=["llama-server", "-fa", "on"])
    with pytest.raises(UserInputError, match="--backend"):
        render([real(), real().model_copy(update={"runtime": "x"})], "systemd")
    assert "[Service]" in render([real(), other], "systemd")
    with pytest.raises(UserInputError):
        render([other], "systemd")


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
def test_launchctl_commands_get_exact_arguments(tmp_path):
    script = tmp_path / "l.sh"
    script.write_text(render([proposal([*NASTY, None])], "launchctl"))
    subprocess.run(["bash", "-n", str(script)], check=True)
    fake = 'launchctl() { printf "%s\\0" "$@"; printf "\\1"; }'
    out = subprocess.run(["bash", "-c", f"{fake}; . {script}"], capture_output=True, check=True).stdout
    calls = [call.split(b"\0")[:-1] for call in out.split(b"\1")[:-1]]
    expected = [[b"setenv", f"VELO_T{i}".encode(), v.encode()] for i, v in enumerate(NASTY)]
    assert calls == [*expected, [b"unsetenv", f"VELO_T{len(NASTY)}".encode()]]


def _parse_powershell_single_quoted(text: str, start: int) -> tuple[str, int]:
    """PowerShell's rule: any of ' ‘ ’ ‚ ‛ closes the string unless another one follows."""
    quotes = "'\u2018\u2019\u201a\u201b"
    assert text[start] in quotes
    out, i = [], start + 1
    while True:
        ch = text[i]
        if ch in quotes:
            if i + 1 < len(text) and text[i + 1] in quotes:
                out.append(text[i + 1])
                i += 2
                continue
            return "".join(out), i + 1
        out.append(ch)
        i += 1


def test_powershell_quoting():
    for value in NASTY:
        literal = powershell_quote(value)
        parsed, end = _parse_powershell_single_quoted(literal, 0)
        assert (parsed, end) == (value, len(literal))
    assert powershell_quote("it's") == "'it''s'"


def test_powershell_script():
    # A value with a newline is a multi-line single-quoted literal: valid PowerShell, so parse the whole text.
    text = render([proposal([*NASTY, None])], "powershell")
    position = 0
    for i, value in enumerate(NASTY):
        prefix = f"\n[Environment]::SetEnvironmentVariable('VELO_T{i}', "
        start = text.index(prefix, position) + len(prefix)
        parsed, end = _parse_powershell_single_quoted(text, start)
        assert parsed == value and text[end:].startswith(", 'User')\n")
        position = end
    assert text.endswith(f"[Environment]::SetEnvironmentVariable('VELO_T{len(NASTY)}', $null, 'User')\n")


@pytest.mark.skipif(shutil.which("pwsh") is None, reason="PowerShell not installed")
def test_powershell_parses(tmp_path):
    script = tmp_path / "s.ps1"
    script.write_text(render([proposal(NASTY)], "powershell"))
    check = f"$null = [System.Management.Automation.Language.Parser]::ParseFile('{script}', [ref]$null, [ref]$e); $e.Count"
    assert subprocess.run(["pwsh", "-NoProfile", "-Command", check], capture_output=True, text=True,
                          check=True).stdout.strip() == "0"


def test_json_round_trips():
    data = json.loads(render([real()], "json"))
    assert ConfigProposal.model_validate(data["proposals"][0]) == real()


def test_flag_changes_and_commands_are_comments():
    p = ConfigProposal(runtime="llamacpp", command=["llama-server", "-m", "a model.gguf", "$(x)"],
                       changes=[ConfigChange(key="--flash-attn", proposed="on", reason="r", kind="flag")])
    for fmt in ("shell", "launchctl", "powershell"):
        text = render([p], fmt)
        lines = [line for line in text.splitlines() if line]
        if fmt == "shell":
            # A flags-only runtime gets its command as the one runnable line, every value quoted.
            assert lines[-1] == "llama-server -m 'a model.gguf' '$(x)'"
            lines = lines[:-1]
        assert all(line.startswith("#") for line in lines)
        assert "# command: llama-server -m 'a model.gguf' '$(x)'" in text


def test_every_format_renders():
    for fmt in FORMATS:
        assert render([real()], fmt).endswith("\n")
    with pytest.raises(UserInputError):
        render([real()], "yaml")


def test_format_from_file_suffix():
    assert format_for_path(Path("x.json")) == "json"
    assert format_for_path(Path("velollm.conf")) == "systemd"
    assert format_for_path(Path("env.PS1")) == "powershell"
    assert format_for_path(Path("ollama.sh")) == "shell"
    assert format_for_path(Path("noext")) == "shell"
