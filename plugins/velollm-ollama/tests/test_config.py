"""Reading the current Ollama configuration: systemd unit + drop-ins, launchctl, environment; Ollama's parsing."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from velollm_ollama.config import (
    parse_bool,
    parse_go_duration,
    parse_keep_alive,
    parse_uint,
    read_ollama_config,
)

from velollm_core.tune import systemd

UNIT = """[Unit]
Description=Ollama Service
After=network-online.target

[Service]
ExecStart=/usr/local/bin/ollama serve
User=ollama
Environment="PATH=/usr/local/bin:/usr/bin"
Environment="OLLAMA_KEEP_ALIVE=10m"

[Install]
WantedBy=default.target
"""


def write_unit(root: Path, dropins: dict[str, str] | None = None) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "ollama.service").write_text(UNIT)
    for name, text in (dropins or {}).items():
        path = root / "ollama.service.d" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize("value, expected", [
    (None, None), ("", None), ("1", True), ("true", True), ("TRUE", True), ("0", False), ("false", False),
    ("F", False), ("yes", True), ('"1"', True), (" 0 ", False),
])
def test_parse_bool_like_ollama(value, expected):
    # Ollama treats any non-empty value that is not a Go boolean as true.
    assert parse_bool(value) is expected


@pytest.mark.parametrize("value, expected", [
    ("5m", 300), ("1h30m", 5400), ("300ms", 0.3), ("1.5h", 5400), ("0", 0), ("300", 300),
    ("-1", math.inf), ("-5m", math.inf), ("'24h'", 86400), ("five minutes", None), ("", None), (None, None),
    ("5", 5), ("1m5", None),
])
def test_keep_alive(value, expected):
    assert parse_keep_alive(value) == expected


def test_go_duration_rejects_garbage():
    assert parse_go_duration("m5") is None
    assert parse_go_duration("5x") is None
    assert parse_go_duration("-") is None


def test_parse_uint():
    assert parse_uint("8192") == 8192
    assert parse_uint("-1") is None
    assert parse_uint("4k") is None
    assert parse_uint(None) is None


def test_split_words_like_systemd():
    words = systemd.split_words(r'"A=one two" B=three "C=quo\"te" D=100%% E=tab\there \'F=x y\'')
    assert words == ["A=one two", "B=three", 'C=quo"te', "D=100%", "E=tab\there", "'F=x", "y'"]
    assert systemd.split_words("'G=a b' H=\\x41") == ["G=a b", "H=A"]


@pytest.mark.parametrize("value", ['plain', 'with space', 'quo"te', "back\\slash", "100%", "$(rm -rf /)",
                                   "new\nline", "tab\t", "'single'", "%h%u", "unicodé ✓"])
def test_escape_round_trip(value):
    line = f'Environment="K={systemd.escape_value(value)}"'
    env = systemd.UnitEnvironment()
    systemd.parse_unit_text(f"[Service]\n{line}\n", env, Path("x.conf"))
    assert env.values == {"K": value}
    assert "\n" not in line


def test_unit_and_dropins_in_order(tmp_path):
    write_unit(tmp_path, {
        "override.conf": '[Service]\nEnvironment="OLLAMA_FLASH_ATTENTION=1"\nEnvironment="OLLAMA_HOST=0.0.0.0"\n',
        "50-ctx.conf": "[Service]\n# a comment\nEnvironment=OLLAMA_CONTEXT_LENGTH=8192 \\\n"
                       "  OLLAMA_NUM_PARALLEL=2\n",
        "velollm.conf": '[Service]\nEnvironment="OLLAMA_FLASH_ATTENTION=0"\nUnsetEnvironment=OLLAMA_NUM_PARALLEL\n',
        "notes.txt": '[Service]\nEnvironment="OLLAMA_KEEP_ALIVE=1h"\n',  # not *.conf: ignored by systemd
        "velollm.conf.bak": '[Service]\nEnvironment="OLLAMA_KEEP_ALIVE=2h"\n',
    })
    env = systemd.read_unit_environment("ollama", tmp_path)
    effective = env.effective()
    assert effective["OLLAMA_FLASH_ATTENTION"] == "0"  # velollm.conf sorts after override.conf
    assert effective["OLLAMA_CONTEXT_LENGTH"] == "8192"
    assert "OLLAMA_NUM_PARALLEL" not in effective
    assert effective["OLLAMA_KEEP_ALIVE"] == "10m"
    assert env.sources["OLLAMA_FLASH_ATTENTION"].name == "velollm.conf"
    assert [p.name for p in env.files] == ["ollama.service", "50-ctx.conf", "override.conf", "velollm.conf"]


def test_empty_environment_resets(tmp_path):
    write_unit(tmp_path, {"z.conf": "[Service]\nEnvironment=\nEnvironment=OLLAMA_DEBUG=1\n"})
    assert systemd.read_unit_environment("ollama", tmp_path).effective() == {"OLLAMA_DEBUG": "1"}


def test_settings_outside_service_section_are_ignored(tmp_path):
    write_unit(tmp_path, {"a.conf": "[Unit]\nEnvironment=OLLAMA_DEBUG=1\n"})
    assert "OLLAMA_DEBUG" not in systemd.read_unit_environment("ollama", tmp_path).effective()


def test_config_from_systemd_service(tmp_path):
    write_unit(tmp_path, {"override.conf": '[Service]\nEnvironment="OLLAMA_FLASH_ATTENTION=1"\n'})
    config = read_ollama_config({"OLLAMA_FLASH_ATTENTION": "0", "OLLAMA_NUM_PARALLEL": "4", "HOME": "/x"},
                                systemd_root=tmp_path, platform="linux")
    assert config.scope == "systemd"
    assert config.value("OLLAMA_FLASH_ATTENTION") == "1"
    assert config.value("OLLAMA_KEEP_ALIVE") == "10m"
    assert config.value("OLLAMA_NUM_PARALLEL") is None  # the service does not see the shell
    assert set(config.shadowed) == {"OLLAMA_FLASH_ATTENTION", "OLLAMA_NUM_PARALLEL"}
    assert config.source("OLLAMA_FLASH_ATTENTION").endswith("override.conf")
    assert any(line.startswith("OLLAMA_KEEP_ALIVE=10m (systemd: ") for line in config.describe())


def test_config_from_environment_without_service(tmp_path):
    config = read_ollama_config({"OLLAMA_KV_CACHE_TYPE": " 'q8_0' ", "PATH": "/bin"},
                                systemd_root=tmp_path, platform="linux")
    assert config.scope == "environment"
    assert config.value("OLLAMA_KV_CACHE_TYPE") == "q8_0"
    assert config.settings["OLLAMA_KV_CACHE_TYPE"].source == "environment"


def test_config_from_launchctl_on_macos(tmp_path):
    answers = {"OLLAMA_FLASH_ATTENTION": "1", "OLLAMA_KEEP_ALIVE": None}
    config = read_ollama_config({"OLLAMA_KEEP_ALIVE": "1h", "OLLAMA_FLASH_ATTENTION": "0"},
                                platform="darwin", launchctl_getenv=answers.get)
    assert config.scope == "launchctl"
    assert config.value("OLLAMA_FLASH_ATTENTION") == "1"
    assert config.source("OLLAMA_FLASH_ATTENTION") == "launchctl"
    assert config.value("OLLAMA_KEEP_ALIVE") == "1h"
    assert config.source("OLLAMA_KEEP_ALIVE") == "environment"


def test_write_dropin_keeps_a_backup(tmp_path):
    path = systemd.dropin_path("ollama", tmp_path)
    assert systemd.write_dropin(path, "[Service]\n") is None
    backup = systemd.write_dropin(path, "[Service]\nEnvironment=A=1\n")
    assert backup.read_text() == "[Service]\n"
    assert path.read_text().endswith("A=1\n")
    assert backup.name == "velollm.conf.bak"
