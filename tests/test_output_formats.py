"""Report formats and optimize formats are hooks: the built-ins register through them, and a plugin's
format works through the CLI like a built-in one (``--format``, the ``--output`` suffix, replacing its
own file without ``--force``)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from velollm_core.api import ConfigFormat, ReportFormat, hookimpl
from velollm_core.cli import cli
from velollm_core.contract.formats import config_formats, report_formats

BENCHMARK = {"settings": {"backend": "fake", "model": "m.gguf"}, "runs": [], "summary": {},
             "started_at": "2026-01-01T00:00:00+00:00", "status": "complete"}


class FormatsPlugin:
    """A third party's formats: suite names as a plain list, and settings as a dotenv file."""

    @hookimpl
    def register_report_formats(self, register):
        def names(sources):
            return "# suite names\n" + "".join(f"{source.label} {source.kind}\n" for source in sources)

        register(ReportFormat("names", names, suffixes=(".names",), marker=b"# suite names"))

    @hookimpl
    def register_config_formats(self, register):
        def dotenv(proposals):
            return "".join(f"{change.key}={change.proposed}\n" for proposal in proposals
                           for change in proposal.changes)

        register(ConfigFormat("dotenv", dotenv, suffixes=(".dotenv",)))

    @hookimpl
    def propose_config(self, backend):
        from velollm_core.api import ConfigChange, ConfigProposal

        if backend not in (None, "formatted"):
            return []
        return [ConfigProposal(runtime="formatted",
                               changes=[ConfigChange(key="FORMATTED_THREADS", proposed="8", reason="cores")])]


@pytest.fixture
def hardware_file(tmp_path):
    path = tmp_path / "hardware.json"
    path.write_text(json.dumps({"os": {"system": "Linux", "release": "6", "machine": "x86_64"},
                                "cpu": {"model": "cpu", "logical_cores": 8},
                                "memory": {"total_bytes": 2**34, "available_bytes": 2**33, "used_bytes": 2**33},
                                "gpus": []}))
    return path


def test_the_builtin_formats_are_registered_through_the_hooks():
    assert list(report_formats())[:4] == ["html", "csv", "md", "jsonl"]  # first; installed plugins' after
    assert list(config_formats()) == ["shell", "systemd", "launchctl", "powershell", "json"]


def test_a_plugin_report_format_works_through_the_cli(register_plugin, tmp_path):
    register_plugin(FormatsPlugin())
    result_file = tmp_path / "run.json"
    result_file.write_text(json.dumps(BENCHMARK))
    printed = CliRunner().invoke(cli, ["report", str(result_file), "--format", "names"])
    assert printed.exit_code == 0, printed.output
    assert printed.output == "# suite names\nrun.json benchmark\n"
    out = tmp_path / "report.names"
    out.write_text("# suite names\nolder\n")  # its own marker: replaced without --force
    written = CliRunner().invoke(cli, ["report", str(result_file), "--output", str(out)])
    assert written.exit_code == 0, written.output
    assert out.read_text() == "# suite names\nrun.json benchmark\n"
    assert "names" in CliRunner().invoke(cli, ["report", "--help"]).output


def test_a_plugin_optimize_format_works_through_the_cli(register_plugin, hardware_file, tmp_path):
    register_plugin(FormatsPlugin())
    base = ["optimize", "--backend", "formatted", "--hardware", str(hardware_file)]
    printed = CliRunner().invoke(cli, [*base, "--format", "dotenv"])
    assert printed.exit_code == 0, printed.output
    assert "FORMATTED_THREADS=8\n" in printed.output
    out = tmp_path / "settings.dotenv"
    written = CliRunner().invoke(cli, [*base, "--output", str(out)])
    assert written.exit_code == 0, written.output
    assert out.read_text() == "FORMATTED_THREADS=8\n"


def test_an_unregistered_format_is_a_usage_error(hardware_file):
    result = CliRunner().invoke(cli, ["optimize", "--hardware", str(hardware_file), "--format", "dotenv"])
    assert result.exit_code == 2 and "dotenv" in result.output


class Clashing:
    @hookimpl
    def register_report_formats(self, register):
        register(ReportFormat("csv", lambda sources: "not csv\n"))
        register("not a format")

    @hookimpl
    def register_config_formats(self, register):
        raise RuntimeError("broken plugin")


def test_a_taken_name_a_bad_object_and_a_raising_plugin_cost_a_warning(register_plugin, capsys):
    register_plugin(Clashing(), name="clashing")
    formats = report_formats()
    assert formats["csv"].marker == b"table,source,kind,"  # the built-in keeps its name
    assert list(config_formats()) == ["shell", "systemd", "launchctl", "powershell", "json"]
    err = capsys.readouterr().err
    assert "format 'csv' is registered twice; the first one is kept" in err
    assert "'not a format' is no velollm_core.api.ReportFormat" in err
    assert "plugin clashing failed in register_config_formats" in err
