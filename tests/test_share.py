"""``velollm share``: one result as a markdown bundle (summary table, hardware fingerprint, the JSON),
secrets and home paths scrubbed, the JSON still valid against its schema, and nothing sent."""

from __future__ import annotations

import getpass
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from velollm_core.cli import cli
from velollm_core.history import documents, share

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "benchmarks" / "results" / "peer" / "velollm-pp512-tg128-d0-r1.json"
DETECT = REPO / "benchmarks" / "results" / "gpu" / "detect.json"


def bundled_json(text: str) -> dict:
    return json.loads(re.search(r"```json\n(.*?)\n```", text, re.DOTALL).group(1))


def with_secrets(tmp_path: Path) -> Path:
    """The real result with what a careless run leaves in it: a key, a bearer header, home paths."""
    document = json.loads(RESULT.read_text())
    document["settings"]["options"] = {"api_key": "sk-live-1234567890", "headers": {
        "Authorization": "Bearer abcdef123456"}, "draft": "/home/alice/models/draft.gguf"}
    document["environment"]["backend"]["server_flags"] += ["--api-key", "sk-server-secret"]
    document["settings"]["model"] = "/Users/alice/models/gemma.gguf"
    document["environment"]["backend"]["model"]["path"] = "C:\\Users\\alice\\models\\gemma.gguf"
    path = tmp_path / "result.json"
    path.write_text(json.dumps(document))
    return path


def test_share_scrubs_secrets_and_home_paths_and_keeps_a_valid_result(tmp_path):
    shared = CliRunner().invoke(cli, ["share", str(with_secrets(tmp_path))])
    assert shared.exit_code == 0, shared.output
    text = shared.output
    for secret in ("sk-live-1234567890", "abcdef123456", "sk-server-secret", "alice", "/root/"):
        assert secret not in text
    document = bundled_json(text)
    assert document["settings"]["model"] == "~/models/gemma.gguf"
    assert document["settings"]["options"]["draft"] == "~/models/draft.gguf"
    assert documents.validate_document(document, "bundle") == "benchmark"


def test_share_shows_the_summary_and_the_hardware_fingerprint():
    text = CliRunner().invoke(cli, ["share", str(RESULT)]).output
    assert text.startswith(share.MARKER)
    source = json.loads(RESULT.read_text())
    decode = source["summary"]["pp512/tg128"]["decode_tokens_per_s"]["median"]
    row = next(line for line in text.splitlines() if line.startswith("| pp512/tg128 "))
    assert f"| {decode:.1f} |" in row
    lines, digest = share.fingerprint(source["environment"]["hardware"])
    assert f"`{digest}`" in text and all(f"- {line}" in text for line in lines)
    assert "Intel(R) Xeon(R) Processor" in text
    # The fingerprint is of the machine: another machine (the GPU host of detect.json) has another.
    assert share.fingerprint(json.loads(DETECT.read_text()))[1] != digest


def test_share_replaces_this_users_and_hosts_names():
    names = [("bob-laptop", "<host>"), ("bobsmith", "<user>")]
    scrubbed = share.scrub_paths({"note": "run by bobsmith on bob-laptop", "bobsmith": 1}, names)
    assert scrubbed == {"note": "run by <user> on <host>", "<user>": 1}
    assert share.scrub_paths("/root/.cache/x and /home/carol/y and /rooted", []) == "~/.cache/x and ~/y and /rooted"


def test_share_sends_nothing(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("velollm share opened a network connection")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    shared = CliRunner().invoke(cli, ["share", str(RESULT)])
    assert shared.exit_code == 0, shared.output


def test_share_of_a_history_id_and_of_a_hardware_report(tmp_path):
    env = {**os.environ, "VELOLLM_HISTORY_DB": str(tmp_path / "h.db")}

    def velollm(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "velollm_core", *args], capture_output=True, text=True,
                              timeout=120, check=False, env=env)

    assert velollm("history", "import", str(RESULT)).returncode == 0
    by_id = velollm("share", "1", "--output", str(tmp_path / "shared.md"))
    assert by_id.returncode == 0, by_id.stderr
    assert bundled_json((tmp_path / "shared.md").read_text())["summary"] == json.loads(RESULT.read_text())["summary"]
    detect = velollm("share", str(DETECT))
    assert detect.returncode == 0 and "NVIDIA H200" in detect.stdout
    refused = velollm("share", str(tmp_path / "missing.json"))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr


def test_share_does_not_name_the_current_user_in_a_home_path(tmp_path):
    home = str(Path.home())
    document = json.loads(RESULT.read_text())
    document["settings"]["model"] = f"{home}/models/gemma.gguf"
    path = tmp_path / "r.json"
    path.write_text(json.dumps(document))
    text = CliRunner().invoke(cli, ["share", str(path)]).output
    assert bundled_json(text)["settings"]["model"] == "~/models/gemma.gguf"
    user = getpass.getuser()
    if len(user) >= share.MIN_NAME:
        assert not re.search(rf"(?<![\w-]){re.escape(user)}(?![\w-])", bundled_json(text)["settings"]["model"])
