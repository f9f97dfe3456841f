"""`velollm optimize` end to end through the CLI's entry point: output formats, files, --apply, --verify."""

from __future__ import annotations

import json
import subprocess

import pytest

from velollm_core.tune.commands import optimize_command


@pytest.fixture
def velollm(velollm):
    """The in-process runner of conftest.py, with the optimize command registered."""
    from velollm_core import cli

    if "optimize" not in cli.cli.commands:  # until cli.py registers it
        cli.cli.add_command(optimize_command)
    return velollm


@pytest.fixture
def machine(tmp_path, hw, isolated_ollama, fake_ollama, monkeypatch):
    """A hardware report file for one 8 GiB GPU, and OLLAMA_HOST pointing at the loopback server."""
    monkeypatch.setenv("OLLAMA_HOST", fake_ollama.url)
    # An Ollama before llama-server, whose rules propose flash attention (the formats show a change).
    fake_ollama.version = fake_ollama.OLD_VERSION
    path = tmp_path / "hardware.json"
    path.write_text(hw.report([hw.nvidia("NVIDIA GeForce RTX 3070", total_gib=8)]).model_dump_json())
    monkeypatch.chdir(tmp_path)
    return path


def install_service(tmp_path):
    root = tmp_path / "systemd"
    (root / "ollama.service").write_text("[Service]\nExecStart=/usr/local/bin/ollama serve\n"
                                         'Environment="OLLAMA_KEEP_ALIVE=1h"\n')
    return root / "ollama.service.d" / "velollm.conf"


def test_table(velollm, machine):
    code, out, err = velollm("optimize", "--backend", "ollama", "--model", "tiny", "--hardware", str(machine))
    assert code == 0, err
    assert "OLLAMA_FLASH_ATTENTION" in out and "OLLAMA_CONTEXT_LENGTH" in out
    assert "(unset)" in out


def test_json_on_stdout_only(velollm, machine):
    code, out, err = velollm("optimize", "--backend", "ollama", "--model", "tiny", "--hardware", str(machine),
                             "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    [proposal] = data["proposals"]
    assert proposal["runtime"] == "ollama"
    assert {c["key"] for c in proposal["changes"]} >= {"OLLAMA_FLASH_ATTENTION", "OLLAMA_KV_CACHE_TYPE"}


def test_output_file_and_format_from_suffix(velollm, machine, tmp_path):
    code, out, err = velollm("optimize", "--backend", "ollama", "--model", "tiny", "--hardware", str(machine),
                             "--output", "ollama-env.sh", "--format", "shell")
    assert code == 0, err
    script = tmp_path / "ollama-env.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert "export OLLAMA_FLASH_ATTENTION=1" in script.read_text()
    assert out == "" and "written to ollama-env.sh" in err
    code, _, _ = velollm("optimize", "--backend", "ollama", "--model", "tiny", "--hardware", str(machine),
                         "--output", "p.json")
    assert json.loads((tmp_path / "p.json").read_text())["proposals"][0]["runtime"] == "ollama"


def test_dry_run_writes_nothing(velollm, machine, tmp_path):
    code, out, err = velollm("optimize", "--backend", "ollama", "--model", "tiny", "--hardware", str(machine),
                             "--output", "x.conf", "--dry-run")
    assert code == 0, err
    assert not (tmp_path / "x.conf").exists()
    assert "[Service]" in out and "dry run: not writing x.conf" in err


def test_apply_needs_the_service(velollm, machine):
    code, _, err = velollm("optimize", "--backend", "ollama", "--model", "tiny", "--hardware", str(machine),
                             "--apply")
    assert code == 2
    assert "ollama.service is not installed" in err and "Traceback" not in err


def test_apply_writes_dropin_with_backup_and_is_idempotent(velollm, machine, tmp_path):
    dropin = install_service(tmp_path)
    args = ("optimize", "--backend", "ollama", "--model", "tiny", "--hardware", str(machine))
    code, out, err = velollm(*args, "--apply", "--dry-run")
    assert code == 0 and not dropin.exists() and "dry run: would write" in err and "[Service]" in out

    code, out, err = velollm(*args, "--apply")
    assert code == 0, err
    text = dropin.read_text()
    assert 'Environment="OLLAMA_FLASH_ATTENTION=1"' in text
    assert "sudo systemctl daemon-reload && sudo systemctl restart ollama" in err
    assert not dropin.with_name("velollm.conf.bak").exists()

    # The service now has the proposal: nothing is left to change, and the file is left alone.
    code, out, err = velollm(*args, "--apply")
    assert code == 0 and "nothing to change" in err
    assert not dropin.with_name("velollm.conf.bak").exists()

    # A later change rewrites the file, keeps what it held, and backs the old one up.
    dropin.write_text(text.replace('Environment="OLLAMA_FLASH_ATTENTION=1"', 'Environment="OLLAMA_FLASH_ATTENTION=0"')
                      + 'Environment="OLLAMA_MAX_QUEUE=64"\n')
    code, out, err = velollm(*args, "--apply")
    assert code == 0, err
    backup = dropin.with_name("velollm.conf.bak")
    assert 'OLLAMA_FLASH_ATTENTION=0' in backup.read_text()
    new = dropin.read_text()
    assert 'Environment="OLLAMA_FLASH_ATTENTION=1"' in new and 'Environment="OLLAMA_MAX_QUEUE=64"' in new


def test_apply_keeps_a_lone_surrogate_escape_it_cannot_encode(velollm, machine, tmp_path):
    r"""``\ud800`` in a drop-in decodes to a lone surrogate, which UTF-8 cannot hold: written back as the
    escape it was, never a UnicodeEncodeError after the backup."""
    dropin = install_service(tmp_path)
    dropin.parent.mkdir(parents=True)
    args = ("optimize", "--backend", "ollama", "--model", "tiny", "--hardware", str(machine), "--apply")
    assert velollm(*args)[0] == 0
    dropin.write_text(dropin.read_text() + 'Environment="X=\\ud800" "Y=\\U0001F600"\n')
    dropin.write_text(dropin.read_text().replace("OLLAMA_FLASH_ATTENTION=1", "OLLAMA_FLASH_ATTENTION=0"))
    code, _, err = velollm(*args)
    assert code == 0, err
    assert "Traceback" not in err and "UnicodeEncodeError" not in err
    new = dropin.read_text(encoding="utf-8")
    assert 'Environment="X=\\ud800"' in new and "Y=\U0001F600" in new
    assert "OLLAMA_FLASH_ATTENTION=1" in new


def test_apply_permission_denied_is_one_message(velollm, machine, tmp_path, monkeypatch):
    install_service(tmp_path)

    def denied(path, text):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("velollm_core.tune.systemd.write_dropin", denied)
    code, _, err = velollm("optimize", "--backend", "ollama", "--model", "tiny", "--hardware", str(machine),
                             "--apply")
    assert code == 2
    assert "permission denied" in err and "sudo" in err and "Traceback" not in err


def test_unknown_backend(velollm, machine):
    code, _, err = velollm("optimize", "--backend", "nope", "--hardware", str(machine))
    assert code == 2
    assert "no installed plugin proposes a configuration for 'nope'" in err


def test_bad_hardware_file(velollm, tmp_path, isolated_ollama):
    bad = tmp_path / "hw.json"
    bad.write_text("{}")
    code, _, err = velollm("optimize", "--backend", "ollama", "--hardware", str(bad))
    assert code == 2 and "is not a hardware report" in err


def test_missing_model_is_a_user_error(velollm, machine):
    code, _, err = velollm("optimize", "--backend", "ollama", "--model", "mistral", "--hardware", str(machine))
    assert code == 2 and "ollama pull mistral" in err


def test_verify_needs_a_model(velollm, machine):
    code, _, err = velollm("optimize", "--backend", "ollama", "--hardware", str(machine), "--verify")
    assert code == 2 and "--verify benchmarks a model: pass --model" in err


def test_verify_dry_run_prints_the_plan(velollm, machine):
    code, _, err = velollm("optimize", "--backend", "ollama", "--model", "tiny", "--hardware", str(machine),
                             "--verify", "--dry-run")
    assert code == 0
    assert "velollm benchmark --backend ollama --model tiny --output before.json" in err
    assert "velollm compare before.json after.json" in err


def test_verify_benchmarks_current_settings_then_explains(velollm, machine, fake_ollama, tmp_path):
    fake_ollama.token_delay = 0.001
    fake_ollama.first_token_delay = 0.005
    code, _, err = velollm("optimize", "--backend", "ollama", "--model", "tiny", "--hardware", str(machine),
                             "--verify")
    assert code == 0, err
    [before] = tmp_path.glob("velollm-optimize-*-before.json")
    result = json.loads(before.read_text())
    assert result["status"] == "complete"
    assert result["environment"]["backend"]["name"] == "ollama"
    assert {run["benchmark"] for run in result["runs"]} >= {"short_completion"}
    assert "To finish the verification" in err
    assert "velollm compare" in err and before.name in err


def test_a_broken_plugin_costs_only_its_own_proposal(velollm, machine):
    from velollm_core.contract.plugins import hook, pm
    from velollm_core.hookspecs import hookimpl

    class Broken:
        @hookimpl
        def propose_config(self, hardware, model, backend):
            raise RuntimeError("bug in a third-party plugin")

    hook()
    pm.register(Broken(), name="broken-test-plugin")
    try:
        code, out, err = velollm("optimize", "--backend", "ollama", "--model", "tiny", "--hardware",
                                 str(machine), "--format", "json")
    finally:
        pm.unregister(name="broken-test-plugin")
    assert code == 0, err
    assert json.loads(out)["proposals"][0]["runtime"] == "ollama"
    assert "plugin broken-test-plugin failed to propose a configuration: RuntimeError" in err


def test_verify_interactive_measures_twice_and_compares(velollm, machine, fake_ollama, tmp_path, monkeypatch):
    fake_ollama.token_delay = 0.001
    fake_ollama.first_token_delay = 0.005
    prompts = []
    monkeypatch.setattr("velollm_core.tune.commands._interactive", lambda: True)
    monkeypatch.setattr("click.prompt", lambda text, **kwargs: prompts.append(text) or "")
    code, out, err = velollm("optimize", "--backend", "ollama", "--model", "tiny", "--hardware", str(machine),
                             "--verify")
    assert code == 0, err
    assert prompts == ["Press Enter once the server runs with the new settings"]
    assert len(list(tmp_path.glob("velollm-optimize-*-before.json"))) == 1
    assert len(list(tmp_path.glob("velollm-optimize-*-after.json"))) == 1
    assert "95% bootstrap interval of the ratio" in out  # the comparison table
